"""`lab1 transfer`: reuse a trained network on a new dataset (e.g. a CIFAR-10 CNN → CIFAR-100, or an ImageNet
ResNet-18 from torchvision, a timm or a Hugging Face classifier → CIFAR-100; ``sources.py`` loads them).

Rows of one table, each with its test accuracy and exact count of trainable parameters:
    (a) frozen features + a scikit-learn linear SVM, and + k-NN
    (b) fine-tuning with a new head, for each freezing strategy × optimizer:
          head          only the new head trains (every family)
          freeze-stem   everything but the input stem trains
          freeze-early  the stem and the first half of the blocks stay frozen
          none          everything trains
    (c) the same architecture from scratch, same epochs (the budget the transfer has to beat); for a model of
        another family, its architecture with random weights (``--weights none``)

The stem and the blocks of each family are declared once in ``sources.py`` (a family without them refuses
freeze-stem / freeze-early). Frozen parts keep their BatchNorm statistics too: they stay in eval mode while the
rest trains; under ``head`` the whole network but the new head stays in eval mode (its dropout included).
Each trained row is a run folder under OUT/rows/<name>/ (model.safetensors included), one per seed with
several --seeds (OUT/rows/<name>-s<seed>/: the table shows their mean ± std); --resume skips finished rows.
A model of another family is saved as its own network's state dict; config.json records ``model_source``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from dla_core import plots
from dla_core.adapters import AdaptedClassifier, description_of, load_classifier
from dla_core.config import Runtime
from dla_core.data import ImageBatches, Splits
from dla_core.engine import TrainConfig, make_accelerator
from dla_core.errors import DlaError
from dla_core.evidence import OUTCOMES_KEY
from dla_core.model_spec import parse_model_spec
from dla_core.models import build_model, count_parameters
from dla_core.recipe import Saver, child_run, save_classifier, train_into
from dla_core.runs import RunDir, to_jsonable
from dla_core.seeding import seed_everything
from dla_core.stats import OUTCOMES, write_outcomes
from lab1_resnet import choices, tables
from lab1_resnet.sources import Parts, load_source, parts_of, save_adapted
from lab1_resnet.train import EVAL_BATCH, batches, load_data

log = logging.getLogger(__name__)

#### Freezing ####

FROZEN_PARTS: dict[str, Callable[[Parts], list[str] | None]] = {
    "head": lambda p: p.body,
    "freeze-stem": lambda p: p.stem,
    "freeze-early": lambda p: (
        None if p.blocks is None else [*p.stem, *chain(*p.blocks[: len(p.blocks) // 2])]
    ),
    "none": lambda p: [],
}  # a strategy's frozen parameters (None: the family has no stem and blocks to name)
# the CLI's --strategies choices, named in a light module: FROZEN_PARTS' keys, in order (a test checks)
STRATEGIES = choices.STRATEGIES


def frozen_names(model: nn.Module, strategy: str) -> list[str]:
    """The names of the parameters ``strategy`` freezes in ``model``, or one Error line where it cannot."""
    names = FROZEN_PARTS[strategy](parts_of(model))
    if names is None:
        spec = model.description["model"] if isinstance(model, AdaptedClassifier) else "the model"
        raise DlaError(f"--strategies {strategy}: {spec} has no stem and blocks dla can name (see lab1 transfer "
                       "--help); head and none work for every model")  # fmt: skip
    return names


def frozen_subtrees(module: nn.Module) -> list[nn.Module]:
    """The largest submodules of ``module`` whose parameters are all frozen."""
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        return [module]
    return [m for child in module.children() for m in frozen_subtrees(child)]


class PartlyFrozen(nn.Module):
    """A classifier whose frozen parts take no gradient and stay in eval mode (BatchNorm statistics fixed)
    however often the training loop calls ``train()``; under ``head`` all of it but the head."""

    def __init__(self, model: nn.Module, strategy: str):
        super().__init__()
        self.model = model
        frozen = set(frozen_names(model, strategy))
        for name, p in model.named_parameters():
            p.requires_grad_(name not in frozen)
        only_head = frozen == set(parts_of(model).body)
        # plain lists: not registered twice as submodules
        self.__dict__["_frozen"] = [model] if only_head else frozen_subtrees(model)
        self.__dict__["_trained"] = [model.head] if only_head else []

    def train(self, mode: bool = True) -> PartlyFrozen:
        super().train(mode)
        for part in self._frozen:
            part.eval()
        for part in self._trained:
            part.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def with_new_head(source: nn.Module, num_classes: int, extra: dict[str, Any]) -> nn.Module:
    """The source network with a freshly initialised head for ``num_classes`` (a dla model's config follows)."""
    if isinstance(source, AdaptedClassifier):
        source.replace_head(num_classes)
        return source
    source.head = nn.Linear(source.feature_dim, num_classes)
    source.config = replace(source.config, num_classes=num_classes, extra=extra)
    return source


def saver_for(inner: nn.Module) -> Saver:
    """A dla model: model.safetensors with its config; another family's: its network's own state dict."""
    if isinstance(inner, AdaptedClassifier):
        return save_adapted(inner)
    return save_classifier(inner.config, module=inner)


#### Config ####


@dataclass(frozen=True)
class TransferConfig:
    source: str  # --from: a --model spec (dla_core.model_spec): a run folder, torchvision:…, timm:…, hf:…
    dataset: str = "cifar100"
    strategies: tuple[str, ...] = STRATEGIES
    optimizers: tuple[str, ...] = ("sgd", "adam")
    lr_sgd: float = 0.01
    lr_adam: float = 1e-3
    features: bool = True  # rows (a): linear SVM and k-NN on frozen features
    scratch: bool = True  # rows (c)
    knn_k: int = 5
    batch_size: int = 128
    augment: bool = True
    val_fraction: float = 0.1
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=10)
    )  # lr/optimizer/seed set per row
    seeds: tuple[int, ...] = (0,)  # each trained row once per seed; the feature rows draw nothing at random
    weights: str = "pretrained"  # torchvision:/timm:/hf: sources: pretrained, none (random) or a checkpoint
    preprocess: str | None = None  # --preprocess: how the source's images are prepared [its family's own]

    def row_train(self, optimizer: str, seed: int) -> TrainConfig:
        lr = self.lr_sgd if optimizer == "sgd" else self.lr_adam
        return replace(self.train, optimizer=optimizer, lr=lr, seed=seed)


