"""lab4 scoring: throughput of ``msp`` and ``odin``, and the ODIN grid shared passes vs every pair from scratch.

    python bench/bench_lab4.py [--n 2000] [--batch-size 256] [--device auto|cpu|cuda] [--threads N] [--repeats 3]

Model: the core CNN (residual, 3 stages × 2 blocks, width 32) with random weights on 3×32×32 images (CIFAR
shape; scoring cost does not depend on the weights). Nothing is downloaded.

1. Throughput (images/s) of ``lab4_ood.detectors.score_set`` for MSP and ODIN (T = 1000, ε = 0.0014).
2. ODIN grid, 4 T × 5 ε (OpenOOD's T ∈ {1, 10, 100, 1000}; ε ∈ {0, 0.0005, 0.001, 0.0014, 0.002}):
   - reference: each pair from scratch as pytorch-ood / OpenOOD do it (forward, backward, perturbed forward),
   - ``lab4_ood.odin.odin_grid``: one forward with the graph kept (serves every T at ε = 0), one backward per T,
     one forward per (T, ε > 0).
   Both in the same run on the same device (default: CUDA when there is one; the issue's target is for the
   CPU: ``--device cpu``); target ≥ 2×. The scores must agree.

After an untimed warm-up (a few images through both detectors and both grids), ``--repeats`` runs time the
throughputs and alternate the two grids; medians are reported, and a last line ``RESULT lab4: ref=… ours=…
ratio=…x`` (seconds for the grid).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model

TEMPERATURES = (1.0, 10.0, 100.0, 1000.0)
EPSILONS = (0.0, 0.0005, 0.001, 0.0014, 0.002)


def build(device: torch.device) -> torch.nn.Module:
    from dla_core.models import ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(
        "cnn", (3, 32, 32), 10, depth=2, width=32, stages=3, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26)
    )
    return build_model(cfg).to(device).eval()


def images(n: int):
    from dla_core.data import ImageSet

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return ImageSet(x, torch.zeros(n, dtype=torch.int64), [str(i) for i in range(10)], "bench")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


#### Reference: one (T, ε) pair from scratch, the libraries' way ####


def odin_pair_reference(model: torch.nn.Module, x: torch.Tensor, t: float, eps: float) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    loss = F.cross_entropy(logits / t, logits.argmax(1), reduction="sum")
    loss.backward()
    with torch.no_grad():
        return F.softmax(model(x - eps * x.grad.sign()) / t, 1).amax(1)


def grid_reference(model, batches, device):
    out = {}
    for t in TEMPERATURES:
        for e in EPSILONS:
            out[(t, e)] = torch.cat([odin_pair_reference(model, x, t, e) for x in batches])
    sync(device)
    return out


def grid_shared(model, batches, device):
    from lab4_ood.odin import odin_grid

    parts: dict = {}
    for x in batches:
        for key, s in odin_grid(model, x, TEMPERATURES, EPSILONS).items():
            parts.setdefault(key, []).append(s)
    sync(device)
    return {k: torch.cat(v) for k, v in parts.items()}


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="images to score")
    p.add_argument("--grid-n", type=int, default=None, help="images for the grid comparison [default: --n]")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=3, help="runs of each, the two grids alternating; medians")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from lab4_ood.detectors import make_detector, score_set

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    model = build(device)
    data = images(args.n)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(
        f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}; median of {args.repeats}"
    )

    n_grid = args.grid_n or args.n
    x_all = data.images[:n_grid].to(device).float().div_(255)
    batches = list(x_all.split(args.batch_size))
    # warm-up, untimed: first-call kernel choices and allocations would otherwise bill whichever runs first
    warm = data.subset(torch.arange(min(64, args.n)))
    for det in (make_detector("msp", model, {}, device), make_detector("odin", model, {}, device)):
        score_set(det, warm, args.batch_size, device)
    grid_reference(model, [batches[0][:64]], device)
    grid_shared(model, [batches[0][:64]], device)

    for det in (make_detector("msp", model, {}, device), make_detector("odin", model, {}, device)):
        runs = []
        for _ in range(args.repeats):
            sync(device)
            runs.append(timed(score_set, det, data, args.batch_size, device)[0])
        seconds = statistics.median(runs)
        print(f"throughput {det.name:5s}: {args.n / seconds:10.1f} images/s ({seconds:.2f} s for {args.n})")

    refs, ours_runs, diff = [], [], 0.0
    for r in range(args.repeats):
        sides = ("reference", "shared") if r % 2 == 0 else ("shared", "reference")
        got = {}
        for side in sides:
            fn = grid_reference if side == "reference" else grid_shared
            sync(device)
            seconds, got[side] = timed(fn, model, batches, device)
            (refs if side == "reference" else ours_runs).append(seconds)
        diff = max(
            diff, max((got["reference"][k] - got["shared"][k]).abs().max().item() for k in got["reference"])
        )
        print(f"run {r + 1}: grid from scratch {refs[-1]:.2f} s, shared {ours_runs[-1]:.2f} s", flush=True)
    ref_s, ours_s = statistics.median(refs), statistics.median(ours_runs)
    print(f"ODIN grid {len(TEMPERATURES)} T × {len(EPSILONS)} eps on {n_grid} images:")
    print(f"  reference (every pair from scratch): {ref_s:8.2f} s")
    print(f"  lab4 odin_grid (shared passes):      {ours_s:8.2f} s")
    print(f"  speed-up: {ref_s / ours_s:.2f}x (target >= 2x); max |score difference| {diff:.2e}")
    print(
        f"RESULT lab4: ref={ref_s:.3f} ours={ours_s:.3f} ratio={ref_s / ours_s:.2f}x (seconds for the ODIN grid)"
    )


if __name__ == "__main__":
    main()
