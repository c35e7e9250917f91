"""`lab4 reproduce`: the quick profile end to end (DLA_REPRODUCE_TINY=1: every detector and attack, on small data
and one epoch), the report files, findings computed from the children's metrics, --resume, --only/--skip."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from dla_core.data.registry import resolve_classes
from dla_core.reproduce import TINY_ENV
from lab4_ood import methods
from lab4_ood import reproduce as rep
from lab4_ood.cli import group

STEPS = [f"{m}-{k}" for m in ("base", "adv", "oe") for k in ("train", "ae", "detect", "fgsm", "pgd")]
CLAIMS = {
    "chance": "every detector beats chance",
    "energy": "energy ≥ MSP",
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
    """claim key → the mark its line in report.md's Findings list carries."""
    lines = report.read_text(encoding="utf-8").split("## Findings", 1)[1].split("\n## ", 1)[0].splitlines()
    found = {}
    for key, claim in CLAIMS.items():
        (line,) = [ln for ln in lines if claim in ln]
        found[key] = line[2]
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
        for a in rep.ATTACKS:
            rows = json.loads((quick / f"{m}-{a}" / "metrics.json").read_text())["rows"]
            assert [r["eps"] for r in rows] == [0, 0.02, 0.05, 0.1, 0.2, 0.3]
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
    assert "<table>" in page and "lab4 attack --model" in page
    assert set(marks(quick / "report.md").values()) <= {"✓", "✗"}  # every finding checked from numbers


# per finding: (the step whose metrics.json is edited, an edit that makes it hold, one that makes it fail)
EDITS = {
    "chance": (
        "base-detect",
        lambda m: [r["digits:5-9"].update(auroc=0.9) for r in m["results"].values()],
        lambda m: m["results"]["dice"]["digits:5-9"].update(auroc=0.5),
    ),
    "energy": (
        "base-detect",
        lambda m: [r.update(auroc=1.0) for r in m["results"]["energy"].values()],
        lambda m: m["results"]["energy"]["fake"].update(auroc=0.0),
    ),
    "fgsm": (
        "base-fgsm",
        lambda m: [r.update(accuracy=1 - r["eps"]) for r in m["rows"]],
        lambda m: m["rows"][-1].update(accuracy=1.0),
    ),
    "adv": (
        "adv-fgsm",
        lambda m: [r.update(accuracy=1.0) for r in m["rows"]],
        lambda m: [r.update(accuracy=0.0) for r in m["rows"]],
    ),
    "oe": (
        "oe-detect",
        lambda m: [r.update(auroc=1.0) for r in m["results"]["msp"].values()],
        lambda m: m["results"]["msp"]["fake"].update(auroc=0.0),
    ),
}


@pytest.mark.slow
def test_every_findings_mark_follows_the_metrics(quick, tmp_path):
    """Edit the children's metrics.json in a copy so that every finding holds, re-render: all ✓; then so that
    every one fails: all ✗ (two renders, not ten: each claim's mark is still checked on its own)."""
    copy = tmp_path / "copy"
    shutil.copytree(quick, copy)
    for which, mark in ((1, "✓"), (2, "✗")):
        for edit in EDITS.values():
            edit_metrics(copy / edit[0], edit[which])
        assert lab4("report", copy).exit_code == 0
        assert marks(copy / "report.md") == dict.fromkeys(CLAIMS, mark)


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
        assert argv[argv.index("--method") + 1].split(",") == [d.name for d in methods.DETECTORS]
        assert argv[argv.index("--autoencoder") + 1] == str(tmp_path / f"{m}-ae")
        assert [steps[f"{m}-{a}"].argv[4] for a in rep.ATTACKS] == ["fgsm", "pgd"]


def test_findings_are_unchecked_without_numbers():
    assert rep.beats_chance(None, "digits:5-9").ok is None
    assert rep.energy_beats_msp({"msp": {}}).ok is None
    assert rep.falls_with_eps([]).ok is None
    assert rep.adversarial_training_helps([{"eps": 0.1, "accuracy": 0.2}], None, 0.1, "FGSM").ok is None
    assert rep.outlier_exposure_helps(None, None).ok is None
    rows = [{"eps": 0.0, "accuracy": 0.9}, {"eps": 0.1, "accuracy": 0.9}, {"eps": 0.2, "accuracy": 0.1}]
    assert rep.falls_with_eps(rows).ok is True
    assert rep.falls_with_eps([*rows, {"eps": 0.3, "accuracy": 0.2}]).ok is False
