"""A lab's findings judged by intervals: a ``stats.Claim`` about two arms → a report ``Finding`` ✓ / ✗ / ～.

    judge("skip connections fix it", Claim("better", 0.2),
          Arm("residual d30", cells("residual", 30)), Arm("plain d30", cells("plain", 30)))
    → Finding(…, verdict=✓, evidence="supported: residual d30 better than plain d30 by more than 0.2:
              difference +0.551, 95% CI [+0.502, +0.598], 360 test examples, 2 seeds each")

The arms' per-example test outcomes (their run folders' outcomes.npz, ``stats.read_arms``) go through the paired
bootstrap over test examples and seeds (``stats.bootstrap_difference``); ``verdict`` places the interval against
the claim's margin. A number that is not per example (a training loss, a parameter share) is judged by the seeds'
t-interval (``judge_seeds``) or exactly (``judge_exact``), and its line says so. An arm whose run folders are
missing leaves the finding unchecked (–), as before. No numpy until a finding is judged: recipes stay light.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dla_core.errors import DlaError
from dla_core.report import Finding

if TYPE_CHECKING:
    import numpy as np

    from dla_core.stats import Claim, Comparison, Verdict

NOT_RUN = "not run"
OUTCOMES_KEY = "outcomes"  # a table row's key in metrics.json: its outcomes file, relative to the run folder
SEED = 0  # the bootstrap's seed: a report rebuilt from the same folders shows the same intervals


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: its label in the finding's line and its run folders (a seed each, or stacked)."""

    label: str
    runs: Sequence[Path]
    name: str | None = None  # outcomes-<name>.npz instead of outcomes.npz (a detector's, an ε's)


def unchecked(text: str, why: str = NOT_RUN) -> Finding:
    return Finding(text, None, why)


def judged(text: str, verdict: Verdict, line: str) -> Finding:
    """A finding with ``verdict``; ``line`` is its evidence, starting with the verdict's word."""
    from dla_core.stats import Verdict

    ok = {Verdict.SUPPORTED: True, Verdict.CONTRADICTED: False}.get(verdict)
    return Finding(text, ok, line, verdict=verdict)


def compared(text: str, claim: Claim, comparison: Comparison, a: str, b: str) -> Finding:
    """The finding a bootstrap comparison of A against B gives (``stats.finding_line`` without the mark)."""
    from dla_core.stats import finding_line, verdict

    v = verdict(comparison, claim)
    return judged(text, v, finding_line(claim, comparison, a, b).removeprefix(f"{v.mark} "))


def judge_outcomes(text: str, claim: Claim, a: np.ndarray, b: np.ndarray, labels: tuple[str, str]) -> Finding:
    """``claim`` about per-example outcomes ``a`` and ``b`` ((seeds, examples), the same examples)."""
    from dla_core.stats import bootstrap_difference

    return compared(text, claim, bootstrap_difference(a, b, seed=SEED), *labels)


def judge(text: str, claim: Claim, a: Arm, b: Arm) -> Finding:
    """``claim`` about A - B in test accuracy, from the arms' outcomes files; unchecked when a folder lacks one."""
    from dla_core.stats import read_arms

    if not a.runs or not b.runs:
        return unchecked(text)
    try:
        if a.name == b.name:  # read together: checked to share one test set
            out_a, out_b = read_arms(a.runs, b.runs, name=a.name)
        else:
            (out_a,), (out_b,) = read_arms(a.runs, name=a.name), read_arms(b.runs, name=b.name)
    except DlaError as e:  # the reason without the folders' paths: a report names no machine paths
        why = "tested on different examples" if "different test sets" in str(e) else "no outcomes.npz"
        return unchecked(text, f"{NOT_RUN} ({a.label} vs {b.label}: {why})")
    if out_a.examples != out_b.examples:
        return unchecked(text, f"{a.label} and {b.label} were tested on different examples")
    return judge_outcomes(text, claim, out_a.correct, out_b.correct, (a.label, b.label))


