"""Every detector and attack of lab4, declared once: the spec table (no torch, no click).

A method is one entry here: its name, a one-line summary, its options (name, type, default, help, ``--grid``
values), its traits, and its implementation as ``"module:Name"`` — imported only when a command runs. Everything
else is derived from the table: the click options of ``lab4 detect`` / ``attack`` / ``benchmark`` / ``train``,
``DetectConfig`` and ``AttackConfig`` (their fields), ``--help``, the grids ``--grid`` searches, the options
``lab4 benchmark`` passes through, the refusals (L∞ radii, targeted support, minimum classes) and the README's
method tables (``markdown_table``, checked equal to the READMEs by a test).

Adding a method (see the README, "Adding a detector, an attack or a lab"):

- here, in the package: its implementation (a ``detectors.Detector`` subclass, or an attack function
  ``f(model, x, y, eps, *, <its options>)``) and one entry in ``DETECTORS`` or ``ATTACKS`` below. An existing
  class (e.g. one in ``lab4_ood.detectors.recent``) needs only the entry:
  ``Detector("nci", "…", "lab4_ood.detectors.recent:NCI", options=(Option("nci_alpha", float, 1e-4, "α"),))``;
  the option's value reaches the constructor as keyword ``arg`` (default: the option's name).
- outside the package (a plug-in): the same two things in your own package, the entry under the entry point
  group ``dla.lab4.detectors`` or ``dla.lab4.attacks`` (``[project.entry-points."dla.lab4.detectors"]
  mine = "my_pkg.spec:MINE"``). lab4 lists it in ``--help`` and offers it everywhere; a plug-in that fails to
  load is one warning line on stderr naming it, and lab4 goes on without it.

Options that several methods share (``max_bank``, ``steps``) are one ``Option`` object used by each; the
help then names every method that takes it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from dla_core.errors import DlaError

#### The declarations ####


@dataclass(frozen=True)
class Option:
    """One option of one or more methods: a config field, a click option and, with ``grid``, a ``--grid-…``."""

    name: str  # the config field (and click's parameter name): knn_k
    type: type  # int, float, str (with choices) or Path
    default: Any
    help: str  # without the method's name: the CLI prefixes the names of the methods that take it
    grid: tuple = ()  # the values `--grid` searches on held-out data [default]; () = not searched
    min: float | None = None
    max: float | None = None
    min_open: bool = False  # min itself excluded
    choices: tuple[str, ...] = ()
    arg: str | None = None  # the implementation's keyword [default: name]
    flag: str | None = None  # [default: --knn-k for knn_k]
    grid_name: str | None = None  # the grid's config field [default: grid_<name>]
    grid_flag: str | None = None  # [default: --grid-<flag without -->]
    needed: str | None = None  # set: the methods that take it refuse to run without it (what it is)
    metavar: str | None = None

    @property
    def keyword(self) -> str:
        return self.arg or self.name

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def grid_field(self) -> str:
        return self.grid_name or "grid_" + self.name

    @property
    def cli_grid_flag(self) -> str:
        return self.grid_flag or "--grid-" + self.cli_flag[2:]

    @property
    def annotation(self) -> Any:
        """The config field's type."""
        return Path | None if self.type is Path else self.type


@dataclass(frozen=True)
class Detector:
    """A ``lab4 detect --method``: the implementation is a ``detectors.Detector`` subclass built as
    ``cls.build(model, device, **{option.keyword: value})`` (default: ``cls(model, **…)``)."""

    name: str
    summary: str  # its line in `lab4 detect --help` and in the README's table
    implementation: str  # "module:Class"
    options: tuple[Option, ...] = ()
    fits: bool = False  # fit(batches of ID training images) before scoring
    fit_note: str = ""  # the README's word on what it fits
    details: str = ""  # the README's score column (the formula)
    reference: str = ""  # the README's reference / parity column

    @property
    def searched(self) -> tuple[str, ...]:
        """The options `--grid` searches (those with grid values): one for knn, T and ε together for odin."""
        return tuple(o.name for o in self.options if o.grid)


@dataclass(frozen=True)
class Attack:
    """A ``lab4 attack --method`` / ``lab4 train --adversarial``: the implementation is a function
    ``f(model, x, y, eps, *, <option keywords>, seed=…, targeted=…)`` in [0, 1] pixel space."""

    name: str
    summary: str
    implementation: str  # "module:function"
    options: tuple[Option, ...] = ()
    norm: str = "linf"  # "linf": ε in [0, 1]; "l2": any ε ≥ 0
    targeted: bool = False  # takes targeted=True (`--targeted`)
    seeded: bool = False  # draws from seed= (`--seed`)
    min_classes: int = 2
    # its own default for a shared option (apgd-t's 100 steps against the others' 10): the option's CLI and
    # config default is then None, meaning "each attack's own"
    defaults: dict[str, Any] = field(default_factory=dict)
    # the components run in sequence per value of its option ``version`` (autoattack): name, extra options
    versions: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = field(default_factory=dict)
    details: str = ""  # the README's step column
    reference: str = ""


#### Detectors ####

PERCENT = {"type": float, "min": 0, "max": 100}
TEMPERATURE = Option("temperature", float, 1000.0, "temperature T.", grid=(1.0, 10.0, 100.0, 1000.0), min=0,
                     min_open=True, flag="--T", grid_name="grid_temperatures", grid_flag="--grid-T")  # fmt: skip
