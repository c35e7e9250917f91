"""FAB (Croce & Hein 2020, "Minimally distorted adversarial examples with a Fast Adaptive Boundary attack"), L∞:
a minimum-norm attack that walks toward the nearest point of the linearised decision boundary.

Each step linearises the boundary between the true class y and one other class k at the current point x':
the hyperplane {u : ⟨w, u⟩ = b} with w = ∇(z_k − z_y)(x') and b = ⟨w, x'⟩ − (z_k − z_y)(x'). Untargeted, k is
the class whose hyperplane is nearest in L∞ (|z_k − z_y| / ‖w‖₁); targeted (FAB-T), k is the target. Both x'
and the clean x are projected onto that hyperplane within the box [0, 1] (``project_linf``: the smallest L∞
step that reaches it), giving steps d' and d; the new point is the convex combination

    x' ← clip((x' + η·d')(1 − α) + (x + η·d)·α),   α = min(‖d'‖ / (‖d'‖ + ‖d‖), α_max)

(η = 1.05 overshoots the boundary; α pulls toward x, the more the farther x' wandered). Once x' is
misclassified, the closest such x' so far is kept and x' is pulled back toward x: x' ← x + β(x' − x), β = 0.9.
After ``steps`` steps an image counts as fooled at radius ε only if its closest adversarial point lies within ε
(L∞); otherwise it stays x. A restart after the first starts from a random point at distance ε/2.

FAB-T runs once per target, the classes ranked 2nd, 3rd, … by the clean logits (9 in standard AutoAttack), each
on the images still robust. The arithmetic follows torchattacks 3.5.1's FAB, so that with one restart (no
random start: deterministic) the images are bit-identical (``nox -s tests-lab4-peers``).

    >>> adv = fab_t(model, x, y, 8 / 255, steps=100, n_targets=9)
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from lab4_ood.attacks.apgd_targeted import target_ranks
from lab4_ood.attacks.base import per_image as _per_image

ALPHA_MAX, ETA, BETA = 0.1, 1.05, 0.9  # the original's defaults (AutoAttack's FAB-T)


def project_linf(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """For each row: the step d of smallest L∞ norm with ⟨w, t + d⟩ = b and t + d in [0, 1] (t, w: (N, D); b: (N,)),
    or, where no step in the box reaches the hyperplane, the step as far toward it as the box allows.

    Moving by at most λ per coordinate against the side t lies on changes ⟨w, ·⟩ by −Σ|wᵢ|·min(λ, pᵢ), pᵢ the
    room to the box's bound: a piecewise-linear function of λ, whose kink where it meets b − ⟨w, t⟩ is found by
    bisection over the coordinates sorted by p."""
    w, b = w.clone(), b.clone()
    side = torch.where((w * t).sum(1) - b >= 0, 1.0, -1.0)  # make ⟨w, t⟩ ≥ b: the step lowers ⟨w, ·⟩
    w.mul_(side.unsqueeze(1))
    b.mul_(side)
    bound = (w < 0).float()  # the bound each coordinate moves toward: 1 where wᵢ < 0, else 0
    step = (bound - t) * (w != 0).float()  # the whole way to the bound
    room = bound - t * (2 * bound - 1)  # pᵢ = |boundᵢ − tᵢ|
    order = torch.argsort(room, dim=1)
    need = b - (w * t).sum(1)  # the change of ⟨w, ·⟩ wanted (≤ 0)
    full = (w * step).sum(1)  # the change with every coordinate at its bound
    down = order.flip((1,))  # coordinates by room, largest first
    w_down = w.gather(1, down)
    slope = torch.cumsum(w_down.abs(), dim=1)  # Σ|wᵢ| of the coordinates capped at λ
    # change at λ with the first j (largest-room) coordinates capped: offset_j − slope_j·λ
    offset = torch.cumsum(-w_down * step.gather(1, down), dim=1) + full.unsqueeze(1)
    at_smallest = offset[:, -1] - slope[:, -1] * room.gather(1, order[:, 0:1]).squeeze(1)
    below_all = need - at_smallest > 0  # λ below every room: every coordinate capped
    between = (need - full > 0) & (~below_all)  # reachable with some coordinates at their bound
    lo = torch.zeros(int(between.sum()), device=t.device)
    hi = torch.full_like(lo, w.shape[1] - 1)
    order_b, offset_b, slope_b, room_b, need_b = (
        order[between],
        offset[between],
        slope[between],
        room[between],
        need[between],
    )
    for _ in range(math.ceil(math.log2(w.shape[1]))):
        mid = torch.floor((lo + hi) / 2)
        j = mid.long().unsqueeze(1)
        coordinate = order_b.gather(1, order_b.size(1) - 1 - j)
        change = (offset_b.gather(1, j) - slope_b.gather(1, j) * room_b.gather(1, coordinate)).squeeze(1)
        further = need_b - change > 0
        lo = torch.where(further, mid, lo)
        hi = torch.where(further, hi, mid)
    lo = lo.long()
    if below_all.any():
        lam = torch.clamp_min((need[below_all] - offset[below_all, -1]) / (-slope[below_all, -1]), min=0)
        step[below_all] = (2 * bound[below_all] - 1) * lam.unsqueeze(-1)
    lam = torch.clamp_min((need[between] - offset[between, lo]) / (-slope[between, lo]), min=0).unsqueeze(-1)
    step[between] = torch.min(lam, step[between]) * bound[between] + torch.max(-lam, step[between]) * (
        1 - bound[between]
    )
    return step * (w != 0).float()


def _boundaries(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_k − z_y, ∇ₓ(z_k − z_y)) at x: for every class k, shapes (N, K) and (N, K, *x); targeted, for k = the
    target only (K = 1). The true class's own row is set far away (1e10) so that it is never the nearest."""
    x = x.detach().requires_grad_(True)
    rows = torch.arange(len(x))
    with torch.enable_grad():
        logits = model(x)
        if target is not None:
            gap = -(logits[rows, y] - logits[rows, target])
            (grad,) = torch.autograd.grad(gap.sum(), x)
            return gap.detach().unsqueeze(1), grad.unsqueeze(1)
        grads, pick = [], torch.zeros_like(logits)
        for k in range(logits.shape[1]):  # one backward pass per class: ∇ z_k of each image
            pick[:, k] = 1.0
            grads.append(torch.autograd.grad(logits, x, grad_outputs=pick, retain_graph=True)[0])
            pick[:, k] = 0.0
    logits, grads = logits.detach(), torch.stack(grads, dim=1)
    gap = logits - logits[rows, y].unsqueeze(1)
    normal = grads - grads[rows, y].unsqueeze(1)
    gap[rows, y] = 1e10
    return gap, normal


