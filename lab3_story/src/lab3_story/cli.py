"""The `lab3` command: `lab3 story SOURCE…`, `lab3 serve`."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dla_core import cli
from dla_core.config import Runtime, from_options
from dla_core.errors import DlaError
from lab3_story.config import StoryConfig
from lab3_story.prompts import LANGUAGES, LENGTH_TOKENS, READER_CONTROLS, language_note

if TYPE_CHECKING:  # the CLI starts without torch, transformers or PIL (generator.py imports them)
    from lab3_story.generator import StoryResult

LENGTH = click.Choice(list(LENGTH_TOKENS))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@cli.VERBOSE
def group(verbose: int) -> None:
    """Lab 3: image → BLIP caption → TinyStories story."""
    cli.setup_logging(verbose)


def _generation_options(f):
    """The model, precision, generation and download options `lab3 story` and `lab3 serve` share; their defaults
    are ``StoryConfig``'s (``cli.defaults_from``)."""
    for option in reversed(
        [
            click.option(
                "--length",
                type=LENGTH,
                show_default=True,
                help="Story budget: short/medium/long ≈ 100/150/200 new tokens, cut at the last full sentence.",
            ),
            click.option("--caption-model", show_default=True, help="BLIP name or folder."),
            click.option("--story-model", show_default=True, help="Causal LM name or folder."),
            click.option("--prompt-template", show_default=True, help="Must hold {caption}."),
            click.option("--temperature", type=cli.Finite(0, 2, min_open=True), show_default=True),
            click.option(
                "--greedy",
                is_flag=True,
                help=f"Greedy decoding instead of sampling (top-p {StoryConfig.top_p:g}).",
            ),
            click.option(
                "--timeout",
                type=cli.Finite(min=0, min_open=True),
                show_default=True,
                help="Seconds allowed for each URL download as a whole (connection, headers and body).",
            ),
            click.option(
                "--max-mb",
                type=cli.Finite(min=0, min_open=True),
                default=StoryConfig.max_bytes / 2**20,  # the config's max_bytes, in MiB
                show_default=True,
                help="Largest image download (and, for serve, upload) in MiB.",
            ),
            *[
                click.option(f"--{c.name}", type=click.Choice(c.choices), show_default=True, help=c.help)
                for c in READER_CONTROLS
            ],
            click.option(
                "--language",
                type=click.Choice(list(LANGUAGES)),
                show_default=True,
                help="The story's language, where the story model's card lists it (else English, with a note).",
            ),
            click.option(
                "--narrator-model",
                show_default=True,
                help="Text-to-speech model (VITS / MMS-TTS) name or folder.",
            ),
            click.option(
                "--voice",
                type=click.IntRange(min=0),
                show_default=True,
                help="The narrator's speaker id (models with several speakers).",
            ),
            cli.SEED,
            cli.PRECISION,
            cli.CPU,
        ]
    ):
        f = option(f)
    return f


def _config(opts: dict) -> StoryConfig:
    """The config; a language the story model cannot write is noted on stderr and the story is in English."""
    cfg = from_options(StoryConfig, opts, sample=not opts["greedy"], max_bytes=int(opts["max_mb"] * 2**20))
    if note := language_note(cfg.language, cfg.story_model):
        click.echo(f"Note: {note}", err=True)
        cfg = dataclasses.replace(cfg, language="English")
    return cfg


