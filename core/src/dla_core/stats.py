"""Evidence: every number with its spread, every verdict with its confidence (numpy/scipy only, no torch).

A result is a distribution over the runs one could have made (seeds) and the inputs one could have tested
(test examples); a finding is judged by an interval, and may be *inconclusive* when its interval straddles
the finding's margin (the practice of Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice").

    mean_ci(values)               one metric across seeds: mean, sample std, Student-t 95% CI    -> Estimate
    bootstrap_difference(a, b)    two arms scored on the same test examples, outcomes shaped
                                  (seeds, examples): mean(A) - mean(B) and P(A > B), each with a
                                  bootstrap CI over examples (paired) and seeds (per arm)         -> Comparison
    probability_of_improvement    P(A > B) over seeds, the Mann-Whitney U / (n_A n_B), ties half
    auroc_outcomes(pos, neg)      per-example pseudo-outcomes whose mean is the AUROC (DeLong's variance)
    verdict(interval, claim)      ✓ supported / ✗ contradicted / ～ inconclusive                  -> Verdict
    finding_line(...)             "✓ supported: A better than B: difference +0.031, 95% CI [...], ..."
    write_outcomes / read_outcomes   per-example test outcomes of a run: RUN/outcomes.npz (outcomes-<name>.npz)
    read_arms(runs_a, runs_b)     each arm's runs stacked to (seeds, examples), checked to share one test set

Conventions: the difference is always A - B; intervals are two-sided at ``level`` (0.95); randomness is
stateless (same inputs and ``seed`` give the same interval); numbers print with 3 significant digits.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dla_core.claims import Claim as Claim  # re-exported: stats is where callers look for them
from dla_core.claims import Interval as Interval
from dla_core.claims import Verdict as Verdict
from dla_core.claims import significant as significant
from dla_core.claims import verdict as verdict
from dla_core.errors import DlaError
from dla_core.runs import atomic_write

LEVEL = 0.95
RESAMPLES = 10_000  # bootstrap replicates: the 2.5% tails then rest on 250 replicates each
_CHUNK_ELEMENTS = 1 << 21  # replicates are drawn in chunks of about this many example indices (16 MB)


#### Across seeds ####


@dataclass(frozen=True)
class Estimate:
    """A metric across n seeds: mean, sample std (n - 1 dof) and a Student-t CI of the mean at ``level``.

    With one seed there is no spread to measure: std is nan and the interval is (-inf, inf), which no
    verdict can call anything but inconclusive."""

    mean: float
    low: float
    high: float
    n: int
    std: float
    level: float = LEVEL

    @property
    def has_interval(self) -> bool:
        return self.n >= 2

    def format(self) -> str:
        """``0.812 [0.781, 0.843] (n=3)``; one seed: ``0.812 (n=1, no interval)``."""
        if not self.has_interval:
            return f"{significant(self.mean)} (n=1, no interval)"
        return f"{significant(self.mean)} [{significant(self.low)}, {significant(self.high)}] (n={self.n})"

    __str__ = format


def mean_ci(values: Sequence[float] | np.ndarray, level: float = LEVEL) -> Estimate:
    """Mean of ``values`` (one per seed) with the Student-t interval: mean ± t_{(1+level)/2, n-1} · s/√n."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0 or not 0 < level < 1:
        raise ValueError(f"mean_ci needs a non-empty 1-D sequence and 0 < level < 1, got {x.shape}, {level}")
    _check_finite(x, "values")
    n, mean = len(x), float(x.mean())
    if n == 1:
        return Estimate(mean, -math.inf, math.inf, 1, math.nan, level)
    from scipy.stats import t as student_t  # scipy.stats takes a second to import: only when needed

    std = float(x.std(ddof=1))
    half = float(student_t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, std, level)


#### Two arms on one test set ####


