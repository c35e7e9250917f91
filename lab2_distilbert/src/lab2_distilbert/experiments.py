"""The four lab2 experiments: frozen features + classic classifiers, fine-tuning, LoRA, evaluation.

Each reads one frozen config, writes one run folder (config.json, metrics.json, plots, model files).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from accelerate import Accelerator
from tqdm.auto import tqdm

from dla_core import plots
from dla_core.config import Runtime
from dla_core.engine import TrainConfig, evaluate, make_accelerator
from dla_core.errors import DlaError
from dla_core.recipe import Saver, train_into
from dla_core.runs import RunDir, atomic_write, write_json
from dla_core.seeding import is_main_process, seed_everything
from dla_core.stats import write_outcomes
from dla_core.threads import first_example, use_threads
from lab2_distilbert import models
from lab2_distilbert.data import DataConfig, TextSet, TextSplits, degenerate_warning, load_text_splits
from lab2_distilbert.tokens import Encoded, TokenBatches, cache_key, encode

log = logging.getLogger(__name__)

FEATURES_CACHE_VERSION = 2  # 1 left the rows of the training split's last partial batch zero
DEFAULT_MODEL = "distilbert-base-uncased"


#### Configs ####


@dataclass(frozen=True)
class FeaturesConfig:
    model: str = DEFAULT_MODEL
    data: DataConfig = field(default_factory=DataConfig)
    pooling: str = "cls"  # cls | mean (mean over real tokens)
    batch_size: int = 64
    neighbours: int = 10  # k of k-NN
    precision: str = "no"


@dataclass(frozen=True)
class FinetuneConfig:
    model: str = DEFAULT_MODEL
    data: DataConfig = field(default_factory=DataConfig)
    strategy: str = "full"  # full | head | head+last
    batch_size: int = 32
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class LoraConfig:
    model: str = DEFAULT_MODEL
    data: DataConfig = field(default_factory=DataConfig)
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q", "v")  # roles, mapped per architecture
    dropout: float = 0.1
    dora: bool = False  # PEFT use_dora
    rslora: bool = False  # PEFT use_rslora: scale α / √r
    merge: bool = False
    batch_size: int = 32
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class EvaluateConfig:
    model: str = DEFAULT_MODEL  # hub name, model folder, adapter folder or lab2 run folder
    data: DataConfig = field(default_factory=DataConfig)
    split: str = "test"  # validation | test
    batch_size: int = 64
    precision: str = "no"


#### Shared setup ####


def encode_splits(tokenizer, splits: TextSplits, data: DataConfig) -> dict[str, Encoded]:
    cache = Path(data.cache_dir)
    return {name: encode(tokenizer, s, data.max_length, cache) for name, s in splits.items()}


def make_batches(
    enc: dict[str, Encoded], tokenizer, batch_size: int, seed: int, *, train_batches: bool = True
) -> dict[str, TokenBatches]:
    """One TokenBatches per split; with ``train_batches`` the train split is shuffled and drops its last
    partial batch (for training), otherwise every split is served whole, in evaluation order."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return {
        name: TokenBatches(e, batch_size, pad_id=pad, shuffle=train_batches and name == "train", seed=seed)
        for name, e in enc.items()
    }


def warn_if_degenerate(splits: dict[str, TextSet]) -> list[str]:
    """Log (and return) a warning for each reported split whose accuracy cannot mean much."""
    warnings = [w for name, s in splits.items() if (w := degenerate_warning(name, s))]
    for w in warnings:
        log.warning(w)
    return warnings


#### features ####


def eval_threads(
    requested: int | None, model: nn.Module, batches: TokenBatches, device: Any
) -> dict[str, Any]:
    """Apply the thread policy for forward passes of ``model`` over ``batches``; the choice, for metrics.json."""

    def one() -> None:  # one example's forward pass: the work estimate
        batch = next(iter(batches.iterate(0, device=device)), None)
        if batch is not None:
            ex = first_example(batch)
            model(input_ids=ex["input_ids"], attention_mask=ex["attention_mask"])

    return use_threads(requested, model, batches.batch_size, one, training=False).record()


