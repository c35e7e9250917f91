"""Smoke runs (`--max-steps N`): the one loop's cap on steps, epochs and evaluation batches, and `reproduce`
passing it to every step that trains (and a recipe's own cap to the others), with the report saying so."""

from __future__ import annotations

import click
import pytest
import torch

from dla_core import cli
from dla_core.config import TrainConfig, from_options
from dla_core.data import ImageBatches, load_splits
from dla_core.engine import classification_step, evaluate, fit, make_accelerator
from dla_core.models import ModelConfig, build_model
from dla_core.reproduce import Step, smoke_banner


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits")


def counting_step(calls: list[bool]):
    """classification_step, recording for each batch whether the model was training."""

    def step(model, batch):
        calls.append(model.training)
        return classification_step(model, batch)

    return step


def mlp(splits):
    torch.manual_seed(0)
    return build_model(ModelConfig("mlp", splits.train.shape, 10, depth=2, width=16))


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_max_steps_caps_optimizer_steps_per_epoch_epochs_and_validation_batches(digits, grad_accum):
    calls: list[bool] = []
    step = counting_step(calls)
    train = ImageBatches(digits.train, 32, shuffle=True)
    assert train.num_batches(1) > 20
    result = fit(
        mlp(digits),
        train,
        TrainConfig(epochs=5, max_steps=2, grad_accum=grad_accum),
        accelerator=make_accelerator(),
        step=step,
        val=ImageBatches(digits.val, 16),
        eval_step=step,
    )
    assert [h["epoch"] for h in result.history] == [1, 2]  # at most max_steps epochs
    per_epoch = [True] * (2 * grad_accum) + [False] * 2  # 2 optimizer steps, then 2 validation batches
    assert calls == per_epoch * 2


def test_without_max_steps_every_batch_of_every_epoch_trains(digits):
    calls: list[bool] = []
    train = ImageBatches(digits.train, 256, shuffle=True)
    fit(mlp(digits), train, TrainConfig(epochs=2), accelerator=make_accelerator(), step=counting_step(calls))
    assert calls == [True] * (2 * train.num_batches(1))


def test_evaluate_reads_at_most_max_batches(digits):
    calls: list[bool] = []
    test = ImageBatches(digits.test, 16)
    model = mlp(digits)
    capped = evaluate(model, test, accelerator=make_accelerator(), step=counting_step(calls), max_batches=3)
    assert len(calls) == 3
    whole = evaluate(model, test, accelerator=make_accelerator(), step=counting_step(calls))
    assert len(calls) == 3 + test.num_batches(1) and capped != whole


def test_every_training_command_takes_max_steps_into_its_train_config():
    @click.command()
    @cli.train_options(epochs_default=3, lr_default=1e-3, batch_default=8)
    def train(**opts):
        click.echo(repr(from_options(TrainConfig, opts).max_steps))

    from click.testing import CliRunner

    assert CliRunner().invoke(train, ["--max-steps", "4"]).output.strip() == "4"
    assert CliRunner().invoke(train, []).output.strip() == "None"
    bad = CliRunner().invoke(train, ["--max-steps", "0"])
    assert bad.exit_code == 2 and "--max-steps" in bad.output


def test_a_smoke_run_gives_training_steps_max_steps_and_the_others_their_own_cap():
    group = click.Group()

    @group.command()
    @cli.MAX_STEPS
    def train(max_steps):
        pass

    @group.command()
    @click.option("--limit", type=int)
    def detect(limit):
        pass

    trains, detects = Step("a", ("train", "--x")), Step("b", ("detect",), smoke=("--limit", "64"))
    assert trains.smoked(group, 3).argv == ("train", "--x", "--max-steps", "3")
    assert detects.smoked(group, 3).argv == ("detect", "--limit", "64")
    assert trains.smoked(group, None) is trains and detects.smoked(group, None) is detects


def test_the_banner_says_the_numbers_are_not_results():
    assert smoke_banner(1) == (
        "Smoke run: at most 1 step per epoch (1 epoch, 1 batch per evaluation) — numbers are not results."
    )
    assert "at most 3 steps per epoch (3 epochs, 3 batches" in smoke_banner(3)


#### `reproduce --max-steps` on a toy lab ####

ran: list[tuple[str, object]] = []
toy = click.Group("toy")


@toy.command()
@cli.MAX_STEPS
@cli.OUT
@cli.RESUME
def train(max_steps, out, resume):
    from dla_core.runs import RunDir

    ran.append(("train", max_steps))
    RunDir.create(out, {"max_steps": max_steps}, command="toy train", resume=resume)


@toy.command()
@click.option("--limit", type=int, default=None)
@cli.OUT
def detect(limit, out):
    from dla_core.runs import RunDir

    ran.append(("detect", limit))
    RunDir.create(out, {"limit": limit}, command="toy detect", resumable=False)


def _steps(profile, out, tiny):
    return [Step("train", ("train",)), Step("detect", ("detect",), resumable=False, smoke=("--limit", "64"))]


def _sections(out, steps):
    from dla_core.report import Section

    return [Section("Toy", text="toy")]


def _reproduce_toy(*args):
    from click.testing import CliRunner

    from dla_core.reproduce import Recipe

    if "reproduce" not in toy.commands:
        cli.add_reproduce_commands(toy, Recipe("toy", "Toy", "A toy lab.", _steps, _sections), lab="toy")
    ran.clear()
    return CliRunner().invoke(toy, ["reproduce", *map(str, args)])


def test_reproduce_max_steps_caps_every_step_and_the_report_says_it_is_a_smoke_run(tmp_path):
    from dla_core.runs import RunDir

    r = _reproduce_toy("--max-steps", 2, "--out", tmp_path / "smoke")
    assert r.exit_code == 0, r.output
    assert ran == [("train", 2), ("detect", 64)]
    assert smoke_banner(2) in r.output
    report = (tmp_path / "smoke" / "report.md").read_text()
    assert f"**{smoke_banner(2)}**" in report
    assert RunDir(tmp_path / "smoke").saved["config"]["max_steps"] == 2
    manifest = RunDir(tmp_path / "smoke").read_metrics()["steps"]
    assert "--max-steps 2" in manifest["train"]["command"] and "--limit 64" in manifest["detect"]["command"]

    r = _reproduce_toy("--out", tmp_path / "whole")
    assert r.exit_code == 0, r.output
    assert ran == [("train", None), ("detect", None)]
    assert "Smoke run" not in (tmp_path / "whole" / "report.md").read_text()


def test_a_resume_cannot_turn_a_smoke_run_into_a_real_one(tmp_path):
    assert _reproduce_toy("--max-steps", 1, "--out", tmp_path / "smoke").exit_code == 0
    again = _reproduce_toy("--out", tmp_path / "smoke", "--resume")
    assert again.exit_code != 0 and ran == []


def test_the_time_estimate_names_the_gpu_guess_and_the_cpu_measurement_apart():
    from dla_core.reproduce import time_estimate

    steps = [Step("a", ("x",), minutes=10, cpu_minutes=100), Step("b", ("y",), minutes=5)]
    assert time_estimate(steps) == (
        "2 steps: about 15 min on one GPU (a guess: never timed on a GPU); about 1.7 h of one CPU core for 1 of "
        "the steps (measured per step: bench/RESULTS.md)."
    )
    assert time_estimate([Step("a", ("x",), cpu_minutes=30)]) == (
        "1 step: about 30 min of one CPU core (measured per step: bench/RESULTS.md)."
    )
    assert time_estimate([Step("a", ("x",))]) is None
