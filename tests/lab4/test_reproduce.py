"""`lab4 reproduce`: the quick profile end to end (DLA_REPRODUCE_TINY=1: every detector and attack, on small data
and one epoch), the report files, findings computed from the children's metrics, --resume, --only/--skip."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dla_core.data.registry import resolve_classes
from dla_core.reproduce import TINY_ENV
from dla_core.stats import read_outcomes, write_outcomes
from lab4_ood import methods
from lab4_ood import reproduce as rep
from lab4_ood.cli import group
from lab4_ood.outcomes import eps_name, write_detector

STEPS = [f"{m}-{k}" for m in ("base", "adv", "oe") for k in ("train", "ae", "detect", "fgsm", "pgd")]
CLAIMS = {
    "chance": "every detector beats chance",
    "energy": "energy beats MSP",
    "fgsm": "FGSM accuracy falls as ε grows",
    "adv": "adversarial training raises accuracy",
    "oe": "outlier exposure raises MSP AUROC",
}


def lab4(*args: str):
    result = CliRunner().invoke(group, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


# The whole quick profile (~100 s of CPU): its tests are the slow tier; --only below runs two steps in the quick one
@pytest.fixture(scope="module")
def quick(tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("lab4-reproduce") / "report"
    result = lab4("reproduce", "--profile", "quick", "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(TINY_ENV, "1")
        mp.setenv("TQDM_DISABLE", "1")
        yield mp


def marks(report: Path) -> dict[str, str]:
    """claim key → the mark its line in report.md's Conclusion carries."""
    lines = report.read_text(encoding="utf-8").split("## Conclusion", 1)[1].split("\n## ", 1)[0].splitlines()
    found = {}
    for key, claim in CLAIMS.items():
        (line,) = [ln for ln in lines if claim.lower() in ln.lower()]
        found[key] = line[2]
    assert f"{len(CLAIMS)} findings: " in lines[2]
    return found


def edit_metrics(run: Path, change) -> None:
    path = run / "metrics.json"
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m))


@pytest.mark.slow
def test_quick_profile_runs_every_step_detector_and_attack(quick):
    manifest = json.loads((quick / "metrics.json").read_text())["steps"]
    assert list(manifest) == STEPS and all(s["done"] for s in manifest.values())
    for m in ("base", "adv", "oe"):
        results = json.loads((quick / f"{m}-detect" / "metrics.json").read_text())["results"]
        assert list(results) == [
            d.name for d in methods.DETECTORS
        ]  # every detector, recon (the autoencoder) included
        assert all(set(r) == {"digits:5-9", "fake"} for r in results.values())
        # the classifier's outcomes on the ID test images; each detector's scores of ID and OOD images
        detect = json.loads((quick / f"{m}-detect" / "metrics.json").read_text())
        id_correct = read_outcomes(quick / f"{m}-detect").correct
        assert id_correct.mean() == pytest.approx(detect["id_accuracy"])
        for method, per_set in results.items():
            kept = read_outcomes(quick / f"{m}-detect", method)
            assert kept.scores.dtype == np.float32 and (kept.labels == 0).sum() == len(id_correct)
            assert sorted(set(kept.labels.tolist())) == [0, 1, 2]  # ID, digits:5-9, fake
            assert detect["outcome_sets"][1:] == list(per_set)
        assert read_outcomes(quick / f"{m}-train").correct.mean() == pytest.approx(
            json.loads((quick / f"{m}-train" / "metrics.json").read_text())["test_accuracy"]
        )
        for a in rep.ATTACKS:
            attack = json.loads((quick / f"{m}-{a}" / "metrics.json").read_text())
            rows = attack["rows"]
            assert [r["eps"] for r in rows] == [0, 0.02, 0.05, 0.1, 0.2, 0.3]
            clean = read_outcomes(quick / f"{m}-{a}").correct
            assert clean.mean() == pytest.approx(attack["clean_accuracy"])
            for r in rows:  # robust correctness per image at each ε, on the same images
                robust = read_outcomes(quick / f"{m}-{a}", eps_name(r["eps"])).correct
                assert robust.shape == clean.shape and robust.mean() == pytest.approx(r["accuracy"])
    assert "--adversarial fgsm --eps 0.1" in manifest["adv-train"]["command"]
    assert "--outlier-exposure digits:5-9" in manifest["oe-train"]["command"]


