"""Detectors that shape the penultimate features or the last layer, then take the energy: ReAct, ASH,
SCALE, DICE."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn as nn

from dla_core.errors import DlaError
from lab4_ood.detectors.base import (
    OnFeatures,
    Reservoir,
    _percentile_share,
    energy,
    head_of,
    mean_feature,
    top_k_count,
)


class ShapedEnergy(OnFeatures):
    """Energy of the logits of shaped penultimate features: head(shape(z)) (ReAct, ASH, SCALE)."""

    def shape(self, f: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def from_view(self, view: tuple[torch.Tensor, ...]) -> torch.Tensor:
        w, b = head_of(self.model)
        return energy(self.shape(view[0]) @ w.T + b)


class ReAct(ShapedEnergy):
    """energy after clipping features at a percentile (--react-percentile)

    logsumexp(head(min(z, c))): c the --react-percentile of the ID training activations, taken over at most
    --max-bank feature vectors (Sun et al. 2021; 90).
    """

    def __init__(self, model: nn.Module, percentile: float = 90.0, max_bank: int = 100_000):
        self.model, self.max_bank = model, max_bank
        self.percentile = _percentile_share(percentile, "--react-percentile")
        self.threshold: float | None = None

    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> ReAct:
        return self.derive(self.gather(batches))

    def gather_key(self) -> tuple:
        return (self.max_bank,)

    @torch.no_grad()
    def gather(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
        """The activations of a seeded uniform sample of at most --max-bank ID feature vectors, flat."""
        bank = Reservoir(self.max_bank)
        for x, _ in batches:
            bank.add(self.model.features(x).float())
        if bank.rows is None:
            raise DlaError("ReAct needs ID training images to fit on")
        return bank.rows.numpy().ravel()

    def derive(self, activations: np.ndarray) -> ReAct:
        self.threshold = float(np.percentile(activations, self.percentile))
        return self

    def shape(self, f: torch.Tensor) -> torch.Tensor:
        if self.threshold is None:
            raise RuntimeError("ReAct.fit must run before scores")
        return f.clamp(max=self.threshold)


ASH_VARIANTS = ("s", "b", "p")


class ASH(ShapedEnergy):
    """energy after activation shaping (--ash-variant, --ash-percentile)

    Keep each sample's top (100 − p)% features, zero the rest; ASH-P as is, ASH-B each kept one = sum/k,
    ASH-S kept ones × exp(sum before / sum after); then logsumexp(head(·)) (Djurisic et al. 2023; B, 90).
    """

    def __init__(self, model: nn.Module, variant: str = "b", percentile: float = 90.0):
        if variant not in ASH_VARIANTS:
            raise DlaError(f"--ash-variant must be one of {', '.join(ASH_VARIANTS)}, got {variant!r}")
        self.model, self.variant = model, variant
        self.percentile = _percentile_share(percentile, "--ash-percentile")

    def shape(self, f: torch.Tensor) -> torch.Tensor:
        k = top_k_count(f.shape[1], self.percentile)
        values, index = f.topk(k, dim=1)
        total = f.sum(1, keepdim=True)
        if self.variant == "b":
            values = (total / k).expand_as(values)
        out = torch.zeros_like(f).scatter(1, index, values)
        if self.variant == "s":
            out = out * torch.exp(total / values.sum(1, keepdim=True))
        return out


class SCALE(ShapedEnergy):
    """energy after scaling features by exp(sum / top sum) (--scale-percentile)

    logsumexp(head(z · exp(s₁/s₂))): s₁ the sum of all features, s₂ of the top (100 − p)%; nothing pruned
    (Xu et al. 2024; 85).
    """

    def __init__(self, model: nn.Module, percentile: float = 85.0):
        self.model = model
        self.percentile = _percentile_share(percentile, "--scale-percentile")

    def shape(self, f: torch.Tensor) -> torch.Tensor:
        top = f.topk(top_k_count(f.shape[1], self.percentile), dim=1).values
        return f * torch.exp(f.sum(1, keepdim=True) / top.sum(1, keepdim=True))


class DICE(OnFeatures):
    """energy of a sparsified last layer (--dice-p)

    logsumexp(z·(W ⊙ M)ᵀ + b): M drops the weights whose contribution mean(z_ID)_j·W_cj is at or below its
    --dice-p percentile, the mean over ID training features (Sun & Li 2022; 90).
    """

    def __init__(self, model: nn.Module, p: float = 90.0):
        self.model = model
        self.p = _percentile_share(p, "--dice-p")
        self.masked: torch.Tensor | None = None  # (C, D)

    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> DICE:
        return self.derive(self.gather(batches))

    def gather_key(self) -> tuple:
        return ()

    @torch.no_grad()
    def gather(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        return mean_feature(self.model, batches, "DICE")

    @torch.no_grad()
    def derive(self, mean: torch.Tensor) -> DICE:
        w, _ = head_of(self.model)
        contribution = mean.float()[None, :] * w  # (C, D)
        threshold = float(np.percentile(contribution.cpu().numpy(), self.p))
        self.masked = torch.where(contribution > threshold, w, torch.zeros_like(w))
        return self

    @torch.no_grad()
    def from_view(self, view: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if self.masked is None:
            raise RuntimeError("DICE.fit must run before scores")
        _, b = head_of(self.model)
        return energy(view[0] @ self.masked.to(view[0].device).T + b)
