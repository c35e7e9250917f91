"""Training for lab4, all through ``dla_core.engine.fit``: a classifier with adversarial training and/or outlier
exposure (``lab4 train``), and a decoder on a frozen classifier (``lab4 train-ae``).

Robust loss per batch (x, y), with the attack made on the fly against the model as it is (train mode):

    α · CE(f(x), y) + (1 − α) · CE(f(x_adv), y_adv)      x_adv: the first ``fraction`` of the batch, attacked
    + λ · mean over an OOD batch of −(mean(logits) − logsumexp(logits))   (outlier exposure: CE to uniform)

The OOD batch that goes with training batch i of epoch e is a function of (seed, e, i, rank), not of the
process's history (``WithOutliers``), so a run resumed mid-epoch sees the very OOD batches the uninterrupted
run saw.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from dla_core import plots
from dla_core.data import ImageBatches, default_augment
from dla_core.engine import StepOutput, TrainConfig, evaluate, fit, make_accelerator
from dla_core.models import ModelConfig, build_model, count_parameters, load_model, save_model
from dla_core.runs import RunDir
from dla_core.seeding import seed_everything
from lab4_ood.attacks import attack
from lab4_ood.autoencoder import AUTOENCODER, FeatureAutoencoder, reconstruction_step, save_autoencoder
from lab4_ood.datasets import check_model_fits, load_id, load_ood

log = logging.getLogger(__name__)


def outlier_exposure_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy from the softmax to the uniform distribution, averaged over the batch."""
    logits = logits.float()
    return -(logits.mean(1) - torch.logsumexp(logits, 1)).mean()