@pytest.mark.slow
def test_report_links_and_embeds_every_image(quick):
    md = (quick / "report.md").read_text(encoding="utf-8")
    page = (quick / "report.html").read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) >= 8
    assert all((quick / link).is_file() for link in links), links
    assert {"figures/detectors_auroc.png", "figures/accuracy_vs_eps.png"} <= set(links)
    assert page.count('src="data:image/png;base64,') == len(links)
    assert "<table>" in page and "lab4 attack --model base-train" in page  # paths from the report folder
    visible = re.sub(r"data:image/png;base64,[^\"]+", "", page)
    assert str(quick.parent) not in md and str(quick.parent) not in visible  # no machine path anywhere
    assert md.count("<figcaption>") == 0 and page.count("<figcaption>") == len(links)  # a caption under each
    assert set(marks(quick / "report.md").values()) <= {"✓", "✗", "～"}  # every finding checked from numbers


def set_scores(folder: Path, method: str, id_scores, ood_scores) -> None:
    """Rewrite a detector's per-example scores in a detect run folder: ``id_scores(n)``, ``ood_scores(n)``."""
    kept = read_outcomes(folder, method)
    scores = kept.scores.copy()
    n_id, n_ood = int((kept.labels == 0).sum()), int((kept.labels != 0).sum())
    scores[kept.labels == 0], scores[kept.labels != 0] = id_scores(n_id), ood_scores(n_ood)
    write_outcomes(folder, kept.correct, scores=scores, labels=kept.labels, name=method)


def set_robust(folder: Path, right) -> None:
    """Rewrite an attack run's robust correctness per ε: ``right(eps, n)`` → (n,) bool."""
    for r in json.loads((folder / "metrics.json").read_text())["rows"]:
        n = read_outcomes(folder, eps_name(r["eps"])).examples
        write_outcomes(folder, right(r["eps"], n), name=eps_name(r["eps"]))


def ramp(lo: float, hi: float):
    return lambda n: np.linspace(lo, hi, n)


def const(value: float):
    return lambda n: np.full(n, value)


@pytest.mark.slow
def test_every_findings_mark_follows_the_outcomes(quick, tmp_path):
    """Rewrite the children's per-example outcomes in a copy so that every finding is supported, re-render: all ✓;
    then so that every one is contradicted: all ✗; then one adversarial gain of a single image: ～."""
    copy = tmp_path / "copy"
    shutil.copytree(quick, copy)
    detectors = list(json.loads((copy / "base-detect" / "metrics.json").read_text())["results"])
    eps = float(json.loads((copy / "adv-train" / "config.json").read_text())["config"]["eps"])
    for good, mark in ((True, "✓"), (False, "✗")):
        for m in detectors:  # every detector: perfect, or perfectly wrong
            set_scores(copy / "base-detect", m, const(1.0 if good else 0.0), const(0.0 if good else 1.0))
        # MSP half-way on every OOD set (each a multiple of 20 images): AUROC ≈ 0.75, clear of 0.5 and 1
        set_scores(copy / "base-detect", "msp", ramp(0.5, 1.5), lambda n: (np.arange(n) % 20) / 19)
        set_scores(copy / "base-detect", "energy", const(2.0 if good else 0.0), const(-1.0 if good else 1.0))
        set_scores(copy / "oe-detect", "msp", const(1.0 if good else 0.0), const(0.0 if good else 1.0))
        below = (lambda e: e < eps) if good else (lambda e: e >= eps)  # falls at ε, or rises there
        set_robust(copy / "base-fgsm", lambda e, n, below=below: np.full(n, below(e)))
        set_robust(copy / "adv-fgsm", lambda e, n, good=good: np.full(n, good))
        assert lab4("report", copy).exit_code == 0
        assert marks(copy / "report.md") == dict.fromkeys(CLAIMS, mark)
    set_robust(copy / "base-fgsm", lambda e, n: np.arange(n) % 2 == 0)
    set_robust(copy / "adv-fgsm", lambda e, n: (np.arange(n) % 2 == 0) | (np.arange(n) == 1))
    assert lab4("report", copy).exit_code == 0
    assert marks(copy / "report.md")["adv"] == "～"


