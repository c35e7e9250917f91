"""lab3: refused inputs leave no --out behind and load no model; the options' defaults are StoryConfig's."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import click
import pytest
import sklearn.datasets
from click.testing import CliRunner

from lab3_story.cli import group
from lab3_story.config import StoryConfig
from lab3_story.reproduce import RECIPE
from tests.refusals import Case, assert_refused, dependency_cases, environment_cases

PHOTO = str(Path(sklearn.datasets.__file__).parent / "images" / "china.jpg")
MODELS = {
    "caption_model": "owner/blip",
    "story_model": "owner/lm",
}  # hub names: nothing loads before the checks
MODEL_ARGS = ("--caption-model", MODELS["caption_model"], "--story-model", MODELS["story_model"])
CASES = [
    *environment_cases(group, {"reproduce": MODEL_ARGS}),
    *dependency_cases(RECIPE, MODELS),
    # local paths that must exist: a model folder, an image file
    Case(
        "missing-caption-model",
        ("story", PHOTO, "--caption-model", "{tmp}/none"),
        "--caption-model {tmp}/none",
    ),
    Case("missing-story-model", ("story", PHOTO, "--story-model", "./none/lm"), "--story-model ./none/lm"),
    Case("missing-image", ("story", "{tmp}/none.jpg"), "{tmp}/none.jpg: no such file"),
    # the storybook and the narration: files in an existing folder, with their own suffix; a narrator folder
    Case(
        "book-suffix", ("story", PHOTO, "--book", "{tmp}/book.pdf"), "--book {tmp}/book.pdf must end in .html"
    ),
    Case(
        "book-folder", ("story", PHOTO, "--book", "{tmp}/none/b.html"), "the folder {tmp}/none does not exist"
    ),
    Case("narrate-suffix", ("story", PHOTO, "--narrate", "{tmp}/story.mp3"), "must end in .wav"),
    Case(
        "missing-narrator-model",
        ("story", PHOTO, "--narrate", "{tmp}/s.wav", "--narrator-model", "{tmp}/none"),
        "--narrator-model {tmp}/none",
    ),
    Case(
        "reproduce-missing-story-model",
        ("reproduce", "--caption-model", "owner/blip", "--story-model", "{tmp}/none"),
        "--story-model {tmp}/none",
    ),
]


@pytest.fixture
def no_models(monkeypatch):
    """Loading the models fails the test: what is checked must be checked before."""
    from lab3_story import generator

    def load(*args, **kwargs):
        raise AssertionError("the models were loaded before the input was refused")

    monkeypatch.setattr(generator, "ImageStoryGenerator", load)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_refused_input_leaves_no_run_folder(case: Case, tmp_path, monkeypatch, no_models) -> None:
    assert_refused(group, case, tmp_path, monkeypatch)


@pytest.fixture
def refused_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: nobody listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/photo.jpg"


def test_a_refused_connection_fails_before_any_model_loads(tmp_path, no_models, refused_url) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(group, ["story", refused_url, "--out", str(out)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output.splitlines() == [
        f"Error: {refused_url}: cannot reach the server (Connection refused)"
    ]
    assert not out.exists()


def test_reproduce_fetches_its_images_before_making_its_folder(tmp_path, no_models, refused_url) -> None:
    out = tmp_path / "out"
    argv = ["reproduce", *MODEL_ARGS, "--image", PHOTO, "--image", refused_url, "--out", str(out)]
    result = CliRunner().invoke(group, argv)
    assert result.exit_code == 2, result.output
    assert f"Error: Invalid value for '--image': {refused_url}: cannot reach the server" in result.output
    assert not out.exists()


@pytest.mark.parametrize("command", ["story", "serve"])
def test_the_options_defaults_are_the_configs(command: str) -> None:
    ctx = click.Context(group.commands[command])
    defaults = {p.name: p.get_default(ctx) for p in group.commands[command].params}
    shared = [f for f in dataclasses.fields(StoryConfig) if f.name in defaults]
    names = {"length", "caption_model", "story_model", "prompt_template", "temperature", "timeout", "seed"}
    names |= {"style", "genre", "mood", "age", "language", "narrator_model", "voice"}
    assert names <= {f.name for f in shared}
    for f in shared:
        assert defaults[f.name] == f.default, f.name
    assert defaults["max_mb"] * 2**20 == StoryConfig.max_bytes
    assert defaults["greedy"] is (not StoryConfig.sample)


def test_a_model_that_cannot_load_leaves_no_run_folder(tmp_path) -> None:
    """The run folder comes after the models: an image opened, then the models failed, and nothing was written."""
    out = tmp_path / "out"
    result = CliRunner().invoke(group, ["story", PHOTO, "--caption-model", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: --caption-model {tmp_path}: cannot load"), lines
    assert not out.exists()
