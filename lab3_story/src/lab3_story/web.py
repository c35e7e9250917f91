"""`lab3 serve`: the image → caption → story app in a browser, and its API, with Gradio (the `web` extra).

    from lab3_story import ImageStoryGenerator
    from lab3_story.web import build_app
    build_app(ImageStoryGenerator()).launch()

One event, ``api_name="/story"``: (image, url, length, temperature, seed, greedy) → (caption, story, word
count), streamed — the caption first, then the story as its tokens come (``ImageStoryGenerator.stream``), then
the story cut at its last full sentence with its word count. Requests from many clients are written together
(the generator's micro-batching scheduler); a client that goes away cancels its story. From Python::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    caption, story, words = client.predict(handle_file("photo.jpg"), "", "short", api_name="/story")

The server decides what it does with untrusted input: uploads are read by lab3's own decoder (its pixel limit
is the decompression-bomb guard) after a byte cap; URLs go through lab3's fetcher (http(s) only, one deadline,
a byte cap) and, unless ``allow_private_urls``, only to public addresses, so the app cannot be used to probe
the server's own network; a local path typed as a URL is refused. The story length is one of the three
budgets. Every refusal is a ``gr.Error`` shown in the page (and raised by the client); the server carries on.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from dla_core.errors import DlaError
from lab3_story.generator import ImageStoryGenerator
from lab3_story.images import FetchLimits, decode_image, fetch_url, is_url
from lab3_story.prompts import LENGTH_TOKENS, story_tokens

log = logging.getLogger(__name__)

API_NAME = "story"  # the endpoint /story: its inputs and outputs are the app's stable API
TITLE = "lab3: a story from a picture"


def example_photos() -> list[Path]:
    """scikit-learn's two photos (china.jpg, flower.jpg), found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "images"
    return [p for p in (folder / "china.jpg", folder / "flower.jpg") if p.is_file()]


def _number(value: Any, what: str, kind: type) -> Any:
    if value is None or value == "":
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{what} must be a number, got {value!r}") from None
    if kind is int and number != float(value):
        raise gr.Error(f"{what} must be a whole number, got {value!r}")
    return number


class StoryApp:
    """The request handler, apart from the page so that tests (and other front ends) can call it."""

    def __init__(self, generator: ImageStoryGenerator, *, allow_private_urls: bool = False) -> None:
        self.generator = generator
        cfg = generator.config
        self.limits = FetchLimits(
            timeout=cfg.timeout, max_bytes=cfg.max_bytes, public_only=not allow_private_urls
        )

    def image(self, upload: dict[str, Any] | str | None, url: str | None):
        """The upload (Gradio's file data, unprocessed) or else the URL → (PIL image, its name)."""
        url = (url or "").strip()
        if upload:
            path = upload.get("path") if isinstance(upload, dict) else upload
            if not path:
                raise DlaError("the upload has no file (upload it again)")
            name = (upload.get("orig_name") if isinstance(upload, dict) else None) or Path(path).name
            size = Path(path).stat().st_size
            if size > self.limits.max_bytes:
                raise DlaError(
                    f"{name}: {size / 2**20:.1f} MiB is over the {self.limits.max_bytes / 2**20:.1f} MiB limit"
                )
            return decode_image(Path(path), name, self.limits), name
        if not url:
            raise DlaError("give an image (upload, webcam or clipboard) or an http(s) URL")
        if not is_url(url):  # never a path on the server
            raise DlaError(f"{url}: not a URL (give an http:// or https:// address, or upload the image)")
        data, ctype = fetch_url(url, self.limits)
        return decode_image(data, url, self.limits, ctype), url

    def story(
        self,
        image: dict[str, Any] | str | None,
        url: str | None = "",
        length: str | None = None,
        temperature: float | None = None,
        seed: float | None = None,
        greedy: bool | None = None,
    ) -> Iterator[tuple[str, str, int | None]]:
        """(caption, story so far, None)…, then (caption, story, word count)."""
        cfg = self.generator.config
        length = length or cfg.length
        try:
            story_tokens(length)
        except DlaError as e:
            raise gr.Error(e.message, print_exception=False) from None
        temperature = _number(temperature, "temperature", float)
        if temperature is not None and not 0 < temperature <= 2:
            raise gr.Error(f"temperature must be in (0, 2], got {temperature:g}")
        seed = _number(seed, "seed", int)
        sample = cfg.sample if greedy is None else not bool(greedy)
        try:
            picture, name = self.image(image, url)
            for r in self.generator.stream(
                picture, length, source=name, temperature=temperature, sample=sample, seed=seed
            ):
                yield r.caption, r.story, (r.word_count if r.word_count else None)
        except DlaError as e:  # a bad image or URL, said in the page; the server carries on
            log.info("refused: %s", e.message)
            raise gr.Error(e.message, print_exception=False) from None


def build_app(
    generator: ImageStoryGenerator,
    *,
    allow_private_urls: bool = False,
    concurrency: int | None = None,
    max_queue: int = 64,
) -> gr.Blocks:
    """The page: inputs on the left, caption / story / word count on the right; ``queue`` already set.
    ``concurrency``: requests handled at once, by default the batch size, so that a whole batch of clients
    reaches the generator's scheduler together."""
    app = StoryApp(generator, allow_private_urls=allow_private_urls)
    cfg = generator.config
    concurrency = concurrency or cfg.batch_size
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(
            f"# {TITLE}\nBLIP captions the photo, a small language model turns the caption into a "
            "children's story, written here as it is generated."
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    label="Image", type="filepath", sources=["upload", "webcam", "clipboard"], image_mode=None
                )
                url = gr.Textbox(label="…or an image URL", placeholder="https://example.com/dog.jpg")
                length = gr.Radio(list(LENGTH_TOKENS), value=cfg.length, label="Length")
                with gr.Accordion("Sampling", open=False):
                    temperature = gr.Slider(0.05, 2.0, value=cfg.temperature, step=0.05, label="Temperature")
                    seed = gr.Number(value=cfg.seed, precision=0, label="Seed (empty: a new story each time)")
                    greedy = gr.Checkbox(value=not cfg.sample, label="Greedy (no sampling)")
                button = gr.Button("Write the story", variant="primary")
            with gr.Column():
                caption = gr.Textbox(label="Caption", interactive=False, elem_id="caption")
                story = gr.Textbox(label="Story", lines=12, interactive=False, elem_id="story")
                words = gr.Number(label="Words", interactive=False, precision=0, elem_id="words")
        if photos := example_photos():
            gr.Examples([[str(p)] for p in photos], inputs=[image], label="Examples (scikit-learn's photos)")
        inputs = [image, url, length, temperature, seed, greedy]
        button.click(
            app.story,
            inputs=inputs,
            outputs=[caption, story, words],
            api_name=API_NAME,
            preprocess=False,  # the raw upload: lab3's decoder (limits, messages) reads it, not Gradio's
            concurrency_limit=concurrency,
        )
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency)
    return demo


def launch(
    generator: ImageStoryGenerator,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    allow_private_urls: bool = False,
    concurrency: int | None = None,
    block: bool = True,
) -> gr.Blocks:
    """Build and start the app; ``block=False`` returns once it serves (``demo.close()`` stops it)."""
    demo = build_app(generator, allow_private_urls=allow_private_urls, concurrency=concurrency)
    photos = example_photos()
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=generator.config.max_bytes,  # uploads: refused by the server past the same cap as URLs
        allowed_paths=[str(photos[0].parent)] if photos else None,
        prevent_thread_lock=not block,
        show_error=True,
        quiet=not block,
    )
    return demo
