"""`lab4 train` resumes exactly: a run interrupted mid-epoch ends where an uninterrupted one does; `train` and
`train-ae` write their run folders through the core recipe; runtime options stay out of every config."""

from __future__ import annotations

import json
import signal
from dataclasses import replace

import pytest
import torch

import lab4_ood.training as training
from dla_core.config import Runtime
from dla_core.engine import Interrupted, TrainConfig
from dla_core.models import load_model
from lab4_ood.autoencoder import AUTOENCODER, load_autoencoder
from lab4_ood.training import AutoencoderConfig, TrainRunConfig, train_autoencoder, train_classifier


def config(**options):
    return TrainRunConfig(
        dataset="digits:0-4",
        family="mlp",
        depth=1,
        width=32,
        batch_size=64,
        train=TrainConfig(epochs=3, lr=3e-3, seed=5, log_grad_norms=True),
        **options,
    )


@pytest.mark.parametrize(
    "options",
    [
        {"outlier_exposure": "digits:5-9", "oe_weight": 0.5},
        {"outlier_exposure": "digits:5-9", "adversarial": "pgd", "eps": 0.1, "pgd_steps": 2},
        {"trades_beta": 6.0, "eps": 0.1, "pgd_steps": 2, "logitnorm_tau": 0.5},
    ],
    ids=["oe", "oe+pgd", "trades+logitnorm"],
)
def test_ctrl_c_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch, options):
    cfg = config(**options)
    whole, parted = Runtime(out=tmp_path / "whole", cpu=True), Runtime(out=tmp_path / "parted", cpu=True)
    train_classifier(cfg, whole)

    real_call = training.RobustStep.__call__
    calls = {"n": 0}

    def step_then_ctrl_c(self, model, batch):
        calls["n"] += 1
        if (
            calls["n"] == 10
        ):  # batch 4 of the second epoch (6 batches per epoch: digits 0-4, 360 training images)
            signal.raise_signal(signal.SIGINT)
        return real_call(self, model, batch)

    monkeypatch.setattr(training.RobustStep, "__call__", step_then_ctrl_c)
    with pytest.raises(Interrupted, match="--resume"):
        train_classifier(cfg, parted)
    monkeypatch.setattr(training.RobustStep, "__call__", real_call)
    state = torch.load(parted.out / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["batch"]) == (1, 4)  # stopped mid-epoch, as meant
    train_classifier(cfg, replace(parted, resume=True))

    a, b = (json.loads((c.out / "metrics.json").read_text()) for c in (whole, parted))
    for ra, rb in zip(a["history"], b["history"], strict=True):
        assert ra["train_loss"] == rb["train_loss"] and ra["val_accuracy"] == rb["val_accuracy"]
    assert a["test_accuracy"] == b["test_accuracy"] and a["test_loss"] == b["test_loss"]
    assert a["grad_norms"] == b["grad_norms"]  # the interrupted epoch's mean included
    wa, wb = load_model(whole.out).state_dict(), load_model(parted.out).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_lab4_run_records_its_class_map_and_the_unified_metric_keys(digits_run):
    """The classifier's config comes from the data (dla_core.models.model_config_for), as in lab1."""
    extra = load_model(digits_run).config.extra
    assert extra["dataset"] == "digits:0-4" and extra["class_map"] == [0, 1, 2, 3, 4]
    m = json.loads((digits_run / "metrics.json").read_text())
    assert m["finished"] is True and m["model_file"] == "model.safetensors"
    assert m["parameters"] == m["trainable_parameters"] > 0 and m["epochs"] == 6
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy"} <= set(
        m
    )


def test_train_ae_goes_through_the_recipe_and_keeps_test_mse(digits_run, tmp_path):
    cfg = AutoencoderConfig(
        encoder=digits_run, dataset="digits:0-4", width=8, train=TrainConfig(epochs=1, lr=1e-3, seed=1)
    )
    returned = train_autoencoder(cfg, Runtime(out=tmp_path / "ae", cpu=True))
    m = json.loads((tmp_path / "ae" / "metrics.json").read_text())
    assert returned == m
    assert m["test_mse"] == m["test_loss"] > 0 and m["val_loss"] > 0 and m["epochs"] == 1
    assert m["finished"] is True and m["model_file"] == AUTOENCODER
    # the encoder is frozen: what trains is the decoder; no final accuracy for a reconstruction loss (no nan)
    assert m["decoder_parameters"] == m["trainable_parameters"] < m["parameters"]
    assert not any("accuracy" in k for k in m)
    for name in (AUTOENCODER, "learning_curves.png", "reconstructions.png"):
        assert (tmp_path / "ae" / name).stat().st_size > 0
    ae = load_autoencoder(tmp_path / "ae")
    assert ae.decoder_config.width == 8


@pytest.mark.parametrize("command", ["train", "train-ae", "detect", "attack"])
def test_runtime_options_stay_out_of_config_json(command, digits_run, tmp_path):
    """--out, --data-dir, --download, --cpu say where and how to run: not saved, so free on --resume."""
    from click.testing import CliRunner

    from lab4_ood.cli import group

    argv = {
        "train": ["train", "--dataset", "digits:0-4", "--model", "mlp", "--depth", "1", "--epochs", "1"],
        "train-ae": ["train-ae", "--encoder", digits_run, "--width", "4", "--epochs", "1"],
        "detect": ["detect", "--model", digits_run, "--ood", "fake", "--limit", "30"],
        "attack": ["attack", "--model", digits_run, "--eps", "0", "--limit", "30"],
    }[command]
    out = tmp_path / "run"
    common = ["--cpu", "--data-dir", tmp_path / "nowhere", "--out", out]
    result = CliRunner().invoke(group, [str(a) for a in [*argv, *common]])
    assert result.exit_code == 0, result.output + repr(result.exception)
    config = json.loads((out / "config.json").read_text())["config"]
    assert not {"out", "data_dir", "download", "cpu", "resume"} & set(config), sorted(config)
    assert config["dataset" if command != "detect" else "id"] == "digits:0-4"
    if command in ("train", "train-ae"):  # one concise summary line
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"lab4 {command}: ") and lines[0].endswith(f"→ {out}")


def test_train_report_to_tensorboard_writes_event_files_into_the_run_folder(tmp_path):
    from click.testing import CliRunner
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lab4_ood.cli import group

    out = tmp_path / "run"
    argv = ["train", "--dataset", "digits:0-4", "--model", "mlp", "--depth", "1", "--epochs", "2",
            "--report-to", "tensorboard", "--out", out]  # fmt: skip
    result = CliRunner().invoke(group, [str(a) for a in argv])
    assert result.exit_code == 0, result.output + repr(result.exception)
    m = json.loads((out / "metrics.json").read_text())
    events = EventAccumulator(str(out / "run"))  # the tracker's run is named after the run folder
    events.Reload()
    epoch_loss = [e.value for e in events.Scalars("epoch/train_loss")]
    assert epoch_loss == pytest.approx([h["train_loss"] for h in m["history"]])
    assert events.Scalars("test_accuracy")[-1].value == pytest.approx(m["test_accuracy"])
    assert {"train/loss", "train/lr", "epoch/val_accuracy"} <= set(events.Tags()["scalars"])
