"""`lab3 serve`: the Gradio app on a loopback port with the tiny random models, driven through its API by
gradio_client (as a browser's page would be), and its refusals."""

from __future__ import annotations

import dataclasses
import html
import itertools
import re
import socket
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio", reason="the web extra (pip install dla-lab3[web]) is not installed")
gradio_client = pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402

from dla_core.errors import DlaError  # noqa: E402
from lab3_story import ImageStoryGenerator  # noqa: E402
from lab3_story.prompts import make_prompt  # noqa: E402
from lab3_story.web import StoryApp, launch  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def web(models: Path, narrator_model: Path):
    """(generator, client) for an app served on 127.0.0.1 that may fetch loopback URLs (the test server), with a
    two-voice narrator."""
    from lab3_story.narration import Narrator

    gen = ImageStoryGenerator(
        caption_model=str(models / "captioner"), story_model=str(models / "storyteller"), max_bytes=2**20
    )
    narrator = Narrator(str(narrator_model))
    demo = launch(gen, port=_free_port(), allow_private_urls=True, block=False, narrator=narrator)
    try:
        client = Client(demo.local_url, verbose=False, download_files=False)
        yield gen, client
    finally:
        demo.close()


def test_story_from_a_file_through_the_api(web, photos: Path) -> None:
    gen, client = web
    caption, story, words = client.predict(handle_file(photos / "china.jpg"), "", "short", api_name="/story")
    assert caption and story.startswith(make_prompt(caption))
    assert words == len(story.split()) > len(make_prompt(caption).split())
    # the same settings (seed 0, sampling) as the batched path: the same story
    assert gen.generate_from_image(photos / "china.jpg", "short") == {
        "caption": caption,
        "story": story,
        "word_count": words,
    }


def test_story_from_a_url_equals_the_file(web, photos: Path, server: str) -> None:
    _, client = web
    by_file = client.predict(
        handle_file(photos / "flower.jpg"), "", "short", 0.65, 3, True, api_name="/story"
    )
    by_url = client.predict(None, f"{server}/flower.jpg", "short", 0.65, 3, True, api_name="/story")
    assert by_url == by_file


def test_bad_upload_is_an_error_and_the_next_request_works(web, photos: Path, server: str) -> None:
    _, client = web
    with pytest.raises(Exception, match=r"page\.html: not an image PIL can read") as info:
        client.predict(handle_file(photos / "page.html"), "", "short", api_name="/story")
    assert type(info.value).__name__ == "AppError"
    with pytest.raises(Exception, match=r"missing\.jpg: HTTP 404"):
        client.predict(None, f"{server}/missing.jpg", "short", api_name="/story")
    with pytest.raises(Exception, match="not a URL"):  # a path on the server is never read
        client.predict(None, str(photos / "china.jpg"), "short", api_name="/story")
    caption, story, words = client.predict(handle_file(photos / "china.jpg"), "", "short", api_name="/story")
    assert caption and story and words > 0


def test_an_upload_over_the_servers_cap_is_refused(web, photos: Path, tmp_path: Path) -> None:
    _, client = web  # the app's cap: 1 MiB (max_bytes), enforced by Gradio's upload route
    big = tmp_path / "big.jpg"
    big.write_bytes((photos / "china.jpg").read_bytes() + b"\0" * 2**20)
    with pytest.raises(Exception, match=r"(?i)size"):
        client.predict(handle_file(big), "", "short", api_name="/story")
    assert client.predict(handle_file(photos / "china.jpg"), "", "short", api_name="/story")[2] > 0


def test_the_story_streams(web, photos: Path) -> None:
    _, client = web
    job = client.submit(handle_file(photos / "china.jpg"), "", "medium", 1.0, 1, False, api_name="/story")
    final = job.result()
    updates = job.outputs()
    # the caption (the story not begun) comes first; the random model writes no settled sentence, and an update
    # that would show the same text is not sent, so the next one is the story itself
    assert len(updates) >= 2 and updates[-1] == final
    stories = [story for _, story, _ in updates]
    assert stories[0] == make_prompt(final[0])  # the caption first, the story not begun
    assert all(b.startswith(a) for a, b in itertools.pairwise(stories))  # growing, to the end: no shrink
    assert [words for *_, words in updates[:-1]] == [None] * (len(updates) - 1)  # the count comes last
    assert final[2] == len(final[1].split())


