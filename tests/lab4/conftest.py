"""Fixtures of lab4's tests: a small classifier trained in-process on digits 0-4 (ID; 5-9 are OOD)."""

from __future__ import annotations

import pytest
import torch

from dla_core.data import ImageBatches, load_splits
from dla_core.engine import TrainConfig, fit
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
    fit(model, ImageBatches(digits04.train, 64, shuffle=True), TrainConfig(epochs=8, lr=3e-3, cpu=True))
    return model.eval()
