"""Core engine vs the seeds' way: one training epoch of an 8-block residual MLP on MNIST-format data.

    python bench/bench_core.py [--n 60000] [--epochs 1] [--repeats 3] [--device auto|cpu|cuda] [--threads N]

Both read the same MNIST idx files (synthetic digits written in torchvision's layout, since nothing can be
downloaded here). The reference is what the lab seeds did: torchvision ``MNIST`` with ``ToTensor`` +
``Normalize`` per sample, a ``DataLoader`` (batch 128, shuffle), and a plain Adam loop. The engine run is
``dla_core.engine.fit`` over ``ImageBatches`` (uint8 tensors in memory, normalisation inside the model).
Both run on the same device (default: CUDA when there is one; the seeds' loop moves each batch there) with the
same torch threads (torch's default, or ``--threads``). After an untimed warm-up of both (one epoch of 1,024
images: a process's first backward and optimizer step cost seconds), ``--repeats`` runs alternate the two
sides; the medians of the seconds per epoch and their ratio are reported, and a last line
``RESULT core: ref=… ours=… ratio=…x`` (seconds per epoch). Target: the engine at least 2.5× faster per epoch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: it reads the variable then

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model


def write_fixture(root: Path, n: int) -> None:
    from dla_core.data import formats

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
    for i, y in enumerate(labels[: min(n, 60000)]):  # a label-dependent stroke so the task is learnable
        images[i, 4 + 2 * y : 8 + 2 * y, 6:22] = 230
    formats.write_mnist(root, True, images, labels)
    formats.write_mnist(root, False, images[:1000], labels[:1000])


def model(mean: float, std: float) -> torch.nn.Module:
    from dla_core.models import ModelConfig, build_model

    torch.manual_seed(0)
    return build_model(
        ModelConfig("mlp", (1, 28, 28), 10, residual=True, depth=8, width=64, mean=(mean,), std=(std,))
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seeds_way(root: Path, epochs: int, device: torch.device) -> float:
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    loader = torch.utils.data.DataLoader(
        datasets.MNIST(str(root), train=True, transform=tf), batch_size=128, shuffle=True
    )
    net = model(0.0, 1.0).to(device)  # the transform already normalised
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
    sync(device)
    return (time.perf_counter() - t0) / epochs


def engine_way(root: Path, epochs: int, device: torch.device) -> tuple[float, float]:
    from dla_core.data import ImageBatches, load_dataset
    from dla_core.engine import TrainConfig, fit, make_accelerator

    t0 = time.perf_counter()
    train, _ = load_dataset("mnist", root)
    result = fit(
        model(0.1307, 0.3081),
        ImageBatches(train, 128, shuffle=True),
        TrainConfig(epochs=epochs, lr=1e-3),
        accelerator=make_accelerator(cpu=device.type == "cpu"),
    )
    sync(device)
    total = time.perf_counter() - t0
    return sum(h["epoch_seconds"] for h in result.history) / epochs, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60000, help="training images")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating; medians reported")
    ap.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when there is one"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads for both [default: torch's]")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    refs, engs, totals = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        warm, root = Path(tmp) / "warm-up", Path(tmp) / "data"
        write_fixture(warm, 1024)
        write_fixture(root, args.n)
        seeds_way(warm, 1, device)  # warm-up, untimed
        engine_way(warm, 1, device)
        for r in range(args.repeats):
            for side in ("seeds", "engine") if r % 2 == 0 else ("engine", "seeds"):
                torch.set_num_threads(threads)  # the same for both, whatever a side left behind
                if side == "seeds":
                    refs.append(seeds_way(root, args.epochs, device))
                else:
                    eng, total = engine_way(root, args.epochs, device)
                    engs.append(eng)
                    totals.append(total)
            print(
                f"run {r + 1}: seeds' way {refs[-1]:.2f} s/epoch, engine {engs[-1]:.2f} s/epoch, "
                f"ratio {refs[-1] / engs[-1]:.2f}x",
                flush=True,
            )
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu_model()})"
    print(
        f"machine: {where}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} threads; "
        f"{args.n} images, median of {args.repeats}"
    )
    ref, eng, total = statistics.median(refs), statistics.median(engs), statistics.median(totals)
    print(f"seeds' way (torchvision MNIST + ToTensor/Normalize + DataLoader): {ref:.2f} s/epoch")
    print(
        f"dla_core engine (uint8 in memory + fit):                       {eng:.2f} s/epoch "
        f"({total:.2f} s including reading the idx files and setup)"
    )
    print(f"ratio: {ref / eng:.2f}x  (target >= 2.5x)")
    print(f"RESULT core: ref={ref:.3f} ours={eng:.3f} ratio={ref / eng:.2f}x (seconds per epoch)")


if __name__ == "__main__":
    main()
