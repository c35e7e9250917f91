"""lab4 on a CUDA GPU: train, detect (ODIN needs input gradients) and attack, numbers as on the CPU's side."""

from __future__ import annotations

import pytest

from tests.gpu import needs_gpu
from tests.lab4.test_cli import MLP, lab4, metrics

pytestmark = needs_gpu

GPU_FAST = ["--epochs", "6", "--lr", "3e-3", "--batch-size", "64"]


def test_train_detect_attack_on_the_gpu(tmp_path):
    lab4("train", *MLP, *GPU_FAST, "--out", tmp_path / "base")
    base = metrics(tmp_path / "base")
    assert base["test_accuracy"] > 0.9
    lab4("detect", "--model", tmp_path / "base", "--ood", "digits:5-9", "--method", "msp,energy,odin",
         "--T", "10", "--out", tmp_path / "det")  # fmt: skip
    results = metrics(tmp_path / "det")["results"]
    assert set(results) == {"msp", "energy", "odin"}
    assert all(r["digits:5-9"]["auroc"] > 0.6 for r in results.values())
    lab4("attack", "--model", tmp_path / "base", "--eps", "0,0.05,0.2", "--out", tmp_path / "fgsm")
    acc = [r["accuracy"] for r in metrics(tmp_path / "fgsm")["rows"]]
    assert acc[0] == pytest.approx(base["test_accuracy"]) and acc[0] > acc[1] > acc[2]
