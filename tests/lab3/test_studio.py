"""The story studio's pieces without a browser: the reader's controls in the prompt, the story's language, the
narration (a WAV from a tiny random VITS model), the storybook (self-contained HTML), the text shown while a
story is written, and `lab3 story --narrate --book` end to end."""

from __future__ import annotations

import itertools
import re
import wave
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dla_core.errors import DlaError
from lab3_story.book import Page, book_settings, storybook
from lab3_story.cli import group
from lab3_story.config import StoryConfig
from lab3_story.prompts import (
    DEFAULT_TEMPLATE,
    READER_CONTROLS,
    end_at_sentence,
    language_note,
    model_languages,
    reader_template,
    story_so_far,
)

#### The reader's controls ####


@pytest.mark.parametrize("control", READER_CONTROLS, ids=lambda c: c.name)
def test_each_choice_of_each_control_reaches_the_prompt(control) -> None:
    prompts = set()
    for choice, phrase in control.phrases.items():
        template = StoryConfig(**{control.name: choice}).template  # what the generator is given
        assert template.endswith(DEFAULT_TEMPLATE) and "{caption}" in template
        assert phrase in template
        prompts.add(template)
    assert StoryConfig(**{control.name: "any"}).template == DEFAULT_TEMPLATE  # "any" adds nothing
    assert len(prompts) == len(control.phrases)  # every choice makes its own prompt


def test_the_controls_together_make_one_sentence() -> None:
    template = reader_template(style="rhyming", genre="adventure", mood="exciting", age="3-5")
    assert template == (
        "Here is an exciting adventure story for children aged 3 to 5, told in rhyme. " + DEFAULT_TEMPLATE
    )
    with pytest.raises(DlaError, match="genre must be one of any, adventure"):
        StoryConfig(genre="epic")


def test_a_language_where_the_model_card_lists_it(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("---\nlicense: mit\nlanguage:\n- en\n- fr\n---\n# a model\n")
    assert model_languages(str(tmp_path)) == {"en", "fr"}
    assert language_note("French", str(tmp_path)) is None
    assert "It is written in French." in StoryConfig(language="French").template
    assert "written in" not in StoryConfig().template
    (tmp_path / "README.md").write_text("---\nlanguage: [en, de]\n---\n")
    assert model_languages(str(tmp_path)) == {"en", "de"}
    note = language_note("French", str(tmp_path))  # the card does not list it
    assert note and "English only" in note and "not French" in note
    (tmp_path / "README.md").unlink()
    assert model_languages(str(tmp_path)) == {"en"}  # no card: English


#### What the page shows while a story is written ####


def test_the_story_shown_only_grows_and_the_end_is_never_shorter() -> None:
    prompt = "This is a story about a dog. One day,"
    text = prompt + ' the dog ran to Mr. Brown. He said, "Hi!" They played. The sun was hot and'
    shown = [story_so_far(text[:n], len(prompt)) for n in range(len(prompt), len(text) + 1)]
    final = end_at_sentence(text, keep=len(prompt))
    assert shown[0] == prompt
    assert all(b.startswith(a) for a, b in itertools.pairwise([*shown, final]))
    assert final.endswith("They played.") and shown[-1] == final
    # a sentence end the next token may undo ("Mr." + "s") is not shown until text follows it
    assert story_so_far(prompt + " the dog saw Mr.", len(prompt)) == prompt


#### Narration ####


def test_narration_is_a_wav_of_every_story_in_the_chosen_voice(narrator_model: Path, tmp_path: Path) -> None:
    from lab3_story.narration import STORY_PAUSE, Narrator, pieces, write_wav

    narrator = Narrator(str(narrator_model))
    assert narrator.voices == [0, 1]
    stories = ["Once upon a time, there was a dog. The dog ran.", "The end."]
    audio, rate = narrator.read_aloud(stories, voice=1, seed=3)
    again, _ = narrator.read_aloud(stories, voice=1, seed=3)
    other, _ = narrator.read_aloud(stories, voice=0, seed=3)
    assert rate == 8000 and audio.dtype == np.float32 and np.array_equal(audio, again)  # seeded: the same
    assert not (audio.shape == other.shape and np.allclose(audio, other))  # another voice: other audio
    one, _ = narrator.read_aloud(stories[:1], voice=1, seed=3)
    pause = int(STORY_PAUSE * rate)
    assert np.array_equal(audio[: len(one)], one) and len(audio) > len(one) + pause  # both stories, in turn
    assert not audio[len(one) : len(one) + pause].any()  # with a silence between them
    path = write_wav(tmp_path / "story.wav", audio, rate)
    with wave.open(str(path)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, rate)
        assert f.getnframes() == len(audio)
    assert pieces("One. Two! Three?", limit=8) == ["One.", "Two!", "Three?"]
    assert pieces("One. Two! Three?") == ["One. Two! Three?"]
    with pytest.raises(DlaError, match=r"--voice 2: the narrator .* has voices 0 to 1"):
        narrator.read_aloud(stories, voice=2)


def test_a_narrator_that_needs_the_extra_names_it(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    from lab3_story import narration
    from lab3_story.random_models import save_random_narrator

    folder = save_random_narrator(tmp_path / "uroman")
    config = folder / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"is_uroman": false', '"is_uroman": true'))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uroman" else real(name, *a)
    )
    with pytest.raises(DlaError, match=r"needs uroman: pip install dla-lab3\[narrate\]"):
        narration.Narrator(str(folder))


#### The storybook ####


def test_the_storybook_is_self_contained_and_prints(photos: Path) -> None:
    from PIL import Image

    cfg = StoryConfig(genre="fable", caption_model="blip-folder", story_model="lm-folder")
    pages = [
        Page(
            "https://example.com/a.jpg",
            "a temple <on> a hill",
            "Once & upon a time.",
            Image.open(photos / "china.jpg"),
        ),
        Page("flower.jpg", "a flower", "The end.", None),
    ]
    page = storybook(pages, book_settings(cfg, narrator_model="tts-folder"))
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, re.IGNORECASE)
    assert refs and all(r.startswith("data:image/jpeg;base64,") for r in refs), refs  # nothing fetched
    assert not re.search(
        r"https?://", page.replace("From https://example.com/a.jpg", "")
    )  # the source is text
    assert "@import" not in page and "url(" not in page
    assert "a temple &lt;on&gt; a hill" in page and "Once &amp; upon a time." in page
    for name in ("blip-folder", "lm-folder", "tts-folder", "fable"):
        assert f"<td>{name}</td>" in page
    assert "@media print" in page and "break-after: page" in page
    assert page.count("<article>") == 2 and page.count("<img ") == 1


