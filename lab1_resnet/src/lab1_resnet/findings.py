"""What lab1 is meant to show, checked against the numbers its run folders hold (no torch: `lab1 report` is light).

Each function takes the ``rows`` a command wrote into its metrics.json (`lab1 study`: one row per depth and net with
``*_mean`` / ``*_std``; `lab1 transfer` and `lab1 distill`: one row per method) and returns one ``Finding``:
``ok`` True / False from the numbers, None when the rows it needs are missing (a step not run).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dla_core.report import Finding, fmt

Rows = Sequence[Mapping[str, Any]]

GAP = 0.2  # residual − plain test accuracy at the deepest depth that counts as "clearly better"
TOLERANCE = 0.02  # how much a deep residual net may lose against the shallowest one and still "keep up"
NEAR_CHANCE = 0.05  # test accuracy within this of chance counts as "at chance"


def _study(rows: Rows, net: str) -> dict[int, Mapping[str, Any]]:
    return {r["depth"]: r for r in rows if r.get("net") == net}


def _mean(row: Mapping[str, Any] | None, key: str) -> float | None:
    return None if row is None else row.get(f"{key}_mean")


def _unchecked(claim: str, why: str = "not run") -> Finding:
    return Finding(claim, None, why)


def plain_degrades(rows: Rows, net: str = "net") -> Finding:
    """Degradation: the deepest plain net ends with a higher training loss than the best shallower plain net
    (training itself gets worse with depth; not overfitting)."""
    claim = (
        f"degradation: the deepest plain {net} trains worse (higher final train loss) than a shallower one"
    )
    plain = _study(rows, "plain")
    if len(plain) < 2:
        return _unchecked(claim)
    deep = max(plain)
    shallow = min((d for d in plain if d < deep), key=lambda d: _mean(plain[d], "train_loss"))
    loss_deep, loss_shallow = _mean(plain[deep], "train_loss"), _mean(plain[shallow], "train_loss")
    if loss_deep is None or loss_shallow is None:
        return _unchecked(claim, "train loss missing")
    return Finding(
        claim,
        loss_deep > loss_shallow,
        f"plain train loss {fmt(loss_deep)} at depth {deep} vs {fmt(loss_shallow)} at depth {shallow}",
    )


def residual_beats_plain(rows: Rows, net: str = "net", gap: float = GAP) -> Finding:
    """At the deepest depth the residual net's test accuracy is at least ``gap`` above the plain one's."""
    claim = (
        f"skip connections fix it: at the deepest depth the residual {net} scores ≥ {gap} above the plain one"
    )
    plain, residual = _study(rows, "plain"), _study(rows, "residual")
    depths = sorted(set(plain) & set(residual))
    if not depths:
        return _unchecked(claim)
    d = depths[-1]
    p, r = _mean(plain[d], "test_accuracy"), _mean(residual[d], "test_accuracy")
    if p is None or r is None:
        return _unchecked(claim, "test accuracy missing")
    return Finding(claim, r >= p + gap, f"depth {d}: residual {fmt(r)} vs plain {fmt(p)} test accuracy")


def residual_keeps_up(rows: Rows, net: str = "net", tolerance: float = TOLERANCE) -> Finding:
    """The deepest residual net's test accuracy is no more than ``tolerance`` below the shallowest one's."""
    claim = f"the residual {net} does not degrade: deepest ≥ shallowest − {tolerance} test accuracy"
    residual = _study(rows, "residual")
    if len(residual) < 2:
        return _unchecked(claim)
    deep, shallow = max(residual), min(residual)
    a_deep, a_shallow = _mean(residual[deep], "test_accuracy"), _mean(residual[shallow], "test_accuracy")
    if a_deep is None or a_shallow is None:
        return _unchecked(claim, "test accuracy missing")
    return Finding(
        claim,
        a_deep >= a_shallow - tolerance,
        f"residual {fmt(a_deep)} at depth {deep} vs {fmt(a_shallow)} at depth {shallow}",
    )


def plain_at_chance(
    rows: Rows, min_depth: int, chance: float, net: str = "net", slack: float = NEAR_CHANCE
) -> Finding:
    """Every plain net of depth ≥ ``min_depth`` ends within ``slack`` of chance test accuracy."""
    claim = f"plain {net}s of depth ≥ {min_depth} stay at chance ({fmt(chance)} test accuracy)"
    deep = {d: _mean(r, "test_accuracy") for d, r in _study(rows, "plain").items() if d >= min_depth}
    if not deep or any(a is None for a in deep.values()):
        return _unchecked(claim, f"no plain net of depth ≥ {min_depth} in the study")
    ok = all(a <= chance + slack for a in deep.values())
    return Finding(claim, ok, ", ".join(f"depth {d}: {fmt(a)}" for d, a in sorted(deep.items())))


#### Transfer and distillation: rows of one table ####


def _accuracy(rows: Rows, prefix: str) -> tuple[str, float] | None:
    """The best test accuracy among the rows whose name starts with ``prefix`` (and that row's name)."""
    found = [(r["row"], r["test_accuracy"]) for r in rows if str(r.get("row", "")).startswith(prefix)]
    found = [(n, a) for n, a in found if a is not None]
    return max(found, key=lambda f: f[1]) if found else None


def finetune_beats_features(rows: Rows) -> Finding:
    """The best fine-tuned row beats a linear SVM on the frozen features."""
    claim = "fine-tuning beats a linear classifier on the frozen source features"
    tuned, svm = _accuracy(rows, "finetune-"), _accuracy(rows, "features + linear SVM")
    if tuned is None or svm is None:
        return _unchecked(claim)
    return Finding(
        claim, tuned[1] > svm[1], f"{tuned[0]} {fmt(tuned[1])} vs features + linear SVM {fmt(svm[1])}"
    )


def transfer_keeps_up_with_scratch(rows: Rows) -> Finding:
    """The best fine-tuned row is at least as good as the same architecture trained from scratch for the same
    epochs (on an easy target both may reach 100%: "at least", not "better")."""
    claim = "transfer does not hurt: fine-tuning ≥ the same net trained from scratch for the same epochs"
    tuned, scratch = _accuracy(rows, "finetune-"), _accuracy(rows, "scratch-")
    if tuned is None or scratch is None:
        return _unchecked(claim)
    return Finding(
        claim, tuned[1] >= scratch[1], f"{tuned[0]} {fmt(tuned[1])} vs {scratch[0]} {fmt(scratch[1])}"
    )


def _model(rows: Rows, name: str) -> Mapping[str, Any] | None:
    return next((r for r in rows if r.get("model") == name), None)


def distilled_beats_alone(rows: Rows) -> Finding:
    """The distilled student's test accuracy is at least the same student's trained on labels alone."""
    claim = "distillation helps: the distilled student ≥ the same student trained on labels alone"
    alone, distilled = _model(rows, "student, labels only"), _model(rows, "student, distilled")
    if alone is None or distilled is None:
        return _unchecked(claim)
    a, d = alone["test_accuracy"], distilled["test_accuracy"]
    return Finding(claim, d >= a, f"distilled {fmt(d)} vs labels only {fmt(a)} test accuracy")


def teacher_beats_student(rows: Rows) -> Finding:
    """The teacher is better than the student trained alone (otherwise there is nothing to distil)."""
    claim = "the teacher knows more than the small student trained alone"
    teacher, alone = _model(rows, "teacher"), _model(rows, "student, labels only")
    if teacher is None or alone is None:
        return _unchecked(claim)
    t, a = teacher["test_accuracy"], alone["test_accuracy"]
    ratio = teacher["parameters"] / max(alone["parameters"], 1)
    return Finding(
        claim, t > a, f"teacher {fmt(t)} vs student {fmt(a)} test accuracy, {ratio:.0f}× the parameters"
    )
