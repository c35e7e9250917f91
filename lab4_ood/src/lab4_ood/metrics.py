"""OOD detection metrics, in one place.

Convention (the ODIN paper's): every detector score is **higher = more in-distribution**, and the
**in-distribution images are the positive class**.

    AUROC      area under ROC (threshold-free; the same whichever class is called positive)
    AUPR-in    average precision with ID as positive, ranked by score
    AUPR-out   average precision with OOD as positive, ranked by -score
    FPR@95TPR  fraction of OOD images accepted as ID at the threshold that accepts 95% of the ID images
               (ID-positive TPR, as in the ODIN paper; pytorch-ood / OpenOOD make OOD the positive class,
               where "FPR at 95% TPR" counts ID images rejected when 95% of OOD are caught: another number)

AP follows scikit-learn's ``average_precision_score`` (step-wise, no interpolation) and the curves match
``roc_curve(drop_intermediate=False)`` / ``precision_recall_curve``; tests check both.

Non-finite scores (NaN, ±inf: an ODIN temperature of 0, a diverged model) are refused with
``NonFiniteScoreError``: sorted NaNs would otherwise make up a perfect-looking AUPR / FPR95.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from dla_core.errors import DlaError


class NonFiniteScoreError(DlaError, ValueError):
    """Scores with NaN or ±inf: no metric of them means anything."""


def check_finite(scores: np.ndarray, what: str = "scores") -> None:
    """Raise ``NonFiniteScoreError`` naming how many of ``scores`` are NaN or ±inf."""
    bad = int(np.count_nonzero(~np.isfinite(np.asarray(scores, dtype=np.float64))))
    if bad:
        raise NonFiniteScoreError(
            f"{bad} of {len(scores)} {what} are NaN or infinite; no AUROC/AUPR/FPR of them means anything "
            "(an ODIN temperature of 0? a diverged model?)"
        )


def _labels_scores(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    id_scores, ood_scores = np.asarray(id_scores, dtype=np.float64), np.asarray(ood_scores, dtype=np.float64)
    check_finite(id_scores, "ID scores")
    check_finite(ood_scores, "OOD scores")
    s = np.concatenate([id_scores, ood_scores])
    y = np.concatenate([np.ones(len(id_scores)), np.zeros(len(ood_scores))])
    return y, s


def _cumulative(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True / false positives at each distinct threshold, highest threshold first."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each run of equal scores
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    return tps, fps, s[last]


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """P(score of a random ID image > score of a random OOD image), ties counted half (Mann-Whitney U)."""
    y, s = _labels_scores(id_scores, ood_scores)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) with ID positive, from the highest threshold down, starting at (0, 0)."""
    y, s = _labels_scores(id_scores, ood_scores)
    tps, fps, _ = _cumulative(y, s)
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def average_precision(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """Σ (Rₙ − Rₙ₋₁) Pₙ over the distinct thresholds (scikit-learn's definition)."""
    y, s = _labels_scores(pos_scores, neg_scores)
    tps, fps, _ = _cumulative(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def pr_curve(pos_scores: np.ndarray, neg_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) from the highest threshold down."""
    y, s = _labels_scores(pos_scores, neg_scores)
    tps, fps, _ = _cumulative(y, s)
    return tps / tps[-1], tps / (tps + fps)


def fpr_at_tpr(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """FPR at the highest threshold whose TPR (fraction of ID accepted) reaches ``tpr``."""
    fpr_curve, tpr_curve = roc_curve(id_scores, ood_scores)
    return float(fpr_curve[np.searchsorted(tpr_curve, tpr - 1e-12, side="left")])


def ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """All four numbers for one ID / OOD pair (scores: higher = more in-distribution)."""
    id_scores, ood_scores = np.asarray(id_scores, np.float64), np.asarray(ood_scores, np.float64)
    if len(id_scores) == 0 or len(ood_scores) == 0:
        raise ValueError("need at least one ID and one OOD score")
    return {
        "auroc": auroc(id_scores, ood_scores),
        "aupr_in": average_precision(id_scores, ood_scores),
        "aupr_out": average_precision(-ood_scores, -id_scores),
        "fpr95": fpr_at_tpr(id_scores, ood_scores, 0.95),
    }
