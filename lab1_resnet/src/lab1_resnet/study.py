"""`lab1 study`: the degradation experiment in one command — depths × {plain, residual} × seeds.

Each cell is a full `lab1 train` run folder under ``OUT/cells/<model>-d<depth>-<kind>-s<seed>/``; a finished
cell is skipped on ``--resume`` and an interrupted one continues from its checkpoint. The cells that stack
(``batched.groups``: by default every seed of a depth, plain and residual) train as one stacked model
(``batched.Group``, one Python step for all of them) whose results go into the same cell folders, with the same
numbers up to float reassociation; its checkpoint is ``OUT/groups/<name>/checkpoint.pt`` until its cells are
written. ``batch_seeds=False`` (``--no-batch-seeds``), several processes, a GPU, trackers or ``compile``
(``stacks_here``) train one run per cell. At the end: table.md and
table.csv (mean ± std over seeds), learning_curves.png (the seeds' mean with a band over them) and grad_norms.png
(first-epoch gradient norm per weight layer, plain vs residual: the vanishing gradients behind the plain nets'
failure).

A plain and a residual cell of one depth have the same weight layers (a column of the table) and parameters: they
differ only by the skips (``plain_block="single"``: the seeds' one-layer plain block instead).

Default (MLPs, width 64, Adam 1e-3, batch 64, 30 epochs, digits, 3 seeds): plain nets of depth ≥ 20 (42 weight
layers) stay at chance (10% test accuracy) while residual ones reach ~97%; depth 10 plain (22 layers) still
learns, worse (~88% vs ~98% test accuracy).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from tqdm.auto import tqdm

from dla_core import plots
from dla_core.checkpoint import SaveCadence, load_state, save_state, write_progress
from dla_core.config import Runtime
from dla_core.data import Splits
from dla_core.engine import Interrupted, TrainConfig, classification_step
from dla_core.models import build_model, count_parameters, weight_layer_names
from dla_core.recipe import (
    THREADS,
    child_run,
    finish_run,
    is_finished,
    save_classifier,
    training_threads,
)
from dla_core.runs import CHECKPOINT, CONFIG, RunDir, atomic_write
from dla_core.seeding import world_size
from dla_core.threads import apply_threads
from lab1_resnet import batched, tables
from lab1_resnet.choices import KINDS
from lab1_resnet.train import TrainRun, load_data, model_config, own_metrics, train_in

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DepthStudy:
    dataset: str = "digits"
    model: str = "mlp"
    depths: tuple[int, ...] = (2, 10, 20, 30)
    kinds: tuple[str, ...] = KINDS
    seeds: tuple[int, ...] = (0, 1, 2)
    width: int = 64
    stages: int = 1
    plain_block: str = (
        "double"  # plain mlp cells: double (the residual block minus its skip) | single (seeds')
    )
    batch_size: int = 64
    augment: bool = True
    val_fraction: float = 0.1
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, lr=1e-3, log_grad_norms=True))

    def cells(self) -> list[TrainRun]:
        base = TrainRun(
            dataset=self.dataset,
            model=self.model,
            width=self.width,
            stages=self.stages,
            batch_size=self.batch_size,
            augment=self.augment,
            val_fraction=self.val_fraction,
            train=replace(self.train, log_grad_norms=True),
        )
        return [
            replace(
                base,
                depth=d,
                residual=kind == "residual",
                plain_block="double" if kind == "residual" else self.plain_block,
                train=replace(base.train, seed=s),
            )
            for d in self.depths
            for kind in self.kinds
            for s in self.seeds
        ]


def run_study(cfg: DepthStudy, rt: Runtime, *, batch_seeds: bool = True) -> str:
    """Train every cell not yet finished, then write the tables and plots; returns the Markdown table.

    ``batch_seeds``: train the cells that stack (``batched.groups``) as one model per group, in one process; off
    (or under a launcher with several processes), every cell is its own ``lab1 train`` run, as a resumed cell that
    a single run started always is. Either way each cell's folder is a ``lab1 train`` run folder with the same
    numbers (up to float reassociation), so the option is not part of the study's config: ``--resume`` may
    change it."""
    # nothing is drawn before the cells, and each cell seeds with its own seed as it is built (train_in, batched)
    data = load_data(cfg.dataset, rt.data_dir, cfg.val_fraction, rt.download)
    study = RunDir.create(rt.out, cfg, command="lab1 study", resume=rt.resume)
    cells = cfg.cells()
    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(cells), desc="study", unit="cell", dynamic_ncols=True)
    for together, group in _plan(study, cells, batch_seeds and stacks_here(rt)):
        if together:
            bar.set_postfix_str(_group_name(group))
            results.update(train_group(study, group, data, rt))
            bar.update(len(group))
            continue
        cell = group[0]
        bar.set_postfix_str(cell.name)
        results[cell.name] = child_run(
            _cell_path(study, cell), cell, command="lab1 train", rt=rt,
            work=lambda run, crt, cell=cell: train_in(run, cell, data, crt, plot=False),
        )  # fmt: skip
        bar.update(1)
    bar.close()
    rows, csv_rows = summarise(cfg, cells, results)
    text = tables.write_tables(rows, COLUMNS, study.path, csv_rows=csv_rows)
    study_curves(cfg, seed_histories(cfg, cells, results), study.file("learning_curves.png"))
    first_epoch_grad_norms(cfg, cells, results, study.file("grad_norms.png"), weight_layers_of(data))
    study.update_metrics(rows=csv_rows)
    return text


#### Batched seeds ####

# study folder: the checkpoints of the groups being trained (deleted once their cells finish)
GROUPS = "groups"


def stacks_here(rt: Runtime) -> bool:
    """Whether the cells may train as stacked models under ``rt``: in one process, on the CPU (``--cpu`` or no
    GPU), without trackers or ``torch.compile``; otherwise each cell is a single run, which does all of those."""
    has_gpu = torch.cuda.is_available() or (
        hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    )
    trackers = [t for t in rt.report_to if t != "none"]
    return world_size() == 1 and (rt.cpu or not has_gpu) and not trackers and not rt.compile


def _cell_path(study: RunDir, cell: TrainRun) -> Path:
    return study.path / "cells" / cell.name


def _group_name(group: Sequence[TrainRun]) -> str:
    """mlp-d20-plain+residual: a group's cells differ by seed (and skips) only."""
    first = group[0]
    kinds = "+".join(dict.fromkeys(c.kind for c in group))
    return f"{first.model}-d{first.depth}-{kinds}"


