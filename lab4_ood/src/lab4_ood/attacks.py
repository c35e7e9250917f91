"""Adversarial attacks in [0, 1] pixel space (the models normalise inside), clamped to the valid range.

The attacks never change the model's train/eval state (torchattacks issues #21, #48): the caller decides.
``lab4 attack`` puts the model in eval mode; adversarial training attacks the model as it is, in train mode.
Gradients are taken with ``torch.autograd.grad`` w.r.t. the input only, so no parameter ``.grad`` is touched.

    fgsm   x' = clip(x + ε·sign ∇ₓ CE(f(x), y))            targeted: x − ε·sign ∇ₓ CE(f(x), target)
    pgd    ``steps`` signed steps of size ``step_size`` (default 2.5·ε/steps) from a random start in the
           ε-ball, each projected back onto the L∞ ball around x and onto [0, 1] (Madry et al.)

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
    """Function decorator: the function's name becomes an attack of ``lab4 attack`` and ``lab4 train``."""
    ATTACKS[fn.__name__] = fn
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
