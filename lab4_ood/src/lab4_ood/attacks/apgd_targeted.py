"""APGD-T: APGD on the targeted difference-of-logits-ratio loss, one run per target class (Croce & Hein 2020,
"Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks", §3-4).

For each image classified right, the targets are the classes ranked 2nd, 3rd, … by the clean image's logits
(the ``n_targets`` most likely wrong classes; 9 in standard AutoAttack, fewer when the model has fewer than 10
classes). Target by target, APGD (the step code of ``attacks._apgd_run``: momentum 0.75, step 2ε halved at
checkpoints, restart from the best point) maximises

    DLR_t(z, y) = −(z_y − z_t) / (z_π1 − ½(z_π3 + z_π4) + 1e-12)        π sorting the logits down

on the images that no earlier target (or restart) fooled. The denominator makes the loss invariant to the
logits' shift and scale, and needs at least 4 classes. Random starts draw from one generator seeded with
``seed``, so the same seed gives the same images (torchattacks 3.5.1's APGDT with the same seed gives
bit-identical ones: ``nox -s tests-lab4-peers``).

    >>> adv = apgd_t(model, x, y, 8 / 255, steps=100, n_targets=9)
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from lab4_ood.attacks.apgd import _apgd_run

MIN_CLASSES = 4  # z_π4 in the loss's denominator


def dlr_targeted_each(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per image −(z_y − z_t) / (z_π1 − ½(z_π3 + z_π4) + 1e-12): grows as the target's logit passes the true
    class's."""
    if logits.shape[1] < MIN_CLASSES:
        raise ValueError(f"the targeted DLR loss needs at least {MIN_CLASSES} classes, got {logits.shape[1]}")
    ordered = logits.sort(dim=1)[0]
    rows = torch.arange(len(y))
    # −0.5·z_π3 − 0.5·z_π4 in this order: torchattacks' arithmetic, for bit-identical images
    return -(logits[rows, y] - logits[rows, target]) / (
        ordered[:, -1] - 0.5 * ordered[:, -3] - 0.5 * ordered[:, -4] + 1e-12
    )


def target_ranks(n_classes: int, n_targets: int) -> range:
    """The logit ranks attacked (2 = the most likely wrong class): at most ``n_classes`` − 1 of them."""
    return range(2, min(n_targets, n_classes - 1) + 2)


def apgd_t(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 100,
    n_targets: int = 9,
    restarts: int = 1,
    seed: int = 0,
) -> torch.Tensor:
    """APGD-T in the L∞ ball of radius ``eps``: for each of the ``n_targets`` most likely wrong classes in turn,
    ``restarts`` APGD runs of ``steps`` steps on the targeted DLR loss, each on the images still robust; an image
    is the first success found, or x (misclassified images stay x)."""
    x0 = x.detach()
    adv = x0.clone()
    if eps == 0:
        return adv
    with torch.no_grad():
        logits = model(x0)
    if logits.shape[1] < MIN_CLASSES:
        raise ValueError(f"apgd-t needs at least {MIN_CLASSES} classes, the model has {logits.shape[1]}")
    robust = logits.max(1)[1] == y
    gen = torch.Generator().manual_seed(seed)  # one stream for every target and restart
    for rank in target_ranks(logits.shape[1], n_targets):
        for _ in range(restarts):
            todo = robust.nonzero().flatten()
            if todo.numel() == 0:
                return adv
            with torch.no_grad():  # the rank-th largest clean logit of each image still robust
                target = model(x0[todo]).sort(dim=1)[1][:, -rank]
            loss = partial(dlr_targeted_each, target=target)
            still, found = _apgd_run(model, x0[todo], y[todo], eps, steps, loss, 0.75, gen)
            adv[todo[~still]] = found[~still]
            robust[todo[~still]] = False
    return adv
