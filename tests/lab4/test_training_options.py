"""Every `lab4` training command offers core's training options (tests/training_commands.py)."""

from __future__ import annotations

from lab4_ood.cli import group
from tests.training_commands import training_commands


def test_every_training_command_offers_cores_training_options():
    assert training_commands(group, "lab4") == ["lab4 train-ae", "lab4 train"]