ODIN_EPS = Option("eps", float, 0.0014, "perturbation: ε·sign(grad) on [0,1] pixels = the libraries' ε on "
                  "normalised inputs.", grid=(0.0, 0.0005, 0.001, 0.0014, 0.002), min=0)  # fmt: skip
AUTOENCODER = Option("autoencoder", Path, None, "'lab4 train-ae' run folder.", metavar="RUN",
                     needed="the --out folder of 'lab4 train-ae'")  # fmt: skip
MAX_BANK = Option("max_bank", int, 100_000, "keep at most this many ID training feature vectors (a uniform random "
                  "sample beyond).", min=1)  # fmt: skip

DETECTORS: tuple[Detector, ...] = (
    Detector(
        "msp", "max softmax probability", "lab4_ood.detectors.logits:MSP",
        details="max softmax probability", reference="Hendrycks & Gimpel 2017",
    ),
    Detector(
        "maxlogit", "max logit", "lab4_ood.detectors.logits:MaxLogit",
        details="max logit", reference="Hendrycks et al. 2022",
    ),
    Detector(
        "energy", "logsumexp of the logits (energy)", "lab4_ood.detectors.logits:Energy",
        details="logsumexp of the logits (negative free energy, T = 1)", reference="Liu et al. 2020",
    ),
    Detector(
        "odin", "max softmax at --T after an --eps step", "lab4_ood.detectors.logits:ODIN",
        options=(TEMPERATURE, ODIN_EPS),
        details="max softmax(f(x̃)/T), x̃ = x − ε·sign ∇ₓ(−log softmax(f(x)/T)ŷ)",
        reference="Liang et al. 2018; pytorch-ood's `ODIN` (which divides by T too): bit-for-bit the same scores at "
        "(T, ε) = (1000, 0.0014), (1, 0), (10, 0.002) on six MLPs",
    ),
    Detector(
        "mahalanobis", "distance to the nearest class mean", "lab4_ood.detectors.features:Mahalanobis",
        fits=True,
        details="−min over classes of the Mahalanobis distance of the penultimate features (class means, shared "
        "covariance)",
        reference="Lee et al. 2018 (no input preprocessing)",
    ),
    Detector(
        "recon", "reconstruction error (--autoencoder)", "lab4_ood.detectors.features:Reconstruction",
        options=(AUTOENCODER,), fit_note="`train-ae`",
        details="−mean squared reconstruction error of the `train-ae` decoder", reference="—",
    ),
    Detector(
        "knn", "−distance to the k-th nearest ID feature (--knn-k)", "lab4_ood.detectors.features:KNN",
        options=(Option("knn_k", int, 50, "the k-th nearest neighbour.", grid=(1, 10, 50, 100, 200), min=1,
                        arg="k"), MAX_BANK),
        fits=True, fit_note="bank of at most `--max-bank` features, a uniform random sample beyond",
        details="−‖z − z₍ₖ₎‖: z the L2-normalised penultimate features, z₍ₖ₎ the k-th nearest normalised ID "
        "feature (exact search in torch, in chunks)",
        reference="Sun et al. 2022; equal AUROC (pytorch-ood: +distance)",
    ),
    Detector(
        "vim", "energy − α·‖residual‖ (virtual logit, --vim-dim)", "lab4_ood.detectors.features:ViM",
        options=(Option("vim_dim", int, 256, "principal subspace dimension (half the feature dimension when not "
                        "below it).", min=1, arg="dim"),),
        fits=True, fit_note="covariance, then the residual norms: two passes",
        details="logsumexp(logits) − α‖(z − u)ᵀR‖: u = −W⁺b, R all but the top `--vim-dim` principal directions "
        "(half the feature dimension when not below it), α = mean max logit / mean residual norm",
        reference="Wang et al. 2022; pytorch-ood computes in float32: AUROC within 1.5e-4 (measured: equal on the "
        "test MLP, up to 1.23e-4 on six MLPs, 3.1e-5 in a held-out check)",
    ),
    Detector(
        "rmds", "relative Mahalanobis distance to the nearest class", "lab4_ood.detectors.features:RMDS",
        fits=True, fit_note="incremental sums",
        details="−min_k (d_k(z) − d_0(z)): d_k squared Mahalanobis distance to class mean k (shared "
        "covariance), d_0 to the mean of all ID features (their covariance); pseudo-inverse, no ridge (OpenOOD)",
        reference="Ren et al. 2021; pytorch-ood works in float32 and leaves its scatter matrices undivided by N: our "
        "scores are N × theirs to within 0.25% of the largest \\|score\\| (measured up to 0.2% on six MLPs, 0.42 "
        "on scores up to 210; 1.85 in a held-out check), AUROC within 5e-4 (measured up to 4.3e-4)",
    ),
    Detector(
        "gen", "−generalized entropy of the top --gen-m probabilities (--gen-gamma)",
        "lab4_ood.detectors.logits:GEN",
        options=(Option("gen_gamma", float, 0.1, "γ.", min=0, min_open=True, arg="gamma"),
                 Option("gen_m", int, 100, "the M largest probabilities.", min=1, arg="m")),
        details="−Σ over the M largest softmax probabilities of p^γ(1 − p)^γ",
        reference="Liu et al. 2023; pytorch-ood averages (× 1/C) and clamps p to [1e-7, 1 − 1e-7], which ties "
        "every very confident image (AUROC 0.920 vs our 0.928 on the test model); equal scores where nothing is "
        "clamped",
    ),
    Detector(
        "entropy", "−entropy of the softmax", "lab4_ood.detectors.logits:Entropy",
        details="Σ p log p (−entropy of the softmax)",
        reference="pytorch-ood's `Entropy` (float32, p clipped at 1e-7): scores within 1e-5, AUROC within 2.5e-4 "
        "(measured on six MLPs: scores 6.5e-6, AUROC 9.3e-5; AUROC 2.2e-4 in a held-out check — images closer than "
        "the float32 error swap places)",
    ),
    Detector(
        "react", "energy after clipping features at a percentile (--react-percentile)",
        "lab4_ood.detectors.shaping:ReAct",
        options=(Option("react_percentile", help="clip at this percentile of the ID activations.", default=90.0,
                        grid=(85.0, 90.0, 95.0, 99.0), arg="percentile", **PERCENT), MAX_BANK),
        fits=True, fit_note="at most `--max-bank` feature vectors",
        details="logsumexp(head(min(z, c))): c the percentile of the ID training activations",
        reference="Sun et al. 2021; equal AUROC",
    ),
    Detector(
        "ash", "energy after activation shaping (--ash-variant, --ash-percentile)",
        "lab4_ood.detectors.shaping:ASH",
        options=(Option("ash_variant", str, "b", "ASH-S (scale), ASH-B (binarise) or ASH-P (prune only).",
                        choices=("s", "b", "p"), arg="variant"),
                 Option("ash_percentile", help="prune this percentage of each sample's activations.", default=90.0,
                        grid=(65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0), arg="percentile", **PERCENT)),
        details="logsumexp(head(ash(z))): keep each sample's top (100 − p)% features; P: as they are, B: each = "
        "sum of all / k, S: × exp(sum before / sum after)",
        reference="Djurisic et al. 2023, on the pooled penultimate features as OpenOOD; equal AUROC (all three "
        "variants)",
    ),
    Detector(
        "scale", "energy after scaling features by exp(sum / top sum) (--scale-percentile)",
        "lab4_ood.detectors.shaping:SCALE",
        options=(Option("scale_percentile", help="s2 sums the activations above this percentile.", default=85.0,
                        grid=(65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0), arg="percentile", **PERCENT),),
        details="logsumexp(head(z · exp(s₁/s₂))): s₁ the sum of all features, s₂ of the top (100 − p)%, nothing "
        "pruned",
        reference="Xu et al. 2024; equal AUROC",
    ),
    Detector(
        "dice", "energy of a sparsified last layer (--dice-p)", "lab4_ood.detectors.shaping:DICE",
        options=(Option("dice_p", help="mask this percentage of the last layer's weights.", default=90.0,
                        grid=(10.0, 30.0, 50.0, 70.0, 90.0), arg="p", **PERCENT),),
        fits=True, fit_note="mean feature",
        details="logsumexp(z(W ⊙ M)ᵀ + b): M keeps the weights whose contribution mean(z_ID)ⱼ·W_cj is above its "
        "p-th percentile",
        reference="Sun & Li 2022; equal AUROC",
    ),
    Detector(
        "fdbd", "feature distance to the decision boundaries", "lab4_ood.detectors.features:FDBD",
        fits=True, fit_note="mean feature",
        details="mean over c ≠ ŷ of \\|l_ŷ − l_c\\| / ‖w_ŷ − w_c‖, over ‖z − mean ID feature‖",
        reference="Liu & Qin 2024 (OpenOOD sums over classes: the same ranking); equal AUROC",
    ),
    Detector(
        "nci", "cosine to the predicted class's weights + α‖z‖₁ (NCI)", "lab4_ood.detectors.recent:NCI",
        options=(Option("nci_alpha", float, 1e-4, "α: weight of the L1 norm of the features (the feature-norm "
                        "term).", grid=(1e-4, 1e-3, 1e-2, 1e-1), min=0, arg="alpha"),),
        fits=True, fit_note="mean feature",
        details="w_ŷ·(z − μ)/‖z − μ‖ + α‖z‖₁: μ the mean ID feature, w_ŷ the head's row of the predicted class",
        reference="Liu & Qin, CVPR 2025; OpenOOD v1.5 `nci.yml`; pytorch-ood's `NCI` (float32): equal AUROC, "
        "scores within 1e-6 (measured 1.8e-7) on six MLPs",
    ),
    Detector(
        "nac", "neuron activation coverage of the penultimate features (NAC)", "lab4_ood.detectors.recent:NAC",
        options=(Option("nac_alpha", float, 100.0, "steepness α of the sigmoid that squashes z ⊙ ∂KL/∂z into a "
                        "state in (0, 1).", grid=(100.0,), min=0, min_open=True, arg="alpha"),
                 Option("nac_m", int, 50, "M: the number of bin edges of the states' histograms (M − 2 bins).",
                        grid=(50,), min=3, arg="m"),
                 Option("nac_o", int, 50, "O: the ID count that makes a bin fully covered.", grid=(10, 50), min=1,
                        arg="o"),
                 Option("nac_fit_images", int, 1000, "the histograms count at most this many ID training images "
                        "(a uniform random sample).", min=1, arg="fit_images")),
        fits=True, fit_note="histograms of at most `--nac-fit-images` images",
        details="mean over neurons j of min(nⱼ(bin of sⱼ) / O, 1): s = sigmoid(α · z ⊙ ∂KL(u ‖ softmax)/∂z), "
        "∂KL/∂z = Wᵀ(softmax − u); nⱼ counts the ID states of neuron j per bin (M edges, log-spaced toward ½)",
        reference="Liu et al., ICLR 2024; the CIFAR-10 config (penultimate layer) of the authors' OpenOOD "
        "integration, `ood_coverage`; pytorch-ood's `NACUE` bins differently (dense near 0 and 1) and "
        "differentiates log(p + 1e-12), which flattens ∂KL/∂z of confident images: given its bins and a model with "
        "every p > 1e-12, the same counts and scores to 1e-6",
    ),
    Detector(
        "weiper", "density KL of features and perturbed class projections (WeiPer+KLD)",
        "lab4_ood.detectors.recent:WeiPer",
        options=(Option("weiper_delta", float, 2.1, "δ: each perturbation's length relative to its class's weight "
                        "norm.", min=0, arg="delta"),
                 Option("weiper_repeats", int, 100, "r: how many perturbed copies of the head.", min=1,
                        arg="repeats"),
                 Option("weiper_bins", int, 100, "bins of the histograms over the ID training range.", min=1,
                        arg="bins"),
                 Option("weiper_smoothing", int, 20, "s₁: moving-average width over the feature histogram.", min=1,
                        arg="smoothing"),
                 Option("weiper_smoothing_perturbed", int, 20, "s₂: moving-average width over the "
                        "perturbed-projection histogram.", min=1, arg="smoothing_perturbed"),
                 Option("weiper_eps", float, 0.01, "ε added to the feature histograms before the KL.", min=0,
                        arg="eps"),
                 Option("weiper_eps_perturbed", float, 0.025, "ε₂ added to the perturbed-projection histograms "
                        "before the KL.", min=0, arg="eps_perturbed"),
                 Option("weiper_lambda_1", float, 1.0, "λ₁: weight of the perturbed projections' KL.",
                        arg="lambda_1"),
                 Option("weiper_lambda_2", float, 1.0, "λ₂: weight of the mean max softmax of the perturbed heads.",
                        arg="lambda_2"),
                 Option("weiper_seed", int, 0, "seed of the random perturbation directions.", min=0, arg="seed")),
        fits=True, fit_note="the ranges, then the mean histograms: two passes",
        details="−KL(q̄_z, h(q_z)) − λ₁·KL(q̄_P, h(q_P)) + λ₂·mean over r of max softmax(Wᵢz + b): Wᵢ the head with "
        "each row w_c moved by δ‖w_c‖ in a random (seeded) direction, P the r·C perturbed projections; q the "
        "histogram of an image's own values over the ID training range, q̄ its ID mean, h a moving average, KL "
        "symmetric after + ε; no OpenOOD grid at hand (no `--grid`)",
        reference="Granz et al., NeurIPS 2024 (WeiPer+KLD); the defaults of the authors' OpenOOD integration; not "
        "in pytorch-ood 0.4.0",
    ),
    Detector(
        "adascale", "energy after SCALE at a per-image percentile (AdaSCALE, --adascale-variant a/l)",
        "lab4_ood.detectors.recent:AdaSCALE",
        options=(Option("adascale_variant", str, "a", "a: scale the features by exp(s); l: scale the logits by s².",
                        choices=("a", "l"), arg="variant"),
                 Option("adascale_p_min", help="p_min: the low end of the per-image SCALE percentile (--grid: the "
                        "pairs with p_min ≤ p_max).", default=75.0, grid=(60.0, 65.0, 70.0, 75.0, 80.0, 85.0, 90.0,
                        95.0), min_open=True, arg="p_min", **PERCENT),
                 Option("adascale_p_max", help="p_max: the high end of the per-image SCALE percentile.",
                        default=85.0, grid=(65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0, 99.0), arg="p_max",
                        **PERCENT),
                 Option("adascale_k1", help="k₁ (%): the top features whose perturbed activations Q sums.",
                        default=5.0, grid=(5.0,), min_open=True, arg="k1", **PERCENT),
                 Option("adascale_k2", help="k₂ (%): the top features whose shift Q sums.", default=1.0,
                        grid=(1.0,), min_open=True, arg="k2", **PERCENT),
                 Option("adascale_lambda", float, 10.0, "λ: weight of the feature shift in Q.", grid=(10.0,), min=0,
                        arg="lmbda"),
                 Option("adascale_o", float, 0.05, "share of the pixels perturbed (those of smallest gradient).",
                        grid=(0.05,), min=0, max=1, arg="o"),
                 Option("adascale_step", float, 0.5, "the perturbation's size in units of the model's "
                        "normalisation std.", min=0, arg="step"),
                 Option("adascale_fit_images", int, 5000, "F is the CDF of Q over at most this many ID training "
                        "images (a uniform random sample).", min=1, arg="fit_images")),
        fits=True, fit_note="Q of at most `--adascale-fit-images` images",
        details="logsumexp(head(z · exp(s))) (A) or logsumexp(head(z) · s²) (L): s = Σ relu(z) / Σ of its top "
        "(100 − p)%, p = p_min + (1 − F(Q))(p_max − p_min), F the ID CDF of Q = Σ_top-k₁ relu(z′) + λ Σ_top-k₂ "
        "\\|z − z′\\|, z′ the features after a step on the share o of pixels of smallest gradient",
        reference="Regmi et al. 2025 (AdaSCALE); OpenOOD v1.5 `adascale_a.yml` / `adascale_l.yml` (`--grid`: "
        "their (p_min, p_max) pairs, here every pair with p_min ≤ p_max); not in pytorch-ood 0.4.0",
    ),
)  # fmt: skip

