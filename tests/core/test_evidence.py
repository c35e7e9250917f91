"""Findings judged by intervals (dla_core.evidence): a finding moves through ✓ / ～ / ✗ as its arms' outcomes move
its interval across the claim's margin; the report opens with a Conclusion whose counts match its lines."""

from __future__ import annotations

import re

import numpy as np
import pytest

from dla_core.evidence import Arm, every, judge, judge_exact, judge_outcomes, judge_seeds, unchecked
from dla_core.report import Section, conclusion, write_report
from dla_core.stats import Claim, Verdict, auroc_outcomes, write_outcomes

N = 400  # test examples


def correct(accuracy: float, seed: int = 0) -> np.ndarray:
    """N outcomes of which exactly round(accuracy · N) are right, at random places."""
    hits = np.zeros(N, dtype=bool)
    hits[np.random.default_rng(seed).permutation(N)[: round(accuracy * N)]] = True
    return hits


def arm(tmp_path, label: str, accuracies: list[float], base: np.ndarray | None = None) -> Arm:
    """An arm of one run folder per seed; ``base``: start from these outcomes and flip the first wrong ones
    right (a paired improvement) until the accuracy is reached."""
    runs = []
    for s, a in enumerate(accuracies):
        hits = correct(a, s) if base is None else base.copy()
        if base is not None:
            wrong = np.flatnonzero(~hits)
            hits[wrong[: max(0, round(a * N) - int(hits.sum()))]] = True
        run = tmp_path / f"{label}-s{s}"
        run.mkdir(parents=True)
        write_outcomes(run, hits)
        runs.append(run)
    return Arm(label, runs)


@pytest.mark.parametrize(
    ("gain", "mark"),
    [
        (0.10, "✓"),  # B's wrong examples: 40 of them turned right, CI well above 0
        (0.005, "～"),  # 2 examples: the CI straddles 0
        (0.0, "✗"),  # the same outcomes: CI [0, 0], nothing above the margin
    ],
)
def test_better_moves_through_the_three_verdicts(tmp_path, gain, mark):
    base = correct(0.7)
    b = arm(tmp_path, "B", [0.7], base)
    a = arm(tmp_path, "A", [0.7 + gain], base)
    f = judge("A helps", Claim("better"), a, b)
    assert f.mark == mark, f.evidence
    assert f.evidence.startswith(f.verdict.word + ": A better than B: difference")
    assert f"{N} test examples, 1 seed each" in f.evidence and "95% CI [" in f.evidence
    assert f.ok is {"✓": True, "✗": False, "～": None}[mark]


def test_the_margin_and_the_side_decide(tmp_path):
    base = correct(0.5)
    a, b = arm(tmp_path, "A", [0.6], base), arm(tmp_path, "B", [0.5], base)
    assert judge("x", Claim("better", 0.0), a, b).verdict is Verdict.SUPPORTED
    assert judge("x", Claim("better", 0.2), a, b).verdict is Verdict.CONTRADICTED  # +0.1 is not > 0.2
    assert judge("x", Claim("better", 0.0), b, a).verdict is Verdict.CONTRADICTED  # the other arm first
    assert judge("x", Claim("better", -0.2), b, a).verdict is Verdict.SUPPORTED  # at most 0.2 below
    assert judge("x", Claim("within", 0.3), a, b).verdict is Verdict.SUPPORTED
    assert judge("x", Claim("within", 0.05), a, b).verdict is Verdict.CONTRADICTED
    assert judge("x", Claim("within", 0.1), a, b).verdict is Verdict.INCONCLUSIVE  # +0.1 sits on the edge


def test_seeds_are_stacked_and_counted(tmp_path):
    a = arm(tmp_path, "A", [0.9, 0.88, 0.91])
    b = arm(tmp_path, "B", [0.6, 0.62])
    f = judge("x", Claim("better", 0.1), a, b)
    assert f.verdict is Verdict.SUPPORTED and "3 and 2 seeds" in f.evidence


def test_a_missing_or_foreign_arm_is_unchecked_without_machine_paths(tmp_path):
    a = arm(tmp_path, "A", [0.9])
    f = judge("x", Claim("better"), a, Arm("B", [tmp_path / "nowhere"]))
    assert f.mark == "–" and f.verdict is None and str(tmp_path) not in f.evidence
    other = tmp_path / "other"
    other.mkdir()
    write_outcomes(other, np.ones(N + 1, dtype=bool))
    f = judge("x", Claim("better"), a, Arm("B", [other]))
    assert f.mark == "–" and "different examples" in f.evidence
    assert judge("x", Claim("better"), a, Arm("B", [])).evidence == "not run"


