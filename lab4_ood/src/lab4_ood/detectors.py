"""OOD detectors: small classes with one job. ``fit`` on ID training data where needed, ``scores(x)`` → (B,).

Every score points the same way: **higher = more in-distribution** (ID is the positive class in metrics.py).

``DETECTORS`` maps each ``--method`` name to its class (``@register`` adds one); ``lab4 detect`` offers its names,
one help line per method: the first line of the class docstring (read at ``--help`` from the light copy in
methods.py, which a test keeps equal to this registry). A detector is built by
``cls.build(model, options, device)``; ``cls.check(options)`` refuses missing options before any work starts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dla_core.data import ImageBatches, ImageSet
from dla_core.errors import DlaError
from lab4_ood.autoencoder import FeatureAutoencoder, load_autoencoder
from lab4_ood.odin import odin_scores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorOptions:
    """What `lab4 detect` offers a detector to be built from (each class takes what it needs)."""

    temperature: float = 1000.0  # ODIN T
    eps: float = 0.0014  # ODIN ε
    autoencoder: Path | None = None  # 'lab4 train-ae' run folder, for recon
    # the feature-space detectors' hyperparameters, at OpenOOD v1.5's defaults (configs/postprocessors/*.yml);
    # percentiles in [0, 100] as OpenOOD writes them
    knn_k: int = 50  # KNN: the k-th nearest neighbour
    max_bank: int = 100_000  # KNN bank and ReAct's activations: at most this many ID feature vectors
    vim_dim: int = 256  # ViM: dimension of the principal subspace (at most half the feature dimension)
    gen_gamma: float = 0.1  # GEN γ
    gen_m: int = 100  # GEN: the M largest probabilities
    react_percentile: float = 90.0  # ReAct: clip at this percentile of the ID activations
    ash_variant: str = "b"  # ASH-S, ASH-B or ASH-P
    ash_percentile: float = 90.0  # ASH: prune this share (%) of each sample's activations
    scale_percentile: float = 85.0  # SCALE: s2 sums the top (100 − p)% activations
    dice_p: float = 90.0  # DICE: mask this share (%) of the last layer's weights


DETECTORS: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: ``cls.name`` becomes a ``--method`` of ``lab4 detect``."""
    DETECTORS[cls.name] = cls
    return cls


def summary(cls: type[Detector]) -> str:
    """The one-line description of a detector in ``--help``: the first line of its docstring."""
    return (cls.__doc__ or "").strip().split("\n")[0]


class Detector:
    name = "detector"  # its --method
    needs_fit = False  # fit(batches of ID training images) before scoring
    needs_grad = False  # scores(x) differentiates w.r.t. the input
    searched: str | None = (
        None  # the DetectorOptions field that `lab4 detect --grid` searches on held-out data
    )

    def __init__(self, model: nn.Module):
        self.model = model

    @classmethod
    def check(cls, options: DetectorOptions) -> None:
        """Raise DlaError when ``options`` lack what this detector needs (called before any work starts)."""

    @classmethod
    def build(cls, model: nn.Module, options: DetectorOptions, device: torch.device) -> Detector:
        """A detector of ``model`` from the options it needs (after ``check``); most need the model only."""
        return cls(model)

    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Detector:
        return self

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register
class MSP(Detector):
    """max softmax probability

    The baseline of Hendrycks & Gimpel.
    """

    name = "msp"

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.model(x).float(), 1).amax(1)


@register
class MaxLogit(MSP):
    """max logit"""

    name = "maxlogit"

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float().amax(1)


@register
class Energy(MSP):
    """logsumexp of the logits (energy)

    T · logsumexp(logits / T), T = 1: the negative free energy (Liu et al.).
    """

    name = "energy"

    def __init__(self, model: nn.Module, temperature: float = 1.0):
        self.model, self.temperature = model, temperature

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.temperature * torch.logsumexp(self.model(x).float() / self.temperature, 1)


