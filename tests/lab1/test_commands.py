"""Each lab1 command end to end on fixture data (tiny sizes), resume, and one-line errors."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dla_core.models import count_parameters, load_model
from dla_core.runs import RunDir
from dla_core.stats import read_outcomes
from lab1_resnet.cli import group
from lab1_resnet.train import load_data

FAST = ["--epochs", "1", "--batch-size", "32"]


def lab1(*argv: str, ok: bool = True):
    result = CliRunner().invoke(group, [str(a) for a in argv], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def cifar10_cnn(data_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "c10"
    lab1("train", "--model", "cnn", "--depth", "2", "--channels", "4", "--dataset", "cifar10",
         "--data-dir", data_dir, *FAST, "--out", out)  # fmt: skip
    return out


def test_help_has_examples():
    for command in ("train", "study", "transfer", "distill"):
        text = lab1(command, "--help").output
        assert "Example" in text and f"lab1 {command}" in text, command


def test_train_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "run"
    r = lab1("train", "--depth", "2", "--width", "16", "--plain", "--dataset", "digits:0-4", "--epochs", "2",
             "--out", out)  # fmt: skip
    assert "test accuracy" in r.output
    for name in ("config.json", "metrics.json", "model.safetensors", "learning_curves.png", "grad_norms.png"):
        assert (out / name).exists(), name
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["history"]) == 2 and 0 <= m["test_accuracy"] <= 1
    outcomes = read_outcomes(out)  # one per test example, in test order
    test = load_data("digits:0-4", tmp_path, 0.1).test
    assert outcomes.correct.shape == (len(test),) and outcomes.correct.mean() == m["test_accuracy"]
    model = load_model(out)
    # two blocks of two 16×16 layers: the residual block without its skip
    assert (
        m["parameters"] == count_parameters(model) == (64 * 16 + 16) + 2 * 2 * (16 * 16 + 16) + (16 * 5 + 5)
    )
    assert m["weight_layers"] == 6 and "6 weight layers" in r.output
    assert model.config.extra["dataset"] == "digits:0-4" and model.config.residual is False
    assert set(m["grad_norms"]) >= {"blocks.0.fc1", "blocks.1.fc2", "head"}
    assert lab1("train", "--out", out, ok=False).output.startswith(f"Error: {out} already holds a run")
    # where the data lives is not part of the experiment: moving it does not block a resume
    assert "data_dir" not in RunDir.open(out).config
    lab1("train", "--depth", "2", "--width", "16", "--plain", "--dataset", "digits:0-4", "--epochs", "2",
         "--data-dir", tmp_path / "elsewhere", "--out", out, "--resume")  # fmt: skip


def test_the_seeds_one_layer_plain_block_is_an_option_that_saved_models_remember(tmp_path):
    out = tmp_path / "single"
    r = lab1("train", "--depth", "3", "--width", "16", "--plain", "--plain-block", "single",
             "--dataset", "digits:0-4", "--epochs", "1", "--out", out)  # fmt: skip
    m = json.loads((out / "metrics.json").read_text())
    model = load_model(out)
    assert (
        model.config.plain_block == "single"
        and json.loads((out / "config.json").read_text())["config"]["plain_block"] == "single"
    )
    assert m["parameters"] == count_parameters(model) == (64 * 16 + 16) + 3 * (16 * 16 + 16) + (16 * 5 + 5)
    assert m["weight_layers"] == 5 and r.output.startswith("mlp-d3-plain-single-s0: 5 weight layers")


def test_study_writes_its_table_and_resumes_without_retraining(tmp_path, monkeypatch):
    out = tmp_path / "study"
    argv = ["study", "--depths", "1,3", "--seeds", "0,1", "--width", "16", "--dataset", "digits:0-2", *FAST,
            "--out", out]  # fmt: skip
    r = lab1(*argv)
    table = (out / "table.md").read_text()
    assert r.output.startswith(table)
    lines = table.splitlines()
    assert (
        lines[0].startswith("| depth | net | weight layers | params | final train loss |")
        and len(lines) == 2 + 4
    )
    # equal depth, equal layers and parameters: the nets differ only by the skips
    assert "| 3 | plain | 8 | 2,723 |" in table and "| 3 | residual | 8 | 2,723 |" in table and " ± " in table
    csv = (out / "table.csv").read_text().splitlines()
    assert csv[0].startswith("depth,net,weight_layers,parameters,seeds,train_loss_mean") and len(csv) == 5
    for name in ("learning_curves.png", "grad_norms.png"):
        assert (out / name).exists()
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert cells[0] == "mlp-d1-plain-s0" and len(cells) == 8
    for cell in (out / "cells").iterdir():  # the stacked seeds keep each seed's outcomes in its own cell
        outcomes = read_outcomes(cell).correct
        assert outcomes.ndim == 1 and outcomes.mean() == RunDir(cell).read_metrics()["test_accuracy"]

    # a cell that stopped after training but before its final evaluation: resume finishes only that one
    kept = out / "cells" / "mlp-d1-plain-s0" / "model.safetensors"
    redo = out / "cells" / "mlp-d3-residual-s1"
    history = RunDir(redo).read_metrics()["history"]
    (redo / "model.safetensors").unlink()
    mtime = kept.stat().st_mtime_ns
    steps = []
    adam_step = torch.optim.Adam.step
    monkeypatch.setattr(
        torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1) or adam_step(self, *a, **k)
    )
    lab1(*argv, "--resume")
    assert kept.stat().st_mtime_ns == mtime
    assert (redo / "model.safetensors").exists()
    # continued from the checkpoint, not retrained: no optimizer step, the same epoch (timings included)
    assert steps == []
    assert RunDir(redo).read_metrics()["history"] == history
    assert (out / "table.md").read_text() == table

    # a damaged cell file is one Error line naming it, before any cell trains
    (out / "cells" / "mlp-d1-plain-s0" / "metrics.json").write_text("{ not json")
    r = lab1(*argv, "--resume", ok=False)
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "metrics.json is damaged" in r.output, (
        r.output
    )
    assert steps == []


def test_transfer_cifar10_to_cifar100_reports_exact_trainable_counts(cifar10_cnn, data_dir, tmp_path):
    out = tmp_path / "transfer"
    r = lab1("transfer", "--from", cifar10_cnn, "--dataset", "cifar100", "--data-dir", data_dir,
             "--strategies", "head,freeze-early,none", "--optimizers", "sgd,adam", *FAST, "--out", out)  # fmt: skip
    rows = {
        (row["row"], row["optimizer"]): row for row in json.loads((out / "metrics.json").read_text())["rows"]
    }
    source = load_model(cifar10_cnn)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    head = 4 * 100 + 100
    full = n(source) - n(source.head) + head
    assert rows[("finetune-head-sgd", "sgd")]["trainable_parameters"] == head
    assert rows[("finetune-freeze-early-adam", "adam")]["trainable_parameters"] == head + n(source.blocks[1])
    assert rows[("finetune-none-adam", "adam")]["trainable_parameters"] == full
    assert rows[("scratch-sgd", "sgd")]["trainable_parameters"] == full
    assert rows[("features + linear SVM", None)]["trainable_parameters"] == (4 + 1) * 100
    assert len(rows) == 2 + 3 * 2 + 2 and all(0 <= row["test_accuracy"] <= 1 for row in rows.values())
    assert "| finetune-head-sgd | sgd | 500 |" in r.output
    tuned = load_model(out / "rows" / "finetune-head-adam")
    assert tuned.config.num_classes == 100 and tuned.config.extra["dataset"] == "cifar100"
    # each row is a run folder with the final metrics every trained run reports, under the unified keys
    row = RunDir(out / "rows" / "finetune-head-sgd").read_metrics()
    assert row["finished"] is True and row["trainable_parameters"] == head and row["parameters"] == n(tuned)
    assert {"train_loss", "val_accuracy", "test_loss", "test_accuracy", "epochs"} <= set(row)
    for r in rows.values():  # every row names its per-example outcomes, the same test examples for all
        outcomes = row_outcomes(out, r)
        assert outcomes.mean() == pytest.approx(r["test_accuracy"]) and outcomes.shape[-1] == len(
            first_outcomes(rows, out)
        )


@pytest.mark.parametrize("precompute", [False, True])
def test_distill_compares_teacher_and_students(cifar10_cnn, data_dir, tmp_path, precompute):
    out = tmp_path / "kd"
    extra = ["--precompute"] if precompute else ["--no-baseline"]
    r = lab1("distill", "--teacher", cifar10_cnn, "--data-dir", data_dir, "--depth", "1", "--channels", "2",
             "--T", "3", "--alpha", "0.7", *FAST, *extra, "--out", out)  # fmt: skip
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    names = [row["model"] for row in rows]
    assert names == (["teacher", "student, labels only", "student, distilled"] if precompute
                     else ["teacher", "student, distilled"])  # fmt: skip
    assert rows[0]["parameters"] == count_parameters(load_model(cifar10_cnn)) > rows[-1]["parameters"]
    assert "| teacher |" in r.output and (out / "students" / "distilled" / "model.safetensors").exists()
    assert RunDir.open(out).config["student"]["dataset"] == "cifar10"  # the teacher's dataset by default
    student = RunDir(out / "students" / "distilled").read_metrics()
    assert student["finished"] is True and student["parameters"] == rows[-1]["parameters"]
    assert student["test_accuracy"] == rows[-1]["test_accuracy"] and "train_loss" in student
    assert (out / "students" / "distilled" / "learning_curves.png").exists()
    for row in rows:  # teacher and students: outcomes on the same test examples
        outcomes = row_outcomes(out, row)
        assert outcomes.mean() == pytest.approx(row["test_accuracy"]) and outcomes.shape[-1] == len(
            first_outcomes(rows, out)
        )


def row_outcomes(out: Path, row) -> np.ndarray:
    """A table row's outcomes: (examples,) from its one file, (seeds, examples) from one file per seed."""
    where = row["outcomes"]
    if isinstance(where, str):
        return read_outcomes(out / where).correct
    return np.stack([read_outcomes(out / w).correct for w in where])


