"""Refused inputs touch no disk: the shared half of each lab's table (tests/labN/test_refusals.py).

A ``Case`` is a command line that must be refused before anything is created or loaded: a non-zero exit, one
``Error:`` line and no traceback, and no --out folder afterwards. Most of a lab's table is generated from what the
code declares, so a new command or recipe step is covered without editing the table:

- ``dependency_cases``: every reproduce step that reads other steps (``Step.needs``), in every profile, run
  without them (``--only STEP``) and with each of them skipped (``--skip NEED``);
- ``environment_cases``: every command whose thread choice reads OMP_NUM_THREADS (it has ``--threads``), and
  ``reproduce``, under a bad OMP_NUM_THREADS; every command with ``--report-to`` asking for a tracker whose
  package is not installed (simulated: the test venvs have TensorBoard).

Arguments (and the expected error) may hold ``{tmp}``: the test's own empty temporary folder (an existing path for
options that need one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner

from dla_core import trackers
from dla_core.reproduce import Recipe

BAD_OMP = "abc"


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # the command line without --out
    expect: str  # a piece of the one Error line
    env: Mapping[str, str] = field(default_factory=dict)
    no_trackers: bool = False  # no tracker package is installed


def assert_refused(group: click.Group, case: Case, tmp_path: Path, monkeypatch: Any) -> None:
    out = tmp_path / "out"
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    if case.no_trackers:
        monkeypatch.setattr(trackers, "tracker_available", lambda package: False)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in case.argv]
    result = CliRunner().invoke(group, [*argv, "--out", str(out)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert case.expect.replace("{tmp}", str(tmp_path)) in lines[0], result.output
    assert not out.exists(), f"{case.id}: refused, but left {sorted(p.name for p in out.iterdir())} behind"


def dependency_cases(recipe: Recipe, extra: Mapping[str, str] | None = None) -> list[Case]:
    """``--only`` / ``--skip`` that leave out a step another one reads, for every step of every profile that
    reads others. ``extra``: the recipe's own options (option name → value) its steps need to be listed."""
    extra = dict(extra or {})
    options = tuple(a for name, value in extra.items() for a in (f"--{name.replace('_', '-')}", value))
    cases: dict[str, Case] = {}
    for profile in recipe.profiles:
        steps = recipe.steps(profile, Path("out"), False, **extra)
        for step in steps:
            if not step.needs:
                continue
            base = ("reproduce", "--profile", profile, *options)
            cases[f"{profile}-only-{step.name}"] = Case(
                f"{recipe.lab}-{profile}-only-{step.name}",
                (*base, "--only", step.name),
                f"step {step.name} needs {', '.join(step.needs)}",
            )
            for need in step.needs:
                key = f"{profile}-skip-{need}"
                cases.setdefault(key, Case(f"{recipe.lab}-{key}", (*base, "--skip", need), f"needs {need}"))
    return list(cases.values())


def environment_cases(group: click.Group, required: Mapping[str, Sequence[str]] | None = None) -> list[Case]:
    """A bad OMP_NUM_THREADS for each command that reads it (and ``reproduce``, whose steps do), a tracker whose
    package is missing for each command with ``--report-to``, ``--compile cuda-graph --cpu`` for each command
    with both. ``required``: the arguments a command cannot
    start without (command name → arguments)."""
    required = dict(required or {})
    cases = []
    for name, command in sorted(group.commands.items()):
        params = {p.name for p in command.params}
        argv = (name, *required.get(name, ()))
        if "threads" in params or name == "reproduce":
            cases.append(
                Case(f"omp-{name}", argv, f"OMP_NUM_THREADS={BAD_OMP!r}", env={"OMP_NUM_THREADS": BAD_OMP})
            )
        if "report_to" in params:
            cases.append(
                Case(
                    f"tracker-{name}",
                    (*argv, "--report-to", "tensorboard"),
                    "--report-to tensorboard needs the 'tensorboard' package",
                    no_trackers=True,
                )
            )
        if "compile" in params and "cpu" in params:  # refused on any machine, a GPU one included
            cases.append(
                Case(f"cuda-graph-{name}", (*argv, "--compile", "cuda-graph", "--cpu"), "needs one CUDA GPU")
            )
    return cases