#### Attacks ####

STEPS = Option("steps", int, 10, "steps.", min=1)
N_QUERIES = Option("n_queries", int, 5000, "queries per image at most.", min=1)
RESTARTS = Option("restarts", int, 1, "runs, each from a new random start on the images still robust.", min=1)
EOT_ITER = Option("eot_iter", int, 1, "gradient passes averaged per step (expectation over transformation, for "
                  "randomised models).", min=1)  # fmt: skip
N_TARGETS = Option("n_targets", int, 9, "the most likely wrong classes attacked in turn (fewer when the model "
                   "has fewer classes).", min=1)  # fmt: skip
ORIGINAL_STEPS = {"steps": 100}  # the original AutoAttack's APGD and FAB steps

# AutoAttack's versions (Croce & Hein 2020; the reference implementation's `version`): the components in the order
# they run, each with the options it gets beyond steps / n_queries / seed
AUTOATTACK_VERSIONS: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "standard": (("apgd", {}), ("apgd-t", {"n_targets": 9}), ("fab-t", {"n_targets": 9}), ("square", {})),
    "plus": (("apgd", {"restarts": 5}), ("apgd-dlr", {"restarts": 5}), ("fab", {"restarts": 5}), ("square", {}),
             ("apgd-t", {"n_targets": 9}), ("fab-t", {"n_targets": 9})),
    "rand": (("apgd", {"eot_iter": 20}), ("apgd-dlr", {"eot_iter": 20})),  # for randomised defences
}  # fmt: skip
VERSION = Option("version", str, "standard", "AutoAttack's version. standard: APGD-CE → APGD-T → FAB-T → Square; "
                 "plus: APGD-CE, APGD-DLR, FAB (5 restarts each) → Square → APGD-T → FAB-T; rand (randomised "
                 "models): APGD-CE → APGD-DLR with 20 EOT passes per gradient.", choices=tuple(AUTOATTACK_VERSIONS))  # fmt: skip

