"""Minimum-norm L2 attacks: Carlini–Wagner and DeepFool; at radius ε an image moved farther stays x."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab4_ood.attacks.base import per_image, unmoved_at_zero, within_l2


def _cw_margin(logits: torch.Tensor, y: torch.Tensor, kappa: float, targeted: bool) -> torch.Tensor:
    onehot = torch.eye(logits.shape[1], device=logits.device)[y].bool()
    real = logits[torch.arange(len(y)), y]
    other = logits.masked_fill(onehot, -math.inf).max(1)[0]
    return torch.clamp(other - real if targeted else real - other, min=-kappa)


@unmoved_at_zero
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
    x0 = x
    shape = per_image(x0)
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
    return within_l2(best, x0, eps)


@unmoved_at_zero
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
    x0 = x
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
    return within_l2(torch.cat(out), x0, eps)
