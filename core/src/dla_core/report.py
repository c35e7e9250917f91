"""Lab reports: sections of tables, plots and checked findings, written as ``report.md`` and ``report.html``.

    sections = [Section("Depth study", commands=[…], tables=[Table(["depth", "plain", "residual"], rows)],
                        images=[out / "mlp-study" / "study.png"],
                        findings=[Finding("degradation: …", ok=plain < 0.2 < residual, evidence="0.10 vs 0.98")])]
    write_report(out, "lab1 — ResNet at small scale", sections, environment=environment(), wall={"mlp-study": 41.0})

``report.md`` links images relative to the report folder (GitHub renders it); ``report.html`` is one file with
the images embedded (readable offline, printable). A finding's mark comes from ``ok``: ✓ holds, ✗ does not,
– could not be checked (a run is missing). ``compare_runs`` is the comparison view of several run folders.
Nothing here imports torch.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dla_core.runs import RunDir, _flatten, _without_runtime, atomic_write

if TYPE_CHECKING:
    from dla_core.stats import Verdict

MARKS = {True: "✓", False: "✗", None: "–"}

#### What a report is made of ####


@dataclass(frozen=True)
class Table:
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]  # str / int / float / None cells
    caption: str = ""


@dataclass(frozen=True)
class Finding:
    claim: str  # what the lab is meant to show
    ok: bool | None  # computed from the metrics; None = could not be checked (or inconclusive: ``verdict``)
    evidence: str  # the numbers behind the mark
    verdict: Verdict | None = None  # judged by an interval (dla_core.evidence): ✓ / ✗ / ～

    @property
    def mark(self) -> str:
        return self.verdict.mark if self.verdict is not None else MARKS[self.ok]

    @property
    def word(self) -> str:
        if self.verdict is not None:
            return self.verdict.word
        return {True: "holds", False: "does not hold", None: "not checked"}[self.ok]


def conclusion(findings: Sequence[Finding]) -> list[str]:
    """The report's opening: how many findings are supported / contradicted / inconclusive / not checked, then one
    sentence per finding (its section has the numbers)."""
    counts: dict[str, int] = {}
    for f in findings:
        counts[f"{f.mark} {f.word}"] = counts.get(f"{f.mark} {f.word}", 0) + 1
    order = ["✓", "✗", "～", "–"]
    tally = sorted(counts.items(), key=lambda kv: order.index(kv[0][0]) if kv[0][0] in order else 9)
    s = "" if len(findings) == 1 else "s"
    head = f"{len(findings)} finding{s}: " + ", ".join(f"{n} {what}" for what, n in tally) + "."
    return [head, *(f"{f.mark} {f.claim[:1].upper()}{f.claim[1:]}: {f.word}." for f in findings)]


@dataclass
class Section:
    title: str
    text: str = ""  # Markdown paragraphs
    commands: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)  # PNGs, absolute or relative to the report folder
    findings: list[Finding] = field(default_factory=list)
    seconds: float | None = None  # wall time of this part


def fmt(value: Any) -> str:
    """The one number format of reports: 4 significant digits, integers as they are, None and nan as '–'."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


#### Markdown ####


def _md_cell(value: Any) -> str:
    return fmt(value).replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    lines = [f"*{table.caption}*", ""] if table.caption else []
    lines.append("| " + " | ".join(_md_cell(c) for c in table.columns) + " |")
    lines.append("| " + " | ".join("---" for _ in table.columns) + " |")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return [*lines, ""]


def _relative(image: Path, out: Path) -> str:
    path = Path(image) if Path(image).is_absolute() else out / image
    return Path(os.path.relpath(path, out)).as_posix()


