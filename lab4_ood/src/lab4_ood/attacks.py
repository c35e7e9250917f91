"""Adversarial attacks in [0, 1] pixel space (the models normalise inside), clamped to the valid range.

The attacks never change the model's train/eval state (torchattacks issues #21, #48): the caller decides.
``lab4 attack`` puts the model in eval mode; adversarial training attacks the model as it is, in train mode.
Gradients are taken with ``torch.autograd.grad`` w.r.t. the input only, so no parameter ``.grad`` is touched.

    fgsm   x' = clip(x + ε·sign ∇ₓ CE(f(x), y))            targeted: x − ε·sign ∇ₓ CE(f(x), target)
    pgd    ``steps`` signed steps of size ``step_size`` (default 2.5·ε/steps) from a random start in the
           ε-ball, each projected back onto the L∞ ball around x and onto [0, 1] (Madry et al.)
    bim    iterative FGSM (Kurakin et al.): pgd from x itself, ``steps`` signed steps of ``step_size``
           (default ε/4: torchattacks 3.5.1's α = 2/255 at its ε = 8/255), each clipped to the ε-ball and [0, 1]
    mifgsm momentum iterative FGSM (Dong et al.): g ← μ·g + ∇/mean|∇| (the gradient L1-normalised per image,
           μ = ``decay``, default 1.0), x' ← x' + step·sign g, clipped to the ε-ball and [0, 1]; from x itself,
           ``steps`` steps of ``step_size`` (default ε/4, as bim)
    pgd-l2 PGD in the L2 ball of radius ε: steps of ``step_size`` (default ε/5: torchattacks' α = 0.2 at ε = 1)
           along ∇/‖∇‖₂, each projected onto the L2 ball around x (δ·min(1, ε/‖δ‖₂)) and onto [0, 1]; the random
           start is δ = ε·r·z/‖z‖₂, z ~ N(0, I), r ~ U(0, 1) per image (torchattacks' PGDL2); ε is an L2 norm in
           [0, 1] pixel units, so it may exceed 1

The iterative attacks follow torchattacks 3.5.1's arithmetic step for step, so that its BIM, MIFGSM and PGDL2
(random_start=False, or the same seed) give bit-identical images (``nox -s tests-lab4-peers``).

``ATTACKS`` maps each name (``lab4 attack --method``, ``lab4 train --adversarial``) to its function; ``@register``
adds one (methods.ATTACKS lists the built-in names for ``--help``, without torch; a test keeps the two equal).
An attack is ``f(model, x, y, eps, *, targeted=..., ...)``; ``attack`` passes it the options it names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

Attack = Callable[..., torch.Tensor]
ATTACKS: dict[str, Attack] = {}


def register(fn: Attack) -> Attack:
    """Function decorator: the function's name, ``_`` read as ``-``, becomes an attack of ``lab4 attack`` and
    ``lab4 train`` (``pgd_l2`` is ``pgd-l2``)."""
    ATTACKS[fn.__name__.replace("_", "-")] = fn
    return fn


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x).float(), y)
        (grad,) = torch.autograd.grad(loss, x)
    return grad


@register
def fgsm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, targeted: bool = False
) -> torch.Tensor:
    """One signed gradient step of size ``eps``; ``y`` is the true label, or the target when ``targeted``."""
    if eps == 0:
        return x.detach().clone()
    sign = -1.0 if targeted else 1.0
    return (x.detach() + sign * eps * _input_grad(model, x, y).sign()).clamp_(0, 1)


@register
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
    x0 = x.detach()
    if eps == 0:
        return x0.clone()
    step_size = step_size if step_size is not None else 2.5 * eps / steps
    sign = -1.0 if targeted else 1.0
    adv = x0 + torch.empty_like(x0).uniform_(-eps, eps) if random_start else x0.clone()
    adv = adv.clamp_(0, 1)
    for _ in range(steps):
        adv = adv + sign * step_size * _input_grad(model, adv, y).sign()
        adv = torch.minimum(torch.maximum(adv, x0 - eps), x0 + eps).clamp_(0, 1)
    return adv


@register
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


def _per_image(t: torch.Tensor) -> tuple[int, ...]:
    """The shape that broadcasts one number per image over a batch shaped like ``t``."""
    return (t.shape[0],) + (1,) * (t.dim() - 1)


@register
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
    x0 = x.detach()
    if eps == 0:
        return x0.clone()
    step_size = step_size if step_size is not None else eps / 4
    sign = -1.0 if targeted else 1.0
    dims = tuple(range(1, x0.dim()))
    momentum = torch.zeros_like(x0)
    adv = x0.clone()
    for _ in range(steps):
        grad = sign * _input_grad(model, adv, y)
        # L1-normalised per image; an image whose gradient is all zero stays put (0, not 0/0 = NaN, which a NaN
        # momentum would carry to every later step and whose sign is not 0 on every device)
        scale = torch.mean(torch.abs(grad), dim=dims, keepdim=True)
        grad = torch.where(scale > 0, grad / scale, torch.zeros_like(grad))
        grad = grad + momentum * decay
        momentum = grad
        adv = adv + step_size * grad.sign()
        adv = torch.clamp(x0 + torch.clamp(adv - x0, min=-eps, max=eps), min=0, max=1)
    return adv


@register
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
    x0 = x.detach()
    if eps == 0:
        return x0.clone()
    step_size = step_size if step_size is not None else eps / 5
    sign = -1.0 if targeted else 1.0
    n = x0.shape[0]
    adv = x0.clone()
    if random_start:
        delta = torch.empty_like(x0).normal_()
        norm = delta.view(n, -1).norm(p=2, dim=1).view(_per_image(x0))
        radius = torch.zeros_like(norm).uniform_(0, 1)
        delta *= radius / norm * eps
        adv = torch.clamp(adv + delta, min=0, max=1)
    for _ in range(steps):
        grad = sign * _input_grad(model, adv, y)
        grad_norm = torch.norm(grad.view(n, -1), p=2, dim=1) + 1e-10  # torchattacks' eps_for_division
        adv = adv + step_size * (grad / grad_norm.view(_per_image(x0)))
        delta = adv - x0
        norm = torch.norm(delta.view(n, -1), p=2, dim=1)
        factor = torch.minimum(eps / norm, torch.ones_like(norm))  # δ = 0: ε/0 = inf, factor 1
        adv = torch.clamp(x0 + delta * factor.view(_per_image(x0)), min=0, max=1)
    return adv


def attack(
    method: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    targeted: bool = False,
    steps: int = 10,
) -> torch.Tensor:
    """The attack registered as ``method``, given those of ``targeted`` / ``steps`` its signature names."""
    if method not in ATTACKS:
        raise ValueError(f"unknown attack {method!r} (choose {', '.join(ATTACKS)})")
    fn = ATTACKS[method]
    named = inspect.signature(fn).parameters
    options = {k: v for k, v in {"targeted": targeted, "steps": steps}.items() if k in named}
    return fn(model, x, y, eps, **options)
