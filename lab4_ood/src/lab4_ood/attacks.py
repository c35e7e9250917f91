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
           the linearised boundary; FAB-T per target): in their own modules, apgd_targeted.py and fab.py
    autoattack AutoAttack as the original's ``version`` defines it (``AUTOATTACK_VERSIONS``), each component on
           the images still classified right: standard APGD-CE → APGD-T → FAB-T → Square; plus adds APGD-DLR and
           untargeted FAB with 5 restarts; rand is APGD-CE → APGD-DLR with 20 EOT passes per gradient

The iterative attacks follow torchattacks 3.5.1's arithmetic step for step, so that its BIM, MIFGSM, PGDL2
(random_start=False, or the same seed), APGD (ce, dlr; same seed), DeepFool, Square (same seed) and CW (where
the logits are positive, see ``cw``) give bit-identical images (``nox -s tests-lab4-peers``); so do APGDT, FAB-T and AutoAttack's standard version. The random attacks
(apgd, square) draw from their own ``torch.Generator`` seeded with ``seed`` on the CPU, not torch's global RNG
(torchattacks reseeds the global RNG): the same seed gives the same images on any device, and nothing else's
random stream moves.

``ATTACKS`` maps each name (``lab4 attack --method``, ``lab4 train --adversarial``) to its function; ``@register``
adds one (methods.ATTACKS lists the built-in names for ``--help``, without torch; a test keeps the two equal).
An attack is ``f(model, x, y, eps, *, targeted=..., ...)``; ``attack`` passes it the options it names.
"""

from __future__ import annotations

import inspect
import math
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
    n, shape = x.shape[0], _per_image(x)
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
    x0 = x.detach()
    adv = x0.clone()
    if eps == 0:
        return adv
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


@register
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


@register
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


def _within_l2(adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """A minimum-norm attack at radius ε: images moved farther than ε (L2) fall back to x."""
    far = (adv - x).flatten(1).norm(dim=1) > eps
    return torch.where(far.view(_per_image(x)), x, adv)


def _cw_margin(logits: torch.Tensor, y: torch.Tensor, kappa: float, targeted: bool) -> torch.Tensor:
    onehot = torch.eye(logits.shape[1], device=logits.device)[y].bool()
    real = logits[torch.arange(len(y)), y]
    other = logits.masked_fill(onehot, -math.inf).max(1)[0]
    return torch.clamp(other - real if targeted else real - other, min=-kappa)


@register
def cw(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = math.inf,
    *,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 50,
    lr: float = 0.01,
    targeted: bool = False,
) -> torch.Tensor:
    """Carlini–Wagner L2 (tanh box, Adam): per image the closest misclassified iterate (or x); at radius
    ``eps`` an image moved farther than ``eps`` (L2) stays x."""
    x0 = x.detach()
    if eps == 0:  # nothing moved can count
        return x0.clone()
    shape = _per_image(x0)
    # w = atanh(2x − 1) as ½·log((1 + u)/(1 − u)): ±inf at 0 and 1, where tanh's gradient is 0 (those pixels stay)
    u = torch.clamp(x0 * 2 - 1, min=-1, max=1)
    w = (0.5 * torch.log((1 + u) / (1 - u))).detach().requires_grad_(True)
    best = x0.clone()
    best_l2 = 1e10 * torch.ones(len(x0), device=x0.device)
    last_cost = 1e10
    optimizer = torch.optim.Adam([w], lr=lr)
    for step in range(steps):
        with torch.enable_grad():
            adv = 1 / 2 * (torch.tanh(w) + 1)
            l2 = F.mse_loss(adv.flatten(1), x0.flatten(1), reduction="none").sum(dim=1)
            logits = model(adv)
            cost = l2.sum() + c * _cw_margin(logits, y, kappa, targeted).sum()
            (w.grad,) = torch.autograd.grad(cost, w)  # not cost.backward(): no parameter's .grad is touched
        optimizer.step()
        pred = logits.detach().argmax(1)
        keep = ((pred == y) if targeted else (pred != y)) & (best_l2 > l2.detach())
        best_l2 = torch.where(keep, l2.detach(), best_l2)
        best = torch.where(keep.view(shape), adv.detach(), best)
        if step % max(steps // 10, 1) == 0:  # the batch stops when the cost rose since the last checkpoint
            if cost.item() > last_cost:
                break
            last_cost = cost.item()
    return _within_l2(best, x0, eps)


@register
def deepfool(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = math.inf,
    *,
    steps: int = 50,
    overshoot: float = 0.02,
) -> torch.Tensor:
    """DeepFool (L2), image by image: ``steps`` steps at most to the nearest linearised boundary × (1 +
    ``overshoot``), each clipped to [0, 1]; at radius ``eps`` an image moved farther than ``eps`` stays x."""
    x0 = x.detach()
    if eps == 0:  # nothing moved can count
        return x0.clone()
    out = []
    for i in range(len(x0)):
        image, label = x0[i : i + 1].clone(), int(y[i])
        for _ in range(steps):
            image = image.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(image)[0]
                if int(logits.max(0)[1]) != label:
                    break
                rows = [
                    torch.autograd.grad(logits[k], image, retain_graph=k + 1 < len(logits))[0]
                    for k in range(len(logits))
                ]
            jac = torch.stack(rows).reshape(*logits.shape, *image.shape)
            logits, image = logits.detach(), image.detach()
            others = [k for k in range(len(logits)) if k != label]
            gap, normal = logits[others] - logits[label], jac[others] - jac[label]
            distance = torch.abs(gap) / torch.norm(normal.flatten(1), p=2, dim=1)
            j = distance.min(0)[1]
            delta = torch.abs(gap[j]) * normal[j] / (torch.norm(normal[j], p=2) ** 2)
            image = torch.clamp(image + (1 + overshoot) * delta, min=0, max=1)
        out.append(image.detach())
    return _within_l2(torch.cat(out), x0, eps)


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
        best[todo] = torch.where(improved.view(_per_image(candidate)), candidate, best_now)
        if bool((margin_min <= 0.0).all()):
            break
    return best


@register
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
    x0 = x.detach()
    adv = x0.clone()
    if eps == 0:
        return adv
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


# AutoAttack's versions (Croce & Hein 2020; the reference implementation's `version`): the components in the order
# they run, each with the options it gets beyond steps / n_queries / seed
AUTOATTACK_VERSIONS: dict[str, tuple[tuple[str, dict], ...]] = {
    "standard": (("apgd", {}), ("apgd-t", {"n_targets": 9}), ("fab-t", {"n_targets": 9}), ("square", {})),
    "plus": (
        ("apgd", {"restarts": 5}),
        ("apgd-dlr", {"restarts": 5}),
        ("fab", {"restarts": 5}),
        ("square", {}),
        ("apgd-t", {"n_targets": 9}),
        ("fab-t", {"n_targets": 9}),
    ),
    "rand": (("apgd", {"eot_iter": 20}), ("apgd-dlr", {"eot_iter": 20})),  # for randomised defences
}
AUTOATTACK = tuple(name for name, _ in AUTOATTACK_VERSIONS["standard"])


@register
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
    x0 = x.detach()
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


def takes_target(method: str) -> bool:
    """Whether the attack has a targeted mode (``lab4 attack --targeted``)."""
    return "targeted" in inspect.signature(ATTACKS[method]).parameters


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
    """The attack registered as ``method``, given those of ``targeted`` / ``steps`` / ``options`` (``seed``,
    ``c``, ``n_queries`` …) its signature names; the others are for other attacks and are left out. Without
    ``steps`` each attack takes its own default (10; cw and deepfool 50; apgd-t, fab, fab-t and autoattack 100)."""
    if method not in ATTACKS:
        raise ValueError(f"unknown attack {method!r} (choose {', '.join(ATTACKS)})")
    fn = ATTACKS[method]
    named = inspect.signature(fn).parameters
    given = {"targeted": targeted, **({} if steps is None else {"steps": steps}), **options}
    return fn(model, x, y, eps, **{k: v for k, v in given.items() if k in named})


# the attacks in modules of their own register themselves on import (they import this module's pieces)
from lab4_ood import apgd_targeted, fab  # noqa: E402, F401
