"""APGD (Croce & Hein 2020) on the cross-entropy and on the DLR loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab4_ood.attacks.base import per_image, unmoved_at_zero


def _loss_and_grad(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_each: Callable, eot_iter: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image losses, logits (both detached) and ∇ₓ of the summed loss, from one forward and backward pass;
    with ``eot_iter`` > 1 the gradient is the mean over that many passes (expectation over transformation, for
    a randomised model), the losses and logits those of the last pass."""
    x = x.detach().requires_grad_(True)
    total = None
    for _ in range(eot_iter):
        with torch.enable_grad():
            logits = model(x)
            losses = loss_each(logits, y)
            (grad,) = torch.autograd.grad(losses.sum(), x)
        total = grad if total is None else total + grad
    if eot_iter > 1:
        grad = total / float(eot_iter)
    return losses.detach(), logits.detach(), grad.detach()


def _ce_each(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def _dlr_each(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12), π sorting the logits down."""
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, got {logits.shape[1]}")
    ordered, order = logits.sort(dim=1)
    top_is_y = (order[:, -1] == y).float()
    picked = logits[torch.arange(len(y)), y]
    # the arithmetic in torchattacks' order (bit-identical images)
    return -(picked - ordered[:, -2] * top_is_y - ordered[:, -1] * (1.0 - top_is_y)) / (
        ordered[:, -1] - ordered[:, -3] + 1e-12
    )


def _oscillates(history: torch.Tensor, i: int, k: int, rho: float) -> torch.Tensor:
    """Per image: did the loss rise in at most ρ·k of the k steps up to step i? At the first checkpoint the
    oldest comparison reads row −1 of the history, still 0, as torchattacks and auto-attack do."""
    rises = torch.zeros(history.shape[1])
    for back in range(k):
        rises += history[i - back] > history[i - back - 1]
    return rises <= k * rho


def _apgd_run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    loss_each: Callable,
    rho: float,
    gen: torch.Generator,
    eot_iter: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run on images that are all classified right: (still robust per image, the last misclassified
    iterate per image, or the start where none was)."""
    n, shape = x.shape[0], per_image(x)
    first_check, min_check, shrink = (
        max(int(0.22 * steps), 1),
        max(int(0.06 * steps), 1),
        max(int(0.03 * steps), 1),
    )
    t = (2 * torch.rand(x.shape, generator=gen) - 1).to(x.device)
    adv = x + eps * torch.ones(shape, device=x.device) * t / t.reshape(n, -1).abs().max(1, keepdim=True)[
        0
    ].view(shape)
    adv = adv.clamp(0.0, 1.0)
    best, found = adv.clone(), adv.clone()
    history = torch.zeros(steps, n)
    losses, logits, grad = _loss_and_grad(model, adv, y, loss_each, eot_iter)
    grad_best = grad.clone()
    robust = logits.max(1)[1] == y
    loss_best = losses.clone()
    step = torch.full(shape, 2.0 * eps, device=x.device)
    previous = adv.clone()
    since_check, k = 0, first_check
    loss_at_check = loss_best.clone()
    halved_at_check = torch.ones(n, dtype=torch.bool)
    for i in range(steps):
        with torch.no_grad():
            change, previous = adv - previous, adv.clone()
            a = 0.75 if i > 0 else 1.0  # momentum: 0.75 of the new step, 0.25 of the last change
            z = adv + step * torch.sign(grad)
            z = torch.clamp(torch.min(torch.max(z, x - eps), x + eps), 0.0, 1.0)
            z = torch.clamp(
                torch.min(torch.max(adv + (z - adv) * a + change * (1 - a), x - eps), x + eps), 0.0, 1.0
            )
            adv = z + 0.0
        losses, logits, grad = _loss_and_grad(model, adv, y, loss_each, eot_iter)
        right = logits.max(1)[1] == y
        robust = robust & right
        found[~right] = adv[~right]
        history[i] = losses.cpu()
        better = losses > loss_best
        best[better], grad_best[better], loss_best[better] = adv[better], grad[better], losses[better]
        since_check += 1
        if since_check == k:
            halve = _oscillates(history, i, k, rho) | (
                ~halved_at_check & (loss_at_check.cpu() >= loss_best.cpu())
            )
            halved_at_check, loss_at_check = halve.clone(), loss_best.clone()
            if halve.any():
                halve = halve.to(x.device)
                step[halve] /= 2.0
                adv[halve], grad[halve] = best[halve], grad_best[halve]
            since_check, k = 0, max(k - shrink, min_check)
    return robust, found


def _apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    loss_each: Callable,
    seed: int,
    restarts: int = 1,
    eot_iter: int = 1,
) -> torch.Tensor:
    x0 = x
    adv = x0.clone()
    with torch.no_grad():
        robust = model(x0).max(1)[1] == y
    gen = torch.Generator().manual_seed(seed)  # one stream for all restarts
    for _ in range(restarts):  # each restart from a new random start, on the images still robust
        todo = robust.nonzero().flatten()
        if todo.numel() == 0:
            break
        still, found = _apgd_run(model, x0[todo], y[todo], eps, steps, loss_each, 0.75, gen, eot_iter)
        adv[todo[~still]] = found[~still]
        robust[todo[~still]] = False
    return adv


@unmoved_at_zero
def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    seed: int = 0,
    restarts: int = 1,
    eot_iter: int = 1,
) -> torch.Tensor:
    """APGD-CE in the L∞ ball of radius ``eps``: ``steps`` momentum steps with step-size halving at checkpoints
    (random start from a generator seeded with ``seed``), ``restarts`` times on the images still robust, each
    gradient averaged over ``eot_iter`` passes; images it cannot fool, or misclassified already, stay x."""
    return _apgd(model, x, y, eps, steps, _ce_each, seed, restarts, eot_iter)


@unmoved_at_zero
def apgd_dlr(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    seed: int = 0,
    restarts: int = 1,
    eot_iter: int = 1,
) -> torch.Tensor:
    """APGD on the difference-of-logits-ratio loss (at least 3 classes), otherwise as ``apgd``."""
    return _apgd(model, x, y, eps, steps, _dlr_each, seed, restarts, eot_iter)
