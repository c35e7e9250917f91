"""`lab3 serve`: the image → caption → story app in a browser, and its API, with Gradio (the `web` extra).

    from lab3_story import ImageStoryGenerator
    from lab3_story.web import build_app
    build_app(ImageStoryGenerator()).launch()

The event ``api_name="/story"``: (image, url, length, temperature, seed, greedy, style, genre, mood, age,
language) → (caption, story, word count), streamed — the caption first, then the story a sentence at a time as
its tokens come (``ImageStoryGenerator.stream``; the text shown never shrinks), then the story cut at its last
full sentence with its word count. Inputs after ``length`` may be left out (the page's defaults). When a story
ends, the page shows its word count, fills the storybook download (``/book``: one self-contained HTML page),
adds the story to the gallery of this page's stories and, with a narrator, reads it aloud (``/narrate``: a WAV,
in the chosen voice). A stop button cancels the story being written. Requests from many clients are written
together (the generator's scheduler: a request that comes while stories are being written joins them at the
next token); a client that goes away cancels its story and frees its row. From Python::

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

import dataclasses
import importlib.util
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from dla_core.errors import DlaError
from lab3_story.generator import ImageStoryGenerator
from lab3_story.images import FetchLimits, decode_image, fetch_url, is_url
from lab3_story.prompts import (
    LANGUAGES,
    LENGTH_TOKENS,
    READER_CONTROLS,
    language_note,
    reader_template,
    story_so_far,
    story_tokens,
)

log = logging.getLogger(__name__)

API_NAME = "story"  # the endpoint /story: its inputs and outputs are the app's stable API
TITLE = "lab3: a story from a picture"
GALLERY_SIZE = 24  # stories kept in a page's gallery (the oldest go first)
# an update that would not change the page is still sent after this many tokens: Gradio notices a closed tab only
# when the story function yields, and the scheduler frees the row's slot only then (cancellation)
HEARTBEAT_TOKENS = 16
# Gradio's default theme, adjusted where axe-core finds too little contrast (WCAG AA: 4.5:1 for text), and a
# centred column that stacks inputs, examples, then outputs on a phone.
CSS = """
.gradio-container { max-width: 1100px !important; margin: 0 auto !important; }
.gradio-container { --body-text-color-subdued: #4a4a55; --block-info-text-color: #4a4a55;
  --input-placeholder-color: #5f5f6b; --block-label-text-color: #3f3f48; }
button.primary { background: #c2410c !important; border-color: #c2410c !important; color: #fff !important; }
button.stop { background: #b91c1c !important; border-color: #b91c1c !important; color: #fff !important; }
@media (max-width: 700px) {
  #studio { flex-direction: column !important; }
  #studio > div { min-width: 0 !important; width: 100% !important; }
  .gradio-container { padding: 0 8px !important; }
}
"""
# Names Gradio's own markup gets wrong for axe-core, set right as the page changes: an aria-label on a plain
# <div> (not allowed without a role) is dropped, and a button whose aria-label leaves out its visible text
# ("Drop Image Here - or - Click to Upload" named "Drop an image file here to upload") is named by its text.
ACCESSIBLE_NAMES_JS = """
() => {
  const fix = () => {
    document.querySelectorAll('div[aria-label]:not([role])').forEach(e => e.removeAttribute('aria-label'));
    document.querySelectorAll('button[aria-label]').forEach(b => {
      const text = b.innerText.replace(/\\s+/g, ' ').trim();
      const name = b.getAttribute('aria-label');
      if (text && !name.toLowerCase().includes(text.toLowerCase())) b.setAttribute('aria-label', text + ': ' + name);
    });
  };
  fix();
  new MutationObserver(fix).observe(document.body, {subtree: true, childList: true, attributes: true,
    attributeFilter: ['aria-label']});
}
"""


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

    def __init__(
        self, generator: ImageStoryGenerator, *, allow_private_urls: bool = False, narrator: Any = None
    ) -> None:
        self.generator = generator
        self.narrator = narrator  # a narration.Narrator, or None: no audio
        self.files = Path(tempfile.mkdtemp(prefix="lab3-serve-"))  # storybooks, narrations, gallery pictures
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
        style: str | None = None,
        genre: str | None = None,
        mood: str | None = None,
        age: str | None = None,
        language: str | None = None,
    ) -> Iterator[tuple[str, str, int | None]]:
        """(caption, story so far, None)…, then (caption, story, word count). The story so far ends at a settled
        sentence end (``prompts.story_so_far``), so the text never shrinks when the story is cut at the end; it is
        sent only when it has grown (each update costs the server and every client an event), or after
        ``HEARTBEAT_TOKENS`` unchanged ones, so that a closed tab still frees its slot within that many tokens."""
        cfg = self.generator.config
        template = self.template(style, genre, mood, age, language)
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
            shown, unchanged = (
                None,
                0,
            )  # what the page shows now, and the updates since that did not change it
            for r in self.generator.stream(
                picture,
                length,
                source=name,
                temperature=temperature,
                sample=sample,
                seed=seed,
                template=template,
            ):
                if r.word_count:
                    yield r.caption, r.story, r.word_count
                else:
                    update = (r.caption, story_so_far(r.story, len(r.prompt)), None)
                    unchanged = unchanged + 1 if update == shown else 0
                    if unchanged == 0 or unchanged >= HEARTBEAT_TOKENS:
                        shown, unchanged = update, 0
                        yield update
        except DlaError as e:  # a bad image or URL, said in the page; the server carries on
            log.info("refused: %s", e.message)
            raise gr.Error(e.message, print_exception=False) from None

    #### The reader's settings, and what a finished story becomes ####

    def template(
        self,
        style: str | None = None,
        genre: str | None = None,
        mood: str | None = None,
        age: str | None = None,
        language: str | None = None,
    ) -> str:
        """The prompt template of a request: the config's, with the reader's choices (a language the story model
        cannot write: English, as the page's note says)."""
        cfg = self.generator.config
        language = language or cfg.language
        if language in LANGUAGES and language_note(language, cfg.story_model):
            language = "English"
        chosen = dict(style=style, genre=genre, mood=mood, age=age)
        try:
            return reader_template(
                cfg.prompt_template,
                language=language,
                **{k: v or getattr(cfg, k) for k, v in chosen.items()},
            )
        except DlaError as e:
            raise gr.Error(e.message, print_exception=False) from None

    def language_note(self, language: str | None) -> str:
        """The page's note under the language choice: empty where the story model writes it."""
        note = language_note(language or "English", self.generator.config.story_model)
        return f"*Note: {note}.*" if note else ""

    def settings(
        self, length, temperature, seed, greedy, style, genre, mood, age, language
    ) -> dict[str, Any]:
        """A request's settings as a storybook lists them (the models first)."""
        from lab3_story.book import book_settings

        cfg = self.generator.config
        chosen = dict(style=style, genre=genre, mood=mood, age=age, language=language)
        cfg = dataclasses.replace(
            cfg,
            length=length or cfg.length,
            temperature=cfg.temperature if temperature is None else float(temperature),
            seed=cfg.seed if seed in (None, "") else int(seed),
            sample=cfg.sample if greedy is None else not bool(greedy),
            **{k: v for k, v in chosen.items() if v},
        )
        if language_note(cfg.language, cfg.story_model):
            cfg = dataclasses.replace(cfg, language="English")
        return book_settings(cfg)

    def book(self, image, url, caption: str, story: str, *settings: Any) -> str | None:
        """The finished story as a storybook file (None before there is a story)."""
        from lab3_story.book import Page, write_book

        if not story:
            return None
        try:
            picture, name = self.image(image, url)
        except DlaError:  # the picture went away since (a URL that no longer answers): a book without it
            picture, name = None, (url or "the picture")
        path = Path(tempfile.mkdtemp(dir=self.files)) / "storybook.html"
        return str(write_book(path, [Page(name, caption, story, picture)], self.settings(*settings)))

    def narrate(self, story: str, voice: int | None = None, seed: float | None = None) -> str | None:
        """The story read aloud → a WAV file (None without a narrator or a story)."""
        from lab3_story.narration import write_wav

        if self.narrator is None or not story:
            return None
        voice = int(voice or 0)
        seed = _number(seed, "seed", int)
        try:
            audio, rate = self.narrator.read_aloud([story], voice, seed)
        except DlaError as e:
            raise gr.Error(e.message, print_exception=False) from None
        path = Path(tempfile.mkdtemp(dir=self.files)) / "story.wav"
        return str(write_wav(path, audio, rate))

    def remember(self, gallery: list[dict] | None, image, url, caption: str, story: str, words) -> tuple:
        """Add a finished story to this page's gallery → (the gallery's pictures, the gallery)."""
        gallery = list(gallery or [])
        if story:
            try:
                picture, _ = self.image(image, url)
                picture.thumbnail((256, 256))
                thumb = Path(tempfile.mkdtemp(dir=self.files)) / "picture.png"
                picture.convert("RGB").save(thumb)
            except DlaError:
                thumb = None
            entry = {
                "picture": str(thumb) if thumb else None,
                "caption": caption,
                "story": story,
                "words": words,
            }
            gallery = [*gallery, entry][-GALLERY_SIZE:]
        items = _gallery_items(gallery)
        return gr.Gallery(value=items, visible=bool(items)), gallery


def _gallery_items(gallery: list[dict]) -> list[tuple[str, str]]:
    return [(e["picture"], f"{e['caption']} ({e['words']} words)") for e in gallery if e["picture"]]


def build_app(
    generator: ImageStoryGenerator,
    *,
    allow_private_urls: bool = False,
    concurrency: int | None = None,
    max_queue: int = 64,
    narrator: Any = None,
) -> gr.Blocks:
    """The page: inputs, examples and the reader's controls on the left; caption, story, word count, narration
    and storybook on the right (on a phone: one column in that order); the gallery below. ``queue`` already set.
    ``concurrency``: requests handled at once, by default the batch size, so that a whole batch of clients
    reaches the generator's scheduler together."""
    app = StoryApp(generator, allow_private_urls=allow_private_urls, narrator=narrator)
    cfg = generator.config
    concurrency = concurrency or cfg.batch_size
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(
            f"# {TITLE}\nBLIP captions the photo, a small language model turns the caption into a "
            "children's story, written here as it is generated."
        )
        with gr.Row(equal_height=False, elem_id="studio"):
            with gr.Column():
                image = gr.Image(
                    label="Image", type="filepath", sources=["upload", "webcam", "clipboard"], image_mode=None
                )
                url = gr.Textbox(label="…or an image URL", placeholder="https://example.com/dog.jpg")
                if photos := example_photos():
                    gr.Examples(
                        [[str(p)] for p in photos],
                        inputs=[image],
                        label="Examples (scikit-learn's photos)",
                        elem_id="examples",
                        example_labels=[f"Example photo: {p.stem}" for p in photos],
                    )
                length = gr.Radio(list(LENGTH_TOKENS), value=cfg.length, label="Length")
                with gr.Accordion("The reader", open=True):
                    controls = []
                    for pair in (READER_CONTROLS[:2], READER_CONTROLS[2:]):
                        with gr.Row():
                            controls += [
                                gr.Dropdown(
                                    c.choices,
                                    value=getattr(cfg, c.name),
                                    label=c.name.capitalize(),
                                    info=c.help,
                                )
                                for c in pair
                            ]
                    language = gr.Dropdown(list(LANGUAGES), value=cfg.language, label="Language")
                    note = gr.Markdown(app.language_note(cfg.language))
                with gr.Accordion("Sampling", open=False):
                    temperature = gr.Slider(0.05, 2.0, value=cfg.temperature, step=0.05, label="Temperature")
                    seed = gr.Number(value=cfg.seed, precision=0, label="Seed (empty: a new story each time)")
                    greedy = gr.Checkbox(value=not cfg.sample, label="Greedy (no sampling)")
                voices = narrator.voices if narrator is not None else [0]
                voice = gr.Dropdown(
                    [(f"Voice {v + 1}", v) for v in voices],
                    value=cfg.voice if cfg.voice in voices else 0,
                    label="Narrator's voice",
                    visible=len(voices) > 1,
                )
                with gr.Row():
                    button = gr.Button("Write the story", variant="primary")
                    stop = gr.Button("Stop", variant="stop")
            with gr.Column():
                caption = gr.Textbox(label="Caption", interactive=False, elem_id="caption", buttons=["copy"])
                story = gr.Textbox(
                    label="Story",
                    lines=12,
                    max_lines=30,
                    interactive=False,
                    elem_id="story",
                    buttons=["copy"],
                )
                words = gr.Number(
                    label="Words", interactive=False, precision=0, elem_id="words", visible=False
                )
                audio = gr.Audio(
                    label="Narration",
                    type="filepath",
                    interactive=False,
                    visible=narrator is not None,
                    # the browser's own <audio controls>: keyboard-usable and named, unlike the waveform player
                    waveform_options=gr.WaveformOptions(show_recording_waveform=False),
                )
                book = gr.DownloadButton("Download the storybook (HTML)", value=None, interactive=False)
        history = gr.State([])
        gallery = gr.Gallery(
            label="Stories written on this page", columns=6, height="auto", elem_id="gallery"
        )

        inputs = [image, url, length, temperature, seed, greedy, *controls, language]
        settings = [length, temperature, seed, greedy, *controls, language]
        language.change(app.language_note, inputs=[language], outputs=[note], api_visibility="private")
        started = button.click(  # a new story: no count, narration or book of the last one meanwhile
            lambda: (gr.Number(visible=False), None, gr.DownloadButton(value=None, interactive=False)),
            outputs=[words, audio, book],
            api_visibility="private",
            queue=False,
        )
        # the request → generator call site (the scheduler batches what reaches app.story)
        wrote = started.then(
            app.story,
            inputs=inputs,
            outputs=[caption, story, words],
            api_name=API_NAME,
            preprocess=False,  # the raw upload: lab3's decoder (limits, messages) reads it, not Gradio's
            concurrency_limit=concurrency,
        )
        stop.click(None, cancels=[wrote], api_visibility="private", queue=False)
        ended = wrote.success(lambda: gr.Number(visible=True), outputs=[words], api_visibility="private")
        ended.then(
            app.book,
            inputs=[image, url, caption, story, *settings],
            outputs=[book],
            api_name="book",
            preprocess=False,
        ).then(lambda: gr.DownloadButton(interactive=True), outputs=[book], api_visibility="private")
        ended.then(
            app.remember,
            inputs=[history, image, url, caption, story, words],
            outputs=[gallery, history],
            api_visibility="private",
            preprocess=False,
        )
        if narrator is not None:
            ended.then(app.narrate, inputs=[story, voice, seed], outputs=[audio], api_name="narrate")

        def show(history: list[dict], evt: gr.SelectData):
            shown = [e for e in history if e["picture"]]
            entry = shown[evt.index] if 0 <= evt.index < len(shown) else None
            return (entry["caption"], entry["story"]) if entry else (gr.skip(), gr.skip())

        gallery.select(show, inputs=[history], outputs=[caption, story], api_visibility="private")
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
    narrator: Any = None,
) -> gr.Blocks:
    """Build and start the app; ``block=False`` returns once it serves (``demo.close()`` stops it). Gradio's own
    start-up lines stay quiet (its hint names ``launch()``'s argument); ``serve_hint`` is lab3's."""
    demo = build_app(
        generator, allow_private_urls=allow_private_urls, concurrency=concurrency, narrator=narrator
    )
    photos = example_photos()
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=generator.config.max_bytes,  # uploads: refused by the server past the same cap as URLs
        allowed_paths=[str(photos[0].parent)] if photos else None,
        prevent_thread_lock=True,
        show_error=True,
        quiet=True,
        css=CSS,
        js=ACCESSIBLE_NAMES_JS,
    )
    if block:
        demo.block_thread()
    return demo


def serve_hint(demo: gr.Blocks) -> str:
    """What `lab3 serve` prints once the app serves: where, and how to share it (our flag, not Gradio's)."""
    lines = [f"lab3 serve: open {demo.local_url}"]
    if getattr(demo, "share_url", None):
        lines.append(f"lab3 serve: public link {demo.share_url} (for up to a week; Ctrl+C ends it)")
    else:
        lines.append("lab3 serve: for a public *.gradio.live link, run it again with --share")
    return "\n".join(lines)