@dataclass(frozen=True)
class Comparison:
    """Arm A against arm B on the same test examples; ``low``/``high`` bound ``difference`` = mean(A) - mean(B)."""

    difference: float
    low: float
    high: float
    improvement: float  # P(A > B) over seeds, ties half (0.5: neither arm tends to win)
    improvement_low: float
    improvement_high: float
    examples: int
    seeds: tuple[int, int]  # (A's, B's)
    level: float = LEVEL
    resamples: int = RESAMPLES
    paired: bool = True

    def format(self) -> str:
        """``+0.031 [-0.002, +0.064] (95% CI; 360 test examples, 3 seeds each)``."""
        return (
            f"{significant(self.difference, sign=True)} [{significant(self.low, sign=True)}, "
            f"{significant(self.high, sign=True)}] ({self.level:.0%} CI; {self.evidence})"
        )

    @property
    def evidence(self) -> str:
        """How much data the interval rests on: ``360 test examples, 3 seeds each``."""
        a, b = self.seeds
        seeds = f"{a} seed{'s' * (a != 1)} each" if a == b else f"{a} and {b} seeds"
        return f"{self.examples:,} test example{'s' * (self.examples != 1)}, {seeds}"

    __str__ = format


def probability_of_improvement(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """P(A > B): the chance that a run of A scores higher than a run of B, ties counting half.

    Agarwal et al.'s definition for one task: over every pair (seed i of A, seed j of B),
    mean of [a_i > b_j] + ½ [a_i == b_j], which is the Mann-Whitney U statistic of A divided by n_A · n_B.
    ``a``/``b`` are one score per seed, or per-example outcomes shaped (seeds, examples), which are first
    reduced to each seed's mean over the test set: the test set is the one task, so P(A > B) answers "would
    a fresh run of A beat a fresh run of B on this test set?". (Taken per example instead, over 0/1
    outcomes it would be ½ + ½ · (mean(A) - mean(B)): the difference again, in other units.)
    """
    a, b = _per_seed(a, "a"), _per_seed(b, "b")
    return float(_pairwise_wins(a[None], b[None])[0])


def bootstrap_difference(
    a: np.ndarray,
    b: np.ndarray,
    *,
    seed: int = 0,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    paired: bool = True,
) -> Comparison:
    """mean(A) - mean(B) and P(A > B), with percentile bootstrap CIs over test examples and seeds.

    ``a``, ``b``: per-example outcomes shaped (seeds, examples), e.g. 0/1 correctness or any per-example
    score, each row one seed of that arm scored on the same test set, column e the same example in both
    (a 1-D array is one seed).

    Resampling scheme. Every seed is scored on every example, so an arm's outcomes form a crossed
    seeds × examples table whose two factors are both samples: the test examples of the inputs the finding
    is about, the seeds of the training runs one could have made. Each replicate redraws both:

    - examples: N indices with replacement, drawn once per replicate and used for **both** arms (paired).
      An example hard for A is usually hard for B; redrawing it for both at once cancels that shared
      difficulty from the difference, which is why the paired interval is narrower than the unpaired one
      when the arms are correlated (``paired=False`` draws B's examples separately, as if B had been
      scored on another test set of the same size: only to show what pairing buys).
    - seeds: within each arm, that arm's S seeds with replacement, independently of the other arm. Each arm
      is a stratum that keeps its number of runs, as each task is in Agarwal et al.'s stratified bootstrap.
      Seed i of A and seed i of B are different trainings; treating them as unrelated errs on the wide
      side if they do share something (a data order).

    A nested scheme (examples redrawn afresh inside each resampled seed) would treat each seed's test set
    as a new sample, which it is not: every seed saw the same examples. Drawing rows and columns once per
    replicate is the crossed-design bootstrap. Its measured coverage (``bench/bench_stats.py --coverage``,
    bench/RESULTS.md): 0.97-0.99 when the seeds differ little (the seed × example noise is counted by both
    draws: the interval errs wide); 0.87 / 0.91 / 0.94 with 3 / 5 / 10 seeds when the seeds' spread dominates
    (a bootstrap over 3 seeds cannot see their whole spread; ``mean_ci`` of each arm, a t-interval, shows
    it); with one seed per arm, the test-set spread only (0.97 without a seed effect, 0.35 with a large
    one). ``Comparison.evidence`` says how many seeds an interval rests on.

    The statistic of a replicate is the mean over its resampled seeds of each seed's mean over the resampled
    examples, and P(A > B) of those per-seed means (``probability_of_improvement``). The interval is the
    (1 - level)/2 and (1 + level)/2 quantiles of the replicates (numpy's linear interpolation).

    Stateless randomness: ``SeedSequence(seed)`` spawns four streams (A's seeds, B's seeds, the examples,
    B's own examples when unpaired), each drawn in replicate order, so the same inputs and ``seed`` give the
    same interval whatever the chunking; replicates are computed a chunk at a time, with no per-replicate loop.
    """
    a, b = _outcomes(a, "a"), _outcomes(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the arms need the same test examples, got {a.shape[1]} and {b.shape[1]}")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples} and {level}")
    seeds_a, seeds_b, examples_a, examples_b = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    differences, improvements = np.empty(resamples), np.empty(resamples)
    n = a.shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, resamples, chunk):
        c = min(chunk, resamples - start)
        rows = slice(start, start + c)
        picked = examples_a.integers(0, n, size=(c, n), dtype=np.int32)  # (c, N)
        if paired:  # one pass over both arms' rows: (c, S_A + S_B)
            means_a, means_b = np.split(_seed_means(np.concatenate([a, b]), picked), [len(a)], axis=1)
        else:
            means_a = _seed_means(a, picked)
            means_b = _seed_means(b, examples_b.integers(0, n, size=(c, n), dtype=np.int32))
        # the resampled seeds of each arm: (c, S)
        means_a = np.take_along_axis(means_a, seeds_a.integers(0, len(a), size=(c, len(a))), axis=1)
        means_b = np.take_along_axis(means_b, seeds_b.integers(0, len(b), size=(c, len(b))), axis=1)
        differences[rows] = means_a.mean(axis=1) - means_b.mean(axis=1)
        improvements[rows] = _pairwise_wins(means_a, means_b)
    tails = [(1 - level) / 2, (1 + level) / 2]
    low, high = np.quantile(differences, tails)
    improvement_low, improvement_high = np.quantile(improvements, tails)
    return Comparison(
        difference=float(a.mean() - b.mean()),
        low=float(low),
        high=float(high),
        improvement=probability_of_improvement(a, b),
        improvement_low=float(improvement_low),
        improvement_high=float(improvement_high),
        examples=n,
        seeds=(a.shape[0], b.shape[0]),
        level=level,
        resamples=resamples,
        paired=paired,
    )


