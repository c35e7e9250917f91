"""The OpenOOD v1.5 leaderboard's newest post-hoc detectors (2024-2025): NCI, NAC, WeiPer+KLD and AdaSCALE.

Each is declared in ``lab4_ood.methods`` (one entry: its options with the reference's defaults, named in each
docstring, and as ``--grid`` values those OpenOOD v1.5's APS search sweeps, ``postprocessor_sweep`` of its config;
none for WeiPer, which has no OpenOOD config). The constructors' defaults are the same values, for code that
builds a detector directly.

Conventions as in detectors/base.py: z the penultimate features, W, b the last linear layer (``head``), scores higher =
more in-distribution.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dla_core.errors import DlaError
from lab4_ood.detectors.base import Detector, Reservoir, features_and_logits, head_of, mean_feature

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def _fitted(value: object, who: str) -> None:
    if value is None:
        raise RuntimeError(f"{who}.fit must run before scores")


#### NCI ####


class NCI(Detector):
    """cosine to the predicted class's weights + α‖z‖₁ (NCI)

    w_ŷ·(z − μ)/‖z − μ‖ + α‖z‖₁: μ the mean ID training feature, w_ŷ the head's weight row of the predicted class,
    not normalised (OpenOOD's and pytorch-ood's reading of the paper's cosine). Liu & Qin, "Detecting
    Out-of-Distribution Through the Lens of Neural Collapse", CVPR 2025; OpenOOD's configs/postprocessors/nci.yml.
    """

    def __init__(self, model: nn.Module, alpha: float = 1e-4):
        self.model, self.alpha = model, alpha
        self.mean: torch.Tensor | None = None  # (D,), float64

    def fit(self, batches: Batches) -> NCI:
        return self.derive(self.gather(batches))

    def gather_key(self) -> tuple:
        return ()  # the mean feature: the same for every α

    @torch.no_grad()
    def gather(self, batches: Batches) -> torch.Tensor:
        return mean_feature(self.model, batches, "NCI")

    def derive(self, mean: torch.Tensor) -> NCI:
        self.mean = mean
        return self

    def view_key(self) -> tuple:
        return ()

    @torch.no_grad()
    def view(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return features_and_logits(self.model, x)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_view(self.view(x))

    @torch.no_grad()
    def from_view(self, view: tuple[torch.Tensor, ...]) -> torch.Tensor:
        _fitted(self.mean, "NCI")
        f, logits = view
        w, _ = head_of(self.model)
        centred = f.double() - self.mean.to(f.device)  # (B, D)
        pull = (w.double()[logits.argmax(1)] * centred).sum(1) / centred.norm(dim=1).clamp_min(1e-12)
        return (pull + self.alpha * f.double().abs().sum(1)).float()


#### NAC ####


def nac_edges(m: int) -> torch.Tensor:
    """The bin edges in [0, 1.01] of NAC's reference code for M (ood_coverage's ``logspace(1e3, M)``): M/2 edges
    eₖ = log₁₀₀₀(1 + k(√1000 − 1)/(M/2 − 1)) rising from 0 to ½, dense near ½ (where small z ⊙ ∂KL/∂z land), mirrored as 1 − eₖ up to 1, the top
    edge raised to 1.01 so that a state of 1 counts; M − 2 bins. (The reference adds one more edge, 1.2, whose
    bin [1.01, 1.2) no sigmoid reaches: it changes no score and is left out.)"""
    if m < 4:
        raise DlaError(f"NAC needs at least 4 bins (M), got {m}")
    low = np.log(np.linspace(1.0, np.sqrt(1000.0), m // 2)) / np.log(1000.0)  # 0 … ½
    edges = np.concatenate([low[:-1], (1.0 - low)[::-1]])  # 0 … ½ … 1
    edges[-1] += 0.01
    return torch.from_numpy(edges)


class NAC(Detector):
    """neuron activation coverage of the penultimate features (NAC)

    mean over neurons j of min(nⱼ(bin of sⱼ) / O, 1): s = sigmoid(α · z ⊙ ∂KL(u ‖ softmax)/∂z) the neuron states,
    u uniform over the C classes, ∂KL/∂z = Wᵀ(softmax(logits) − u) through the linear head; nⱼ(bin) how many of
    the ID training images (a uniform sample of at most ``fit_images``) put neuron j's state in that bin; bins of
    ``nac_edges(M)`` (dense near ½; pytorch-ood's NACUE bins are dense near 0 and 1 instead). Liu et al., "Neuron Activation Coverage: Rethinking Out-of-distribution Detection and
    Generalization", ICLR 2024; defaults of OpenOOD's CIFAR-10 ResNet-18 config in the authors' integration
    (ood_coverage configs/postprocessors/nac/resnet/nac_cifar10.yml, layer avgpool = our penultimate features).
    """

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 100.0,
        m: int = 50,
        o: int = 50,
        fit_images: int = 1000,
        edges: torch.Tensor
        | None = None,  # bin edges in place of nac_edges(m) (pytorch-ood's, in its parity test)
    ):
        if o < 1:
            raise DlaError(f"NAC's O must be at least 1, got {o}")
        self.model, self.alpha, self.o, self.fit_images = model, alpha, o, fit_images
        self.edges = (nac_edges(m) if edges is None else edges).double()
        self.counts: torch.Tensor | None = None  # (D, bins), ID states per neuron and bin

    def states(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) sigmoid(α · z ⊙ ∂KL(u ‖ softmax)/∂z); KL(u ‖ p) = −log C − mean_c log p_c, so ∂/∂logits = p − u."""
        f, logits = features_and_logits(self.model, x)
        w, _ = head_of(self.model)
        p = F.softmax(logits.double(), 1)
        grad = (p - 1.0 / p.shape[1]) @ w.double()  # (B, D) ∂KL/∂z
        return torch.sigmoid(self.alpha * f.double() * grad)

    def bins(self, states: torch.Tensor) -> torch.Tensor:
        """(B, D) the bin of each state: bin k holds edges[k] ≤ s < edges[k+1], the end bins anything beyond."""
        return torch.bucketize(states, self.edges[1:-1].to(states.device), right=True)

    def fit(self, batches: Batches) -> NAC:
        return self.derive(self.gather(batches))

    def gather_key(self) -> tuple:
        return (self.alpha, tuple(self.edges.tolist()), self.fit_images)  # not O: it only caps the counts

    @torch.no_grad()
    def gather(self, batches: Batches) -> torch.Tensor:
        """(D, bins) how many of a seeded uniform sample (Reservoir) of at most ``fit_images`` ID training images
        put each neuron's state in each bin; the sample holds each image's D bin indices as 16-bit integers
        (memory fit_images × D × 2 bytes, however many images stream past)."""
        small = torch.int16 if len(self.edges) <= 2**15 else torch.int32
        sample = Reservoir(self.fit_images)
        for x, _ in batches:
            sample.add(self.bins(self.states(x)).to(small))
        if sample.rows is None:
            raise DlaError("NAC needs ID training images to fit on")
        index = sample.rows.long()  # (N, D)
        counts = torch.zeros(index.shape[1], len(self.edges) - 1, dtype=torch.float64)
        return counts.scatter_add_(1, index.T, torch.ones(index.T.shape, dtype=torch.float64))

    def derive(self, counts: torch.Tensor) -> NAC:
        self.counts = counts
        return self

    def view_key(self) -> tuple:
        return (self.alpha, tuple(self.edges.tolist()))

    @torch.no_grad()
    def view(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.bins(self.states(x)),)  # (B, D)

    @torch.no_grad()
    def from_view(self, view: tuple[torch.Tensor, ...]) -> torch.Tensor:
        _fitted(self.counts, "NAC")
        (index,) = view
        counts = self.counts.to(index.device).gather(1, index.T).T  # (B, D)
        return (counts / self.o).clamp(max=1.0).mean(1).float()

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_view(self.view(x))


#### WeiPer ####


def value_histograms(values: torch.Tensor, low: float, high: float, bins: int) -> torch.Tensor:
    """(B, bins): the share of each row's K values in each of ``bins`` equal bins spanning [low, high + 1e-8);
    values outside count in no bin (a row's shares then sum to less than 1), as WeiPer's reference."""
    edges = torch.linspace(low, high + 1e-8, bins + 1, dtype=torch.float64, device=values.device)
    index = torch.bucketize(values.double(), edges, right=True) - 1  # bin k: edges[k] ≤ v < edges[k+1]
    inside = (index >= 0) & (index < bins)
    out = torch.zeros(len(values), bins, dtype=torch.float64, device=values.device)
    return out.scatter_add_(1, index.clamp(0, bins - 1), inside.double()) / values.shape[1]


def moving_average(h: torch.Tensor, width: int) -> torch.Tensor:
    """(B, bins) the mean of ``width`` neighbouring bins, (width − 1)//2 before and the rest after, the end bins
    repeated beyond the ends (WeiPer's uniform kernel: a 'same' Conv1d with replicate padding)."""
    before = (width - 1) // 2
    padded = torch.cat([h[:, :1].expand(-1, before), h, h[:, -1:].expand(-1, width - 1 - before)], 1)
    return padded.unfold(1, width, 1).mean(2)


def symmetric_kl(mean: torch.Tensor, h: torch.Tensor, eps: float) -> torch.Tensor:
    """(B,) KL(p ‖ q) + KL(q ‖ p) = Σ (p − q)(log p − log q), p = mean + ε and each row q = h + ε, both normalised."""
    p = (mean + eps) / (mean + eps).sum()
    q = (h + eps) / (h + eps).sum(1, keepdim=True)
    return ((p - q) * (p.log() - q.log())).sum(1)


class WeiPer(Detector):
    """density KL of features and perturbed class projections (WeiPer+KLD)

    −KL(q̄_z, h_s₁(q_z)) − λ₁·KL(q̄_P, h_s₂(q_P)) + λ₂·mean over r of max softmax(Wᵢz + b): Wᵢ (i = 1…r) the head's
    weights with each row w_c moved by δ‖w_c‖ in a random direction (seeded); P = (Wᵢz + b)ᵢ the r·C perturbed
    class projections; q_z the histogram of the image's own D feature values over ``bins`` equal bins spanning
    the ID training range (q_P likewise of its r·C projections); q̄ the mean ID training histogram; h_s a moving
    average over s bins; KL symmetric after adding ε (ε₂ for P) and renormalising. Granz et al., "WeiPer: OOD
    Detection using Weight Perturbations of Class Projections", NeurIPS 2024; defaults of the authors' OpenOOD
    integration (``calculate_WeiPerKLDiv_score``). No OpenOOD config of WeiPer was at hand: ``grid`` is empty.
    """

    def __init__(
        self,
        model: nn.Module,
        delta: float = 2.1,
        repeats: int = 100,
        bins: int = 100,
        smoothing: int = 20,
        smoothing_perturbed: int = 20,
        eps: float = 0.01,
        eps_perturbed: float = 0.025,
        lambda_1: float = 1.0,
        lambda_2: float = 1.0,
        seed: int = 0,
    ):
        if min(repeats, bins, smoothing, smoothing_perturbed) < 1:
            raise DlaError("WeiPer's repeats, bins and smoothing widths must be at least 1")
        self.model, self.delta, self.repeats, self.n_bins = model, delta, repeats, bins
        self.smoothing, self.smoothing_perturbed = smoothing, smoothing_perturbed
        self.eps, self.eps_perturbed, self.lambda_1, self.lambda_2 = eps, eps_perturbed, lambda_1, lambda_2
        self.seed = seed
        self.weight: torch.Tensor | None = None  # (r·C, D) the perturbed heads, stacked
        self.bias: torch.Tensor | None = None  # (r·C,)

    def perturbed_heads(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(r·C, D) weights Wᵢ = W + δ‖w_c‖·n/‖n‖ (n standard normal, drawn from ``seed``), copy i in rows iC…(i+1)C,
        and the bias repeated."""
        w, b = head_of(self.model)
        w = w.double()
        noise = torch.randn((self.repeats, *w.shape), generator=torch.Generator().manual_seed(self.seed))
        noise = (noise.double() / noise.double().norm(dim=2, keepdim=True)).to(w.device)
        perturbed = w[None] + self.delta * w.norm(dim=1)[None, :, None] * noise  # (r, C, D)
        return perturbed.reshape(-1, w.shape[1]), b.double().repeat(self.repeats)

    def _views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The features (B, D) and the perturbed projections (B, r·C), float64."""
        f = self.model.features(x).double()
        return f, f @ self.weight.to(f.device).T + self.bias.to(f.device)

    @torch.no_grad()
    def fit(self, batches: Batches) -> WeiPer:
        """Two passes over ``batches`` (re-iterable): the ranges of both views, then their mean histograms."""
        self.weight, self.bias = self.perturbed_heads()
        lows, highs = [np.inf, np.inf], [-np.inf, -np.inf]
        for x, _ in batches:
            for i, v in enumerate(self._views(x)):
                lows[i], highs[i] = min(lows[i], float(v.min())), max(highs[i], float(v.max()))
        if lows[0] == np.inf:
            raise DlaError("WeiPer needs ID training images to fit on")
        self.ranges = list(zip(lows, highs, strict=True))
        sums, n = [0.0, 0.0], 0
        for x, _ in batches:
            for i, v in enumerate(self._views(x)):
                sums[i] = sums[i] + value_histograms(v, *self.ranges[i], self.n_bins).sum(0)
            n += len(x)
        self.means = [s / n for s in sums]  # (bins,) each
        return self

    def divergence(self, view: int, values: torch.Tensor, width: int, eps: float) -> torch.Tensor:
        """(B,) the symmetric KL between view ``view``'s mean ID histogram (0: features, 1: projections) and each
        row's own histogram of ``values``, smoothed over ``width`` bins."""
        smoothed = moving_average(value_histograms(values, *self.ranges[view], self.n_bins), width)
        return symmetric_kl(self.means[view].to(values.device), smoothed, eps)

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        _fitted(self.weight, "WeiPer")
        f, projections = self._views(x)
        kl_z = self.divergence(0, f, self.smoothing, self.eps)
        kl_p = self.divergence(1, projections, self.smoothing_perturbed, self.eps_perturbed)
        msp = F.softmax(projections.reshape(len(f), self.repeats, -1), 2).amax(2).mean(1)
        return (-kl_z - self.lambda_1 * kl_p + self.lambda_2 * msp).float()


#### AdaSCALE ####

ADASCALE_VARIANTS = ("a", "l")


class AdaSCALE(Detector):
    """energy after SCALE at a per-image percentile (AdaSCALE)

    The percentile p = p_min + (1 − F(Q))(p_max − p_min), F the empirical CDF of Q on ID training images (at most
    ``fit_images``), Q = Σ over the top-k₁% features of relu(z′) + λ·Σ over the top-k₂% of |z − z′|: z′ the
    features of x + step·std·sign(∇ₓ max logit) on the share ``o`` of pixels of smallest |gradient| (std the
    model's normalisation: OpenOOD's step 0.5 on normalised inputs). Then s = Σ relu(z) / Σ of its top (100 − p)%
    and, variant A, logsumexp(head(z·exp(s))); variant L, logsumexp(head(z)·s²). Regmi et al., "AdaSCALE:
    Adaptive Scaling for OOD Detection", 2025; OpenOOD's configs/postprocessors/adascale_a.yml (adascale_l.yml:
    the same values). k₁, k₂ count at least one feature (OpenOOD's int(D·k/100) is 0 below D = 100 for k₂ = 1).
    """

    needs_grad = True

    def __init__(
        self,
        model: nn.Module,
        variant: str = "a",
        p_min: float = 75.0,
        p_max: float = 85.0,
        k1: float = 5.0,
        k2: float = 1.0,
        lmbda: float = 10.0,
        o: float = 0.05,
        step: float = 0.5,
        fit_images: int = 5000,
    ):
        if variant not in ADASCALE_VARIANTS:
            raise DlaError(
                f"AdaSCALE's variant must be one of {', '.join(ADASCALE_VARIANTS)}, got {variant!r}"
            )
        low, high = p_min, p_max
        if not 0 < low <= high < 100:
            raise DlaError(
                f"AdaSCALE's percentiles must satisfy 0 < p_min ≤ p_max < 100, got {(p_min, p_max)}"
            )
        self.model, self.variant, self.low, self.high = model, variant, float(low), float(high)
        self.k1, self.k2, self.lmbda, self.o, self.step, self.fit_images = k1, k2, lmbda, o, step, fit_images
        self.fitted: torch.Tensor | None = None  # (N,) sorted Q of the ID training images

    def perturbed(self, x: torch.Tensor) -> torch.Tensor:
        """x + step·std·sign(g) on the ⌊o·numel⌋ pixels of each image with the smallest |g|·std, g = ∇ₓ max logit."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.model(x).amax(1).sum(), x)
        normalize = getattr(self.model, "normalize", None)
        std = normalize.std.to(x.dtype) if normalize is not None else torch.ones((), dtype=x.dtype)
        std = std.to(x.device).expand_as(x[:1])
        flat = (g.abs() * std).flatten(1)  # the gradient w.r.t. the normalised input, in size
        n = int(flat.shape[1] * self.o)
        mask = torch.zeros_like(flat).scatter_(1, flat.topk(n, dim=1, largest=False).indices, 1.0)
        return (x + self.step * std * g.sign() * mask.view_as(x)).detach()

    def shift_statistic(self, f: torch.Tensor, f_perturbed: torch.Tensor) -> torch.Tensor:
        """(B,) Q = Σ_top-k₁(z) relu(z′) + λ·Σ_top-k₂(z) |z − z′|."""
        d = f.shape[1]
        top1 = f.topk(max(1, int(d * self.k1 / 100)), dim=1).indices
        top2 = f.topk(max(1, int(d * self.k2 / 100)), dim=1).indices
        return F.relu(f_perturbed).gather(1, top1).sum(1) + self.lmbda * (f - f_perturbed).abs().gather(
            1, top2
        ).sum(1)

    def _features_and_q(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_perturbed = self.perturbed(x)
        with torch.no_grad():
            f = self.model.features(x).double()
            return f, self.shift_statistic(f, self.model.features(x_perturbed).double())

    def fit(self, batches: Batches) -> AdaSCALE:
        return self.derive(self.gather(batches))

    def view_key(self) -> tuple:
        """Q's options: not the percentiles nor the variant (what a `--grid` searches)."""
        return (self.k1, self.k2, self.lmbda, self.o, self.step)

    def gather_key(self) -> tuple:
        return (*self.view_key(), self.fit_images)

    def gather(self, batches: Batches) -> torch.Tensor:
        """(N,) the sorted Q of a seeded uniform sample (Reservoir) of at most ``fit_images`` ID training images."""
        sample = Reservoir(self.fit_images)
        for x, _ in batches:
            sample.add(self._features_and_q(x)[1][:, None])
        if sample.rows is None:
            raise DlaError("AdaSCALE needs ID training images to fit on")
        return sample.rows[:, 0].sort().values

    def derive(self, fitted: torch.Tensor) -> AdaSCALE:
        self.fitted = fitted
        return self

    def percentile(self, q: torch.Tensor) -> torch.Tensor:
        """(B,) p_min + (1 − F(Q))(p_max − p_min), F(Q) the share of fitted Q at or below Q."""
        cdf = torch.searchsorted(self.fitted.to(q.device), q, right=True).double() / len(self.fitted)
        return self.low + (1 - cdf) * (self.high - self.low)

    @staticmethod
    def scale(f: torch.Tensor, percentile: torch.Tensor) -> torch.Tensor:
        """(B, 1) Σ relu(z) / Σ of each row's top D − round(D·p/100) of relu(z), p per row."""
        a = F.relu(f)
        d = a.shape[1]
        k = (d - torch.round(d * percentile / 100)).long().clamp(1, d)  # (B,)
        values = a.topk(int(k.max()), dim=1).values
        kept = torch.arange(values.shape[1], device=f.device)[None] < k[:, None]
        return a.sum(1, keepdim=True) / (values * kept).sum(1, keepdim=True).clamp_min(1e-12)

    def view(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._features_and_q(x)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        _fitted(self.fitted, "AdaSCALE")
        return self.from_view(self.view(x))

    def from_view(self, view: tuple[torch.Tensor, ...]) -> torch.Tensor:
        _fitted(self.fitted, "AdaSCALE")
        f, q = view
        with torch.no_grad():
            s = self.scale(f, self.percentile(q))
            w, b = head_of(self.model)
            w, b = w.double(), b.double()
            logits = (f * torch.exp(s)) @ w.T + b if self.variant == "a" else (f @ w.T + b) * s**2
            return torch.logsumexp(logits, 1).float()
