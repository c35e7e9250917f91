"""`labN reproduce`: run a lab's whole experiment set as child run folders, then write its report.

A lab supplies a ``Recipe``: its steps (each an ordinary command of the lab, run in this process with
``--out OUT/<step>``) and how its report sections are built from those run folders. The reproduce folder::

    OUT/
      config.json        command "labN reproduce", the profile and the recipe's options
      metrics.json       steps: {name: {command, seconds, done}}; the manifest a --resume reads
      <step>/            one run folder per step (lab1 study, lab4 detect, …)
      report.md          tables, relative image links, findings ✓/✗
      report.html        the same, one self-contained file

``--max-steps N`` makes a smoke run: every step whose command trains gets ``--max-steps N`` (at most N optimizer
steps per epoch, N epochs and N batches per evaluation), every other step its recipe's ``smoke`` arguments (a cap
of its own, such as lab4's ``--limit``); the report opens with ``smoke_banner``. It checks that the wiring, the data
loading and the memory of the real setup hold, in minutes; its numbers are not results.

Rerunning with ``--resume`` skips done steps, continues a started step that has ``--resume`` of its own, and redoes
a started evaluation step (its folder is removed first: it holds nothing that took long to make).
This module imports no torch: the recipes and their ``--help`` stay light.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dla_core.config import Runtime
from dla_core.errors import DlaError
from dla_core.runs import RunDir, environment, read_json

TINY_ENV = "DLA_REPRODUCE_TINY"  # "1": tests shrink every step to seconds; not for results
COMMAND = "reproduce"
MAX_STEPS = "--max-steps"  # the training commands' smoke option (dla_core.cli.MAX_STEPS)
# lab1's and lab4's quick profiles promise every step and the report in under this many minutes on the project's
# 2-core CPU, one thread; their steps' cpu_minutes (measured) say what each costs (tests/lab*/test_quick_profile.py)
QUICK_BUDGET_MINUTES = 5


def smoke_banner(n: int) -> str:
    """The line a smoke run of ``--max-steps n`` prints and opens its report with."""
    s = "" if n == 1 else "s"
    return (
        f"Smoke run: at most {n} step{s} per epoch ({n} epoch{s}, {n} batch{'es' if s else ''} per evaluation) "
        "— numbers are not results."
    )


@dataclass(frozen=True)
class Step:
    name: str  # child folder OUT/<name>; the --only/--skip name
    argv: tuple[str, ...]  # the lab command's arguments without --out
    resumable: bool = True  # the command has --resume
    needs: tuple[str, ...] = ()  # steps whose run folders this one reads
    minutes: float | None = None  # wall time on one GPU, printed up front: a guess (never timed on a GPU)
    # time on one CPU core, printed beside it: measured CPU seconds per optimizer step of the step's networks
    # (one thread, the project's 2-core machine) × the run's steps (bench/full_profile_steps.py)
    cpu_minutes: float | None = None
    smoke: tuple[str, ...] = ()  # added in a smoke run to a step that does not train: its own cap (--limit)

    def command_line(self, lab: str, out: Path) -> str:
        return shlex.join([lab, *self.argv, "--out", str(Path(out) / self.name)])

    def smoked(self, group: Any, max_steps: int | None) -> Step:
        """This step as a smoke run of ``max_steps`` runs it: ``--max-steps`` where its command (in the lab's
        click ``group``) has that option, else its ``smoke`` arguments; itself when ``max_steps`` is None."""
        if max_steps is None:
            return self
        command = group.commands.get(self.argv[0]) if self.argv else None
        trains = command is not None and any(MAX_STEPS in p.opts for p in command.params)
        return replace(self, argv=(*self.argv, *((MAX_STEPS, str(max_steps)) if trains else self.smoke)))


@dataclass(frozen=True)
class Recipe:
    lab: str  # "lab1"
    title: str
    intro: str
    steps: Callable[..., list[Any]]  # steps(profile, out, tiny, **extra) -> [Step]
    sections: Callable[..., list[Any]]  # sections(out, steps, **extra) -> [report.Section]
    profiles: tuple[str, ...] = ("quick", "full")


def time_estimate(steps: Sequence[Step]) -> str | None:
    """The line printed before the steps run: the GPU guess and the CPU measurement, where the recipe has them."""
    gpu = [s.minutes for s in steps if s.minutes is not None]
    cpu = [s.cpu_minutes for s in steps if s.cpu_minutes is not None]
    parts = []
    if gpu:
        parts.append(f"about {sum(gpu):.0f} min on one GPU (a guess: never timed on a GPU)")
    if cpu:
        total = sum(cpu)
        cpu_steps = "" if len(cpu) == len(steps) else f" for {len(cpu)} of the steps"
        when = f"{total / 60:.1f} h" if total >= 90 else f"{total:.0f} min"
        parts.append(f"about {when} of one CPU core{cpu_steps} (measured per step: bench/RESULTS.md)")
    return f"{_count(len(steps), 'step')}: {'; '.join(parts)}." if parts else None


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def tiny() -> bool:
    return os.environ.get(TINY_ENV, "") == "1"


def load_recipe(spec: str | Recipe) -> Recipe:
    """'lab1_resnet.reproduce:RECIPE' → the recipe (imported only when a command runs)."""
    import importlib

    if isinstance(spec, Recipe):
        return spec

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def read_run_file(folder: Path, name: str = "metrics.json") -> dict[str, Any]:
    """A child run folder's JSON file for a recipe's sections: {} when the step has not written it, a damaged one
    an ``Error:`` naming it (``dla_core.runs.read_json``)."""
    path = Path(folder) / name
    return read_json(path) if path.is_file() else {}


def select(steps: Sequence[Step], only: Sequence[str], skip: Sequence[str]) -> list[Step]:
    """The steps to run, in recipe order; unknown names are an error naming the known ones."""
    names = [s.name for s in steps]
    for option, given in (("--only", only), ("--skip", skip)):
        unknown = [n for n in given if n not in names]
        if unknown:
            raise DlaError(f"{option}: unknown step {', '.join(unknown)} (steps: {', '.join(names)})")
    return [s for s in steps if (not only or s.name in only) and s.name not in skip]


def check_needs(out: Path, steps: Sequence[Step], chosen: Sequence[Step], *, resume: bool) -> None:
    """Every step a chosen one reads (``Step.needs``) is chosen too, or done in the folder being resumed: the
    reproduce folder is made only after this, so a wrong --only/--skip leaves nothing behind."""
    manifest = _manifest(out) if resume else {}
    by_name = {s.name: s for s in steps}
    chosen_names = {s.name for s in chosen}
    for step in chosen:
        missing = [n for n in step.needs if n not in chosen_names and not _done(out, by_name[n], manifest)]
        if missing:
            raise DlaError(f"step {step.name} needs {', '.join(missing)}: run it first or add it to --only")


def _manifest(out: Path) -> dict[str, Any]:
    return RunDir(out).read_metrics().get("steps", {})


def _done(out: Path, step: Step, manifest: Mapping[str, Any]) -> bool:
    return bool(manifest.get(step.name, {}).get("done")) and (out / step.name / "config.json").exists()


def run_steps(
    recipe: Recipe,
    group: Any,
    out: Path,
    steps: Sequence[Step],
    chosen: Sequence[Step],
    echo: Callable,
    max_steps: int | None = None,
) -> dict[str, float]:
    """Run the chosen steps not yet done through the lab's click ``group`` (``check_needs`` passed; as a smoke
    run of ``max_steps`` when given); returns wall seconds per step."""
    run = RunDir(out)
    manifest = _manifest(out)
    wall: dict[str, float] = {}
    for i, step in enumerate(chosen, 1):
        step = step.smoked(group, max_steps)
        child = out / step.name
        line = step.command_line(recipe.lab, out)
        if _done(out, step, manifest):
            echo(f"[{i}/{len(chosen)}] {step.name}: done before, skipped")
            continue
        argv = [*step.argv, "--out", str(child)]
        if (child / "config.json").exists():
            if step.resumable:
                argv.append("--resume")
            else:  # an evaluation that stopped part-way: nothing slow to keep
                shutil.rmtree(child)
        elif child.exists():
            shutil.rmtree(child)  # a folder the step never got to write its config into
        echo(f"[{i}/{len(chosen)}] {line}")
        start = time.perf_counter()
        rc = group.main(args=argv, prog_name=recipe.lab, standalone_mode=False)
        if isinstance(rc, int) and rc:
            raise DlaError(f"step {step.name} exited with status {rc}; fix it and rerun with --resume")
        wall[step.name] = round(time.perf_counter() - start, 2)
        manifest[step.name] = {"command": line, "seconds": wall[step.name], "done": True}
        run.update_metrics(steps=manifest)
    return wall


def render(recipe: Recipe, out: Path, report_out: Path | None = None) -> tuple[Path, Path]:
    """Write the report of the reproduce folder ``out`` (into ``report_out`` or ``out``) from its run folders."""
    from dla_core.report import relative_command, write_report

    run = RunDir.open(out, what=f"{recipe.lab} reproduce")
    cfg = run.config
    extra = dict(cfg.get("extra", {}))
    steps = recipe.steps(cfg["profile"], out, bool(cfg.get("tiny")), **extra)
    manifest = _manifest(out)
    # absolute: a recipe's image paths must not be read relative to the report folder (OUT/OUT/step/x.png)
    where = Path(out).absolute()
    sections = recipe.sections(where, steps, **extra)
    # the command lines shown are the ones that ran (the manifest's), their paths written from the report folder
    report_dir = Path(report_out or out)
    shown = {}
    for s in steps:
        ran = manifest.get(s.name, {}).get("command")
        for line in (s.command_line(recipe.lab, where), s.command_line(recipe.lab, Path(out))):
            given = _out_given(ran or line, s.name) or str(where)
            shown[line] = relative_command(ran or line, report_dir, {given: where})
    for section in sections:
        section.commands = [
            shown.get(c) or relative_command(c, report_dir, {str(where): where}) for c in section.commands
        ]
    wall = {n: m["seconds"] for n, m in manifest.items() if m.get("seconds") is not None}
    env = run.saved.get("environment") or environment()
    intro = recipe.intro
    if cfg.get("max_steps"):
        intro = f"**{smoke_banner(cfg['max_steps'])}**\n\n{intro}"
    if cfg.get("tiny"):
        intro += f"\n\nMade with {TINY_ENV}=1: every step shrunk to seconds. These numbers are not results."
    return write_report(
        Path(report_out or out), recipe.title, sections, intro=intro, environment=env, wall=wall
    )


def _out_given(line: str, step: str) -> str | None:
    """The reproduce folder as a step's command line gave it: its ``--out`` without the trailing ``/<step>``."""
    from dla_core.report import out_folders

    folders = out_folders([line])
    if folders and Path(folders[0]).name == step:
        return str(Path(folders[0]).parent)
    return None