def model_fingerprint(model: nn.Module) -> str:
    """Hash of the weights (each tensor's name, shape and float64 sum and sum of squares)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.state_dict().items():
            x = p.double()
            h.update(f"{name}{tuple(p.shape)}{x.sum().item():.10e}{x.square().sum().item():.10e}".encode())
    return h.hexdigest()[:24]


def extract_features(encoder: nn.Module, batches: TokenBatches, pooling: str, acc) -> torch.Tensor:
    """(N, hidden) last-layer features in the split's original order; every row must be computed."""
    # no_grad as a `with`, not a decorator: mutmut 3 leaves decorated functions unmutated
    if batches.drop_last:
        raise ValueError("feature extraction needs batches that keep the last partial batch")
    encoder.eval()
    out: torch.Tensor | None = None
    filled = torch.zeros(len(batches.data), dtype=torch.bool)
    with torch.no_grad(), acc.autocast():
        for batch in tqdm(
            batches.iterate(0, device=acc.device), total=len(batches), desc="features", leave=False
        ):
            hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            hidden = hidden.last_hidden_state.float()  # (B, T, H)
            if pooling == "cls":
                feats = hidden[:, 0]
            else:
                m = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
                feats = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
            if out is None:
                out = torch.zeros(len(batches.data), feats.shape[1])
            out[batch["index"].cpu()] = feats.cpu()
            filled[batch["index"].cpu()] = True
    if out is None or not bool(filled.all()):
        missing = len(filled) - int(filled.sum())
        raise RuntimeError(f"feature extraction left {missing} of {len(filled)} rows without features")
    return out


def classifiers(neighbours: int, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    return {
        "linear_svm": make_pipeline(StandardScaler(), LinearSVC(C=0.01, max_iter=5000, random_state=seed)),
        "logistic_regression": make_pipeline(
            StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, random_state=seed)
        ),
        # brute force: exact distances, neighbours in a fixed order (vote ties go to the lower class)
        "knn": KNeighborsClassifier(n_neighbors=neighbours, algorithm="brute"),
    }


def run_features(cfg: FeaturesConfig, rt: Runtime) -> dict:
    seed_everything(cfg.data.seed)
    acc = make_accelerator(cfg.precision, rt.cpu)
    splits = load_text_splits(cfg.data)
    tokenizer = models.load_tokenizer(cfg.model)
    encoder = models.load_encoder(cfg.model).to(acc.device)
    # after the inputs loaded: no half-made runs
    run = RunDir.create(rt.out, cfg, command="lab2 features", resumable=False)
    warnings = warn_if_degenerate({"validation": splits.validation, "test": splits.test})
    enc = encode_splits(tokenizer, splits, cfg.data)
    # every split in evaluation batches: the training batches would drop the last partial batch's rows
    batches = make_batches(enc, tokenizer, cfg.batch_size, cfg.data.seed, train_batches=False)

    threads = eval_threads(rt.threads, encoder, batches["train"], acc.device)
    key = hashlib.sha256(
        "|".join(
            [f"v{FEATURES_CACHE_VERSION}", model_fingerprint(encoder), cfg.pooling, cfg.precision]
            + [cache_key(tokenizer, s, cfg.data.max_length) for _, s in splits.items()]
        ).encode()
    ).hexdigest()[:24]
    cache = Path(cfg.data.cache_dir) / f"features-{key}.pt"
    t0 = time.perf_counter()
    if cache.exists():
        feats = torch.load(cache, weights_only=True)
        log.info("features from cache %s", cache)
    else:
        feats = {name: extract_features(encoder, b, cfg.pooling, acc) for name, b in batches.items()}
        atomic_write(cache, lambda p: torch.save(feats, p))
    if any(len(feats[name]) != len(s) for name, s in splits.items()):
        raise DlaError(f"the feature cache {cache} does not match the data; delete it and run again")
    feature_seconds = time.perf_counter() - t0

    x = {k: v.numpy() for k, v in feats.items()}
    y = {name: s.labels for name, s in splits.items()}
    table, correct = {}, {}
    for name, clf in classifiers(cfg.neighbours, cfg.data.seed).items():
        clf.fit(x["train"], y["train"])
        correct[name] = clf.predict(x["test"]) == y["test"]  # (test examples,), in test order
        table[name] = {
            "val_accuracy": float((clf.predict(x["validation"]) == y["validation"]).mean()),
            "test_accuracy": float(correct[name].mean()),
            "outcomes": write_outcomes(run.path, correct[name], labels=y["test"], name=name).name,
        }
        log.info("%s: %s", name, table[name])
    # outcomes.npz: the classifier one would pick without the test set, by validation accuracy
    chosen = max(table, key=lambda n: table[n]["val_accuracy"])
    write_outcomes(run.path, correct[chosen], labels=y["test"])

    # where the classes fall along the first principal component of the training features
    centred = x["train"] - x["train"].mean(0)
    direction = np.linalg.svd(centred[:2000], full_matrices=False)[2][0]
    pc1 = centred @ direction
    if is_main_process():
        plots.score_histograms(
            {n: pc1[y["train"] == i] for i, n in enumerate(splits.label_names)},
            run.file("features_pc1.png"),
            xlabel="first principal component",
            title=f"{cfg.pooling} features of {Path(cfg.model).name} (train)",
        )
    metrics = {
        "classifiers": table,
        "chosen_classifier": chosen,
        "feature_dim": int(x["train"].shape[1]),
        "feature_seconds": round(feature_seconds, 3),
        "features_cache": str(cache),
        "sizes": {name: len(s) for name, s in splits.items()},
        "threads": threads,
    }
    if warnings:
        metrics["warnings"] = warnings
    run.write_metrics(metrics)
    return metrics