def _output_file(suffix: str):
    """A file to write (``--narrate``, ``--book``): its folder must exist and it must end in ``suffix``; it is
    written only once the stories are."""

    def check(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
        if value is None:
            return None
        option = param.opts[0]
        if value.suffix.lower() != suffix:
            raise DlaError(f"{option} {value} must end in {suffix}")
        if not value.parent.is_dir():
            raise DlaError(f"{option} {value}: the folder {value.parent} does not exist")
        return value

    return check


@group.command()
@cli.defaults_from(StoryConfig)
@click.argument("sources", nargs=-1, metavar="SOURCE...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per image instead of text.")
@cli.batch_size(StoryConfig.batch_size)
@click.option(
    "-i",
    "--interactive",
    is_flag=True,
    help="Ask for sources one at a time (the default with no SOURCE on a terminal).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Optional run folder: config.json, results.jsonl, metrics.json, captions.png.",
)
@click.option(
    "--narrate",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_output_file(".wav"),
    help="Also read the stories aloud (--narrator-model, --voice) into this WAV file.",
)
@click.option(
    "--book",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_output_file(".html"),
    help="Also write a storybook: one self-contained HTML page (pictures, captions, stories, settings).",
)
@_generation_options
def story(
    sources: tuple[str, ...],
    as_json: bool,
    interactive: bool,
    narrate: Path | None,
    book: Path | None,
    **opts,
) -> None:
    """Caption each image with BLIP and turn the caption into a short children's story.

    SOURCE is an image file or an http(s) URL; give several to generate in batches (both models are
    loaded once, after the first image has opened). A source that cannot be read is reported as
    `Error: SOURCE: reason` and the others still get their stories; the exit status is then 1. With no SOURCE on a terminal (or with -i), lab3 asks for
    one path or URL and a length at a time until you enter nothing.

    \b
    Examples:
      lab3 story photo.jpg https://example.com/dog.png --length short
      lab3 story *.jpg --json --seed 1 --out runs/stories
      lab3 story cat.jpg --genre adventure --age 3-5 --narrate cat.wav --book cat.html
      lab3 story --precision fp16          # interactive, on a GPU
    """
    from dla_core.seeding import seed_everything

    interactive = interactive or (not sources and sys.stdin.isatty())
    if not sources and not interactive:
        raise DlaError("no SOURCE given: pass image paths or http(s) URLs, or use --interactive")
    rt = Runtime.from_options(opts)  # --out, --cpu: where and how, not saved in the run's config
    cfg = _config(opts)
    # after the checks (they import nothing heavy), before any model: weights a checkpoint lacks are drawn at
    # random when it loads
    seed_everything(opts["seed"])
    failed = run_stories(
        cfg, list(sources), rt, as_json=as_json, interactive=interactive, narrate=narrate, book=book
    )
    if failed:  # the bad sources were reported as they came; the others have their stories
        raise SystemExit(1)  # not ctx.exit(1): click's standalone_mode=False returns its code


@group.command()
@cli.defaults_from(StoryConfig)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=7860, show_default=True, help="0: any free port."
)
@click.option(
    "--share/--no-share", default=False, show_default=True, help="Also open a public *.gradio.live link."
)
@click.option(
    "--allow-private-urls",
    is_flag=True,
    help="Also fetch URLs on private, loopback and link-local addresses (off: the app cannot probe your network).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Requests handled at once (default: --batch-size); stories asked for together are written as one batch.",
)
@click.option(
    "--narrate/--no-narrate",
    default=False,
    show_default=True,
    help="Read each story aloud in the page (loads --narrator-model at start-up).",
)
@cli.batch_size(StoryConfig.batch_size)
@_generation_options
def serve(
    host: str, port: int, share: bool, allow_private_urls: bool, concurrency: int, narrate: bool, **opts
) -> None:
    """Serve the image → caption → story app in a browser, with its API (needs `pip install dla-lab3[web]`).

    Drop a photo, take one with the webcam, paste one, or give an http(s) URL; the caption comes first, then
    the story as it is written. The models load once, at start-up. The API endpoint is /story
    (gradio_client: image file or URL, length → caption, story, word count). The options set the defaults
    of the page; --length, --temperature, --greedy and --seed can be changed per request.

    \b
    Examples:
      lab3 serve                                  # http://127.0.0.1:7860
      lab3 serve --host 0.0.0.0 --precision fp16  # for a class, on a GPU
      lab3 serve --narrate --narrator-model facebook/mms-tts-eng   # stories read aloud
    """
    rt = Runtime.from_options(opts)  # option errors first: they import nothing heavy
    cfg = _config(opts)
    if importlib.util.find_spec("gradio") is None:
        raise DlaError("lab3 serve needs Gradio: pip install dla-lab3[web]")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a class server reports to no one
    from dla_core.seeding import seed_everything
    from lab3_story.generator import ImageStoryGenerator
    from lab3_story.web import launch

    seed_everything(opts["seed"])  # weights a checkpoint lacks are drawn at random when it loads
    from lab3_story.web import serve_hint

    gen = ImageStoryGenerator(cfg, cpu=rt.cpu)
    narrator = None
    if narrate:
        from lab3_story.narration import Narrator

        narrator = Narrator(cfg.narrator_model, device=gen.device)
        narrator.check_voice(cfg.voice)
    click.echo(f"lab3 serve: models on {gen.device} ({gen.dtype}); Ctrl+C stops", err=True)
    demo = launch(
        gen,
        host=host,
        port=port,
        share=share,
        allow_private_urls=allow_private_urls,
        concurrency=concurrency,
        narrator=narrator,
        block=False,
    )
    click.echo(serve_hint(demo), err=True)
    demo.block_thread()


