"""dla_core.stats by value: t intervals against scipy, the bootstrap against a slow per-replicate loop, P(A > B)
against the Mann-Whitney U, verdicts as an interval slides across a margin, outcomes.npz on disk."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from dla_core import stats
from dla_core.errors import DlaError
from dla_core.stats import (
    Claim,
    Comparison,
    Estimate,
    Verdict,
    bootstrap_difference,
    finding_line,
    mean_ci,
    probability_of_improvement,
    read_arms,
    read_outcomes,
    significant,
    verdict,
    write_outcomes,
)

#### Across seeds ####


def test_mean_ci_is_the_student_t_interval_of_scipy():
    x = np.array([0.81, 0.79, 0.84, 0.80, 0.86])
    est = mean_ci(x)
    sem = scipy.stats.sem(x)  # sample std (n - 1) / sqrt(n)
    low, high = scipy.stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sem)
    ci = scipy.stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert (est.mean, est.n, est.level) == (pytest.approx(x.mean()), 5, 0.95)
    assert est.std == pytest.approx(np.std(x, ddof=1), rel=1e-12)
    assert (est.low, est.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))
    assert (est.low, est.high) == (pytest.approx(ci.low, rel=1e-12), pytest.approx(ci.high, rel=1e-12))
    # another level: the 90% interval of scipy
    low90, high90 = scipy.stats.t.interval(0.90, 4, loc=x.mean(), scale=sem)
    assert mean_ci(x, level=0.90).low == pytest.approx(low90, rel=1e-12)
    assert mean_ci(x, level=0.90).high == pytest.approx(high90, rel=1e-12)


def test_mean_ci_by_hand():
    # 1, 2, 3: mean 2, s = 1, t(0.975, 2 dof) = 4.302653 -> 2 ± 4.302653 / sqrt(3) = 2 ± 2.484138
    est = mean_ci([1.0, 2.0, 3.0])
    assert (est.mean, est.std) == (2.0, 1.0)
    assert est.low == pytest.approx(2 - 2.484138, abs=1e-6)
    assert est.high == pytest.approx(2 + 2.484138, abs=1e-6)
    assert est.format() == "2.00 [-0.484, 4.48] (n=3)"
    # seeds that agree exactly: a zero-width interval, not a division by zero
    same = mean_ci([0.5, 0.5])
    assert (same.low, same.high, same.std) == (0.5, 0.5, 0.0)


def test_one_seed_has_no_interval_and_says_so():
    est = mean_ci([0.812])
    assert (est.mean, est.n, est.low, est.high) == (0.812, 1, -math.inf, math.inf)
    assert math.isnan(est.std) and not est.has_interval
    assert est.format() == "0.812 (n=1, no interval)"
    # no claim can be judged on it
    assert verdict(est, Claim("better", 0.0)) is Verdict.INCONCLUSIVE
    assert verdict(est, Claim("within", 0.05)) is Verdict.INCONCLUSIVE


def test_estimate_prints_three_significant_digits():
    assert Estimate(0.8123, 0.7811, 0.8434, 3, 0.01).format() == "0.812 [0.781, 0.843] (n=3)"
    assert str(Estimate(1.0, 0.99, 1.0, 5, 0.01)) == "1.00 [0.990, 1.00] (n=5)"
    assert [significant(v) for v in (21450.0, 1234.5, 12.0, 100.0, 0.0, 2.5e-5)] == [
        "21,450",
        "1,234",
        "12.0",
        "100",
        "0.00",
        "2.50e-05",
    ]
    assert [significant(v, sign=True) for v in (0.031, -0.05, 0.0, -0.0)] == [
        "+0.0310",
        "-0.0500",
        "0.00",
        "0.00",
    ]
    # rounding up to 10**digits: a whole number, not 1.00e+03
    assert (significant(999.7), significant(-999.7), significant(999.4)) == ("1,000", "-1,000", "999")
    assert (significant(float("inf")), significant(-float("inf")), significant(float("nan"))) == (
        "inf",
        "-inf",
        "nan",
    )


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]], [1.0, float("nan")], [float("inf"), 1.0]])
def test_mean_ci_refuses_what_has_no_mean(bad):
    with pytest.raises(ValueError):
        mean_ci(bad)
    with pytest.raises(ValueError):
        mean_ci([1.0, 2.0], level=95)


#### Two arms: the bootstrap ####


def slow_bootstrap(a, b, *, seed, resamples, level=0.95, paired=True):
    """The scheme of bootstrap_difference, one replicate at a time from the same four streams."""
    seeds_a, seeds_b, examples_a, examples_b = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    n = a.shape[1]
    differences, wins = [], []
    for _ in range(resamples):
        ea = examples_a.integers(0, n, size=n, dtype=np.int32)
        eb = ea if paired else examples_b.integers(0, n, size=n, dtype=np.int32)
        ra = a[np.ix_(seeds_a.integers(0, len(a), size=len(a)), ea)]  # resampled seeds × resampled examples
        rb = b[np.ix_(seeds_b.integers(0, len(b), size=len(b)), eb)]
        differences.append(ra.mean() - rb.mean())
        pairs = [(x > y) + 0.5 * (x == y) for x in ra.mean(axis=1) for y in rb.mean(axis=1)]
        wins.append(np.mean(pairs))
    tails = [(1 - level) / 2, (1 + level) / 2]
    return np.quantile(differences, tails), np.quantile(wins, tails)


def correctness(rng, p, shape):
    return (rng.random(shape) < p).astype(np.float64)


@pytest.mark.parametrize("paired", [True, False])
def test_bootstrap_equals_the_slow_loop_with_the_same_seed(paired, monkeypatch):
    rng = np.random.default_rng(3)
    a, b = correctness(rng, 0.7, (3, 9)), correctness(rng, 0.6, (2, 9))
    (low, high), (p_low, p_high) = slow_bootstrap(a, b, seed=11, resamples=300, paired=paired)
    fast = bootstrap_difference(a, b, seed=11, resamples=300, paired=paired)
    assert (fast.low, fast.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert (fast.improvement_low, fast.improvement_high) == (p_low, p_high)
    assert fast.difference == pytest.approx(a.mean() - b.mean())
    assert (fast.examples, fast.seeds, fast.resamples, fast.paired) == (9, (3, 2), 300, paired)
    # chunks of 2 replicates instead of one chunk of 300: the same numbers
    monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", 2 * 9)
    assert bootstrap_difference(a, b, seed=11, resamples=300, paired=paired) == fast


def test_bootstrap_is_stateless():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 50)), rng.normal(size=(3, 50))
    first = bootstrap_difference(a, b, seed=5, resamples=500)
    np.random.seed(123)  # global state plays no part
    assert bootstrap_difference(a, b, seed=5, resamples=500) == first
    assert bootstrap_difference(a, b, seed=6, resamples=500) != first


def test_bootstrap_covers_the_true_difference_about_95_percent_of_the_time():
    # y = arm effect + seed effect + example difficulty (shared by both arms) + noise; truth A - B = 0.3
    rng, datasets, covered = np.random.default_rng(2026), 200, 0
    for k in range(datasets):
        difficulty = rng.normal(0, 1, 40)
        a = 0.3 + rng.normal(0, 0.2, (4, 1)) + difficulty + rng.normal(0, 1, (4, 40))
        b = 0.0 + rng.normal(0, 0.2, (4, 1)) + difficulty + rng.normal(0, 1, (4, 40))
        c = bootstrap_difference(a, b, seed=k, resamples=400)
        covered += c.low < 0.3 < c.high
    assert 0.90 <= covered / datasets <= 0.99


def test_pairing_narrows_the_interval_when_the_arms_share_hard_examples():
    rng = np.random.default_rng(1)
    difficulty = rng.normal(0, 2, 300)  # what makes an example hard, for both arms alike
    a = 0.2 + difficulty + rng.normal(0, 0.5, (3, 300))
    b = difficulty + rng.normal(0, 0.5, (3, 300))
    paired = bootstrap_difference(a, b, seed=0, resamples=2000)
    unpaired = bootstrap_difference(a, b, seed=0, resamples=2000, paired=False)
    assert paired.difference == unpaired.difference
    assert paired.high - paired.low < 0.3 * (unpaired.high - unpaired.low)
    assert paired.low > 0  # paired, the 0.2 is seen; unpaired it drowns in the examples' spread
    assert unpaired.low < 0 < unpaired.high


def test_one_seed_per_arm_still_resamples_the_examples():
    rng = np.random.default_rng(4)
    a, b = correctness(rng, 0.9, (1, 400)), correctness(rng, 0.5, (1, 400))
    c = bootstrap_difference(a[0], b[0], seed=0, resamples=1000)  # 1-D: one seed
    assert c.seeds == (1, 1) and c.low < c.difference < c.high and c.low > 0.25
    assert (
        c.improvement == c.improvement_low == c.improvement_high == 1.0
    )  # one pair, A ahead in every replicate
    assert c.evidence == "400 test examples, 1 seed each"


@pytest.mark.parametrize(
    "a, b",
    [
        (np.ones((2, 5)), np.ones((2, 6))),
        (np.ones((2, 0)), np.ones((2, 0))),
        (np.full((2, 3), np.nan), np.ones((2, 3))),
    ],
)
def test_bootstrap_refuses_arms_it_cannot_compare(a, b):
    with pytest.raises(ValueError):
        bootstrap_difference(a, b)


#### Probability of improvement ####


def test_probability_of_improvement_is_mann_whitney_u_over_nm():
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 5, 6).astype(float), rng.integers(0, 5, 8).astype(float)  # with ties
    u = scipy.stats.mannwhitneyu(a, b).statistic  # U of a: pairs a_i > b_j, ties counting half
    assert probability_of_improvement(a, b) == pytest.approx(u / (6 * 8), abs=1e-12)
    # by hand: 1 beats 0.5; 2 beats 0.5 and ties 2 (a half); nothing beats 3 -> 2.5 of 6 pairs
    assert probability_of_improvement([1.0, 2.0], [0.5, 2.0, 3.0]) == pytest.approx(2.5 / 6)
    # (seeds, examples) outcomes: over each seed's mean on the test set
    outcomes_a, outcomes_b = correctness(rng, 0.6, (4, 30)), correctness(rng, 0.5, (3, 30))
    u = scipy.stats.mannwhitneyu(outcomes_a.mean(1), outcomes_b.mean(1)).statistic
    assert probability_of_improvement(outcomes_a, outcomes_b) == pytest.approx(u / 12, abs=1e-12)
    assert bootstrap_difference(outcomes_a, outcomes_b, resamples=10).improvement == pytest.approx(u / 12)


#### Verdicts ####


def interval(low, high):
    return Estimate(mean=(low + high) / 2, low=low, high=high, n=3, std=0.0)


def slide(claim, centres, half=0.125):
    """Verdicts of intervals centre ± half (dyadic numbers: the edges are exact)."""
    return [verdict(interval(c - half, c + half), claim) for c in centres]


YES, MAYBE, NO = Verdict.SUPPORTED, Verdict.INCONCLUSIVE, Verdict.CONTRADICTED


def test_better_by_a_margin_moves_from_supported_through_inconclusive_to_contradicted():
    claim = Claim("better", 0.25)  # A - B > 0.25
    # centre 0.5: [0.375, 0.625] ✓; 0.375: low = 0.25 touches the margin ～; 0.25 straddles ～;
    # 0.125: high = 0.25, no value above the margin ✗; 0: ✗
    centres = [0.5, 0.4375, 0.375, 0.25, 0.1875, 0.125, 0.0]
    assert slide(claim, centres) == [YES, YES, MAYBE, MAYBE, MAYBE, NO, NO]
    # margin 0, "A better than B": a dead tie (0.9889 vs 0.9889 in every replicate) is not better
    assert verdict(interval(0.0, 0.0), Claim("better")) is NO
    assert verdict(interval(0.001, 0.002), Claim("better")) is YES
    # a negative margin: non-inferiority, "A at most 0.25 below B"
    assert slide(Claim("better", -0.25), [c - 0.5 for c in centres]) == [
        YES,
        YES,
        MAYBE,
        MAYBE,
        MAYBE,
        NO,
        NO,
    ]


def test_within_a_margin_is_equivalence_tost_style():
    claim = Claim("within", 0.25)  # -0.25 < A - B < 0.25
    # inside (-0.25, 0.25) ✓; touching an edge from inside (high = 0.25) or straddling it ～;
    # wholly outside, touching from outside included (low = 0.25) ✗; the same mirrored below zero
    centres = [0.0, 0.0625, 0.125, 0.25, 0.3125, 0.375, 0.5]
    assert slide(claim, centres) == [YES, YES, MAYBE, MAYBE, MAYBE, NO, NO]
    assert slide(claim, [-c for c in centres]) == [YES, YES, MAYBE, MAYBE, MAYBE, NO, NO]
    # an interval wider than the band on both sides straddles it: inconclusive, not contradicted
    assert verdict(interval(-1.0, 1.0), claim) is MAYBE


def test_verdicts_carry_their_marks_and_words():
    assert [(v.mark, v.word, str(v)) for v in Verdict] == [
        ("✓", "supported", "✓ supported"),
        ("✗", "contradicted", "✗ contradicted"),
        ("～", "inconclusive", "～ inconclusive"),
    ]


def test_claims_describe_themselves_and_refuse_nonsense():
    assert (
        Claim("better", 0.05).describe("residual", "plain") == "residual better than plain by more than 0.05"
    )
    assert Claim("better").describe() == "A better than B"
    # non-inferiority and equivalence in plain words, each margin as declared (not 0.0200)
    assert Claim("better", -0.02).describe("fine-tuned", "scratch") == "fine-tuned at most 0.02 below scratch"
    assert Claim("within", 0.05).describe("LoRA", "full") == "LoRA and full less than 0.05 apart"
    assert Claim("within", 1e-9).describe() == "A and B less than 1e-09 apart"
    for kind, margin in [("within", 0.0), ("within", -0.1), ("worse", 0.1), ("better", math.nan)]:
        with pytest.raises(ValueError):
            Claim(kind, margin)


def test_finding_line_gives_verdict_difference_interval_examples_and_seeds():
    c = Comparison(0.031, -0.002, 0.064, 0.8, 0.5, 1.0, examples=1360, seeds=(3, 3))
    assert finding_line(Claim("within", 0.05), c, "LoRA", "full fine-tuning") == (
        "～ inconclusive: LoRA and full fine-tuning less than 0.05 apart: difference +0.0310, 95% CI [-0.00200, +0.0640], "
        "1,360 test examples, 3 seeds each"
    )
    uneven = Comparison(0.2, 0.1, 0.3, 1.0, 1.0, 1.0, examples=60, seeds=(3, 1))
    assert finding_line(Claim("better"), uneven) == (
        "✓ supported: A better than B: difference +0.200, 95% CI [+0.100, +0.300], 60 test examples, 3 and 1 seeds"
    )
    assert str(uneven) == "+0.200 [+0.100, +0.300] (95% CI; 60 test examples, 3 and 1 seeds)"


#### Outcomes in a run folder ####


def test_outcomes_round_trip(tmp_path):
    correct = np.array([[True, False, True], [True, True, False]])
    scores, labels = np.array([[0.9, 0.2, 0.7], [0.8, 0.6, 0.1]]), np.array([3, 1, 4])
    path = write_outcomes(tmp_path, correct, scores=scores, labels=labels)
    assert path == tmp_path / "outcomes.npz" and sorted(os.listdir(tmp_path)) == ["outcomes.npz"]
    assert path.stat().st_mode & 0o777 == 0o644
    back = read_outcomes(tmp_path)
    assert back.correct.dtype == np.bool_ and back.examples == 3
    for got, want in [(back.correct, correct), (back.scores, scores), (back.labels, labels)]:
        np.testing.assert_array_equal(got, want)
    only = write_outcomes(tmp_path / "one", np.array([True, False]))
    assert read_outcomes(only.parent).scores is None and read_outcomes(only.parent).labels is None


def test_a_failed_write_keeps_the_old_outcomes_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    write_outcomes(tmp_path, np.array([True, True]))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(OSError):
        write_outcomes(tmp_path, np.array([False, False]))
    assert sorted(os.listdir(tmp_path)) == ["outcomes.npz"]
    monkeypatch.undo()
    np.testing.assert_array_equal(read_outcomes(tmp_path).correct, [True, True])


def test_only_the_main_process_writes_outcomes(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    write_outcomes(tmp_path / "run", np.array([True]))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "correct, extra",
    [
        (np.array([1, 0]), {}),  # not bool
        (np.array([True, False]), {"scores": np.array([0.1])}),
        (np.array([True, False]), {"scores": np.array([1, 2])}),  # not floats
        (np.array([True, False]), {"labels": np.array([1, 2, 3])}),
    ],
)
def test_write_outcomes_refuses_mismatched_arrays_and_writes_nothing(tmp_path, correct, extra):
    with pytest.raises(ValueError):
        write_outcomes(tmp_path / "run", correct, **extra)
    assert not (tmp_path / "run").exists()


def test_missing_or_damaged_outcomes_are_one_error_naming_the_file(tmp_path):
    with pytest.raises(DlaError, match=r"has no outcomes\.npz"):
        read_outcomes(tmp_path)
    (tmp_path / "outcomes.npz").write_bytes(b"not a zip")
    with pytest.raises(DlaError, match=r"outcomes\.npz is damaged"):
        read_outcomes(tmp_path)
    np.savez(tmp_path / "outcomes.npz", scores=np.zeros(3))  # no correct
    with pytest.raises(DlaError, match=r"outcomes\.npz is damaged"):
        read_outcomes(tmp_path)


def test_read_arms_stacks_each_arms_seeds_and_checks_they_share_the_test_set(tmp_path):
    labels = np.array([0, 1, 2])
    write_outcomes(
        tmp_path / "a0", np.array([True, True, False]), scores=np.array([0.9, 0.8, 0.1]), labels=labels
    )
    write_outcomes(tmp_path / "a12", np.array([[True, False, False], [False, True, True]]), labels=labels)
    write_outcomes(tmp_path / "b0", np.array([False, True, False]), labels=labels)
    write_outcomes(tmp_path / "b1", np.array([True, True, True]))  # no labels saved: nothing to check against
    a, b = read_arms([tmp_path / "a0", tmp_path / "a12"], [tmp_path / "b0", tmp_path / "b1"])
    np.testing.assert_array_equal(a.correct, [[1, 1, 0], [1, 0, 0], [0, 1, 1]])
    np.testing.assert_array_equal(b.correct, [[0, 1, 0], [1, 1, 1]])
    assert a.scores is None  # not every run of the arm saved scores
    np.testing.assert_array_equal(b.labels, labels)
    comparison = bootstrap_difference(a.correct, b.correct, resamples=10)
    assert comparison.seeds == (3, 2) and comparison.examples == 3
    # another test set: other labels, or another size, in either arm
    write_outcomes(tmp_path / "other", np.array([True, True, True]), labels=np.array([0, 1, 3]))
    write_outcomes(tmp_path / "short", np.array([True, True]))
    with pytest.raises(
        DlaError,
        match=r"other and .*a0 were scored on different test sets \(3 and 3 examples, other labels\)",
    ):
        read_arms([tmp_path / "a0"], [tmp_path / "b0", tmp_path / "other"])
    with pytest.raises(DlaError, match=r"\(2 and 3 examples\)"):
        read_arms([tmp_path / "a0", tmp_path / "short"])


def test_importing_stats_loads_neither_torch_nor_scipy_stats():
    code = (
        "import sys, dla_core.stats; print(sorted(m for m in ('torch', 'scipy.stats') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
