"""lab4 scoring: throughput of ``msp`` and ``odin``, and the ODIN grid shared passes vs every pair from scratch.

    python bench/bench_lab4.py [--n 2000] [--batch-size 256] [--device cpu|cuda] [--threads N]

Model: the core CNN (residual, 3 stages × 2 blocks, width 32) with random weights on 3×32×32 images (CIFAR
shape; scoring cost does not depend on the weights). Nothing is downloaded.

1. Throughput (images/s) of ``lab4_ood.detectors.score_set`` for MSP and ODIN (T = 1000, ε = 0.0014).
2. ODIN grid, 4 T × 5 ε (OpenOOD's T ∈ {1, 10, 100, 1000}; ε ∈ {0, 0.0005, 0.001, 0.0014, 0.002}):
   - reference: each pair from scratch as pytorch-ood / OpenOOD do it (forward, backward, perturbed forward),
   - ``lab4_ood.odin.odin_grid``: one forward with the graph kept (serves every T at ε = 0), one backward per T,
     one forward per (T, ε > 0).
   Both in the same run on the same device (the issue asks for the CPU); target ≥ 2×. The scores must agree.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F

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
    p.add_argument("--device", default="cpu", help="cpu or cuda (the grid comparison asks for cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from lab4_ood.detectors import MSP, ODIN, score_set

    device = torch.device(args.device)
    model = build(device)
    data = images(args.n)
    name = (
        torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or platform.machine()
    )
    print(
        f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}"
    )

    score_set(MSP(model), data.subset(torch.arange(min(64, args.n))), args.batch_size, device)  # warm-up
    for det in (MSP(model), ODIN(model, 1000.0, 0.0014)):
        sync(device)
        seconds, _ = timed(score_set, det, data, args.batch_size, device)
        print(f"throughput {det.name:5s}: {args.n / seconds:10.1f} images/s ({seconds:.2f} s for {args.n})")

    n_grid = args.grid_n or args.n
    x_all = data.images[:n_grid].to(device).float().div_(255)
    batches = list(x_all.split(args.batch_size))
    ref_s, ref = timed(grid_reference, model, batches, device)
    ours_s, ours = timed(grid_shared, model, batches, device)
    diff = max((ref[k] - ours[k]).abs().max().item() for k in ref)
    print(f"ODIN grid {len(TEMPERATURES)} T × {len(EPSILONS)} eps on {n_grid} images:")
    print(f"  reference (every pair from scratch): {ref_s:8.2f} s")
    print(f"  lab4 odin_grid (shared passes):      {ours_s:8.2f} s")
    print(f"  speed-up: {ref_s / ours_s:.2f}x (target >= 2x); max |score difference| {diff:.2e}")


if __name__ == "__main__":
    main()
