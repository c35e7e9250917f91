"""ODIN (Liang et al., 2018): temperature scaling + a small input perturbation toward higher confidence.

    x̃ = x − ε · sign(∇ₓ −log softmax(f(x)/T)_ŷ)          ŷ = argmax f(x)
    score(x) = max softmax(f(x̃)/T)                          higher = more in-distribution

Conventions, stated because implementations differ:
- ε is the libraries' ε. pytorch-ood and OpenOOD perturb the *normalised* input by ε·sign(g)/std; our models
  normalise inside, so we perturb the [0, 1] pixel input by ε·sign(g), which is the very same image. Typical
  values: 0.0014 – 0.002. No clamping to [0, 1] (neither library clamps).
- The final score divides the logits by T, as the paper, OpenOOD and pytorch-ood 0.4.0 do: our scores are
  bit-for-bit pytorch-ood's `ODIN` (tests/lab4/test_peers.py, at three (T, ε) on six MLPs).

``odin_grid`` scores a batch for every (T, ε) pair while sharing work: one forward pass with the graph kept
serves every T at ε = 0, one backward pass per T gives that T's perturbation direction, then one forward per
(T, ε > 0). Recomputing each pair from scratch costs forward + backward + forward per pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def _max_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.softmax(logits.float() / temperature, dim=1).amax(1)  # (B,)


def _direction(logits: torch.Tensor, x: torch.Tensor, temperature: float, retain: bool) -> torch.Tensor:
    """sign of ∇ₓ of the summed −log softmax(logits/T) at the predicted class (samples are independent)."""
    pred = logits.argmax(1)
    loss = F.cross_entropy(logits.float() / temperature, pred, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x, retain_graph=retain)
    return grad.sign()


def odin_scores(model: nn.Module, x: torch.Tensor, temperature: float, eps: float) -> torch.Tensor:
    """ODIN score of one batch for one (T, ε). ε = 0 needs no gradient and is plain temperature scaling."""
    if eps == 0:
        with torch.no_grad():
            return _max_softmax(model(x), temperature)
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        direction = _direction(model(x), x, temperature, retain=False)
    with torch.no_grad():
        return _max_softmax(model(x.detach() - eps * direction), temperature)


def odin_grid(
    model: nn.Module, x: torch.Tensor, temperatures: Sequence[float], epsilons: Sequence[float]
) -> dict[tuple[float, float], torch.Tensor]:
    """{(T, ε): scores (B,)} for every pair, with shared forward / backward passes (see the module doc)."""
    out: dict[tuple[float, float], torch.Tensor] = {}
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)  # (B, K), graph kept for one backward per T
        for i, t in enumerate(temperatures):
            if 0 in epsilons:
                out[(t, 0)] = _max_softmax(logits.detach(), t)
            perturbed = [e for e in epsilons if e != 0]
            if not perturbed:
                continue
            direction = _direction(logits, x, t, retain=i + 1 < len(temperatures))
            with torch.no_grad():
                for e in perturbed:
                    out[(t, e)] = _max_softmax(model(x.detach() - e * direction), t)
    return {(t, e): out[(t, e)] for t in temperatures for e in epsilons}  # in grid order
