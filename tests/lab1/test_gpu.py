"""`lab1 train` on a CUDA GPU: a bf16 channels_last CNN with --compile saves weights that reload on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dla_core.data import load_splits
from dla_core.models import load_model
from tests.gpu import needs_gpu
from tests.lab1.test_commands import lab1

pytestmark = needs_gpu


@pytest.mark.parametrize("extra", [[], ["--compile"]])
def test_cifar_cnn_bf16_on_the_gpu_reloads_on_the_cpu(data_dir: Path, tmp_path: Path, extra: list[str]):
    out = tmp_path / "run"
    lab1("train", "--model", "cnn", "--depth", "2", "--channels", "8", "--dataset", "cifar10", "--data-dir",
         data_dir, "--epochs", "2", "--batch-size", "32", "--precision", "bf16", *extra, "--out", out)  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["finished"] and len(metrics["history"]) == 2
    config = json.loads((out / "config.json").read_text())["config"]
    assert "compile" not in config  # a runtime option
    model = load_model(out).eval()  # contiguous safetensors written from channels_last weights
    test = load_splits("cifar10", data_dir).test
    with (
        torch.no_grad(),
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):  # this process's accelerator is the GPU's
        predicted = model(test.images.float() / 255).argmax(1)
    accuracy = (predicted == test.labels).float().mean().item()
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=0.03)  # bf16 GPU vs bf16 CPU kernels
    assert torch.cuda.max_memory_allocated() > 0
