"""What every detector shares: the base class, building one from its spec, scoring a set, and the pieces
several families use (the one feature hook, the head's weights, energy, the reservoir bank, class statistics).

Every score points the same way: **higher = more in-distribution** (ID is the positive class in metrics.py).
A detector is declared in ``lab4_ood.methods`` (name, summary, options, traits) and implemented by a subclass
of ``Detector`` here or in a sibling module: ``fit`` on ID training data where its spec says ``fits``,
``scores(x)`` → (B,).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from dla_core.data import ImageBatches, ImageSet
from dla_core.errors import DlaError
from lab4_ood import methods

log = logging.getLogger(__name__)


class Detector:
    name = ""  # the method it was built as (make_detector sets it)
    needs_grad = False  # scores(x) differentiates w.r.t. the input

    def __init__(self, model: nn.Module):
        self.model = model

    @classmethod
    def build(cls, model: nn.Module, device: torch.device, **options: Any) -> Detector:
        """A detector of ``model`` from its options (the spec's keywords); most take them as they are."""
        return cls(model, **options)

    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Detector:
        return self

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # A `--grid` shares work between its points through two optional splits (detection.search_hyperparameter):
    # - the fit = derive(gather(batches)): gather passes over the training set once and depends only on the
    #   options in gather_key(); derive makes the fitted state for the other options without reading the data
    #   (it must not change what gather returned: other grid points derive from it too);
    # - the scores = from_view(view(x)): view is the per-image work (the forward pass, ...) and depends only on
    #   the options in view_key(); from_view the rest. A key of None: no such split, nothing shared.

    def gather_key(self) -> Hashable | None:
        return None

    def gather(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Any:
        raise NotImplementedError

    def derive(self, gathered: Any) -> Detector:
        raise NotImplementedError

    def view_key(self) -> Hashable | None:
        return None

    def view(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def from_view(self, view: tuple[torch.Tensor, ...]) -> torch.Tensor:
        raise NotImplementedError


class OnFeatures(Detector):
    """A detector whose per-image work is the penultimate features alone: every grid point shares that view and
    scores from it (``from_view``)."""

    def view_key(self) -> tuple:
        return ()

    @torch.no_grad()
    def view(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.model.features(x).float(),)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_view(self.view(x))


def spec_of(method: str) -> methods.Detector:
    """The declared detector ``method`` (its table entry or plug-in), or one Error line."""
    table = methods.detectors()
    if method not in table:
        raise DlaError(f"unknown method {method!r} (choose {', '.join(table)})")
    return table[method]


def make_detector(
    method: str, model: nn.Module, options: Mapping[str, Any], device: torch.device
) -> Detector:
    """The detector declared as ``method``, built from the option values by name (absent: the defaults)."""
    spec = spec_of(method)
    refusal = methods.missing(spec, dict(options))
    if refusal:
        raise DlaError(refusal)
    detector = methods.implementation(spec).build(model, device, **methods.values_for(spec, dict(options)))
    detector.name = spec.name
    return detector


def score_set(detector: Detector, data: ImageSet, batch_size: int, device: torch.device) -> np.ndarray:
    """Scores of every image of ``data`` in order, as a float64 array."""
    out = []
    for x, _ in ImageBatches(data, batch_size).iterate(0, device=device):
        with torch.set_grad_enabled(detector.needs_grad):
            out.append(detector.scores(x).detach().double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def views_of_set(detector: Detector, data: ImageSet, batch_size: int, device: torch.device):
    """The detector's per-image views (``Detector.view``) of ``data``, batch by batch in order, on the CPU."""
    for x, _ in ImageBatches(data, batch_size).iterate(0, device=device):
        with torch.set_grad_enabled(detector.needs_grad):
            yield tuple(t.detach().cpu() for t in detector.view(x))


GRAM_BLOCK = 256  # columns per block row of Σ zzᵀ's upper triangle (add_gram)


def add_gram(outer: torch.Tensor | None, f: torch.Tensor, block: int = GRAM_BLOCK) -> torch.Tensor:
    """``outer`` + fᵀf on and above the diagonal, by block rows of ``block`` columns (fᵀf is symmetric: only
    about half of its products are made, ≈ 0.56 of them at D = 2,048); ``symmetric`` fills the rest once, at
    the end. ``outer`` None: a new (D, D) sum, of ``f``'s dtype."""
    d = f.shape[1]
    if outer is None:
        outer = f.new_zeros(d, d)
    for i in range(0, d, block):
        outer[i : i + block, i:].addmm_(f[:, i : i + block].T, f[:, i:])
    return outer


def symmetric(upper: torch.Tensor) -> torch.Tensor:
    """The symmetric matrix whose upper triangle (diagonal included) is ``upper``'s."""
    return upper.triu() + upper.triu(1).T


def symmetric_inverse(cov: torch.Tensor, ridge: float) -> torch.Tensor:
    """pinv(cov + ridge · mean(diag cov) · I) of a symmetric positive semi-definite ``cov``. When the ridge alone
    lifts every eigenvalue above pinv's cutoff (D · eps · λ_max ≤ D · eps · trace < ridge · trace / D, i.e.
    ridge > D² · eps), the pseudo-inverse is the inverse: a Cholesky inverse (≈ 10× faster than pinv's SVD at
    D = 2,048); otherwise pinv through the eigendecomposition (hermitian)."""
    d = cov.shape[0]
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    lifted = cov + ridge * cov.diagonal().mean().clamp_min(1e-12) * eye
    if ridge > d * d * torch.finfo(cov.dtype).eps:
        factor, info = torch.linalg.cholesky_ex(lifted)
        if int(info) == 0:
            return torch.cholesky_inverse(factor)
    return torch.linalg.pinv(lifted, hermitian=True)


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
            outer = add_gram(outer, f)
            labels, row, sizes = torch.unique(y.to(f.device), return_inverse=True, return_counts=True)
            part = f.new_zeros(len(labels), f.shape[1]).index_add_(0, row, f)  # (classes in the batch, D)
            for c, total, size in zip(labels.tolist(), part, sizes.tolist(), strict=True):
                sums[c] = total + sums[c] if c in sums else total
                counts[c] = size + counts.get(c, 0)
        if outer is None:
            raise DlaError(f"{who} needs ID training images to fit on")
        return cls(dict(sorted(sums.items())), counts, symmetric(outer))

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
