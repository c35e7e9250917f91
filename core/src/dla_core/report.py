"""Lab reports: sections of tables, plots and checked findings, written as ``report.md`` and ``report.html``.

    sections = [Section("Depth study", commands=[…], tables=[Table(["depth", "plain", "residual"], rows)],
                        images=[Figure(out / "mlp-study" / "study.png", "Loss per epoch of the MLPs")],
                        findings=[Finding("degradation: …", ok=plain < 0.2 < residual, evidence="0.10 vs 0.98")])]
    write_report(out, "lab1 — ResNet at small scale", sections, environment=environment(), wall={"mlp-study": 41.0})

``report.md`` links images relative to the report folder (GitHub renders it); ``report.html`` is one file with
the images embedded (readable offline, printable). Both have the same parts, each written by one function per
format: the title block (date), the contents, the findings, one part per section (its command lines relative to
the report folder, a link to each run folder a command wrote, tables sorted by their headline column with the
best value in bold, figures each with a caption), then the machine and wall time. A finding's mark comes from
``ok``: ✓ holds, ✗ does not, – could not be checked (a run is missing). Every number goes through ``fmt``.
The comparison view of several run folders is ``dla_core.compare``. Nothing here imports torch.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dla_core.runs import atomic_write

if TYPE_CHECKING:
    from dla_core.stats import Verdict

MARKS = {True: "✓", False: "✗", None: "–"}
COMMANDS_NOTE = "# paths are relative to this report's folder: run these from there"

#### What a report is made of ####


@dataclass(frozen=True)
class Table:
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]  # str / int / float / Estimate / None cells
    caption: str = ""
    headline: str | None = None  # the column the rows are sorted by, best first, its best value in bold
    lower_is_better: bool = False  # for the headline column (a loss, a false-positive rate)


@dataclass(frozen=True)
class Figure:
    path: Path  # a PNG, absolute or relative to the report folder
    caption: str = ""  # what it shows and for which model; empty: derived from the file and its run folder


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


@dataclass(frozen=True)
class Opening:
    """What both renderings of a report open with, built once from its sections (``opening``): the date, the
    contents' titles and the Conclusion (its tally, then one sentence per finding; empty without findings)."""

    written: str
    titles: list[str]
    conclusion: list[str]


def opening(sections: Sequence[Section], written: str = "") -> Opening:
    findings = [f for s in sections for f in s.findings]
    titles = (["Conclusion"] if findings else []) + [s.title for s in sections] + [MACHINE]
    return Opening(
        written or datetime.date.today().isoformat(), titles, conclusion(findings) if findings else []
    )


@dataclass
class Section:
    title: str
    text: str = ""  # Markdown paragraphs
    commands: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: list[Path | Figure] = field(default_factory=list)  # a bare path gets a derived caption
    findings: list[Finding] = field(default_factory=list)
    seconds: float | None = None  # wall time of this part
    images_first: bool = False  # images right under the title, before the text (a gallery: photo, then words)


#### Numbers ####


def fmt(value: Any) -> str:
    """The one number format of reports and plot labels: floats with 3 significant digits (1.0 -> "1.00",
    0.123456 -> "0.123", 21450.0 -> "21,450"), integers with thousands separators, an ``Estimate`` as
    ``mean ± half-width of its CI`` (no ± when the runs agree or there is one), None and nan as "–"."""
    # numpy: loaded when a report is written, not when a lab's recipe is imported for its --help
    from dla_core.stats import Estimate, significant

    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Estimate):
        half = value.high - value.mean
        if not value.has_interval or not half > 1e-9 * max(abs(value.mean), 1.0):  # float noise is no spread
            return fmt(value.mean)
        return f"{fmt(value.mean)} ± {spread(half)}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "–" if math.isnan(value) else significant(value)
    return str(value)


def spread(value: float) -> str:
    """A spread (a std, a CI's half-width) beside its mean: 2 significant digits (0.0041, 0.064)."""
    from dla_core.stats import significant

    return significant(value, 2)


def plus_minus(mean: float | None, std: float | None) -> str:
    """``mean ± std`` in the one format; the mean alone when there is no spread (one seed, seeds that agree)."""
    return fmt(mean) if mean is None or not std else f"{fmt(mean)} ± {spread(std)}"