def judge_seeds(
    text: str, claim: Claim, a: Sequence[float], b: Sequence[float], labels: tuple[str, str], what: str
) -> Finding:
    """``claim`` about a number that is not per example (``what``: "final train loss"), one value per seed in
    each arm: the t-interval of the per-seed differences when the arms share their seeds (same count, same
    order), else of mean(A) - mean(B) with Welch's degrees of freedom."""
    import math

    from dla_core.stats import Estimate, mean_ci, significant, verdict

    if not a or not b:
        return unchecked(text)
    if len(a) == len(b):
        est = mean_ci([x - y for x, y in zip(a, b, strict=True)])
        how = f"{len(a)} seed{'s' * (len(a) != 1)}, paired by seed"
    else:
        ea, eb = mean_ci(a), mean_ci(b)
        est = (
            _welch(ea, eb)
            if ea.has_interval and eb.has_interval
            else Estimate(ea.mean - eb.mean, -math.inf, math.inf, 1, math.nan)
        )
        how = f"{len(a)} and {len(b)} seeds, Welch"
    v = verdict(est, claim)
    interval = (
        f"95% CI [{significant(est.low, sign=True)}, {significant(est.high, sign=True)}]"
        if est.has_interval
        else "no interval (one seed)"
    )
    line = (
        f"{v.word}: {claim.describe(*labels)}: difference {significant(est.mean, sign=True)}, {interval}, "
        f"{how} (the seeds' t-interval: {what} is not per test example)"
    )
    return judged(text, v, line)


def _welch(ea: Any, eb: Any) -> Any:
    import math

    from scipy.stats import t as student_t

    from dla_core.stats import Estimate

    va, vb = ea.std**2 / ea.n, eb.std**2 / eb.n
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (ea.n - 1) + vb**2 / (eb.n - 1)) if se > 0 else ea.n + eb.n - 2
    half = float(student_t.ppf((1 + ea.level) / 2, dof)) * se
    d = ea.mean - eb.mean
    return Estimate(d, d - half, d + half, ea.n + eb.n, se)


def judge_exact(text: str, claim: Claim, difference: float, labels: tuple[str, str], what: str) -> Finding:
    """``claim`` about a number with no sampling in it (``what``: "a parameter count"): its interval is itself."""
    from dla_core.stats import significant, verdict

    @dataclass(frozen=True)
    class Point:
        low: float
        high: float

    v = verdict(Point(difference, difference), claim)
    line = f"{v.word}: {claim.describe(*labels)}: difference {significant(difference, sign=True)} (exact: {what})"
    return judged(text, v, line)


def every(text: str, parts: Sequence[Finding]) -> Finding:
    """A finding about every one of ``parts`` (every detector, every OOD set): ✗ when one is contradicted, ✓
    when all are supported, ～ otherwise; unchecked with none. The line names the weakest part first."""
    from dla_core.stats import Verdict

    checked = [p for p in parts if p.verdict is not None]
    if not checked:
        return unchecked(text, parts[0].evidence if parts else NOT_RUN)
    rank = {Verdict.CONTRADICTED: 0, Verdict.INCONCLUSIVE: 1, Verdict.SUPPORTED: 2}
    ordered = sorted(checked, key=lambda p: rank[p.verdict])  # type: ignore[index]
    worst = ordered[0].verdict
    if len(checked) < len(parts) and worst is Verdict.SUPPORTED:
        worst = Verdict.INCONCLUSIVE  # a part not checked cannot be counted as supported
    tally = ", ".join(
        f"{sum(p.verdict is v for p in checked)} {v.word}"
        for v in Verdict
        if any(p.verdict is v for p in checked)
    )
    shown = "; ".join(p.evidence.split(": ", 1)[1] for p in ordered[:3])
    more = f"; … ({len(ordered) - 3} more)" if len(ordered) > 3 else ""
    return judged(text, worst, f"{worst.word} ({len(parts)} parts: {tally}): {shown}{more}")
