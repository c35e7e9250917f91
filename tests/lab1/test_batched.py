"""Batched seeds: each seed of a cell trained in one stacked model equals a single run with that seed."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from dla_core.engine import fit, make_accelerator
from dla_core.models import build_model
from dla_core.seeding import seed_everything
from lab1_resnet.batched import train_seeds
from lab1_resnet.study import DepthStudy
from lab1_resnet.train import batches, load_data, model_config


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", "data", 0.1)


@pytest.mark.parametrize("kind", ["plain", "residual"])
def test_each_batched_seed_equals_its_single_run(digits, kind):
    study = DepthStudy(depths=(3,), kinds=(kind,), seeds=(0, 5), width=16)
    cells = [replace(c, train=replace(c.train, epochs=2)) for c in study.cells()]
    together = train_seeds(cells, digits)
    for cell, got in zip(cells, together, strict=True):
        seed_everything(cell.train.seed)
        model = build_model(model_config(cell, digits.train))
        b = batches(digits, cell.batch_size, cell.augment, cell.train.seed)
        alone = fit(model, b["train"], cell.train, accelerator=make_accelerator(), val=b["val"])
        assert got.seed == cell.train.seed and len(got.history) == len(alone.history) == 2
        for mine, theirs in zip(got.history, alone.history, strict=True):
            assert mine.keys() == theirs.keys()
            for key in ("train_loss", "val_loss"):
                assert mine[key] == pytest.approx(theirs[key], abs=1e-5), key
            for key in ("train_accuracy", "val_accuracy", "lr", "epoch"):
                assert mine[key] == theirs[key], key
        assert got.grad_norms.keys() == alone.grad_norms.keys()
        for name, norms in alone.grad_norms.items():
            assert got.grad_norms[name] == pytest.approx(norms, rel=1e-4), name
        for name, value in alone.model.state_dict().items():
            torch.testing.assert_close(got.state_dict[name], value, atol=1e-5, rtol=1e-4)