def reproduce(
    recipe: Recipe,
    group: Any,
    *,
    profile: str,
    out: Path,
    resume: bool,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
    echo: Callable = print,
    max_steps: int | None = None,
) -> tuple[Path, Path]:
    """Run the recipe's ``profile`` into ``out`` (resuming a reproduce folder when asked) and write the report;
    ``max_steps``: a smoke run (see the module's docstring)."""
    extra = dict(extra or {})
    small = tiny()
    # the whole configuration is checked before the folder is made (and before torch loads): the recipe's
    # options, --only / --skip against the steps' needs, the environment the steps will train in
    steps = recipe.steps(profile, Path(out), small, **extra)
    chosen = select(steps, only, skip)
    check_needs(Path(out), steps, chosen, resume=resume)
    Runtime(out=Path(out), resume=resume).check()
    cfg: dict[str, Any] = {"profile": profile, "tiny": small, "extra": extra}
    if max_steps is not None:  # only then: a folder made before --max-steps existed still resumes
        cfg["max_steps"] = max_steps
    RunDir.create(out, cfg, command=f"{recipe.lab} {COMMAND}", resume=resume)
    line = time_estimate(chosen)
    if line:
        echo(line)
    if max_steps is not None:
        echo(smoke_banner(max_steps))
    run_steps(recipe, group, Path(out), steps, chosen, echo, max_steps)
    return render(recipe, Path(out))