def _group_dir(study: RunDir, group: Sequence[TrainRun]) -> RunDir:
    return RunDir(study.path / GROUPS / _group_name(group))


def _plan(study: RunDir, cells: Sequence[TrainRun], batch_seeds: bool) -> list[tuple[bool, list[TrainRun]]]:
    """The work, in the study's order: (True, cells) for unfinished cells to train as one stacked model, (False,
    [cell]) for a single run (a finished cell, read back; one that a single run started, resumed from its
    checkpoint; every cell without ``batch_seeds`` or that does not stack)."""
    if not batch_seeds:
        return [(False, [c]) for c in cells]
    plan: list[tuple[bool, list[TrainRun]]] = []
    for group in batched.groups(cells):
        together = [c for c in group if batched.batchable(c) and _untouched(_cell_path(study, c))]
        plan += [(False, [c]) for c in group if c not in together]
        if together:
            plan.append((True, together))
    order = {c.name: i for i, c in enumerate(cells)}
    return sorted(plan, key=lambda work: order[work[1][0].name])


def _untouched(path: Path) -> bool:
    """A cell that is not finished and has no checkpoint of a single run."""
    return not is_finished(path) and not (path / CHECKPOINT).exists()


def train_group(
    study: RunDir, cells: Sequence[TrainRun], data: Splits, rt: Runtime
) -> dict[str, dict[str, Any]]:
    """Train ``cells`` as one stacked model (``batched.Group``) into their run folders; their final metrics.

    Resumable like ``engine.fit``, on the same cadence (``SaveCadence``): the group's state goes to
    ``groups/<name>/checkpoint.pt`` in the study folder at the end of an epoch when ``SAVE_EVERY`` seconds have
    passed since the last write, on Ctrl-C and on errors (the last finished epoch), and ``--resume`` continues
    from it. At the end every cell gets what its single run would
    have written (config.json, metrics.json, the model, the checkpoint of the last epoch), then the group's
    checkpoint goes."""
    runs = []
    for cell in cells:
        path = _cell_path(study, cell)
        runs.append(RunDir.create(path, cell, command="lab1 train", resume=(path / CONFIG).exists()))
    where = _group_dir(study, cells)
    state = load_state(where.checkpoint_path) if rt.resume else None
    group = batched.Group(cells, data, state=state)
    threads = apply_threads(training_threads(group.models[0], group.streams[0], classification_step, rt))
    saver = _GroupSaver(where, runs, threads.record())
    try:
        group.fit(saver.end_epoch)
    except KeyboardInterrupt:
        saver.save_pending()
        raise Interrupted(
            f"interrupted in epoch {group.epoch + 1} of {_group_name(cells)}; rerun with --resume to continue "
            f"from {study.path}"
        ) from None
    except BaseException:
        saver.save_pending()
        raise
    results = {}
    tests = group.test()
    for s, (cell, run) in enumerate(zip(cells, runs, strict=True)):
        results[cell.name] = _finish_cell(group, s, run, tests[s], threads.record())
    where.checkpoint_path.unlink(missing_ok=True)
    for folder in (where.path, where.path.parent):
        with contextlib.suppress(OSError):
            folder.rmdir()  # when empty
    return results


