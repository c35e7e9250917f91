"""Result tables as Markdown (printed and saved) and CSV, from a list of row dicts."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dla_core.report import fmt, plus_minus
from dla_core.runs import atomic_write


def cell(value: Any) -> str:
    """A table cell in the reports' one number format (``dla_core.report.fmt``)."""
    return fmt(value)


def mean_std(values: Sequence[float]) -> str:
    """'0.961 ± 0.0041' over seeds (sample std; just the mean for one seed or seeds that agree)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return fmt(None)
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return plus_minus(m, sd)


def seed_folder(name: str, seed: int, seeds: tuple[int, ...]) -> str:
    """A row's run folder for one of its seeds: ``name`` alone for a single seed, ``name-s<seed>`` for several
    (as a study's cells)."""
    return name if len(seeds) == 1 else f"{name}-s{seed}"


def over_seeds(metrics: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """A row from its seeds' metrics: each of ``keys`` as the seeds' mean, its sample std as ``<key>_std`` when
    there are several seeds, and ``seeds``."""
    row: dict[str, Any] = {"seeds": len(metrics)}
    for key in keys:
        vals = [m[key] for m in metrics if m.get(key) is not None]
        if not vals:
            row[key] = None
            continue
        row[key] = sum(vals) / len(vals)
        if len(vals) > 1:
            row[f"{key}_std"] = math.sqrt(sum((v - row[key]) ** 2 for v in vals) / (len(vals) - 1))
    return row


def with_spread(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows for display: a value with a ``<key>_std`` beside it becomes ``mean ± std``."""
    return [
        {k: plus_minus(v, row[f"{k}_std"]) if f"{k}_std" in row else v for k, v in row.items()}
        for row in rows
    ]


def markdown(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str]) -> str:
    """``columns`` maps row keys to headers; numbers are right-aligned."""
    keys = list(columns)
    lines = ["| " + " | ".join(columns[k] for k in keys) + " |"]
    lines.append("|" + "|".join("---:" if _numeric(rows, k) else "---" for k in keys) + "|")
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(k)) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def _numeric(rows: Sequence[Mapping[str, Any]], key: str) -> bool:
    values = [r.get(key) for r in rows if r.get(key) is not None]
    return bool(values) and all(
        isinstance(v, (int, float)) or (isinstance(v, str) and v[:1].isdigit()) for v in values
    )


def write_tables(
    rows: Sequence[Mapping[str, Any]],
    columns: Mapping[str, str],
    folder: Path,
    csv_rows: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """table.md (``rows`` formatted) and table.csv (``csv_rows``, default ``rows``: every key) in ``folder``."""
    text = markdown(rows, columns)
    atomic_write(Path(folder) / "table.md", lambda p: p.write_text(text))
    rows = rows if csv_rows is None else csv_rows
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(Path(folder) / "table.csv", lambda p: p.write_text(buf.getvalue()))
    return text
