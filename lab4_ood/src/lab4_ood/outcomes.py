"""lab4's per-example outcomes in its run folders, for the findings' paired comparisons (``dla_core.stats``).

    lab4 train     outcomes.npz                 the classifier's correctness on each test image (``train_into``)
    lab4 detect    outcomes.npz                 the classifier's correctness on each ID test image
                   outcomes-<detector>.npz      scores of the ID test images, then of each OOD set's (``sets``:
                                                ``labels`` 0 = ID, i = the i-th OOD set); correct = accepted as ID
                                                exactly when ID, at the threshold keeping 95% of ID (FPR95's)
    lab4 attack    outcomes.npz                 clean correctness; outcomes-eps<ε>.npz: robust correctness at ε
                                                (every method of the run must fail on an image to count it lost)

Scores stay float32: rounded to float16 they would tie where the detector does not, and change its AUROC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SETS = "outcome_sets"  # lab4 detect's metrics.json key: [ID spec, OOD specs…], the labels' order


def eps_name(eps: float) -> str:
    """The outcomes file name of an attack at ``eps``: ``eps0.1`` → outcomes-eps0.1.npz."""
    return f"eps{eps:g}"


def write_detector(run_dir: Path, method: str, s_id: Any, s_ood: Mapping[str, Any]) -> Path:
    """outcomes-<method>.npz of a detector's ID and OOD test scores (numpy, higher = more ID)."""
    import numpy as np

    from dla_core.stats import write_outcomes

    scores = np.concatenate([np.asarray(s_id), *(np.asarray(s) for s in s_ood.values())]).astype(np.float32)
    labels = np.concatenate(
        [np.full(len(s), i, dtype=np.int8) for i, s in enumerate([s_id, *s_ood.values()])]
    )
    threshold = np.quantile(np.asarray(s_id, dtype=np.float64), 0.05)  # 95% of ID at or above it
    correct = (scores >= threshold) == (labels == 0)
    return write_outcomes(run_dir, correct, scores=scores, labels=labels, name=method)


def auroc_arm(run_dir: Path, method: str, sets: Sequence[str], ood: str) -> Any:
    """A detector's per-example AUROC pseudo-outcomes (``stats.auroc_outcomes``) on the ID test set against
    ``ood``, from a detect run folder; None when the folder lacks them."""
    from dla_core.errors import DlaError
    from dla_core.stats import auroc_outcomes, read_outcomes

    if ood not in sets[1:]:
        return None
    try:
        kept = read_outcomes(run_dir, method)
    except DlaError:
        return None
    if kept.scores is None or kept.labels is None:
        return None
    i = list(sets).index(ood)
    return auroc_outcomes(kept.scores[kept.labels == 0], kept.scores[kept.labels == i])
