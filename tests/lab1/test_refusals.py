"""lab1: every refused input leaves no --out behind (the table is generated: tests/refusals.py)."""

from __future__ import annotations

import pytest

from lab1_resnet.cli import group
from lab1_resnet.reproduce import RECIPE
from tests.refusals import BAD_OMP, Case, assert_refused, dependency_cases, environment_cases

REQUIRED = {"transfer": ("--from", "{tmp}"), "distill": ("--teacher", "{tmp}")}
CASES = [
    *environment_cases(group, REQUIRED),
    *dependency_cases(RECIPE),
    # the issue's own command lines
    Case(
        "issue-report-to",
        ("train", "--epochs", "1", "--report-to", "tensorboard"),
        "pip install",
        no_trackers=True,
    ),
    Case("issue-omp", ("train", "--epochs", "1"), "OMP_NUM_THREADS", env={"OMP_NUM_THREADS": BAD_OMP}),
    Case("issue-only-transfer", ("reproduce", "--profile", "quick", "--only", "transfer"), "needs source"),
    # local paths that must exist
    Case("missing-data-dir", ("train", "--dataset", "mnist", "--data-dir", "{tmp}/none"), "--download"),
    Case("missing-teacher", ("distill", "--teacher", "{tmp}"), "{tmp}"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_refused_input_leaves_no_run_folder(case: Case, tmp_path, monkeypatch) -> None:
    assert_refused(group, case, tmp_path, monkeypatch)