ATTACKS: tuple[Attack, ...] = (
    Attack(
        "fgsm", "one signed gradient step of ε", "lab4_ood.attacks.gradient:fgsm", targeted=True,
        details="x + ε·sign ∇ₓ CE, one step", reference="Goodfellow et al. 2015; torchattacks `FGSM`",
    ),
    Attack(
        "pgd", "random start, steps of 2.5·ε/steps", "lab4_ood.attacks.gradient:pgd", options=(STEPS,),
        targeted=True, details="random start in the L∞ ε-ball, then steps of α·sign ∇, α = 2.5·ε/steps",
        reference="Madry et al. 2018; torchattacks `PGD`",
    ),
    Attack(
        "bim", "iterative FGSM from x, steps of ε/4", "lab4_ood.attacks.gradient:bim", options=(STEPS,),
        targeted=True, details="iterative FGSM from x itself (no random start): steps of α·sign ∇, α = ε/4",
        reference="Kurakin et al. 2017; torchattacks `BIM`: bit-identical images",
    ),
    Attack(
        "mifgsm", "momentum 1.0 on L1-normalised gradients, steps of ε/4", "lab4_ood.attacks.gradient:mifgsm",
        options=(STEPS,), targeted=True,
        details="g ← μ·g + ∇/mean\\|∇\\| (L1-normalised per image), steps of α·sign g from x, α = ε/4, μ = 1.0",
        reference="Dong et al. 2018; torchattacks `MIFGSM`: bit-identical images",
    ),
    Attack(
        "pgd-l2", "L2 ball, random start, steps of ε/5", "lab4_ood.attacks.gradient:pgd_l2", options=(STEPS,),
        norm="l2", targeted=True,
        details="random start ε·r·z/‖z‖₂ (z normal, r uniform), steps of α·∇/‖∇‖₂, α = ε/5, δ projected to "
        "‖δ‖₂ ≤ ε; ε is an L2 radius (may exceed 1)",
        reference="Madry et al. 2018; torchattacks `PGDL2`: bit-identical images without a random start or from "
        "the same seed",
    ),
    Attack(
        "apgd", "APGD-CE: momentum 0.75, step 2ε halved at checkpoints", "lab4_ood.attacks.apgd:apgd",
        options=(STEPS, RESTARTS, EOT_ITER), seeded=True,
        details="APGD-CE, L∞: start on the ε-ball's surface, momentum 0.75, step 2ε halved at checkpoints (first "
        "after 22% of the steps, then every 3% less, down to 6%) where the CE rose in at most ρ = 75% of the "
        "steps since the last one or the best loss stalled, restarting from the best point; only images "
        "classified right are attacked",
        reference="Croce & Hein 2020; torchattacks `APGD(loss=\"ce\")`: bit-identical images with the same seed "
        "(our generator is private; torchattacks reseeds the global one)",
    ),
    Attack(
        "apgd-dlr", "APGD on the DLR loss", "lab4_ood.attacks.apgd:apgd_dlr", options=(STEPS, RESTARTS, EOT_ITER),
        seeded=True,
        min_classes=3, details="as `apgd` on −(z_y − max_{i≠y} z_i)/(z_π1 − z_π3 + 1e-12)",
        reference="Croce & Hein 2020; torchattacks `APGD(loss=\"dlr\")`: bit-identical",
    ),
    Attack(
        "cw", "Carlini–Wagner L2, minimum norm: fooled at radius ε if its adversarial image lies within ε",
        "lab4_ood.attacks.minimum_norm:cw",
        options=(Option("cw_c", float, 1.0, "weight c of the margin term against ‖δ‖₂².", min=0, arg="c"),
                 Option("cw_kappa", float, 0.0, "confidence κ (margin floor −κ).", min=0, arg="kappa"),
                 Option("cw_steps", int, 50, "Adam steps.", min=1, arg="steps"),
                 Option("cw_lr", float, 0.01, "Adam learning rate.", min=0, min_open=True, arg="lr")),
        norm="l2", targeted=True,
        details="L2, minimum norm: x' = ½(tanh w + 1), Adam on ‖x' − x‖₂² + c·max(z_y − max_{i≠y} z_i, −κ); per "
        "image the closest misclassified iterate; the batch stops when the cost rose at one of ten checkpoints. "
        "At radius ε an image counts as fooled only if ‖x' − x‖₂ ≤ ε (else x)",
        reference="Carlini & Wagner 2017; torchattacks `CW`: bit-identical where every logit is positive; "
        "torchattacks takes max over (1 − onehot)·z, which counts the true class as a logit 0 when all others "
        "are negative (and z_y as 0 when negative): there the images differ, adversarial accuracy equal within 2 "
        "points (equal on the test model)",
    ),
    Attack(
        "deepfool", "L2, minimum norm, as cw", "lab4_ood.attacks.minimum_norm:deepfool",
        options=(Option("deepfool_steps", int, 50, "steps at most per image.", min=1, arg="steps"),
                 Option("overshoot", float, 0.02, "each step × (1 + overshoot).", min=0)),
        norm="l2",
        details="L2, minimum norm, image by image: x ← clip(x + (1 + o)·\\|f_k − f_y\\|·(w_k − w_y)/‖w_k − "
        "w_y‖², k the nearest linearised boundary) until the prediction changes; the overshoot scales each step "
        "(torchattacks), not the total as in the paper; ε as `cw`",
        reference="Moosavi-Dezfooli et al. 2016; torchattacks `DeepFool`: bit-identical",
    ),
    Attack(
        "square", "black-box L∞, --n-queries random squares", "lab4_ood.attacks.square:square",
        options=(N_QUERIES, Option("p_init", float, 0.8, "initial share of the pixels in the square.", min=0,
                                   max=1, min_open=True)),
        targeted=True, seeded=True,
        details="black box, L∞, margin loss: vertical stripes of ±ε, then per query a random square (same place "
        "for the batch, one sign per channel) of ±2ε on the best image so far, kept when the margin falls; side "
        "√(p·H·W), p = p_init halved at fixed points of a 10,000-query schedule rescaled to `--n-queries`",
        reference="Andriushchenko et al. 2020; torchattacks `Square`: bit-identical with the same seed",
    ),
    Attack(
        "apgd-t", "APGD on the targeted DLR loss toward the --n-targets most likely wrong classes",
        "lab4_ood.attacks.apgd_targeted:apgd_t", options=(STEPS, N_TARGETS, RESTARTS), seeded=True, min_classes=4,
        defaults=ORIGINAL_STEPS,
        details="APGD-T: as `apgd` on the targeted DLR loss −(z_y − z_t)/(z_π1 − ½(z_π3 + z_π4) + 1e-12), one run "
        "per target t, the classes ranked 2nd, 3rd, … by the clean logits (at most classes − 1), each on the images "
        "still robust",
        reference="Croce & Hein 2020; torchattacks `APGDT`: bit-identical with the same seed",
    ),
    Attack(
        "fab", "FAB, minimum norm L∞: steps toward the nearest linearised boundary",
        "lab4_ood.attacks.fab:fab", options=(STEPS, RESTARTS), seeded=True, defaults=ORIGINAL_STEPS,
        details="FAB, L∞, minimum norm: per step the linearised boundary to the nearest class at x' and at x, both "
        "projected onto it within [0, 1] in L∞; x' ← clip((x' + 1.05·d')(1 − α) + (x + 1.05·d)·α), α = "
        "min(‖d'‖/(‖d'‖ + ‖d‖), 0.1); once misclassified, the closest point is kept and x' ← x + 0.9·(x' − x). At "
        "radius ε an image counts as fooled only if that point lies within ε (else x); later restarts start at "
        "random ε/2 away",
        reference="Croce & Hein 2020 (FAB); torchattacks `FAB`: bit-identical, random restarts with the same seed",
    ),
    Attack(
        "fab-t", "FAB toward each of the --n-targets most likely wrong classes", "lab4_ood.attacks.fab:fab_t",
        options=(STEPS, N_TARGETS, RESTARTS), seeded=True, defaults=ORIGINAL_STEPS,
        details="as `fab`, toward the boundary of the target class, once per target as `apgd-t`",
        reference="Croce & Hein 2020; torchattacks `FAB(multi_targeted=True)`: bit-identical with the same seed",
    ),
    Attack(
        "autoattack", "AutoAttack's --version: standard APGD-CE → APGD-T → FAB-T → Square on the images still "
        "robust", "lab4_ood.attacks.autoattack:autoattack", options=(VERSION, STEPS, N_QUERIES), seeded=True,
        min_classes=3, defaults=ORIGINAL_STEPS, versions=AUTOATTACK_VERSIONS,
        details="AutoAttack as the original's `--version` defines it, each component on the images the ones before "
        "did not fool: `standard` APGD-CE → APGD-T (9 targets) → FAB-T (9 targets) → Square, RobustBench's; `plus` "
        "APGD-CE, APGD-DLR, FAB (5 restarts each) → Square → APGD-T → FAB-T; `rand` APGD-CE → APGD-DLR with 20 EOT "
        "passes per gradient (randomised defences). The output states the components, the clean accuracy with n, "
        "the robust accuracy (the worst case per image); APGD and FAB take `--steps` [100, the original's]",
        reference="Croce & Hein 2020; torchattacks `AutoAttack(version=…)` at its 10 steps: bit-identical for "
        "standard, plus and rand (`nox -s tests-lab4-peers`)",
    ),
)  # fmt: skip

