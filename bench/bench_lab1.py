"""lab1 vs the seeds' way: one epoch of a CIFAR-10-shaped residual CNN (depth 5, 64 channels, batch 128).

    python bench/bench_lab1.py [--size N] [--epochs 3] [--precision no|bf16] [--ref-precision no|bf16]
                               [--workers 2] [--compile]
    python bench/bench_lab1.py --study        # wall time of the default `lab1 study` (minutes)

Both read the same synthetic uint8 images, written in the real CIFAR-10 pickle layout (nothing can be
downloaded here). The reference is what the lab seeds did: a torch Dataset returning PIL images through
torchvision ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` per sample, a
``DataLoader`` (batch 128, shuffle, --workers), and a plain Adam loop (``torch.autocast`` for bf16). lab1 is
``lab1 train``'s experiment function: uint8 tensors on the device, crop + flip on whole batches,
``dla_core.engine.fit`` (on a GPU: channels_last convolution weights, and ``torch.compile`` with --compile;
``--compile cuda-graph``: the training forward/backward replayed from CUDA graphs, GPU only).
Both report images/s over the training epochs only (no evaluation): the median over the epochs after the
first (the first carries DataLoader worker start-up on one side and compilation on the other), and the first
epoch's too. Target on a GPU with --precision bf16: lab1 ≥ 5× the seeds' way (whose precision is
--ref-precision: the seeds trained in fp32). On a CPU the convolutions dominate both, so expect a ratio near 1;
use --size to keep it short (default: 50,000 on a GPU, 2,048 on a CPU).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before anything imports tqdm

import numpy as np
import torch
import torch.nn.functional as F

DEPTH, CHANNELS, BATCH = 5, 64, 128


def write_fixture(root: Path, n: int) -> None:
    from dla_core.data import formats

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    for i, y in enumerate(labels):  # a label-dependent bright patch so the task is learnable
        images[i, :, 2 * y : 2 * y + 6, 2 * y : 2 * y + 6] = 250
    n_test = min(1000, n)
    formats.write_cifar10(root, images, labels, images[:n_test], labels[:n_test])


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


#### The seeds' way ####


class UInt8Cifar(torch.utils.data.Dataset):
    """What torchvision's CIFAR10 does per item (it checks MD5s, so it cannot read synthetic files)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # (N, 32, 32, 3) like torchvision
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def seeds_way(root: Path, epochs: int, precision: str, workers: int) -> list[float]:
    from torchvision import transforms

    from dla_core.data import formats
    from dla_core.models import ModelConfig, build_model

    x, y, _ = formats.read_cifar10(root, True)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])  # fmt: skip
    loader = torch.utils.data.DataLoader(
        UInt8Cifar(x.numpy(), y.numpy(), tf),
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device().type == "cuda",
        persistent_workers=workers > 0,
    )
    dev = device()
    torch.manual_seed(0)
    cfg = ModelConfig(
        "cnn", (3, 32, 32), 10, residual=True, depth=DEPTH, width=CHANNELS, mean=(0.0,), std=(1.0,)
    )
    net = build_model(cfg).to(dev)  # the transform normalises already
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    rates = []
    for _ in range(epochs):
        t0, seen = time.perf_counter(), 0
        for xb, yb in loader:
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = F.cross_entropy(net(xb).float(), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(yb)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rates.append(seen / (time.perf_counter() - t0))
    return rates


#### lab1 ####


def lab1_way(
    root: Path, size: int, epochs: int, precision: str, compile: str | None, out: str = "run"
) -> tuple[list[float], float]:
    from dla_core.config import Runtime
    from dla_core.engine import TrainConfig
    from lab1_resnet.train import TrainRun, train_classifier

    cfg = TrainRun(
        dataset="cifar10",
        model="cnn",
        depth=DEPTH,
        width=CHANNELS,
        residual=True,
        batch_size=BATCH,
        val_fraction=0.0,
        train=TrainConfig(epochs=epochs, lr=1e-3, precision=precision),
    )
    t0 = time.perf_counter()
    m = train_classifier(cfg, Runtime(out=root / out, data_dir=root, compile=compile))
    wall = time.perf_counter() - t0
    per_epoch = (size // BATCH) * BATCH  # training drops the last partial batch, like the DataLoader above
    return [per_epoch / h["epoch_seconds"] for h in m["history"]], wall


def steady(rates: list[float]) -> float:
    """Images/s once warm: the median over the epochs after the first (the first alone if there is one)."""
    return statistics.median(rates[1:]) if len(rates) > 1 else rates[0]


#### Main ####


def time_study() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run(["lab1", "study", "--out", str(Path(tmp) / "study")], check=True)
        wall = time.perf_counter() - t0
    print(
        f"`lab1 study` (default: 4 depths × plain/residual × 3 seeds, 30 epochs on digits): {wall:.1f} s wall"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=None, help="training images (default 50000 GPU / 2048 CPU)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--precision", choices=["no", "bf16"], default="no")
    ap.add_argument("--ref-precision", default=None, help="the seeds' way: no|bf16, or several (no,bf16)")
    ap.add_argument("--workers", default="2", help="DataLoader workers of the seeds' way, or several (2,8)")
    ap.add_argument("--compile", default="none",
                    help="lab1's --compile modes to time, comma-separated: none,default,reduce-overhead,cuda-graph,…")  # fmt: skip
    ap.add_argument("--study", action="store_true", help="time the default `lab1 study` instead")
    args = ap.parse_args()
    if args.study:
        time_study()
        return
    size = args.size or (50_000 if device().type == "cuda" else 2048)
    ref_precisions = (args.ref_precision or args.precision).split(",")
    workers = [int(w) for w in args.workers.split(",")]
    where = (
        torch.cuda.get_device_name(0)
        if device().type == "cuda"
        else platform.processor() or platform.machine()
    )
    print(
        f"device: {where}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{size} images, {args.epochs} epoch(s); images/s = median of the epochs after the first"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_fixture(root, size)
        refs = {}
        for ref_precision, w in zip(ref_precisions, workers, strict=True):
            rates = seeds_way(root, args.epochs, ref_precision, w)
            refs[(ref_precision, w)] = steady(rates)
            print(f"seeds' way (PIL + per-sample transforms + DataLoader, {w} workers, precision {ref_precision}): "
                  f"{steady(rates):,.0f} images/s (epochs: {', '.join(f'{r:,.0f}' for r in rates)})")  # fmt: skip
        for n, mode in enumerate(args.compile.split(",")):
            compile_ = None if mode == "none" else mode
            rates, wall = lab1_way(root, size, args.epochs, args.precision, compile_, f"run{n}")
            ours = steady(rates)
            print(f"lab1 train (uint8 on device + batch augmentation + fit, precision {args.precision}, "
                  f"--compile {mode}): {ours:,.0f} images/s (epochs: {', '.join(f'{r:,.0f}' for r in rates)}; "
                  f"{wall:.1f} s wall incl. loading, compiling, test evaluation, plots)")  # fmt: skip
            for (ref_precision, w), ref in refs.items():
                print(f"RESULT lab1 [{args.precision}, compile {mode} vs seeds {ref_precision}, {w} workers]: "
                      f"ref={ref:.0f} ours={ours:.0f} ratio={ours / ref:.2f}x  (target >= 5x on a GPU)")  # fmt: skip


if __name__ == "__main__":
    main()
