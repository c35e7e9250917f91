"""lab2: every refused input leaves no --out behind (the table is generated: tests/refusals.py)."""

from __future__ import annotations

import pytest

from lab2_distilbert.cli import group
from lab2_distilbert.reproduce import RECIPE
from tests.refusals import Case, assert_refused, dependency_cases, environment_cases

ENCODER = "{tmp}"  # the recipe's --model: any folder lists the steps (nothing loads before the checks)
CASES = [
    *environment_cases(group, {"reproduce": ("--model", ENCODER)}),
    *dependency_cases(RECIPE, {"model": ENCODER}),
    # the issue's own command line (the quick profile's encoder: the [minilm] extra, installed under nox)
    Case("issue-only-evaluate-full", ("reproduce", "--only", "evaluate-full"), "needs finetune-full"),
    # local paths that must exist
    Case("missing-data", ("finetune", "--data", "{tmp}/none.csv"), "--data {tmp}/none.csv: no such file"),
    Case("missing-model", ("evaluate", "--data", "dla-reviews", "--model", "{tmp}/none"), "does not exist"),
    Case(
        "reproduce-missing-model", ("reproduce", "--model", "{tmp}/none"), "folder {tmp}/none does not exist"
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_refused_input_leaves_no_run_folder(case: Case, tmp_path, monkeypatch) -> None:
    assert_refused(group, case, tmp_path, monkeypatch)