def number(value: Any) -> float | None:
    """The number a cell stands for (an Estimate's mean, the leading number of a formatted string)."""
    from dla_core.stats import Estimate

    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Estimate):
        return value.mean
    if isinstance(value, int | float):
        return None if math.isnan(value) else float(value)
    match = re.match(r"\s*([-+]?[\d,]*\.?\d+(?:e[-+]?\d+)?)", str(value))
    return float(match.group(1).replace(",", "")) if match else None


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{fmt(float(seconds))} s"
    return f"{fmt(seconds / 60)} min"


def ranked(table: Table) -> tuple[list[list[Any]], set[int]]:
    """The table's rows sorted by its headline column, best first (rows without a number last), and the indexes
    of the rows holding the best value (bold). Without a headline: the rows as given, nothing bold."""
    rows = [list(r) for r in table.rows]
    if table.headline is None or table.headline not in table.columns:
        return rows, set()
    col = list(table.columns).index(table.headline)
    sign = 1 if table.lower_is_better else -1
    rows.sort(key=lambda r: (number(r[col]) is None, sign * (number(r[col]) or 0.0)))
    values = [number(r[col]) for r in rows]
    present = [v for v in values if v is not None]
    if not present:
        return rows, set()
    best = min(present) if table.lower_is_better else max(present)
    return rows, {i for i, v in enumerate(values) if v == best}


#### Paths: nothing of this machine in a report ####


# where Python environments keep installed packages
INSTALL_DIRS = frozenset({"site-packages", "dist-packages"})


def relative_command(line: str, report_dir: Path, folders: Mapping[str, Path] | None = None) -> str:
    """``line`` with its paths written from ``report_dir``: an argument equal to (or under) a key of ``folders``
    (a path as the command was given it) becomes the path of that folder, now, relative to the report folder;
    an installed package's file (under ``site-packages`` / ``dist-packages``) is written from there, as
    ``<site-packages>/…`` (where the reader's environment keeps it, not this machine's); any other absolute path
    is made relative to the report folder as well."""
    report_dir = Path(report_dir).absolute()
    prefixes = sorted((folders or {}).items(), key=lambda kv: -len(kv[0]))

    def rewrite(arg: str) -> str:
        for given, where in prefixes:
            if arg == given or arg.startswith(given.rstrip("/") + "/"):
                rest = arg[len(given) :].lstrip("/")
                return _posix(os.path.relpath(Path(where).absolute() / rest, report_dir))
        if os.path.isabs(arg):
            parts = Path(arg).parts
            installed = [i for i, part in enumerate(parts) if part in INSTALL_DIRS]
            if installed:
                return "/".join(("<site-packages>", *parts[installed[-1] + 1 :]))
            return _posix(os.path.relpath(arg, report_dir))
        return arg

    def token(arg: str) -> str:
        if arg.startswith("--") and "=" in arg:
            name, _, value = arg.partition("=")
            return f"{name}={rewrite(value)}"
        return rewrite(arg)

    try:
        args = shlex.split(line)
    except ValueError:
        return line
    return shlex.join(token(a) for a in args)


def _posix(path: str) -> str:
    return Path(path).as_posix()


def out_folders(commands: Sequence[str]) -> list[str]:
    """The ``--out`` folder of each command line (as written), in order, once each."""
    found = []
    for line in commands:
        try:
            args = shlex.split(line)
        except ValueError:
            continue
        for i, arg in enumerate(args):
            if arg == "--out" and i + 1 < len(args):
                found.append(args[i + 1])
            elif arg.startswith("--out="):
                found.append(arg.partition("=")[2])
    return list(dict.fromkeys(found))


def _absolute(image: Path, out: Path) -> Path:
    return Path(image) if Path(image).is_absolute() else out / image


def _relative(image: Path, out: Path) -> str:
    return _posix(os.path.relpath(_absolute(image, out), out))


#### Figure captions ####