@register
class ODIN(Detector):
    """max softmax at --T after an --eps step

    max softmax(f(x̃)/T) of an input x̃ perturbed toward confidence (see odin.py); --grid searches T and ε.
    """

    name = "odin"

    def __init__(self, model: nn.Module, temperature: float = 1000.0, eps: float = 0.0014):
        self.model, self.temperature, self.eps = model, temperature, eps
        self.needs_grad = eps != 0

    @classmethod
    def build(cls, model: nn.Module, options: DetectorOptions, device: torch.device) -> ODIN:
        return cls(model, options.temperature, options.eps)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return odin_scores(self.model, x, self.temperature, self.eps)


@dataclass
class ClassStatistics:
    """Per-class sums and the sum of outer products of the penultimate features, gathered batch by batch in
    float64 (memory: K·D + D², whatever the number of images); the means and covariances follow."""

    sums: dict[int, torch.Tensor]
    counts: dict[int, int]
    outer: torch.Tensor

    @classmethod
    def of(cls, model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], who: str):
        sums: dict[int, torch.Tensor] = {}
        counts: dict[int, int] = {}
        outer = None
        for x, y in batches:
            f = model.features(x).double()
            outer = f.T @ f if outer is None else outer + f.T @ f
            y = y.to(f.device)
            for c in torch.unique(y).tolist():
                rows = f[y == c]
                sums[c] = rows.sum(0) + sums[c] if c in sums else rows.sum(0)
                counts[c] = len(rows) + counts.get(c, 0)
        if outer is None:
            raise DlaError(f"{who} needs ID training images to fit on")
        return cls(dict(sorted(sums.items())), counts, outer)

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    @property
    def means(self) -> torch.Tensor:
        """(K, D), the classes in label order."""
        return torch.stack([self.sums[c] / self.counts[c] for c in self.sums])

    @property
    def within(self) -> torch.Tensor:
        """The shared class covariance Σ_k Σ_(i in k) (z_i − μ_k)(z_i − μ_k)ᵀ / N = (Σ z zᵀ − Σ_k n_k μ_k μ_kᵀ) / N."""
        between = sum(self.counts[c] * torch.outer(self.sums[c], self.sums[c]) / self.counts[c] ** 2
                      for c in self.sums)  # fmt: skip
        return (self.outer - between) / self.n

    @property
    def mean(self) -> torch.Tensor:
        return sum(self.sums.values()) / self.n

    @property
    def total(self) -> torch.Tensor:
        """The covariance of all features about their mean."""
        return self.outer / self.n - torch.outer(self.mean, self.mean)


@register
class Mahalanobis(Detector):
    """distance to the nearest class mean

    −min over classes of the Mahalanobis distance of the penultimate features to the class mean; shared covariance fitted on ID training data (Lee et al., without input preprocessing), from incremental statistics.
    """

    name = "mahalanobis"
    needs_fit = True

    def __init__(self, model: nn.Module, ridge: float = 1e-6):
        self.model, self.ridge = model, ridge
        self.means: torch.Tensor | None = None  # (K, D)
        self.precision: torch.Tensor | None = None  # (D, D)

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Mahalanobis:
        stats = ClassStatistics.of(self.model, batches, "Mahalanobis")
        self.means = stats.means  # (K, D)
        cov = stats.within
        eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        self.precision = torch.linalg.pinv(cov + self.ridge * cov.diagonal().mean().clamp_min(1e-12) * eye)
        return self

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        if self.means is None or self.precision is None:
            raise RuntimeError("Mahalanobis.fit must run before scores")
        d = self.model.features(x).double()[:, None, :] - self.means[None]  # (B, K, D)
        dist = torch.einsum("bkd,de,bke->bk", d, self.precision, d)
        return -dist.amin(1).float()


@register
class Reconstruction(Detector):
    """reconstruction error (--autoencoder)

    −mean squared reconstruction error of a decoder trained on frozen features (autoencoder.py).
    """

    name = "recon"

    def __init__(self, autoencoder: FeatureAutoencoder):
        self.autoencoder = autoencoder

    @classmethod
    def check(cls, options: DetectorOptions) -> None:
        if options.autoencoder is None:
            raise DlaError("--method recon needs --autoencoder RUN (the --out folder of 'lab4 train-ae')")

    @classmethod
    def build(cls, model: nn.Module, options: DetectorOptions, device: torch.device) -> Reconstruction:
        return cls(load_autoencoder(options.autoencoder).to(device))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return -self.autoencoder.errors(x)