def test_private_urls_are_refused_without_the_flag(generator, server: str) -> None:
    app = StoryApp(generator)  # what `lab3 serve` builds without --allow-private-urls
    with pytest.raises(DlaError, match=r"127\.0\.0\.1 is a private, loopback or link-local address"):
        app.image(None, f"{server}/china.jpg")
    assert StoryApp(generator, allow_private_urls=True).image(None, f"{server}/china.jpg")[0].size == (
        640,
        427,
    )


def test_inputs_are_checked_before_any_work(generator) -> None:
    app = StoryApp(generator)
    for args, message in [
        ((None, ""), "give an image"),
        ((None, "x", "epic"), "length must be one of short, medium, long"),
        ((None, "x", "short", 5), r"temperature must be in \(0, 2\]"),
        ((None, "x", "short", 1, 1.5), "seed must be a whole number"),
    ]:
        with pytest.raises(gr.Error, match=message):
            next(app.story(*args))


def test_upload_over_the_byte_cap_is_refused(generator, photos: Path) -> None:
    app = StoryApp(generator)
    app.limits = dataclasses.replace(app.limits, max_bytes=1000)
    with pytest.raises(DlaError, match=r"china\.jpg: 0\.2 MiB is over the 0\.0 MiB limit"):
        app.image({"path": str(photos / "china.jpg"), "orig_name": "china.jpg"}, "")


def test_the_page_never_shows_a_story_that_shrinks(generator, photos: Path) -> None:
    """The generator streams raw text, half sentences included, then the story cut at its last full sentence;
    the page shows whole sentences as they come, so the end never takes text back."""
    from lab3_story.generator import StoryResult
    from lab3_story.prompts import end_at_sentence

    prompt = "This is a story about a dog. One day,"
    text = prompt + " the dog ran. He saw a cat. The cat was"
    cuts = [len(prompt), *range(len(prompt) + 4, len(text) + 1, 4)]

    class Scripted:
        config = generator.config

        def stream(self, picture, length, **kwargs):
            for n in cuts:
                yield StoryResult("x", caption="a dog", prompt=prompt, story=text[:n])
            story = end_at_sentence(text, keep=len(prompt))
            yield StoryResult("x", caption="a dog", prompt=prompt, story=story, word_count=len(story.split()))

    app = StoryApp(generator)
    app.generator = Scripted()
    upload = {"path": str(photos / "china.jpg"), "orig_name": "china.jpg"}
    shown = [story for _, story, _ in app.story(upload, "", "short")]
    assert shown[-1] == prompt + " the dog ran. He saw a cat."
    assert prompt + " the dog ran." in shown  # a sentence shows as soon as the next one starts
    assert all(b.startswith(a) for a, b in itertools.pairwise(shown))
    # an update that would show the same text is not sent: each costs the server and the client an event
    updates = list(app.story(upload, "", "short"))
    assert all(a != b for a, b in itertools.pairwise(updates))
    assert len(updates) == 4  # the prompt, each of the two settled sentences, the story with its word count


def test_a_closed_tab_stops_the_story_within_the_heartbeat(generator, photos: Path) -> None:
    """A story that settles no sentence sends no new text; the page is still sent an unchanged update every
    HEARTBEAT_TOKENS tokens, so that closing the tab (Gradio closing the story function at a yield) stops the
    stream, and frees the scheduler's slot, within that many tokens rather than at the story's end."""
    from lab3_story.generator import StoryResult
    from lab3_story.web import HEARTBEAT_TOKENS

    pulled = []

    class Endless:  # a story of 1,000 tokens with no sentence end
        config = generator.config

        def stream(self, picture, length, **kwargs):
            for n in range(1000):
                pulled.append(n)
                yield StoryResult("x", caption="a dog", prompt="Once", story="Once" + " and" * n)

    app = StoryApp(generator)
    app.generator = Endless()
    upload = {"path": str(photos / "china.jpg"), "orig_name": "china.jpg"}
    page = app.story(upload, "", "short")
    next(page)  # the caption and prompt
    next(page)  # the first update after it: at most HEARTBEAT_TOKENS tokens later
    page.close()  # the tab is closed
    assert len(pulled) <= 1 + HEARTBEAT_TOKENS