#### The registry: the table above and the plug-ins ####

PLUGIN_GROUPS = {"detectors": "dla.lab4.detectors", "attacks": "dla.lab4.attacks"}
# the commands' own parameters: a plug-in's option may not take these names
RESERVED = frozenset({
    "model", "models", "id", "id_spec", "ood", "method", "methods", "dataset", "near", "far", "groups", "attacks",
    "suite", "imglist_dir",
    "attack_eps", "eps", "targeted", "target_class", "grid", "batch_size", "limit", "seed", "data_dir",
    "download", "out", "cpu", "threads", "resume", "verbose", "detector", "attack",
})  # fmt: skip


def _check_plugin(spec: Any, spec_type: type, known: list) -> None:
    """Raise when a plug-in's entry cannot join the table: not an entry, a name taken, an option that differs
    from one of the same name, or that takes a command's own name."""
    if not isinstance(spec, spec_type):
        raise TypeError(f"a {type(spec).__name__}, not a lab4_ood.methods.{spec_type.__name__}")
    if spec.name in {k.name for k in known}:
        raise ValueError(f"the name {spec.name!r} is taken")
    taken = options_of(known)
    for o in spec.options:
        if o.name in taken and taken[o.name] != o:
            raise ValueError(
                f"its option {o.name!r} differs from that of {', '.join(users(taken[o.name], known))}"
            )
        if o.name not in taken and (o.name in RESERVED or (o.grid and o.grid_field in taken)):
            raise ValueError(f"its option {o.name!r} takes the name of a command's own option")


