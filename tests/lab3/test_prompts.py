"""Caption → prompt, and stories cut at a sentence end."""

from __future__ import annotations

import pytest

from dla_core.errors import DlaError
from lab3_story.prompts import FALLBACK_CAPTION, check_template, clean_caption, end_at_sentence, make_prompt


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("a dog running on the beach", "a dog running on the beach"),
        ("A Dog on a boat.", "a Dog on a boat"),
        ("arafed man sitting on a bench", "man sitting on a bench"),
        ("there is a cat on the roof", "a cat on the roof"),
        ("TV on a table", "TV on a table"),
        ("", FALLBACK_CAPTION),
        ("   ", FALLBACK_CAPTION),
        ("arafed", FALLBACK_CAPTION),
        ("# # 3 , . [UNK] 7", FALLBACK_CAPTION),
        ("the the the the the the", FALLBACK_CAPTION),
    ],
)
def test_clean_caption(caption: str, expected: str) -> None:
    assert clean_caption(caption) == expected


def test_prompt_from_junk_caption_is_still_a_sentence() -> None:
    assert make_prompt("") == f"This is a story about {FALLBACK_CAPTION}. One day,"
    assert make_prompt("a {caption} sign", "About {caption}:") == "About a {caption} sign:"  # no re-format


@pytest.mark.parametrize("template", ["no placeholder", "{caption} and {other}", "{caption} {0}", "{caption"])
def test_bad_templates(template: str) -> None:
    with pytest.raises(DlaError, match="prompt-template"):
        check_template(template)


def test_end_at_sentence() -> None:
    prompt = "This is a story about a dog. One day,"
    assert end_at_sentence(prompt + " he ran. Then he sat! And then", len(prompt)) == (
        prompt + " he ran. Then he sat!"
    )
    assert end_at_sentence(prompt + ' she said, "Hi." And', len(prompt)) == prompt + ' she said, "Hi."'
    # no sentence end after the prompt: keep it all rather than cutting back into the prompt
    assert end_at_sentence(prompt + " he ran and ran", len(prompt)) == prompt + " he ran and ran"
    assert end_at_sentence("A 3.5 m boat. Then", 0) == "A 3.5 m boat."