class _GroupSaver:
    """The group's checkpoint (``Group.state``), on ``engine.fit``'s cadence: at the end of an epoch when
    ``SaveCadence.SAVE_EVERY`` seconds have passed since the last one (otherwise held in memory), and on Ctrl-C
    and errors (``save_pending``); each cell's history so far (and its thread choice) goes to its metrics.json
    with it. After the last epoch the cells' own files follow (``_finish_cell``) instead."""

    def __init__(self, where: RunDir, runs: Sequence[RunDir], threads: dict[str, Any]):
        self.where, self.runs, self.threads = where, runs, threads
        self.saves: SaveCadence[dict[str, Any]] = SaveCadence(self._write)

    def end_epoch(self, group: batched.Group) -> None:
        if group.epoch == group.cfg.epochs:
            self.saves.drop()
        elif self.saves.due():
            self.saves.write(group.state())
        else:
            self.saves.hold(group.state())

    def save_pending(self) -> None:
        self.saves.flush()

    def _write(self, state: dict[str, Any]) -> None:
        save_state(self.where.checkpoint_path, state)
        for run, history, norms in zip(self.runs, state["histories"], state["grad_norms"], strict=True):
            write_progress(run, history, norms, **{THREADS: self.threads})


def _finish_cell(
    group: batched.Group, s: int, run: RunDir, test: dict[str, float], threads: dict[str, Any]
) -> dict[str, Any]:
    """Write cell ``s``'s final files as a single run leaves them: the checkpoint ``engine.fit`` writes after the
    last epoch, then ``recipe.finish_run`` as ``train_in`` ends (no plots, as a study's cells); its metrics."""
    model, mcfg = group.model(s), group.mcfgs[s]
    group.single_checkpoint(s, model).save(run.checkpoint_path)
    return finish_run(
        run,
        model,
        group.histories[s],
        group.norms[s],
        parameters=count_parameters(model),
        trainable=count_parameters(model, trainable_only=True),
        test=test,
        save=save_classifier(mcfg),
        extra=lambda so_far: own_metrics(mcfg),
        plot=False,
        **{THREADS: threads},
    )


TITLE = "depth study: plain vs residual (mean over seeds)"
COLUMNS = {
    "depth": "depth",
    "net": "net",
    "weight_layers": "weight layers",
    "parameters": "params",
    "train_loss": "final train loss",
    "train_accuracy": "train acc",
    "val_accuracy": "val acc",
    "test_accuracy": "test acc",
}
MEASURES = ("train_loss", "train_accuracy", "val_accuracy", "test_accuracy")


def _groups(cfg: DepthStudy, cells: Sequence[TrainRun]) -> list[tuple[int, str, list[TrainRun]]]:
    return [
        (d, kind, [c for c in cells if c.depth == d and c.residual == (kind == "residual")])
        for d in cfg.depths
        for kind in cfg.kinds
    ]


def summarise(
    cfg: DepthStudy, cells: Sequence[TrainRun], results: dict[str, dict[str, Any]]
) -> tuple[list[dict], list[dict]]:
    """One row per (depth, kind): formatted mean ± std for Markdown, raw means and stds for CSV."""
    rows, csv_rows = [], []
    for depth, _kind, group in _groups(cfg, cells):
        metrics = [results[c.name] for c in group]
        row: dict[str, Any] = {
            "depth": depth,
            "net": group[0].kind,
            "weight_layers": group[0].weight_layers,
            "parameters": metrics[0]["parameters"],
        }
        raw: dict[str, Any] = {**row, "seeds": len(metrics)}
        for key in MEASURES:
            values = [m.get(key) for m in metrics if m.get(key) is not None]
            row[key] = tables.mean_std(values)
            raw[f"{key}_mean"] = float(np.mean(values)) if values else None
            raw[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)
        csv_rows.append(raw)
    return rows, csv_rows


def seed_histories(
    cfg: DepthStudy, cells: Sequence[TrainRun], results: dict[str, dict[str, Any]]
) -> dict[str, list[list[dict[str, float]]]]:
    """Each (depth, kind)'s histories, one per seed: ``"d20 plain": [history, …]``."""
    return {
        f"d{depth} {group[0].kind}": [results[c.name]["history"] for c in group]
        for depth, _kind, group in _groups(cfg, cells)
    }


