"""lab4's fits at ImageNet feature sizes: dla's streamed fit against pytorch-ood's fit of the whole feature tensor.

    python bench/bench_lab4_fits.py [--n 100000,400000,1200000] [--dim 2048]
                                    [--methods knn,mahalanobis,rmds,vim,nci,react,dice,fdbd]
                                    [--peer-n 50000,100000,400000,1200000] [--peer-limit-gib 8] [--record FILE]

Runs in the ``tests-lab4-peers`` environment (lab4 and pytorch-ood 0.4.0). Synthetic post-ReLU features of
``--dim`` dimensions, 10 classes, made batch by batch from each batch's index (bench_lab4_detectors.FeatureStream,
batches of 1,024), through an identity ``features`` and a linear head, so no network is timed. Each fit runs in
its own process: wall time of the fit and its peak extra resident memory (VmHWM reset just before, less the
resident set then). dla fits the stream as it comes (``Detector.fit``: float64 sums and outer products, KNN's
and ReAct's banks seeded reservoirs of at most --max-bank = 100,000 rows), so the features never sit in memory on
its side; pytorch-ood needs the whole (N, D) tensor, so its process first gathers the stream into one tensor
(timed apart as ``gather``, and inside its peak memory), then calls ``fit_features(z, y)`` (knn, mahalanobis,
rmds, vim, nci; the others are dla only). pytorch-ood runs at the ``--peer-n`` sizes, smallest first, while its
peak there, estimated from its measured peaks at the smaller sizes (a line through them; through the origin from
one), stays under ``--peer-limit-gib``; above, the row says what it would need. Each fit is appended to
``--record`` (JSON lines; earlier records of the same fit are reused, so the bench can run a method at a time)
and the table is made from the record. Ratios dla / pytorch-ood at the largest size both ran: time of dla's fit
(making the stream included) over pytorch-ood's gathering + fit, and peak extra memory.
"""

from __future__ import annotations

import argparse
import importlib.util
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
# pytorch-ood's measured peak at 400k rows (NCI: 9.2 GiB) came out 1.4× its 50k/100k peaks scaled (6.4 GiB):
# an estimate times this must stay under --peer-limit-gib, and under the memory available now
MARGIN = 1.5
HEADROOM_MIB = 2048  # left to the machine's other jobs


def available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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


PEERS = ("knn", "mahalanobis", "rmds", "vim", "nci")  # methods with a pytorch-ood fit_features here


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
            gathering = 2 * n * dim * 4 / 2**20  # the parts and their concatenation: a floor of its peak
            if gathering + HEADROOM_MIB > available_mib():
                sys.exit(f"pytorch-ood {method} n={n}: gathering alone needs {gathering:.0f} MiB, "
                         f"{available_mib():.0f} MiB available")  # fmt: skip
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


def estimate_mib(points: list[tuple[int, float]], n: int) -> float | None:
    """pytorch-ood's peak at ``n`` rows from its measured (rows, peak MiB): the largest peak per row of them times
    ``n`` (its peak is 2-3 copies of the tensor: at 400k × 2,048 a line through its 50k and 100k peaks fell
    1.5-2.5× short); None from none."""
    return max(peak / rows for rows, peak in points) * n if points else None


def load(record: Path | None) -> dict[tuple[str, str, int], dict]:
    out = {}
    if record and record.exists():
        for line in record.read_text().splitlines():
            r = json.loads(line)
            out[(r["side"], r["method"], r["n"])] = r
    return out


def fit_once(side: str, method: str, n: int, dim: int, got: dict, record: Path | None) -> dict:
    if (side, method, n) in got:
        return got[(side, method, n)]
    cmd = [sys.executable, __file__, "--one", side, method, str(n), "--dim", str(dim)]
    run = subprocess.run(cmd, check=True, capture_output=True, text=True)
    r = json.loads(run.stdout.splitlines()[-1])
    got[(side, method, n)] = r
    if record:
        with record.open("a") as out:
            out.write(json.dumps(r) + "\n")
    print(f"RESULT lab4-fit {side} {method} n={n}: {r['seconds']:.1f} s"
          + (f" (+{r['gather_seconds']:.1f} s gathering)" if "gather_seconds" in r else "")
          + f", +{r['peak_extra_mib']:.0f} MiB", flush=True)  # fmt: skip
    return r


