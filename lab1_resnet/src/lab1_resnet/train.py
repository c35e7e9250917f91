"""`lab1 train`: one MLP or CNN, plain or residual, trained through the core loop into a run folder.

    cfg = TrainRun(dataset="digits", model="mlp", depth=20, residual=False)
    metrics = train_classifier(cfg, Runtime(out=Path("runs/plain20")))

The run folder gets config.json, metrics.json (history, per-layer gradient norms, parameters, test accuracy),
model.safetensors (loadable by any lab with ``dla_core.models.load_model``), learning_curves.png and
grad_norms.png. ``train_in`` is the same work inside a run folder someone else created (the depth study's cells,
through ``dla_core.recipe.child_run``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dla_core.config import Runtime
from dla_core.data import ImageBatches, ImageSet, Splits, default_augment, load_splits
from dla_core.engine import TrainConfig
from dla_core.errors import DlaError
from dla_core.models import PLAIN_BLOCKS, ModelConfig, build_model, model_config_for, weight_layers
from dla_core.recipe import save_classifier, train_into
from dla_core.runs import RunDir
from dla_core.seeding import seed_everything
from lab1_resnet.choices import FAMILIES

log = logging.getLogger(__name__)

EVAL_BATCH = 512


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
    return model_config_for(
        train, run.model, residual=run.residual, plain_block=run.plain_block, depth=run.depth,
        width=run.width, stages=run.stages,
    )  # fmt: skip


def batches(data: Splits, batch_size: int, augment: bool, seed: int) -> dict[str, ImageBatches | None]:
    aug = default_augment(data.train.spec) if augment else None
    return {
        "train": ImageBatches(data.train, batch_size, shuffle=True, augment=aug, seed=seed),
        "val": ImageBatches(data.val, EVAL_BATCH) if data.val is not None else None,
        "test": ImageBatches(data.test, EVAL_BATCH),
    }


def own_metrics(mcfg: ModelConfig) -> dict[str, Any]:
    """What a `lab1 train` run reports besides the recipe's ``METRIC_KEYS``, however it was trained."""
    return {"weight_layers": weight_layers(mcfg)}


def train_in(run: RunDir, cfg: TrainRun, data: Splits, rt: Runtime, *, plot: bool = True) -> dict[str, Any]:
    """Train ``cfg`` on ``data`` inside ``run`` (resuming from its checkpoint when ``rt.resume``); returns the
    final metrics (also in metrics.json).

    Seeds everything with the run's seed before the model is built: `lab1 train`'s seed at the start of its command,
    and for a study's cell its own seed, so that a cell does not depend on what ran before it."""
    mcfg = model_config(cfg, data.train)
    seed_everything(cfg.train.seed)
    model = build_model(mcfg)
    done = train_into(
        run, model, batches(data, cfg.batch_size, cfg.augment, cfg.train.seed), cfg.train, rt,
        save=save_classifier(mcfg), extra=lambda m, acc, so_far: own_metrics(mcfg),
        plot=plot, name=cfg.name,
    )  # fmt: skip
    return done.metrics


def train_classifier(cfg: TrainRun, rt: Runtime) -> dict[str, Any]:
    """`lab1 train`: load the data (errors before anything is written), then train in a new run folder (``train_in``
    seeds: the command's one seed)."""
    data = load_data(cfg.dataset, rt.data_dir, cfg.val_fraction, rt.download)
    run = RunDir.create(rt.out, cfg, command="lab1 train", resume=rt.resume)
    return train_in(run, cfg, data, rt)