def run_stories(
    cfg: StoryConfig,
    sources: list[str],
    rt: Runtime,
    *,
    as_json: bool,
    interactive: bool,
    narrate: Path | None = None,
    book: Path | None = None,
) -> int:
    """Generate, print and (with ``rt.out``) record the stories; returns the number of failed sources.

    The sources come first: each batch is opened (read or downloaded) before anything else happens, and the
    models load, then the run folder is made, only once an image has opened. Sources that all fail load nothing
    and leave no folder behind. The narration (``narrate``) and the storybook (``book``) are written last, from
    every story told; the narrator loads with the other models, so a voice it lacks is refused before any file."""
    from tqdm import tqdm

    from dla_core.runs import RunDir
    from lab3_story.generator import ImageStoryGenerator, StoryResult
    from lab3_story.images import FetchLimits, open_sources

    limits = FetchLimits(timeout=cfg.timeout, max_bytes=cfg.max_bytes)
    gen: ImageStoryGenerator | None = None
    narrator = None
    run: RunDir | None = None
    load_seconds = open_seconds = 0.0
    results: list[StoryResult] = []

    def emit(result: StoryResult) -> None:
        results.append(result)
        with tqdm.external_write_mode(file=sys.stderr):  # keep a progress bar on a terminal intact
            if result.error:
                click.echo(f"Error: {result.error}", err=True)
            elif as_json:
                click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
            else:
                click.echo(
                    f"== {result.source}\nCaption: {result.caption}\n"
                    f"Story ({result.word_count} words):\n{result.story}\n"
                )
        if run is not None:
            with run.file("results.jsonl").open("a") as f:
                f.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")

    def tell(batch, length: str) -> list[StoryResult]:
        """The batch's stories; the models and the run folder (with the results so far) at its first image."""
        nonlocal gen, run, load_seconds, narrator
        if gen is None and any(o.image is not None for o in batch):
            t0 = time.perf_counter()
            gen = ImageStoryGenerator(cfg, cpu=rt.cpu)
            if narrate is not None:
                from lab3_story.narration import Narrator

                narrator = Narrator(cfg.narrator_model, device=gen.device)
                narrator.check_voice(cfg.voice)
            load_seconds = time.perf_counter() - t0
            if rt.out is not None:  # after the models: one that cannot load leaves no folder
                config = {"sources": sources, **dataclasses.asdict(cfg)}
                run = RunDir.create(rt.out, config, command="lab3 story", resumable=False)
                lines = [json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in results]
                run.file("results.jsonl").write_text("".join(lines))
            if not interactive:
                gen.reseed()  # one stories() call: seeded once, before the first story
        if gen is None:
            return [StoryResult(o.source, error=o.error) for o in batch]
        if interactive:
            gen.reseed()  # each answer replays the same draws, as a stories() call does
        return gen.tell(batch, length)

    t1 = time.perf_counter()
    if interactive:
        for source, length in _ask(cfg.length):
            t0 = time.perf_counter()
            for batch in open_sources([source], limits, 1):
                open_seconds += time.perf_counter() - t0
                for result in tell(batch, length):
                    emit(result)
    else:
        with tqdm(
            total=len(sources),
            desc="stories",
            unit="image",
            disable=True if len(sources) <= 1 else None,  # None: only on a terminal
            file=sys.stderr,
        ) as bar:
            t0 = time.perf_counter()
            for batch in open_sources(sources, limits, cfg.batch_size):
                open_seconds += time.perf_counter() - t0
                for result in tell(batch, cfg.length):
                    emit(result)
                    bar.update()
                t0 = time.perf_counter()
    seconds = time.perf_counter() - t1 - load_seconds
    failed = 0 if interactive else sum(r.error is not None for r in results)  # interactive: told at once
    if run is not None and gen is not None:
        parts = {**gen.seconds, "load": open_seconds}
        _record(run, results, seconds, load_seconds, parts, str(gen.device), str(gen.dtype))
    _keep(cfg, [r for r in results if r.error is None], narrator, narrate, book)
    return failed


