"""Core engine vs the seeds' way: one training epoch of an 8-block residual MLP on MNIST-format data (CPU).

    python bench/bench_core.py [--n 60000] [--epochs 1]

Both read the same MNIST idx files (synthetic digits written in torchvision's layout, since nothing can be
downloaded here). The reference is what the lab seeds did: torchvision ``MNIST`` with ``ToTensor`` +
``Normalize`` per sample, a ``DataLoader`` (batch 128, shuffle), and a plain Adam loop. The engine run is
``dla_core.engine.fit`` over ``ImageBatches`` (uint8 tensors in memory, normalisation inside the model).
Target: the engine at least 2.5× faster per epoch.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


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


def seeds_way(root: Path, epochs: int) -> float:
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    loader = torch.utils.data.DataLoader(
        datasets.MNIST(str(root), train=True, transform=tf), batch_size=128, shuffle=True
    )
    net = model(0.0, 1.0)  # the transform already normalised
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    t0 = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
    return (time.perf_counter() - t0) / epochs


def engine_way(root: Path, epochs: int) -> tuple[float, float]:
    from dla_core.data import ImageBatches, load_dataset
    from dla_core.engine import TrainConfig, fit, make_accelerator

    t0 = time.perf_counter()
    train, _ = load_dataset("mnist", root)
    result = fit(
        model(0.1307, 0.3081),
        ImageBatches(train, 128, shuffle=True),
        TrainConfig(epochs=epochs, lr=1e-3),
        accelerator=make_accelerator(),
    )
    total = time.perf_counter() - t0
    return sum(h["epoch_seconds"] for h in result.history) / epochs, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60000, help="training images")
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_fixture(root, args.n)
        ref = seeds_way(root, args.epochs)
        eng, eng_total = engine_way(root, args.epochs)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"seeds' way (torchvision MNIST + ToTensor/Normalize + DataLoader): {ref:.2f} s/epoch")
    print(
        f"dla_core engine (uint8 in memory + fit):                       {eng:.2f} s/epoch "
        f"({eng_total:.2f} s including reading the idx files and setup)"
    )
    print(f"ratio: {ref / eng:.2f}x  (target >= 2.5x)")


if __name__ == "__main__":
    main()