def to_markdown(
    out: Path, title: str, sections: Sequence[Section], *, intro: str, footer: Sequence[str]
) -> str:
    lines = [f"# {title}", ""]
    if intro:
        lines += [intro.strip(), ""]
    checked = [f for s in sections for f in s.findings]
    if checked:
        head, *sentences = conclusion(checked)
        lines += ["## Conclusion", "", head, "", *(f"- {x}" for x in sentences), ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.text:
            lines += [s.text.strip(), ""]
        if s.commands:
            lines += ["```", *s.commands, "```", ""]
        for t in s.tables:
            lines += _md_table(t)
        for image in s.images:
            rel = _relative(image, out)
            lines += [f"![{Path(rel).stem}]({rel})", ""]
        if s.findings:
            lines += [f"- {f.mark} {f.claim} — {f.evidence}" for f in s.findings]
            lines.append("")
    lines += ["## Machine and wall time", "", *footer, ""]
    return "\n".join(lines)


#### HTML (one self-contained file) ####

_CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; } th { background: #eee; }
td:first-child, th:first-child { text-align: left; }
pre { background: #f4f4f4; padding: 0.6em; overflow-x: auto; font-size: 12px; white-space: pre-wrap; }
img { max-width: 100%; display: block; margin: 0.8em 0; }
.ok { color: #087f23; } .fail { color: #b00020; } .unknown { color: #777; }
caption { caption-side: top; font-style: italic; text-align: left; }
@media print { body { max-width: none; } h2 { break-after: avoid; } img, table { break-inside: avoid; } }
"""


def _html_finding(f: Finding) -> str:
    css = {"✓": "ok", "✗": "fail"}.get(f.mark, "unknown")
    return f'<li><span class="{css}">{f.mark}</span> {_inline(f.claim)} — {_inline(f.evidence)}</li>'


def _html_table(t: Table) -> str:
    caption = f"<caption>{html.escape(t.caption)}</caption>" if t.caption else ""
    head = "".join(f"<th>{html.escape(fmt(c))}</th>" for c in t.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>" for row in t.rows
    )
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline(text: str) -> str:
    """The inline Markdown of report prose: `code` and **bold**; everything else is escaped text."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", escaped)


def _html_text(text: str) -> str:
    """Markdown paragraphs as HTML paragraphs (the report's prose: sentences with `code` and **bold**)."""
    paragraphs = [p.strip() for p in text.strip().split("\n\n") if p.strip()]
    return "".join(f"<p>{_inline(p)}</p>" for p in paragraphs)


def _embedded(image: Path, out: Path) -> str:
    path = Path(image) if Path(image).is_absolute() else out / image
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def to_html(out: Path, title: str, sections: Sequence[Section], *, intro: str, footer: Sequence[str]) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>", _html_text(intro)]
    checked = [f for s in sections for f in s.findings]
    if checked:
        head, *sentences = conclusion(checked)
        items = [f"<li>{_inline(x)}</li>" for x in sentences]
        parts += ["<h2>Conclusion</h2>", f"<p>{_inline(head)}</p>", "<ul>", *items, "</ul>"]
    for s in sections:
        parts += [f"<h2>{html.escape(s.title)}</h2>", _html_text(s.text)]
        if s.commands:
            parts.append(f"<pre>{html.escape(chr(10).join(s.commands))}</pre>")
        parts += [_html_table(t) for t in s.tables]
        parts += [_embedded(image, out) for image in s.images]
        if s.findings:
            parts += ["<ul>", *map(_html_finding, s.findings), "</ul>"]
    parts += ["<h2>Machine and wall time</h2>", _html_text("\n\n".join(footer))]
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


#### Writing ####


def footer_lines(environment: Mapping[str, Any] | None, wall: Mapping[str, float] | None) -> list[str]:
    lines = []
    if environment:
        gpu = environment.get("gpu") or "no GPU"
        lines.append(
            f"Machine: {environment.get('platform', '?')}, {environment.get('cpu_count', '?')} CPU cores, {gpu}; "
            f"Python {environment.get('python', '?')}."
        )
        versions = environment.get("versions") or {}
        if versions:
            lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    if wall:
        total = sum(v for v in wall.values() if v is not None)
        parts = ", ".join(f"{k} {duration(v)}" for k, v in wall.items())
        lines.append(f"Wall time: {duration(total)} in all ({parts}).")
    return lines


def missing_images(out: Path, sections: Sequence[Section]) -> list[Path]:
    return [
        p
        for s in sections
        for p in ((Path(i) if Path(i).is_absolute() else out / i) for i in s.images)
        if not p.is_file()
    ]


def write_report(
    out: Path,
    title: str,
    sections: Sequence[Section],
    *,
    intro: str = "",
    environment: Mapping[str, Any] | None = None,
    wall: Mapping[str, float] | None = None,
) -> tuple[Path, Path]:
    """Write ``out/report.md`` and ``out/report.html``; images that do not exist are left out (and said so)."""
    out = Path(out)
    gone = set(missing_images(out, sections))
    if gone:
        sections = [
            Section(
                s.title,
                s.text,
                s.commands,
                s.tables,
                [i for i in s.images if (Path(i) if Path(i).is_absolute() else out / i) not in gone],
                s.findings,
                s.seconds,
            )
            for s in sections
        ]
    footer = footer_lines(environment, wall)
    md = to_markdown(out, title, sections, intro=intro, footer=footer)
    page = to_html(out, title, sections, intro=intro, footer=footer)
    atomic_write(out / "report.md", lambda p: p.write_text(md, encoding="utf-8"))
    atomic_write(out / "report.html", lambda p: p.write_text(page, encoding="utf-8"))
    return out / "report.md", out / "report.html"


#### The comparison view ####

_NOT_METRICS = {"finished", "epochs"}


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The final numbers of a metrics.json: top-level ints and floats (no histories, no nested records)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _NOT_METRICS
    }


def _is_seed(key: str) -> bool:
    return key == "seed" or key.endswith(".seed")


def _mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.fmean(values))} ± {fmt(statistics.stdev(values))}"


