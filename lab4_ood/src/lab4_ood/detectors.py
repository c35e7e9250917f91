"""OOD detectors: small classes with one job. ``fit`` on ID training data where needed, ``scores(x)`` → (B,).

Every score points the same way: **higher = more in-distribution** (ID is the positive class in metrics.py).

``DETECTORS`` maps each ``--method`` name to its class (``@register`` adds one); ``lab4 detect`` offers its names,
one help line per method: the first line of the class docstring (read at ``--help`` from the light copy in
methods.py, which a test keeps equal to this registry). A detector is built by
``cls.build(model, options, device)``; ``cls.check(options)`` refuses missing options before any work starts.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class DetectorOptions:
    """What `lab4 detect` offers a detector to be built from (each class takes what it needs)."""

    temperature: float = 1000.0  # ODIN T
    eps: float = 0.0014  # ODIN ε
    autoencoder: Path | None = None  # 'lab4 train-ae' run folder, for recon


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


@register
class Mahalanobis(Detector):
    """distance to the nearest class mean

    −min over classes of the Mahalanobis distance of the penultimate features to the class mean; shared covariance fitted on ID training data (Lee et al., without input preprocessing).
    """

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
