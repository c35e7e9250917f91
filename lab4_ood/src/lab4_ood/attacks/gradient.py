"""Gradient-sign and gradient-step attacks: FGSM, PGD (L∞ and L2), BIM, MI-FGSM."""

from __future__ import annotations

import torch
import torch.nn as nn

from lab4_ood.attacks.base import input_grad, per_image, unmoved_at_zero


@unmoved_at_zero
def fgsm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, targeted: bool = False
) -> torch.Tensor:
    """One signed gradient step of size ``eps``; ``y`` is the true label, or the target when ``targeted``."""
    sign = -1.0 if targeted else 1.0
    return (x.detach() + sign * eps * input_grad(model, x, y).sign()).clamp_(0, 1)


@unmoved_at_zero
def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    targeted: bool = False,
) -> torch.Tensor:
    """Projected gradient descent in the L∞ ball of radius ``eps`` (random start from torch's global RNG)."""
    x0 = x
    step_size = step_size if step_size is not None else 2.5 * eps / steps
    sign = -1.0 if targeted else 1.0
    adv = x0 + torch.empty_like(x0).uniform_(-eps, eps) if random_start else x0.clone()
    adv = adv.clamp_(0, 1)
    for _ in range(steps):
        adv = adv + sign * step_size * input_grad(model, adv, y).sign()
        adv = torch.minimum(torch.maximum(adv, x0 - eps), x0 + eps).clamp_(0, 1)
    return adv


@unmoved_at_zero
def bim(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    targeted: bool = False,
) -> torch.Tensor:
    """Basic iterative method: ``steps`` FGSM steps of ``step_size`` (default ε/4) from x, each clipped to the
    L∞ ball of radius ``eps`` and to [0, 1]; no random start, so deterministic."""
    step_size = step_size if step_size is not None else eps / 4
    return pgd(model, x, y, eps, steps=steps, step_size=step_size, random_start=False, targeted=targeted)


@unmoved_at_zero
def mifgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    decay: float = 1.0,
    targeted: bool = False,
) -> torch.Tensor:
    """Momentum iterative FGSM: the sign of the accumulated L1-normalised gradients, ``steps`` steps of
    ``step_size`` (default ε/4) from x, clipped to the L∞ ball of radius ``eps`` and to [0, 1]."""
    x0 = x
    step_size = step_size if step_size is not None else eps / 4
    sign = -1.0 if targeted else 1.0
    dims = tuple(range(1, x0.dim()))
    momentum = torch.zeros_like(x0)
    adv = x0.clone()
    for _ in range(steps):
        grad = sign * input_grad(model, adv, y)
        # L1-normalised per image; an image whose gradient is all zero stays put (0, not 0/0 = NaN, which a NaN
        # momentum would carry to every later step and whose sign is not 0 on every device)
        scale = torch.mean(torch.abs(grad), dim=dims, keepdim=True)
        grad = torch.where(scale > 0, grad / scale, torch.zeros_like(grad))
        grad = grad + momentum * decay
        momentum = grad
        adv = adv + step_size * grad.sign()
        adv = torch.clamp(x0 + torch.clamp(adv - x0, min=-eps, max=eps), min=0, max=1)
    return adv


@unmoved_at_zero
def pgd_l2(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    targeted: bool = False,
) -> torch.Tensor:
    """PGD in the L2 ball of radius ``eps``: L2-normalised gradient steps of ``step_size`` (default ε/5), each
    projected onto the ball and [0, 1]; random start inside the ball from torch's global RNG."""
    x0 = x
    step_size = step_size if step_size is not None else eps / 5
    sign = -1.0 if targeted else 1.0
    n = x0.shape[0]
    adv = x0.clone()
    if random_start:
        delta = torch.empty_like(x0).normal_()
        norm = delta.view(n, -1).norm(p=2, dim=1).view(per_image(x0))
        radius = torch.zeros_like(norm).uniform_(0, 1)
        delta *= radius / norm * eps
        adv = torch.clamp(adv + delta, min=0, max=1)
    for _ in range(steps):
        grad = sign * input_grad(model, adv, y)
        grad_norm = torch.norm(grad.view(n, -1), p=2, dim=1) + 1e-10  # torchattacks' eps_for_division
        adv = adv + step_size * (grad / grad_norm.view(per_image(x0)))
        delta = adv - x0
        norm = torch.norm(delta.view(n, -1), p=2, dim=1)
        factor = torch.minimum(eps / norm, torch.ones_like(norm))  # δ = 0: ε/0 = inf, factor 1
        adv = torch.clamp(x0 + delta * factor.view(per_image(x0)), min=0, max=1)
    return adv