def _depth_legend(
    fig: plt.Figure, cfg: DepthStudy, colors: Sequence, styles: Sequence[tuple[str, str]]
) -> None:
    """One legend for the whole figure, right of the panels: a colour per depth, then what each line style is."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, label=f"depth {d}") for c, d in zip(colors, cfg.depths, strict=True)]
    handles += [Line2D([], [], color="grey", linestyle=ls, label=label) for ls, label in styles]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)


def _colors(cfg: DepthStudy) -> np.ndarray:
    return plt.cm.viridis(np.linspace(0, 0.9, max(len(cfg.depths), 1)))


def study_curves(cfg: DepthStudy, histories: dict[str, Any], path: Path) -> Path:
    """Loss and accuracy per epoch: one row of panels per net (plain, residual), a colour per depth, train solid
    and validation dashed, the mean over the seeds with a band from the lowest to the highest seed, the legend
    outside the panels (16 curves in one axes hid each other). The accuracy panels share one y range and the loss
    panels one scale, logarithmic when the losses span decades. ``histories``: ``"d20 plain"`` → the seeds'
    histories (or one history)."""
    kinds = [k for k in cfg.kinds if any(key.endswith(f" {k}") for key in histories)]
    fig, axes = plt.subplots(len(kinds), 2, figsize=(10, 3.2 * len(kinds)), squeeze=False, sharex=True)
    colors = _colors(cfg)
    losses: list[float] = []
    for row, kind in zip(axes, kinds, strict=True):
        for color, depth in zip(colors, cfg.depths, strict=True):
            seeds = plots.seeds_of(histories.get(f"d{depth} {kind}", []))
            if not seeds:
                continue
            for ax, metric in zip(row, ("loss", "accuracy"), strict=True):
                for split, style in (("train", "-"), ("val", "--")):
                    band = plots.seed_band(seeds, f"{split}_{metric}")
                    if band is None:
                        continue
                    x, mean, low, high = band
                    ax.plot(x, mean, style, color=color)
                    if len(seeds) > 1:
                        ax.fill_between(x, low, high, color=color, alpha=0.15, linewidth=0)
                    if metric == "loss":
                        losses += [*low, *high]
        for ax, metric in zip(row, ("loss", "accuracy"), strict=True):
            ax.set(ylabel=metric, title=f"{kind}: {metric}")
            ax.grid(alpha=0.3)
        row[1].set_ylim(0, 1.02)  # both accuracy panels on one range
    log = plots.spans_decades(losses)
    top = max(losses, default=1.0)
    for ax in axes[:, 0]:
        if log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, top * 1.05)  # both loss panels on one range
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _depth_legend(fig, cfg, colors, [("-", "train"), ("--", "validation")])
    fig.suptitle(TITLE)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    """tight_layout, then saved with the legend outside the axes (bbox_inches="tight" keeps it in the image)."""
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png", bbox_inches="tight"))
    plt.close(fig)
    return path


def first_epoch_grad_norms(
    cfg: DepthStudy,
    cells: Sequence[TrainRun],
    results: dict[str, dict[str, Any]],
    path: Path,
    layers: Callable[[TrainRun], Sequence[str]],
) -> None:
    """Mean gradient norm per weight layer (conv / linear; ``layers(cell)`` names them, input to output) in the
    first epoch: one panel per net (plain, residual; shared log scale), a colour per depth, the legend outside."""
    fig, axes = plt.subplots(1, len(cfg.kinds), figsize=(5 * len(cfg.kinds), 4), squeeze=False, sharey=True)
    colors = _colors(cfg)
    for ax, kind in zip(axes[0], cfg.kinds, strict=True):
        for color, depth in zip(colors, cfg.depths, strict=True):
            cell = next(c for c in cells if c.depth == depth and c.residual == (kind == "residual"))
            norms = results[cell.name].get("grad_norms", {})
            points = [norms[name][0] for name in layers(cell) if name in norms]
            if points:
                ax.plot(range(1, len(points) + 1), points, "-", color=color)
        ax.set_yscale("log")
        ax.set(xlabel="weight layer (input → output)", title=kind)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean gradient L2 norm, epoch 1")
    _depth_legend(fig, cfg, colors, [])
    fig.suptitle("gradient norms per weight layer in the first epoch")
    _save(fig, path)


def weight_layers_of(data: Splits) -> Callable[[TrainRun], list[str]]:
    """A cell's weight layers (``dla_core.models.weight_layer_names``), from its model built on no device."""

    def names(cell: TrainRun) -> list[str]:
        with torch.device("meta"):
            return weight_layer_names(build_model(model_config(cell, data.train)))

    return names
