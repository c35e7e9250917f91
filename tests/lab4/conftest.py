"""Fixtures of lab4's tests: a small classifier trained in-process on digits 0-4 (ID; 5-9 are OOD)."""

from __future__ import annotations

import pytest
import torch

from dla_core.data import ImageBatches, load_splits
from dla_core.engine import TrainConfig, fit, make_accelerator
from dla_core.models import ModelConfig, build_model


@pytest.fixture(scope="session")
def digits04():
    return load_splits("digits:0-4")


@pytest.fixture(scope="session")
def digits_mlp(digits04):
    """An MLP that classifies digits 0-4 well (> 90% test accuracy), in eval mode."""
    torch.manual_seed(0)
    mean, std = digits04.train.stats()
    model = build_model(ModelConfig("mlp", digits04.train.shape, 5, depth=1, width=64, mean=mean, std=std))
    fit(
        model,
        ImageBatches(digits04.train, 64, shuffle=True),
        TrainConfig(epochs=8, lr=3e-3),
        accelerator=make_accelerator(cpu=True),
    )
    return model.eval()


def train_run(out, **options):
    """A classifier trained through lab4's own training function (what `lab4 train` runs)."""
    from dla_core.config import Runtime
    from lab4_ood.training import TrainRunConfig, train_classifier

    cfg = TrainRunConfig(
        dataset="digits:0-4",
        family=options.pop("family", "mlp"),
        depth=1,
        width=options.pop("width", 64),
        stages=1,
        batch_size=64,
        train=TrainConfig(epochs=options.pop("epochs", 6), lr=3e-3, seed=options.pop("seed", 0)),
        **options,
    )
    train_classifier(cfg, Runtime(out=out, cpu=True))
    return out


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A `lab4 train` run folder: an MLP on digits 0-4 (> 90% test accuracy)."""
    return train_run(tmp_path_factory.mktemp("lab4-run") / "mlp")


@pytest.fixture(scope="session")
def batchnorm_run(tmp_path_factory):
    """A `lab4 train` run folder holding a small CNN with BatchNorm layers."""
    return train_run(tmp_path_factory.mktemp("lab4-bn") / "cnn", family="cnn", width=8, epochs=2)
