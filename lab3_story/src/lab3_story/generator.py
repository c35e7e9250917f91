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
story may repeat the caption's words.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from dla_core.errors import DlaError
from lab3_story.config import DEFAULT_CAPTION_MODEL, DEFAULT_STORY_MODEL, StoryConfig  # noqa: F401 (re-exported)
from lab3_story.images import FetchLimits, ImageSourceError, Opened, open_sources
from lab3_story.prompts import end_at_sentence, make_prompt, story_tokens

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
        self._lock = threading.Lock()  # stream(): one generation at a time

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
        """Continue each prompt (batched, left-padded); each story ends at its last full sentence."""
        cfg = self.config
        new_tokens = story_tokens(length or cfg.length)
        stories: list[str] = []
        t0 = time.perf_counter()
        for start in range(0, len(prompts), cfg.batch_size):
            batch = prompts[start : start + cfg.batch_size]
            enc = self.tokenizer(batch, return_tensors="pt", padding=True).to(
                self.device
            )  # (B, T) left-padded
            prompt_len = enc["input_ids"].shape[1]
            out = self.storyteller.generate(
                **self._generate_args(enc, new_tokens, cfg.sample, cfg.temperature)
            )  # (B, T + new)
            texts = self.tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)
            stories += [end_at_sentence(p + t, keep=len(p)) for p, t in zip(batch, texts, strict=True)]
        self.seconds["story"] += time.perf_counter() - t0
        return stories

    def _generate_args(self, enc, new_tokens: int, sample: bool, temperature: float) -> dict[str, Any]:
        """``generate``'s arguments for a (left-padded) batch: the batched and the streamed path share them."""
        from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

        cfg = self.config
        processors = LogitsProcessorList()
        if cfg.repetition_penalty != 1.0:  # ignore the (padded) prompt: it may repeat the caption
            processors.append(
                RepetitionPenaltyLogitsProcessor(cfg.repetition_penalty, enc["input_ids"].shape[1])
            )
        sampling = dict(do_sample=True, temperature=temperature, top_p=cfg.top_p, top_k=0)
        return dict(
            **enc,
            max_new_tokens=new_tokens,
            logits_processor=processors,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            **(sampling if sample else dict(do_sample=False)),
        )

    #### One image, streamed ####

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
    ) -> Iterator[StoryResult]:
        """Caption one image, then write its story token by token: a ``StoryResult`` for the caption (story =
        the prompt), one per new piece of text, and a last one whose story is cut at its last full sentence,
        with its word count. ``temperature``, ``sample``, ``seed`` and the prompt ``template`` default to the
        config's (``seed=None``: no seeding, a new story each time).

        The models serve one caption or one story at a time (a lock): concurrent callers wait, and a seed
        replays the same draws. Closing the iterator early stops the generation. With the same settings the
        last story equals ``write``'s (tested)."""
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        cfg = self.config
        new_tokens = story_tokens(length or cfg.length)
        temperature = cfg.temperature if temperature is None else temperature
        sample = cfg.sample if sample is None else sample
        stop = threading.Event()

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
                return torch.full(
                    (input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device
                )

        seed = cfg.seed if seed == "config" else seed
        with self._lock:  # greedy captions draw nothing: the seed is set just before the story's generation
            (caption,) = self.caption([image])
        prompt = make_prompt(caption, template or cfg.template)
        yield StoryResult(source, caption=caption, prompt=prompt, story=prompt)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        enc = self.tokenizer([prompt], return_tensors="pt").to(self.device)
        args = self._generate_args(enc, new_tokens, sample, temperature)
        failed: list[BaseException] = []

        @torch.inference_mode()
        def run() -> None:
            # the worker holds the lock, not the caller's generator: a caller that stops reading without
            # closing it cannot keep the models from the next request past the length budget
            try:
                with self._lock:
                    if seed is not None:
                        from dla_core.seeding import seed_everything

                        seed_everything(seed)
                    self.storyteller.generate(
                        **args, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Stop()])
                    )
            except BaseException as e:  # handed to the caller's thread below
                failed.append(e)
                streamer.end()

        t0 = time.perf_counter()
        worker = threading.Thread(target=run, name="lab3-stream", daemon=True)
        worker.start()
        text = ""
        try:
            for piece in streamer:
                if piece:
                    text += piece
                    yield StoryResult(source, caption=caption, prompt=prompt, story=prompt + text)
        finally:  # also when the caller stops early (GeneratorExit): end the generation first
            stop.set()
            worker.join()
            self.seconds["story"] += time.perf_counter() - t0
        if failed:
            raise failed[0]
        story = end_at_sentence(prompt + text, keep=len(prompt))
        yield StoryResult(source, caption=caption, prompt=prompt, story=story, word_count=len(story.split()))

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