def table(methods: list[str], sizes: list[int], peer_sizes: list[int], got: dict, limit_mib: float) -> None:
    print("\n| fit | N | dla s | dla peak MiB | pytorch-ood s (gathering) | pytorch-ood peak MiB |\n"
          "|---|---|---|---|---|---|")  # fmt: skip
    ratios = []
    for method in methods:
        points = sorted((n, r["peak_extra_mib"]) for (side, m, n), r in got.items()
                        if side == "pytorch-ood" and m == method)  # fmt: skip
        for n in sorted(set(sizes) | {p for p, _ in points}):
            dla, peer = got.get(("dla", method, n)), got.get(("pytorch-ood", method, n))
            if not dla and not peer:
                continue
            d = f"{dla['seconds']:.1f} | {dla['peak_extra_mib']:,.0f}" if dla else "— | —"
            if peer:
                p = f"{peer['seconds']:.1f} ({peer['gather_seconds']:.1f}) | {peer['peak_extra_mib']:,.0f}"
            elif method not in PEERS:
                p = "— | — (not compared in this bench)"
            else:
                below = [(r, m) for r, m in points if r < n]
                est = estimate_mib(below, n)
                sizes_seen = "/".join(f"{r // 1000}k" for r, _ in below)
                p = ("— | reference not run: would need ≈ "
                     f"{est / 1024:.1f} GiB (estimated from its {sizes_seen} peaks)" if est else "— | not run")  # fmt: skip
            print(f"| `{method}` | {n:,} | {d} | {p} |")
        both = [n for n, _ in points if ("dla", method, n) in got]
        if both:
            n = max(both)
            dla, peer = got[("dla", method, n)], got[("pytorch-ood", method, n)]
            ratios.append(f"| `{method}` | {n:,} | ×{dla['seconds'] / (peer['gather_seconds'] + peer['seconds']):.2f} "
                          f"| ×{dla['peak_extra_mib'] / peer['peak_extra_mib']:.3f} |")  # fmt: skip
    print("\n| fit | largest N both ran | time dla / pytorch-ood | peak memory dla / pytorch-ood |\n"
          "|---|---|---|---|\n" + "\n".join(ratios))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", default="100000,400000,1200000", help="dla's feature counts, comma-separated")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--methods", default="knn,mahalanobis,rmds,vim,nci,react,dice,fdbd")
    parser.add_argument(
        "--peer-n", default="50000,100000,400000,1200000", help="pytorch-ood's, smallest first"
    )
    parser.add_argument("--peer-limit-gib", type=float, default=8.0, help="run pytorch-ood below this peak")
    parser.add_argument("--record", type=Path, default=None, help="JSON lines of every fit (reused)")
    parser.add_argument("--table", action="store_true", help="only print the table from --record")
    parser.add_argument("--one", nargs=3, default=None, help=argparse.SUPPRESS)  # internal: SIDE METHOD N
    args = parser.parse_args()
    if args.one:
        side, method, n = args.one
        print(json.dumps(one_fit(side, method, int(n), args.dim)))
        return
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores visible), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    methods = args.methods.split(",")
    sizes = sorted(int(v) for v in args.n.split(","))
    peer_sizes = sorted(int(v) for v in args.peer_n.split(","))
    limit_mib = args.peer_limit_gib * 1024
    got = load(args.record)
    peers = PEERS if importlib.util.find_spec("pytorch_ood") else ()
    if not peers:
        print("pytorch-ood is not installed here (the tests-lab4-peers environment has it): dla's fits only")
    for method in methods if not args.table else []:
        points = []
        for n in sorted(set(sizes) | set(peer_sizes)):
            if n in sizes:
                fit_once("dla", method, n, args.dim, got, args.record)
            if n in peer_sizes and method in peers:
                est = estimate_mib(points, n)
                fresh = ("pytorch-ood", method, n) not in got  # a recorded fit is reused, not run again
                if (
                    fresh
                    and est is not None
                    and est * MARGIN > min(limit_mib, available_mib() - HEADROOM_MIB)
                ):
                    print(f"pytorch-ood {method} n={n} not run: ≈ {est / 1024:.1f} GiB estimated "
                          f"({available_mib() / 1024:.1f} GiB available)", flush=True)  # fmt: skip
                    continue
                points.append(
                    (n, fit_once("pytorch-ood", method, n, args.dim, got, args.record)["peak_extra_mib"])
                )
    table(methods, sizes, peer_sizes, got, limit_mib)


if __name__ == "__main__":
    main()
