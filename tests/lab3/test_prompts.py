"""Caption → prompt, and stories cut at a sentence end."""

from __future__ import annotations

import pytest

from dla_core.errors import DlaError
from lab3_story.prompts import (
    FALLBACK_CAPTION,
    check_template,
    clean_caption,
    end_at_sentence,
    make_prompt,
    word_count,
)


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


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("Two dogs on a beach", "two dogs on a beach"),  # only the first letter is lowered
        ("X-ray of a hand.", "x-ray of a hand"),  # only punctuation and quotes are stripped from the ends
        ('"a cat on a mat."', "a cat on a mat"),
        ("the the the the", FALLBACK_CAPTION),  # four words, one distinct: a repetition
        ("dog cat dog cat dog cat", FALLBACK_CAPTION),  # six words, two distinct (a third): a repetition
        ("dog cat dog cat dog cow", "dog cat dog cat dog cow"),  # three distinct of six: a caption
        ("the dog # #", "the dog # #"),  # half the tokens word-like: still a caption
        ("the dog # # # #", FALLBACK_CAPTION),  # a third word-like (under half): junk
        (None, FALLBACK_CAPTION),
    ],
)
def test_clean_caption_boundaries(caption: str, expected: str) -> None:
    assert clean_caption(caption) == expected


def test_long_caption_is_cut_to_24_words() -> None:
    words = [f"word{chr(ord('a') + i)}" for i in range(30)]
    assert clean_caption(" ".join(words)) == " ".join(words[:24])


def test_bad_template_messages() -> None:
    with pytest.raises(DlaError) as e:
        check_template("no placeholder")
    assert e.value.message == "--prompt-template must contain {caption}, got 'no placeholder'"
    with pytest.raises(DlaError) as e:
        check_template("{caption} and {other}")
    assert e.value.message == (
        "--prompt-template '{caption} and {other}': only {caption} can be filled in ('other')"
    )
    assert check_template("About {caption}:") == "About {caption}:"


def test_end_at_sentence_keeps_a_prompt_that_ends_a_sentence() -> None:
    """A sentence end exactly at the prompt's end is the prompt's own, not one the model wrote."""
    prompt = "This is a story about a dog."
    assert end_at_sentence(prompt + " he ran and ran", len(prompt)) == prompt + " he ran and ran"
    assert end_at_sentence(prompt + " He ran. And", len(prompt)) == prompt + " He ran."


def test_end_at_sentence_drops_control_characters_and_squeezes_spaces() -> None:
    assert end_at_sentence("  A\x07 dog \t ran.\x00 Then  ") == "A dog ran."
    assert end_at_sentence(". Then") == "."  # keep defaults to 0: every sentence end counts


def test_word_count() -> None:
    assert word_count(" one  two\tthree\nfour ") == 4
    assert word_count("") == 0
