"""Training for lab4, all through the core recipe (``dla_core.recipe.train_into``): a classifier with adversarial training and/or outlier
exposure (``lab4 train``), and a decoder on a frozen classifier (``lab4 train-ae``).

Robust loss per batch (x, y); x_a is the first ``fraction`` of the batch, attacked on the fly:

    α · L(f(x), y) + (1 − α) · L(f(x_adv), y_a)          adversarial training (--adversarial: fgsm, pgd, …)
    L(f(x), y) + β · KL(p(x_a) ‖ p(x_trades))            TRADES (Zhang et al. 2019), instead of the line above
    + λ · mean over an OOD batch of −(mean(logits) − logsumexp(logits))   (outlier exposure: CE to uniform)

L is cross-entropy, or LogitNorm's (Wei et al. 2022) cross-entropy of f(x) / (τ·(‖f(x)‖₂ + 1e-7)) when τ is given;
p = softmax. TRADES' x_trades maximises the KL term by PGD in the L∞ ball from x + 0.001·N(0, I) (the reference
code's start), ``steps`` signed steps of 2.5·ε/steps, each projected onto the ball and [0, 1]; KL is summed over
classes and averaged over the attacked images (the reference code's sum / batch size).

BatchNorm (and dropout) while attacking: the adversarial examples are made with the model in **eval mode** (the
running statistics normalise and are left untouched by the attack's forward passes), as TRADES' reference code
does (model.eval() to attack, model.train() to update); the loss is then computed in train mode, so only the
update's forward passes move the running statistics.

The OOD batch that goes with training batch i of epoch e is a function of (seed, e, i, rank), not of the
process's history (``WithOutliers``), so a run resumed mid-epoch sees the very OOD batches the uninterrupted
run saw.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator

from dla_core import plots
from dla_core.config import Runtime
from dla_core.data import ImageBatches, default_augment
from dla_core.engine import StepOutput, TrainConfig
from dla_core.models import build_model, count_parameters, load_model, model_config_for
from dla_core.recipe import Extra, save_classifier, train_into
from dla_core.runs import RunDir
from dla_core.seeding import seed_everything
from lab4_ood import methods
from lab4_ood.attacks import attack
from lab4_ood.autoencoder import AUTOENCODER, FeatureAutoencoder, reconstruction_step, save_autoencoder
from lab4_ood.datasets import check_model_fits, load_id, load_ood

log = logging.getLogger(__name__)


def outlier_exposure_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy from the softmax to the uniform distribution, averaged over the batch."""
    logits = logits.float()
    return -(logits.mean(1) - torch.logsumexp(logits, 1)).mean()


