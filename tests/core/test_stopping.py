"""The stopping rule (``TrainConfig.patience``, ``engine.plateaued``): stop once the validation loss has not
improved for ``patience`` epochs — declared in the config, recorded in the run folder, the same under the same
seed, and the same after an interruption and --resume."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from click.testing import CliRunner

from dla_core.checkpoint import Checkpoint
from dla_core.config import Runtime, TrainConfig
from dla_core.data import ImageBatches, load_splits
from dla_core.engine import Interrupted, StepOutput, classification_step, fit, make_accelerator, plateaued
from dla_core.errors import DlaError
from dla_core.models import ModelConfig, build_model
from dla_core.recipe import save_classifier, train_into
from dla_core.runs import RunDir


def history(*val_losses: float) -> list[dict[str, float]]:
    return [{"epoch": i + 1, "train_loss": 1.0, "val_loss": v} for i, v in enumerate(val_losses)]


@pytest.mark.parametrize(
    ("losses", "patience", "stop"),
    [
        ((1.0, 0.5, 0.6, 0.7), 2, True),  # best at epoch 2, then two epochs without improving
        ((1.0, 0.5, 0.6, 0.7), 3, False),
        ((1.0, 0.5, 0.6, 0.4), 2, False),  # improved in the last epoch
        ((1.0, 0.5, 0.5, 0.5), 2, True),  # equal is not better
        ((1.0, 1.1), 2, False),  # fewer epochs than the patience after the first
        ((1.0, 1.1, 1.2), 2, True),
        ((1.0, 0.5, 0.6, 0.7), None, False),  # no rule: every epoch
    ],
)
def test_plateaued_by_value(losses, patience, stop):
    assert plateaued(history(*losses), patience) is stop


def test_no_validation_loss_never_stops():
    assert plateaued([{"epoch": 1, "train_loss": 1.0}] * 5, 1) is False


class ScriptedValLoss:
    """An eval step whose loss is the next of ``losses`` (one validation batch per epoch): the epoch at which the
    rule stops is known in advance, whatever the model learns."""

    def __init__(self, losses):
        self.losses, self.calls = list(losses), 0

    def __call__(self, model, batch) -> StepOutput:
        out = classification_step(model, batch)
        loss = self.losses[min(self.calls, len(self.losses) - 1)]
        self.calls += 1
        return StepOutput(torch.tensor(loss), out.count, out.correct)


LOSSES = (1.0, 0.8, 0.7, 0.75, 0.72, 0.9, 0.5, 0.4)  # best at epoch 3; patience 3 stops after epoch 6


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits")


def mlp(splits, seed=0):
    torch.manual_seed(seed)
    mean, std = splits.train.stats()
    return build_model(ModelConfig("mlp", splits.train.shape, 10, depth=1, width=16, mean=mean, std=std))


def run_fit(digits, run, step=classification_step, resume=False, seed=0):
    return fit(
        mlp(digits, seed),
        ImageBatches(digits.train, 64, shuffle=True, seed=3),
        TrainConfig(epochs=len(LOSSES), lr=1e-3, seed=3, patience=3),
        accelerator=make_accelerator(),
        step=step,
        val=ImageBatches(digits.val, len(digits.val)),
        eval_step=ScriptedValLoss(LOSSES[len(saved_history(run)) :] if resume else LOSSES),
        run=run,
        resume=resume,
    )


def saved_history(run):
    """The epochs a run folder's checkpoint has finished."""
    return Checkpoint.load(run.checkpoint_path).history if run.checkpoint_path.is_file() else []


def test_fit_stops_at_the_plateau_and_a_resume_stops_where_the_whole_run_did(digits, tmp_path):
    whole = run_fit(digits, RunDir.create(tmp_path / "whole", {}, command="t"))
    assert [h["epoch"] for h in whole.history] == [1, 2, 3, 4, 5, 6]
    assert [h["val_loss"] for h in whole.history] == pytest.approx(LOSSES[:6])
    again = run_fit(digits, RunDir.create(tmp_path / "again", {}, command="t"))  # same seed, same run
    for p, q in zip(whole.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(p, q)

    calls = {"n": 0}

    def ctrl_c_in_epoch_5(model, batch):
        calls["n"] += 1
        if (
            calls["n"] == 4 * len(ImageBatches(digits.train, 64, shuffle=True)) + 5
        ):  # a few batches into epoch 5
            signal.raise_signal(signal.SIGINT)
        return classification_step(model, batch)

    run = RunDir.create(tmp_path / "cut", {}, command="t")
    with pytest.raises(Interrupted):
        run_fit(digits, run, step=ctrl_c_in_epoch_5)
    assert len(saved_history(run)) == 4
    resumed = run_fit(digits, run, resume=True, seed=99)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5, 6]
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    # resuming the finished run trains nothing more: the rule is read from the saved history first
    assert len(saved_history(run)) == 6  # the stop epoch's checkpoint is written, not only held
    trained = {"n": 0}

    def counted(model, batch):
        trained["n"] += 1
        return classification_step(model, batch)

    done = run_fit(digits, run, step=counted, resume=True, seed=5)
    assert len(done.history) == 6 and trained["n"] == 0
    for p, q in zip(whole.model.parameters(), done.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_the_rule_is_declared_in_the_config_and_its_outcome_recorded(digits, tmp_path):
    mcfg = ModelConfig("mlp", digits.train.shape, 10, depth=1, width=16)
    cfg = TrainConfig(epochs=len(LOSSES), lr=1e-3, patience=3)
    run = RunDir.create(tmp_path / "run", {"train": cfg}, command="test")
    batches = {
        "train": ImageBatches(digits.train, 64, shuffle=True),
        "val": ImageBatches(digits.val, len(digits.val)),
        "test": ImageBatches(digits.test, len(digits.test)),
    }
    train_into(run, build_model(mcfg), batches, cfg, Runtime(), save=save_classifier(mcfg), plot=False,
               eval_step=ScriptedValLoss(LOSSES))  # fmt: skip
    m = run.read_metrics()
    assert m["stopped_early"] is True and m["epochs"] == 6 and len(m["history"]) == 6
    assert json.loads((run.path / "config.json").read_text())["config"]["train"]["patience"] == 3


def test_patience_without_a_validation_split_is_refused(digits):
    with pytest.raises(DlaError, match="no validation split"):
        fit(mlp(digits), ImageBatches(digits.train, 64), TrainConfig(epochs=2, patience=1),
            accelerator=make_accelerator())  # fmt: skip


def test_every_training_command_offers_patience():
    import click

    from dla_core import cli

    @click.command()
    @cli.train_options(epochs_default=3, lr_default=1e-3, batch_default=8)
    def go(**opts):
        click.echo(f"patience={opts['patience']}")

    assert CliRunner().invoke(go, ["--patience", "4"]).output == "patience=4\n"
    assert CliRunner().invoke(go, []).output == "patience=None\n"
    assert CliRunner().invoke(go, ["--patience", "0"]).exit_code == 2