class WithOutliers:
    """Training batches, each paired with an OOD batch: (x, y, x_ood).

    The OOD set is cycled through in passes, a fresh order each pass: the k-th global training batch
    (k = epoch · batches_per_epoch + i) takes OOD batch k mod M of OOD pass k div M (M OOD batches per pass,
    each pass ordered by the OOD batches' own (seed, pass)). Everything follows from (seed, epoch, i, rank),
    so ``iterate(epoch, start=i)`` serves exactly what an uninterrupted run served from batch i on.
    """

    def __init__(self, train: ImageBatches, ood: ImageBatches):
        self.train, self.ood = train, ood

    def __len__(self) -> int:
        return len(self.train)

    def num_batches(self, world: int) -> int:
        return self.train.num_batches(world)

    def iterate(
        self, epoch: int, *, rank: int = 0, world: int = 1, device: torch.device | None = None, start: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        per_pass = self.ood.num_batches(world)
        if per_pass == 0:
            raise ValueError("the outlier-exposure set is empty")
        k = epoch * self.train.num_batches(world) + start
        ood = self._ood_from(k // per_pass, k % per_pass, rank, world, device)
        for x, y in self.train.iterate(epoch, rank=rank, world=world, device=device, start=start):
            x_ood, _ = next(ood)
            yield x, y, x_ood

    def _ood_from(
        self, ood_pass: int, batch: int, rank: int, world: int, device: torch.device | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from self.ood.iterate(ood_pass, rank=rank, world=world, device=device, start=batch)
            ood_pass, batch = ood_pass + 1, 0


class RobustStep:
    """A classification step with optional on-the-fly adversarial examples and outlier exposure.

    Batches are (x, y), or (x, y, x_ood) from ``WithOutliers`` for outlier exposure.
    """

    def __init__(
        self,
        adversarial: str | None = None,
        eps: float = 0.0,
        alpha: float = 0.5,
        fraction: float = 1.0,
        pgd_steps: int = 7,
        oe_weight: float = 0.5,
    ):
        self.adversarial, self.eps, self.alpha, self.fraction, self.pgd_steps = (
            adversarial,
            eps,
            alpha,
            fraction,
            pgd_steps,
        )
        self.oe_weight = oe_weight

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> StepOutput:
        x, y = batch[0], batch[1]
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        if self.adversarial is not None:
            n = max(1, round(self.fraction * len(x)))
            raw = getattr(model, "module", model)  # attack the unwrapped model: no DDP hooks for input grads
            x_adv = attack(self.adversarial, raw, x[:n], y[:n], self.eps, steps=self.pgd_steps)
            loss = self.alpha * loss + (1 - self.alpha) * F.cross_entropy(model(x_adv).float(), y[:n])
        if len(batch) > 2:
            loss = loss + self.oe_weight * outlier_exposure_loss(model(batch[2]))
        return StepOutput(loss, len(y), (logits.argmax(1) == y).sum())


#### lab4 train ####


@dataclass(frozen=True)
class TrainRunConfig:
    dataset: str
    out: Path
    family: str = "cnn"  # mlp | cnn (dla_core.models)
    depth: int = 2
    width: int = 32
    stages: int = 2
    residual: bool = True
    adversarial: str | None = None  # fgsm | pgd
    eps: float = 0.03  # attack radius in [0, 1] pixel units
    alpha: float = 0.5  # weight of the clean loss
    adv_fraction: float = 1.0  # share of each batch that is attacked
    pgd_steps: int = 7
    outlier_exposure: str | None = None  # OOD spec for outlier exposure
    oe_weight: float = 0.5
    augment: bool = True  # the dataset's default augmentation (crop + flip on CIFAR, none on digits)
    batch_size: int = 128
    data_dir: Path = Path("data")
    download: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)


def train_classifier(cfg: TrainRunConfig, resume: bool = False) -> dict[str, float]:
    seed_everything(cfg.train.seed)  # before anything random: Python, NumPy and torch
    splits = load_id(cfg.dataset, cfg.data_dir, cfg.download)
    mean, std = splits.train.stats()
    model_cfg = ModelConfig(
        cfg.family,
        splits.train.shape,
        splits.train.num_classes,
        residual=cfg.residual,
        depth=cfg.depth,
        width=cfg.width,
        stages=cfg.stages,
        mean=mean,
        std=std,
        extra={"dataset": cfg.dataset, "classes": splits.train.classes},
    )
    model = build_model(model_cfg)
    run = RunDir.create(cfg.out, cfg, command="lab4 train", resume=resume)
    step = RobustStep(cfg.adversarial, cfg.eps, cfg.alpha, cfg.adv_fraction, cfg.pgd_steps, cfg.oe_weight)
    augment = default_augment(cfg.dataset) if cfg.augment else None
    train = ImageBatches(splits.train, cfg.batch_size, shuffle=True, augment=augment, seed=cfg.train.seed)
    if cfg.outlier_exposure:
        ood_train, _ = load_ood(cfg.outlier_exposure, splits.train.shape, cfg.data_dir, cfg.download)
        train = WithOutliers(
            train, ImageBatches(ood_train, cfg.batch_size, shuffle=True, seed=cfg.train.seed + 1)
        )
    val = ImageBatches(splits.val, 512) if splits.val is not None else None
    acc = make_accelerator(cfg.train.precision, cfg.train.cpu)
    log.info("training %s (%d parameters) on %s", cfg.family, count_parameters(model), cfg.dataset)
    result = fit(
        model,
        train,
        cfg.train,
        step=step,
        val=val,
        run=run,
        resume=resume,
        accelerator=acc,
        desc="lab4 train",
    )
    model = result.model.eval()
    test_batches = ImageBatches(splits.test, 512)
    test = evaluate(model, test_batches, accelerator=acc)
    metrics = {
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "parameters": count_parameters(model),
    }
    if cfg.adversarial is not None:
        correct = 0
        for x, y in test_batches.iterate(0, device=acc.device):
            with torch.no_grad():
                correct += int((model(attack("fgsm", model, x, y, cfg.eps)).argmax(1) == y).sum())
        metrics[f"test_fgsm_accuracy@{cfg.eps:g}"] = correct / len(splits.test)
    save_model(run.file("model.safetensors"), model, model_cfg)
    run.update_metrics(**metrics)
    plots.learning_curves({"lab4 train": result.history}, run.file("learning_curves.png"))
    return metrics


#### lab4 train-ae ####


@dataclass(frozen=True)
class AutoencoderConfig:
    encoder: Path
    dataset: str
    out: Path
    width: int = 64  # decoder channels
    batch_size: int = 128
    data_dir: Path = Path("data")
    download: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)


def train_autoencoder(cfg: AutoencoderConfig, resume: bool = False) -> dict[str, float]:
    seed_everything(cfg.train.seed)  # before anything random: Python, NumPy and torch
    encoder = load_model(cfg.encoder)
    splits = load_id(cfg.dataset, cfg.data_dir, cfg.download)
    check_model_fits(encoder, splits.train)
    ae = FeatureAutoencoder.around(encoder, cfg.width)
    run = RunDir.create(cfg.out, cfg, command="lab4 train-ae", resume=resume)
    acc = make_accelerator(cfg.train.precision, cfg.train.cpu)
    train = ImageBatches(splits.train, cfg.batch_size, shuffle=True, seed=cfg.train.seed)
    val = ImageBatches(splits.val, 512) if splits.val is not None else None
    result = fit(
        ae,
        train,
        cfg.train,
        step=reconstruction_step,
        val=val,
        eval_step=reconstruction_step,
        run=run,
        resume=resume,
        accelerator=acc,
        desc="lab4 train-ae",
    )
    ae = result.model.eval()
    test = evaluate(ae, ImageBatches(splits.test, 512), step=reconstruction_step, accelerator=acc)
    save_autoencoder(run.file(AUTOENCODER), ae)
    metrics = {"test_mse": test["loss"], "decoder_parameters": count_parameters(ae.decoder)}
    run.update_metrics(**metrics)
    plots.learning_curves({"decoder": result.history}, run.file("learning_curves.png"))
    x, _ = next(iter(ImageBatches(splits.test, 8).iterate(0, device=acc.device)))
    with torch.no_grad():
        recon = ae(x)
    images = torch.cat([x, recon]).float().cpu().numpy()
    plots.image_grid(
        images,
        ["input"] * len(x) + ["reconstruction"] * len(x),
        run.file("reconstructions.png"),
        ncols=len(x),
    )
    return metrics
