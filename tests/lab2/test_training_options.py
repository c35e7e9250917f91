"""Every `lab2` training command offers core's training options (tests/training_commands.py)."""

from __future__ import annotations

from lab2_distilbert.cli import group
from tests.training_commands import training_commands


def test_every_training_command_offers_cores_training_options():
    assert training_commands(group, "lab2") == ["lab2 finetune", "lab2 lora"]
