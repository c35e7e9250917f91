"""`lab3 serve` with many clients at once: their stories are written in shared batches, each client gets the
story it would get alone, and a client that cancels frees its row."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio", reason="the web extra (pip install dla-lab3[web]) is not installed")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402

from lab3_story import ImageStoryGenerator, load_image  # noqa: E402
from lab3_story.web import launch  # noqa: E402

pytestmark = pytest.mark.slow  # a server, 8 clients: ~10 s on a quiet 2-core machine
PATIENT = {"timeout": 120}  # seconds per HTTP call: httpx's 5 s default is short for a loaded CI machine


@pytest.fixture(scope="module")
def served(models: Path):
    gen = ImageStoryGenerator(
        caption_model=str(models / "captioner"), story_model=str(models / "storyteller"), batch_size=8
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = launch(gen, port=port, block=False)  # what `lab3 serve` runs, concurrency = the batch size
    try:
        yield gen, demo.local_url
    finally:
        demo.close()


def test_eight_clients_at_once_get_their_own_stories_from_shared_batches(served, photos: Path) -> None:
    gen, url = served
    # (image, length, temperature, seed, greedy): every client something of its own
    asks = [
        ("china.jpg" if i % 2 else "flower.jpg", ("short", "medium")[i % 3 == 0], 0.5 + 0.2 * i, i, i == 5)
        for i in range(8)
    ]
    clients = [Client(url, verbose=False, download_files=False, httpx_kwargs=PATIENT) for _ in asks]
    answers: list = [None] * len(asks)
    start = threading.Barrier(len(asks))

    def ask(i: int) -> None:
        name, length, temperature, seed, greedy = asks[i]
        start.wait()
        answers[i] = clients[i].predict(
            handle_file(photos / name), "", length, temperature, seed, greedy, api_name="/story"
        )

    before = len(gen.scheduler.batches)
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(asks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(answers), "a client got no story"
    assert max(b.rows for b in list(gen.scheduler.batches)[before:]) >= 4  # written together, not two by two
    for (name, length, temperature, seed, greedy), (caption, story, words) in zip(asks, answers, strict=True):
        image = load_image(photos / name)
        alone = list(gen.stream(image, length, temperature=temperature, seed=seed, sample=not greedy))[-1]
        assert (caption, story, words) == (alone.caption, alone.story, alone.word_count)
    assert len({story for _, story, _ in answers}) == len(asks)


def test_a_cancelled_client_frees_its_row(served, photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lab3_story.prompts import LENGTH_TOKENS

    gen, url = served
    monkeypatch.setitem(LENGTH_TOKENS, "long", 400)
    forward = gen.storyteller.forward

    def slow_forward(*args, **kwargs):  # 400 steps take ≥ 4 s: the cancel has time to arrive
        time.sleep(0.01)
        return forward(*args, **kwargs)

    monkeypatch.setattr(gen.storyteller, "forward", slow_forward)
    client = Client(url, verbose=False, download_files=False, httpx_kwargs=PATIENT)
    job = client.submit(handle_file(photos / "china.jpg"), "", "long", 1.0, 0, True, api_name="/story")
    deadline = time.monotonic() + 120
    while len(job.outputs()) < 2 and time.monotonic() < deadline:  # the caption, then text
        time.sleep(0.01)
    before = len(gen.scheduler.batches)  # the long story's batch is recorded when it ends
    job.cancel()
    *_, words = client.predict(handle_file(photos / "flower.jpg"), "", "short", api_name="/story")
    assert words > 0  # served
    cancelled = gen.scheduler.batches[before]
    alone = gen.stream(
        load_image(photos / "china.jpg"), "long", seed=0, sample=False
    )  # the same, not cancelled
    list(alone)
    # the cancelled row stopped early (the flower's request may have joined its batch before the cancel came)
    assert cancelled.tokens < gen.scheduler.batches[-1].tokens == 400
