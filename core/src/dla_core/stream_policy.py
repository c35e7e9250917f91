"""The declared streaming policy of image datasets (``dla_core.data.streamed``), read from the environment
without torch, so that ``Runtime.check`` refuses a bad value at every command's edge:

    DLA_DATA_MEMORY=SIZE         the budget for one decoded dataset split, e.g. 512M, 8G (default 4G)
    DLA_DATA_STREAM=auto|always|never   auto: stream what exceeds the budget; always/never force it
"""

from __future__ import annotations

import os
import re

from dla_core.errors import DlaError

DEFAULT_BUDGET = 4 << 30
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'512M', '8G', '1.5g', '1000000' (bytes) → bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise DlaError(f"DLA_DATA_MEMORY={text!r} is not a size (e.g. 512M, 8G, or bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def policy() -> tuple[str, int]:
    """(mode, budget in bytes) from DLA_DATA_STREAM and DLA_DATA_MEMORY."""
    mode = os.environ.get("DLA_DATA_STREAM", "auto").strip().lower() or "auto"
    if mode not in ("auto", "always", "never"):
        raise DlaError(f"DLA_DATA_STREAM={mode!r}: expected auto, always or never")
    memory = os.environ.get("DLA_DATA_MEMORY", "").strip()
    return mode, parse_size(memory) if memory else DEFAULT_BUDGET
