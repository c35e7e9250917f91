"""`lab1 transfer`: reuse a trained network on a new dataset (e.g. a CIFAR-10 CNN → CIFAR-100).

Rows of one table, each with its test accuracy and exact count of trainable parameters:
    (a) frozen features + a scikit-learn linear SVM, and + k-NN
    (b) fine-tuning with a new head, for each freezing strategy × optimizer:
          head          only the new head trains
          freeze-stem   everything but the input stem trains
          freeze-early  the stem and the first half of the blocks stay frozen
          none          everything trains
    (c) the same architecture from scratch, same epochs (the budget the transfer has to beat)

Frozen parts keep their BatchNorm statistics too: they stay in eval mode while the rest trains.
Each trained row is a run folder under OUT/rows/<name>/ (model.safetensors included), one per seed with
several --seeds (OUT/rows/<name>-s<seed>/: the table shows their mean ± std); --resume skips finished rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from dla_core import plots
from dla_core.config import Runtime
from dla_core.data import ImageBatches, Splits
from dla_core.engine import TrainConfig, make_accelerator
from dla_core.errors import DlaError
from dla_core.evidence import OUTCOMES_KEY
from dla_core.models import Classifier, ModelConfig, build_model, count_parameters, load_model
from dla_core.recipe import child_run, save_classifier, train_into
from dla_core.runs import RunDir
from dla_core.seeding import seed_everything
from dla_core.stats import OUTCOMES, write_outcomes
from lab1_resnet import choices, tables
from lab1_resnet.train import EVAL_BATCH, batches, load_data

log = logging.getLogger(__name__)

#### Freezing ####

FROZEN_PARTS: dict[str, Callable[[Classifier], list[nn.Module]]] = {
    "head": lambda m: [m.normalize, m.stem, m.blocks],
    "freeze-stem": lambda m: [m.normalize, m.stem],
    "freeze-early": lambda m: [m.normalize, m.stem, *list(m.blocks)[: len(m.blocks) // 2]],
    "none": lambda m: [],
}
# the CLI's --strategies choices, named in a light module: FROZEN_PARTS' keys, in order (a test checks)
STRATEGIES = choices.STRATEGIES


class PartlyFrozen(nn.Module):
    """A classifier whose frozen parts take no gradient and stay in eval mode (BatchNorm statistics fixed)
    however often the training loop calls ``train()``."""

    def __init__(self, model: Classifier, strategy: str):
        super().__init__()
        self.model = model
        frozen = FROZEN_PARTS[strategy](model)
        for part in frozen:
            part.requires_grad_(False)
        self.__dict__["_frozen"] = frozen  # plain list: not registered twice as submodules

    def train(self, mode: bool = True) -> PartlyFrozen:
        super().train(mode)
        for part in self._frozen:
            part.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def with_new_head(source: Classifier, num_classes: int, extra: dict[str, Any]) -> Classifier:
    """The source network with a freshly initialised head for ``num_classes`` (its config follows)."""
    cfg = replace(source.config, num_classes=num_classes, extra=extra)
    source.head = nn.Linear(source.feature_dim, num_classes)
    source.config = cfg
    return source


#### Config ####


@dataclass(frozen=True)
class TransferConfig:
    source: str  # run folder (or model.safetensors) of the trained network
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

    def row_train(self, optimizer: str, seed: int) -> TrainConfig:
        lr = self.lr_sgd if optimizer == "sgd" else self.lr_adam
        return replace(self.train, optimizer=optimizer, lr=lr, seed=seed)


#### Rows ####


@torch.no_grad()
def extract_features(
    model: Classifier, data, device: torch.device, max_batches: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The model's features of every image (of the first ``max_batches`` batches in a smoke run)."""
    model.eval().to(device)
    feats, labels = [], []
    for i, (x, y) in enumerate(ImageBatches(data, EVAL_BATCH).iterate(0, device=device)):
        if max_batches is not None and i >= max_batches:
            break
        feats.append(model.features(x).float().cpu())
        labels.append(y.cpu())
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def feature_rows(
    cfg: TransferConfig, source: Classifier, data: Splits, device: torch.device, out: Path
) -> list[dict]:
    """The SVM and k-NN rows; each keeps its per-example test outcomes in OUT/outcomes-<row>.npz."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    x_tr, y_tr = extract_features(source, data.train, device, cfg.train.max_steps)
    x_te, y_te = extract_features(source, data.test, device, cfg.train.max_steps)
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


def train_row(
    cfg: TransferConfig, name: str, optimizer: str, build: Callable[[], tuple[nn.Module, Classifier]],
    data: Splits, out: Path, rt: Runtime,
) -> dict[str, Any]:  # fmt: skip
    """Fine-tune (or train) one row, once per seed, each in its own run folder; a finished one is read back, not
    retrained. The row holds the seeds' mean (and std) and names every seed's outcomes file.

    ``build()`` returns the model to train and the classifier inside it (what is saved and counted)."""

    def work(seed: int) -> Callable[[RunDir, Runtime], None]:
        def train(run: RunDir, row_rt: Runtime) -> None:
            seed_everything(seed)  # each row as if alone: a resumed table equals an uninterrupted one
            model, inner = build()
            tcfg = cfg.row_train(optimizer, seed)
            train_into(
                run, model, batches(data, cfg.batch_size, cfg.augment, seed), tcfg, row_rt,
                save=save_classifier(inner.config, module=inner), counted=inner, plot=False, name=name,
            )  # fmt: skip

        return train

    folders = [f"rows/{tables.seed_folder(name, seed, cfg.seeds)}" for seed in cfg.seeds]
    metrics = [
        child_run(
            out / folder,
            {"transfer": cfg, "row": name, "optimizer": optimizer, "seed": seed},
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
    nothing at random (the SVM has its ``random_state``): they run once."""
    source = load_model(Path(cfg.source))
    if not isinstance(source, Classifier):
        raise DlaError(f"{cfg.source}: not a classifier with features (family {source.config.family})")
    raw = load_data(cfg.dataset, rt.data_dir, cfg.val_fraction, rt.download)
    shape = source.config.in_shape
    data = Splits(
        raw.train.adapt(shape), raw.val.adapt(shape) if raw.val is not None else None, raw.test.adapt(shape)
    )
    k = data.train.num_classes
    extra = {
        "dataset": data.train.spec,
        "classes": list(data.train.classes),
        "class_map": list(data.train.class_map),
        "transferred_from": str(cfg.source),
    }
    run = RunDir.create(rt.out, cfg, command="lab1 transfer", resume=rt.resume)

    def fine_tuned(strategy: str) -> Callable[[], tuple[nn.Module, Classifier]]:
        def build() -> tuple[nn.Module, Classifier]:
            inner = with_new_head(load_model(Path(cfg.source)), k, extra)
            return PartlyFrozen(inner, strategy), inner

        return build

    scratch_cfg: ModelConfig = replace(
        source.config, num_classes=k, extra={**extra, "transferred_from": None}
    )

    def from_scratch() -> tuple[nn.Module, Classifier]:
        inner = build_model(scratch_cfg)
        return inner, inner

    rows: list[dict[str, Any]] = []
    if cfg.features:
        device = make_accelerator(cfg.train.precision, rt.cpu).device
        rows += feature_rows(cfg, source, data, device, run.path)
    for strategy in cfg.strategies:
        for opt in cfg.optimizers:
            name = f"finetune-{strategy}-{opt}"
            rows.append(train_row(cfg, name, opt, fine_tuned(strategy), data, run.path, rt))
    if cfg.scratch:
        for opt in cfg.optimizers:
            rows.append(train_row(cfg, f"scratch-{opt}", opt, from_scratch, data, run.path, rt))

    histories = {r["row"]: r.pop("history") for r in rows if r.get("history")}
    if histories:
        plots.learning_curves(histories, run.file("learning_curves.png"), title="transfer: fine-tuning rows")
    columns = {"row": "method", "optimizer": "optimizer", "trainable_parameters": "trainable params",
               "val_accuracy": "val acc", "test_accuracy": "test acc"}  # fmt: skip
    text = tables.write_tables(tables.with_spread(rows), columns, run.path, csv_rows=rows)
    run.update_metrics(rows=rows, source_parameters=count_parameters(source))
    return text