#### Feature-space detectors: penultimate features and logits through one hook ####


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of one forward pass, as float32: ``model.features_and_logits`` (core's Classifier)."""
    f, logits = model.features_and_logits(x)
    return f.float(), logits.float()


def head_of(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight (C, D) and bias (C,) of the model's last linear layer ``model.head``, detached, float32."""
    head = model.head
    bias = head.bias if head.bias is not None else torch.zeros(head.out_features, device=head.weight.device)
    return head.weight.detach().float(), bias.detach().float()


def energy(logits: torch.Tensor) -> torch.Tensor:
    """logsumexp of the logits (T = 1): the score that ReAct, ASH, SCALE and DICE put on their shaped logits."""
    return torch.logsumexp(logits, 1)


class Reservoir:
    """At most ``cap`` rows of a stream, a uniform random sample of them (Vitter's algorithm R, seeded): all rows,
    in order, while there are no more than ``cap``. Memory: ``cap`` rows (twice that while joining the first
    ``cap`` rows into one tensor), however long the stream."""

    def __init__(self, cap: int, seed: int = 0):
        if cap < 1:
            raise DlaError(f"--max-bank must be at least 1, got {cap}")
        self.cap, self.seen = cap, 0
        self._parts: list[torch.Tensor] = []  # the first rows, joined once (not a copy of the bank per batch)
        self._bank: torch.Tensor | None = None
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def rows(self) -> torch.Tensor | None:
        if self._parts:
            self._bank = torch.cat(([] if self._bank is None else [self._bank]) + self._parts)
            self._parts = []
        return self._bank

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.detach().cpu()
        if self.seen < self.cap:
            first = rows[: self.cap - self.seen]
            self._parts.append(first.clone())
            self.seen += len(first)
            rows = rows[len(first) :]
        if len(rows) == 0:
            return
        bank = self.rows
        assert bank is not None
        # row t of the stream (0-based) replaces slot j ~ U{0..t} when j < cap; later rows win a shared slot
        t = self.seen + torch.arange(len(rows))
        j = (torch.rand(len(rows), generator=self.generator, dtype=torch.float64) * (t + 1)).long()
        self.seen += len(rows)
        keep = j < self.cap
        j, rows = j[keep], rows[keep]
        last = {int(slot): i for i, slot in enumerate(j)}  # the last row that drew each slot
        if last:
            bank[torch.tensor(list(last.keys()))] = rows[torch.tensor(list(last.values()))]


def mean_feature(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], what: str
) -> torch.Tensor:
    """The mean penultimate feature of the ID training images (float64, summed batch by batch): DICE and fDBD."""
    total, n = None, 0
    for x, _ in batches:
        f = model.features(x).double()
        total = f.sum(0) if total is None else total + f.sum(0)
        n += len(f)
    if total is None:
        raise DlaError(f"{what} needs ID training images to fit on")
    return total / n


def _percentile_share(percentile: float, name: str) -> float:
    if not 0 <= percentile <= 100:
        raise DlaError(f"{name} must lie in [0, 100], got {percentile:g}")
    return percentile


def top_k_count(n: int, percentile: float) -> int:
    """How many activations of ``n`` lie above the ``percentile``: n − round(n·p/100), at least 1."""
    return max(1, n - int(np.round(n * percentile / 100.0)))


@register
class KNN(Detector):
    """−distance to the k-th nearest ID feature (--knn-k)

    −‖z − z₍ₖ₎‖ of the L2-normalised penultimate features z to the k-th nearest normalised ID training feature
    (Sun et al. 2022); exact search in torch, in chunks; the bank holds at most --max-bank ID features.
    """

    name = "knn"
    searched = "knn_k"
    needs_fit = True

    def __init__(self, model: nn.Module, k: int = 50, max_bank: int = 100_000, chunk: int = 8192):
        self.model, self.k, self.max_bank, self.chunk = model, k, max_bank, chunk
        self.bank: torch.Tensor | None = None  # (N ≤ max_bank, D), unit rows

    @classmethod
    def build(cls, model: nn.Module, options: DetectorOptions, device: torch.device) -> KNN:
        return cls(model, options.knn_k, options.max_bank)

    @staticmethod
    def normalise(f: torch.Tensor) -> torch.Tensor:
        return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> KNN:
        bank = Reservoir(self.max_bank)
        for x, _ in batches:
            bank.add(self.normalise(self.model.features(x).float()))
        if bank.rows is None or len(bank.rows) < self.k:
            n = 0 if bank.rows is None else len(bank.rows)
            raise DlaError(f"--knn-k {self.k} needs at least {self.k} ID training images, got {n}")
        self.bank = bank.rows
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

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        if self.bank is None:
            raise RuntimeError("KNN.fit must run before scores")
        return -self.kth_distance(self.normalise(self.model.features(x).float()))


@register
class ViM(Detector):
    """energy − α·‖residual‖ (virtual logit, --vim-dim)

    logsumexp(logits) − α‖(z − u)ᵀR‖: R spans all but the top --vim-dim principal directions of the ID features
    centred at u = −W⁺b, α = mean max logit / mean residual norm on ID training data (Wang et al. 2022).
    """

    name = "vim"
    needs_fit = True

    def __init__(self, model: nn.Module, dim: int = 256):
        self.model, self.dim = model, dim
        self.residual: torch.Tensor | None = None  # (D, D − dim)
        self.alpha: float | None = None

    @classmethod
    def build(cls, model: nn.Module, options: DetectorOptions, device: torch.device) -> ViM:
        return cls(model, options.vim_dim)

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> ViM:
        """Two passes over ``batches`` (re-iterable): the covariance about u, then the residual norms."""
        w, b = head_of(self.model)
        self.u = -(torch.linalg.pinv(w.double()) @ b.double())  # (D,)
        scatter, n, max_logit = None, 0, 0.0
        for x, _ in batches:
            f, logits = features_and_logits(self.model, x)
            c = f.double() - self.u.to(f.device)
            scatter = c.T @ c if scatter is None else scatter + c.T @ c
            n += len(f)
            max_logit += float(logits.double().amax(1).sum())
        if scatter is None:
            raise DlaError("ViM needs ID training images to fit on")
        d = scatter.shape[0]
        dim = self.dim
        if dim >= d:
            dim = d // 2
            log.warning("--vim-dim %d is not below the feature dimension %d: ViM uses %d", self.dim, d, dim)
        _, vectors = torch.linalg.eigh(scatter / n)  # ascending eigenvalues
        self.residual = vectors[:, : d - dim].contiguous()  # all but the top `dim` directions
        norms = sum(float(self._residual_norm(self.model.features(x)).sum()) for x, _ in batches)
        self.alpha = (max_logit / n) / (norms / n)
        return self

    def _residual_norm(self, f: torch.Tensor) -> torch.Tensor:
        return ((f.double() - self.u.to(f.device)) @ self.residual.to(f.device)).norm(dim=1)

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual is None or self.alpha is None:
            raise RuntimeError("ViM.fit must run before scores")
        f, logits = features_and_logits(self.model, x)
        return (energy(logits.double()) - self.alpha * self._residual_norm(f)).float()


@register
class RMDS(Detector):
    """relative Mahalanobis distance to the nearest class

    −min over classes of (d_k(z) − d_0(z)): d_k the Mahalanobis distance to class mean k (shared covariance),
    d_0 to the mean of all ID features under their covariance (Ren et al. 2021); incremental statistics.
    """

    name = "rmds"
    needs_fit = True

    def __init__(self, model: nn.Module, ridge: float = 0.0):
        # ridge 0: the pseudo-inverse of the empirical covariances, as OpenOOD (sklearn's EmpiricalCovariance)
        self.model, self.ridge = model, ridge
        self.means: torch.Tensor | None = None  # (K, D)
        self.precision: torch.Tensor | None = None  # (D, D), shared class covariance
        self.mean0: torch.Tensor | None = None  # (D,)
        self.precision0: torch.Tensor | None = None  # (D, D), background covariance

    def _inverse(self, cov: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        return torch.linalg.pinv(cov + self.ridge * cov.diagonal().mean().clamp_min(1e-12) * eye)

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> RMDS:
        stats = ClassStatistics.of(self.model, batches, "RMDS")
        self.means = stats.means
        self.precision = self._inverse(stats.within)
        self.mean0 = stats.mean
        self.precision0 = self._inverse(stats.total)
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


@register
class GEN(Detector):
    """−generalized entropy of the top --gen-m probabilities (--gen-gamma)

    −Σ over the M largest softmax probabilities of p^γ (1 − p)^γ (Liu et al. 2023; γ = 0.1, M = 100).
    """

    name = "gen"

    def __init__(self, model: nn.Module, gamma: float = 0.1, m: int = 100):
        self.model, self.gamma, self.m = model, gamma, m

    @classmethod
    def build(cls, model: nn.Module, options: DetectorOptions, device: torch.device) -> GEN:
        return cls(model, options.gen_gamma, options.gen_m)

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        p = F.softmax(self.model(x).double(), 1)
        top = p.topk(min(self.m, p.shape[1]), dim=1).values
        return -(top**self.gamma * (1 - top) ** self.gamma).sum(1).float()


@register
class Entropy(Detector):
    """−entropy of the softmax

    Σ p log p of the predicted distribution: confident (low-entropy) predictions score high.
    """

    name = "entropy"

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(self.model(x).double(), 1)
        return (logp.exp() * logp).sum(1).float()


class ShapedEnergy(Detector):
    """Energy of the logits of shaped penultimate features: head(shape(z)) (ReAct, ASH, SCALE)."""

    def shape(self, f: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        w, b = head_of(self.model)
        f = self.model.features(x).float()
        return energy(self.shape(f) @ w.T + b)


@register
class ReAct(ShapedEnergy):
    """energy after clipping features at a percentile (--react-percentile)

    logsumexp(head(min(z, c))): c the --react-percentile of the ID training activations, taken over at most
    --max-bank feature vectors (Sun et al. 2021; 90).
    """

    name = "react"
    searched = "react_percentile"
    needs_fit = True

    def __init__(self, model: nn.Module, percentile: float = 90.0, max_bank: int = 100_000):
        self.model, self.max_bank = model, max_bank
        self.percentile = _percentile_share(percentile, "--react-percentile")
        self.threshold: float | None = None

    @classmethod
    def build(cls, model: nn.Module, options: DetectorOptions, device: torch.device) -> ReAct:
        return cls(model, options.react_percentile, options.max_bank)

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> ReAct:
        bank = Reservoir(self.max_bank)
        for x, _ in batches:
            bank.add(self.model.features(x).float())
        if bank.rows is None:
            raise DlaError("ReAct needs ID training images to fit on")
        self.threshold = float(np.percentile(bank.rows.numpy().ravel(), self.percentile))
        return self

    def shape(self, f: torch.Tensor) -> torch.Tensor:
        if self.threshold is None:
            raise RuntimeError("ReAct.fit must run before scores")
        return f.clamp(max=self.threshold)


ASH_VARIANTS = ("s", "b", "p")


@register
class ASH(ShapedEnergy):
    """energy after activation shaping (--ash-variant, --ash-percentile)

    Keep each sample's top (100 − p)% features, zero the rest; ASH-P as is, ASH-B each kept one = sum/k,
    ASH-S kept ones × exp(sum before / sum after); then logsumexp(head(·)) (Djurisic et al. 2023; B, 90).
    """

    name = "ash"
    searched = "ash_percentile"

    def __init__(self, model: nn.Module, variant: str = "b", percentile: float = 90.0):
        if variant not in ASH_VARIANTS:
            raise DlaError(f"--ash-variant must be one of {', '.join(ASH_VARIANTS)}, got {variant!r}")
        self.model, self.variant = model, variant
        self.percentile = _percentile_share(percentile, "--ash-percentile")

    @classmethod
    def build(cls, model: nn.Module, options: DetectorOptions, device: torch.device) -> ASH:
        return cls(model, options.ash_variant, options.ash_percentile)

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


@register
class SCALE(ShapedEnergy):
    """energy after scaling features by exp(sum / top sum) (--scale-percentile)

    logsumexp(head(z · exp(s₁/s₂))): s₁ the sum of all features, s₂ of the top (100 − p)%; nothing pruned
    (Xu et al. 2024; 85).
    """

    name = "scale"
    searched = "scale_percentile"

    def __init__(self, model: nn.Module, percentile: float = 85.0):
        self.model = model
        self.percentile = _percentile_share(percentile, "--scale-percentile")

    @classmethod
    def build(cls, model: nn.Module, options: DetectorOptions, device: torch.device) -> SCALE:
        return cls(model, options.scale_percentile)

    def shape(self, f: torch.Tensor) -> torch.Tensor:
        top = f.topk(top_k_count(f.shape[1], self.percentile), dim=1).values
        return f * torch.exp(f.sum(1, keepdim=True) / top.sum(1, keepdim=True))


@register
class DICE(Detector):
    """energy of a sparsified last layer (--dice-p)

    logsumexp(z·(W ⊙ M)ᵀ + b): M drops the weights whose contribution mean(z_ID)_j·W_cj is at or below its
    --dice-p percentile, the mean over ID training features (Sun & Li 2022; 90).
    """

    name = "dice"
    searched = "dice_p"
    needs_fit = True

    def __init__(self, model: nn.Module, p: float = 90.0):
        self.model = model
        self.p = _percentile_share(p, "--dice-p")
        self.masked: torch.Tensor | None = None  # (C, D)

    @classmethod
    def build(cls, model: nn.Module, options: DetectorOptions, device: torch.device) -> DICE:
        return cls(model, options.dice_p)

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> DICE:
        w, _ = head_of(self.model)
        contribution = mean_feature(self.model, batches, "DICE").float()[None, :] * w  # (C, D)
        threshold = float(np.percentile(contribution.cpu().numpy(), self.p))
        self.masked = torch.where(contribution > threshold, w, torch.zeros_like(w))
        return self

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        if self.masked is None:
            raise RuntimeError("DICE.fit must run before scores")
        _, b = head_of(self.model)
        return energy(self.model.features(x).float() @ self.masked.to(x.device).T + b)


@register
class FDBD(Detector):
    """feature distance to the decision boundaries

    mean over classes c ≠ ŷ of |l_ŷ − l_c| / ‖w_ŷ − w_c‖, divided by ‖z − mean ID feature‖ (Liu & Qin 2024).
    """

    name = "fdbd"
    needs_fit = True

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


# the leaderboard's newest detectors (NCI, NAC, WeiPer, AdaSCALE) register themselves from their own module
from lab4_ood import recent_detectors  # noqa: E402, F401

#### Building and scoring ####


def make_detector(method: str, model: nn.Module, options: DetectorOptions, device: torch.device) -> Detector:
    """The detector registered as ``method``, built from ``options``."""
    if method not in DETECTORS:
        raise DlaError(f"unknown method {method!r} (choose {', '.join(DETECTORS)})")
    DETECTORS[method].check(options)
    return DETECTORS[method].build(model, options, device)


def score_set(detector: Detector, data: ImageSet, batch_size: int, device: torch.device) -> np.ndarray:
    """Scores of every image of ``data`` in order, as a float64 array."""
    out = []
    for x, _ in ImageBatches(data, batch_size).iterate(0, device=device):
        with torch.set_grad_enabled(detector.needs_grad):
            out.append(detector.scores(x).detach().double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)
