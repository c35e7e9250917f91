"""Batching across clients: stories asked for at about the same time are written together, and a story asked
for while others are being written joins them at the next decoding step.

    stream = generator.scheduler.submit(image, Decoding(100, seed=3), source="a.jpg")  # from any thread
    for update in stream:            # StoryResult: the caption, the story as it grows, the story cut
        ...
    stream.close()                   # or drop it: the request is cancelled, its row stops

One worker thread owns the models. While no story is being written it waits for a request and gathers those
that arrive within ``window`` seconds more (up to ``batch_size``); while stories are being written it takes,
between two decoding steps, the requests already waiting, up to the free rows. It captions their images in one
batch (those that come meanwhile are captioned and join too) and adds them to the running batch
(``running_batch.py``: continuous batching, each row with its own KV-cache rows, mask and positions), in which
every row keeps its own length, temperature, greedy or sampled draw and seed (``decoding.py``): requests are
never grouped by settings, and a story is the same as written alone. A row leaves the batch at its end or at
the first step after its request is cancelled, and its slot is free for the next request at once. Each request
has its own queue of events, filled from its own row only; its reader takes what has come since its last look
as one update, so a slow reader gets fewer, longer updates and never holds the batch back.

``first_tokens`` keeps, for each request, the seconds from ``submit`` to its first story token (picked after
its prefill): the latency a reader waits below the page, which shows only settled sentences (also logged at
DEBUG; ``bench/bench_lab3_web.py`` reads it).
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
from lab3_story.running_batch import RunningBatch

if TYPE_CHECKING:
    from lab3_story.generator import ImageStoryGenerator

log = logging.getLogger(__name__)

WINDOW = 0.01  # seconds an idle worker waits, after a first request, for others to start with it


@dataclass(frozen=True)
class Batch:
    """One stretch of writing, from the first row to the moment no row was left: the requests written in it,
    the tokens it spanned (decoding steps + the first pick), the most rows at once, and the token (step) at
    which each request joined (0: from the start)."""

    rows: int
    tokens: int
    widest: int = 0
    joined: tuple[int, ...] = ()


@dataclass
class _Request:
    image: Image.Image
    decoding: Decoding
    source: str
    template: str  # the prompt template, the reader's choices included
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # (kind, value), kind: see _updates
    submitted: float = field(default_factory=time.perf_counter)
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
        self.first_tokens: deque[float] = deque(maxlen=1000)  # seconds from submit to first token, in order
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
        running = RunningBatch(self.generator)
        serving: list[_Request] = []  # the requests whose rows are in ``running``, in join order
        joined: list[int] = []  # the step at which each of them joined
        ended: list[tuple[_Request, str]] = []  # rows that ended in this turn, filled by their callbacks
        closing = False
        while True:
            new = (
                None if closing else self._more(self.batch_size - len(running)) if running else self._gather()
            )
            if new is None:  # closed: write what is running (nothing more joins), then stop
                closing, new = True, []
                if not running:
                    return
            try:
                if new:
                    self._admit(running, new, serving, ended)
                    joined += [running.steps + (running.steps > 0)] * (len(serving) - len(joined))
                if running:
                    running.step()
            except BaseException as e:  # every request being written hears it; the worker goes on
                log.exception("a batch of %d stories failed", len(serving))
                for request in serving:
                    request.events.put(("error", e))
                running, serving, joined = RunningBatch(self.generator), [], []
                ended.clear()
            if serving and not running:  # the stretch is over: recorded before its last readers hear the end
                self.batches.append(Batch(len(serving), running.steps + 1, running.widest, tuple(joined)))
                serving, joined = [], []
            for request, text in ended:
                request.events.put(("end", text))  # the whole text: the final story is cut from it
            ended.clear()

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

    def _more(self, room: int) -> list[_Request] | None:
        """Up to ``room`` requests already waiting, without waiting for any. None: the scheduler was closed."""
        more: list[_Request] = []
        while len(more) < room:
            try:
                request = self._waiting.get_nowait()
            except queue.Empty:
                break
            if request is None:
                if not more:
                    return None
                self._waiting.put(None)
                break
            if not request.cancelled.is_set():
                more.append(request)
        return more

    def _admit(
        self,
        running: RunningBatch,
        new: list[_Request],
        serving: list[_Request],
        ended: list[tuple[_Request, str]],
    ) -> None:
        """Caption ``new``, then add their rows to ``running``; requests that come while they are captioned join
        too (up to the free rows). A caption failure reaches those being captioned, not the running rows."""
        gen = self.generator
        prompts: list[str] = []
        admitted: list[_Request] = []
        while new:
            try:
                captions = gen.caption([r.image for r in new])
            except BaseException as e:
                log.exception("captioning %d images failed", len(new))
                for request in new:
                    request.events.put(("error", e))
                captions = []
            for request, caption in zip(new, captions, strict=True):
                prompts.append(make_prompt(caption, request.template))
                request.events.put(("caption", (caption, prompts[-1])))
                admitted.append(request)
            more = self._more(self.batch_size - len(running) - len(admitted))
            if more is None:  # a close: put back for the worker's loop
                self._waiting.put(None)
                more = []
            new = more
        rows = [(r, p) for r, p in zip(admitted, prompts, strict=True) if not r.cancelled.is_set()]
        if not rows:
            return
        serving += [r for r, _ in rows]
        running.join(
            [p for _, p in rows],
            [r.decoding for r, _ in rows],
            [self._row_callback(r, ended) for r, _ in rows],
        )

    def _row_callback(self, request: _Request, ended: list[tuple[_Request, str]]):
        """What a row tells its request: the text that is sure (up to the last space) as it grows; at the end
        (budget, end of text) the whole text, put in ``ended`` for the worker to send. False: cancelled."""
        tokenizer = self.generator.tokenizer
        sent = 0  # characters of the row's text already sent
        first = True

        def on_tokens(tokens: list[int], done: bool) -> bool:
            nonlocal sent, first
            if first:  # the row's first pick (its first token, or its end)
                first = False
                self.first_tokens.append(waited := time.perf_counter() - request.submitted)
                log.debug("%s: first token %.3f s after submit", request.source, waited)
            if request.cancelled.is_set():
                return False
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            upto = len(text) if done else text.rfind(" ") + 1  # hold back a word that may still grow
            if upto > sent:
                request.events.put(("text", text[sent:upto]))
                sent = upto
            if done:
                ended.append((request, text))
            return True

        return on_tokens
