"""The lab's claims as tests, on scikit-learn's digits (offline, seconds): if a change breaks the science, CI says so.

- degradation: a depth-20 plain MLP stays near chance where the residual MLP with the same layers learns;
- distillation: a student trained on the teacher's soft targets alone (alpha = 0) beats the same student untrained.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dla_core.data import ImageBatches
from dla_core.engine import evaluate, make_accelerator
from dla_core.models import build_model, load_model
from dla_core.seeding import seed_everything
from lab1_resnet.cli import group
from lab1_resnet.train import load_data


def lab1(*argv) -> str:
    result = CliRunner().invoke(group, [str(a) for a in argv], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_deep_plain_mlp_stays_at_chance_where_the_residual_one_learns(tmp_path):
    out = tmp_path / "study"
    lab1("study", "--depths", "20", "--seeds", "0", "--width", "32", "--epochs", "3", "--out", out)
    rows = {row["net"]: row for row in json.loads((out / "metrics.json").read_text())["rows"]}
    plain, residual = rows["plain"], rows["residual"]
    assert (
        plain["weight_layers"] == residual["weight_layers"] == 42
        and plain["parameters"] == residual["parameters"]
    )
    assert (
        plain["test_accuracy_mean"] < 0.25 and plain["train_loss_mean"] > 2.0
    )  # chance is 0.1 (ln 10 ≈ 2.30)
    assert residual["test_accuracy_mean"] > 0.8


def _accuracy(model, dataset: str) -> float:
    test = ImageBatches(load_data(dataset, "data", 0.1).test, 512)
    return evaluate(model, test, accelerator=make_accelerator())["accuracy"]


def test_a_student_distilled_from_soft_targets_alone_beats_an_untrained_one(tmp_path):
    teacher, kd = tmp_path / "teacher", tmp_path / "kd"
    lab1("train", "--depth", "1", "--width", "32", "--epochs", "3", "--lr", "0.01", "--out", teacher)
    lab1("distill", "--teacher", teacher, "--depth", "1", "--width", "8", "--alpha", "0", "--T", "2", "--lr", "0.01",
         "--epochs", "3", "--no-baseline", "--out", kd)  # fmt: skip
    rows = {row["model"]: row for row in json.loads((kd / "metrics.json").read_text())["rows"]}
    distilled = load_model(kd / "students" / "distilled")
    seed_everything(0)
    untrained = build_model(distilled.config)
    random_accuracy = _accuracy(untrained, "digits")
    assert rows["student, distilled"]["test_accuracy"] == pytest.approx(_accuracy(distilled, "digits"))
    assert rows["teacher"]["test_accuracy"] > 0.8
    assert rows["student, distilled"]["test_accuracy"] > random_accuracy + 0.4, (rows, random_accuracy)
