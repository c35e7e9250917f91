"""`lab3 reproduce`: the lab's stories on a few photos under several generation settings, and its report.

Every step is an ordinary `lab3 story --out` run folder (config.json, results.jsonl, metrics.json,
captions.png); the report is built from those folders only: a gallery (each photo, its caption and its stories),
the timings, and findings checked against the stories themselves. No torch at import (`lab3 --help`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from dla_core.errors import DlaError
from dla_core.report import Finding, Section, Table
from dla_core.reproduce import Recipe, Step
from lab3_story.config import StoryConfig
from lab3_story.prompts import make_prompt

PHOTOS = ("china.jpg", "flower.jpg")  # scikit-learn ships them: offline, no download
# (name, options, what it is for); every step writes the stories of every image
SETTINGS = (
    ("sampled", ("--length", "short", "--seed", "0"), "sampling (top-p 0.9), short, seed 0"),
    ("sampled-rerun", ("--length", "short", "--seed", "0"), "the same again: same seed → same stories?"),
    ("greedy", ("--greedy", "--length", "short", "--seed", "0"), "greedy decoding, seed 0"),
    (
        "greedy-seed1",
        ("--greedy", "--length", "short", "--seed", "1"),
        "greedy, seed 1: does the seed matter?",
    ),
    ("long", ("--length", "long", "--seed", "0"), "sampling, long budget (200 new tokens instead of 100)"),
)
GALLERY = "gallery"  # OUT/gallery/: the thumbnails the report shows


def sklearn_photos() -> list[str]:
    """The two photos of ``sklearn.datasets`` (its package folder ``images/``), as file paths."""
    from importlib.resources import files

    folder = files("sklearn.datasets") / "images"
    return [str(folder / name) for name in PHOTOS]


def steps(
    profile: str,
    out: Path,
    tiny: bool,
    caption_model: str | None = None,
    story_model: str | None = None,
    image: tuple[str, ...] = (),
    **_: Any,
) -> list[Step]:
    models: tuple[str, ...] = ()
    if profile == "quick" and not (caption_model and story_model):
        raise DlaError(
            "lab3 reproduce --profile quick needs --caption-model and --story-model (no captioner ships "
            "offline: give local model folders or hub names already in your cache), or use --profile full"
        )
    # the model folders that must exist, refused before the reproduce folder is made (as `lab3 story` does)
    given = {"caption_model": caption_model, "story_model": story_model}
    StoryConfig(**{k: v for k, v in given.items() if v}).check()
    if caption_model:
        models += ("--caption-model", caption_model)
    if story_model:
        models += ("--story-model", story_model)
    sources = tuple(image) or tuple(sklearn_photos())  # `lab3 reproduce --image` checked and resolved them
    # full: BLIP base + TinyStories-33M from the hub (the first step downloads ≈1 GB); quick: the user's models.
    # minutes: one GPU, a guess (never timed on one). cpu: one CPU core, measured — a short step on the two
    # photos with random-weight models of the real sizes took 106 s of CPU time (start-up and loading included;
    # tests/lab3/test_full_profile.py's models, bench/RESULTS.md); the long budget's stories are not timed
    minutes = None if profile == "quick" else 1.0 + 0.3 * len(sources)
    cpu = None if profile == "quick" else 1.8 * len(sources) / len(PHOTOS)
    return [
        Step(
            name,
            ("story", *sources, *models, *options),
            resumable=False,  # `lab3 story` has no --resume: an unfinished folder is redone
            minutes=(minutes + 3.0 if i == 0 else minutes) if minutes else None,
            cpu_minutes=cpu if "long" not in options else None,
        )
        for i, (name, options, _) in enumerate(SETTINGS)
    ]


#### The report: only from the run folders ####


def _read(folder: Path) -> dict[str, Any] | None:
    """One finished `lab3 story` folder → config, metrics and results; None when missing or unfinished."""
    try:
        config = json.loads((folder / "config.json").read_text())["config"]
        metrics = json.loads((folder / "metrics.json").read_text())
        lines = (folder / "results.jsonl").read_text().splitlines()
        results = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError, KeyError, TypeError):  # missing, unfinished or damaged: not counted
        return None
    return {"config": config, "metrics": metrics, "results": results}


def sections(out: Path, steps: list[Step], **_: Any) -> list[Section]:
    out = Path(out)
    runs = {s.name: _read(out / s.name) for s in steps}
    done = {name: run for name, run in runs.items() if run is not None}
    what = dict((name, why) for name, _, why in SETTINGS)
    missing = [s.name for s in steps if s.name not in done]
    text = (
        "Each step is one `lab3 story` run on the same images: BLIP captions each image (greedy), the caption "
        "becomes the prompt and the story model continues it. Steps: "
        + "; ".join(f"**{s.name}**: {what.get(s.name, s.name)}" for s in steps)
        + "."
        + (f" Not run: {', '.join(missing)}." if missing else "")
        + "".join(
            f" Models: captions `{c}`, stories `{m}`."
            for c, m in sorted(
                {(r["config"].get("caption_model"), r["config"].get("story_model")) for r in done.values()}
            )
        )
    )
    overview = Section(
        "Stories under several generation settings",
        text=text,
        commands=[s.command_line("lab3", out) for s in steps],
        tables=[_timings(steps, runs)],
        findings=_findings(runs),
    )
    return [overview, *_gallery(out, steps, done)]


def _timings(steps: list[Step], runs: dict[str, dict | None]) -> Table:
    rows = []
    for s in steps:
        run = runs[s.name]
        if run is None:
            rows.append([s.name, "not run", None, None, None, None, None, None])
            continue
        c, m = run["config"], run["metrics"]
        by_stage = m.get("seconds_by_stage", {})
        decoding = "sampled" if c.get("sample", True) else "greedy"
        rows.append(
            [
                s.name,
                f"{c.get('length')}, {decoding}, seed {c.get('seed')}",
                f"{m.get('stories')}/{m.get('sources')}",
                m.get("mean_words"),
                m.get("model_load_seconds"),
                by_stage.get("caption"),
                by_stage.get("story"),
                m.get("images_per_s"),
            ]
        )
    columns = ["step", "setting", "stories", "mean words", "load s", "caption s", "story s", "images/s"]
    note = "load = both models, once per step (the first step's includes importing torch and transformers)"
    return Table(columns, rows, caption=f"Timings ({_device(runs)}): {note}")


def _device(runs: dict[str, dict | None]) -> str:
    devices = {f"{r['metrics'].get('device')}, {r['metrics'].get('dtype')}" for r in runs.values() if r}
    return "; ".join(sorted(devices)) or "no run"


def _stories(run: dict | None) -> dict[str, dict] | None:
    return None if run is None else {r["source"]: r for r in run["results"]}


def _findings(runs: dict[str, dict | None]) -> list[Finding]:
    done = [r for r in runs.values() if r is not None]
    results = [r for run in done for r in run["results"]]
    none = "no step finished"
    findings = []

    # 1. every image of every finished step has a caption and a story
    bad = [r["source"] for r in results if r.get("error") or not r.get("caption") or not r.get("story")]
    n_images = sum(len(run["config"].get("sources", [])) for run in done)
    findings.append(
        Finding(
            "every image got a non-empty caption and story",
            None if not done else not bad and len(results) == n_images,
            none
            if not done
            else f"{len(results) - len(bad)} of {n_images} image runs"
            + (f"; not: {', '.join(sorted({Path(s).name for s in bad}))}" if bad else ""),
        )
    )
    # 2. the story continues the caption's prompt
    good = [(run, r) for run in done for r in run["results"] if r.get("story")]
    off = [
        r["source"]
        for run, r in good
        if not r["story"].startswith(make_prompt(r["caption"], _template(run["config"])))
    ]
    findings.append(
        Finding(
            "every story starts from its caption's prompt",
            (not off) if good else None,
            f"{len(good) - len(off)} of {len(good)} stories" if good else none,
        )
    )
    # 3. the length budget is cut at the last full sentence
    ended = [r for _, r in good if r["story"].rstrip("\"'”’)]").endswith((".", "!", "?"))]
    findings.append(
        Finding(
            "every story ends at a full sentence",
            len(ended) == len(good) if good else None,
            f"{len(ended)} of {len(good)} stories end with . ! or ?" if good else none,
        )
    )
    findings.append(_same("same seed → the same stories on a rerun", runs, "sampled", "sampled-rerun"))
    findings.append(_same("greedy decoding does not depend on the seed", runs, "greedy", "greedy-seed1"))
    findings.append(_captions_agree(runs))
    findings.append(_longer(runs))
    return findings


def _same(claim: str, runs: dict[str, dict | None], a: str, b: str) -> Finding:
    sa, sb = _stories(runs.get(a)), _stories(runs.get(b))
    if not sa or not sb:
        return Finding(claim, None, f"needs steps {a} and {b}")
    shared = sorted(set(sa) & set(sb))
    differ = [s for s in shared if sa[s].get("story") != sb[s].get("story")]
    return Finding(
        claim,
        bool(shared) and not differ,
        f"{len(shared) - len(differ)} of {len(shared)} images: {a} and {b} wrote the same story",
    )


def _captions_agree(runs: dict[str, dict | None]) -> Finding:
    claim = "captions do not depend on the story settings (BLIP decodes greedily)"
    captions: dict[str, set[str]] = {}
    for run in filter(None, runs.values()):
        for r in run["results"]:
            if r.get("caption"):
                captions.setdefault(r["source"], set()).add(r["caption"])
    if not captions:
        return Finding(claim, None, "no captions")
    varied = [s for s, c in captions.items() if len(c) > 1]
    return Finding(claim, not varied, f"{len(captions) - len(varied)} of {len(captions)} images: one caption")


def _longer(runs: dict[str, dict | None]) -> Finding:
    claim = "a long budget writes longer stories than a short one"
    short, long = runs.get("sampled"), runs.get("long")
    if short is None or long is None:
        return Finding(claim, None, "needs steps sampled and long")
    ws, wl = short["metrics"].get("mean_words"), long["metrics"].get("mean_words")
    if ws is None or wl is None:
        return Finding(claim, None, "a step wrote no story")
    return Finding(claim, wl > ws, f"mean {wl:.1f} words (long) vs {ws:.1f} (short)")


def _template(config: dict) -> str:
    """The prompt template a `lab3 story` folder's stories were given (its reader's controls included)."""
    fields = {f.name for f in dataclasses.fields(StoryConfig)}
    return StoryConfig(**{k: v for k, v in config.items() if k in fields}).template


def _gallery(out: Path, steps: list[Step], done: dict[str, dict]) -> list[Section]:
    """One section per image: its thumbnail, its caption (once when every step agrees) and each step's story."""
    sources: list[str] = []
    for run in done.values():
        sources += [s for s in run["config"].get("sources", []) if s not in sources]
    result = []
    for i, source in enumerate(sources):
        found = [(s.name, r) for s in steps if (r := (_stories(done.get(s.name)) or {}).get(source))]
        captions = {r.get("caption") for _, r in found if r.get("caption")}
        paragraphs = [f"Source: `{source}`"]
        if len(captions) == 1:
            paragraphs.append(f"**Caption** (every step): {captions.pop()}")
        for name, r in found:
            story = " ".join((r.get("story") or f"error: {r.get('error')}").split())  # one paragraph
            caption = "" if len(captions) <= 1 else f"; caption: {r.get('caption')}"
            paragraphs.append(f"**{name}** ({r.get('word_count', 0)} words{caption}): {story}")
        image = _thumbnail(source, out / GALLERY / f"{i + 1}-{Path(source).stem[:40]}.png")
        if image is None:  # a URL, or a file that is gone: the step's own picture of every caption
            image = next(
                (out / n / "captions.png" for n in done if (out / n / "captions.png").exists()), None
            )
        result.append(
            Section(
                f"Gallery: {Path(source).name}",
                text="\n\n".join(paragraphs),
                images=[image] if image is not None else [],
                images_first=True,  # the photo, then its caption and stories
            )
        )
    return result


def _thumbnail(source: str, path: Path, size: int = 320) -> Path | None:
    """A PNG thumbnail of a local image file for the report; None for URLs and unreadable files."""
    if source.startswith(("http://", "https://")) or not Path(source).is_file():
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path)
    except (OSError, UnidentifiedImageError):
        return None
    return path


RECIPE = Recipe(
    lab="lab3",
    title="Lab 3: image → caption → story",
    intro=(
        "BLIP captions each photo and a small story model (TinyStories) turns the caption into a children's "
        "story. The same photos go through several generation settings (sampling vs greedy, two seeds, a short "
        "and a long budget); the findings are checked against the stories the runs wrote."
    ),
    steps=steps,
    sections=sections,
)
