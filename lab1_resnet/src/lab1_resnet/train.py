"""`lab1 train`: one MLP or CNN, plain or residual, trained through the core loop into a run folder.

    run = TrainRun(dataset="digits", model="mlp", depth=20, residual=False)
    metrics = train_classifier(run, Path("runs/plain20"))

The run folder gets config.json, metrics.json (history, per-layer gradient norms, parameters, test accuracy),
model.safetensors (loadable by any lab with ``dla_core.models.load_model``), learning_curves.png and
grad_norms.png. ``train_in`` is the same work inside a run folder someone else created (the depth study's cells).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dla_core import plots
from dla_core.data import ImageBatches, ImageSet, Splits, default_augment, load_splits
from dla_core.engine import TrainConfig, evaluate, fit, make_accelerator
from dla_core.errors import DlaError
from dla_core.models import (
    PLAIN_BLOCKS,
    ModelConfig,
    build_model,
    count_parameters,
    save_model,
    weight_layers,
)
from dla_core.runs import MODEL, RunDir, wait_for_main
from dla_core.seeding import seed_everything

log = logging.getLogger(__name__)

EVAL_BATCH = 512
FAMILIES = ("mlp", "cnn")


@dataclass(frozen=True)
class TrainRun:
    dataset: str = "digits"  # a dataset spec: digits, mnist, cifar10, cifar100:people, …
    model: str = "mlp"  # mlp | cnn
    depth: int = 4  # blocks (per stage for the cnn)
    width: int = 64  # mlp hidden width / cnn channels
    stages: int = 1  # cnn only: 3 with depth n is the paper's ResNet-(6n+2)
    residual: bool = True
    plain_block: str = "double"  # plain mlp: double (the residual block minus its skip) | single (the seeds')
    batch_size: int = 64
    augment: bool = True  # the dataset's usual augmentation (crop + flip on CIFAR; none on digits / MNIST)
    val_fraction: float = 0.1  # held out of the training split, the same images whatever the seed
    data_dir: str = "data"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, lr=1e-3, log_grad_norms=True))

    def __post_init__(self) -> None:
        if self.model not in FAMILIES:
            raise DlaError(f"--model: unknown {self.model!r} (choose {', '.join(FAMILIES)})")
        if self.model == "mlp" and self.stages != 1:
            raise DlaError("--stages applies to --model cnn only")
        if self.depth < 1 or self.width < 1 or self.stages < 1:
            raise DlaError("--depth, --width and --stages must be at least 1")
        if self.plain_block not in PLAIN_BLOCKS:
            raise DlaError(f"--plain-block: unknown {self.plain_block!r} (choose {', '.join(PLAIN_BLOCKS)})")
        if self.plain_block == "single" and (self.model != "mlp" or self.residual):
            raise DlaError("--plain-block single applies to plain MLPs only (--model mlp --plain)")

    @property
    def kind(self) -> str:
        """residual, plain, or plain-single (the seeds' one-layer plain block)."""
        if self.residual:
            return "residual"
        return "plain-single" if self.plain_block == "single" else "plain"

    @property
    def name(self) -> str:
        return f"{self.model}-d{self.depth}-{self.kind}-s{self.train.seed}"

    @property
    def weight_layers(self) -> int:
        return weight_layers(ModelConfig(self.model, (1, 1, 1), 2, residual=self.residual, depth=self.depth,
                                         stages=self.stages, plain_block=self.plain_block))  # fmt: skip


def load_data(dataset: str, data_dir: str | Path, val_fraction: float, download: bool = False) -> Splits:
    splits = load_splits(dataset, data_dir, download, val_fraction)
    if len(splits.train) == 0 or len(splits.test) == 0:
        raise DlaError(f"{dataset}: the selection leaves no training or no test images")
    return splits


def model_config(run: TrainRun, train: ImageSet) -> ModelConfig:
    """The model for a run, normalised with the training split's statistics."""
    mean, std = train.stats()
    return ModelConfig(
        run.model,
        train.shape,
        train.num_classes,
        residual=run.residual,
        plain_block=run.plain_block,
        depth=run.depth,
        width=run.width,
        stages=run.stages,
        mean=mean,
        std=std,
        extra={"dataset": train.spec, "classes": list(train.classes), "class_map": list(train.class_map)},
    )


def batches(data: Splits, batch_size: int, augment: bool, seed: int) -> dict[str, ImageBatches | None]:
    aug = default_augment(data.train.spec) if augment else None
    return {
        "train": ImageBatches(data.train, batch_size, shuffle=True, augment=aug, seed=seed),
        "val": ImageBatches(data.val, EVAL_BATCH) if data.val is not None else None,
        "test": ImageBatches(data.test, EVAL_BATCH),
    }


def wait_for_everyone() -> None:
    """A barrier across processes (a no-op in a single one): only the main process writes a run's files, so the
    others wait here before reading what it wrote (a study's cell metrics, whether a cell was started)."""
    wait_for_main()


def is_finished(path: Path) -> bool:
    """A run folder whose training and final evaluation completed."""
    return (Path(path) / MODEL).exists() and "test_accuracy" in RunDir(path).read_metrics()


def train_in(
    run: RunDir, cfg: TrainRun, data: Splits, *, resume: bool = False, plot: bool = True
) -> dict[str, Any]:
    """Train ``cfg`` on ``data`` inside ``run``; returns the final metrics (also in metrics.json).

    Seeds everything with the run's seed first, so a run (a study's cell) does not depend on what ran before it."""
    mcfg = model_config(cfg, data.train)
    seed_everything(cfg.train.seed)
    model = build_model(mcfg)
    acc = make_accelerator(cfg.train.precision, cfg.train.cpu)
    b = batches(data, cfg.batch_size, cfg.augment, cfg.train.seed)
    result = fit(
        model, b["train"], cfg.train, val=b["val"], run=run, resume=resume, accelerator=acc, desc=cfg.name
    )
    test = evaluate(result.model, b["test"], accelerator=acc)
    save_model(run.file(MODEL), result.model, mcfg)
    last = result.last
    metrics = run.update_metrics(
        parameters=count_parameters(result.model),
        weight_layers=weight_layers(mcfg),
        train_loss=last["train_loss"],
        train_accuracy=last.get("train_accuracy"),
        val_loss=last.get("val_loss"),
        val_accuracy=last.get("val_accuracy"),
        test_loss=test["loss"],
        test_accuracy=test["accuracy"],
    )
    if plot:
        plots.learning_curves({cfg.name: result.history}, run.file("learning_curves.png"), title=cfg.name)
        if result.grad_norms:
            plots.grad_norms(
                result.grad_norms, run.file("grad_norms.png"), title=f"{cfg.name}: gradient norms"
            )
    wait_for_everyone()
    return metrics


def train_classifier(cfg: TrainRun, out: Path, *, resume: bool = False, download: bool = False) -> dict:
    """`lab1 train`: load the data (errors before anything is written), then train in a new run folder."""
    seed_everything(cfg.train.seed)
    data = load_data(cfg.dataset, cfg.data_dir, cfg.val_fraction, download)
    run = RunDir.create(out, cfg, command="lab1 train", resume=resume)
    return train_in(run, cfg, data, resume=resume)


def with_seed(cfg: TrainRun, seed: int, **changes: Any) -> TrainRun:
    return replace(cfg, train=replace(cfg.train, seed=seed), **changes)