def _fab_run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    target: torch.Tensor | None,
    random_start: bool,
    gen: torch.Generator,
) -> torch.Tensor:
    """One FAB run on images all classified right: per image the closest misclassified point found, or x."""
    n, shape = len(x), _per_image(x)
    best, dist = x.clone(), torch.full([n], 1e10, device=x.device)
    flat = x.reshape(n, -1)
    now = x.clone()
    if random_start:  # a random point at L∞ distance ε/2
        t = (2 * torch.rand(x.shape, generator=gen) - 1).to(x.device)
        radius = torch.min(dist, eps * torch.ones_like(dist)).reshape(shape)
        now = (
            x + radius * t / t.reshape(n, -1).abs().max(dim=1, keepdim=True)[0].reshape(shape) * 0.5
        ).clamp(0, 1)
    rows = torch.arange(n)
    for _ in range(steps):
        gap, normal = _boundaries(model, now, y, target)
        nearest = (gap.abs() / (1e-12 + normal.abs().view(n, gap.shape[1], -1).sum(dim=-1))).min(dim=1)[1]
        w = normal[rows, nearest]
        b = -gap[rows, nearest] + (w * now).view(n, -1).sum(dim=-1)
        w = w.reshape(n, -1)
        steps_both = project_linf(
            torch.cat((now.reshape(n, -1), flat), 0), torch.cat((w, w), 0), torch.cat((b, b), 0)
        )
        from_now, from_x = steps_both[:n].reshape(x.shape), steps_both[n:].reshape(x.shape)
        size = steps_both.abs().max(dim=1, keepdim=True)[0].view(-1, *shape[1:])
        size = torch.max(size, 1e-8 * torch.ones_like(size))
        a_now, a_x = size[:n], size[n:]
        alpha = torch.min(
            torch.max(a_now / (a_now + a_x), torch.zeros_like(a_now)), ALPHA_MAX * torch.ones_like(a_now)
        )
        now = ((now + ETA * from_now) * (1 - alpha) + (x + from_x * ETA) * alpha).clamp(0.0, 1.0)
        with torch.no_grad():
            fooled = model(now).max(1)[1] != y
        if fooled.any():
            moved = (now - x).reshape(n, -1).abs().max(dim=1)[0]
            closer = fooled & (moved < dist)
            best = torch.where(closer.view(shape), now, best)
            dist = torch.where(closer, moved, dist)
            now = torch.where(fooled.view(shape), x + (now - x) * BETA, now)  # back toward x
    return best


def _fab(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    ranks: list[int | None],
    restarts: int,
    seed: int,
) -> torch.Tensor:
    """FAB for each target rank in ``ranks`` (None: untargeted), ``restarts`` runs each, every run on the images
    still robust at radius ``eps``."""
    x0 = x.detach()
    adv = x0.clone()
    if eps == 0:
        return adv
    with torch.no_grad():
        robust = model(x0).max(1)[1] == y
    gen = torch.Generator().manual_seed(seed)
    for rank in ranks:
        for restart in range(restarts):
            todo = robust.nonzero().flatten()
            if todo.numel() == 0:
                return adv
            with torch.no_grad():
                logits = model(x0[todo])
            right = (logits.max(1)[1] == y[todo]).nonzero().flatten()  # as classified now, in this batch
            target = None if rank is None else logits[right].sort(dim=-1)[1][:, -rank]
            found = _fab_run(model, x0[todo[right]], y[todo[right]], eps, steps, target, restart > 0, gen)
            candidate = x0[todo].clone()
            candidate[right] = found
            with torch.no_grad():  # fooled, and within ε
                fooled = model(candidate).max(1)[1] != y[todo]
            fooled &= (candidate - x0[todo]).flatten(1).abs().max(1)[0] <= eps
            adv[todo[fooled]] = candidate[fooled]
            robust[todo[fooled]] = False
    return adv


def fab(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 100,
    restarts: int = 1,
    seed: int = 0,
) -> torch.Tensor:
    """FAB, untargeted (L∞, minimum norm): ``steps`` steps toward the nearest linearised boundary, ``restarts``
    runs (the later ones from a random start, seeded with ``seed``); an image whose closest adversarial point
    lies farther than ``eps`` stays x."""
    return _fab(model, x, y, eps, steps, [None], restarts, seed)


def fab_t(
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
    """FAB-T (L∞, minimum norm): FAB toward each of the ``n_targets`` most likely wrong classes in turn (fewer
    where the model has fewer classes), each on the images still robust at radius ``eps``."""
    with torch.no_grad():
        n_classes = model(x[:1].detach()).shape[1]
    return _fab(model, x, y, eps, steps, list(target_ranks(n_classes, n_targets)), restarts, seed)
