"""Threads under load: a small `lab1 study` alone vs next to one competing CPU-bound process, with the thread
policy (``dla_core.threads``) vs torch's default threads (one per core), in the same run.

    python bench/bench_threads.py [--depths 2,10] [--epochs 5] [--repeats 3]
    python bench/bench_threads.py --crossover     # step time at 1 thread vs every core, by work size


Each measurement is a fresh process that runs ``lab1_resnet.study.run_study`` on digits (seed 0, plain and
residual MLPs) into a temporary folder and reports the study's wall time (after a one-cell warm-up run, so that imports are not timed) and the summed
time of its training epochs. "policy": no
OMP_NUM_THREADS, no --threads: the policy picks (1 thread for these MLPs); "default": ``--threads`` = the cores
available, torch's own default. "loaded": a busy-loop ``python -c`` process runs the whole time.
Prints the median of --repeats per case and the slow-down ratios loaded / quiet.
Target: with the policy, loaded ≤ 1.6× quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from machine import cpu_model


def child(mode: str, depths: tuple[int, ...], epochs: int) -> None:
    from dla_core.config import Runtime
    from dla_core.engine import TrainConfig
    from dla_core.threads import available_cores
    from lab1_resnet.study import DepthStudy, run_study

    threads = None if mode == "policy" else available_cores()
    cfg = DepthStudy(
        depths=depths, seeds=(0,), train=TrainConfig(epochs=epochs, lr=1e-3, log_grad_norms=True)
    )
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: one tiny cell, so that lazy imports (torch._dynamo, matplotlib, the data) are not timed
        warm = DepthStudy(depths=(1,), kinds=("residual",), seeds=(0,), train=TrainConfig(epochs=1))
        run_study(warm, Runtime(out=Path(tmp) / "warm-up", threads=threads))
        t0 = time.perf_counter()
        run_study(cfg, Runtime(out=Path(tmp) / "study", threads=threads))
        seconds = time.perf_counter() - t0
        cells = [
            json.loads((c / "metrics.json").read_text()) for c in (Path(tmp) / "study" / "cells").iterdir()
        ]
    train = sum(m["train_seconds"] for m in cells)  # the epochs alone: no data loading, evaluation, plots
    print(json.dumps({"seconds": seconds, "train_seconds": train, "threads": cells[0]["threads"]}))


def crossover(repeats: int) -> None:
    """Forward + backward + Adam step of growing models at 1 thread and at every core: where threads pay
    (the numbers behind ``dla_core.threads.AUTO_THRESHOLD_FLOPS``)."""
    import torch

    from dla_core.models import ModelConfig, build_model
    from dla_core.threads import available_cores, step_flops

    cores = available_cores()
    cases = [
        ("digits MLP d30 w64", ModelConfig("mlp", (1, 8, 8), 10, depth=30, width=64), 64),
        ("digits CNN d2 c16", ModelConfig("cnn", (1, 8, 8), 10, depth=2, width=16), 128),
        ("MLP d4 w256", ModelConfig("mlp", (1, 16, 16), 10, depth=4, width=256), 128),
        ("MLP d4 w512", ModelConfig("mlp", (1, 16, 16), 10, depth=4, width=512), 256),
        ("CIFAR CNN d1 c16", ModelConfig("cnn", (3, 32, 32), 10, depth=1, width=16), 64),
        ("CIFAR CNN d2 c32", ModelConfig("cnn", (3, 32, 32), 10, depth=2, width=32), 128),
    ]
    print(
        f"{'model':<20} {'batch':>5} {'FLOPs/step':>10} {'1 thread':>9} {f'{cores} threads':>10} {'gain':>6}"
    )
    for name, cfg, batch in cases:
        torch.manual_seed(0)
        model = build_model(cfg)
        flops = step_flops(model, batch, lambda m=model, c=cfg: m(torch.zeros(1, *c.in_shape)))
        opt = torch.optim.Adam(model.parameters())
        x, y = torch.rand(batch, *cfg.in_shape), torch.randint(0, 10, (batch,))
        steps = max(3, min(20, int(2e10 / flops)))
        per: dict[int, float] = {}
        for n in (1, cores):
            torch.set_num_threads(n)
            runs = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(steps):
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(model(x), y).backward()
                    opt.step()
                runs.append((time.perf_counter() - t0) / steps)
            per[n] = statistics.median(runs)
        print(f"{name:<20} {batch:>5} {flops:>10.2g} {per[1] * 1e3:>7.1f}ms {per[cores] * 1e3:>8.1f}ms "
              f"{per[1] / per[cores]:>5.2f}×")  # fmt: skip


def measure(mode: str, args: argparse.Namespace) -> dict:
    drop = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["TQDM_DISABLE"] = "1"
    argv = [sys.executable, __file__, "--child", mode, "--depths", args.depths, "--epochs", str(args.epochs)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depths", default="2,10")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--crossover", action="store_true", help="step time by work size, 1 thread vs every core")
    p.add_argument("--child", choices=["policy", "default"], help=argparse.SUPPRESS)
    args = p.parse_args()
    depths = tuple(int(d) for d in args.depths.split(","))
    if args.child:
        child(args.child, depths, args.epochs)
        return
    if args.crossover:
        print(f"{os.cpu_count()} CPUs ({cpu_model()}), load average {os.getloadavg()[0]:.1f}, {date.today()}")
        crossover(args.repeats)
        return

    times: dict[tuple[str, str], list[float]] = {}
    train: dict[tuple[str, str], list[float]] = {}
    chosen: dict[str, dict] = {}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        for load in ("quiet", "loaded"):
            busy = None
            if load == "loaded":
                # busy until this process goes away, even if it is killed before it can stop the competitor
                spin = f"import os\nwhile os.getppid() == {os.getpid()}: pass"
                busy = subprocess.Popen([sys.executable, "-c", spin])
                time.sleep(0.5)
            try:
                for mode in ("policy", "default"):
                    r = measure(mode, args)
                    times.setdefault((mode, load), []).append(r["seconds"])
                    train.setdefault((mode, load), []).append(r["train_seconds"])
                    chosen[mode] = r["threads"]
                    print(
                        f"  {mode} {load}: {r['seconds']:.2f} s (epochs {r['train_seconds']:.2f} s)",
                        flush=True,
                    )
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    med = {k: statistics.median(v) for k, v in times.items()}
    med_train = {k: statistics.median(v) for k, v in train.items()}
    print(
        f"machine: {os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}, "
        f"load average before {load_before[0]:.1f}, {date.today()}"
    )
    print(f"study: depths {args.depths}, plain + residual, seed 0, {args.epochs} epochs on digits")
    for mode in ("policy", "default"):
        q, lo = med[(mode, "quiet")], med[(mode, "loaded")]
        print(
            f"{mode:8} ({chosen[mode]['threads']} thread(s), {chosen[mode]['why']}): quiet {q:.2f} s, "
            f"loaded {lo:.2f} s, slow-down {lo / q:.2f}×  (runs: {[round(t, 2) for t in times[(mode, 'loaded')]]})"
        )
        tq, tl = med_train[(mode, "quiet")], med_train[(mode, "loaded")]
        print(f"{'':8} epochs alone: quiet {tq:.2f} s, loaded {tl:.2f} s, slow-down {tl / tq:.2f}×")
    print(
        f"policy vs default: quiet {med[('default', 'quiet')] / med[('policy', 'quiet')]:.2f}× faster, "
        f"loaded {med[('default', 'loaded')] / med[('policy', 'loaded')]:.2f}× faster; "
        f"target: policy loaded/quiet ≤ 1.6×"
    )


if __name__ == "__main__":
    main()