def test_the_readers_controls_reach_the_story(web, photos: Path) -> None:
    _, client = web
    args = (handle_file(photos / "china.jpg"), "", "short", 0.65, 0, False)
    caption, story, _ = client.predict(
        *args, "rhyming", "mystery", "calm", "9-12", "English", api_name="/story"
    )
    lead = "Here is a calm mystery story for readers aged 9 to 12, told in rhyme. "
    assert story.startswith(lead + make_prompt(caption))
    _, plain, _ = client.predict(*args, api_name="/story")  # left out: the page's defaults ("any")
    assert plain.startswith(make_prompt(caption))
    _, french, _ = client.predict(*args, "any", "any", "any", "any", "French", api_name="/story")
    assert french == plain  # the tiny model's card lists no French: the story is the English one
    with pytest.raises(Exception, match="genre must be one of"):
        client.predict(*args, "any", "epic", api_name="/story")


def test_the_storybook_and_the_narration_of_a_story(web, photos: Path) -> None:
    import wave

    _, client = web
    upload = handle_file(photos / "china.jpg")
    caption, story, _ = client.predict(upload, "", "short", api_name="/story")
    settings = ("short", 0.65, 0, False, "any", "fable", "any", "any", "English")
    book = client.predict(upload, "", caption, story, *settings, api_name="/book")
    page = Path(book["path"]).read_text()
    assert 'src="data:image/jpeg;base64,' in page and not re.search(r"""(?:src|href)=["']?https?:""", page)
    assert html.escape(story) in page and "<td>fable</td>" in page
    audio = {v: client.predict(story, v, 0, api_name="/narrate") for v in (0, 1)}
    frames = {}
    for v, path in audio.items():
        with wave.open(path["path"]) as f:
            assert f.getframerate() == 8000
            frames[v] = f.readframes(f.getnframes())
    assert frames[0] and frames[0] != frames[1]  # two voices


def test_page_settings_and_the_gallery(generator, photos: Path) -> None:
    app = StoryApp(generator)
    assert app.language_note("English") == ""
    assert "English only" in app.language_note("Chinese")
    assert app.template(genre="funny") == "Here is a funny story. " + generator.config.prompt_template
    assert "Chinese" not in app.template(language="Chinese")  # a plain note instead
    upload = {"path": str(photos / "china.jpg"), "orig_name": "china.jpg"}
    _, history = app.remember([], upload, "", "a temple", "A story.", 2)
    _, history = app.remember(history, upload, "", "a temple again", "Another story.", 2)
    assert [e["caption"] for e in history] == ["a temple", "a temple again"]  # in the order they were written
    from lab3_story.web import _gallery_items

    assert [label for _, label in _gallery_items(history)] == [
        "a temple (2 words)",
        "a temple again (2 words)",
    ]
    _, history = app.remember(history, upload, "", "", "", None)  # no story: nothing added
    assert len(history) == 2


def test_serve_hint_names_our_flag() -> None:
    from types import SimpleNamespace

    from lab3_story.web import serve_hint

    hint = serve_hint(SimpleNamespace(local_url="http://127.0.0.1:7860/", share_url=None))
    assert "--share" in hint and "share=True" not in hint and "launch()" not in hint
    shared = serve_hint(
        SimpleNamespace(local_url="http://127.0.0.1:7860/", share_url="https://x.gradio.live")
    )
    assert "https://x.gradio.live" in shared
