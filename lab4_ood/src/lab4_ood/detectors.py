"""OOD detectors: small classes with one job. ``fit`` on ID training data where needed, ``scores(x)`` → (B,).

Every score points the same way: **higher = more in-distribution** (ID is the positive class in metrics.py).

    msp          max softmax probability (Hendrycks & Gimpel)
    maxlogit     max logit
    energy       T · logsumexp(logits / T), the negative free energy (Liu et al.), T = 1
    odin         max softmax(f(x̃)/T) of an input perturbed toward confidence (see odin.py)
    mahalanobis  −min over classes of the Mahalanobis distance of the penultimate features to the class mean,
                 shared covariance fitted on ID training data (Lee et al., without input preprocessing)
    recon        −mean squared reconstruction error of a decoder trained on frozen features (autoencoder.py)
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dla_core.data import ImageBatches, ImageSet
from lab4_ood.autoencoder import FeatureAutoencoder
from lab4_ood.odin import odin_scores

METHODS = ("msp", "maxlogit", "energy", "odin", "mahalanobis", "recon")


class Detector:
    name = "detector"
    needs_fit = False  # fit(batches of ID training images) before scoring
    needs_grad = False  # scores(x) differentiates w.r.t. the input

    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Detector:
        return self

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class MSP(Detector):
    name = "msp"

    def __init__(self, model: nn.Module):
        self.model = model

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.model(x).float(), 1).amax(1)


class MaxLogit(MSP):
    name = "maxlogit"

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float().amax(1)


class Energy(MSP):
    name = "energy"

    def __init__(self, model: nn.Module, temperature: float = 1.0):
        self.model, self.temperature = model, temperature

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.temperature * torch.logsumexp(self.model(x).float() / self.temperature, 1)


class ODIN(Detector):
    name = "odin"

    def __init__(self, model: nn.Module, temperature: float = 1000.0, eps: float = 0.0014):
        self.model, self.temperature, self.eps = model, temperature, eps
        self.needs_grad = eps != 0

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return odin_scores(self.model, x, self.temperature, self.eps)


class Mahalanobis(Detector):
    name = "mahalanobis"
    needs_fit = True

    def __init__(self, model: nn.Module, ridge: float = 1e-6):
        self.model, self.ridge = model, ridge
        self.means: torch.Tensor | None = None  # (K, D)
        self.precision: torch.Tensor | None = None  # (D, D)

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Mahalanobis:
        feats, labels = zip(*((self.model.features(x).double(), y) for x, y in batches), strict=True)
        f, y = torch.cat(feats), torch.cat(labels)
        classes = torch.unique(y)
        self.means = torch.stack([f[y == c].mean(0) for c in classes])  # (K, D)
        centred = f - self.means[torch.searchsorted(classes, y)]
        cov = centred.T @ centred / len(f)
        eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        self.precision = torch.linalg.pinv(cov + self.ridge * cov.diagonal().mean().clamp_min(1e-12) * eye)
        return self

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        if self.means is None or self.precision is None:
            raise RuntimeError("Mahalanobis.fit must run before scores")
        d = self.model.features(x).double()[:, None, :] - self.means[None]  # (B, K, D)
        dist = torch.einsum("bkd,de,bke->bk", d, self.precision, d)
        return -dist.amin(1).float()


class Reconstruction(Detector):
    name = "recon"

    def __init__(self, autoencoder: FeatureAutoencoder):
        self.autoencoder = autoencoder

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return -self.autoencoder.errors(x)


#### Scoring whole sets ####


def score_set(detector: Detector, data: ImageSet, batch_size: int, device: torch.device) -> np.ndarray:
    """Scores of every image of ``data`` in order, as a float64 array."""
    out = []
    for x, _ in ImageBatches(data, batch_size).iterate(0, device=device):
        with torch.set_grad_enabled(detector.needs_grad):
            out.append(detector.scores(x).detach().double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)
