"""Text around the models: caption → clean phrase → prompt, and a generated story cut at a sentence end."""

from __future__ import annotations

import re

from dla_core.errors import DlaError

DEFAULT_TEMPLATE = "This is a story about {caption}. One day,"
FALLBACK_CAPTION = "a very special day"  # used when the caption is empty or junk
LENGTH_TOKENS = {"short": 100, "medium": 150, "long": 200}  # new tokens per story

# BLIP base's known artefacts ("arafed", "araffe", "arafly"…: from alt-text in its training data), and
# a leading "there is" / "this is" that would read badly after "a story about".
_ARTEFACT = re.compile(r"\bar+af+\w*\b", re.IGNORECASE)
_LEAD_IN = re.compile(r"^(there is|there are|this is|it is|an image of|a picture of|a photo of)\s+", re.I)
_WORD = re.compile(r"[A-Za-z]{2,}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # control characters other than tab and newline
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s|$)")
MAX_CAPTION_WORDS = 24


def story_tokens(length: str) -> int:
    """The new-token budget of a story ``length``: the one check of a length, wherever one comes from (the config,
    a call, a web request)."""
    if length not in LENGTH_TOKENS:
        raise DlaError(f"length must be one of {', '.join(LENGTH_TOKENS)}, got {length!r}")
    return LENGTH_TOKENS[length]


def check_template(template: str) -> str:
    """The prompt template must contain ``{caption}`` and nothing else to fill in."""
    if "{caption}" not in template:
        raise DlaError(f"--prompt-template must contain {{caption}}, got {template!r}")
    try:
        template.format(caption="x")
    except (KeyError, IndexError, ValueError) as e:
        raise DlaError(f"--prompt-template {template!r}: only {{caption}} can be filled in ({e})") from None
    return template


def clean_caption(caption: str) -> str:
    """A BLIP caption → a phrase that fits 'a story about …'; junk or empty → ``FALLBACK_CAPTION``."""
    text = _ARTEFACT.sub(" ", caption or "")
    text = " ".join(text.split()).strip(" .,;:!?-\"'")
    text = _LEAD_IN.sub("", text)
    words = text.split()
    real = [w for w in words if _WORD.search(w)]
    # junk: nothing word-like, or mostly stray tokens ("[UNK] # # 3 ,"), or one word repeated over and over
    if not real or len(real) < len(words) / 2 or (len(words) >= 4 and len(set(words)) <= len(words) / 3):
        return FALLBACK_CAPTION
    if not (len(words[0]) > 1 and words[0].isupper()):  # keep acronyms ("TV on a table")
        words[0] = words[0][0].lower() + words[0][1:]
    return " ".join(words[:MAX_CAPTION_WORDS])


def make_prompt(caption: str, template: str = DEFAULT_TEMPLATE) -> str:
    return template.format(caption=clean_caption(caption))


def end_at_sentence(story: str, keep: int = 0) -> str:
    """Cut ``story`` after its last sentence end that lies beyond the first ``keep`` characters (the prompt).

    A story with no sentence end after the prompt is returned whole rather than cut back into the prompt.
    """
    story = re.sub(r"[ \t]+", " ", _CONTROL.sub("", story)).strip()
    ends = [m.end() for m in _SENTENCE_END.finditer(story) if m.end() > keep]
    return story[: ends[-1]] if ends else story


def word_count(text: str) -> int:
    return len(text.split())
