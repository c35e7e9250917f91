"""The shared recipe (train into a run folder, child runs) and the one way from options to configs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dla_core.config import RUNTIME_OPTIONS, Runtime, from_options
from dla_core.data import ImageBatches, load_splits
from dla_core.engine import StepOutput, TrainConfig
from dla_core.errors import DlaError
from dla_core.models import build_model, load_model, model_config_for
from dla_core.recipe import FINISHED, METRIC_KEYS, child_run, is_finished, save_classifier, train_into
from dla_core.runs import RunDir
from dla_core.seeding import seed_everything

#### from_options ####


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    depths: tuple[int, ...] = (1, 2)
    source: str | None = None
    limit: int | None = 5
    train: Inner = field(default_factory=Inner)


def test_from_options_fills_nested_configs_from_flat_options():
    opts = {"name": "y", "depths": [3, 4], "lr": 0.5, "seed": 7, "out": Path("o"), "cpu": True}
    cfg = from_options(Outer, opts)
    assert cfg == Outer(name="y", depths=(3, 4), train=Inner(lr=0.5, seed=7))
    assert isinstance(cfg.depths, tuple)
    # overrides win, also inside a nested config; absent options keep their defaults
    assert from_options(Outer, opts, name="z", train={"seed": 1}) == Outer("z", (3, 4), train=Inner(0.5, 1))
    assert from_options(Outer, {}) == Outer()


def test_from_options_coerces_paths_and_keeps_explicit_none():
    cfg = from_options(Outer, {"source": Path("runs/a"), "limit": None})
    assert cfg.source == "runs/a" and isinstance(cfg.source, str)
    assert cfg.limit is None  # an optional option left unset means None, not the default
    assert from_options(Outer, {"name": None}).name == "x"  # a non-optional field keeps its default


@dataclass(frozen=True)
class Checked:
    lr: float = 0.1

    def check(self) -> None:
        if self.lr > 1:
            raise DlaError(f"--lr {self.lr}: too large")


@dataclass(frozen=True)
class HoldsChecked:
    name: str = "x"
    train: Checked = field(default_factory=Checked)


def test_from_options_checks_every_config_it_builds_nested_ones_included():
    assert from_options(HoldsChecked, {"lr": 0.5}).train.lr == 0.5
    with pytest.raises(DlaError, match=r"--lr 2\.0: too large"):
        from_options(HoldsChecked, {"lr": 2.0})
    with pytest.raises(DlaError, match="too large"):
        from_options(Checked, {"lr": 2.0})
    assert HoldsChecked(train=Checked(lr=2.0)).train.lr == 2.0  # a config built in code is trusted


def test_runtime_check_refuses_a_bad_environment_and_a_missing_tracker(monkeypatch):
    from dla_core import trackers

    monkeypatch.setenv("OMP_NUM_THREADS", "abc")
    with pytest.raises(DlaError, match="OMP_NUM_THREADS='abc': expected a positive number"):
        Runtime.from_options({})
    assert Runtime.from_options({"threads": 2}).threads == 2  # --threads wins: OMP_NUM_THREADS is not read
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert Runtime.from_options({"report_to": ("tensorboard",)}).report_to == ("tensorboard",)
    monkeypatch.setattr(trackers, "tracker_available", lambda package: package != "mlflow")
    with pytest.raises(
        DlaError, match=r"--report-to mlflow needs the 'mlflow' package: pip install dla-core\[mlflow\]"
    ):
        Runtime.from_options({"report_to": ("tensorboard", "mlflow")})
    Runtime(report_to=("mlflow",))  # built in code: not checked


def test_runtime_options_stay_out_of_experiment_configs():
    opts = {"out": "runs/x", "resume": True, "data_dir": "d", "download": True, "cpu": True,
            "report_to": ["tensorboard"], "threads": 3, "compile": "default", "lr": 0.3}  # fmt: skip
    rt = Runtime.from_options(opts)
    assert rt == Runtime(Path("runs/x"), True, Path("d"), True, True, ("tensorboard",), 3, "default")
    runtime = {"out", "resume", "data_dir", "download", "cpu", "report_to", "threads", "compile"}
    assert runtime == RUNTIME_OPTIONS
    assert not RUNTIME_OPTIONS & set(TrainConfig.__dataclass_fields__)


#### train_into ####


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits:0-4", val_fraction=0.2)


def _batches(splits):
    return {
        "train": ImageBatches(splits.train, 64, shuffle=True),
        "val": ImageBatches(splits.val, 256),
        "test": ImageBatches(splits.test, 256),
    }


def test_model_config_for_records_what_the_labels_mean(digits):
    cfg = model_config_for(digits.train, "mlp", depth=2, width=16, extra={"note": 1})
    assert cfg.in_shape == digits.train.shape and cfg.num_classes == 5
    assert (cfg.mean, cfg.std) == digits.train.stats()
    assert cfg.extra == {"dataset": digits.train.spec, "classes": list(digits.train.classes),
                         "class_map": [0, 1, 2, 3, 4], "note": 1}  # fmt: skip


def test_train_into_writes_model_metrics_and_plots_under_the_unified_keys(digits, tmp_path):
    seed_everything(0)
    mcfg = model_config_for(digits.train, "mlp", depth=1, width=16)
    model = build_model(mcfg)
    run = RunDir.create(tmp_path / "run", {"x": 1}, command="test")
    done = train_into(
        run, model, _batches(digits), TrainConfig(epochs=2, lr=3e-3), Runtime(), save=save_classifier(mcfg)
    )
    m = json.loads((run.path / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(m) and m[FINISHED] is True and m["model_file"] == "model.safetensors"
    assert m["epochs"] == 2 and len(m["history"]) == 2 and m["test_accuracy"] > 0.5
    assert m["train_loss"] == m["history"][-1]["train_loss"]
    assert m["val_accuracy"] == m["history"][-1]["val_accuracy"]
    assert m["parameters"] == m["trainable_parameters"] == sum(p.numel() for p in model.parameters())
    assert done.metrics == m and not done.model.training
    assert (run.path / "learning_curves.png").exists()
    loaded = load_model(run.path)
    assert loaded.config.extra["class_map"] == [0, 1, 2, 3, 4]
    x = next(iter(_batches(digits)["test"].iterate(0)))[0]
    torch.testing.assert_close(loaded(x), done.model(x))
    assert is_finished(run.path)


def _reconstruction(model, batch):
    x, _ = batch
    return StepOutput(F.mse_loss(model(x), torch.zeros_like(model(x))), len(x))


def test_metrics_that_do_not_apply_are_left_out(digits, tmp_path):
    """A loss without accuracy (a reconstruction): no accuracy keys, no nan, and no model when save=None."""
    seed_everything(0)
    model = build_model(model_config_for(digits.train, "mlp", depth=1, width=8))
    run = RunDir.create(tmp_path / "run", {}, command="test")
    train_into(run, model, _batches(digits), TrainConfig(epochs=1), Runtime(), save=None,
               step=_reconstruction, eval_step=_reconstruction, plot=False,
               extra=lambda model, acc, so_far: {"mse": so_far["test_loss"]})  # fmt: skip
    m = run.read_metrics()
    assert m["mse"] == m["test_loss"]  # extra sees the metrics computed before it
    assert "test_loss" in m and "val_loss" in m
    assert not {"train_accuracy", "val_accuracy", "test_accuracy", "model_file"} & set(m)
    assert all(v == v for v in m.values() if isinstance(v, float))
    assert not (run.path / "learning_curves.png").exists()


#### child runs ####


def test_child_run_is_done_once_resumed_when_started_and_redone_when_its_model_is_gone(digits, tmp_path):
    calls = []

    def work(run, rt):
        calls.append(rt.resume)
        assert rt.out == run.path
        seed_everything(0)
        mcfg = model_config_for(digits.train, "mlp", depth=1, width=8)
        train_into(run, build_model(mcfg), _batches(digits), TrainConfig(epochs=1), rt,
                   save=save_classifier(mcfg), plot=False)  # fmt: skip

    path = tmp_path / "parent" / "cells" / "a"
    first = child_run(path, {"cell": "a"}, command="test cell", work=work, rt=Runtime())
    assert calls == [False] and first[FINISHED]
    again = child_run(path, {"cell": "a"}, command="test cell", work=work, rt=Runtime())
    assert calls == [False] and again == first  # finished: read back, not redone
    (path / "model.safetensors").unlink()
    child_run(path, {"cell": "a"}, command="test cell", work=work, rt=Runtime())
    assert calls == [False, True] and (path / "model.safetensors").exists()  # resumed from its checkpoint
    # a started, unfinished child resumes; one with other options is refused, never overwritten
    other = tmp_path / "parent" / "cells" / "b"
    RunDir.create(other, {"cell": "b"}, command="test cell")
    child_run(other, {"cell": "b"}, command="test cell", work=work, rt=Runtime())
    assert calls == [False, True, True]
    from dla_core.errors import DlaError

    (other / "metrics.json").unlink()
    with pytest.raises(DlaError, match="options differ"):
        child_run(other, {"cell": "c"}, command="test cell", work=work, rt=Runtime())


def test_legacy_metric_keys_are_read_under_the_new_names(tmp_path):
    run = RunDir.create(tmp_path / "old", {}, command="test")
    run.write_metrics({"total_params": 10, "trainable_params": 4, "test_accuracy": 0.5})
    assert run.read_metrics() == {"parameters": 10, "trainable_parameters": 4, "test_accuracy": 0.5}
    assert not is_finished(run.path)  # no model, no marker
