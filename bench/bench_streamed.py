"""Streamed image files against the same folder decoded into memory: images/s and peak memory.

    python bench/bench_streamed.py [--images 3000] [--size 64] [--epochs 2]

A fixture folder of PNGs (10 classes, 96×96 RGB, smooth random patterns that compress like photos more than
noise does) is written once to a temporary folder; each side then runs in its own child process, so that peak
memory is its own: the child's maximum resident set less its resident set after the imports (torch's allocator
and lazily loaded libraries blur it), and, in a separate one-epoch run, tracemalloc's peak (numpy buffers and
Python objects: the decoded images, not torch's float batches):

    memory    load_dataset decodes every file to --size once, then --epochs shuffled epochs of batch 128
    streamed  DLA_DATA_STREAM=always: the file list, then --epochs epochs decoding each batch as it goes

Both sides hand out the same batches (tests/core/test_streamed.py); images/s counts the images handed out over
the whole run, load included. The last line: ``RESULT streamed: memory=… streamed=… ratio=…``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 128


def write_folder(root: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96] / 96.0
    for i in range(n):
        a, b, c = rng.uniform(1, 8, 3)
        img = np.stack([np.sin(a * xx + b * yy + k * c) for k in range(3)], -1) * 120 + 128
        img += rng.normal(0, 6, img.shape)
        (root / f"c{i % 10}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / f"c{i % 10}" / f"{i:05d}.png")


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def child(folder: str, size: int, epochs: int, trace: bool) -> None:
    import tracemalloc

    import torch

    from dla_core.data import ImageBatches, folders, load_dataset

    first = next(Path(folder).rglob("*.png"))
    folders._decode(first, size, size, 3)  # the imports a decode makes (PIL's plugins), outside the measure
    base = rss_kib()
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    train, _ = load_dataset(f"imagefolder:{folder}", size=(size, size))
    loaded = time.perf_counter() - t0
    served, checksum = 0, 0.0
    batches = ImageBatches(train, BATCH, shuffle=True, seed=0)
    for epoch in range(epochs):
        for x, _ in batches.iterate(epoch):
            served += len(x)
            checksum += float(x[:, :, 0, 0].sum())
    total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    print(json.dumps({"storage": train.source["storage"], "load_s": loaded, "total_s": total, "served": served,
                      "peak_mib": (peak - base) / 1024, "traced_mib": traced, "checksum": checksum,
                      "threads": torch.get_num_threads()}))  # fmt: skip


def run(mode: str, folder: Path, size: int, epochs: int, trace: bool = False) -> dict:
    env = {**os.environ, "DLA_DATA_STREAM": mode}
    cmd = [sys.executable, __file__, "--child", str(folder), "--size", str(size), "--epochs", str(epochs)]
    cmd += ["--trace"] if trace else []
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--child")
    p.add_argument("--trace", action="store_true")
    a = p.parse_args()
    if a.child:
        return child(a.child, a.size, a.epochs, a.trace)
    from machine import cpu_model

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        write_folder(folder, a.images)
        run("never", folder, a.size, 1)  # untimed: warms the page cache for both sides
        memory, streamed = run("never", folder, a.size, a.epochs), run("always", folder, a.size, a.epochs)
        for r, mode in ((memory, "never"), (streamed, "always")):  # separate runs: tracing slows allocation
            r["traced_mib"] = run(mode, folder, a.size, 1, trace=True)["traced_mib"]
    assert (memory["storage"], streamed["storage"]) == ("memory", "streamed")
    assert memory["served"] == streamed["served"] and abs(memory["checksum"] - streamed["checksum"]) < 1e-3
    for name, r in (("memory", memory), ("streamed", streamed)):
        print(f"{name:9s} load {r['load_s']:6.2f} s  total {r['total_s']:6.2f} s  "
              f"{r['served'] / r['total_s']:8.0f} images/s  peak RSS +{r['peak_mib']:.1f} MiB  "
              f"traced peak {r['traced_mib']:.1f} MiB")  # fmt: skip
    m, s = memory["served"] / memory["total_s"], streamed["served"] / streamed["total_s"]
    print(f"load after: {os.getloadavg()[0]:.1f}")
    print(f"RESULT streamed: memory={m:.0f}/s streamed={s:.0f}/s ratio={s / m:.2f}x "
          f"traced peak memory={memory['traced_mib']:.1f}MiB streamed={streamed['traced_mib']:.1f}MiB")  # fmt: skip


if __name__ == "__main__":
    main()