def test_outcome_files_by_name_and_by_path(tmp_path):
    write_outcomes(tmp_path, correct(0.9), name="svm")
    write_outcomes(tmp_path, correct(0.5), name="knn")
    by_name = judge("x", Claim("better"), Arm("svm", [tmp_path], "svm"), Arm("knn", [tmp_path], "knn"))
    by_path = judge(
        "x",
        Claim("better"),
        Arm("svm", [tmp_path / "outcomes-svm.npz"]),
        Arm("knn", [tmp_path / "outcomes-knn.npz"]),
    )
    assert by_name.verdict is by_path.verdict is Verdict.SUPPORTED and by_name.evidence == by_path.evidence


def test_seed_level_numbers_use_the_seeds_interval_and_say_so():
    text, labels = "shallow trains better", ("shallow", "deep")
    clear = judge_seeds(
        text, Claim("better"), [-0.1, -0.12, -0.11], [-2.3, -2.2, -2.31], labels, "train loss"
    )
    assert clear.verdict is Verdict.SUPPORTED
    assert "3 seeds, paired by seed" in clear.evidence and "not per test example" in clear.evidence
    noisy = judge_seeds(text, Claim("better"), [-0.1, -2.0, -0.2], [-0.3, -0.1, -2.2], labels, "train loss")
    assert noisy.verdict is Verdict.INCONCLUSIVE
    wrong = judge_seeds(
        text, Claim("better"), [-2.3, -2.2, -2.31], [-0.1, -0.12, -0.11], labels, "train loss"
    )
    assert wrong.verdict is Verdict.CONTRADICTED
    one = judge_seeds(text, Claim("better"), [-0.1], [-2.3], labels, "train loss")
    assert one.verdict is Verdict.INCONCLUSIVE and "no interval (one seed)" in one.evidence
    welch = judge_seeds(text, Claim("better"), [-0.1, -0.12, -0.11], [-2.3, -2.2], labels, "train loss")
    assert welch.verdict is Verdict.SUPPORTED and "Welch" in welch.evidence


def test_exact_numbers_and_every():
    assert judge_exact("x", Claim("better"), 0.03, ("a", "b"), "counts").verdict is Verdict.SUPPORTED
    assert judge_exact("x", Claim("better"), -0.03, ("a", "b"), "counts").verdict is Verdict.CONTRADICTED
    yes = judge_exact("x", Claim("better"), 0.03, ("a", "b"), "counts")
    no = judge_exact("x", Claim("better"), -0.03, ("a", "b"), "counts")
    maybe = judge_outcomes("x", Claim("better"), correct(0.5), correct(0.5, 1), ("a", "b"))
    assert maybe.verdict is Verdict.INCONCLUSIVE
    assert every("all", [yes, yes]).verdict is Verdict.SUPPORTED
    assert every("all", [yes, maybe]).verdict is Verdict.INCONCLUSIVE
    assert every("all", [yes, maybe, no]).verdict is Verdict.CONTRADICTED
    assert every("all", [yes, unchecked("x")]).verdict is Verdict.INCONCLUSIVE  # one part unknown
    assert every("all", [unchecked("x")]).mark == "–"
    assert "3 parts: 1 supported, 1 contradicted, 1 inconclusive" in every("all", [yes, maybe, no]).evidence


def test_auroc_outcomes_average_to_the_auroc_and_compare_detectors():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    pos, neg = np.round(rng.normal(1, 1, 60), 1), np.round(rng.normal(0, 1, 90), 1)  # ties included
    o = auroc_outcomes(pos, neg)
    assert o.shape == (150,)
    auroc = roc_auc_score(np.r_[np.ones(60), np.zeros(90)], np.r_[pos, neg])
    assert o.mean() == pytest.approx(auroc, abs=1e-12)
    # the variance of their mean is DeLong's: Var(V+)/n+ + Var(V-)/n-
    v_pos = (o[:60] - auroc) * 60 / 150 + auroc
    v_neg = (o[60:] - auroc) * 90 / 150 + auroc
    delong = v_pos.var(ddof=1) / 60 + v_neg.var(ddof=1) / 90
    assert o.var(ddof=0) / 150 == pytest.approx(delong, rel=0.05)
    better = auroc_outcomes(pos + 1, neg)
    assert judge_outcomes("x", Claim("better"), better, o, ("sharp", "blunt")).verdict is Verdict.SUPPORTED


