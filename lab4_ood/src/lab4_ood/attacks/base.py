"""What every attack shares: ``attack`` (one declared attack, given exactly its declared options), the ε = 0
preamble, the input gradient and the per-image shapes."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab4_ood import methods

Attack = Callable[..., torch.Tensor]


def unmoved_at_zero(fn: Attack) -> Attack:
    """The preamble of every built-in attack, written once: the attack gets ``x`` detached, and at ε = 0 returns a
    copy of it untouched (nothing moved can count, whatever the attack would do)."""

    @functools.wraps(fn)
    def wrapped(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = math.inf, **options: Any):
        if eps == 0:
            return x.detach().clone()
        return fn(model, x.detach(), y, eps, **options)

    return wrapped


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇ₓ of the mean cross-entropy, by ``torch.autograd.grad`` (no parameter's ``.grad`` is touched)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x).float(), y)
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def per_image(t: torch.Tensor) -> tuple[int, ...]:
    """The shape that broadcasts one number per image over a batch shaped like ``t``."""
    return (t.shape[0],) + (1,) * (t.dim() - 1)


def within_l2(adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """A minimum-norm attack at radius ε: images moved farther than ε (L2) fall back to x."""
    far = (adv - x).flatten(1).norm(dim=1) > eps
    return torch.where(far.view(per_image(x)), x, adv)


def accepted(spec: methods.Attack) -> set[str]:
    """The keywords the implementation of ``spec`` takes: its options', ``seed`` and ``targeted`` if declared."""
    traits = {"seed": spec.seeded, "targeted": spec.targeted}
    return {o.keyword for o in spec.options} | {name for name, declared in traits.items() if declared}


def attack(
    method: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    targeted: bool = False,
    steps: int | None = None,
    **options: object,
) -> torch.Tensor:
    """The attack declared as ``method``, given those of ``targeted`` / ``steps`` / ``options`` (implementation
    keywords: ``seed``, ``c``, ``n_queries`` …) that its declaration names; the others are for other attacks and
    are left out. Without ``steps`` each attack takes its own default (10; cw and deepfool 50; apgd-t, fab,
    fab-t and autoattack 100: their declared ``defaults``)."""
    table = methods.attacks()
    if method not in table:
        raise ValueError(f"unknown attack {method!r} (choose {', '.join(table)})")
    spec = table[method]
    given = {"targeted": targeted, **({} if steps is None else {"steps": steps}), **options}
    names = accepted(spec)
    return methods.implementation(spec)(model, x, y, eps, **{k: v for k, v in given.items() if k in names})