# what a plot of the project shows, by its file name (the rest of the caption names the run and its model)
PLOT_CAPTIONS = {
    "learning_curves": "Loss and accuracy per epoch, train solid and validation dashed; bands: the spread over seeds",
    "grad_norms": "Mean gradient L2 norm per weight layer (conv / linear), input to output",
    "ranking": "Detectors ranked by their mean over the OOD sets (chance at 0.5)",
    "adversarial_examples": "Test images under attack, one row per ε, with the model's prediction",
    "accuracy_vs_eps": "Test accuracy as the attack budget ε grows",
    "lora_grid": "Test accuracy against trainable parameters, one line per LoRA target set",
    "captions": "Generated images with their captions",
    "reconstructions": "Test images (top) and the autoencoder's reconstructions of them (bottom)",
    "features_pc1": "The frozen encoder's features of each sentence on their first principal component, by label",
    "scores": "Histograms of the classifier's scores on the test sentences, by label",
}
_PREFIX_CAPTIONS = {
    "scores_": "Score histograms of ID and OOD test images (higher = more in-distribution)",
    "roc_": "ROC curves, ID accepted against OOD accepted",
    "pr_": "Precision-recall curves with ID as the positive class",
}


def _model_of(folder: Path) -> str | None:
    """A short name of the model a run folder's command used, from its config.json (None when unknown)."""
    for where in (folder, *folder.parents[:2]):
        path = where / "config.json"
        if path.is_file():
            try:
                cfg = json.loads(path.read_text(encoding="utf-8")).get("config", {})
            except (OSError, ValueError):
                return None
            model = cfg.get("model") if isinstance(cfg, Mapping) else None
            if isinstance(model, str) and model:
                name = Path(model).name if ("/" in model or os.sep in model) else model
                depth = cfg.get("depth")
                return f"{name} depth {depth}" if isinstance(depth, int) else name
            return None
    return None


def caption_for(image: Path | Figure, out: Path) -> str:
    """A figure's caption: its own, or what its kind of plot shows, then the run folder (and model) it is of."""
    if isinstance(image, Figure) and image.caption:
        return image.caption
    path = _absolute(image.path if isinstance(image, Figure) else image, out)
    stem = path.stem
    what = PLOT_CAPTIONS.get(stem) or next(
        (f"{text}, {stem[len(p) :]}" for p, text in _PREFIX_CAPTIONS.items() if stem.startswith(p)),
        stem.replace("_", " ").capitalize(),
    )
    folder = _posix(os.path.relpath(path.parent, out))
    model = _model_of(path.parent)
    return f"{what}. Run folder `{folder}`" + (f", model {model}." if model else ".")


#### Markdown ####


def _md_cell(value: Any, bold: bool = False) -> str:
    text = fmt(value).replace("|", "\\|").replace("\n", " ")
    return f"**{text}**" if bold and text != "–" else text


def _md_table(table: Table) -> list[str]:
    rows, best = ranked(table)
    col = list(table.columns).index(table.headline) if best else -1
    lines = [f"*{table.caption}*", ""] if table.caption else []
    lines.append("| " + " | ".join(_md_cell(c) for c in table.columns) + " |")
    lines.append("| " + " | ".join("---" for _ in table.columns) + " |")
    for i, row in enumerate(rows):
        lines.append("| " + " | ".join(_md_cell(c, i in best and j == col) for j, c in enumerate(row)) + " |")
    return [*lines, ""]


