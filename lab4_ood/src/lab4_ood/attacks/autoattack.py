"""AutoAttack (Croce & Hein 2020): the components of its ``--version`` in sequence, each on the images still
robust. The versions (components, their extra options) are declared in ``lab4_ood.methods.AUTOATTACK_VERSIONS``."""

from __future__ import annotations

import torch
import torch.nn as nn

from lab4_ood.attacks.base import attack, unmoved_at_zero
from lab4_ood.methods import AUTOATTACK_VERSIONS

AUTOATTACK = tuple(name for name, _ in AUTOATTACK_VERSIONS["standard"])  # the standard version's components


@unmoved_at_zero
def autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    version: str = "standard",
    steps: int = 100,
    n_queries: int = 5000,
    seed: int = 0,
) -> torch.Tensor:
    """AutoAttack (L∞) as its ``version`` defines it, each component on the images the ones before did not fool:
    standard APGD-CE → APGD-T (9 targets) → FAB-T (9 targets) → Square (``n_queries``); plus APGD-CE, APGD-DLR
    and FAB with 5 restarts → Square → APGD-T → FAB-T; rand APGD-CE → APGD-DLR with 20 EOT passes per gradient.
    APGD and FAB take ``steps`` steps (the original: 100). Each image is the first component's success, or x."""
    if version not in AUTOATTACK_VERSIONS:
        raise ValueError(f"unknown AutoAttack version {version!r} (choose {', '.join(AUTOATTACK_VERSIONS)})")
    x0 = x
    adv = x0.clone()
    left = torch.arange(len(x0), device=x0.device)
    for name, extra in AUTOATTACK_VERSIONS[version]:
        options = {"steps": steps, "n_queries": n_queries, "seed": seed, **extra}
        found = attack(name, model, x0[left], y[left], eps, **options)
        with torch.no_grad():
            fooled = model(found).max(1)[1] != y[left]
        adv[left[fooled]] = found[fooled]
        left = left[~fooled]
        if left.numel() == 0:
            break
    return adv