def logitnorm_loss(logits: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """LogitNorm (Wei et al. 2022): cross-entropy of the logits divided by τ times their L2 norm (+1e-7, as the
    reference code), averaged over the batch."""
    logits = logits.float()
    norms = logits.norm(p=2, dim=1, keepdim=True) + 1e-7
    return F.cross_entropy(logits / norms / tau, y)


def trades_kl(clean_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(clean) ‖ softmax(adv)) summed over classes, averaged over the images (TRADES' robust term)."""
    return F.kl_div(
        F.log_softmax(adv_logits.float(), 1), F.softmax(clean_logits.float(), 1), reduction="batchmean"
    )


def trades_attack(model: nn.Module, x: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """TRADES' adversarial examples: PGD on KL(p(x) ‖ p(x')) in the L∞ ball of radius ``eps`` around x, from
    x + 0.001·N(0, I), ``steps`` signed steps of 2.5·ε/steps, each projected onto the ball and [0, 1]. Runs the
    model in the mode it is in (the caller puts it in eval mode); touches no parameter's ``.grad``."""
    x0 = x.detach()
    with torch.no_grad():
        target = F.softmax(model(x0).float(), 1)
    adv = x0 + 0.001 * torch.randn_like(x0)
    step_size = 2.5 * eps / steps
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = F.kl_div(F.log_softmax(model(adv).float(), 1), target, reduction="sum")
            (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + step_size * grad.sign()
        adv = torch.minimum(torch.maximum(adv, x0 - eps), x0 + eps).clamp_(0, 1)
    return adv.detach()


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
    """A classification step with optional on-the-fly adversarial examples (or TRADES), LogitNorm and outlier
    exposure (the module doc has the loss).

    Batches are (x, y), or (x, y, x_ood) from ``WithOutliers`` for outlier exposure. The adversarial examples are
    made with the model in eval mode, its mode restored before the loss (see the module doc on BatchNorm).
    """

    def __init__(
        self,
        adversarial: str | None = None,
        eps: float = 0.0,
        alpha: float = 0.5,
        fraction: float = 1.0,
        pgd_steps: int = 7,
        oe_weight: float = 0.5,
        trades_beta: float | None = None,
        logitnorm_tau: float | None = None,
    ):
        if adversarial is not None and trades_beta is not None:
            raise ValueError("TRADES makes its own adversarial examples: give adversarial or trades_beta")
        self.adversarial, self.eps, self.alpha, self.fraction, self.pgd_steps = (
            adversarial,
            eps,
            alpha,
            fraction,
            pgd_steps,
        )
        self.oe_weight, self.trades_beta, self.logitnorm_tau = oe_weight, trades_beta, logitnorm_tau

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The classification loss: cross-entropy, or LogitNorm's when τ is set."""
        if self.logitnorm_tau is not None:
            return logitnorm_loss(logits, y, self.logitnorm_tau)
        return F.cross_entropy(logits.float(), y)

    def adversarial_examples(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The attack's (or TRADES') examples of x, made with the model in eval mode; its mode is restored."""
        raw = getattr(model, "module", model)  # attack the unwrapped model: no DDP hooks for input grads
        was_training = raw.training
        raw.eval()
        try:
            if self.trades_beta is not None:
                return trades_attack(raw, x, self.eps, self.pgd_steps)
            return attack(self.adversarial, raw, x, y, self.eps, steps=self.pgd_steps)
        finally:
            raw.train(was_training)

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> StepOutput:
        x, y = batch[0], batch[1]
        if self.adversarial is not None or self.trades_beta is not None:
            n = max(1, round(self.fraction * len(x)))
            x_adv = self.adversarial_examples(model, x[:n], y[:n])
        logits = model(x)
        loss = self.loss(logits, y)
        if self.trades_beta is not None:
            loss = loss + self.trades_beta * trades_kl(logits[:n], model(x_adv))
        elif self.adversarial is not None:
            loss = self.alpha * loss + (1 - self.alpha) * self.loss(model(x_adv), y[:n])
        if len(batch) > 2:
            loss = loss + self.oe_weight * outlier_exposure_loss(model(batch[2]))
        return StepOutput(loss, len(y), logits.argmax(1) == y)


#### lab4 train ####

EVAL_BATCH = 512


@dataclass(frozen=True)
class TrainRunConfig:
    dataset: str
    family: str = "cnn"  # mlp | cnn (dla_core.models)
    depth: int = 2
    width: int = 32
    stages: int = 2
    residual: bool = True
    adversarial: str | None = None  # a declared attack (methods.attacks())
    eps: float = 0.03  # attack radius in [0, 1] pixel units (an L2 norm for pgd-l2)
    alpha: float = 0.5  # weight of the clean loss
    adv_fraction: float = 1.0  # share of each batch that is attacked
    pgd_steps: int = 7
    outlier_exposure: str | None = None  # OOD spec for outlier exposure
    oe_weight: float = 0.5
    trades_beta: float | None = None  # TRADES' β (its KL-PGD attack at eps, pgd_steps)
    logitnorm_tau: float | None = None  # LogitNorm's τ
    augment: bool = True  # the dataset's default augmentation (crop + flip on CIFAR, none on digits)
    batch_size: int = 128
    train: TrainConfig = field(default_factory=TrainConfig)


def fgsm_accuracy(test: ImageBatches, eps: float, max_batches: int | None = None) -> Extra:
    """``extra`` for the recipe: accuracy of the trained model on FGSM-attacked test images at ``eps`` (on the
    first ``max_batches`` batches in a smoke run, ``TrainConfig.max_steps``)."""

    def extra(model: nn.Module, acc: Accelerator, so_far: Mapping[str, Any]) -> dict[str, float]:
        correct = seen = 0
        for i, (x, y) in enumerate(test.iterate(0, device=acc.device)):
            if max_batches is not None and i >= max_batches:
                break
            with torch.no_grad():
                correct += int((model(attack("fgsm", model, x, y, eps)).argmax(1) == y).sum())
            seen += len(y)
        return {f"test_fgsm_accuracy@{eps:g}": correct / max(seen, 1)}

    return extra


def train_classifier(cfg: TrainRunConfig, rt: Runtime) -> dict[str, Any]:
    """`lab4 train` into ``rt.out``; returns everything in the run's metrics.json."""
    seed_everything(cfg.train.seed)  # before anything random: Python, NumPy and torch
    splits = load_id(cfg.dataset, rt.data_dir, rt.download)
    mcfg = model_config_for(
        splits.train, cfg.family, residual=cfg.residual, depth=cfg.depth, width=cfg.width, stages=cfg.stages
    )
    model = build_model(mcfg)
    run = RunDir.create(rt.out, cfg, command="lab4 train", resume=rt.resume)
    step = RobustStep(
        cfg.adversarial,
        cfg.eps,
        cfg.alpha,
        cfg.adv_fraction,
        cfg.pgd_steps,
        cfg.oe_weight,
        trades_beta=cfg.trades_beta,
        logitnorm_tau=cfg.logitnorm_tau,
    )
    augment = default_augment(cfg.dataset) if cfg.augment else None
    train = ImageBatches(splits.train, cfg.batch_size, shuffle=True, augment=augment, seed=cfg.train.seed)
    if cfg.outlier_exposure:
        ood_train, _ = load_ood(cfg.outlier_exposure, splits.train.shape, rt.data_dir, rt.download)
        train = WithOutliers(
            train, ImageBatches(ood_train, cfg.batch_size, shuffle=True, seed=cfg.train.seed + 1)
        )
    test = ImageBatches(splits.test, EVAL_BATCH)
    batches = {
        "train": train,
        "val": ImageBatches(splits.val, EVAL_BATCH) if splits.val is not None else None,
        "test": test,
    }
    log.info("training %s (%d parameters) on %s", cfg.family, count_parameters(model), cfg.dataset)
    # FGSM's L∞ accuracy at --eps, for L∞ training (an L2 radius such as pgd-l2's is no L∞ radius)
    linf = cfg.trades_beta is not None or (
        cfg.adversarial is not None and methods.attacks()[cfg.adversarial].norm == "linf"
    )
    extra = fgsm_accuracy(test, cfg.eps, cfg.train.max_steps) if linf else None
    done = train_into(
        run,
        model,
        batches,
        cfg.train,
        rt,
        save=save_classifier(mcfg),
        step=step,
        extra=extra,
        name="lab4 train",
    )
    return done.metrics


#### lab4 train-ae ####


@dataclass(frozen=True)
class AutoencoderConfig:
    encoder: Path
    dataset: str
    width: int = 64  # decoder channels
    batch_size: int = 128
    train: TrainConfig = field(default_factory=TrainConfig)


def save_ae(run: RunDir, ae: nn.Module) -> Path:
    """The recipe's saver for ``lab4 train-ae``: encoder + decoder in autoencoder.safetensors."""
    save_autoencoder(run.file(AUTOENCODER), ae)
    return run.path / AUTOENCODER


def train_autoencoder(cfg: AutoencoderConfig, rt: Runtime) -> dict[str, Any]:
    """`lab4 train-ae` into ``rt.out``; returns everything in the run's metrics.json (``test_loss`` is the test
    reconstruction MSE, also written as ``test_mse``)."""
    seed_everything(cfg.train.seed)  # before anything random: Python, NumPy and torch
    encoder = load_model(cfg.encoder)
    splits = load_id(cfg.dataset, rt.data_dir, rt.download)
    check_model_fits(encoder, splits.train)
    ae = FeatureAutoencoder.around(encoder, cfg.width)
    run = RunDir.create(rt.out, cfg, command="lab4 train-ae", resume=rt.resume)
    batches = {
        "train": ImageBatches(splits.train, cfg.batch_size, shuffle=True, seed=cfg.train.seed),
        "val": ImageBatches(splits.val, EVAL_BATCH) if splits.val is not None else None,
        "test": ImageBatches(splits.test, EVAL_BATCH),
    }
    done = train_into(
        run, ae, batches, cfg.train, rt, save=save_ae, step=reconstruction_step, eval_step=reconstruction_step,
        extra=lambda m, acc, so_far: {
            "decoder_parameters": count_parameters(m.decoder),
            "test_mse": so_far["test_loss"],  # the name this command always wrote
        },
        name="lab4 train-ae",
    )  # fmt: skip
    plot_reconstructions(done.model, ImageBatches(splits.test, 8), done.accelerator.device, run)
    return done.metrics


def plot_reconstructions(ae: nn.Module, test: ImageBatches, device: torch.device, run: RunDir) -> None:
    """reconstructions.png: the first test images above, their reconstructions below."""
    x, _ = next(iter(test.iterate(0, device=device)))
    with torch.no_grad():
        recon = ae(x)
    images = torch.cat([x, recon]).float().cpu().numpy()
    plots.image_grid(
        images,
        ["input"] * len(x) + ["reconstruction"] * len(x),
        run.file("reconstructions.png"),
        ncols=len(x),
    )