def slug(title: str) -> str:
    """The anchor of a heading as GitHub makes it (lower case, punctuation dropped, spaces as hyphens)."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def md_title(title: str, intro: str, written: str) -> list[str]:
    lines = [f"# {title}", "", f"*Written {written}.*", ""]
    return lines + ([intro.strip(), ""] if intro else [])


def md_contents(titles: Sequence[str]) -> list[str]:
    return ["## Contents", "", *(f"- [{t}](#{slug(t)})" for t in titles), ""]


def md_findings(findings: Sequence[Finding]) -> list[str]:
    return [f"- {f.mark} {f.claim} — {f.evidence}" for f in findings] + ([""] if findings else [])


def md_section(s: Section, out: Path) -> list[str]:
    images = []
    for image in s.images:
        rel = _relative(image.path if isinstance(image, Figure) else image, out)
        images += [f"![{Path(rel).stem}]({rel})", "", f"*{caption_for(image, out)}*", ""]
    lines = [f"## {s.title}", "", *(images if s.images_first else [])]
    if s.text:
        lines += [s.text.strip(), ""]
    if s.commands:
        lines += ["```", COMMANDS_NOTE, *s.commands, "```", ""]
        folders = out_folders(s.commands)
        if folders:
            lines += ["Run folders: " + ", ".join(f"[{f}]({f})" for f in folders), ""]
    for t in s.tables:
        lines += _md_table(t)
    if not s.images_first:
        lines += images
    return lines + md_findings(s.findings)


def to_markdown(
    out: Path,
    title: str,
    sections: Sequence[Section],
    *,
    intro: str,
    footer: Sequence[str],
    start: Opening | None = None,
) -> str:
    """The report in Markdown; ``start``: its ``opening`` when the caller built it (default: from ``sections``)."""
    start = start or opening(sections)
    lines = md_title(title, intro, start.written) + md_contents(start.titles)
    if start.conclusion:
        head, *sentences = start.conclusion
        lines += ["## Conclusion", "", head, "", *(f"- {x}" for x in sentences), ""]
    for s in sections:
        lines += md_section(s, out)
    lines += [f"## {MACHINE}", "", *footer, ""]
    return "\n".join(lines)


MACHINE = "Machine and wall time"

#### HTML (one self-contained file) ####

_CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; max-width: 100%; }
.wide { overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; } th { background: #eee; }
td:first-child, th:first-child { text-align: left; }
pre { background: #f4f4f4; padding: 0.6em; overflow-x: auto; font-size: 12px; white-space: pre-wrap; }
figure { margin: 0.8em 0; } img { max-width: 100%; display: block; }
figcaption { font-size: 13px; color: #444; font-style: italic; }
.ok { color: #087f23; } .fail { color: #b00020; } .unknown { color: #777; }
.inconclusive::before { content: "~"; font-weight: bold; color: #9a6700; }
.inconclusive > span { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%); }
caption { caption-side: top; font-style: italic; text-align: left; }
@media print { body { max-width: none; } h2 { break-after: avoid; } figure, table { break-inside: avoid; } }
"""


# ～ (U+FF5E) is in CJK fonts only: a browser without one draws a missing-glyph box. The page keeps the character
# (copied, searched, read aloud) in a visually hidden span and draws an ASCII ~ in front of it (.inconclusive).
INCONCLUSIVE = "～"
INCONCLUSIVE_HTML = f'<span class="inconclusive"><span>{INCONCLUSIVE}</span></span>'


def _html_finding(f: Finding) -> str:
    css = {"✓": "ok", "✗": "fail"}.get(f.mark, "unknown")
    return f'<li><span class="{css}">{f.mark}</span> {_inline(f.claim)} — {_inline(f.evidence)}</li>'


def _html_cell(value: Any, bold: bool) -> str:
    text = html.escape(fmt(value))
    return f"<td><b>{text}</b></td>" if bold and text != "–" else f"<td>{text}</td>"


def _html_table(t: Table) -> str:
    rows, best = ranked(t)
    col = list(t.columns).index(t.headline) if best else -1
    caption = f"<caption>{html.escape(t.caption)}</caption>" if t.caption else ""
    head = "".join(f"<th>{html.escape(fmt(c))}</th>" for c in t.columns)
    body = "".join(
        "<tr>" + "".join(_html_cell(c, i in best and j == col) for j, c in enumerate(row)) + "</tr>"
        for i, row in enumerate(rows)
    )
    return (
        f'<div class="wide"><table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    )


def _inline(text: str) -> str:
    """The inline Markdown of report prose: `code`, **bold**, *italics* and [links](to); everything else is escaped text."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", escaped)
    escaped = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', escaped)
    return re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"<i>\1</i>", escaped)


def _html_text(text: str) -> str:
    """Markdown paragraphs as HTML paragraphs (the report's prose: sentences with `code` and **bold**)."""
    paragraphs = [p.strip() for p in text.strip().split("\n\n") if p.strip()]
    return "".join(f"<p>{_inline(p)}</p>" for p in paragraphs)


def _embedded(image: Path | Figure, out: Path) -> str:
    path = _absolute(image.path if isinstance(image, Figure) else image, out)
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_inline(caption_for(image, out))}</figcaption></figure>"
    )


def html_title(title: str, intro: str, written: str) -> list[str]:
    return [
        f"<h1>{html.escape(title)}</h1>",
        f"<p><i>Written {html.escape(written)}.</i></p>",
        _html_text(intro),
    ]


