"""AutoAttack (Croce & Hein 2020): its components in sequence, each on the images still robust."""

from __future__ import annotations

import torch
import torch.nn as nn

from lab4_ood.attacks.base import attack, unmoved_at_zero

AUTOATTACK = ("apgd", "apgd-dlr", "square")  # the components of `autoattack`, in the order they run


@unmoved_at_zero
def autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    n_queries: int = 5000,
    seed: int = 0,
) -> torch.Tensor:
    """AutoAttack's subset APGD-CE → APGD-DLR → Square (L∞), each on the images the ones before did not fool;
    APGD-T and FAB-T of the standard version are left out. Each image is the first component's success, or x."""
    x0 = x
    adv = x0.clone()
    left = torch.arange(len(x0), device=x0.device)
    for name in AUTOATTACK:
        options = {"steps": steps, "n_queries": n_queries, "seed": seed}
        found = attack(name, model, x0[left], y[left], eps, **options)
        with torch.no_grad():
            fooled = model(found).max(1)[1] != y[left]
        adv[left[fooled]] = found[fooled]
        left = left[~fooled]
        if left.numel() == 0:
            break
    return adv
