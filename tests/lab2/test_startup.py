"""`lab2 --help`, every `lab2 CMD --help` and option errors answer without torch or transformers (tests/startup.py)."""

from __future__ import annotations

import pytest

from lab2_distilbert import choices, models
from lab2_distilbert.cli import group
from tests.startup import check_help, check_option_error


@pytest.mark.parametrize("command", [None, *group.commands])
def test_help_imports_nothing_heavy(command, tmp_path):
    check_help("lab2", command, tmp_path)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["finetune", "--strategy", "all", "--out", "x"],
            2,
            "Error: Invalid value for '--strategy': 'all' is not one of",
        ),
        (["features"], 2, "Error: Missing option '--out'."),
        (
            ["lora", "--targets", "q,z", "--out", "x"],
            1,
            "Error: --targets: unknown z (choose from q, k, v, o, ffn)",
        ),
        (["evaluate", "--split", "train", "--out", "x"], 2, "Error: Invalid value for '--split': 'train'"),
    ],
)
def test_option_errors_import_nothing_heavy(args, code, message, tmp_path):
    check_option_error("lab2", args, code, message, tmp_path)


def test_the_models_use_the_choices_the_cli_offers():
    assert models.STRATEGIES is choices.STRATEGIES and models.LORA_ROLES is choices.LORA_ROLES
    assert all(set(roles) == set(choices.LORA_ROLES) for roles in models.LORA_MODULES.values())
