"""Every `lab1` training command offers core's training options (tests/training_commands.py); `lab1 study`
leaves out only --seed (it takes --seeds), so --compile reaches its runs."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from lab1_resnet import batched
from lab1_resnet.cli import group
from tests.training_commands import training_commands


def test_every_training_command_offers_cores_training_options():
    assert training_commands(group, "lab1") == ["lab1 train", "lab1 study", "lab1 transfer", "lab1 distill"]


def test_study_compile_reaches_the_runtime(monkeypatch, tmp_path):
    import lab1_resnet.study as study_module

    seen = []
    monkeypatch.setattr(study_module, "run_study", lambda cfg, rt, batch_seeds: seen.append(rt.compile) or "")
    for argv, mode in (
        (["--compile"], "default"),
        (["--compile", "reduce-overhead"], "reduce-overhead"),
        ([], None),
    ):
        r = CliRunner().invoke(group, ["study", *argv, "--out", str(tmp_path / "s")])
        assert r.exit_code == 0, r.output
        assert seen.pop() == mode


@pytest.mark.slow
def test_a_study_with_compile_compiles_each_cell_as_a_single_run(monkeypatch, tmp_path):
    """Compiled models do not stack: each cell is a single run whose model goes through torch.compile (recorded
    here instead of compiled: the eager numbers are the same, without the C++ build)."""
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(kw.get("mode", "?")))
    monkeypatch.setattr(batched.Group, "__init__", lambda *a, **k: pytest.fail("trained batched"))
    argv = ["study", "--depths", "1", "--kinds", "plain", "--seeds", "0,1", "--width", "8", "--dataset",
            "digits:0-2", "--epochs", "1", "--compile", "--out", str(tmp_path / "s")]  # fmt: skip
    r = CliRunner().invoke(group, argv, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert compiled == [None, None]  # torch.compile's default mode, once per cell
    assert (tmp_path / "s" / "cells" / "mlp-d1-plain-s1" / "model.safetensors").exists()