@pytest.mark.parametrize("command", ["transfer", "distill"])
def test_several_seeds_train_each_compared_row_once_per_seed_and_the_row_holds_their_mean(
    command, cifar10_cnn, data_dir, tmp_path
):
    out = tmp_path / "seeds"
    argv = {
        "transfer": ["--from", cifar10_cnn, "--dataset", "cifar100:people", "--data-dir", data_dir,
                     "--strategies", "head", "--optimizers", "adam", "--no-features"],
        "distill": ["--teacher", cifar10_cnn, "--data-dir", data_dir, "--depth", "1", "--channels", "2"],
    }[command]  # fmt: skip
    r = lab1(command, *argv, *FAST, "--seeds", "0,5,7", "--out", out)
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    trained = [row for row in rows if row.get("model") != "teacher"]
    assert len(trained) == 2  # fine-tuned and scratch; labels only and distilled
    parent = "rows" if command == "transfer" else "students"
    for row in trained:
        folders = [out / w for w in row["outcomes"]]
        assert [f.parent.name for f in folders] == [f"{folders[0].parent.name[:-3]}-s{s}" for s in (0, 5, 7)]
        assert all(f.parent.parent.name == parent for f in folders)
        per_seed = [RunDir(f.parent).read_metrics()["test_accuracy"] for f in folders]
        assert row["seeds"] == 3 and row["test_accuracy"] == pytest.approx(np.mean(per_seed))
        assert row["test_accuracy_std"] == pytest.approx(np.std(per_seed, ddof=1))
        seeds = [RunDir(f.parent).config["seed"] for f in folders]
        assert seeds == [0, 5, 7]
        assert row_outcomes(out, row).shape[0] == 3  # the finding's arm: one row of outcomes per seed
        first, other = (load_model(f.parent) for f in folders[:2])
        assert not torch.equal(first.head.weight, other.head.weight)  # each seed its own training
    shown = {line.split(" | ")[0].strip("| ") for line in r.output.splitlines() if " ± " in line}
    assert shown == {row.get("row") or row["model"] for row in trained if row["test_accuracy_std"] > 0}


