"""The paired bootstrap of ``dla_core.stats``: speed against a per-replicate loop, and coverage of its 95% CI.

    python bench/bench_stats.py [--repeats 3]     # time: bootstrap_difference vs the per-replicate loop
    python bench/bench_stats.py --coverage        # how often the 95% CI covers the truth, by seeds and spread

Speed: two arms of 3 seeds, 0/1 outcomes on N test examples (N = 360: lab1's quick test set; 10,000: CIFAR's),
10,000 replicates. The reference draws the same indices one replicate at a time and averages the gathered
(seeds × examples) block; ``bootstrap_difference`` draws a chunk of replicates at once, counts the drawn
examples and takes one matrix product per chunk. Both give the same interval (tests/core/test_stats.py).

Coverage: outcomes y = arm effect + seed effect (sd "seed") + example difficulty shared by both arms + an
arm × example effect (sd 0.5) + noise (sd 1), N = 200; the truth A - B = 0.3; 400 simulated data sets per row.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
from machine import cpu_model

from dla_core.stats import bootstrap_difference


def per_replicate_loop(a: np.ndarray, b: np.ndarray, seed: int, resamples: int) -> tuple[float, float]:
    seeds_a, seeds_b, examples, _ = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    n, differences = a.shape[1], np.empty(resamples)
    for r in range(resamples):
        e = examples.integers(0, n, size=n, dtype=np.int32)
        ra = a[np.ix_(seeds_a.integers(0, len(a), size=len(a)), e)]
        rb = b[np.ix_(seeds_b.integers(0, len(b), size=len(b)), e)]
        differences[r] = ra.mean() - rb.mean()
    low, high = np.quantile(differences, [0.025, 0.975])
    return float(low), float(high)


def speed(repeats: int) -> None:
    rng = np.random.default_rng(0)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for n in (360, 10_000):
        a, b = (rng.random((3, n)) < 0.8).astype(float), (rng.random((3, n)) < 0.78).astype(float)
        ref, ours = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            expected = per_replicate_loop(a, b, 0, 10_000)
            ref.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            got = bootstrap_difference(a, b, seed=0, resamples=10_000)
            ours.append(time.perf_counter() - t0)
            assert np.allclose((got.low, got.high), expected, rtol=0, atol=1e-12)
        r, o = statistics.median(ref), statistics.median(ours)
        print(f"N={n}: load {os.getloadavg()[0]:.1f}; runs ref {ref} ours {ours}")
        print(f"RESULT stats N={n}: ref={r:.2f}s ours={o:.2f}s ratio={r / o:.1f}x")


def coverage() -> None:
    rng, datasets, n = np.random.default_rng(1), 400, 200
    print("| seeds per arm | seed sd | coverage of the 95% CI | mean width |\n| --- | --- | --- | --- |")
    for seeds, seed_sd in [(1, 0.0), (1, 0.3), (3, 0.0), (3, 0.1), (3, 0.3), (5, 0.1), (5, 0.3), (10, 0.3)]:
        covered, widths = 0, []
        for k in range(datasets):
            difficulty = rng.normal(0, 1, n)
            a = 0.3 + rng.normal(0, seed_sd, (seeds, 1)) + difficulty + rng.normal(0, 1, (seeds, n))
            b = rng.normal(0, seed_sd, (seeds, 1)) + difficulty + rng.normal(0, 0.5, n)
            b = b + rng.normal(0, 1, (seeds, n))
            c = bootstrap_difference(a, b, seed=k, resamples=1000)
            covered += c.low < 0.3 < c.high
            widths.append(c.high - c.low)
        print(f"| {seeds} | {seed_sd} | {covered / datasets:.3f} | {np.mean(widths):.3f} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--coverage", action="store_true")
    args = parser.parse_args()
    coverage() if args.coverage else speed(args.repeats)
