"""What the benchmarks record about the machine they ran on (imported by the bench_*.py scripts, which run as
``python bench/bench_x.py`` and so find this module beside them)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
