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

    apgd   APGD-CE (Croce & Hein 2020), L∞: from a random point on the ε-ball's surface, ``steps`` steps with
           momentum 0.75, step size 2ε halved at checkpoints (after 22% of the steps, then ever closer, down to
           6%) where the loss rose in at most ρ = 75% of the steps since the last one or the best loss stalled,
           restarting from the best point; only images classified right are attacked, the others stay x
    apgd-dlr the same on the difference-of-logits-ratio loss −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3), invariant to
           the logits' shift and scale (needs at least 3 classes)
    cw     Carlini–Wagner L2: x' = ½(tanh w + 1), Adam (``lr``) on ‖x' − x‖₂² + c·max(z_y − max_{i≠y} z_i, −κ)
           for ``steps`` steps, keeping per image the smallest misclassified x'; the whole batch stops early when
           the cost rose at one of ten checkpoints. A minimum-norm attack: at radius ε, an image whose best x' is
           farther than ε (L2) counts as not fooled (x returned)
    deepfool L2 (Moosavi-Dezfooli et al.), image by image: step to the linearised nearest decision boundary ×
           (1 + ``overshoot``), clipped to [0, 1], until the prediction changes or ``steps``; ε as cw
    square black-box L∞ (Andriushchenko et al.): ``n_queries`` tries of a random square of ±2ε per channel on
           the best image so far (side from ``p_init`` = 0.8, shrinking on a fixed schedule), kept when the margin
           z_y − max_{i≠y} z_i falls; random draws from a generator seeded by ``seed`` (``--seed``)
    apgd-t, fab, fab-t  APGD-T (targeted DLR loss, one run per likely wrong class) and FAB (minimum-norm, toward
           the linearised boundary; FAB-T per target)
    autoattack AutoAttack as the original's ``version`` defines it (``methods.AUTOATTACK_VERSIONS``), each
           component on the images still classified right: standard APGD-CE → APGD-T → FAB-T → Square; plus adds
           APGD-DLR and untargeted FAB with 5 restarts; rand is APGD-CE → APGD-DLR with 20 EOT passes per gradient

The iterative attacks follow torchattacks 3.5.1's arithmetic step for step, so that its BIM, MIFGSM, PGDL2
(random_start=False, or the same seed), APGD (ce, dlr; same seed), DeepFool, Square (same seed) and CW (where
the logits are positive, see ``cw``) give bit-identical images (``nox -s tests-lab4-peers``); so do APGDT,
FAB-T and AutoAttack's standard version. The random attacks
(apgd, square) draw from their own ``torch.Generator`` seeded with ``seed`` on the CPU, not torch's global RNG
(torchattacks reseeds the global RNG): the same seed gives the same images on any device, and nothing else's
random stream moves.

Each attack is declared in ``lab4_ood.methods`` (name, options, norm, targeted support, seed, minimum classes) and
implemented in a module of this package by family: ``gradient`` (fgsm, pgd, bim, mifgsm, pgd-l2), ``apgd``,
``apgd_targeted`` (apgd-t), ``fab`` (fab, fab-t), ``minimum_norm`` (cw, deepfool), ``square``, ``autoattack``; the shared pieces (``attack``, the ε = 0 preamble,
the input gradient) in ``base``. An attack is ``f(model, x, y, eps, *, <options>)``; ``attack`` passes it exactly
the options its declaration names.
"""

from __future__ import annotations

from lab4_ood.attacks.apgd import apgd, apgd_dlr
from lab4_ood.attacks.apgd_targeted import apgd_t
from lab4_ood.attacks.autoattack import AUTOATTACK, autoattack
from lab4_ood.attacks.base import attack
from lab4_ood.attacks.fab import fab, fab_t
from lab4_ood.attacks.gradient import bim, fgsm, mifgsm, pgd, pgd_l2
from lab4_ood.attacks.minimum_norm import cw, deepfool
from lab4_ood.attacks.square import square

__all__ = ["AUTOATTACK", "apgd", "apgd_dlr", "apgd_t", "attack", "autoattack", "bim", "cw", "deepfool", "fab",
           "fab_t", "fgsm", "mifgsm", "pgd", "pgd_l2", "square"]  # fmt: skip