def _seed_means(x: np.ndarray, picked: np.ndarray) -> np.ndarray:
    """(S, N) outcomes, (c, N) example indices -> (c, S): each seed's mean over each replicate's examples.

    Counting how often each example was drawn turns the gather into one matrix product (10x faster)."""
    c, n = picked.shape
    counts = np.bincount((picked + n * np.arange(c)[:, None]).ravel(), minlength=c * n).reshape(c, n)
    return (counts @ x.T) / n


def _pairwise_wins(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(c, S_A), (c, S_B) -> (c,): the fraction of pairs (i, j) with a_i > b_j, ties counting half."""
    ai, bj = a[:, :, None], b[:, None, :]
    return (ai > bj).mean(axis=(1, 2)) + 0.5 * (ai == bj).mean(axis=(1, 2))


def _outcomes(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]  # one seed
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"{name} must be per-example outcomes shaped (seeds, examples), got shape {x.shape}")
    _check_finite(x, name)
    return x


def _per_seed(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = _outcomes(x, name).mean(axis=1)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"{name} must be one score per seed or (seeds, examples) outcomes, got {x.shape}")
    _check_finite(x, name)
    return x


def _check_finite(x: np.ndarray, name: str) -> None:
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise ValueError(f"{bad} of the {x.size} values of {name} are NaN or infinite")


def auroc_outcomes(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Per-example pseudo-outcomes of the AUROC of ``positive`` scores against ``negative`` ones: one value per
    example (positives first, then negatives) whose mean is the AUROC, ready for ``bootstrap_difference``.

    The AUROC is P(s+ > s-) (ties half), a two-sample U-statistic, not a mean over examples. Its placements are:
    V+_i, the share of negatives positive i outranks, and V-_j, the share of positives that outrank negative j;
    both average to the AUROC. A positive's pseudo-outcome is A + (N/n+)(V+_i - A), a negative's A + (N/n-)(V-_j
    - A), with N = n+ + n-: their mean is A, and the variance of a mean of N of them drawn with replacement is
    Var(V+)/n+ + Var(V-)/n-, DeLong's variance of the AUROC (DeLong et al. 1988). Two detectors scored on the
    same examples give pseudo-outcomes aligned example by example: the paired bootstrap of their difference is
    then the bootstrap of the AUROC difference, correlated examples and all."""
    pos = np.asarray(positive, dtype=np.float64).ravel()
    neg = np.asarray(negative, dtype=np.float64).ravel()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"an AUROC needs positives and negatives, got {len(pos)} and {len(neg)}")
    _check_finite(pos, "positive scores")
    _check_finite(neg, "negative scores")
    ranked = np.sort(neg)
    # V+_i: negatives below positive i, ties half; V-_j: positives above negative j, ties half
    below = np.searchsorted(ranked, pos, side="left") + np.searchsorted(ranked, pos, side="right")
    v_pos = below / (2 * len(neg))
    ranked_pos = np.sort(pos)
    above = (
        2 * len(pos)
        - np.searchsorted(ranked_pos, neg, side="left")
        - np.searchsorted(ranked_pos, neg, side="right")
    )
    v_neg = above / (2 * len(pos))
    auroc = float(v_pos.mean())
    n = len(pos) + len(neg)
    return np.concatenate([auroc + n / len(pos) * (v_pos - auroc), auroc + n / len(neg) * (v_neg - auroc)])


