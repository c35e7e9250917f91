"""lab4: every refused input leaves no --out behind (the table is generated: tests/refusals.py)."""

from __future__ import annotations

import pytest

from lab4_ood.cli import group
from lab4_ood.reproduce import RECIPE
from tests.refusals import Case, assert_refused, dependency_cases, environment_cases

REQUIRED = {
    "detect": ("--model", "{tmp}", "--ood", "fake"),
    "benchmark": ("--model", "{tmp}", "--far", "fake"),
    "attack": ("--model", "{tmp}"),
    "train-ae": ("--encoder", "{tmp}"),
    "train": ("--dataset", "digits"),
}
CASES = [
    *environment_cases(group, REQUIRED),
    *dependency_cases(RECIPE),
    # the issue's own command line
    Case("issue-skip-base-train", ("reproduce", "--skip", "base-train"), "needs base-train"),
    # local paths that must exist (or hold what they must)
    Case("benchmark-run-without-dataset", ("benchmark", "--model", "{tmp}", "--far", "fake"), "--id SPEC"),
    Case("missing-data-dir", ("train", "--dataset", "mnist", "--data-dir", "{tmp}/none"), "--download"),
    Case(
        "model-folder-without-a-model",
        ("detect", "--id", "digits", *REQUIRED["detect"][:-2], "--ood", "fake"),
        "{tmp}",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_refused_input_leaves_no_run_folder(case: Case, tmp_path, monkeypatch) -> None:
    assert_refused(group, case, tmp_path, monkeypatch)
