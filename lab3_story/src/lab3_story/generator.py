"""Image → BLIP caption → TinyStories story, batched, with both models loaded once.

    from lab3_story import ImageStoryGenerator
    gen = ImageStoryGenerator()                       # BLIP base + TinyStories-33M from the Hub / HF cache
    gen.generate_from_image("photo.jpg", length="short")
    # {'caption': 'a dog on the beach', 'story': 'This is a story about a dog on the beach. One day, …',
    #  'word_count': 87}
    for r in gen.stories(["a.jpg", "https://example.com/b.png"]):   # batches of config.batch_size
        print(r.source, r.error or r.story)

Captions are generated unconditionally (no text prompt): BLIP's ``generate`` overwrites the first prompt
column and drops the last one, which mis-conditions a batch of prompts of unequal length, while the
unconditional start token batches cleanly. Stories are batched with left padding and an attention mask, so a
greedy batch gives exactly the unbatched stories (tested); the repetition penalty skips the prompt, so the
story may repeat the caption's words. A sampled story draws from its own generator, seeded with its seed
(``decoding.py``): it is the same story alone, in any batch, and through ``lab3 serve`` (``scheduler.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from dla_core.errors import DlaError
from lab3_story.config import DEFAULT_CAPTION_MODEL, DEFAULT_STORY_MODEL, StoryConfig  # noqa: F401 (re-exported)
from lab3_story.decoding import Decoding, OnTokens, RowSampler, RowStops
from lab3_story.images import FetchLimits, ImageSourceError, Opened, open_sources
from lab3_story.prompts import end_at_sentence, make_prompt, story_tokens

if TYPE_CHECKING:
    from lab3_story.scheduler import StoryScheduler, StoryStream

log = logging.getLogger(__name__)

THUMBNAIL = 480  # pixels; thumbnails are kept for the run folder's picture and the storybook


@dataclass
class StoryResult:
    source: str
    caption: str = ""
    prompt: str = ""
    story: str = ""
    word_count: int = 0
    error: str | None = None  # the one-line reason this source has no story
    thumbnail: Image.Image | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        if self.error:
            return {"source": self.source, "error": self.error}
        return {
            "source": self.source,
            "caption": self.caption,
            "story": self.story,
            "word_count": self.word_count,
        }


def pick_device_dtype(precision: str, cpu: bool) -> tuple[torch.device, torch.dtype]:
    from dla_core.engine import make_accelerator

    device = make_accelerator(precision, cpu).device  # warns when fp16 is asked for on the CPU
    if precision == "fp16" and device.type != "cpu":
        return device, torch.float16
    if precision == "bf16":
        return device, torch.bfloat16
    return device, torch.float32


def _model_type(name: str, what: str) -> str:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name).model_type
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DlaError(f"{what} {name}: cannot load ({first})") from None


class ImageStoryGenerator:
    """Both models, loaded once; ``stories`` for many sources, ``generate_from_image`` for one.

    ``cpu`` keeps them on the CPU even with a GPU present: where to run, not part of the config (a run folder's
    ``config.json`` holds the config)."""

    def __init__(self, config: StoryConfig | None = None, *, cpu: bool = False, **options: Any):
        from transformers import (
            AutoModelForCausalLM,
            AutoTokenizer,
            BlipForConditionalGeneration,
            BlipProcessor,
        )

        self.config = cfg = dataclasses.replace(config or StoryConfig(), **options)
        cfg.check()  # the model folders (the CLI's config was checked before any source was opened)
        self.limits = FetchLimits(timeout=cfg.timeout, max_bytes=cfg.max_bytes)
        self.device, self.dtype = pick_device_dtype(cfg.precision, cpu)
        self.seconds = {"caption": 0.0, "story": 0.0, "load": 0.0}
        self._models = threading.RLock()  # one batch at a time on the models (the scheduler's, or a call's)
        self._scheduler: StoryScheduler | None = None
        self._starting = threading.Lock()

        if (kind := _model_type(cfg.caption_model, "--caption-model")) != "blip":
            raise DlaError(f"--caption-model {cfg.caption_model} is a '{kind}' model, not BLIP")
        if (kind := _model_type(cfg.story_model, "--story-model")) == "blip":
            raise DlaError(f"--story-model {cfg.story_model} is a BLIP model, not a language model")
        t0 = time.perf_counter()
        try:
            self.processor = BlipProcessor.from_pretrained(cfg.caption_model)
            self.captioner = BlipForConditionalGeneration.from_pretrained(cfg.caption_model, dtype=self.dtype)
            self.tokenizer = AutoTokenizer.from_pretrained(cfg.story_model)
            self.storyteller = AutoModelForCausalLM.from_pretrained(cfg.story_model, dtype=self.dtype)
        except (OSError, ValueError) as e:
            raise DlaError(f"cannot load the models: {str(e).strip().splitlines()[0]}") from None
        self.captioner.to(self.device).eval()
        self.storyteller.to(self.device).eval()
        # GPT-Neo has no pad token: pad with EOS on the left, so every prompt ends where generation starts
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        log.info("models loaded in %.1fs on %s (%s)", time.perf_counter() - t0, self.device, self.dtype)

    #### The two models ####

    @torch.inference_mode()
    def caption(self, images: list[Image.Image]) -> list[str]:
        """Unconditional greedy captions, one batch per ``batch_size`` images."""
        captions: list[str] = []
        t0 = time.perf_counter()
        for start in range(0, len(images), self.config.batch_size):
            batch = images[start : start + self.config.batch_size]
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
            with self._models:
                ids = self.captioner.generate(
                    pixel_values=pixels.to(self.device, self.dtype),
                    max_new_tokens=self.config.caption_tokens,
                    do_sample=False,
                    num_beams=1,
                )  # (B, T): [DEC] caption [SEP] [PAD]…
            captions += [c.strip() for c in self.processor.batch_decode(ids, skip_special_tokens=True)]
        self.seconds["caption"] += time.perf_counter() - t0
        return captions

    @torch.inference_mode()
    def write(self, prompts: list[str], length: str | None = None) -> list[str]:
        """Continue each prompt (batched, left-padded); each story ends at its last full sentence. Every story
        is written with the config's settings and seed, so it does not depend on its batch (``decoding.py``)."""
        cfg = self.config
        decoding = Decoding(story_tokens(length or cfg.length), cfg.sample, cfg.temperature, cfg.seed)
        stories: list[str] = []
        for start in range(0, len(prompts), cfg.batch_size):
            batch = prompts[start : start + cfg.batch_size]
            texts = self.decode(batch, [decoding] * len(batch))
            stories += [end_at_sentence(p + t, keep=len(p)) for p, t in zip(batch, texts, strict=True)]
        return stories

    @torch.inference_mode()
    def decode(
        self, prompts: Sequence[str], decodings: Sequence[Decoding], on_tokens: OnTokens | None = None
    ) -> list[str]:
        """One batch (left-padded): each prompt's continuation, uncut, written under its own ``Decoding``.
        ``on_tokens(row, tokens, done)`` sees each row's new tokens as they come; False stops that row."""
        from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor, StoppingCriteriaList

        cfg = self.config
        t0 = time.perf_counter()
        enc = self.tokenizer(list(prompts), return_tensors="pt", padding=True).to(self.device)  # (B, T)
        prompt_len = enc["input_ids"].shape[1]
        processors = LogitsProcessorList()
        if cfg.repetition_penalty != 1.0:  # ignore the (padded) prompt: it may repeat the caption
            processors.append(RepetitionPenaltyLogitsProcessor(cfg.repetition_penalty, prompt_len))
        processors.append(RowSampler(decodings, cfg.top_p, self.device))
        budgets = [d.new_tokens for d in decodings]
        stops = RowStops(budgets, self.tokenizer.eos_token_id, on_tokens)
        with self._models:
            self.storyteller.generate(
                **enc,
                max_new_tokens=max(budgets),
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([stops]),
                do_sample=False,  # RowSampler draws; generate takes its pick (the argmax)
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )  # the tokens: stops.tokens, each row up to its own stop
        texts = [self.tokenizer.decode(tokens, skip_special_tokens=True) for tokens in stops.tokens]
        self.seconds["story"] += time.perf_counter() - t0
        return texts

    #### One image, streamed ####

    @property
    def scheduler(self) -> StoryScheduler:
        """The micro-batching scheduler that ``stream`` hands requests to (started at the first one)."""
        from lab3_story.scheduler import StoryScheduler

        with self._starting:
            if self._scheduler is None:
                self._scheduler = StoryScheduler(self)
            return self._scheduler

    def stream(
        self,
        image: Image.Image,
        length: str | None = None,
        *,
        source: str = "image",
        temperature: float | None = None,
        sample: bool | None = None,
        seed: int | str | None = "config",
        template: str | None = None,
    ) -> StoryStream:
        """Caption one image, then write its story token by token: a ``StoryResult`` for the caption (story =
        the prompt), then ones with the story so far as its text comes, and a last one whose story is cut at its
        last full sentence, with its word count. ``temperature``, ``sample``, ``seed`` and the prompt
        ``template`` default to the config's (``seed=None``: a new story each time).

        Requests from many threads (clients) are written together, a request that comes later joining the
        running batch at its next token (``scheduler.py``, ``running_batch.py``); a story is the same as alone,
        and equals ``write``'s with the same settings (tested). Closing the stream
        early (or dropping it) cancels the request and frees its row."""
        cfg = self.config
        decoding = Decoding(
            story_tokens(length or cfg.length),
            sample=cfg.sample if sample is None else sample,
            temperature=cfg.temperature if temperature is None else temperature,
            seed=cfg.seed if seed == "config" else seed,
        )
        return self.scheduler.submit(image, decoding, source=source, template=template or cfg.template)

    #### Sources → results ####

    def stories(self, sources: Iterable[str | Path], length: str | None = None) -> Iterator[StoryResult]:
        """One ``StoryResult`` per source, in order, a batch at a time; a bad source gets ``.error``."""
        length = length or self.config.length
        story_tokens(length)
        self.reseed()  # each call replays the same draws (the CLI also seeds first)
        t0 = time.perf_counter()
        for batch in open_sources(sources, self.limits, self.config.batch_size):
            self.seconds["load"] += time.perf_counter() - t0
            yield from self.tell(batch, length)
            t0 = time.perf_counter()

    def reseed(self) -> None:
        """Seed Python, NumPy and torch with the config's seed (None: leave them be)."""
        if self.config.seed is not None:
            from dla_core.seeding import seed_everything

            seed_everything(self.config.seed)

    def tell(self, opened: Sequence[Opened], length: str | None = None) -> list[StoryResult]:
        """The stories of a batch of opened sources (``images.open_sources``), in order; a source that did not
        open keeps its error."""
        results = [StoryResult(o.source, error=o.error) for o in opened]
        good = [(r, o.image) for r, o in zip(results, opened, strict=True) if o.image is not None]
        if good:
            captions = self.caption([img for _, img in good])
            prompts = [make_prompt(c, self.config.template) for c in captions]
            stories = self.write(prompts, length)
            for (r, img), cap, prompt, story in zip(good, captions, prompts, stories, strict=True):
                r.caption, r.prompt, r.story = cap, prompt, story
                r.word_count = len(story.split())
                img.thumbnail((THUMBNAIL, THUMBNAIL))
                r.thumbnail = img
        return results

    def generate_from_image(self, source: str | Path, length: str | None = None) -> dict[str, Any]:
        """One image (path or http(s) URL) → ``{"caption", "story", "word_count"}``.

        Raises ``ImageSourceError`` (a ``DlaError``) when the source cannot be read as an image.
        """
        (result,) = self.stories([source], length)
        if result.error:
            raise ImageSourceError(result.error)
        return {"caption": result.caption, "story": result.story, "word_count": result.word_count}
