"""`lab3 --help`, `lab3 story --help` and option errors answer without torch, transformers or PIL
(tests/startup.py); the package's public names still load, on first use."""

from __future__ import annotations

import pytest

import lab3_story
from lab3_story import config, generator, images
from lab3_story.cli import group
from tests.startup import check_help, check_option_error


@pytest.mark.parametrize("command", [None, *group.commands])
def test_help_imports_nothing_heavy(command, tmp_path):
    check_help("lab3", command, tmp_path)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["story", "a.jpg", "--length", "epic"], 2, "Error: Invalid value for '--length': 'epic' is not one of"),
        (["story", "--out", "x"], 1, "Error: no SOURCE given: pass image paths or http(s) URLs, or use --interactive"),
        (["story", "a.jpg", "--prompt-template", "Once", "--out", "x"], 1, "Error: --prompt-template must contain {caption}"),
        (["story", "a.jpg", "--temperature", "3", "--out", "x"], 2, "Error: Invalid value for '--temperature'"),
        (["serve", "--port", "70000"], 2, "Error: Invalid value for '--port'"),
        (["serve", "--prompt-template", "Once"], 1, "Error: --prompt-template must contain {caption}"),
    ],
)  # fmt: skip
def test_option_errors_import_nothing_heavy(args, code, message, tmp_path):
    check_option_error("lab3", args, code, message, tmp_path)


def test_the_package_names_load_on_first_use():
    assert lab3_story.ImageStoryGenerator is generator.ImageStoryGenerator
    assert lab3_story.StoryResult is generator.StoryResult
    assert lab3_story.StoryConfig is config.StoryConfig is generator.StoryConfig
    assert (
        lab3_story.load_image is images.load_image and lab3_story.ImageSourceError is images.ImageSourceError
    )
    assert set(lab3_story.__all__) <= set(dir(lab3_story))
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        lab3_story.Nope  # noqa: B018
