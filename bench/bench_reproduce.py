"""`labN reproduce --profile quick` wall time, against the same steps run as separate commands (a shell script).

    python bench/bench_reproduce.py [--lab lab1 --lab lab4] [--profile quick] [--target 300]

ours: one ``labN reproduce --profile quick --out TMP/ours`` process (every step in that process, then the report).
reference: each step's command line, read from the reproduce folder's manifest, run as its own process into
TMP/ref/<step> in the same order — what a student's shell script does (one interpreter start and torch import
per step, no report). The ratio is reference / ours; the issue's target is ours under ``--target`` seconds on the
2-core CPU. Prints ``RESULT reproduce-<lab>: ref=…s ours=…s ratio=…x target=…s``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench(lab: str, profile: str, target: float, tmp: Path) -> None:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    env.pop("DLA_REPRODUCE_TINY", None)
    exe = shutil.which(lab) or sys.exit(f"{lab} is not installed here")
    ours_dir = tmp / f"{lab}-ours"
    ours = timed([exe, "reproduce", "--profile", profile, "--out", str(ours_dir)], env)
    steps = json.loads((ours_dir / "metrics.json").read_text())["steps"]
    ref_dir = tmp / f"{lab}-ref"
    ref = 0.0
    for name, step in steps.items():
        argv = shlex.split(step["command"].replace(str(ours_dir), str(ref_dir)))
        seconds = timed([exe, *argv[1:]], env)
        ref += seconds
        print(
            f"  {lab} {name}: reproduce {step['seconds']:.1f} s in-process, {seconds:.1f} s as its own command"
        )
    ok = "✓" if ours < target else "✗"
    print(
        f"RESULT reproduce-{lab}: ref={ref:.1f}s ours={ours:.1f}s ratio={ref / ours:.2f}x target={target:.0f}s {ok}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lab", action="append", default=None)
    p.add_argument("--profile", default="quick")
    p.add_argument("--target", type=float, default=300.0)
    args = p.parse_args()
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for lab in args.lab or ["lab1", "lab4"]:
            bench(lab, args.profile, args.target, Path(tmp))


if __name__ == "__main__":
    main()