#### Verdicts (the claims themselves: dla_core.claims, numpy-free) ####


def finding_line(claim: Claim, comparison: Comparison, a: str = "A", b: str = "B") -> str:
    """One line per finding: ``✓ supported: LoRA and full less than 0.05 apart: difference +0.031, 95% CI [-0.002,
    +0.044], 360 test examples, 3 seeds each``."""
    c = comparison
    return (
        f"{verdict(c, claim)}: {claim.describe(a, b)}: difference {significant(c.difference, sign=True)}, "
        f"{c.level:.0%} CI [{significant(c.low, sign=True)}, {significant(c.high, sign=True)}], {c.evidence}"
    )


#### Per-example outcomes in a run folder ####

OUTCOMES = "outcomes.npz"


def outcomes_file(name: str | None = None) -> str:
    """``outcomes.npz``, or ``outcomes-<name>.npz`` for a run that keeps several (a detector's, an ε's)."""
    return OUTCOMES if name is None else f"outcomes-{name}.npz"


@dataclass(frozen=True)
class Outcomes:
    """A run's per-example test outcomes; every array ends in the examples axis, in test-set order."""

    correct: np.ndarray  # bool, (examples,) or (seeds, examples)
    scores: np.ndarray | None = None  # float, same shape as correct: what the lab ranks examples by
    labels: np.ndarray | None = None  # (examples,): the true labels

    @property
    def examples(self) -> int:
        return self.correct.shape[-1]


