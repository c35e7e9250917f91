"""lab4's fits at ImageNet feature sizes: dla's streamed fit against pytorch-ood's fit of the whole feature tensor.

    python bench/bench_lab4_fits.py [--n 100000,1200000] [--dim 2048] [--methods knn,mahalanobis,rmds,vim,nci]
                                    [--peer-max 100000]

Runs in the ``tests-lab4-peers`` environment (lab4 and pytorch-ood 0.4.0). Synthetic post-ReLU features of
``--dim`` dimensions, 10 classes, made batch by batch from each batch's index (bench_lab4_detectors.FeatureStream,
batches of 1,024), through an identity ``features`` and a linear head, so no network is timed. Each fit runs in
its own process: wall time of the fit and its peak extra resident memory (VmHWM reset just before, less the
resident set then). dla fits the stream as it comes (``Detector.fit``: float64 sums and outer products, KNN's
bank a seeded reservoir of at most --max-bank = 100,000 rows); pytorch-ood needs the whole (N, D) tensor, so its
process first gathers the stream into one tensor (timed apart as ``gather``, and inside its peak memory), then
calls ``fit_features(z, y)``. pytorch-ood's fits run up to ``--peer-max`` rows (its tensor alone is N·D·4
bytes: 9.8 GB at 1.2M × 2,048). Prints a Markdown table and ``RESULT`` lines with the ratios dla / pytorch-ood:
time of dla's fit (making the stream included) over pytorch-ood's gathering + fit (the same stream made once),
and peak extra memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lab4_detectors import FeatureModel, FeatureStream, reset_peak, status_mib
from machine import cpu_model

BATCH = 1024


def peer_detector(method: str, model: FeatureModel, dim: int):
    from pytorch_ood import detector as pod

    w, b = model.head.weight.detach(), model.head.bias.detach()
    return {
        "knn": lambda: pod.KNN(None, k=50),
        "mahalanobis": lambda: pod.Mahalanobis(None),
        "rmds": lambda: pod.RMD(None),
        "vim": lambda: pod.ViM(None, d=min(256, dim // 2), w=w, b=b),
        "nci": lambda: pod.NCI(None, head=model.head, alpha=1e-4),
    }[method]()


def one_fit(side: str, method: str, n: int, dim: int) -> dict:
    """One fit in this (fresh) process: seconds and peak extra MiB (and, for pytorch-ood, the gathering's time)."""
    from lab4_ood import detectors as det

    model = FeatureModel(dim).eval()
    stream = FeatureStream(n, dim, batch=BATCH)
    cpu = torch.device("cpu")
    options = {"vim_dim": min(256, dim // 2)}
    with torch.no_grad():  # imports and first-call costs outside the timing
        if side == "dla":
            det.make_detector(method, model, options, cpu).fit(FeatureStream(2 * BATCH, dim, batch=BATCH))
        else:
            z, y = next(iter(FeatureStream(300, dim, batch=300)))
            peer_detector(method, model, dim).fit_features(z, y)
    before = status_mib("VmRSS")
    reset_peak()
    out = {"side": side, "method": method, "n": n}
    with torch.no_grad():
        start = time.perf_counter()
        if side == "dla":
            det.make_detector(method, model, options, cpu).fit(stream)
        else:
            parts = list(stream)
            z, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            del parts
            out["gather_seconds"] = time.perf_counter() - start
            start = time.perf_counter()
            peer_detector(method, model, dim).fit_features(z, y)
        out["seconds"] = time.perf_counter() - start
    out["peak_extra_mib"] = status_mib("VmHWM") - before
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", default="100000,1200000", help="feature counts, comma-separated")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--methods", default="knn,mahalanobis,rmds,vim,nci")
    parser.add_argument(
        "--peer-max", type=int, default=100_000, help="pytorch-ood's fits up to this many rows"
    )
    parser.add_argument("--one", nargs=3, default=None, help=argparse.SUPPRESS)  # internal: SIDE METHOD N
    args = parser.parse_args()
    if args.one:
        side, method, n = args.one
        print(json.dumps(one_fit(side, method, int(n), args.dim)))
        return
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores visible), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    rows = []
    for n in (int(v) for v in args.n.split(",")):
        for method in args.methods.split(","):
            got = {}
            for side in ("dla", "pytorch-ood"):
                if side == "pytorch-ood" and n > args.peer_max:
                    continue
                cmd = [sys.executable, __file__, "--one", side, method, str(n), "--dim", str(args.dim)]
                run = subprocess.run(cmd, check=True, capture_output=True, text=True)
                got[side] = json.loads(run.stdout.splitlines()[-1])
            dla, peer = got["dla"], got.get("pytorch-ood")
            ratio = (
                f"time ×{dla['seconds'] / (peer['gather_seconds'] + peer['seconds']):.2f}, "
                f"memory ×{dla['peak_extra_mib'] / peer['peak_extra_mib']:.2f}"
                if peer
                else "pytorch-ood not run"
            )
            print(f"RESULT lab4-fit {method} n={n}: dla {dla['seconds']:.1f} s +{dla['peak_extra_mib']:.0f} MiB; "
                  + (f"pytorch-ood {peer['seconds']:.1f} s (+{peer['gather_seconds']:.1f} s gathering) "
                     f"+{peer['peak_extra_mib']:.0f} MiB; " if peer else "") + f"dla / pytorch-ood: {ratio}",
                  flush=True)  # fmt: skip
            rows.append((method, n, dla, peer, ratio))
    print(f"\n| fit on N × {args.dim} | dla s | dla peak MiB | pytorch-ood s (gathering) | pytorch-ood peak MiB "
          "| dla / pytorch-ood |\n|---|---|---|---|---|---|")  # fmt: skip
    for method, n, dla, peer, ratio in rows:
        p = (f"{peer['seconds']:.1f} ({peer['gather_seconds']:.1f}) | {peer['peak_extra_mib']:,.0f}" if peer
             else "— | —")  # fmt: skip
        print(f"| `{method}` {n:,} | {dla['seconds']:.1f} | {dla['peak_extra_mib']:,.0f} | {p} | {ratio} |")


if __name__ == "__main__":
    main()
