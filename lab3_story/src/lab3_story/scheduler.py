"""Micro-batching across clients: stories asked for within a few milliseconds of each other are written together.

    stream = generator.scheduler.submit(image, Decoding(100, seed=3), source="a.jpg")  # from any thread
    for update in stream:            # StoryResult: the caption, the story as it grows, the story cut
        ...
    stream.close()                   # or drop it: the request is cancelled, its row stops

One worker thread owns the models. It takes the first waiting request, gathers those that arrive within
``window`` seconds more (up to ``batch_size``), captions their images in one batch (those that come meanwhile
are captioned and join it) and writes their stories in one ``generate`` in which every row keeps its own
length, temperature, greedy or sampled draw and seed (``decoding.py``): requests are never grouped by settings, and a story is the same as written alone. Each
request has its own queue of events, filled from its own row only; its reader takes what has come since its
last look as one update, so a slow reader gets fewer, longer updates and never holds the batch back. A
cancelled request's row stops at the next step; a batch ends when all its rows are done or cancelled, and the
requests that came in meanwhile form the next batch (rows are not refilled mid-batch).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from lab3_story.decoding import Decoding
from lab3_story.generator import StoryResult
from lab3_story.prompts import end_at_sentence, make_prompt

if TYPE_CHECKING:
    from lab3_story.generator import ImageStoryGenerator

log = logging.getLogger(__name__)

WINDOW = 0.01  # seconds a batch waits, after its first request, for others to join


@dataclass(frozen=True)
class Batch:
    """What one batch was: its rows and the tokens of its longest story (the decoding steps it took)."""

    rows: int
    tokens: int


@dataclass
class _Request:
    image: Image.Image
    decoding: Decoding
    source: str
    template: str  # the prompt template, the reader's choices included
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # (kind, value), kind: see _updates
    cancelled: threading.Event = field(default_factory=threading.Event)


class StoryStream:
    """One request's updates (``StoryResult``), as ``ImageStoryGenerator.stream`` promises them; ``close`` (or
    garbage collection) cancels the request."""

    def __init__(self, request: _Request) -> None:
        self._request = request
        self._caption = self._prompt = self._text = ""
        self._held: tuple[str, Any] | None = None  # an event taken while gathering text, for the next update
        self._finished = False

    def __iter__(self) -> StoryStream:
        return self

    def __next__(self) -> StoryResult:
        if self._finished:
            raise StopIteration
        source = self._request.source
        kind, value = self._next_event(block=True)
        while kind == "text":  # everything written since the last update, as one
            self._text += value
            nxt = self._next_event(block=False)
            if nxt is None:
                return StoryResult(source, self._caption, self._prompt, self._prompt + self._text)
            if nxt[0] != "text":
                self._held = nxt
                return StoryResult(source, self._caption, self._prompt, self._prompt + self._text)
            kind, value = nxt
        if kind == "caption":
            self._caption, self._prompt = value
            return StoryResult(source, self._caption, self._prompt, self._prompt)
        self.close()  # the request is over either way
        if kind == "error":
            raise value
        story = end_at_sentence(self._prompt + value, keep=len(self._prompt))  # "end": the whole text
        return StoryResult(source, self._caption, self._prompt, story, word_count=len(story.split()))

    def _next_event(self, *, block: bool) -> tuple[str, Any] | None:
        if self._held is not None:
            event, self._held = self._held, None
            return event
        try:
            return self._request.events.get(block=block)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._finished = True
        self._request.cancelled.set()

    def __del__(self) -> None:
        self.close()


class StoryScheduler:
    """Requests from any thread → batches on one worker thread (started with the scheduler, a daemon)."""

    def __init__(
        self, generator: ImageStoryGenerator, *, batch_size: int | None = None, window: float = WINDOW
    ) -> None:
        self.generator = generator
        self.batch_size = batch_size or generator.config.batch_size
        self.window = window
        self.batches: deque[Batch] = deque(maxlen=1000)  # the latest batches written, in order
        self._waiting: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._serve_forever, name="lab3-scheduler", daemon=True)
        self._worker.start()

    def submit(
        self, image: Image.Image, decoding: Decoding, *, source: str = "image", template: str | None = None
    ) -> StoryStream:
        request = _Request(image, decoding, source, template or self.generator.config.template)
        self._waiting.put(request)
        return StoryStream(request)

    def close(self) -> None:
        """Stop the worker once the requests already submitted are served."""
        self._waiting.put(None)
        self._worker.join()

    #### The worker ####

    def _serve_forever(self) -> None:
        while (batch := self._gather()) is not None:
            try:
                self._serve(batch)
            except BaseException as e:  # every request of the batch hears it; the worker goes on
                log.exception("a batch of %d stories failed", len(batch))
                for request in batch:
                    request.events.put(("error", e))

    def _gather(self) -> list[_Request] | None:
        """The first waiting request and those that come within ``window`` after it, up to ``batch_size``;
        requests cancelled while they waited are left out. None: the scheduler was closed."""
        batch: list[_Request | None] = []
        while not batch:
            batch.append(self._waiting.get())
            deadline = time.monotonic() + self.window
            while len(batch) < self.batch_size and batch[-1] is not None:
                try:
                    batch.append(self._waiting.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            if batch[-1] is None:  # closed: serve what came before, then stop
                if len(batch) == 1:
                    return None
                self._waiting.put(batch.pop())
            batch = [r for r in batch if not r.cancelled.is_set()]
        return batch  # type: ignore[return-value]

    def _more(self, room: int) -> list[_Request]:
        """Up to ``room`` requests already waiting, without waiting for any (a close is put back)."""
        more: list[_Request] = []
        while len(more) < room:
            try:
                request = self._waiting.get_nowait()
            except queue.Empty:
                break
            if request is None:
                self._waiting.put(None)
                break
            if not request.cancelled.is_set():
                more.append(request)
        return more

    def _serve(self, batch: list[_Request]) -> None:
        """Caption, then write, ``batch``; requests that come while it is captioned join it (``batch`` grows, so
        that a failure reaches them too)."""
        gen = self.generator
        prompts: list[str] = []
        joining = list(batch)
        del batch[:]
        while joining:
            batch += joining
            captions = gen.caption([r.image for r in joining])
            for request, caption in zip(joining, captions, strict=True):
                prompts.append(make_prompt(caption, request.template))
                request.events.put(("caption", (caption, prompts[-1])))
            joining = self._more(self.batch_size - len(batch))
        rows = [(r, p) for r, p in zip(batch, prompts, strict=True) if not r.cancelled.is_set()]
        if not rows:
            return
        sent = [0] * len(rows)  # characters of each row's text already sent
        longest = [0]  # tokens written for the longest row so far

        def on_tokens(row: int, tokens: list[int], done: bool) -> bool:
            request = rows[row][0]
            longest[0] = max(longest[0], len(tokens))
            if request.cancelled.is_set():
                return False
            text = gen.tokenizer.decode(tokens, skip_special_tokens=True)
            upto = len(text) if done else text.rfind(" ") + 1  # hold back a word that may still grow
            if upto > sent[row]:
                request.events.put(("text", text[sent[row] : upto]))
                sent[row] = upto
            return True

        texts = gen.decode([p for _, p in rows], [r.decoding for r, _ in rows], on_tokens)
        self.batches.append(Batch(len(rows), longest[0]))
        for (request, _), text in zip(rows, texts, strict=True):
            request.events.put(
                ("end", text)
            )  # the whole text: the final story is cut from it, not the pieces
