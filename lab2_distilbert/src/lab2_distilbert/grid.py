"""`lab2 lora` with several ranks or target sets: the LoRA grid, one child run per cell.

Each cell is an ordinary `lab2 lora` run folder under ``OUT/cells/<targets>-r<rank>/`` (``q+v-r8``,
``all-linear-r16``); a finished cell is skipped on ``--resume`` and an interrupted one continues from its
checkpoint (``dla_core.recipe.child_run``). At the end: table.md (the seeds' LoRA table: targets, rank, trainable
parameters split into LoRA and head, accuracy, wall time, adapter size on disk, peak memory), the same rows in
metrics.json, and lora_grid.png (test accuracy against LoRA parameters, one line per target set).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dla_core import plots
from dla_core.config import Runtime
from dla_core.engine import TrainConfig
from dla_core.recipe import child_run
from dla_core.runs import RunDir, atomic_write
from dla_core.seeding import is_main_process, seed_everything
from lab2_distilbert import models
from lab2_distilbert.data import DataConfig, load_text_splits
from lab2_distilbert.experiments import DEFAULT_MODEL, LoraConfig, lora_model, train_lora

log = logging.getLogger(__name__)

COMMAND = "lab2 lora grid"  # the grid folder's command; its cells are "lab2 lora" runs
MB = 2**20
# metrics.json row key -> table.md header
COLUMNS = {
    "targets": "targets",
    "rank": "rank",
    "lora_params": "LoRA params",
    "head_params": "head params",
    "trainable_percent": "trainable %",
    "val_accuracy": "val acc",
    "test_accuracy": "test acc",
    "wall_seconds": "wall s",
    "adapter_mb": "adapter MB",
    "peak_memory_mb": "peak memory MB",
}


@dataclass(frozen=True)
class LoraGrid:
    model: str = DEFAULT_MODEL
    data: DataConfig = field(default_factory=DataConfig)
    ranks: tuple[int, ...] = (4, 8, 16)
    target_sets: tuple[tuple[str, ...], ...] = (("q",), ("q", "v"), ("q", "k", "v"), ("all-linear",))
    alpha: float = 16.0
    dropout: float = 0.1
    dora: bool = False
    rslora: bool = False
    merge: bool = False
    batch_size: int = 32
    train: TrainConfig = field(default_factory=TrainConfig)

    def cells(self) -> list[LoraConfig]:
        """Target sets in the order given, each with every rank."""
        base = LoraConfig(model=self.model, data=self.data, alpha=self.alpha, dropout=self.dropout,
                          dora=self.dora, rslora=self.rslora, merge=self.merge, batch_size=self.batch_size,
                          train=self.train)  # fmt: skip
        return [replace(base, rank=r, targets=tuple(t)) for t in self.target_sets for r in self.ranks]


def cell_name(cell: LoraConfig) -> str:
    return f"{'+'.join(cell.targets)}-r{cell.rank}"


def run_grid(cfg: LoraGrid, rt: Runtime) -> tuple[list[dict[str, Any]], str]:
    """Train every unfinished cell, then write table.md, metrics.json and lora_grid.png; (rows, table.md)."""
    cells = (
        cfg.cells()
    )  # each seeds as its model is built (as `lab2 lora` alone): no seed for the grid itself
    splits = load_text_splits(cfg.data)
    tokenizer = models.load_tokenizer(cfg.model)
    # every target set must map onto the model before the grid folder is made: no half-made runs
    probe = models.load_classifier(cfg.model, splits.label_names)
    for targets in cfg.target_sets:
        models.lora_target_regex(probe.config.model_type, list(targets))
    del probe
    grid = RunDir.create(rt.out, cfg, command=COMMAND, resume=rt.resume)
    results = {}
    for cell in cells:
        name = cell_name(cell)

        def work(run: RunDir, crt: Runtime, cell: LoraConfig = cell) -> None:
            # as `lab2 lora` with the cell's options (which seeds at its start): the same head and adapters,
            # whichever cells ran before in this process
            seed_everything(cell.train.seed)
            train_lora(run, lora_model(cell, splits.label_names), cell, splits, tokenizer, crt)

        log.info("LoRA grid cell %s", name)
        results[name] = child_run(grid.path / "cells" / name, cell, command="lab2 lora", work=work, rt=rt)
    rows = [row(cell, results[cell_name(cell)]) for cell in cells]
    text = markdown(rows)
    if is_main_process():
        atomic_write(grid.file("table.md"), lambda p: p.write_text(text))
        lines = {}
        for targets in dict.fromkeys(r["targets"] for r in rows):
            mine = [r for r in rows if r["targets"] == targets]
            lines[targets] = ([r["lora_params"] for r in mine], [r["test_accuracy"] for r in mine])
        plots.curves(lines, grid.file("lora_grid.png"), xlabel="LoRA parameters", ylabel="test accuracy",
                     title="LoRA: test accuracy by rank and targets")  # fmt: skip
        grid.update_metrics(rows=rows, cells=[cell_name(c) for c in cells], finished=True)
    return rows, text


def row(cell: LoraConfig, m: dict[str, Any]) -> dict[str, Any]:
    """One line of the table from a finished cell's metrics."""

    def mb(key: str) -> float | None:
        return round(m[key] / MB, 3) if key in m else None

    return {
        "targets": ",".join(cell.targets),
        "rank": cell.rank,
        "lora_params": m.get("lora_params"),
        "head_params": m.get("head_params"),
        "trainable_percent": round(100 * m["trainable_fraction"], 3) if "trainable_fraction" in m else None,
        "val_accuracy": m.get("val_accuracy"),
        "test_accuracy": m.get("test_accuracy"),
        "wall_seconds": m.get("wall_seconds"),
        "adapter_mb": mb("adapter_bytes"),
        "peak_memory_mb": mb("peak_memory_bytes"),
        "peak_memory": m.get("peak_memory"),
        "run": Path("cells", cell_name(cell)).as_posix(),
    }


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS.values()) + " |", "|" + "|".join("---" if k == "targets" else "---:"
                                                                         for k in COLUMNS) + "|"]  # fmt: skip
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"