#### finetune / lora ####

ADAPTER_FILE = "adapter_model.safetensors"  # what PEFT's save_pretrained writes: the adapters and the head


def reset_peak_memory(device: torch.device) -> None:
    """Start measuring the peak memory from now (``peak_memory``): CUDA's allocator peak, or on the CPU the
    process's peak resident set (Linux lets /proc/self/clear_refs reset it; elsewhere it counts from start-up)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory(device: torch.device) -> dict[str, Any]:
    """{"peak_memory_bytes": N, "peak_memory": what N measures} since ``reset_peak_memory``."""
    if device.type == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(device), "peak_memory": "cuda allocated"}
    try:
        status = Path("/proc/self/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        return {"peak_memory_bytes": kb * 1024, "peak_memory": "peak RSS"}
    except (OSError, StopIteration, ValueError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
        scale = 1 if sys.platform == "darwin" else 1024
        return {"peak_memory_bytes": peak * scale, "peak_memory": "peak RSS since start-up"}


def saver(tokenizer, folder: str, *, labels: list[str] | None = None, merged: bool = False) -> Saver:
    """Save the trained model as a Hugging Face folder with its tokenizer in RUN/``folder``; for an adapter,
    ``labels`` (adapter_labels.json, the head's classes) and, with ``merged``, the base model with the adapter
    merged in (RUN/merged)."""

    def save(run: RunDir, model: nn.Module) -> Path:
        target = run.file(folder)
        if is_main_process():  # one writer under torchrun / accelerate launch
            model.save_pretrained(target)
            tokenizer.save_pretrained(target)
            if labels is not None:
                write_json(target / "adapter_labels.json", labels)
                # into metrics.json before train_into marks the run finished: a finished run always has it
                run.update_metrics(adapter_bytes=(target / ADAPTER_FILE).stat().st_size)
            if merged:
                merged_model = model.merge_and_unload()  # after the metrics: the adapter is folded away
                merged_model.save_pretrained(run.file("merged"))
                tokenizer.save_pretrained(run.file("merged"))
        return target

    return save


def _train(
    run: RunDir,
    model: nn.Module,
    tokenizer,
    splits: TextSplits,
    data: DataConfig,
    batch_size: int,
    train: TrainConfig,
    rt: Runtime,
    *,
    save: Saver,
    desc: str,
    extra: dict | None = None,
) -> dict:
    """Train through the core recipe; lab2 adds its throughput, precision, device and data warnings."""
    batches = make_batches(encode_splits(tokenizer, splits, data), tokenizer, batch_size, train.seed)
    trainable, total = models.count_params(model)
    log.info("%s: %s trainable of %s parameters", desc, f"{trainable:,}", f"{total:,}")
    warnings = warn_if_degenerate({"validation": splits.validation, "test": splits.test})
    device = torch.device("cpu") if rt.cpu or not torch.cuda.is_available() else torch.device("cuda")
    reset_peak_memory(device)
    t0 = time.perf_counter()

    def lab2_metrics(trained: nn.Module, acc: Accelerator, so_far: Mapping[str, Any]) -> dict:
        wall = time.perf_counter() - t0  # training and the test evaluation
        epochs, train_seconds = so_far["epochs"], so_far["train_seconds"]  # resumed epochs included
        world = acc.num_processes
        samples_per_epoch = batches["train"].num_batches(world) * batch_size * world  # drops the last partial
        return {
            "trainable_fraction": trainable / total,
            "wall_seconds": round(wall, 3),
            "train_samples_per_second": round(samples_per_epoch * epochs / max(train_seconds, 1e-9), 2),
            "precision": acc.precision,
            "device": str(acc.device),
            **peak_memory(acc.device),
            **(extra or {}),
            **({"warnings": warnings} if warnings else {}),
        }

    return train_into(
        run, model, {"train": batches["train"], "val": batches["validation"], "test": batches["test"]}, train, rt,
        save=save, step=models.classification_step, eval_step=models.classification_step, extra=lab2_metrics,
        name=desc,
    ).metrics  # fmt: skip


def run_finetune(cfg: FinetuneConfig, rt: Runtime) -> dict:
    seed_everything(cfg.train.seed)  # before the new head is drawn
    splits = load_text_splits(cfg.data)
    tokenizer = models.load_tokenizer(cfg.model)
    model = models.load_classifier(cfg.model, splits.label_names)
    run = RunDir.create(rt.out, cfg, command="lab2 finetune", resume=rt.resume)
    models.apply_strategy(model, cfg.strategy)
    return _train(
        run, model, tokenizer, splits, cfg.data, cfg.batch_size, cfg.train, rt,
        save=saver(tokenizer, "model"), desc=f"finetune {cfg.strategy}",
    )  # fmt: skip


def run_lora(cfg: LoraConfig, rt: Runtime) -> dict:
    seed_everything(cfg.train.seed)  # before the new head and the adapters are drawn
    splits = load_text_splits(cfg.data)
    tokenizer = models.load_tokenizer(cfg.model)
    model = lora_model(cfg, splits.label_names)
    run = RunDir.create(rt.out, cfg, command="lab2 lora", resume=rt.resume)
    return train_lora(run, model, cfg, splits, tokenizer, rt)


def lora_model(cfg: LoraConfig, label_names: list[str]) -> nn.Module:
    """The base classifier with a fresh head and ``cfg``'s adapters (draws from torch's generator)."""
    base = models.load_classifier(cfg.model, label_names)
    return models.add_lora(
        base, cfg.rank, cfg.alpha, list(cfg.targets), cfg.dropout, dora=cfg.dora, rslora=cfg.rslora
    )


def train_lora(
    run: RunDir, model: nn.Module, cfg: LoraConfig, splits: TextSplits, tokenizer, rt: Runtime
) -> dict:
    """Train the adapters and head of ``model`` (``lora_model``) into ``run``; its metrics."""
    # DoRA's magnitude vectors are named lora_magnitude_vector: LoRA parameters too
    lora_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n and p.requires_grad)
    head_params = models.count_params(model)[0] - lora_params
    return _train(
        run, model, tokenizer, splits, cfg.data, cfg.batch_size, cfg.train, rt,
        save=saver(tokenizer, "adapter", labels=splits.label_names, merged=cfg.merge),
        desc=f"lora r{cfg.rank} {','.join(cfg.targets)}",
        extra={"lora_params": lora_params, "head_params": head_params},
    )  # fmt: skip


#### evaluate ####


def run_evaluate(cfg: EvaluateConfig, rt: Runtime) -> dict:
    seed_everything(cfg.data.seed)
    acc = make_accelerator(cfg.precision, rt.cpu)
    splits = load_text_splits(cfg.data)
    model, source = models.load_any_classifier(cfg.model)
    tokenizer = models.load_tokenizer(source)
    mapping = models.label_mapping(model.config.id2label, splits.label_names)
    run = RunDir.create(rt.out, cfg, command="lab2 evaluate", resumable=False)
    data = dict(splits.items())[cfg.split]
    warnings = warn_if_degenerate({cfg.split: data})
    enc = encode(tokenizer, data, cfg.data.max_length, Path(cfg.data.cache_dir))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = TokenBatches(enc, cfg.batch_size, pad_id=pad)
    step = models.MappedStep(mapping, collect=True)
    threads = eval_threads(rt.threads, model.to(acc.device), batches, acc.device)
    t0 = time.perf_counter()
    result = evaluate(model.to(acc.device), batches, step=step, accelerator=acc, per_example=True)
    seconds = time.perf_counter() - t0
    write_outcomes(run.path, result["correct"], labels=np.asarray(data.labels))
    scores, labels = torch.cat(step.scores).numpy(), torch.cat(step.labels).numpy()
    names = splits.label_names
    if is_main_process():
        plots.score_histograms(
            {f"true {n}": scores[labels == i, -1] for i, n in enumerate(names) if (labels == i).any()},
            run.file("scores.png"),
            xlabel=f"P({names[-1]})",
            title=f"{Path(cfg.model).name} on {cfg.split}",
        )
    metrics = {
        "accuracy": result["accuracy"],
        "loss": result["loss"],
        "examples": len(data),
        "split": cfg.split,
        "label_mapping": {str(model.config.id2label[i]): names[d] for i, d in enumerate(mapping)},
        "seconds": round(seconds, 3),
        "threads": threads,
    }
    if warnings:
        metrics["warnings"] = warnings
    run.write_metrics(metrics)
    return metrics
