"""Detectors on the logits alone: MSP, max logit, energy, ODIN, GEN, entropy."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab4_ood.detectors.base import Detector
from lab4_ood.odin import odin_scores


class MSP(Detector):
    """max softmax probability

    The baseline of Hendrycks & Gimpel.
    """

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.model(x).float(), 1).amax(1)


class MaxLogit(MSP):
    """max logit"""

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float().amax(1)


class Energy(MSP):
    """logsumexp of the logits (energy)

    T · logsumexp(logits / T), T = 1: the negative free energy (Liu et al.).
    """

    def __init__(self, model: nn.Module, temperature: float = 1.0):
        self.model, self.temperature = model, temperature

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.temperature * torch.logsumexp(self.model(x).float() / self.temperature, 1)


class ODIN(Detector):
    """max softmax at --T after an --eps step

    max softmax(f(x̃)/T) of an input x̃ perturbed toward confidence (see odin.py); --grid searches T and ε.
    """

    def __init__(self, model: nn.Module, temperature: float = 1000.0, eps: float = 0.0014):
        self.model, self.temperature, self.eps = model, temperature, eps
        self.needs_grad = eps != 0

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return odin_scores(self.model, x, self.temperature, self.eps)


class GEN(Detector):
    """−generalized entropy of the top --gen-m probabilities (--gen-gamma)

    −Σ over the M largest softmax probabilities of p^γ (1 − p)^γ (Liu et al. 2023; γ = 0.1, M = 100).
    """

    def __init__(self, model: nn.Module, gamma: float = 0.1, m: int = 100):
        self.model, self.gamma, self.m = model, gamma, m

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        p = F.softmax(self.model(x).double(), 1)
        top = p.topk(min(self.m, p.shape[1]), dim=1).values
        return -(top**self.gamma * (1 - top) ** self.gamma).sum(1).float()


class Entropy(Detector):
    """−entropy of the softmax

    Σ p log p of the predicted distribution: confident (low-entropy) predictions score high.
    """

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(self.model(x).double(), 1)
        return (logp.exp() * logp).sum(1).float()
