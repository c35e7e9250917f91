"""What lab1 is meant to show, each a claim judged by its interval (no torch: `lab1 report` is light).

Each function takes the ``rows`` a command wrote into its metrics.json and that command's run folder, and returns
one ``Finding``: ✓ supported / ✗ contradicted / ～ inconclusive from the paired bootstrap of the two arms'
per-example test outcomes over test examples and seeds (``dla_core.evidence``), – when a run is missing.

- `lab1 study` (rows per depth and net with ``*_mean``): the cells' run folders ``cells/<model>-d<depth>-<net>-s<seed>``
  hold each seed's outcomes.npz and final train loss (not per example: judged by the seeds' t-interval).
- `lab1 transfer` and `lab1 distill` (rows per method): each row names its outcomes file, or one per seed
  (``outcomes``: a path or a list of paths).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dla_core.claims import Claim
from dla_core.evidence import OUTCOMES_KEY, Arm, every, judge, judge_outcomes, judge_seeds, unchecked
from dla_core.report import Finding
from dla_core.runs import read_json

Rows = Sequence[Mapping[str, Any]]

GAP = 0.2  # residual − plain test accuracy at the deepest depth that counts as "clearly better"
TOLERANCE = 0.02  # how much a deep residual net may lose against the shallowest one and still "keep up"
NEAR_CHANCE = 0.05  # test accuracy within this of chance counts as "at chance"
TRANSFER_TOLERANCE = 0.02  # how much fine-tuning may lose against training from scratch and still "not hurt"


def _depths(rows: Rows, net: str) -> list[int]:
    return sorted(r["depth"] for r in rows if r.get("net") == net)


def cells(folder: Path, net: str, depth: int) -> list[Path]:
    """The study's run folders of ``net`` at ``depth``, one per seed, in seed order."""
    found = Path(folder).glob(f"cells/*-d{depth}-{net}-s*")
    return sorted(found, key=lambda p: int(p.name.rsplit("-s", 1)[1]))


def _arm(folder: Path, net: str, depth: int) -> Arm:
    return Arm(f"{net} depth {depth}", cells(folder, net, depth))


def _train_losses(runs: Sequence[Path]) -> list[float]:
    losses = [read_json(p / "metrics.json").get("train_loss") for p in runs if (p / "metrics.json").is_file()]
    return [x for x in losses if x is not None]


def plain_degrades(rows: Rows, folder: Path, net: str = "net") -> Finding:
    """Degradation: the deepest plain net ends with a higher training loss than the shallower plain net with the
    lowest one (training itself gets worse with depth; not overfitting). A train loss is not per test example:
    judged by the seeds' t-interval of (deep − shallow) train loss."""
    text = f"degradation: the deepest plain {net} trains worse (higher final train loss) than a shallower one"
    plain = {r["depth"]: r for r in rows if r.get("net") == "plain"}
    if len(plain) < 2:
        return unchecked(text)
    deep = max(plain)
    shallow = min((d for d in plain if d < deep), key=lambda d: plain[d].get("train_loss_mean") or 0.0)
    a, b = _train_losses(cells(folder, "plain", shallow)), _train_losses(cells(folder, "plain", deep))
    # "better" is lower loss: A = shallow and B = deep scored by −loss, so difference = loss(deep) − loss(shallow)
    return judge_seeds(
        text,
        Claim("better", 0.0),
        [-x for x in a],
        [-x for x in b],
        (f"plain depth {shallow}", f"plain depth {deep}"),
        "final train loss (lower is better)",
    )


def residual_beats_plain(rows: Rows, folder: Path, net: str = "net", gap: float = GAP) -> Finding:
    """At the deepest depth the residual net's test accuracy is more than ``gap`` above the plain one's."""
    text = (
        f"skip connections fix it: at the deepest depth the residual {net} scores > {gap} above the plain one"
    )
    depths = sorted(set(_depths(rows, "plain")) & set(_depths(rows, "residual")))
    if not depths:
        return unchecked(text)
    d = depths[-1]
    return judge(text, Claim("better", gap), _arm(folder, "residual", d), _arm(folder, "plain", d))


def residual_keeps_up(rows: Rows, folder: Path, net: str = "net", tolerance: float = TOLERANCE) -> Finding:
    """The deepest residual net's test accuracy is less than ``tolerance`` below the shallowest one's."""
    text = f"the residual {net} does not degrade: deepest > shallowest − {tolerance} test accuracy"
    depths = _depths(rows, "residual")
    if len(depths) < 2:
        return unchecked(text)
    deep, shallow = depths[-1], depths[0]
    return judge(
        text, Claim("better", -tolerance), _arm(folder, "residual", deep), _arm(folder, "residual", shallow)
    )


