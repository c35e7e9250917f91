"""`lab1 study` vs a plain in-memory PyTorch loop over the same grid (CPU, one thread each).

    python bench/bench_study.py [--depths 2,10,20,30] [--seeds 0,1,2] [--epochs 30] [--repeats 3]

The study runs through its Python API (``run_study``, as ``lab1 study`` runs it: the seeds of a depth, plain and
residual, trained as one stacked model) into a temporary folder: cell run folders, checkpoints, metrics, tables
and plots included. The reference is what one would write by hand for the same grid: for each
cell the same model (``dla_core.models``, seeded the same way), Adam, batch 64, the same epochs over the digits
training split held in memory as float tensors (shuffled each epoch), a validation pass after every epoch and a
test pass at the end; nothing written to disk. After an untimed warm-up of both, each side's time is the median of ``--repeats`` runs, the two
sides alternating. Target: the study at least 2.5× faster than the reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: it reads the variable then

import torch
import torch.nn.functional as F
from machine import cpu_model


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def reference(depths, seeds, epochs: int, batch: int = 64) -> tuple[float, dict[str, float]]:
    """The plain loop: seconds for the whole grid and each cell's test accuracy."""
    from dla_core.models import build_model
    from lab1_resnet.study import DepthStudy
    from lab1_resnet.train import load_data, model_config

    t0 = time.perf_counter()
    data = load_data("digits", "data", 0.1)
    x = data.train.images.float() / 255
    y = data.train.labels
    xv, yv = data.val.images.float() / 255, data.val.labels
    xt, yt = data.test.images.float() / 255, data.test.labels
    accuracy = {}
    for cell in DepthStudy(depths=depths, seeds=seeds).cells():
        torch.manual_seed(cell.train.seed)
        net = build_model(model_config(cell, data.train))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(epochs):
            net.train()
            order = torch.randperm(len(y))
            for i in range(len(y) // batch):
                idx = order[i * batch : (i + 1) * batch]
                loss = F.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                (net(xv).argmax(1) == yv).float().mean().item()
        with torch.no_grad():
            accuracy[cell.name] = (net(xt).argmax(1) == yt).float().mean().item()
    return time.perf_counter() - t0, accuracy


def study(depths, seeds, epochs: int, out: Path) -> tuple[float, dict[str, float]]:
    """The study through its Python API: seconds for the whole grid and each cell's test accuracy."""
    import json
    from dataclasses import replace

    from dla_core.config import Runtime
    from lab1_resnet.study import DepthStudy, run_study

    cfg = DepthStudy(depths=depths, seeds=seeds)
    cfg = replace(cfg, train=replace(cfg.train, epochs=epochs))
    t0 = time.perf_counter()
    run_study(cfg, Runtime(out=out, data_dir=Path("data")))
    seconds = time.perf_counter() - t0
    accuracy = {
        cell.name: json.loads((out / "cells" / cell.name / "metrics.json").read_text())["test_accuracy"]
        for cell in cfg.cells()
    }
    return seconds, accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depths", type=ints, default=(2, 10, 20, 30))
    ap.add_argument("--seeds", type=ints, default=(0, 1, 2))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import lab1_resnet.study  # noqa: F401  (imports and the data's first load are no side's cost)
    from lab1_resnet.train import load_data

    load_data("digits", "data", 0.1)
    load_before = os.getloadavg()[0]
    refs, studies = [], []
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up, untimed: torch's first backward and optimizer step in a process cost seconds
        reference((2,), (0,), 1)
        study((2,), (0,), 1, Path(tmp) / "warm-up")
        for r in range(args.repeats):
            ref, ref_acc = reference(args.depths, args.seeds, args.epochs)
            got, acc = study(args.depths, args.seeds, args.epochs, Path(tmp) / f"study{r}")
            refs.append(ref)
            studies.append(got)
            print(
                f"run {r + 1}: reference {ref:.1f} s, study {got:.1f} s, ratio {ref / got:.2f}x", flush=True
            )
    cells = len(acc)
    print(
        f"machine: {os.cpu_count()} CPUs ({cpu_model()}), load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; torch {torch.__version__}, {torch.get_num_threads()} thread; grid: depths {args.depths} x plain/residual x seeds {args.seeds} "
        f"= {cells} cells, {args.epochs} epochs"
    )
    for name in acc:
        print(f"  {name:28s} test accuracy: reference {ref_acc[name]:.3f}, study {acc[name]:.3f}")
    ref, got = statistics.median(refs), statistics.median(studies)
    print(f"plain in-memory loop: {ref:.1f} s (median of {len(refs)})")
    print(f"lab1 study:           {got:.1f} s (median of {len(studies)})")
    print(f"ratio: {ref / got:.2f}x  (target >= 2.5x)")


if __name__ == "__main__":
    main()
