"""Batched seeds: each seed of a cell trained in one stacked model equals a single run with that seed, and a
study trained that way writes the cell folders, and resumes, as one run per cell does."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from dla_core.config import Runtime
from dla_core.engine import TrainConfig, evaluate, fit, make_accelerator
from dla_core.errors import DlaError
from dla_core.models import build_model
from dla_core.recipe import is_finished
from dla_core.seeding import seed_everything
from lab1_resnet import batched
from lab1_resnet import study as study_module
from lab1_resnet.batched import train_seeds
from lab1_resnet.choices import FAMILIES
from lab1_resnet.cli import group
from lab1_resnet.study import DepthStudy
from lab1_resnet.train import TrainRun, batches, load_data, model_config


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", "data", 0.1)


@pytest.mark.parametrize("kind", ["plain", "residual", "plain,residual"])
def test_each_batched_seed_equals_its_single_run(digits, kind):
    study = DepthStudy(depths=(3,), kinds=tuple(kind.split(",")), seeds=(0, 5), width=16)
    _stacked_equals_single([replace(c, train=replace(c.train, epochs=2)) for c in study.cells()], digits)


def _stacked_equals_single(cells, digits) -> None:
    """Each cell trained in one stacked model equals its single ``fit``: history, gradient norms, weights, test."""
    together = train_seeds(cells, digits)
    for cell, got in zip(cells, together, strict=True):
        seed_everything(cell.train.seed)
        model = build_model(model_config(cell, digits.train))
        b = batches(digits, cell.batch_size, cell.augment, cell.train.seed)
        alone = fit(model, b["train"], cell.train, accelerator=make_accelerator(), val=b["val"])
        assert got.seed == cell.train.seed and len(got.history) == len(alone.history) == cell.train.epochs
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
        test = evaluate(alone.model, b["test"], accelerator=make_accelerator())
        assert got.extra["test_loss"] == pytest.approx(test["loss"], abs=1e-5)
        assert got.extra["test_accuracy"] == test["accuracy"]


def test_a_plain_and_a_residual_net_of_one_depth_stack_but_other_shapes_do_not():
    cells = DepthStudy(depths=(1, 3), seeds=(0, 1), width=8).cells()
    assert [[c.name for c in g] for g in batched.groups(cells)] == [
        ["mlp-d1-plain-s0", "mlp-d1-plain-s1", "mlp-d1-residual-s0", "mlp-d1-residual-s1"],
        ["mlp-d3-plain-s0", "mlp-d3-plain-s1", "mlp-d3-residual-s0", "mlp-d3-residual-s1"],
    ]
    single = DepthStudy(depths=(2,), seeds=(0,), plain_block="single").cells()  # other layers: apart
    assert [[c.name for c in g] for g in batched.groups(single)] == [
        ["mlp-d2-plain-single-s0"],
        ["mlp-d2-residual-s0"],
    ]
    sgd = [replace(c, train=replace(c.train, optimizer="sgd")) for c in cells[:2]]
    assert not batched.batchable(sgd[0]) and batched.groups(sgd) == [[sgd[0]], [sgd[1]]]


def test_every_field_of_a_cell_is_classified_for_the_stack():
    """``STACKED`` names every field of a cell and of its TrainConfig: a new training option is a decision (the
    stack reproduces it, or such cells train as single runs), never silently ignored by `lab1 study`."""
    assert set(batched.STACKED) == {f.name for f in dataclasses.fields(TrainRun)}
    assert set(batched.STACKED["train"]) == {f.name for f in dataclasses.fields(TrainConfig)}


def _another(name, value):
    """A value other than ``value`` for field ``name`` (a valid one where the cell checks it)."""
    if name == "model":
        return next(f for f in FAMILIES if f != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return f"{value}-other"
    if value is None:
        return 0.1
    return value * 2 if value else 1


def test_a_cell_stacks_only_with_the_values_the_stack_reproduces(digits):
    cell = DepthStudy(depths=(2,), seeds=(0,), width=8).cells()[0]
    assert batched.batchable(cell)
    for table, owner in ((batched.STACKED, cell), (batched.STACKED["train"], cell.train)):
        for name, rule in table.items():
            if rule is batched.ANY or isinstance(rule, dict):
                continue
            changed = replace(owner, **{name: _another(name, getattr(owner, name))})
            other = changed if owner is cell else replace(cell, train=changed)
            assert not batched.batchable(other), name
            with pytest.raises(DlaError, match=f"do not reproduce this training \\(.*{name}"):
                batched.Group([other], digits)
    # an unclassified field (a TrainConfig grown by one) keeps the cell out of the stack
    grown = dataclasses.make_dataclass(
        "Grown", [("label_smoothing", float, 0.0)], bases=(TrainConfig,), frozen=True
    )
    assert not batched.batchable(replace(cell, train=grown(**dataclasses.asdict(cell.train))))


@pytest.mark.slow
def test_the_stack_honours_every_training_field_it_takes_any_value_of(digits):
    """A field ``STACKED`` lets through with any value changes the stacked training as it changes a single run's:
    classifying a new option ANY without teaching the stack to reproduce it fails here."""
    cell = DepthStudy(depths=(2,), kinds=("residual",), seeds=(3,), width=8).cells()[0]
    cell = replace(cell, train=replace(cell.train, epochs=1))
    for name, rule in batched.STACKED["train"].items():
        if rule is batched.ANY:
            changed = replace(
                cell, train=replace(cell.train, **{name: _another(name, getattr(cell.train, name))})
            )
            assert batched.batchable(changed), name
            _stacked_equals_single([changed], digits)


#### The study, batched and not ####

STUDY = ["study", "--depths", "1,3", "--seeds", "0,1", "--width", "16", "--dataset", "digits:0-2",
         "--batch-size", "32"]  # fmt: skip


def lab1(*argv, code: int = 0) -> str:
    result = CliRunner().invoke(group, [str(a) for a in argv], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def _close(mine, theirs, where: str, *, exact: bool) -> None:
    """Equal JSON values, floats up to float reassociation (or exactly); wall-clock timings left out."""
    if isinstance(theirs, dict):
        assert mine.keys() == theirs.keys(), where
        for k in theirs:
            if "seconds" not in k:
                _close(mine[k], theirs[k], f"{where}.{k}", exact=exact)
    elif isinstance(theirs, list):
        assert len(mine) == len(theirs), where
        for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            _close(a, b, f"{where}[{i}]", exact=exact)
    elif isinstance(theirs, float) and not exact:
        assert math.isclose(mine, theirs, rel_tol=1e-4, abs_tol=1e-5), (where, mine, theirs)
    else:
        assert mine == theirs, where


def _tensors_close(mine, theirs, where: str) -> None:
    if isinstance(theirs, dict):
        assert mine.keys() == theirs.keys(), where
        for k in theirs:
            _tensors_close(mine[k], theirs[k], f"{where}.{k}")
    elif isinstance(theirs, list):
        assert len(mine) == len(theirs), where
        for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            _tensors_close(a, b, f"{where}[{i}]")
    elif isinstance(theirs, torch.Tensor):
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape, where
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4, msg=where)
    elif "seconds" in where.rsplit(".", 1)[-1]:
        pass  # wall-clock timings
    elif isinstance(theirs, float):
        assert math.isclose(mine, theirs, rel_tol=1e-4, abs_tol=1e-5), (where, mine, theirs)
    else:
        assert mine == theirs, where


def _cells(out: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted((out / "cells").iterdir())}


@pytest.mark.slow
def test_a_batched_study_writes_the_cell_folders_of_one_run_per_cell(tmp_path, monkeypatch):
    trained = []
    init = batched.Group.__init__
    monkeypatch.setattr(batched.Group, "__init__", lambda self, cells, *a, **k: trained.append(
        [c.name for c in cells]) or init(self, cells, *a, **k))  # fmt: skip
    lab1(*STUDY, "--epochs", "2", "--out", tmp_path / "batched")
    assert trained == [
        ["mlp-d1-plain-s0", "mlp-d1-plain-s1", "mlp-d1-residual-s0", "mlp-d1-residual-s1"],
        ["mlp-d3-plain-s0", "mlp-d3-plain-s1", "mlp-d3-residual-s0", "mlp-d3-residual-s1"],
    ]
    lab1(*STUDY, "--epochs", "2", "--no-batch-seeds", "--out", tmp_path / "single")
    assert len(trained) == 2
    mine, theirs = _cells(tmp_path / "batched"), _cells(tmp_path / "single")
    assert mine.keys() == theirs.keys() and len(mine) == 8
    for name, path in theirs.items():
        assert sorted(p.name for p in mine[name].iterdir()) == sorted(p.name for p in path.iterdir()), name
        assert is_finished(mine[name])
        config = json.loads((mine[name] / "config.json").read_text())
        assert config["command"] == "lab1 train"
        assert config["config"] == json.loads((path / "config.json").read_text())["config"]
        metrics = json.loads((mine[name] / "metrics.json").read_text())
        _close(metrics, json.loads((path / "metrics.json").read_text()), name, exact=False)
        _tensors_close(
            load_file(mine[name] / "model.safetensors"), load_file(path / "model.safetensors"), name
        )
        ckpt = torch.load(mine[name] / "checkpoint.pt", weights_only=True)
        _tensors_close(ckpt, torch.load(path / "checkpoint.pt", weights_only=True), f"{name}/checkpoint.pt")
    assert not (tmp_path / "batched" / study_module.GROUPS).exists()  # the groups' checkpoints are gone
    _close(*(json.loads((tmp_path / s / "metrics.json").read_text()) for s in ("batched", "single")), "study",
           exact=False)  # fmt: skip
    # --batch-seeds is not an option of the experiment: a study resumes whichever way it was trained
    lab1(*STUDY, "--epochs", "2", "--no-batch-seeds", "--resume", "--out", tmp_path / "batched")
    lab1(*STUDY, "--epochs", "2", "--resume", "--out", tmp_path / "single")
    assert len(trained) == 2


def test_an_interrupted_batched_study_resumes_to_the_uninterrupted_numbers(tmp_path, monkeypatch):
    lab1(*STUDY, "--epochs", "3", "--out", tmp_path / "whole")
    epochs = []
    train_epoch = batched.Group.train_epoch
    monkeypatch.setattr(
        batched.Group, "train_epoch", lambda self: epochs.append(self.epoch) or train_epoch(self)
    )
    end_epoch = study_module._GroupSaver.end_epoch

    def interrupt(self, group):
        end_epoch(self, group)
        if group.cells[0].depth == 3 and group.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(study_module._GroupSaver, "end_epoch", interrupt)
    out = lab1(*STUDY, "--epochs", "3", "--out", tmp_path / "cut", code=130)
    assert "rerun with --resume" in out
    assert epochs == [0, 1, 2, 0]  # depth 1 done, depth 3 stopped after its first epoch
    assert (tmp_path / "cut" / study_module.GROUPS / "mlp-d3-plain+residual" / "checkpoint.pt").exists()
    monkeypatch.setattr(study_module._GroupSaver, "end_epoch", end_epoch)
    lab1(*STUDY, "--epochs", "3", "--resume", "--out", tmp_path / "cut")
    assert epochs == [0, 1, 2, 0, 1, 2]  # continued from the group's checkpoint, depth 1 not retrained
    whole, cut = _cells(tmp_path / "whole"), _cells(tmp_path / "cut")
    assert whole.keys() == cut.keys()
    for name, path in whole.items():
        _close(json.loads((cut[name] / "metrics.json").read_text()), json.loads((path / "metrics.json").read_text()),
               name, exact=True)  # fmt: skip
    assert not (tmp_path / "cut" / study_module.GROUPS).exists()


def test_cells_stack_only_in_one_process_on_the_cpu_without_trackers_or_compile(monkeypatch):
    assert study_module.stacks_here(Runtime())
    assert not study_module.stacks_here(Runtime(report_to=("tensorboard",)))
    assert study_module.stacks_here(Runtime(report_to=("none",)))
    assert not study_module.stacks_here(Runtime(compile="default"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not study_module.stacks_here(Runtime()) and study_module.stacks_here(Runtime(cpu=True))
    monkeypatch.setattr(study_module, "world_size", lambda: 2)
    assert not study_module.stacks_here(Runtime(cpu=True))


def test_a_study_under_several_processes_trains_one_run_per_cell(tmp_path, monkeypatch):
    monkeypatch.setattr(study_module, "world_size", lambda: 2)  # the cells' DDP runs: one run each
    monkeypatch.setattr(batched.Group, "__init__", lambda *a, **k: pytest.fail("trained batched"))
    lab1("study", "--depths", "1", "--seeds", "0", "--width", "8", "--dataset", "digits:0-2", "--epochs", "1",
         "--out", tmp_path / "s")  # fmt: skip
    assert is_finished(tmp_path / "s" / "cells" / "mlp-d1-plain-s0")
