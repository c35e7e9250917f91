"""Every `lab3` training command offers core's training options (tests/training_commands.py)."""

from __future__ import annotations

from lab3_story.cli import group
from tests.training_commands import training_commands


def test_every_training_command_offers_cores_training_options():
    assert training_commands(group, "lab3") == []  # lab3 trains nothing: no command takes --epochs
