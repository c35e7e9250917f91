"""lab3's settings, without heavy imports: the CLI takes its options' defaults from ``StoryConfig``'s fields and
builds the config at start-up (no torch, transformers or PIL there). ``generator.py`` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass

from dla_core.errors import DlaError
from dla_core.hub import missing_folder
from lab3_story.prompts import (
    DEFAULT_TEMPLATE,
    READER_CONTROLS,
    check_template,
    reader_template,
    story_tokens,
)

DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-base"
DEFAULT_STORY_MODEL = "roneneldan/TinyStories-33M"
DEFAULT_NARRATOR_MODEL = "facebook/mms-tts-eng"  # VITS (MMS-TTS), English, one voice


@dataclass(frozen=True)
class StoryConfig:
    caption_model: str = DEFAULT_CAPTION_MODEL
    story_model: str = DEFAULT_STORY_MODEL
    length: str = "medium"  # default for calls that do not say: short / medium / long
    prompt_template: str = DEFAULT_TEMPLATE
    temperature: float = 0.65
    top_p: float = 0.9
    repetition_penalty: float = 1.2  # applied to generated tokens only, not to the prompt
    sample: bool = True  # False: greedy decoding (deterministic without a seed)
    caption_tokens: int = 30
    batch_size: int = 8  # images per batch, for both models
    seed: int | None = 0  # each sampled story draws from its own generator seeded with it; None: a fresh seed
    precision: str = "no"  # fp16 / bf16 load the models in half precision (fp16 only on a GPU)
    timeout: float = 15.0  # seconds for each URL download as a whole (a deadline, not per read)
    max_bytes: int = 20 * 1024 * 1024  # largest image download
    # the reader's controls (prompts.READER_CONTROLS): words put before the template; "any" adds none
    style: str = "any"
    genre: str = "any"
    mood: str = "any"
    age: str = "any"
    language: str = "English"  # other languages only where the story model's card lists them (prompts.py)
    narrator_model: str = DEFAULT_NARRATOR_MODEL  # text-to-speech (VITS family), for --narrate and the app
    voice: int = 0  # speaker id, for narrator models with several speakers

    @property
    def template(self) -> str:
        """The prompt template with the reader's controls in it: what the story model is given."""
        return reader_template(
            self.prompt_template,
            style=self.style,
            genre=self.genre,
            mood=self.mood,
            age=self.age,
            language=self.language,
        )

    def __post_init__(self) -> None:
        story_tokens(self.length)
        check_template(self.prompt_template)
        for control in READER_CONTROLS:
            control.check(getattr(self, control.name))
        self.template  # noqa: B018 (the language's check)
        if self.voice < 0:
            raise DlaError(f"voice must be 0 or more, got {self.voice}")
        if self.batch_size < 1:
            raise DlaError(f"batch size must be at least 1, got {self.batch_size}")

    def check(self) -> None:
        """The model folders that must exist (a hub name is left to the loader): refused before any source is
        opened or model loaded (``dla_core.config.from_options`` calls this; so does the generator)."""
        for option, name in (
            ("--caption-model", self.caption_model),
            ("--story-model", self.story_model),
            ("--narrator-model", self.narrator_model),
        ):
            if missing_folder(name):  # not "Repo id must be in the form …": the folder meant is not there
                raise DlaError(f"{option} {name}: cannot load (the folder {name} does not exist)")
