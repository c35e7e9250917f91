"""The comparison view: `labN report RUN RUN … --out X`, several run folders side by side.

One section per command: a table whose rows are the runs that differ only by their seed (grouped), whose columns
are the options that differ between the groups, then ``n`` (seeds) and the final metrics that differ between runs,
readable names with the command's headline metric first, each as mean ± the half-width of its 95% CI over the seeds
(``dla_core.stats.mean_ci``; no ± where the seeds agree). What is the same in every run is said once above the
table, not repeated per row. Below it: a link to each run folder, and the runs' learning curves overlaid (a band
over the seeds of a group). The machine and wall-time section names every machine the runs were made on and the
time they trained. Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dla_core.report import Figure, Section, Table, duration, fmt, machine_line, slug, write_report
from dla_core.runs import RunDir, _flatten, _without_runtime
from dla_core.stats import mean_ci

# readable names, in the order a table shows them: the first one a command's runs have is its headline metric
METRIC_NAMES = {
    "test_accuracy": "test acc",
    "auroc": "AUROC",
    "accuracy": "accuracy",
    "id_accuracy": "ID acc",
    "val_accuracy": "val acc",
    "train_accuracy": "train acc",
    "test_loss": "test loss",
    "val_loss": "val loss",
    "train_loss": "train loss",
    "parameters": "params",
    "trainable_parameters": "trainable params",
    "train_seconds": "train time (s)",
    "wall_seconds": "wall time (s)",
}
LOWER_IS_BETTER = {"test_loss", "val_loss", "train_loss", "fpr95", "train_seconds", "wall_seconds"}
_NOT_METRICS = {"finished", "epochs"}
_WALL = ("train_seconds", "wall_seconds")  # the time a run took, the first it records


@dataclass(frozen=True)
class Run:
    path: Path
    command: str
    options: dict[str, Any]  # flattened config without runtime options
    metrics: dict[str, float]  # final scalars
    history: list[dict[str, float]]
    environment: dict[str, Any]
    seconds: float | None


def read_run(path: Path) -> Run:
    run = RunDir.open(Path(path))
    saved, metrics = run.saved, run.read_metrics()
    scalars = {
        k: v
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in _NOT_METRICS
    }
    history = metrics.get("history")
    seconds = next((float(metrics[k]) for k in _WALL if isinstance(metrics.get(k), int | float)), None)
    return Run(
        Path(path),
        saved.get("command", "?"),
        _flatten(_without_runtime(saved["config"])),
        scalars,
        history if isinstance(history, list) else [],
        saved.get("environment") or {},
        seconds,
    )


def metric_name(key: str) -> str:
    return METRIC_NAMES.get(key, key.replace("_", " "))


def metric_order(keys: Sequence[str]) -> list[str]:
    """Known metrics in ``METRIC_NAMES`` order (the headline first), then the others alphabetically."""
    known = [k for k in METRIC_NAMES if k in keys]
    return known + sorted(k for k in keys if k not in METRIC_NAMES)


def _is_seed(key: str) -> bool:
    return key == "seed" or key.endswith(".seed")


def _differs(values: Sequence[Any]) -> bool:
    return len({repr(v) for v in values}) > 1


def _link(path: Path, out: Path) -> str:
    rel = Path(os.path.relpath(Path(path).absolute(), Path(out).absolute())).as_posix()
    return f"[{Path(path).name}]({rel})"


def command_section(command: str, runs: Sequence[Run], out: Path, index: int = 0) -> Section:
    """The comparison of the runs of one command (see the module's docstring)."""
    keys = sorted({k for r in runs for k in r.options})
    differ = [k for k in keys if _differs([r.options.get(k) for r in runs])]
    shown = [k for k in differ if not _is_seed(k)]
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault(tuple(repr(r.options.get(k)) for k in shown), []).append(r)
    metrics = metric_order(sorted({m for r in runs for m in r.metrics}))
    varying = [m for m in metrics if _differs([r.metrics.get(m) for r in runs])]
    same = [m for m in metrics if m not in varying]
    rows = []
    for group in groups.values():
        first = group[0]
        cells: list[Any] = [", ".join(r.path.name for r in group), len(group)]
        cells += [first.options.get(k) for k in shown]
        for m in varying:
            values = [r.metrics[m] for r in group if m in r.metrics]
            agree = len(set(values)) == 1  # seeds that agree: the value itself, not a mean with float noise
            cells.append(values[0] if agree else mean_ci(values) if values else None)
        rows.append(cells)
    headline = metric_name(varying[0]) if varying else None
    seeds = max(len(g) for g in groups.values())
    caption = (
        "mean ± half-width of the 95% CI (Student t) over the n seeds of a row; no ± where they agree"
        if seeds > 1
        else "one run per row"
    )
    table = Table(
        ["runs", "n", *(k.replace("_", "-") for k in shown), *map(metric_name, varying)],
        rows,
        caption=caption,
        headline=headline,
        lower_is_better=bool(varying) and varying[0] in LOWER_IS_BETTER,
    )
    text = [f"{len(runs)} run(s) of `{command}`, rows sorted by {headline or 'nothing that differs'}."]
    if same:
        text.append(
            "The same in every run: "
            + ", ".join(f"{metric_name(m)} {fmt(runs[0].metrics[m])}" for m in same)
            + "."
        )
    text.append("Run folders: " + ", ".join(_link(r.path, out) for r in runs) + ".")
    images = []
    curves = {_group_label(g, shown): [r.history for r in g if r.history] for g in groups.values()}
    curves = {label: h for label, h in curves.items() if h}
    if curves:
        from dla_core import plots  # matplotlib: only when there are curves to draw

        path = Path(out) / f"curves-{index + 1}-{slug(command).replace('-', '_') or 'runs'}.png"
        plots.learning_curves(curves, path, title=f"{command}: learning curves")
        images.append(
            Figure(path, f"Learning curves of the `{command}` runs overlaid, one colour per row of the table; "
                   "bands: lowest to highest seed.")
        )  # fmt: skip
    return Section(f"Comparison: {command}", text="\n\n".join(text), tables=[table], images=images)


def _group_label(group: Sequence[Run], shown: Sequence[str]) -> str:
    if not shown:
        return group[0].command
    return ", ".join(
        f"{k.rsplit('.', 1)[-1].replace('_', '-')}={fmt(group[0].options.get(k))}" for k in shown
    )


def compare_runs(paths: Sequence[Path], out: Path, runs: Sequence[Run] | None = None) -> list[Section]:
    """One section per command of the run folders at ``paths`` (``runs``: them, read); curves go into ``out``."""
    runs = list(runs) if runs is not None else [read_run(p) for p in paths]
    by_command: dict[str, list[Run]] = {}
    for r in runs:
        by_command.setdefault(r.command, []).append(r)
    return [command_section(c, rs, out, i) for i, (c, rs) in enumerate(by_command.items())]


def machine_lines(runs: Sequence[Run]) -> list[str]:
    """Each machine the runs were made on, once, and how long they trained."""
    lines = list(dict.fromkeys(machine_line(r.environment) for r in runs if r.environment))
    timed = [r for r in runs if r.seconds is not None]
    if timed:
        total = sum(r.seconds or 0.0 for r in timed)
        parts = ", ".join(f"{r.path.name} {duration(r.seconds)}" for r in timed)
        lines.append(f"Wall time: {duration(total)} in all ({parts}).")
    return lines or ["The runs recorded no machine and no wall time."]


def write_comparison(paths: Sequence[Path], out: Path, title: str) -> tuple[Path, Path]:
    """Read every run folder first (a bad one is an ``Error:`` before anything is written), then the report."""
    runs = [read_run(p) for p in paths]
    sections = compare_runs(paths, out, runs)
    return write_report(Path(out), title, sections, footer=machine_lines(runs))
