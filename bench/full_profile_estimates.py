"""How long `labN reproduce --profile full` takes on this CPU, from a smoke run's measured seconds per step.

    labN reproduce --profile full --max-steps 1 --out SMOKE      # the slow tier's tests/labN/test_full_profile.py
    python bench/full_profile_estimates.py SMOKE [SMOKE …]

Hardware: whatever runs it (the project's 2-core CPU for bench/RESULTS.md). Evidence: every training run folder of
the smoke run (a step's own folder, a study's cells, a transfer's rows, a LoRA grid's cells) holds the seconds of
its capped epochs (``history[].epoch_seconds``: the training loop alone) and its config (dataset, batch size,
epochs). Seconds per optimizer step = epoch seconds / steps in that epoch. A whole run = that × (batches per full
epoch × epochs) + its evaluations (validation every epoch, the test set once, counted as a third of a training
step per example: a forward pass only). A step's estimate is the sum over its runs. The sizes of the splits are
the real datasets' (``SIZES``), the same ones tests/full_size.py writes. Not estimated: the steps that do not
train (detect, attack, features, evaluate, lab3's stories): their smoke time is shown, measured on the smoke cap's
few images, and grows with the images per set. One cold step per run (``--max-steps 1``) overstates a warm one a
little; a loaded machine overstates everything (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

# (train, test) examples of each dataset; a validation fraction is carved off train where the run says so
SIZES = {"mnist": (60_000, 10_000), "cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000)}
TEXT_SIZES = {"train": 8_530, "validation": 1_066, "test": 1_066}  # Rotten Tomatoes
EVAL_COST = 1 / 3  # a forward pass per example, against forward + backward + optimizer of a training step


def _classes(spec: str) -> float:
    """The share of a dataset a spec selects: "cifar100:0-1,3-10" → 10/100; a named group (people) → 5/100."""
    name, _, sel = spec.partition(":")
    if not sel:
        return 1.0
    total = 100 if name == "cifar100" else 10
    if not sel[0].isdigit():
        return 5 / total  # a CIFAR-100 superclass
    count = 0
    for part in sel.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count / total


def _examples(config: dict[str, Any]) -> tuple[int, int, int] | None:
    """(train, validation, test) examples of a training run from its config; None when unknown."""
    if "data" in config:  # lab2: the hub's Rotten Tomatoes
        return TEXT_SIZES["train"], TEXT_SIZES["validation"], TEXT_SIZES["test"]
    spec = config.get("dataset")
    if not isinstance(spec, str) or spec.split(":")[0] not in SIZES:
        return None
    train, test = SIZES[spec.split(":")[0]]
    share = _classes(spec)
    val = round(train * share * config.get("val_fraction", 0.1))
    return round(train * share) - val, val, round(test * share)


def _runs(folder: Path) -> list[Path]:
    """Every run folder under ``folder`` (itself included) whose metrics.json has a training history."""
    found = []
    for metrics in sorted(folder.rglob("metrics.json")):
        try:
            if json.loads(metrics.read_text()).get("history"):
                found.append(metrics.parent)
        except (OSError, ValueError):
            continue
    return found


def _config(run: Path) -> dict[str, Any]:
    """The run's own config, else the nearest parent's (a transfer row is a folder of the transfer's run)."""
    for folder in (run, *run.parents):
        if (folder / "config.json").is_file():
            return json.loads((folder / "config.json").read_text()).get("config", {})
    return {}


def estimate_run(run: Path) -> tuple[float, float] | None:
    """(seconds per optimizer step, estimated seconds of the whole run); None without sizes or timings."""
    metrics = json.loads((run / "metrics.json").read_text())
    config = _config(run)
    train_cfg = config.get("train") or config.get("student", {}).get("train") or {}
    sizes = _examples(config) or _examples(config.get("student", {}))
    batch = config.get("batch_size") or config.get("student", {}).get("batch_size")
    epochs, cap = train_cfg.get("epochs"), train_cfg.get("max_steps")
    if sizes is None or not batch or not epochs or not cap:
        return None
    train, val, test = sizes
    accum = train_cfg.get("grad_accum", 1)
    full_batches = math.ceil(train / batch)
    steps_run = min(cap, math.ceil(full_batches / accum))
    per_step = metrics["history"][-1]["epoch_seconds"] / steps_run
    full_steps = math.ceil(full_batches / accum) * epochs
    evals = (val * epochs + test) / (batch * accum) * EVAL_COST
    return per_step, per_step * (full_steps + evals)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "smoke", nargs="+", type=Path, help="folders of `labN reproduce --profile full --max-steps 1`"
    )
    args = p.parse_args()
    print(f"load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for smoke in args.smoke:
        saved = json.loads((smoke / "config.json").read_text())
        manifest = json.loads((smoke / "metrics.json").read_text())["steps"]
        print(f"\n{saved['command']} --profile {saved['config']['profile']} (smoke: {smoke})")
        print("| step | smoke s | runs | s/step (median) | full run, CPU h |\n|---|---:|---:|---:|---:|")
        for name, step in manifest.items():
            estimates = [e for run in _runs(smoke / name) if (e := estimate_run(run)) is not None]
            if not estimates:
                print(f"| {name} | {step['seconds']:.0f} | – | – | not estimated (no training) |")
                continue
            per_step = sorted(e[0] for e in estimates)[len(estimates) // 2]
            hours = sum(e[1] for e in estimates) / 3600
            print(f"| {name} | {step['seconds']:.0f} | {len(estimates)} | {per_step:.2f} | {hours:.1f} |")


if __name__ == "__main__":
    main()
