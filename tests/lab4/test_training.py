"""`lab4 train` resumes exactly: a run interrupted mid-epoch ends where an uninterrupted one does."""

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
from lab4_ood.training import TrainRunConfig, train_classifier


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
    ],
    ids=["oe", "oe+pgd"],
)
def test_ctrl_c_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch, options):
    cfg = config(**options)
    whole, parted = Runtime(out=tmp_path / "whole", cpu=True), Runtime(out=tmp_path / "parted", cpu=True)
    train_classifier(cfg, whole)

    real_call = training.RobustStep.__call__
    calls = {"n": 0}

    def step_then_ctrl_c(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 14:  # batch 4 of the second epoch (10 batches per epoch)
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