#### Rows ####


@torch.no_grad()
def extract_features(
    model: nn.Module, data, device: torch.device, max_batches: int | None = None, batch_size: int = EVAL_BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """The model's penultimate features of every image (of the first ``max_batches`` batches in a smoke run)."""
    model.eval().to(device)
    feats, labels = [], []
    for i, (x, y) in enumerate(ImageBatches(data, batch_size).iterate(0, device=device)):
        if max_batches is not None and i >= max_batches:
            break
        feats.append(model.features(x).float().cpu())
        labels.append(y.cpu())
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def feature_rows(
    cfg: TransferConfig, source: nn.Module, data: Splits, device: torch.device, out: Path, eval_batch: int
) -> list[dict]:
    """The SVM and k-NN rows; each keeps its per-example test outcomes in OUT/outcomes-<row>.npz."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    x_tr, y_tr = extract_features(source, data.train, device, cfg.train.max_steps, eval_batch)
    x_te, y_te = extract_features(source, data.test, device, cfg.train.max_steps, eval_batch)
    k = data.train.num_classes
    svm = make_pipeline(StandardScaler(), LinearSVC(C=1.0, max_iter=5000, random_state=cfg.seeds[0]))
    svm.fit(x_tr, y_tr)
    # k-NN has no randomness: brute-force distances in dataset order, vote ties go to the lowest label
    knn = make_pipeline(StandardScaler(), KNeighborsClassifier(min(cfg.knn_k, len(y_tr)), algorithm="brute"))
    knn.fit(x_tr, y_tr)
    n_svm = (x_tr.shape[1] + 1) * (k if k > 2 else 1)  # one-vs-rest weights + biases
    rows = []
    for name, row, clf, n in (("svm", "features + linear SVM", svm, n_svm),
                              ("knn", f"features + {cfg.knn_k}-NN", knn, 0)):  # fmt: skip
        correct = clf.predict(x_te) == y_te
        outcomes = write_outcomes(out, correct, labels=y_te.astype(np.int16), name=name)
        rows.append({"row": row, "optimizer": None, "trainable_parameters": n,
                     "test_accuracy": float(correct.mean()), OUTCOMES_KEY: outcomes.name})  # fmt: skip
    return rows


Build = Callable[[], tuple[nn.Module, nn.Module]]  # → (the model to train, the classifier inside it)


def train_row(
    cfg: TransferConfig, name: str, optimizer: str, build: Build, data: Splits, out: Path, rt: Runtime,
    eval_batch: int = EVAL_BATCH, source: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Fine-tune (or train) one row, once per seed, each in its own run folder; a finished one is read back, not
    retrained. The row holds the seeds' mean (and std) and names every seed's outcomes file.

    ``build()`` returns the model to train and the classifier inside it (what is saved and counted);
    ``source``: another family's ``model_source``, recorded in each row's config.json."""

    def work(seed: int) -> Callable[[RunDir, Runtime], None]:
        def train(run: RunDir, row_rt: Runtime) -> None:
            seed_everything(seed)  # each row as if alone: a resumed table equals an uninterrupted one
            model, inner = build()
            tcfg = cfg.row_train(optimizer, seed)
            row_batches = batches(data, cfg.batch_size, cfg.augment, seed)
            for split in (
                "val",
                "test",
            ):  # another family's inputs are large (224 px): the training batch size
                if row_batches[split] is not None and eval_batch != EVAL_BATCH:
                    row_batches[split] = ImageBatches(getattr(data, split), eval_batch)
            train_into(
                run, model, row_batches, tcfg, row_rt,
                save=saver_for(inner), counted=inner, plot=False, name=name,
            )  # fmt: skip

        return train

    folders = [f"rows/{tables.seed_folder(name, seed, cfg.seeds)}" for seed in cfg.seeds]
    metrics = [
        child_run(
            out / folder,
            {"transfer": cfg, "row": name, "optimizer": optimizer, "seed": seed}
            | ({"model_source": source} if source else {}),
            command="lab1 transfer row",
            work=work(seed),
            rt=rt,
        )
        for seed, folder in zip(cfg.seeds, folders, strict=True)
    ]
    return {
        "row": name,
        "optimizer": optimizer,
        "trainable_parameters": metrics[0]["trainable_parameters"],
        **tables.over_seeds(metrics, ("val_accuracy", "test_accuracy")),
        OUTCOMES_KEY: [f"{folder}/{OUTCOMES}" for folder in folders],
        "history": metrics[0].get("history", []),
    }


def run_transfer(cfg: TransferConfig, rt: Runtime) -> str:
    """Every row of the transfer table; returns the Markdown table (also table.md / table.csv in OUT).

    Each trained row seeds with each of ``cfg.seeds`` as its model is built (``train_row``); the feature rows draw
    nothing at random (the SVM has its ``random_state``): they run once. Everything that can be refused (the
    source, the data, a strategy the source's family cannot freeze) is, before the run folder is made."""
    own = parse_model_spec(cfg.source).family == "run"  # a dla run folder, or a model of another family
    source = load_source(cfg.source, cfg.weights, cfg.preprocess)
    raw = load_data(cfg.dataset, rt.data_dir, cfg.val_fraction, rt.download)
    if own:  # dla's models take the shape they were trained on; another family's resize the images themselves
        shape = source.config.in_shape
        data = Splits(
            raw.train.adapt(shape),
            raw.val.adapt(shape) if raw.val is not None else None,
            raw.test.adapt(shape),
        )
    else:
        data = raw
    k = data.train.num_classes
    for strategy in cfg.strategies:
        frozen_names(source, strategy)
    extra = {
        "dataset": data.train.spec,
        "classes": list(data.train.classes),
        "class_map": list(data.train.class_map),
        "transferred_from": str(cfg.source),
    }
    described = description_of(source)  # another family's model: its spec, weights and preprocessing
    snapshot = cfg if described is None else {**to_jsonable(cfg), "model_source": described}
    run = RunDir.create(rt.out, snapshot, command="lab1 transfer", resume=rt.resume)
    eval_batch = EVAL_BATCH if own else cfg.batch_size

    def fine_tuned(strategy: str) -> Build:
        def build() -> tuple[nn.Module, nn.Module]:
            inner = with_new_head(load_source(cfg.source, cfg.weights, cfg.preprocess), k, extra)
            return PartlyFrozen(inner, strategy), inner

        return build

    def from_scratch() -> tuple[nn.Module, nn.Module]:
        if own:
            inner = build_model(
                replace(source.config, num_classes=k, extra={**extra, "transferred_from": None})
            )
        else:  # the architecture with random weights and the data's classes, the same preprocessing
            inner = load_classifier(cfg.source, "none", num_classes=k, preprocess=cfg.preprocess)
        return inner, inner

    rows: list[dict[str, Any]] = []
    if cfg.features:
        device = make_accelerator(cfg.train.precision, rt.cpu).device
        rows += feature_rows(cfg, source, data, device, run.path, eval_batch)
        source.cpu()  # off the device while the rows train (each loads its own copy)
    trained = {"data": data, "out": run.path, "rt": rt, "eval_batch": eval_batch, "source": described}
    for strategy in cfg.strategies:
        for opt in cfg.optimizers:
            rows.append(train_row(cfg, f"finetune-{strategy}-{opt}", opt, fine_tuned(strategy), **trained))
    if cfg.scratch:
        for opt in cfg.optimizers:
            rows.append(train_row(cfg, f"scratch-{opt}", opt, from_scratch, **trained))

    histories = {r["row"]: r.pop("history") for r in rows if r.get("history")}
    if histories:
        plots.learning_curves(histories, run.file("learning_curves.png"), title="transfer: fine-tuning rows")
    columns = {"row": "method", "optimizer": "optimizer", "trainable_parameters": "trainable params",
               "val_accuracy": "val acc", "test_accuracy": "test acc"}  # fmt: skip
    text = tables.write_tables(tables.with_spread(rows), columns, run.path, csv_rows=rows)
    run.update_metrics(rows=rows, source_parameters=count_parameters(source))
    return text