@cache
def _registry() -> tuple[dict[str, Detector], dict[str, Attack]]:
    """The table's detectors and attacks, then the plug-ins'; one warning line on stderr per plug-in that fails
    to load (a broken plug-in must not take the CLI down with it)."""
    tables: dict[str, dict] = {
        "detectors": {d.name: d for d in DETECTORS},
        "attacks": {a.name: a for a in ATTACKS},
    }
    for kind, spec_type in (("detectors", Detector), ("attacks", Attack)):
        for point in importlib.metadata.entry_points(group=PLUGIN_GROUPS[kind]):
            try:
                spec = point.load()
                _check_plugin(spec, spec_type, [*tables["detectors"].values(), *tables["attacks"].values()])
            except Exception as error:
                message = str(error).splitlines()[0] if str(error) else ""
                print(f"warning: lab4 plug-in {point.name!r} ({PLUGIN_GROUPS[kind]} = {point.value}) not loaded: "
                      f"{type(error).__name__}: {message}", file=sys.stderr)  # fmt: skip
                continue
            tables[kind][spec.name] = spec
    return tables["detectors"], tables["attacks"]


def detectors() -> dict[str, Detector]:
    """Every detector by name: the table's, then the plug-ins' (``dla.lab4.detectors``)."""
    return _registry()[0]


