"""`reproduce` / `report` on a small lab made here: child run folders, resume, --only/--skip, the report files,
findings computed from the children's metrics, and the comparison view."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dla_core import cli
from dla_core.report import Finding, Section, Table, fmt, write_report
from dla_core.reproduce import TINY_ENV, Recipe, Step
from dla_core.runs import RunDir

# a 1×1 PNG
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
made: list[list[str]] = []


@click.group()
def group() -> None:
    pass


@group.command()
@click.option("--score", type=float, default=0.9)
@click.option("--seed", type=int, default=0)
@cli.OUT
@cli.RESUME
def train(score: float, seed: int, out: Path, resume: bool) -> None:
    made.append(["train", str(out), str(resume)])
    run = RunDir.create(out, {"score": score, "seed": seed}, command="toy train", resume=resume)
    run.file("curve.png").write_bytes(PIXEL)
    run.update_metrics(test_accuracy=score + seed / 100, finished=True)


@group.command()
@click.option("--model", type=click.Path(path_type=Path), required=True)
@click.option("--fail", is_flag=True)
@cli.OUT
def evaluate(model: Path, fail: bool, out: Path) -> None:
    made.append(["evaluate", str(out)])
    run = RunDir.create(out, {"model": str(model)}, command="toy evaluate", resumable=False)
    if fail:
        raise cli.DlaError("evaluation failed on purpose")
    accuracy = RunDir(model).read_metrics()["test_accuracy"]
    run.update_metrics(auroc=accuracy - 0.1)


def steps(profile: str, out: Path, tiny: bool, fail: bool = False) -> list[Step]:
    score = "0.4" if profile == "full" else "0.9"
    return [
        Step("train", ("train", "--score", score)),
        Step(
            "eval",
            ("evaluate", "--model", str(out / "train"), *(["--fail"] if fail else [])),
            False,
            ("train",),
        ),
    ]


def sections(out: Path, steps: list[Step], fail: bool = False) -> list[Section]:
    train = RunDir(out / "train").read_metrics() if (out / "train" / "metrics.json").exists() else {}
    ev = RunDir(out / "eval").read_metrics() if (out / "eval" / "metrics.json").exists() else {}
    acc, auroc = train.get("test_accuracy"), ev.get("auroc")
    return [
        Section(
            "Training",
            text="A toy run.",
            commands=[s.command_line("toy", out) for s in steps],
            tables=[Table(["accuracy", "auroc"], [[acc, auroc]], caption="toy numbers")],
            images=[out / "train" / "curve.png"],
            findings=[
                Finding("it learns", None if acc is None else acc > 0.5, f"accuracy {fmt(acc)}"),
                Finding("it detects", None if auroc is None else auroc > 0.5, f"AUROC {fmt(auroc)}"),
            ],
        )
    ]


RECIPE = Recipe("toy", "Toy lab", "What the toy lab shows.", steps, sections)
FAIL = click.option("--fail", is_flag=True, help="Make the evaluation fail.")
cli.add_reproduce_commands(group, RECIPE, extra=[FAIL], lab="toy")


def invoke(*args: str):
    return CliRunner().invoke(group, list(args))


@pytest.fixture(autouse=True)
def _calls(monkeypatch):
    made.clear()
    monkeypatch.delenv(TINY_ENV, raising=False)


def marks(text: str) -> list[str]:
    return re.findall(r"^- ([✓✗–]) ", text, flags=re.M)


def test_reproduce_runs_every_step_into_its_own_folder_and_writes_both_reports(tmp_path):
    out = tmp_path / "rep"
    r = invoke("reproduce", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert [c[0] for c in made] == ["train", "evaluate"]
    assert RunDir(out / "train").saved["command"] == "toy train"
    assert RunDir(out / "eval").read_metrics()["auroc"] == pytest.approx(0.8)
    manifest = RunDir(out).read_metrics()["steps"]
    assert (
        manifest["train"]["done"]
        and manifest["train"]["command"] == f"toy train --score 0.9 --out {out}/train"
    )
    md = (out / "report.md").read_text()
    assert "# Toy lab" in md and "What the toy lab shows." in md
    assert "toy evaluate --model train --out eval" in md and str(tmp_path) not in md  # from the report folder
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert links == ["train/curve.png"] and all((out / link).is_file() for link in links)
    assert marks(md) == ["✓", "✓", "✓", "✓"]  # the findings list on top, then in their section
    assert "| 0.900 | 0.800 |" in md and "Wall time:" in md and "Machine:" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64," + base64.b64encode(PIXEL).decode()) == 1
    assert "<img" in page and 'src="train/' not in page  # embedded, no file links


def test_a_changed_metric_flips_its_mark_when_the_report_is_rendered_again(tmp_path):
    out = tmp_path / "rep"
    assert invoke("reproduce", "--out", str(out)).exit_code == 0
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    metrics["auroc"] = 0.3
    (out / "eval" / "metrics.json").write_text(json.dumps(metrics))
    r = invoke("report", str(out))
    assert r.exit_code == 0, r.output
    assert marks((out / "report.md").read_text()) == ["✓", "✗", "✓", "✗"]
    assert made == [["train", str(out / "train"), "False"], ["evaluate", str(out / "eval")]]  # nothing rerun
    assert "✗" in (out / "report.html").read_text()


def test_resume_skips_done_steps_and_redoes_a_failed_evaluation(tmp_path):
    out = tmp_path / "rep"
    r = invoke("reproduce", "--out", str(out), "--fail")
    assert r.exit_code == 1 and "evaluation failed on purpose" in r.output
    assert RunDir(out).read_metrics()["steps"].keys() == {"train"}
    assert (out / "eval" / "config.json").exists()  # the failed evaluation's folder
    made.clear()
    r = invoke("reproduce", "--out", str(out), "--fail", "--resume")
    assert [c[0] for c in made] == ["evaluate"]  # train was done; the evaluation's folder was redone
    made.clear()
    # the options are the recipe's: resuming with others is refused, naming them
    r = invoke("reproduce", "--out", str(out), "--resume")
    assert r.exit_code == 1 and "extra.fail: True → False" in r.output and made == []


def test_a_started_resumable_step_gets_resume(tmp_path):
    out = tmp_path / "rep"
    assert invoke("reproduce", "--out", str(out), "--only", "train").exit_code == 0
    metrics = RunDir(out).read_metrics()
    del metrics["steps"]["train"]  # as if interrupted before the manifest was written
    RunDir(out).write_metrics(metrics)
    made.clear()
    assert invoke("reproduce", "--out", str(out), "--resume", "--only", "train").exit_code == 0
    assert made == [["train", str(out / "train"), "True"]]


def test_only_and_skip(tmp_path):
    r = invoke("reproduce", "--out", str(tmp_path / "a"), "--only", "eval")
    assert r.exit_code == 1 and "step eval needs train: run it first or add it to --only" in r.output
    assert made == []
    r = invoke("reproduce", "--out", str(tmp_path / "b"), "--skip", "eval")
    assert r.exit_code == 0 and [c[0] for c in made] == ["train"]
    assert marks((tmp_path / "b" / "report.md").read_text()) == ["✓", "–", "✓", "–"]  # not run: not checked
    r = invoke("reproduce", "--out", str(tmp_path / "c"), "--only", "nope")
    assert r.exit_code == 1 and "--only: unknown step nope (steps: train, eval)" in r.output


def test_a_step_without_what_it_needs_is_refused_before_the_folder_is_made(tmp_path):
    out = tmp_path / "rep"
    for refused in (("--only", "eval"), ("--skip", "train")):
        r = invoke("reproduce", "--out", str(out), *refused)
        assert (
            r.exit_code == 1
            and r.output == "Error: step eval needs train: run it first or add it to --only\n"
        )
        assert not out.exists() and made == []
    # resumed: a need done before counts
    assert invoke("reproduce", "--out", str(out), "--only", "train").exit_code == 0
    made.clear()
    r = invoke("reproduce", "--out", str(out), "--resume", "--only", "eval")
    assert r.exit_code == 0, r.output
    assert [c[0] for c in made] == ["evaluate"]


def test_a_bad_environment_is_refused_before_the_folder_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "0")
    r = invoke("reproduce", "--out", str(tmp_path / "rep"))
    assert (
        r.exit_code == 1 and r.output.startswith("Error: OMP_NUM_THREADS='0'") and r.output.count("\n") == 1
    )
    assert not (tmp_path / "rep").exists() and made == []


def test_profile_reaches_the_steps_and_an_existing_folder_is_refused(tmp_path):
    out = tmp_path / "rep"
    assert invoke("reproduce", "--profile", "full", "--out", str(out)).exit_code == 0
    assert RunDir(out / "train").config["score"] == 0.4
    assert marks((out / "report.md").read_text())[0] == "✗"
    r = invoke("reproduce", "--out", str(out))
    assert r.exit_code == 1 and "already holds a run" in r.output


def test_tiny_is_recorded_and_said_in_the_report(tmp_path, monkeypatch):
    monkeypatch.setenv(TINY_ENV, "1")
    out = tmp_path / "rep"
    assert invoke("reproduce", "--out", str(out)).exit_code == 0
    assert RunDir(out).config["tiny"] is True
    assert "These numbers are not results." in (out / "report.md").read_text()


def test_missing_images_are_left_out(tmp_path):
    md, page = write_report(tmp_path, "t", [Section("s", images=[tmp_path / "gone.png"])])
    assert "gone" not in md.read_text() and "<img" not in page.read_text()


def test_html_prose_keeps_code_and_bold_and_escapes_the_rest(tmp_path):
    section = Section(
        "s", text="run `lab1 study` **now** <b>not this</b>", findings=[Finding("`x` holds", True, "a<b")]
    )
    _, page = write_report(tmp_path, "t", [section])
    text = page.read_text()
    assert "<code>lab1 study</code> <b>now</b> &lt;b&gt;not this&lt;/b&gt;" in text
    assert "<code>x</code> holds — a&lt;b" in text


def test_a_relative_out_keeps_the_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("reproduce", "--out", "runs/rep").exit_code == 0
    md = (tmp_path / "runs" / "rep" / "report.md").read_text()
    assert "![curve](train/curve.png)" in md
    # the command lines are those that ran, their paths written from the report folder, also when re-rendered
    # from elsewhere
    assert "toy train --score 0.9 --out train\n" in md
    monkeypatch.chdir(tmp_path / "runs")
    assert invoke("report", "rep").exit_code == 0
    assert "toy train --score 0.9 --out train\n" in (tmp_path / "runs" / "rep" / "report.md").read_text()
    assert "data:image/png;base64," in (tmp_path / "runs" / "rep" / "report.html").read_text()


def test_read_run_file_is_empty_for_a_step_not_run_and_an_error_for_a_damaged_file(tmp_path):
    from dla_core.errors import DlaError
    from dla_core.reproduce import read_run_file

    assert read_run_file(tmp_path / "never-ran") == {}
    (tmp_path / "metrics.json").write_text('{"auroc": 0.7}')
    assert read_run_file(tmp_path) == {"auroc": 0.7}
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(DlaError, match=r"config.json is damaged \(not valid JSON"):
        read_run_file(tmp_path, "config.json")


def test_report_of_several_run_folders_writes_the_comparison_and_refuses_without_out(tmp_path):
    """Issue 23, item 4's command: `labN report A B … --out X` compares run folders; without --out it is one
    Error line and nothing is written."""
    runs = []
    for name, lr, acc in (("a0", 0.1, 0.5), ("b0", 0.2, 0.7)):
        run = RunDir.create(tmp_path / name, {"lr": lr, "seed": 0}, command="toy train")
        run.update_metrics(test_accuracy=acc, finished=True)
        runs.append(str(run.path))
    refused = invoke("report", *runs)
    assert refused.exit_code == 1 and refused.output.startswith("Error: --out")
    assert len(refused.output.strip().splitlines()) == 1
    r = invoke("report", *runs, "--out", str(tmp_path / "cmp"))
    assert r.exit_code == 0, r.output
    text = (tmp_path / "cmp" / "report.md").read_text()
    assert "toy: comparison of 2 runs" in text and "[a0](../a0)" in text and "[b0](../b0)" in text
    assert (tmp_path / "cmp" / "report.html").is_file() and sorted(p.name for p in tmp_path.iterdir()) == [
        "a0",
        "b0",
        "cmp",
    ]