def write_outcomes(
    run_dir: Path,
    correct: np.ndarray,
    *,
    scores: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    name: str | None = None,
) -> Path:
    """Write RUN/outcomes.npz (``name``: RUN/outcomes-<name>.npz; compressed; atomically, by the main process
    only) and return its path."""
    outcomes = _checked(np.asarray(correct), scores, labels)
    arrays = {k: v for k, v in vars(outcomes).items() if v is not None}
    path = Path(run_dir) / outcomes_file(name)
    atomic_write(path, lambda tmp: _write_npz(tmp, arrays))  # the main process writes, the others skip
    return path


def read_outcomes(run_dir: Path, name: str | None = None) -> Outcomes:
    """Read RUN/outcomes.npz (or ``outcomes-<name>.npz``, or ``run_dir`` itself when it names an .npz file); a
    missing or damaged file is a ``DlaError`` naming it."""
    path = Path(run_dir) if Path(run_dir).suffix == ".npz" else Path(run_dir) / outcomes_file(name)
    if not path.is_file():
        raise DlaError(f"{run_dir} has no {path.name}: the run kept no per-example test outcomes")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DlaError(f"{path} is damaged ({e}); rerun the command that wrote it") from None
    try:
        return _checked(arrays.pop("correct"), arrays.pop("scores", None), arrays.pop("labels", None))
    except (KeyError, ValueError) as e:
        raise DlaError(f"{path} is damaged: {e}") from None


def read_arms(*arms: Sequence[Path], name: str | None = None) -> list[Outcomes]:
    """Each arm's run folders (a seed each, or stacked seeds) read into one ``Outcomes`` of (seeds, examples)
    rows, ready for ``bootstrap_difference(a.correct, b.correct)``: ``a, b = read_arms(runs_a, runs_b)``;
    ``name``: each folder's ``outcomes-<name>.npz``.

    Outcomes compared example by example must be about the same examples: a folder whose test set differs from
    the first one's in size or in its saved labels is a ``DlaError`` naming both."""
    stacked, first = [], None
    for runs in arms:
        if not runs:
            raise ValueError("every arm needs at least one run folder")
        read = [(Path(d), read_outcomes(d, name)) for d in runs]
        for d, o in read:
            first = first or (d, o)
            if o.examples != first[1].examples or not _same_labels(o.labels, first[1].labels):
                raise DlaError(
                    f"{d} and {first[0]} were scored on different test sets ({o.examples:,} and "
                    f"{first[1].examples:,} examples{', other labels' * (o.examples == first[1].examples)}): "
                    "their outcomes cannot be compared example by example"
                )
        scores = [o.scores for _, o in read]
        stacked.append(
            Outcomes(
                correct=np.concatenate([np.atleast_2d(o.correct) for _, o in read]),
                scores=None
                if any(s is None for s in scores)
                else np.concatenate([np.atleast_2d(s) for s in scores]),
                labels=next((o.labels for _, o in read if o.labels is not None), None),
            )
        )
    return stacked


def _same_labels(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is None or b is None or np.array_equal(a, b)


def _checked(correct: np.ndarray, scores: np.ndarray | None, labels: np.ndarray | None) -> Outcomes:
    if correct.dtype != np.bool_ or correct.ndim not in (1, 2):
        raise ValueError(
            f"correct must be bool, (examples,) or (seeds, examples); got {correct.dtype} {correct.shape}"
        )
    if scores is not None:
        scores = np.asarray(scores)
        if scores.shape != correct.shape or scores.dtype.kind != "f":
            raise ValueError(
                f"scores must be floats shaped {correct.shape}, got {scores.dtype} {scores.shape}"
            )
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != correct.shape[-1:]:
            raise ValueError(f"labels must be shaped ({correct.shape[-1]},), got {labels.shape}")
    return Outcomes(correct, scores, labels)


def _write_npz(tmp: Path, arrays: dict[str, np.ndarray]) -> None:
    # a file object, not a name: numpy would append ".npz" to the temporary file's name
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
