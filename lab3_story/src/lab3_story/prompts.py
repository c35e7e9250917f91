"""Text around the models: caption → clean phrase → prompt, and a generated story cut at a sentence end."""

from __future__ import annotations

import re
from dataclasses import dataclass

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


def story_so_far(story: str, keep: int = 0) -> str:
    """What a reader is shown while ``story`` is still being written: the text up to its last *settled* sentence
    end beyond the first ``keep`` characters (one that text already follows), else the first ``keep``
    characters. It only grows as the story does, and ``end_at_sentence`` of the finished story never falls short
    of it: the text on screen does not shrink when the story ends."""
    story = re.sub(r"[ \t]+", " ", _CONTROL.sub("", story)).lstrip()
    ends = [m.end() for m in _SENTENCE_END.finditer(story) if m.end() > keep and m.end() < len(story)]
    return story[: ends[-1]] if ends else story[:keep].rstrip()


def word_count(text: str) -> int:
    return len(text.split())


#### The reader's controls ####
# Each control is one table: choice → the words it adds to the prompt ("any" adds none). The words go into one
# sentence put before the prompt template, so any template (with {caption}) takes them, and with every control
# on "any" the prompt is the template's alone. A small story model is not told what to do, it continues text:
# "Here is a happy adventure story for children aged 3 to 5, told in rhyme." sets the tone it continues in.


@dataclass(frozen=True)
class ReaderControl:
    name: str  # the StoryConfig field, the CLI option (--name) and the app's dropdown
    help: str
    phrases: dict[str, str]  # choice → words for the opening sentence; "any" → ""

    @property
    def choices(self) -> list[str]:
        return list(self.phrases)

    def check(self, choice: str) -> str:
        if choice not in self.phrases:
            raise DlaError(f"{self.name} must be one of {', '.join(self.phrases)}, got {choice!r}")
        return choice


GENRE = ReaderControl(
    "genre",
    "Kind of story.",
    {
        "any": "",
        "adventure": "adventure story",
        "fairy tale": "fairy tale",
        "mystery": "mystery story",
        "fable": "fable with a lesson",
        "bedtime": "bedtime story",
        "funny": "funny story",
    },
)
MOOD = ReaderControl(
    "mood",
    "How the story feels.",
    {
        "any": "",
        "happy": "happy",
        "calm": "calm",
        "exciting": "exciting",
        "silly": "silly",
        "spooky": "spooky",
    },
)
AGE = ReaderControl(
    "age",
    "The reader's age.",
    {
        "any": "",
        "3-5": "for children aged 3 to 5",
        "6-8": "for children aged 6 to 8",
        "9-12": "for readers aged 9 to 12",
    },
)
STYLE = ReaderControl(
    "style",
    "How it is told.",
    {
        "any": "",
        "simple": "told in short, simple sentences",
        "rhyming": "told in rhyme",
        "dialogue": "told with lots of talking",
        "descriptive": "full of colours, sounds and smells",
    },
)
READER_CONTROLS = (STYLE, GENRE, MOOD, AGE)  # in the order the CLI and the app show them

# Languages a story can be asked for; a story model writes one only where its model card lists it (else the
# story is in English, with a plain note): TinyStories was trained on English stories only.
LANGUAGES = {
    "English": "en",
    "French": "fr",
    "German": "de",
    "Spanish": "es",
    "Italian": "it",
    "Chinese": "zh",
}


def reader_sentence(*, style: str = "any", genre: str = "any", mood: str = "any", age: str = "any") -> str:
    """The opening sentence the reader's choices make ("" when all are "any")."""
    for control, choice in zip(READER_CONTROLS, (style, genre, mood, age), strict=True):
        control.check(choice)
    if (style, genre, mood, age) == ("any",) * 4:
        return ""
    noun = " ".join(w for w in (MOOD.phrases[mood], GENRE.phrases[genre] or "story") if w)
    article = "an" if noun[0] in "aeiou" else "a"
    sentence = f"Here is {article} {noun}"
    if age != "any":
        sentence += " " + AGE.phrases[age]
    if style != "any":
        sentence += ", " + STYLE.phrases[style]
    return sentence + "."


def reader_template(
    template: str = DEFAULT_TEMPLATE,
    *,
    style: str = "any",
    genre: str = "any",
    mood: str = "any",
    age: str = "any",
    language: str = "English",
) -> str:
    """``template`` with the reader's opening sentence (and, for a language other than English, a line naming it)
    before it; still a template with ``{caption}``."""
    if language not in LANGUAGES:
        raise DlaError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    lead = reader_sentence(style=style, genre=genre, mood=mood, age=age)
    if language != "English":
        lead = f"{lead} It is written in {language}.".strip()
    return f"{lead} {template}" if lead else template


def model_languages(model: str) -> set[str]:
    """The languages (ISO codes) a model card lists in its front matter (``language: en`` or a list), from the
    model's folder or the Hugging Face cache; ``{"en"}`` when there is no card to read (nothing is downloaded)."""
    from pathlib import Path

    card = Path(model) / "README.md"
    if not card.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "README.md")
        except Exception:  # not a repo id, no cache: nothing to read
            cached = None
        card = Path(cached) if isinstance(cached, str) else card
    if not card.is_file():
        return {"en"}
    text = card.read_text(errors="replace")
    front = text.split("---")[1] if text.startswith("---") and text.count("---") >= 2 else ""
    found = re.search(r"^language:[ \t]*(.*)$((?:\n[ \t]*-[ \t]*.*)*)", front, re.MULTILINE)
    if not found:
        return {"en"}
    items = found.group(1).strip("[] ").split(",") + found.group(2).split("\n")
    return {c.strip(" -'\"").lower() for c in items if c.strip(" -'\"")} or {"en"}


def language_note(language: str, model: str) -> str | None:
    """None when ``model`` can write ``language``; else the plain note the reader gets (the story is English)."""
    if language == "English" or LANGUAGES[language] in model_languages(model):
        return None
    return f"the story model ({model}) writes English only, so the story is in English, not {language}"