def first_outcomes(rows, out):
    first = rows[0] if isinstance(rows, list) else next(iter(rows.values()))
    return read_outcomes(out / first["outcomes"]).correct


def _numbers(value):
    """A metrics.json's contents without wall-clock timings."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def _all_metrics(out: Path) -> dict[str, object]:
    return {
        str(p.relative_to(out)): _numbers(json.loads(p.read_text()))
        for p in sorted(out.rglob("metrics.json"))
    }


@pytest.mark.parametrize("command", ["train", "study", "transfer", "distill"])
def test_every_command_run_twice_with_one_seed_gives_identical_numbers(
    command, cifar10_cnn, data_dir, tmp_path
):
    seed = "--seed" if command == "train" else "--seeds"
    argv = {
        "train": ["--depth", "2", "--width", "8", "--dataset", "digits:0-4"],
        "study": ["--depths", "1", "--width", "8", "--dataset", "digits:0-2"],
        "transfer": ["--from", cifar10_cnn, "--dataset", "cifar100:people", "--data-dir", data_dir,
                     "--strategies", "head", "--optimizers", "adam"],
        "distill": ["--teacher", cifar10_cnn, "--data-dir", data_dir, "--depth", "1", "--channels", "2",
                    "--no-baseline"],
    }[command]  # fmt: skip
    runs = {}
    for i, (name, value) in enumerate((("a", "3"), ("b", "3"), ("other", "4"))):
        # leave the global generators in a different state before each run: a run must not depend on them
        random.seed(i), np.random.seed(i), torch.manual_seed(i)
        lab1(command, *argv, *FAST, seed, value, "--out", tmp_path / name)
        runs[name] = _all_metrics(tmp_path / name)
    assert runs["a"] and runs["a"] == runs["b"]
    assert runs["a"] != runs["other"]  # and the seed is what fixes them


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["train", "--stages", "2"], "--stages applies to --model cnn only"),
        (["study", "--depths", "2,x"], "--depths: cannot read"),
        (["study", "--kinds", "plain,wide"], "--kinds: unknown wide"),
        (["train", "--plain-block", "single"], "--plain-block single applies to plain MLPs only"),
        (["train", "--plain", "--plain-block", "single", "--model", "cnn"], "applies to plain MLPs only"),
    ],
)
def test_bad_input_is_one_line_error(argv, message, tmp_path):
    r = lab1(*argv, "--out", tmp_path / "x", ok=False)
    assert r.exit_code == 1 and r.output.startswith("Error: ") and message in r.output, r.output
    assert r.output.count("\n") == 1
    assert not (tmp_path / "x").exists()  # nothing written for a mistake


def test_transfer_from_a_missing_folder_is_one_error_line_naming_the_option(tmp_path):
    missing = tmp_path / "no" / "such"
    r = lab1("transfer", "--from", missing, "--out", tmp_path / "x", ok=False)
    _one_line_error(r, f"Error: --from {missing}: no such folder or file, and not a model spec (RUN_FOLDER, ")
    assert not (tmp_path / "x").exists()


def _one_line_error(r, message: str) -> None:
    assert r.exit_code == 1 and r.output.startswith("Error: ") and message in r.output, r.output
    assert r.output.count("\n") == 1 and "Traceback" not in r.output


def test_transfer_from_a_folder_without_a_model_and_mismatched_distill_data(cifar10_cnn, tmp_path):
    _one_line_error(
        lab1("transfer", "--from", tmp_path, "--out", tmp_path / "x", ok=False), "no trained model"
    )
    r = lab1("distill", "--teacher", cifar10_cnn, "--dataset", "digits", "--out", tmp_path / "y", ok=False)
    _one_line_error(r, "does not match the teacher")
    assert not (tmp_path / "y").exists()


@pytest.mark.parametrize("broken", ["model.safetensors", "config.json", "metrics.json"])
def test_a_teacher_or_source_folder_with_a_corrupt_file_is_a_one_line_error(
    broken, cifar10_cnn, data_dir, tmp_path
):
    source = tmp_path / "source"
    shutil.copytree(cifar10_cnn, source)
    (source / broken).write_text("{ not json")
    for argv in (
        ["transfer", "--from", source, "--dataset", "cifar100:people"],
        ["distill", "--teacher", source],
    ):
        out = tmp_path / argv[0]
        r = lab1(*argv, "--data-dir", data_dir, *FAST, "--out", out, ok=False)
        if broken == "model.safetensors":
            _one_line_error(r, "is not a dla model file")
            assert not out.exists()
        else:  # the weights carry their own config: the other files are not read, the run goes on
            assert r.exit_code == 0, r.output


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files of ``folder``, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_train_report_to_tensorboard_writes_event_files_into_the_run_folder(tmp_path):
    out = tmp_path / "run"
    lab1("train", "--depth", "1", "--width", "8", "--dataset", "digits:0-4", "--epochs", "2",
         "--report-to", "tensorboard", "--out", out)  # fmt: skip
    m = json.loads((out / "metrics.json").read_text())
    scalars = tensorboard_scalars(out / "run")  # the tracker's run is named after the run folder
    assert [v for _, v in scalars["epoch/train_loss"]] == pytest.approx(
        [h["train_loss"] for h in m["history"]]
    )
    assert [v for _, v in scalars["epoch/val_accuracy"]] == pytest.approx(
        [h["val_accuracy"] for h in m["history"]]
    )
    assert scalars["test_accuracy"][-1][1] == pytest.approx(m["test_accuracy"])
    assert scalars["train/loss"] and scalars["train/lr"]
    assert "report_to" not in json.loads((out / "config.json").read_text())["config"]


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_train_records_the_thread_choice_in_the_run_folder(tmp_path, monkeypatch, keep_threads):
    argv = ["train", "--depth", "1", "--width", "8", "--dataset", "digits:0-4", "--epochs", "1"]
    lab1(*argv, "--threads", "2", "--out", tmp_path / "option")
    assert json.loads((tmp_path / "option" / "metrics.json").read_text())["threads"] == {
        "threads": 2,
        "why": "--threads",
    }
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    lab1(*argv, "--out", tmp_path / "omp")
    assert json.loads((tmp_path / "omp" / "metrics.json").read_text())["threads"] == {
        "threads": 1,
        "why": "OMP_NUM_THREADS",
    }
    monkeypatch.delenv("OMP_NUM_THREADS")
    lab1(*argv, "--out", tmp_path / "auto")
    choice = json.loads((tmp_path / "auto" / "metrics.json").read_text())["threads"]
    assert choice["threads"] == 1 and choice["why"].startswith("auto: ") and torch.get_num_threads() == 1
    for run in ("option", "omp", "auto"):  # a runtime option: never part of the experiment's config
        assert "threads" not in json.loads((tmp_path / run / "config.json").read_text())["config"]


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_threads_must_be_a_positive_count(value, tmp_path):
    r = lab1("train", "--threads", value, "--out", tmp_path / "x", ok=False)
    assert r.exit_code == 2 and "Error: Invalid value for '--threads'" in r.output, r.output
    assert not (tmp_path / "x").exists()