@pytest.mark.slow
def test_missing_runs_leave_findings_unchecked(quick, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(quick, copy)
    shutil.rmtree(copy / "base-detect")
    shutil.rmtree(copy / "adv-fgsm")
    assert lab4("report", copy).exit_code == 0
    found = marks(copy / "report.md")
    assert found["energy"] == found["chance"] == found["oe"] == found["adv"] == "–"
    assert found["fgsm"] in "✓✗"


@pytest.mark.slow
def test_resume_skips_done_steps_and_redoes_an_unfinished_one(quick, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(quick, copy)
    edit_metrics(copy, lambda m: m["steps"]["base-pgd"].update(done=False))
    before = {s: (copy / s / "config.json").stat().st_mtime_ns for s in STEPS}
    result = lab4("reproduce", "--profile", "quick", "--out", copy, "--resume")
    assert result.exit_code == 0, result.output
    assert result.output.count("done before, skipped") == len(STEPS) - 1
    after = {s: (copy / s / "config.json").stat().st_mtime_ns for s in STEPS}
    assert [s for s in STEPS if before[s] != after[s]] == ["base-pgd"]


def test_only_and_skip_respect_needs(tmp_path, monkeypatch_module):
    result = lab4("reproduce", "--out", tmp_path / "a", "--only", "base-detect")
    assert result.exit_code == 1 and "step base-detect needs base-train, base-ae" in result.output
    result = lab4("reproduce", "--out", tmp_path / "b", "--skip", "base-train")
    assert result.exit_code == 1 and "needs base-train" in result.output
    result = lab4("reproduce", "--out", tmp_path / "c", "--only", "base-train,base-fgsm")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if p.is_dir()) == [
        "base-fgsm",
        "base-train",
        "figures",
    ]
    found = marks(tmp_path / "c" / "report.md")
    assert found["fgsm"] in "✓✗" and found["energy"] == found["adv"] == found["oe"] == "–"


def test_full_profile_downloads_keeps_the_training_eps_and_exposes_no_test_class(tmp_path):
    steps = rep.steps("full", tmp_path, tiny=False)
    assert [s.name for s in steps] == STEPS
    assert all("--download" in s.argv and s.minutes for s in steps)
    p = rep.PROFILES["full"]
    assert rep.accuracy_at(
        [{"eps": float(e), "accuracy": 1.0} for e in p.eps.split(",")], float(p.adversarial[1])
    )
    classes = [f"c{i}" for i in range(100)]
    people = [2, 11, 35, 46, 98]
    exposed = resolve_classes(p.oe.split(":", 1)[1], classes, {"people": people}, p.oe)
    assert sorted(exposed) == [i for i in range(100) if i not in people]


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_every_profile_runs_every_detector_and_both_attacks_on_every_model(profile, tmp_path):
    steps = {s.name: s for s in rep.steps(profile, tmp_path, tiny=True)}
    for m in ("base", "adv", "oe"):
        argv = steps[f"{m}-detect"].argv
        every = [d.name for d in methods.DETECTORS]
        assert argv[argv.index("--method") + 1].split(",") == every
        assert argv[argv.index("--autoencoder") + 1] == str(tmp_path / f"{m}-ae")
        assert [steps[f"{m}-{a}"].argv[4] for a in rep.ATTACKS] == ["fgsm", "pgd"]


def test_findings_are_unchecked_without_runs(tmp_path):
    assert rep.beats_chance(tmp_path, "digits:5-9").mark == "–"
    assert rep.energy_beats_msp(tmp_path).mark == "–"
    assert rep.falls_with_eps(tmp_path, "base-fgsm").mark == "–"
    assert rep.adversarial_training_helps(tmp_path, 0.1, "fgsm").mark == "–"
    assert rep.outlier_exposure_helps(tmp_path).mark == "–"


#### Each finding moves through ✓ / ～ / ✗ with its outcomes (synthetic run folders, no training) ####

SETS = ["digits:0-4", "digits:5-9", "fake"]


def detect_folder(folder: Path, scores: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """A detect run folder: per detector (ID, near OOD, far OOD) scores."""
    folder.mkdir(parents=True)
    results = {m: {"digits:5-9": {"auroc": 0.5}, "fake": {"auroc": 0.5}} for m in scores}
    (folder / "metrics.json").write_text(json.dumps({"results": results, "outcome_sets": SETS}))
    for m, (s_id, near, far) in scores.items():
        write_detector(folder, m, s_id, {"digits:5-9": near, "fake": far})


def attack_folder(folder: Path, robust: dict[float, np.ndarray]) -> None:
    folder.mkdir(parents=True)
    rows = [{"eps": e, "accuracy": float(r.mean())} for e, r in robust.items()]
    (folder / "metrics.json").write_text(json.dumps({"rows": rows}))
    for e, r in robust.items():
        write_outcomes(folder, r, name=eps_name(e))


N_SET = 60
GOOD = (np.full(N_SET, 1.0), np.zeros(N_SET), np.zeros(N_SET))  # AUROC 1 on both OOD sets
HALF = (np.linspace(0.5, 1.5, N_SET), np.linspace(0, 1, N_SET), np.linspace(0, 1, N_SET))  # AUROC ≈ 0.75
BAD = (np.zeros(N_SET), np.ones(N_SET), np.ones(N_SET))  # AUROC 0


def nudged(scores, k: int):
    """``scores`` with the k lowest-ranked ID images raised to the top: a slightly better detector."""
    s_id = scores[0].copy()
    s_id[:k] = 10.0
    return (s_id, *scores[1:])


@pytest.mark.parametrize(
    ("energy", "msp", "oe", "mark", "chance"),
    [(GOOD, HALF, GOOD, "✓", "✓"), (HALF, nudged(HALF, 0), HALF, "✗", "✓"),
     (nudged(HALF, 1), HALF, nudged(HALF, 1), "～", "✓"), (BAD, HALF, BAD, "✗", "✗")],
)  # fmt: skip
def test_detection_findings_move_with_the_scores(tmp_path, energy, msp, oe, mark, chance):
    detect_folder(tmp_path / "base-detect", {"msp": msp, "energy": energy})
    detect_folder(tmp_path / "oe-detect", {"msp": oe})
    found = rep.energy_beats_msp(tmp_path)
    assert found.mark == mark, found.evidence
    assert "2 parts" in found.evidence and f"{2 * N_SET} test examples" in found.evidence
    assert rep.outlier_exposure_helps(tmp_path).mark == mark
    assert rep.beats_chance(tmp_path, "digits:5-9").mark == chance  # every detector: BAD's energy fails it


@pytest.mark.parametrize(
    ("gain", "mark"), [(N_SET // 3, "✓"), (1, "～"), (0, "✗")]
)  # robust model: `gain` more images right at the training ε
def test_attack_findings_move_with_the_robust_outcomes(tmp_path, gain, mark):
    half = np.arange(N_SET) % 2 == 0
    better = half.copy()
    better[np.flatnonzero(~half)[:gain]] = True
    attack_folder(tmp_path / "base-fgsm", {0.0: np.ones(N_SET, bool), 0.1: half, 0.2: half})
    attack_folder(tmp_path / "adv-fgsm", {0.0: np.ones(N_SET, bool), 0.1: better, 0.2: half})
    assert rep.adversarial_training_helps(tmp_path, 0.1, "fgsm").mark == mark
    assert rep.falls_with_eps(tmp_path, "base-fgsm").mark == "✓"  # falls, then stays: never rises
    attack_folder(tmp_path / "rise-fgsm", {0.0: half, 0.1: better})  # accuracy rising with ε by `gain` images
    assert rep.falls_with_eps(tmp_path, "rise-fgsm").mark == {"✓": "✗", "～": "～", "✗": "✓"}[mark]


def test_each_ood_set_is_judged_on_its_own_images(tmp_path):
    mixed = (
        np.ones(N_SET),
        np.zeros(N_SET),
        np.full(N_SET, 2.0),
    )  # perfect on the near set, AUROC 0 on the far
    detect_folder(tmp_path / "base-detect", {"msp": HALF, "energy": mixed})
    found = rep.energy_beats_msp(tmp_path)
    assert found.mark == "✗" and "1 supported, 1 contradicted" in found.evidence
    assert found.evidence.split("): ", 1)[1].startswith(
        "energy on fake better than MSP on fake: difference -0.8"
    )
    assert (
        rep.beats_chance(tmp_path, "digits:5-9").mark == "✓"
        and rep.beats_chance(tmp_path, "fake").mark == "✗"
    )


#### Further training seeds: the findings that compare models read every seed's run folder ####


def test_the_findings_comparing_models_read_every_training_seed(tmp_path):
    half = np.arange(N_SET) % 2 == 0
    for folder in ("base-fgsm", "base-fgsm-s1", "base-fgsm-s2"):
        attack_folder(tmp_path / folder, {0.0: np.ones(N_SET, bool), 0.1: half})
    for folder in ("adv-fgsm", "adv-fgsm-s1", "adv-fgsm-s2"):
        attack_folder(tmp_path / folder, {0.0: np.ones(N_SET, bool), 0.1: np.ones(N_SET, bool)})
    (tmp_path / "adv-fgsm-sx").mkdir()  # not a seed's folder
    assert [f.name for f in rep.seed_folders(tmp_path, "adv-fgsm")] == [
        "adv-fgsm",
        "adv-fgsm-s1",
        "adv-fgsm-s2",
    ]
    helps = rep.adversarial_training_helps(tmp_path, 0.1, "fgsm")
    assert helps.mark == "✓" and "3 seeds each" in helps.evidence, helps.evidence
    assert "3 seeds each" in rep.falls_with_eps(tmp_path, "base-fgsm").evidence
    for folder in ("base-detect", "base-detect-s1", "base-detect-s2"):
        detect_folder(tmp_path / folder, {"msp": HALF, "energy": GOOD})
    for folder in ("oe-detect", "oe-detect-s1"):
        detect_folder(tmp_path / folder, {"msp": GOOD})
    energy = rep.energy_beats_msp(tmp_path)
    assert energy.mark == "✓" and "3 seeds each" in energy.evidence, energy.evidence
    exposed = rep.outlier_exposure_helps(tmp_path)
    assert exposed.mark == "✓" and "2 and 3 seeds" in exposed.evidence, exposed.evidence
    # a further seed that moves against the claim moves the finding
    detect_folder(tmp_path / "base-detect-s3", {"msp": GOOD, "energy": BAD})
    assert rep.energy_beats_msp(tmp_path).mark != "✓"
