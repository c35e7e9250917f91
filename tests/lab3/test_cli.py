"""`lab3 story` end to end on the tiny checkpoints: text, --json, --out, interactive mode, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab3_story.cli import group


@pytest.fixture(scope="module")
def run(models: Path):
    def invoke(*args: str, input: str | None = None):
        argv = [
            "story",
            "--caption-model",
            str(models / "captioner"),
            "--story-model",
            str(models / "storyteller"),
        ]
        return CliRunner().invoke(group, [*argv, *map(str, args)], input=input)

    return invoke


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(group, ["story", "--help"])
    assert result.exit_code == 0
    assert "lab3 story photo.jpg" in result.output and "--length [short|medium|long]" in result.output


def test_text_output(run, photos: Path) -> None:
    result = run(photos / "china.jpg", "--length", "short")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"== {photos / 'china.jpg'}\nCaption: ")
    assert "This is a story about" in result.stdout and "words):" in result.stdout


def test_json_several_sources_one_bad(run, photos: Path, server: str) -> None:
    bad = f"{server}/page.html"
    result = run(
        photos / "flower.jpg", bad, f"{server}/china.jpg", "--json", "--length", "short", "--seed", 3
    )
    assert result.exit_code == 1  # the bad source fails the command…
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["source"] for d in lines] == [
        str(photos / "flower.jpg"),
        f"{server}/china.jpg",
    ]  # …not the rest
    assert all(d["story"].startswith("This is a story about") and d["word_count"] > 0 for d in lines)
    assert result.stderr.strip().splitlines() == [
        f"Error: {bad}: not an image PIL can read (the server sent text/html)"
    ]


def test_same_seed_same_output(run, photos: Path) -> None:
    a = run(photos / "china.jpg", "--json", "--length", "short", "--seed", 7)
    b = run(photos / "china.jpg", "--json", "--length", "short", "--seed", 7)
    assert a.exit_code == b.exit_code == 0 and a.stdout == b.stdout


def test_run_folder(run, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = (
        photos / "china.jpg",
        photos / "missing.jpg",
        "--out",
        out,
        "--length",
        "short",
        "--json",
        "--cpu",
    )
    result = run(*argv)
    assert result.exit_code == 1
    saved = json.loads((out / "config.json").read_text())
    assert saved["command"] == "lab3 story" and saved["config"]["length"] == "short"
    assert not {"cpu", "out"} & set(saved["config"])  # where and how it ran: runtime, not the config
    assert saved["config"]["sources"] == [str(photos / "china.jpg"), str(photos / "missing.jpg")]
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert "story" in lines[0] and lines[1]["error"].endswith("missing.jpg: no such file")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stories"] == 1 and metrics["sources"] == 2 and metrics["images_per_s"] > 0
    assert metrics["device"] == "cpu"
    assert (out / "captions.png").stat().st_size > 0
    again = run(photos / "china.jpg", "--out", out)
    assert again.exit_code == 1
    assert again.output == f"Error: {out} already holds a run; choose another --out\n"  # no --resume here


def test_sources_that_all_fail_leave_no_run_folder(run, photos: Path, tmp_path: Path) -> None:
    """No source opened: each is an Error line, and nothing was loaded or written (no half-made run folder)."""
    out = tmp_path / "run"
    result = run(photos / "missing.jpg", photos / "page.html", "--out", out)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: {photos / 'missing.jpg'}: no such file",
        f"Error: {photos / 'page.html'}: not an image PIL can read",
    ]
    assert not out.exists()


def test_seed_is_set_before_the_models_load(run, models: Path, photos: Path, tmp_path: Path) -> None:
    """A checkpoint missing a weight gets it drawn at random on loading: --seed must fix that draw too."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    story_dir = tmp_path / "storyteller"
    shutil.copytree(models / "storyteller", story_dir)
    weights = load_file(story_dir / "model.safetensors")
    del weights["transformer.h.1.mlp.c_proj.weight"]  # (one whose draw changes the greedy story)
    save_file(weights, story_dir / "model.safetensors", metadata={"format": "pt"})
    outputs = []
    for state in (1, 2):  # whatever random state the process happens to be in
        torch.manual_seed(state)
        result = run(photos / "china.jpg", "--story-model", story_dir, "--json", "--greedy", "--seed", 5)
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.stdout)["story"])
    assert outputs[0] == outputs[1]


def test_timeout_is_one_error_line(run, photos: Path, server: str) -> None:
    url = f"{server}/trickle-body.jpg"  # a byte every 0.1 s: only a deadline for the whole download stops it
    result = run(url, photos / "china.jpg", "--timeout", "1", "--json", "--length", "short")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"Error: {url}: timed out after 1 s"]
    assert [json.loads(line)["source"] for line in result.stdout.splitlines()] == [str(photos / "china.jpg")]


def test_interactive(run, photos: Path) -> None:
    answers = f"{photos / 'china.jpg'}\nshort\n{photos / 'missing.jpg'}\nlong\n\n"
    result = run("-i", input=answers)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("Image path or URL (empty to quit)") == 3
    assert result.stdout.count("This is a story about") == 1
    assert "Error: " + str(photos / "missing.jpg") + ": no such file" in result.stderr


def test_interactive_ends_at_end_of_input(run) -> None:
    result = run("-i", input="")
    assert result.exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "no SOURCE given"),
        (("x.jpg", "--prompt-template", "About it."), "--prompt-template must contain {caption}"),
        (
            ("x.jpg", "--story-model", "/no/such/model"),
            "--story-model /no/such/model: cannot load (the folder /no/such/model does not exist)",
        ),
        (  # a missing local folder, not "Repo id must use alphanumeric chars…"
            ("x.jpg", "--caption-model", "./nope"),
            "--caption-model ./nope: cannot load (the folder ./nope does not exist)",
        ),
    ],
)
def test_usage_errors(run, args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {message}") and result.output.count("\n") == 1


def test_bad_option_value_is_a_click_usage_error(run) -> None:
    result = run("x.jpg", "--length", "epic")
    assert result.exit_code == 2
    assert "Error: Invalid value for '--length': 'epic' is not one of" in result.output


def test_serve_without_gradio_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else find_spec(name, *a)
    )
    result = CliRunner().invoke(group, ["serve", "--cpu"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: lab3 serve needs Gradio: pip install dla-lab3[web]"
