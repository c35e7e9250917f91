"""Run a lab's console script in a fresh interpreter and report which heavy packages it imported.

``labN --help``, ``labN CMD --help`` and option errors must answer without torch & co. (a help page that imports
torch costs ~2 s of CPU): the CLI modules keep their imports light and the commands import the rest. Each lab's
``test_startup.py`` runs its script through ``run_script`` and expects ``heavy == []``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# the packages a help page must not load (top-level names in sys.modules)
HEAVY = frozenset(
    {
        "torch",
        "torchvision",
        "transformers",
        "accelerate",
        "peft",
        "datasets",
        "sklearn",
        "scipy",
        "matplotlib",
        "numpy",
        "pandas",
        "PIL",
        "safetensors",
        "tqdm",
        "gradio",  # lab3 serve: the web extra, loaded only when the app starts
        "gradio_client",
    }
)

# Calls the console script's entry point as the installed `labN` script does, then writes what got imported.
_PROBE = """
import json, sys
from importlib.metadata import entry_points

report, name, *args = sys.argv[1:]
(script,) = entry_points(group="console_scripts", name=name)
sys.argv = [name, *args]
code = 0
try:
    script.load()()
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    raise
except BaseException:
    code = 1  # a traceback: the test shows it
    raise
finally:
    with open(report, "w") as f:
        json.dump({"code": code, "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(%r))}, f)
"""


@dataclass(frozen=True)
class ScriptRun:
    code: int  # exit status
    stdout: str
    stderr: str
    heavy: list[str]  # heavy packages imported by the time the script returned


def run_script(name: str, *args: str | Path, cwd: Path) -> ScriptRun:
    """Run console script ``name`` with ``args`` in a fresh interpreter (in ``cwd``); see ScriptRun."""
    report = cwd / "startup-report.json"
    probe = _PROBE % sorted(HEAVY)
    env = {**os.environ, "COLUMNS": "100"}
    r = subprocess.run(
        [sys.executable, "-c", probe, str(report), name, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert report.exists(), f"{name} {args}: the probe wrote no report\n{r.stderr}"
    result = json.loads(report.read_text())
    report.unlink()
    assert r.returncode == result["code"], (r.returncode, result, r.stderr)
    return ScriptRun(result["code"], r.stdout, r.stderr, result["heavy"])


def check_help(lab: str, command: str | None, cwd: Path) -> None:
    """``lab [command] --help`` prints its usage, exits 0 and imports nothing heavy."""
    r = run_script(lab, *([command] if command else []), "--help", cwd=cwd)
    assert r.code == 0 and r.stdout.startswith(f"Usage: {lab}{f' {command}' if command else ''} [OPTIONS]")
    assert r.heavy == []


def check_option_error(lab: str, args: list[str], code: int, message: str, cwd: Path) -> None:
    """A bad option: exit ``code``, ``message`` on stderr, no traceback, nothing heavy, no run folder ``x``."""
    r = run_script(lab, *args, cwd=cwd)
    assert r.code == code and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.heavy == []
    assert not (cwd / "x").exists()
