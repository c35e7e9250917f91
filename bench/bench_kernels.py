"""Where a training step's time goes: operations (and on a GPU, kernels) per step, and the GPU's busy share.

    python bench/bench_kernels.py [--models cnn,mlp] [--steps 4] [--precision no|bf16]
                                  [--compile none,reduce-overhead,cuda-graph] [--device cpu|cuda]

Counts, with torch.profiler, what one training step of lab1's loop (``dla_core.engine.fit``: batch indexing and
augmentation on the device, forward, backward, gradient norms, optimizer, metrics) issues, against the seeds'
step on a ready batch (forward, loss, backward, a plain ``torch.optim.Adam`` (or SGD) step with torch's defaults; their per-sample transforms ran
in DataLoader workers and launch nothing on the device). Per step = (count over 2K steps − count over K steps) / K,
so the one-off costs of a run (the model placed, the epoch's permutation, compilation, capture) cancel out.

* aten ops: every ``aten::`` call the profiler saw (nested ones included, as the profiler lists them);
* top-level aten ops: those not called from another ``aten::`` op (what the Python side dispatched);
* CUDA kernels (GPU only): kernels and memcpy/memset on the device, the launches the host issued;
* GPU busy: the share of the profiled wall time during which some kernel ran (intervals merged).

The models: lab1's CIFAR-shaped residual CNN (depth 5, 64 channels, batch 128, random-crop + flip) and its MLP
(digits-shaped 1×8×8, depth 4, width 64, batch 64). Data: random uint8 images; nothing is downloaded. The
operations a step issues do not depend on the batch size, so ``--batch 8`` counts the same on a slow CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import torch
import torch.nn.functional as F
from machine import cpu_model  # beside this script

SHAPES = {  # model → (input shape, batch, architecture, augmentation)
    "cnn": ((3, 32, 32), 128, {"depth": 5, "width": 64}, (4, True)),
    "mlp": ((1, 8, 8), 64, {"depth": 4, "width": 64}, (0, False)),
}


def images(model: str, n: int):
    from dla_core.data import ImageSet

    shape = SHAPES[model][0]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return ImageSet(x, y, [str(c) for c in range(10)], "random")


def build(model: str):
    from dla_core.models import ModelConfig, build_model

    shape, _, arch, _ = SHAPES[model]
    torch.manual_seed(0)
    return build_model(ModelConfig(model, shape, 10, residual=True, mean=(0.5,), std=(0.25,), **arch))


#### Counting ####


def count(fn, device: torch.device) -> dict[str, float]:
    """Profile ``fn()``: aten ops, top-level aten ops, device kernels, kernel busy time (µs) and wall time (µs)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) * 1e6
    aten = top = kernels = 0
    spans = []
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels += 1
            spans.append((e.time_range.start, e.time_range.end))
        elif e.name.startswith("aten::"):
            aten += 1
            parent = e.cpu_parent
            while parent is not None and not parent.name.startswith("aten::"):
                parent = parent.cpu_parent
            top += parent is None
    busy, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            busy += b - max(a, end)
            end = b
    return {"aten": aten, "top": top, "kernels": kernels, "busy_us": busy, "wall_us": wall}


def per_step(run, k: int, device: torch.device) -> dict[str, float]:
    """Per-step counts as the difference of a 2k-step and a k-step run, over k."""
    run(k)  # warm-up: allocator, cuDNN's choices, compilation
    one, two = count(lambda: run(k), device), count(lambda: run(2 * k), device)
    out = {key: (two[key] - one[key]) / k for key in ("aten", "top", "kernels")}
    out["busy"] = two["busy_us"] / two["wall_us"] if two["wall_us"] else 0.0
    out["ms"] = (two["wall_us"] - one["wall_us"]) / k / 1e3
    return out


def engine_run(model: str, device: torch.device, precision: str, compile_: str | None, optimizer: str):
    from dla_core.data import Augment, ImageBatches
    from dla_core.engine import TrainConfig, fit, make_accelerator

    _, batch, _, (pad, flip) = SHAPES[model]
    acc = make_accelerator(precision, device.type == "cpu", compile=compile_)
    net = acc.place(build(model))  # placed (and compiled) once, like one long run; each call trains on
    cfg = TrainConfig(epochs=1, lr=1e-3, precision=precision, log_grad_norms=True, optimizer=optimizer)

    def run(steps: int) -> None:
        data = ImageBatches(images(model, steps * batch), batch, shuffle=True, augment=Augment(pad, flip))
        fit(net, data.to(acc.device), cfg, accelerator=acc)

    return run


def seeds_run(model: str, device: torch.device, precision: str, optimizer: str):
    _, batch, _, _ = SHAPES[model]
    net = build(model).to(device)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    data = images(model, batch)
    x, y = (data.images.float() / 255).to(device), data.labels.to(device)  # one batch, ready

    def run(steps: int) -> None:
        for _ in range(steps):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = F.cross_entropy(net(x).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="cnn,mlp")
    ap.add_argument("--steps", type=int, default=4, help="K: per step = (2K-step count − K-step count) / K")
    ap.add_argument("--precision", choices=["no", "bf16"], default="no")
    ap.add_argument("--compile", default="none", help="engine modes: none,default,reduce-overhead,cuda-graph")
    ap.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    ap.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="both sides (lab1: adam)")
    ap.add_argument("--batch", type=int, default=None,
                    help="override the batch size: the counts do not depend on it (a loaded CPU: count at 8)")  # fmt: skip
    ap.add_argument("--label", default="", help="a tag for the RESULT lines (e.g. before/after)")
    args = ap.parse_args()
    if args.batch:
        for name, (shape, _, arch, aug) in list(SHAPES.items()):
            SHAPES[name] = (shape, args.batch, arch, aug)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else cpu_model()
    print(f"device: {where}; {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"python {platform.python_version()}; K = {args.steps} steps; precision {args.precision}")  # fmt: skip
    tag = f" {args.label}" if args.label else ""
    for model in args.models.split(","):
        runs = {"seeds": seeds_run(model, device, args.precision, args.optimizer)}
        for mode in args.compile.split(","):
            runs[f"engine/{mode}"] = engine_run(
                model, device, args.precision, None if mode == "none" else mode, args.optimizer
            )
        for name, run in runs.items():
            c = per_step(run, args.steps, device)
            gpu = (
                f" cuda_kernels/step={c['kernels']:.0f} gpu_busy={c['busy']:.0%}"
                if device.type == "cuda"
                else ""
            )
            print(f"RESULT kernels{tag} {model} [{name}, {args.optimizer}, {args.device}, {args.precision}]: "
                  f"aten_ops/step={c['aten']:.0f} top_level/step={c['top']:.0f}{gpu} ms/step={c['ms']:.1f}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
