from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from lab4_ood.metrics import (
    NonFiniteScoreError,
    auroc,
    check_finite,
    fpr_at_tpr,
    ood_metrics,
    pr_curve,
    roc_curve,
)


def sk_numbers(s_id, s_ood):
    y = np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))]
    s = np.r_[s_id, s_ood]
    fpr, tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    return {
        "auroc": roc_auc_score(y, s),
        "aupr_in": average_precision_score(y, s),
        "aupr_out": average_precision_score(1 - y, -s),
        "fpr95": fpr[np.argmax(tpr >= 0.95)],
    }


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_metrics_match_scikit_learn(seed, ties):
    rng = np.random.default_rng(seed)
    s_id, s_ood = rng.normal(1.0, 1.0, 137 + seed), rng.normal(0.0, 1.3, 91)
    if ties:  # coarse scores: many ties across and within the two sets
        s_id, s_ood = np.round(s_id), np.round(s_ood)
    ours, theirs = ood_metrics(s_id, s_ood), sk_numbers(s_id, s_ood)
    for key in theirs:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-12), key


def test_curves_match_scikit_learn():
    rng = np.random.default_rng(7)
    s_id, s_ood = np.round(rng.normal(1, 1, 60), 1), np.round(rng.normal(0, 1, 40), 1)
    y, s = np.r_[np.ones(60), np.zeros(40)], np.r_[s_id, s_ood]
    fpr, tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    ours_fpr, ours_tpr = roc_curve(s_id, s_ood)
    np.testing.assert_allclose(ours_fpr, fpr)
    np.testing.assert_allclose(ours_tpr, tpr)
    precision, recall, _ = precision_recall_curve(y, s)
    ours_recall, ours_precision = pr_curve(s_id, s_ood)
    # scikit-learn lists thresholds low → high and appends the (recall 0, precision 1) end point
    np.testing.assert_allclose(ours_recall, recall[:-1][::-1])
    np.testing.assert_allclose(ours_precision, precision[:-1][::-1])


def test_hand_examples():
    perfect = ood_metrics([5, 6, 7], [1, 2])
    assert perfect == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}
    reversed_ = ood_metrics([1, 2], [5, 6, 7])
    assert reversed_["auroc"] == 0.0 and reversed_["fpr95"] == 1.0
    assert auroc([1, 1], [1, 1]) == 0.5  # all tied: chance
    # 20 ID scores 1..20: keeping 95% (19 images) needs the threshold at 2, which accepts OOD 3 and 10, not 1
    s_id = np.arange(1, 21)
    assert fpr_at_tpr(s_id, np.array([0.5, 1.5, 3.0, 10.0])) == 0.5
    assert fpr_at_tpr(s_id, np.array([1.0, 25.0])) == 0.5  # a tie with the threshold counts as accepted


def test_empty_sets_are_refused():
    with pytest.raises(ValueError):
        ood_metrics([], [1.0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_refused(bad):
    """NaN scores (ODIN at T = 0) used to sort into AUPR 1.0 / FPR95 0.0; every metric must refuse them."""
    good = np.array([0.1, 0.5, 0.9])
    for s_id, s_ood in ((np.array([0.2, bad, 0.8]), good), (good, np.array([bad, bad]))):
        with pytest.raises(NonFiniteScoreError, match="NaN or infinite"):
            ood_metrics(s_id, s_ood)
        for f in (auroc, fpr_at_tpr, roc_curve, pr_curve):
            with pytest.raises(ValueError):
                f(s_id, s_ood)


def test_curves_when_the_lowest_score_is_in_distribution():
    """The last threshold of the curves holds an ID image: TPR and recall must still end at exactly 1."""
    s_id, s_ood = np.array([0.9, 0.4, 0.1, 0.1]), np.array([0.8, 0.3, 0.1, 0.5])
    y, s = np.r_[np.ones(4), np.zeros(4)], np.r_[s_id, s_ood]
    fpr, tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    ours_fpr, ours_tpr = roc_curve(s_id, s_ood)
    np.testing.assert_allclose(ours_fpr, fpr)
    np.testing.assert_allclose(ours_tpr, tpr)
    assert ours_tpr[-1] == 1.0 and ours_fpr[-1] == 1.0
    precision, recall, _ = precision_recall_curve(y, s)
    ours_recall, ours_precision = pr_curve(s_id, s_ood)
    np.testing.assert_allclose(ours_recall, recall[:-1][::-1])
    np.testing.assert_allclose(ours_precision, precision[:-1][::-1])
    # the lowest score alone is ID (no tie with an OOD score): thresholds 0.9 0.8 0.5 0.4 0.3 0.1(ID) 0.05(ID)
    s_id2 = np.array([0.9, 0.4, 0.05])
    s_ood2 = np.array([0.8, 0.3, 0.5, 0.1])
    np.testing.assert_allclose(roc_curve(s_id2, s_ood2)[1], [0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(pr_curve(s_id2, s_ood2)[0], [1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 1])
    assert ood_metrics(s_id2, s_ood2) == pytest.approx(sk_numbers(s_id2, s_ood2), abs=1e-12)


def test_one_ood_score_is_enough_and_none_is_refused():
    # one OOD score between the two ID scores: AUROC 1/2; TPR 95% needs both ID accepted, so the OOD one is too
    assert ood_metrics([1.0, 3.0], [2.0]) == pytest.approx(sk_numbers([1.0, 3.0], [2.0]), abs=1e-12)
    assert ood_metrics([1.0, 3.0], [2.0])["fpr95"] == 1.0
    assert ood_metrics([3.0], [2.0]) == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}
    for s_id, s_ood in (([], [1.0]), ([1.0], []), ([], [])):
        with pytest.raises(ValueError, match=r"^need at least one ID and one OOD score$"):
            ood_metrics(s_id, s_ood)


def test_fpr_at_tpr_defaults_to_95_percent():
    s_id, s_ood = np.arange(1, 21), np.array([0.5, 1.5, 3.0, 10.0])
    assert fpr_at_tpr(s_id, s_ood) == fpr_at_tpr(s_id, s_ood, 0.95) == 0.5
    assert fpr_at_tpr(s_id, s_ood, 0.5) == 0.0  # 10 of 20 ID accepted at threshold 11: no OOD score passes


def test_unsigned_integer_scores_give_the_float_numbers():
    """uint8 scores (a quantised detector): AUPR-out negates them, which must not wrap around at 0."""
    s_id, s_ood = np.array([5, 6, 7, 2], dtype=np.uint8), np.array([1, 2, 6], dtype=np.uint8)
    expected = sk_numbers(s_id.astype(float), s_ood.astype(float))
    assert ood_metrics(s_id, s_ood) == pytest.approx(expected, abs=1e-12)


def test_non_finite_error_says_how_many_of_what():
    with pytest.raises(NonFiniteScoreError, match=r"^2 of 3 scores are NaN or infinite; no AUROC/AUPR/FPR"):
        check_finite(np.array([np.nan, 1.0, np.inf]))
    with pytest.raises(
        NonFiniteScoreError,
        match=r"^1 of 2 OOD scores are NaN or infinite; .*\(an ODIN temperature of 0\? a diverged model\?\)$",
    ):
        ood_metrics([1.0], [np.nan, 0.0])
    with pytest.raises(NonFiniteScoreError, match=r"^1 of 1 ID scores are NaN"):
        ood_metrics([-np.inf], [0.0])
    check_finite(np.array([0.0, -1e300]))  # finite: no error