def compare_runs(paths: Sequence[Path]) -> list[Section]:
    """One section per command: a table with the options that differ between its runs as columns and the final
    scalar metrics; runs that differ only by their seed form one row, as mean ± std (n = how many)."""
    by_command: dict[str, list[tuple[Path, dict[str, Any], dict[str, float]]]] = {}
    for path in paths:
        run = RunDir.open(Path(path))
        saved = run.saved
        options = _flatten(_without_runtime(saved["config"]))
        by_command.setdefault(saved.get("command", "?"), []).append(
            (Path(path), options, _scalars(run.read_metrics()))
        )
    sections = []
    for command, runs in by_command.items():
        keys = sorted({k for _, o, _ in runs for k in o})
        differ = [k for k in keys if len({repr(o.get(k)) for _, o, _ in runs}) > 1]
        shown = [k for k in differ if not _is_seed(k)]
        metric_names = sorted({m for _, _, s in runs for m in s})
        rows: dict[tuple, list[tuple[Path, dict[str, float]]]] = {}
        for path, options, scalars in runs:
            rows.setdefault(tuple(repr(options.get(k)) for k in shown), []).append((path, scalars))
        table_rows = []
        for group in rows.values():
            first = next(o for p, o, _ in runs if p == group[0][0])
            cells: list[Any] = [", ".join(p.name for p, _ in group), len(group)]
            cells += [first.get(k) for k in shown]
            for m in metric_names:
                values = [s[m] for _, s in group if m in s]
                cells.append(_mean_std(values) if values else None)
            table_rows.append(cells)
        seeds = any(_is_seed(k) for k in differ)
        text = (
            f"{len(runs)} run(s) of `{command}`. Columns: the options that differ, then the final metrics"
            + (" (mean ± std over seeds)." if seeds else ".")
        )
        table = Table(["runs", "n", *(k.replace("_", "-") for k in shown), *metric_names], table_rows)
        sections.append(Section(f"Comparison: {command}", text=text, tables=[table]))
    return sections