def attacks() -> dict[str, Attack]:
    """Every attack by name: the table's, then the plug-ins' (``dla.lab4.attacks``)."""
    return _registry()[1]


def reload() -> None:
    """Read the entry points again (after installing a plug-in in a running process: tests)."""
    _registry.cache_clear()


def implementation(spec: Detector | Attack) -> Any:
    """The class or function ``spec.implementation`` names, imported now; one Error line when it cannot be."""
    module, _, name = spec.implementation.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except Exception as error:  # a plug-in's broken implementation: an Error line, not a traceback
        raise DlaError(
            f"{spec.name}: cannot import {spec.implementation} ({type(error).__name__}: {error})"
        ) from error


def options_of(specs: Any) -> dict[str, Option]:
    """Every option of ``specs`` by name, each once (a shared option is one object)."""
    found: dict[str, Option] = {}
    for spec in specs:
        for option in spec.options:
            if found.setdefault(option.name, option) != option:
                raise ValueError(f"two different options named {option.name!r} ({spec.name})")
    return found


def users(option: Option, specs: Any) -> list[str]:
    """The names of the methods that take ``option``."""
    return [s.name for s in specs if option in s.options]


def default(option: Option, specs: Any) -> Any:
    """The CLI's and the config's default of ``option``: None (each method's own) where one of ``specs`` declares
    its own default for it, else the option's."""
    return None if any(option.name in getattr(s, "defaults", {}) for s in specs) else option.default


