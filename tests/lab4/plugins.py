"""Plug-in packages for lab4 as an installer leaves them: the package's files and a ``*.dist-info`` folder whose
``entry_points.txt`` names the spec entries (``dla.lab4.detectors``, ``dla.lab4.attacks``), written under a
folder that goes on ``sys.path`` (in this process: ``installed``; in a subprocess: PYTHONPATH)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from textwrap import dedent

# the modules whose import-time tables (click options, DetectConfig, AttackConfig) follow methods.py's registry
DERIVED = ("lab4_ood.detection", "lab4_ood.robustness", "lab4_ood.benchmark", "lab4_ood.cli")


def write_plugin(
    root: Path, package: str, files: dict[str, str], entry_points: dict[str, dict[str, str]]
) -> Path:
    """``root``/``package``/<files> and ``root``/``package``-0.1.dist-info (METADATA, entry_points.txt)."""
    folder = root / package
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    for name, text in files.items():
        (folder / name).write_text(dedent(text))
    info = root / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    groups = [f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items())
              for group, points in entry_points.items()]  # fmt: skip
    (info / "entry_points.txt").write_text("\n".join(groups))
    return root


def reload_lab4():
    """Read the entry points again and rebuild what lab4 derives from them; lab4's click group."""
    from lab4_ood import methods

    importlib.invalidate_caches()
    methods.reload()
    for name in DERIVED:
        importlib.reload(importlib.import_module(name))
    return sys.modules["lab4_ood.cli"].group


@contextmanager
def installed(root: Path, *packages: str) -> Iterator:
    """lab4's CLI with the plug-ins under ``root`` on sys.path; all gone after."""
    sys.path.insert(0, str(root))
    try:
        yield reload_lab4()
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m.split(".")[0] in packages]:
            del sys.modules[name]
        reload_lab4()