def plain_at_chance(
    rows: Rows, folder: Path, min_depth: int, chance: float, net: str = "net", slack: float = NEAR_CHANCE
) -> Finding:
    """Every plain net of depth ≥ ``min_depth`` ends within ``slack`` of chance test accuracy (its outcomes
    against a constant arm scoring ``chance`` on every example)."""
    from dla_core.stats import read_arms

    text = f"plain {net}s of depth ≥ {min_depth} stay at chance ({chance:g} test accuracy, within {slack:g})"
    deep = [d for d in _depths(rows, "plain") if d >= min_depth]
    if not deep:
        return unchecked(text, f"no plain net of depth ≥ {min_depth} in the study")
    parts = []
    for d in deep:
        arm = _arm(folder, "plain", d)
        if not arm.runs or not all((p / "outcomes.npz").is_file() for p in arm.runs):
            parts.append(unchecked(text))
            continue
        (outcomes,) = read_arms(arm.runs)
        at_chance = outcomes.correct[:1] * 0.0 + chance  # (1, examples)
        parts.append(
            judge_outcomes(text, Claim("within", slack), outcomes.correct, at_chance, (arm.label, "chance"))
        )
    return every(text, parts)


#### Transfer and distillation: rows of one table ####


def _row_arm(folder: Path, row: Mapping[str, Any] | None, label: str) -> Arm:
    """A table row's arm: its outcomes file, or one per seed (relative to the command's run folder)."""
    where = (row or {}).get(OUTCOMES_KEY) or []
    return Arm(label, [Path(folder) / w for w in ([where] if isinstance(where, str) else where)])


def _best(rows: Rows, prefix: str) -> Mapping[str, Any] | None:
    """The row whose name starts with ``prefix`` with the best validation accuracy (test accuracy when there is
    none): chosen without looking at the test set it is then judged on, where the rows say how."""
    found = [
        r for r in rows if str(r.get("row", "")).startswith(prefix) and r.get("test_accuracy") is not None
    ]
    key = "val_accuracy" if all(r.get("val_accuracy") is not None for r in found) else "test_accuracy"
    return max(found, key=lambda r: r[key]) if found else None


def finetune_beats_features(rows: Rows, folder: Path) -> Finding:
    """The best fine-tuned row (by validation accuracy) beats a linear SVM on the frozen features."""
    text = "fine-tuning beats a linear classifier on the frozen source features"
    tuned = _best(rows, "finetune-")
    svm = next((r for r in rows if r.get("row") == "features + linear SVM"), None)
    if tuned is None or svm is None:
        return unchecked(text)
    return judge(
        text, Claim("better"), _row_arm(folder, tuned, tuned["row"]), _row_arm(folder, svm, "linear SVM")
    )


def transfer_keeps_up_with_scratch(
    rows: Rows, folder: Path, tolerance: float = TRANSFER_TOLERANCE
) -> Finding:
    """The best fine-tuned row is less than ``tolerance`` below the same architecture trained from scratch for the
    same epochs (on an easy target both may reach 100%: non-inferiority, not "better")."""
    text = f"transfer does not hurt: fine-tuning > the same net trained from scratch − {tolerance}"
    tuned, scratch = _best(rows, "finetune-"), _best(rows, "scratch-")
    if tuned is None or scratch is None:
        return unchecked(text)
    return judge(
        text,
        Claim("better", -tolerance),
        _row_arm(folder, tuned, tuned["row"]),
        _row_arm(folder, scratch, scratch["row"]),
    )


def _model(rows: Rows, name: str) -> Mapping[str, Any] | None:
    return next((r for r in rows if r.get("model") == name), None)


def distilled_beats_alone(rows: Rows, folder: Path) -> Finding:
    """The distilled student's test accuracy is above the same student's trained on labels alone."""
    text = "distillation helps: the distilled student beats the same student trained on labels alone"
    alone, distilled = _model(rows, "student, labels only"), _model(rows, "student, distilled")
    if alone is None or distilled is None:
        return unchecked(text)
    return judge(
        text,
        Claim("better"),
        _row_arm(folder, distilled, "distilled"),
        _row_arm(folder, alone, "labels only"),
    )


def teacher_beats_student(rows: Rows, folder: Path) -> Finding:
    """The teacher is better than the student trained alone (otherwise there is nothing to distil)."""
    teacher, alone = _model(rows, "teacher"), _model(rows, "student, labels only")
    if teacher is None or alone is None:
        return unchecked("the teacher knows more than the small student trained alone")
    ratio = teacher["parameters"] / max(alone["parameters"], 1)
    text = f"the teacher ({ratio:.0f}× the parameters) knows more than the small student trained alone"
    return judge(
        text, Claim("better"), _row_arm(folder, teacher, "teacher"), _row_arm(folder, alone, "student")
    )
