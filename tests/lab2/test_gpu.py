"""`lab2 finetune` on a CUDA GPU at bf16 and fp16 (loss scaling), and LoRA at bf16."""

from __future__ import annotations

import json

import pytest

from tests.gpu import needs_gpu
from tests.lab2.test_commands import common, lab2

pytestmark = needs_gpu


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_finetune_learns_on_the_gpu(tiny_distilbert, text_data, tmp_path, precision):
    run = tmp_path / "ft"
    lab2("finetune", *common(tiny_distilbert, text_data, tmp_path / "c"), "--epochs", "8", "--lr", "3e-3",
         "--batch-size", "16", "--precision", precision, "--out", run)  # fmt: skip
    m = json.loads((run / "metrics.json").read_text())
    assert m["precision"] == precision and m["test_accuracy"] >= 0.85
    assert m["history"][-1]["train_loss"] < m["history"][0]["train_loss"]


def test_lora_on_the_gpu(tiny_distilbert, text_data, tmp_path):
    run = tmp_path / "lora"
    lab2("lora", *common(tiny_distilbert, text_data, tmp_path / "c"), "--epochs", "8", "--lr", "1e-2",
         "--batch-size", "16", "--precision", "bf16", "--out", run)  # fmt: skip
    m = json.loads((run / "metrics.json").read_text())
    assert m["history"][-1]["train_loss"] < m["history"][0]["train_loss"]