def values_for(spec: Detector | Attack, values: dict[str, Any]) -> dict[str, Any]:
    """The implementation's keywords for ``spec`` from option values by name (absent or None: the method's own
    default, else the option's)."""
    own = getattr(spec, "defaults", {})
    found = {o.name: values.get(o.name) for o in spec.options}
    return {
        o.keyword: found[o.name] if found[o.name] is not None else own.get(o.name, o.default)
        for o in spec.options
    }


def min_classes(spec: Attack, values: dict[str, Any] | None = None) -> int:
    """The fewest classes ``spec`` needs with option ``values``: with versions, also what its components need."""
    if not spec.versions:
        return spec.min_classes
    version = (values or {}).get("version") or next(o.default for o in spec.options if o.name == "version")
    table = attacks()
    return max(spec.min_classes, *(table[name].min_classes for name, _ in spec.versions[version]))


def missing(spec: Detector | Attack, values: dict[str, Any]) -> str | None:
    """The sentence refusing ``spec`` when ``values`` lack an option it needs, else None."""
    for o in spec.options:
        if o.needed and values.get(o.name) is None:
            return f"--method {spec.name} needs {o.cli_flag} {o.metavar or 'VALUE'} ({o.needed})"
    return None


#### The README's method tables, generated from the entries above ####

BEGIN = "<!-- lab4 {kind}: generated from lab4_ood/methods.py by `python -m lab4_ood.methods README.md` -->"
END = "<!-- end of lab4 {kind} -->"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _options_cell(spec: Detector | Attack) -> str:
    cells = []
    for o in spec.options:
        if o.choices:
            cells.append(f"`{o.cli_flag}` " + "/".join(f"[{c}]" if c == o.default else c for c in o.choices))
        else:
            value = spec.defaults.get(o.name, o.default) if isinstance(spec, Attack) else o.default
            cells.append(f"`{o.cli_flag}`" + ("" if value is None else f" [{_number(value)}]"))
    if isinstance(spec, Detector) and spec.searched:
        cells.append("`--grid`")
    if isinstance(spec, Attack) and spec.seeded:
        cells.append("`--seed`")
    return ", ".join(cells) or "—"


def markdown_table(kind: str) -> str:
    """The README's table of the built-in ``detectors`` or ``attacks``."""
    if kind == "detectors":
        rows = ["| method | score (higher = more ID) | options [default] | fits on ID train | reference; parity "
                "with pytorch-ood 0.4.0 |", "|---|---|---|---|---|"]  # fmt: skip
        for d in DETECTORS:
            note = f" ({d.fit_note})" if d.fit_note else ""
            fits = f"yes{note}" if d.fits else note.strip() or "—"
            rows.append(
                f"| `{d.name}` | {d.details or d.summary} | {_options_cell(d)} | {fits} | {d.reference} |"
            )
    else:
        rows = ["| attack | step (x' from x, each step clipped to the ball and to [0, 1]) | options [default] | "
                "norm, mode | reference |", "|---|---|---|---|---|"]  # fmt: skip
        for a in ATTACKS:
            traits = ["L2" if a.norm == "l2" else "L∞", "targeted too" if a.targeted else "untargeted"]
            need = {v: min_classes(a, {"version": v}) for v in a.versions} or {"": a.min_classes}
            most = max(need.values())
            fewer = ", ".join(f"{v}: {n}" for v, n in need.items() if n < most)
            traits += [f"≥ {most} classes" + (f" ({fewer})" if fewer else "")] if most > 2 else []
            cells = (f"`{a.name}`", a.details or a.summary, _options_cell(a), ", ".join(traits), a.reference)
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def with_tables(text: str) -> str:
    """``text`` (a README) with the generated tables between their markers."""
    for kind in ("detectors", "attacks"):
        begin, end = BEGIN.format(kind=kind), END.format(kind=kind)
        head, found, rest = text.partition(begin)
        _, found_end, tail = rest.partition(end)
        if not (found and found_end):
            raise ValueError(f"no {begin!r} … {end!r} in the text")
        text = f"{head}{begin}\n{markdown_table(kind)}\n{end}{tail}"
    return text


if __name__ == "__main__":  # rewrite the tables of the READMEs given
    for path in map(Path, sys.argv[1:]):
        path.write_text(with_tables(path.read_text()))