def html_contents(titles: Sequence[str]) -> list[str]:
    items = "".join(f'<li><a href="#{slug(t)}">{html.escape(t)}</a></li>' for t in titles)
    return ['<h2 id="contents">Contents</h2>', f"<ul>{items}</ul>"]


def _h2(title: str) -> str:
    return f'<h2 id="{slug(title)}">{html.escape(title)}</h2>'


def html_section(s: Section, out: Path) -> list[str]:
    images = [_embedded(image, out) for image in s.images]
    parts = [_h2(s.title), *(images if s.images_first else []), _html_text(s.text)]
    if s.commands:
        parts.append(f"<pre>{html.escape(chr(10).join([COMMANDS_NOTE, *s.commands]))}</pre>")
        folders = out_folders(s.commands)
        if folders:
            links = ", ".join(f'<a href="{html.escape(f)}">{html.escape(f)}</a>' for f in folders)
            parts.append(f"<p>Run folders: {links}</p>")
    parts += [_html_table(t) for t in s.tables]
    parts += [] if s.images_first else images
    if s.findings:
        parts += ["<ul>", *map(_html_finding, s.findings), "</ul>"]
    return parts


def to_html(
    out: Path,
    title: str,
    sections: Sequence[Section],
    *,
    intro: str,
    footer: Sequence[str],
    start: Opening | None = None,
) -> str:
    """The report as one HTML page; ``start``: its ``opening`` when the caller built it."""
    start = start or opening(sections)
    parts = html_title(title, intro, start.written) + html_contents(start.titles)
    if start.conclusion:
        head, *sentences = start.conclusion
        items = [f"<li>{_inline(x)}</li>" for x in sentences]
        parts += [_h2("Conclusion"), f"<p>{_inline(head)}</p>", "<ul>", *items, "</ul>"]
    for s in sections:
        parts += html_section(s, out)
    parts += [_h2(MACHINE), _html_text("\n\n".join(footer))]
    body = "\n".join(parts).replace(INCONCLUSIVE, INCONCLUSIVE_HTML)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


#### Writing ####


def machine_line(environment: Mapping[str, Any]) -> str:
    gpu = environment.get("gpu") or "no GPU"
    return (
        f"Machine: {environment.get('platform', '?')}, {environment.get('cpu_count', '?')} CPU cores, {gpu}; "
        f"Python {environment.get('python', '?')}."
    )


def footer_lines(environment: Mapping[str, Any] | None, wall: Mapping[str, float] | None) -> list[str]:
    lines = []
    if environment:
        lines.append(machine_line(environment))
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
        for p in (_absolute(i.path if isinstance(i, Figure) else i, out) for i in s.images)
        if not p.is_file()
    ]


def unplaced(text: str, out: Path) -> str:
    """``text`` without this machine's place of the report folder and of the home folder: the last net under
    ``relative_command`` and the captions' relative paths, for a path a lab put into its prose."""
    where = str(Path(out).absolute())
    text = text.replace(where + os.sep, "").replace(where, ".")
    home = str(Path.home())
    return text.replace(home + os.sep, "~/") if len(home) > 1 else text


def write_report(
    out: Path,
    title: str,
    sections: Sequence[Section],
    *,
    intro: str = "",
    environment: Mapping[str, Any] | None = None,
    wall: Mapping[str, float] | None = None,
    footer: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Write ``out/report.md`` and ``out/report.html``; images that do not exist are left out. ``footer``: lines
    of the machine section beyond the ``environment`` and ``wall`` ones."""
    out = Path(out)
    gone = set(missing_images(out, sections))
    if gone:
        sections = [
            replace(s, images=[i for i in s.images if _absolute(getattr(i, "path", i), out) not in gone])
            for s in sections
        ]
    lines = [*footer_lines(environment, wall), *footer]
    start = opening(sections)
    md = unplaced(to_markdown(out, title, sections, intro=intro, footer=lines, start=start), out)
    page = unplaced(to_html(out, title, sections, intro=intro, footer=lines, start=start), out)
    atomic_write(out / "report.md", lambda p: p.write_text(md, encoding="utf-8"))
    atomic_write(out / "report.html", lambda p: p.write_text(page, encoding="utf-8"))
    return out / "report.md", out / "report.html"
