"""The list of labs, read from its one place: ``[tool.dla] labs`` in the root pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# lab name -> folder
LABS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dla"]["labs"]
