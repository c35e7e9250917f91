"""`lab3 reproduce --profile quick` on the tiny random checkpoints and scikit-learn's two photos, and `lab3 report`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab3_story import reproduce
from lab3_story.cli import group

STEPS = [name for name, _, _ in reproduce.SETTINGS]


def _invoke(*args) -> object:
    return CliRunner().invoke(group, [str(a) for a in args], env={"DLA_REPRODUCE_TINY": "1"})


def _findings(out: Path) -> dict[str, object]:
    steps = reproduce.steps("quick", out, True, caption_model="c", story_model="s")
    overview = reproduce.sections(out, steps)[0]
    return {f.claim: f.ok for f in overview.findings}


@pytest.fixture(scope="module")
def done(models: Path, tmp_path_factory: pytest.TempPathFactory):
    """A quick profile run in two goes: everything but `long`, then --resume, which runs only `long`."""
    out = tmp_path_factory.mktemp("reproduce") / "lab3"
    argv = ["reproduce", "--profile", "quick", "--out", out]
    argv += ["--caption-model", models / "captioner", "--story-model", models / "storyteller"]
    first = _invoke(*argv, "--skip", "long")
    assert first.exit_code == 0, first.output
    assert not (out / "long").exists()
    findings_first = _findings(out)
    stamps = {name: (out / name / "results.jsonl").stat().st_mtime_ns for name in STEPS[:-1]}
    again = _invoke(*argv, "--resume")
    assert again.exit_code == 0, again.output
    return out, stamps, findings_first


def test_children_are_story_run_folders(done) -> None:
    out, _, _ = done
    for name in STEPS:
        saved = json.loads((out / name / "config.json").read_text())
        assert saved["command"] == "lab3 story"
        assert saved["config"]["sources"] == reproduce.sklearn_photos()
        results = [json.loads(line) for line in (out / name / "results.jsonl").read_text().splitlines()]
        assert [Path(r["source"]).name for r in results] == ["china.jpg", "flower.jpg"]
    assert json.loads((out / "greedy" / "config.json").read_text())["config"]["sample"] is False
    assert json.loads((out / "long" / "config.json").read_text())["config"]["length"] == "long"


def test_resume_skips_the_finished_steps(done) -> None:
    out, stamps, first = done
    assert stamps == {name: (out / name / "results.jsonl").stat().st_mtime_ns for name in stamps}
    assert (out / "long" / "results.jsonl").exists()
    assert first["a long budget writes longer stories than a short one"] is None  # `long` skipped: unchecked


def test_report_files_and_images(done) -> None:
    out, _, _ = done
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", md)
    assert len(links) >= 2 and all((out / link).is_file() for link in links)
    assert any(link.startswith(f"{reproduce.GALLERY}/") for link in links)  # the photos' own thumbnails
    assert html.count("data:image/png;base64,") >= len(set(links))
    assert 'src="' + reproduce.GALLERY not in html  # embedded, not linked
    for name in STEPS:
        assert f"--out {name}\n" in md  # each child's command line, its paths from the report folder
    assert str(out) not in md and str(out) not in re.sub(r"data:image/png;base64,[^\"]+", "", html)
    assert "every image got a non-empty caption and story" in md


def test_each_photo_comes_before_its_stories(done) -> None:
    out, _, _ = done
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    galleries = [s for s in md.split("\n## ") if s.startswith("Gallery: ")]
    assert len(galleries) == 2
    for section in galleries:
        assert -1 < section.index("![") < section.index("Caption") < section.index("sampled")
    pages = [s.split(">", 1)[1] for s in html.split("<h2")[1:]]  # a heading's text onwards
    pages = [s for s in pages if s.startswith("Gallery: ")]
    assert len(pages) == 2 and all(-1 < s.index("<img") < s.index("Caption") for s in pages)


def test_findings_on_the_tiny_models(done) -> None:
    findings = _findings(done[0])
    assert findings["every image got a non-empty caption and story"] is True
    assert findings["every story starts from its caption's prompt"] is True
    assert findings["same seed → the same stories on a rerun"] is True
    assert findings["greedy decoding does not depend on the seed"] is True
    assert findings["captions do not depend on the story settings (BLIP decodes greedily)"] is True
    assert all(ok is not None for ok in findings.values())  # every step ran: everything is checked


def _edit_story(folder: Path, story: str) -> None:
    path = folder / "results.jsonl"
    results = [json.loads(line) for line in path.read_text().splitlines()]
    results[0]["story"] = story
    path.write_text("".join(json.dumps(r) + "\n" for r in results))


def test_findings_flip_when_a_child_changes(done, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(done[0], out)
    _edit_story(out / "sampled-rerun", "Something else entirely.")
    _edit_story(out / "greedy", "")
    findings = _findings(out)
    assert findings["same seed → the same stories on a rerun"] is False
    assert findings["every image got a non-empty caption and story"] is False
    assert findings["greedy decoding does not depend on the seed"] is False
    assert findings["every story starts from its caption's prompt"] is False  # "Something else" has no prompt
    before = (out / "report.md").read_text()
    result = _invoke("report", out)
    assert result.exit_code == 0, result.output
    after = (out / "report.md").read_text()
    assert "1 of 2 images: sampled and sampled-rerun wrote the same story" in after
    assert "1 of 2 images: sampled and sampled-rerun" not in before
    shutil.rmtree(out / "long")  # a missing child: its finding cannot be checked, the report still renders
    assert _findings(out)["a long budget writes longer stories than a short one"] is None
    assert _invoke("report", out).exit_code == 0


def test_quick_needs_both_models(tmp_path: Path) -> None:
    result = _invoke("reproduce", "--profile", "quick", "--out", tmp_path / "r", "--caption-model", "c")
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: lab3 reproduce --profile quick needs --caption-model and --story-model"
    )
    assert result.output.count("\n") == 1
    assert not (tmp_path / "r").exists()  # refused before any folder is made


def test_images_must_exist_and_default_to_sklearns_photos(tmp_path: Path) -> None:
    result = _invoke("reproduce", "--profile", "full", "--out", tmp_path / "r", "--image", "nope.jpg")
    assert (
        result.exit_code == 2
        and "Error: Invalid value for '--image': nope.jpg: no such file" in result.output
    )
    assert not (tmp_path / "r").exists()  # refused before any model download
    full = reproduce.steps("full", tmp_path, False)
    assert [s.name for s in full] == STEPS and all(s.minutes for s in full)
    assert all(Path(p).is_file() for p in reproduce.sklearn_photos())
    assert full[0].argv[1:3] == tuple(reproduce.sklearn_photos())
    assert "--caption-model" not in full[0].argv  # full: the hub defaults of `lab3 story`
    url = "https://example.com/dog.png"
    assert reproduce.steps("full", tmp_path, False, image=(url,))[0].argv[:2] == ("story", url)


def _run(
    stories: dict[str, str], *, caption: str = "a dog", sample: bool = True, words: float = 10.0
) -> dict:
    template = "This is a story about {caption}. One day,"
    results = [
        {"source": s, "caption": caption, "story": t, "word_count": len(t.split())}
        for s, t in stories.items()
    ]
    config = {
        "sources": list(stories),
        "prompt_template": template,
        "sample": sample,
        "length": "short",
        "seed": 0,
    }
    return {"config": config, "metrics": {"mean_words": words}, "results": results}


def test_each_finding_is_computed_from_the_stories() -> None:
    good = "This is a story about a dog. One day, it ran."
    runs = {name: _run({"a.jpg": good}) for name in STEPS}
    runs["long"] = _run({"a.jpg": good}, words=11.0)
    ok = {f.claim: f.ok for f in reproduce._findings(runs)}
    assert all(ok.values()), ok
    flips = {
        "every story ends at a full sentence": {"greedy": _run({"a.jpg": good[:-1]})},
        "every story starts from its caption's prompt": {"greedy": _run({"a.jpg": "One day, it ran."})},
        "captions do not depend on the story settings (BLIP decodes greedily)": {
            "greedy": _run({"a.jpg": "This is a story about a cat. One day, it ran."}, caption="a cat")
        },
        "a long budget writes longer stories than a short one": {"long": _run({"a.jpg": good}, words=10.0)},
        "every image got a non-empty caption and story": {"greedy": {**_run({"a.jpg": good}), "results": []}},
        "same seed → the same stories on a rerun": {"sampled-rerun": _run({"a.jpg": good + " It sat."})},
        "greedy decoding does not depend on the seed": {"greedy-seed1": _run({"a.jpg": good + " It sat."})},
    }
    for claim, change in flips.items():
        assert {f.claim: f.ok for f in reproduce._findings({**runs, **change})}[claim] is False, claim
    unchecked = {f.claim: f.ok for f in reproduce._findings(dict.fromkeys(STEPS))}
    assert set(unchecked.values()) == {None}  # nothing ran: nothing claimed


def test_resume_redoes_a_story_step_that_stopped(done, models: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(done[0], out)
    manifest = json.loads((out / "metrics.json").read_text())
    manifest["steps"]["greedy"]["done"] = (
        False  # stopped part-way: its folder exists, its manifest entry is open
    )
    (out / "metrics.json").write_text(json.dumps(manifest))
    (out / "greedy" / "results.jsonl").write_text("")
    kept = (out / "sampled" / "results.jsonl").stat().st_mtime_ns
    argv = ["reproduce", "--profile", "quick", "--out", out, "--resume"]
    result = _invoke(*argv, "--caption-model", models / "captioner", "--story-model", models / "storyteller")
    assert result.exit_code == 0, result.output  # `lab3 story` has no --resume: the folder is redone instead
    assert len((out / "greedy" / "results.jsonl").read_text().splitlines()) == 2
    assert (out / "sampled" / "results.jsonl").stat().st_mtime_ns == kept


def test_image_paths_are_saved_absolute_and_damaged_children_are_not_counted(
    tmp_path: Path, monkeypatch, server: str
) -> None:
    from lab3_story.cli import _images

    shutil.copy(reproduce.sklearn_photos()[0], tmp_path / "mine.jpg")
    monkeypatch.chdir(tmp_path)
    url = f"{server}/china.jpg"  # fetched once, to be refused now if it cannot be
    assert _images(("mine.jpg", url)) == (
        str(tmp_path / "mine.jpg"),
        url,
    )  # `lab3 report` works from anywhere
    child = tmp_path / "sampled"
    child.mkdir()
    (child / "config.json").write_text(
        json.dumps({"command": "lab3 story", "config": {"sources": ["a.jpg"]}})
    )
    (child / "metrics.json").write_text("{}")
    (child / "results.jsonl").write_text('{"source": "a.jpg", "story": "cut sh')  # a crash mid-line
    assert reproduce._read(child) is None
