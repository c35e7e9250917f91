"""Square attack (Andriushchenko et al. 2020): black box, L∞, margin loss."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from lab4_ood.attacks.base import per_image, unmoved_at_zero


def _square_margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """z_y − max_{i≠y} z_i (targeted: the reverse), > 0 while the attack has not succeeded."""
    logits = model(x)
    picked = logits[torch.arange(len(y)), y].clone()
    logits[torch.arange(len(y)), y] = -float("inf")
    others = logits.max(dim=-1)[0]
    return others - picked if targeted else picked - others


def _square_p(i: int, n_queries: int, p_init: float) -> float:
    """The share of pixels in the square at query i: p_init halved at fixed points of a 10,000-query schedule
    rescaled to ``n_queries``."""
    it = int(i / n_queries * 10000)
    for bound, divisor in (
        (10, 1),
        (50, 2),
        (200, 4),
        (500, 8),
        (1000, 16),
        (2000, 32),
        (4000, 64),
        (6000, 128),
    ):
        if it <= bound:
            return p_init / divisor
    return p_init / (256 if it <= 8000 else 512)


def _signs(shape: list[int], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.sign(2 * torch.rand(shape, generator=gen).to(device) - 1)


def _square_run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    n_queries: int,
    p_init: float,
    targeted: bool,
    gen: torch.Generator,
) -> torch.Tensor:
    n, c, h, w = x.shape
    features = c * h * w
    best = torch.clamp(x + eps * _signs([n, c, 1, w], gen, x.device), 0.0, 1.0)  # vertical stripes of ±ε
    margin_min = _square_margin(model, best, y, targeted)
    loss_min = margin_min.clone()
    for i in range(n_queries):
        todo = (margin_min > 0.0).nonzero().flatten()
        if len(todo) == 0:
            break
        x_now, best_now, y_now = x[todo], best[todo], y[todo]
        margin_now, loss_now = margin_min[todo], loss_min[todo]
        side = max(round(math.sqrt(_square_p(i, n_queries, p_init) * features / c)), 1)
        top = int((0 + (h - side) * torch.rand([1], generator=gen)).long())
        left = int((0 + (w - side) * torch.rand([1], generator=gen)).long())
        square = torch.zeros([c, h, w], device=x.device)
        square[:, top : top + side, left : left + side] = 2.0 * eps * _signs([c, 1, 1], gen, x.device)
        candidate = torch.min(torch.max(best_now + square, x_now - eps), x_now + eps)
        candidate = torch.clamp(candidate, 0.0, 1.0)
        margin = _square_margin(model, candidate, y_now, targeted)
        improved = margin < loss_now
        loss_min[todo] = torch.where(improved, margin, loss_now)
        improved = improved | (margin <= 0.0)
        margin_min[todo] = torch.where(improved, margin, margin_now)
        best[todo] = torch.where(improved.view(per_image(candidate)), candidate, best_now)
        if bool((margin_min <= 0.0).all()):
            break
    return best


@unmoved_at_zero
def square(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    n_queries: int = 5000,
    p_init: float = 0.8,
    seed: int = 0,
    targeted: bool = False,
) -> torch.Tensor:
    """Square attack (black box, L∞, margin loss): ``n_queries`` random squares at most, from a generator seeded
    with ``seed``; images already misclassified (targeted: already of the target), or never fooled, stay x."""
    x0 = x
    adv = x0.clone()
    with torch.no_grad():
        pred = model(x0).max(1)[1]
        todo = ((pred != y) if targeted else (pred == y)).nonzero().flatten()
        if todo.numel() == 0:
            return adv
        found = _square_run(
            model, x0[todo], y[todo], eps, n_queries, p_init, targeted, torch.Generator().manual_seed(seed)
        )
        pred = model(found).max(1)[1]
        done = (pred == y[todo]) if targeted else (pred != y[todo])
    adv[todo[done]] = found[done]
    return adv
