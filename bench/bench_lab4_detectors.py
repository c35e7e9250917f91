"""lab4 detectors: scoring throughput of every detector, and the cost of fitting KNN / ViM / Mahalanobis (+ RMDS).

    python bench/bench_lab4_detectors.py [--n 1000] [--fit-n 50000] [--dim 512] [--repeats 3] [--threads N]

1. Throughput (images/s, CPU) of ``lab4_ood.detectors.score_set`` for every registered detector but ``recon``
   (it needs a trained decoder), on the core CNN (residual, 3 stages × 2 blocks, width 32, random weights) and
   ``--n`` random 3×32×32 images (CIFAR shape; the cost does not depend on the weights). Detectors that fit are
   fitted first on 2,000 other images (untimed here). Median of ``--repeats`` after an untimed warm-up.
2. Fit cost on ``--fit-n`` feature vectors of ``--dim`` dimensions (50,000 × 512: CIFAR-10's training split
   through a ResNet-18's penultimate layer), 10 classes, streamed in batches of 256 made on the fly (so the
   data itself costs no memory): wall time and peak extra memory (the peak resident set of a fresh process
   during ``fit``, VmHWM reset just before, less its resident set then), each method in its own process. The model is the
   identity as ``features`` plus a linear head, so no network is timed; the time includes making the stream,
   which is timed alone too. For KNN also the bank
   capped at 10,000 (``--max-bank``), and the time to score 1,000 queries against the bank.

Prints a Markdown table per part and ``RESULT`` lines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model

CLASSES = 10


class FeatureModel(torch.nn.Module):
    """features = the input (already a feature vector), logits = one linear layer: fit costs without a network."""

    def __init__(self, dim: int):
        super().__init__()
        torch.manual_seed(0)
        self.head = torch.nn.Linear(dim, CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class FeatureStream:
    """``n`` post-ReLU-like feature vectors in batches of 256, each batch made from its index: re-iterable."""

    def __init__(self, n: int, dim: int, batch: int = 256):
        self.n, self.dim, self.batch = n, dim, batch
        g = torch.Generator().manual_seed(1)
        self.centres = torch.rand(CLASSES, dim, generator=g) * 2

    def __iter__(self):
        for i, start in enumerate(range(0, self.n, self.batch)):
            g = torch.Generator().manual_seed(1000 + i)
            m = min(self.batch, self.n - start)
            y = torch.randint(0, CLASSES, (m,), generator=g)
            yield (self.centres[y] + torch.randn(m, self.dim, generator=g)).relu(), y


def status_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Reset this process's peak resident set (VmHWM) to its current one (Linux ≥ 4.0: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def one_fit(method: str, n: int, dim: int, max_bank: int) -> dict:
    """Fit one detector on the stream in this (fresh) process; time, peak extra memory, KNN query time."""
    from lab4_ood import detectors as det

    model = FeatureModel(dim).eval()
    stream = FeatureStream(n, dim)
    options = {"max_bank": max_bank}
    detector = det.make_detector(method, model, options, torch.device("cpu"))
    warm = det.make_detector(method, model, options, torch.device("cpu"))
    warm.fit(FeatureStream(300, dim))  # imports and first-call costs outside the timing
    del warm
    start = time.perf_counter()
    for _ in stream:  # making the stream alone, for comparison (it is part of every fit's time)
        pass
    stream_seconds = time.perf_counter() - start
    before = status_mib("VmRSS")
    reset_peak()
    start = time.perf_counter()
    with torch.no_grad():
        detector.fit(stream)
    seconds = time.perf_counter() - start
    out = {
        "method": method,
        "seconds": seconds,
        "peak_extra_mib": status_mib("VmHWM") - before,
        "stream_seconds": stream_seconds,
    }
    if method == "knn":
        queries = next(iter(FeatureStream(1000, dim, batch=1000)))[0]
        start = time.perf_counter()
        with torch.no_grad():
            for q in queries.split(256):
                detector.scores(q)
        out["query_seconds_1000"] = time.perf_counter() - start
        out["bank"] = len(detector.bank)
    return out


def throughput(args) -> list[tuple[str, float]]:
    from dla_core.data import ImageSet
    from dla_core.models import ModelConfig, build_model
    from lab4_ood import detectors as det
    from lab4_ood import methods

    torch.manual_seed(0)
    cfg = ModelConfig("cnn", (3, 32, 32), 10, depth=2, width=32, stages=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    model = build_model(cfg).eval()

    def images(n: int, seed: int) -> ImageSet:
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
        return ImageSet(x, y, [str(i) for i in range(10)], "bench")

    train, test, cpu = images(2000, 1), images(args.n, 2), torch.device("cpu")
    options = {"vim_dim": 64}  # the CNN's features have 128 dimensions
    rows = []
    for name in methods.detectors():
        if name == "recon":
            continue
        d = det.make_detector(name, model, options, cpu)
        if methods.detectors()[name].fits:
            d.fit(
                [
                    (x.float() / 255, y)
                    for x, y in zip(train.images.split(256), train.labels.split(256), strict=True)
                ]
            )
        det.score_set(d, images(64, 3), args.batch_size, cpu)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            det.score_set(d, test, args.batch_size, cpu)
            times.append(time.perf_counter() - start)
        rows.append((name, args.n / statistics.median(times)))
        print(f"RESULT lab4-detector {name}: {rows[-1][1]:.0f} images/s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--fit-n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one fit in this process
    parser.add_argument("--max-bank", type=int, default=100_000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(one_fit(args.one, args.fit_n, args.dim, args.max_bank)))
        return

    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores visible), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    if not args.skip_throughput:
        rows = throughput(args)
        print(f"\n| detector | images/s (CNN, 3×32×32, batch {args.batch_size}, n = {args.n}) |\n|---|---|")
        for name, rate in rows:
            print(f"| `{name}` | {rate:,.0f} |")

    fits = []
    for method, cap in (("knn", 100_000), ("knn", 10_000), ("vim", 100_000), ("mahalanobis", 100_000),
                        ("rmds", 100_000)):  # fmt: skip
        cmd = [sys.executable, __file__, "--one", method, "--fit-n", str(args.fit_n), "--dim", str(args.dim),
               "--max-bank", str(cap)]  # fmt: skip
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        runs = [json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
                for _ in range(args.repeats)]  # fmt: skip
        row = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "method"}
        fits.append((method, cap, row))
        extra = f" query 1000: {row['query_seconds_1000']:.3f} s" if method == "knn" else ""
        print(f"RESULT lab4-fit {method} cap={cap}: {row['seconds']:.2f} s, peak +{row['peak_extra_mib']:.0f} MiB"
              f"{extra}", flush=True)  # fmt: skip
    print(f"\n| fit on {args.fit_n:,} × {args.dim} features | time (s) | peak extra memory (MiB) | note |")
    print("|---|---|---|---|")
    for method, cap, row in fits:
        note = f"making the stream alone: {row['stream_seconds']:.2f} s"
        if method == "knn":
            note += f"; bank {int(row['bank']):,}; 1,000 queries scored in {row['query_seconds_1000']:.2f} s"
        print(f"| `{method}`{f' `--max-bank {cap:,}`' if method == 'knn' else ''} | {row['seconds']:.2f} | "
              f"{row['peak_extra_mib']:.0f} | {note} |")  # fmt: skip


if __name__ == "__main__":
    main()
