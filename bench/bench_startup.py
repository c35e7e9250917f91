"""Start-up: CPU and wall time of `labN --help` against `python -c "import torch"`, what every help page cost
before the CLIs were made light (their modules imported dla_core.engine, hence torch and Accelerate).

    python bench/bench_startup.py [--runs 5] [--labs lab1,lab2,lab3,lab4]

Each command runs once to warm up (bytecode written, files in the page cache), then ``--runs`` times; the
median of each is reported. CPU = user + sys of the child, from ``resource.getrusage(RUSAGE_CHILDREN)`` before
and after it; memory = the child's peak resident set (``os.wait4``). Children run with PYTHONDONTWRITEBYTECODE
removed from their environment, as an installed console script runs. Target: every help page under 0.3 s of CPU.
Needs the labs' console scripts next to this interpreter (``nox -s bench`` installs every lab).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_model

TARGET_CPU_S = 0.3


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(CPU seconds, wall seconds, peak RSS in MiB) of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode() if p.stderr else ""
    if p.stderr:
        p.stderr.close()
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}):\n{err}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, usage.ru_maxrss / 1024  # Linux: KiB


def measure(argv: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    run_once(argv, env)  # warm-up
    samples = [run_once(argv, env) for _ in range(runs)]
    cpu, wall, rss = zip(*samples, strict=True)
    return {"cpu": statistics.median(cpu), "wall": statistics.median(wall), "rss": statistics.median(rss)}


def script(name: str) -> str | None:
    """The console script ``name`` installed next to this interpreter, else on PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="measured runs per command (after one warm-up)")
    ap.add_argument("--labs", default="lab1,lab2,lab3,lab4", help="console scripts to time")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    rows: list[tuple[str, dict[str, float]]] = []
    for name in args.labs.split(","):
        path = script(name)
        if path is None:
            print(f"{name}: not installed next to {sys.executable}, skipped", file=sys.stderr)
            continue
        rows.append((f"{name} --help", measure([path, "--help"], env, args.runs)))
    floor = measure([sys.executable, "-c", "pass"], env, args.runs)
    ref = measure([sys.executable, "-c", "import torch"], env, args.runs)

    import torch  # only for its version, after the measurements

    load = os.getloadavg()[0]
    date = datetime.date.today().isoformat()
    print(
        f"{date}; {os.cpu_count()} CPUs ({cpu_model()}); load {load:.1f} at the end; Python "
        f"{platform.python_version()}, torch {torch.__version__}; median of {args.runs} after a warm-up"
    )
    print("| command | CPU s | wall s | peak RSS MiB | CPU vs `import torch` |")
    print("| --- | --- | --- | --- | --- |")
    print(
        f'| `python -c "import torch"` (reference) | {ref["cpu"]:.3f} | {ref["wall"]:.3f} | {ref["rss"]:.0f} | 1× |'
    )
    for label, m in rows:
        ok = "" if m["cpu"] < TARGET_CPU_S else f" (over the {TARGET_CPU_S} s target)"
        ratio = ref["cpu"] / m["cpu"] if m["cpu"] > 0 else float("inf")
        print(f"| `{label}` | {m['cpu']:.3f} | {m['wall']:.3f} | {m['rss']:.0f} | {ratio:.1f}× less{ok} |")
    print(
        f"| `python -c pass` (interpreter floor) | {floor['cpu']:.3f} | {floor['wall']:.3f} | {floor['rss']:.0f} | |"
    )


if __name__ == "__main__":
    main()