def test_conclusion_counts_match_the_lines(tmp_path):
    yes = judge_exact("the first holds", Claim("better"), 0.03, ("a", "b"), "counts")
    no = judge_exact("the second fails", Claim("better"), -0.03, ("a", "b"), "counts")
    maybe = judge_outcomes("the third is open", Claim("better"), correct(0.5), correct(0.5, 1), ("a", "b"))
    findings = [yes, no, maybe, maybe, unchecked("the fifth did not run")]
    head, *sentences = conclusion(findings)
    assert head == "5 findings: 1 ✓ supported, 1 ✗ contradicted, 2 ～ inconclusive, 1 – not checked."
    assert sentences[0] == "✓ The first holds: supported." and sentences[-1].startswith("– The fifth")
    md, _ = write_report(tmp_path, "t", [Section("s", findings=findings)])
    text = md.read_text()
    assert text.index("## Conclusion") < text.index("## s")
    summary = text.split("## Conclusion", 1)[1].split("\n## ", 1)[0]
    lines = re.findall(r"^- ([✓✗～–]) ", text.split("\n## s", 1)[1], flags=re.M)
    counted = {m: int(n) for n, m in re.findall(r"(\d+) ([✓✗～–])", summary.splitlines()[2])}
    assert counted == {m: lines.count(m) for m in set(lines)}
    assert "～ The third is open: inconclusive." in summary


def test_seeds_of_unequal_counts_get_welchs_interval_as_scipy_computes_it():
    """Arms with different seed counts are not paired: the interval is Welch's, equal to scipy's by value."""
    from scipy.stats import ttest_ind

    a, b = [0.91, 0.88, 0.95, 0.90], [0.80, 0.86, 0.79]
    found = judge_seeds("A beats B", Claim("better"), a, b, ("A", "B"), "final accuracy")
    ci = ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    low, high = (float(x) for x in re.search(r"95% CI \[([-+\d.e]+), ([-+\d.e]+)\]", found.evidence).groups())
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=5e-4)  # 3 significant digits shown
    assert "4 and 3 seeds, Welch" in found.evidence and found.verdict is Verdict.SUPPORTED
    # with a margin above the interval's low end the same numbers are inconclusive
    assert judge_seeds("t", Claim("better", 0.05), a, b, ("A", "B"), "acc").verdict is Verdict.INCONCLUSIVE
    # one arm of one seed: no interval, so no verdict either way
    lone = judge_seeds("t", Claim("better"), a, [0.5], ("A", "B"), "acc")
    assert lone.verdict is Verdict.INCONCLUSIVE and "no interval" in lone.evidence


def test_the_inconclusive_mark_renders_without_a_cjk_font_and_stays_in_the_text(tmp_path):
    """～ (U+FF5E) is only in CJK fonts: the page draws an ASCII ~ for it and keeps the character itself, hidden
    from sight but in the text (copied, searched). The Markdown is untouched."""
    maybe = judge_outcomes("the third is open", Claim("better"), correct(0.5), correct(0.5, 1), ("a", "b"))
    md, page = write_report(tmp_path, "t", [Section("s", findings=[maybe])])
    html_text = page.read_text()
    body = html_text.split("<body>", 1)[1]
    hidden = '<span class="inconclusive"><span>～</span></span>'
    assert body.count("～") == body.count(hidden) >= 3  # tally, Conclusion sentence, finding line
    css = html_text.split("<style>", 1)[1].split("</style>", 1)[0]
    assert re.search(r'\.inconclusive::before \{ content: "~";', css)  # drawn in ASCII, in every font
    assert re.search(r"\.inconclusive > span \{[^}]*position: absolute;[^}]*clip-path: inset\(50%\)", css)
    text = re.sub(r"<[^>]+>", "", body)
    assert "～ The third is open: inconclusive." in text and "1 ～ inconclusive" in text
    assert "～ The third is open: inconclusive." in md.read_text() and 'inconclusive"' not in md.read_text()


def test_the_conclusion_is_built_once_for_both_renderings(tmp_path, monkeypatch):
    from dla_core import report

    calls = []
    original = report.conclusion
    monkeypatch.setattr(report, "conclusion", lambda f: calls.append(1) or original(f))
    yes = judge_exact("the first holds", Claim("better"), 0.03, ("a", "b"), "counts")
    md, page = write_report(tmp_path, "t", [Section("s", findings=[yes])])
    assert len(calls) == 1
    assert (
        "✓ The first holds: supported." in md.read_text()
        and "✓ The first holds: supported." in page.read_text()
    )