def _keep(
    cfg: StoryConfig, told: list[StoryResult], narrator, narrate: Path | None, book: Path | None
) -> None:
    """The narration and the storybook of the stories told (nothing when none was)."""
    if not told:
        return
    if narrator is not None and narrate is not None:
        from lab3_story.narration import write_wav

        audio, rate = narrator.read_aloud([r.story for r in told], cfg.voice, cfg.seed)
        write_wav(narrate, audio, rate)
        click.echo(f"narration: {narrate} ({len(audio) / rate:.1f} s)", err=True)
    if book is not None:
        from lab3_story.book import Page, book_settings, write_book

        pages = [Page(r.source, r.caption, r.story, r.thumbnail) for r in told]
        extra = {"narrator_model": cfg.narrator_model, "voice": cfg.voice} if narrate else {}
        write_book(book, pages, book_settings(cfg, **extra))
        click.echo(f"storybook: {book}", err=True)


def _ask(default_length: str):
    """Interactive mode: (source, length) pairs until an empty line (or end of input)."""
    while True:
        try:
            source = click.prompt("Image path or URL (empty to quit)", default="", show_default=False).strip()
            if not source:
                return
            length = click.prompt("Length", type=LENGTH, default=default_length)
        except click.exceptions.Abort:  # end of input
            click.echo("", err=True)
            return
        yield source, length


def _record(
    run,
    results: list[StoryResult],
    seconds: float,
    load_seconds: float,
    parts: dict[str, float],
    device: str,
    dtype: str,
) -> None:
    import numpy as np

    from dla_core import plots

    good = [r for r in results if r.error is None]
    run.update_metrics(
        sources=len(results),
        stories=len(good),
        failed=[r.to_dict() for r in results if r.error],
        mean_words=float(np.mean([r.word_count for r in good])) if good else None,  # no story: no mean
        seconds=seconds,
        images_per_s=len(good) / seconds if seconds > 0 else None,
        model_load_seconds=load_seconds,
        seconds_by_stage={k: round(v, 4) for k, v in parts.items()},
        device=device,
        dtype=dtype,
    )
    if good:
        size = 128
        thumbs = [np.asarray(r.thumbnail.resize((size, size))) for r in good if r.thumbnail is not None]
        images = np.stack(thumbs).transpose(0, 3, 1, 2).astype(np.float32) / 255.0  # (N, 3, H, W)
        captions = [_wrap(r.caption) for r in good]
        plots.image_grid(images, captions, run.file("captions.png"), ncols=min(4, len(good)))


def _wrap(text: str, width: int = 24) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:3])


cli.add_reproduce_commands(
    group,
    "lab3_story.reproduce:RECIPE",
    extra=[
        click.option(
            "--caption-model",
            default=None,
            help="BLIP name or folder (required for --profile quick; full: the hub's BLIP base).",
        ),
        click.option(
            "--story-model",
            default=None,
            help="Causal LM name or folder (required for --profile quick; full: TinyStories-33M).",
        ),
        click.option(
            "--image",
            multiple=True,
            callback=lambda ctx, param, value: _images(value),
            help="An image file or http(s) URL (repeat it); default: the two photos scikit-learn ships.",
        ),
    ],
)


def _images(images: tuple[str, ...]) -> tuple[str, ...]:
    """`lab3 reproduce --image`: every image opened now (a URL fetched once), before the reproduce folder is made
    or a model loads; files made absolute, so that the saved options re-render the report from any folder."""
    from lab3_story.images import ImageSourceError, is_url, load_image

    resolved = []
    for image in images:
        try:
            load_image(image)
        except ImageSourceError as e:
            raise click.BadParameter(f"{e.message} (give image files or http(s) URLs)") from None
        resolved.append(image if is_url(image) else str(Path(image).resolve()))
    return tuple(resolved)


main = cli.entry_point(group)