#### `lab3 story --narrate --book` ####


def test_story_with_controls_narration_and_a_book(
    models: Path, narrator_model: Path, photos, tmp_path
) -> None:
    wav, book = tmp_path / "story.wav", tmp_path / "book.html"
    argv = ["story", photos / "china.jpg", photos / "flower.jpg", "--length", "short", "--json"]
    argv += ["--caption-model", models / "captioner", "--story-model", models / "storyteller"]
    argv += ["--narrator-model", narrator_model, "--voice", "1", "--narrate", wav, "--book", book]
    argv += ["--genre", "adventure", "--mood", "happy", "--age", "3-5", "--style", "rhyming"]
    argv += ["--language", "German", "--out", tmp_path / "run"]
    result = CliRunner().invoke(group, list(map(str, argv)))
    assert result.exit_code == 0, result.output
    assert (
        "Note: the story model" in result.stderr and "not German" in result.stderr
    )  # the tiny model: English
    import json

    stories = [json.loads(line)["story"] for line in result.stdout.splitlines()]
    lead = "Here is a happy adventure story for children aged 3 to 5, told in rhyme. This is a story about"
    assert len(stories) == 2 and all(s.startswith(lead) for s in stories)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert (saved["genre"], saved["voice"], saved["language"]) == ("adventure", 1, "English")
    with wave.open(str(wav)) as f:
        assert f.getframerate() == 8000 and f.getnframes() > 8000  # both stories, read aloud
    page = book.read_text()
    assert page.count("<article>") == 2 and page.count('src="data:image/jpeg;base64,') == 2
    assert all(s.split(". ")[1] in page for s in stories) and "narrator_model" in page


def test_a_voice_the_narrator_lacks_writes_nothing(models, narrator_model, photos, tmp_path) -> None:
    wav, book, out = tmp_path / "s.wav", tmp_path / "b.html", tmp_path / "run"
    argv = ["story", photos / "china.jpg", "--caption-model", models / "captioner"]
    argv += ["--story-model", models / "storyteller", "--narrator-model", narrator_model]
    argv += ["--voice", "5", "--narrate", wav, "--book", book, "--out", out]
    result = CliRunner().invoke(group, list(map(str, argv)))
    assert result.exit_code == 1, result.output
    assert (
        result.output.splitlines()[-1] == f"Error: --voice 5: the narrator {narrator_model} has voices 0 to 1"
    )
    assert not wav.exists() and not book.exists() and not out.exists()
