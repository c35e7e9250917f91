"""Detectors on the penultimate features: Mahalanobis, RMDS, KNN, ViM, fDBD, and the autoencoder's
reconstruction error."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from dla_core.errors import DlaError
from lab4_ood.autoencoder import FeatureAutoencoder, load_autoencoder
from lab4_ood.detectors.base import (
    ClassStatistics,
    Detector,
    Reservoir,
    add_gram,
    energy,
    features_and_logits,
    head_of,
    mean_feature,
    symmetric,
    symmetric_inverse,
)

log = logging.getLogger(__name__)


class Mahalanobis(Detector):
    """distance to the nearest class mean

    −min over classes of the Mahalanobis distance of the penultimate features to the class mean; shared covariance fitted on ID training data (Lee et al., without input preprocessing), from incremental statistics.
    """

    def __init__(self, model: nn.Module, ridge: float = 1e-6):
        self.model, self.ridge = model, ridge
        self.means: torch.Tensor | None = None  # (K, D)
        self.precision: torch.Tensor | None = None  # (D, D)

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Mahalanobis:
        stats = ClassStatistics.of(self.model, batches, "Mahalanobis")
        self.means = stats.means  # (K, D)
        self.precision = symmetric_inverse(stats.within, self.ridge)
        return self

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        if self.means is None or self.precision is None:
            raise RuntimeError("Mahalanobis.fit must run before scores")
        d = self.model.features(x).double()[:, None, :] - self.means[None]  # (B, K, D)
        dist = torch.einsum("bkd,de,bke->bk", d, self.precision, d)
        return -dist.amin(1).float()


class Reconstruction(Detector):
    """reconstruction error (--autoencoder)

    −mean squared reconstruction error of a decoder trained on frozen features (autoencoder.py).
    """

    def __init__(self, autoencoder: FeatureAutoencoder):
        self.autoencoder = autoencoder

    @classmethod
    def build(cls, model: nn.Module, device: torch.device, autoencoder: Path) -> Reconstruction:
        return cls(load_autoencoder(autoencoder).to(device))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return -self.autoencoder.errors(x)


class KNN(Detector):
    """−distance to the k-th nearest ID feature (--knn-k)

    −‖z − z₍ₖ₎‖ of the L2-normalised penultimate features z to the k-th nearest normalised ID training feature
    (Sun et al. 2022); exact search in torch, in chunks; the bank holds at most --max-bank ID features.
    """

    def __init__(self, model: nn.Module, k: int = 50, max_bank: int = 100_000, chunk: int = 8192):
        self.model, self.k, self.max_bank, self.chunk = model, k, max_bank, chunk
        self.bank: torch.Tensor | None = None  # (N ≤ max_bank, D), unit rows

    @staticmethod
    def normalise(f: torch.Tensor) -> torch.Tensor:
        return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> KNN:
        return self.derive(self.gather(batches))

    def gather_key(self) -> tuple:
        return (self.max_bank,)

    @torch.no_grad()
    def gather(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor | None:
        """The bank: a seeded uniform sample (Reservoir) of at most --max-bank normalised ID features, all of them
        when there are no more; memory max_bank × D floats however many images stream past."""
        bank = Reservoir(self.max_bank)
        for x, _ in batches:
            bank.add(self.normalise(self.model.features(x).float()))
        return bank.rows

    def derive(self, bank: torch.Tensor | None) -> KNN:
        n = 0 if bank is None else len(bank)
        if n < self.k:
            raise DlaError(f"--knn-k {self.k} needs at least {self.k} ID training images, got {n}")
        self.bank = bank
        return self

    def kth_distance(self, z: torch.Tensor) -> torch.Tensor:
        """Euclidean distance of each unit row of ``z`` to its k-th nearest bank row (exact, bank in chunks)."""
        assert self.bank is not None
        best = None  # (B, k) smallest squared distances so far
        for start in range(0, len(self.bank), self.chunk):
            part = self.bank[start : start + self.chunk].to(z.device)
            d2 = (2 - 2 * z @ part.T).clamp_min(0)  # unit vectors: ‖a − b‖² = 2 − 2a·b
            both = d2 if best is None else torch.cat([best, d2], 1)
            best = both.topk(min(self.k, both.shape[1]), dim=1, largest=False).values
        return best[:, self.k - 1].sqrt()

    def view_key(self) -> tuple:
        return ()

    @torch.no_grad()
    def view(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.normalise(self.model.features(x).float()),)

    @torch.no_grad()
    def from_view(self, view: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if self.bank is None:
            raise RuntimeError("KNN.fit must run before scores")
        return -self.kth_distance(view[0])

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_view(self.view(x))


class ViM(Detector):
    """energy − α·‖residual‖ (virtual logit, --vim-dim)

    logsumexp(logits) − α‖(z − u)ᵀR‖: R spans all but the top --vim-dim principal directions of the ID features
    centred at u = −W⁺b, α = mean max logit / mean residual norm on ID training data (Wang et al. 2022).
    """

    def __init__(self, model: nn.Module, dim: int = 256):
        self.model, self.dim = model, dim
        self.residual: torch.Tensor | None = None  # (D, D − dim)
        self.principal: torch.Tensor | None = None  # (D, dim)
        self.alpha: float | None = None

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> ViM:
        """Two passes over ``batches`` (re-iterable): the covariance about u, then the residual norms."""
        w, b = head_of(self.model)
        self.u = -(torch.linalg.pinv(w.double()) @ b.double())  # (D,)
        scatter, n, max_logit = None, 0, 0.0
        for x, _ in batches:
            f, logits = features_and_logits(self.model, x)
            scatter = add_gram(scatter, f.double() - self.u.to(f.device))
            n += len(f)
            max_logit += float(logits.double().amax(1).sum())
        if scatter is None:
            raise DlaError("ViM needs ID training images to fit on")
        d = scatter.shape[0]
        dim = self.dim
        if dim >= d:
            dim = d // 2
            log.warning("--vim-dim %d is not below the feature dimension %d: ViM uses %d", self.dim, d, dim)
        _, vectors = torch.linalg.eigh(symmetric(scatter) / n)  # ascending eigenvalues
        self.residual = vectors[:, : d - dim].contiguous()  # all but the top `dim` directions
        self.principal = vectors[:, d - dim :].contiguous()  # the top `dim`
        norms = sum(float(self._residual_norm(self.model.features(x)).sum()) for x, _ in batches)
        self.alpha = (max_logit / n) / (norms / n)
        return self

    def _residual_norm(self, f: torch.Tensor) -> torch.Tensor:
        """‖(z − u)ᵀR‖ = sqrt(‖z − u‖² − ‖(z − u)ᵀP‖²), P the top --vim-dim directions (R and P: orthonormal
        columns completing each other): D·dim products a row instead of D·(D − dim), 7× fewer at 2,048/256."""
        c = f.double() - self.u.to(f.device)
        top = c @ self.principal.to(f.device)
        return (c.square().sum(1) - top.square().sum(1)).clamp_min(0).sqrt()

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual is None or self.alpha is None:
            raise RuntimeError("ViM.fit must run before scores")
        f, logits = features_and_logits(self.model, x)
        return (energy(logits.double()) - self.alpha * self._residual_norm(f)).float()


class RMDS(Detector):
    """relative Mahalanobis distance to the nearest class

    −min over classes of (d_k(z) − d_0(z)): d_k the Mahalanobis distance to class mean k (shared covariance),
    d_0 to the mean of all ID features under their covariance (Ren et al. 2021); incremental statistics.
    """

    def __init__(self, model: nn.Module, ridge: float = 0.0):
        # ridge 0: the pseudo-inverse of the empirical covariances, as OpenOOD (sklearn's EmpiricalCovariance)
        self.model, self.ridge = model, ridge
        self.means: torch.Tensor | None = None  # (K, D)
        self.precision: torch.Tensor | None = None  # (D, D), shared class covariance
        self.mean0: torch.Tensor | None = None  # (D,)
        self.precision0: torch.Tensor | None = None  # (D, D), background covariance

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> RMDS:
        stats = ClassStatistics.of(self.model, batches, "RMDS")
        self.means = stats.means
        self.precision = symmetric_inverse(stats.within, self.ridge)
        self.mean0 = stats.mean
        self.precision0 = symmetric_inverse(stats.total, self.ridge)
        return self

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        if self.means is None:
            raise RuntimeError("RMDS.fit must run before scores")
        f = self.model.features(x).double()
        d = f[:, None, :] - self.means[None]  # (B, K, D)
        dist = torch.einsum("bkd,de,bke->bk", d, self.precision, d)
        c0 = f - self.mean0
        dist0 = torch.einsum("bd,de,be->b", c0, self.precision0, c0)
        return -(dist - dist0[:, None]).amin(1).float()


class FDBD(Detector):
    """feature distance to the decision boundaries

    mean over classes c ≠ ŷ of |l_ŷ − l_c| / ‖w_ŷ − w_c‖, divided by ‖z − mean ID feature‖ (Liu & Qin 2024).
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.mean: torch.Tensor | None = None

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> FDBD:
        self.mean = mean_feature(self.model, batches, "fDBD")
        return self

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            raise RuntimeError("FDBD.fit must run before scores")
        f, logits = features_and_logits(self.model, x)
        f, logits = f.double(), logits.double()
        w, _ = head_of(self.model)
        w = w.double()
        top, pred = logits.max(1)
        gap = (top[:, None] - logits).abs()  # (B, C); 0 at ŷ
        norms = (w[pred][:, None, :] - w[None]).norm(dim=2)  # (B, C) ‖w_ŷ − w_c‖; 0 at ŷ
        others = F.one_hot(pred, logits.shape[1]) == 0
        ratio = torch.where(others, gap / norms.where(others, torch.ones_like(norms)), torch.zeros_like(gap))
        boundary = ratio.sum(1) / (logits.shape[1] - 1)
        return (boundary / (f - self.mean.to(f.device)).norm(dim=1).clamp_min(1e-12)).float()
