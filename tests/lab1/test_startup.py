"""`lab1 --help`, every `lab1 CMD --help` and option errors answer without torch (see tests/startup.py)."""

from __future__ import annotations

import pytest

from lab1_resnet.cli import group
from tests.startup import check_help, check_option_error


@pytest.mark.parametrize("command", [None, *group.commands])
def test_help_imports_nothing_heavy(command, tmp_path):
    check_help("lab1", command, tmp_path)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["train", "--model", "vgg", "--out", "x"],
            2,
            "Error: Invalid value for '--model': 'vgg' is not one of",
        ),
        (["study"], 2, "Error: Missing option '--out'."),
        (["study", "--depths", "2,0", "--out", "x"], 1, "Error: --depths: every depth must be at least 1"),
        (["study", "--kinds", "plain,dense", "--out", "x"], 1, "Error: --kinds: unknown dense"),
        (
            ["transfer", "--from", ".", "--strategies", "all", "--out", "x"],
            1,
            "Error: --strategies: unknown all",
        ),
    ],
)
def test_option_errors_import_nothing_heavy(args, code, message, tmp_path):
    check_option_error("lab1", args, code, message, tmp_path)
