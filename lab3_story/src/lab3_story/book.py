"""The storybook: one self-contained HTML page per run — each picture (embedded as a data URI), its caption and
its story, then the settings and the model names — that opens offline and prints cleanly to PDF.

Nothing in the page is fetched: no external stylesheet, font, script or image (every ``src`` is a ``data:``
URI), and a source URL is printed as text, never linked. Print CSS gives each story its own page, keeps a
picture with its text, and drops the screen's background and shadows.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BOOK_IMAGE = 480  # pixels on the longer side: sharp enough on paper, small enough to embed

CSS = """
:root { color-scheme: light; }
body { font: 1.15rem/1.6 Georgia, "Times New Roman", serif; color: #1d1d1f; background: #f6f3ee; margin: 0; }
main { max-width: 42rem; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 2rem; margin: 0.5rem 0 1.5rem; text-align: center; }
article { background: #fff; border-radius: 8px; box-shadow: 0 1px 4px #0002; padding: 1.5rem; margin: 0 0 2rem; }
figure { margin: 0 0 1rem; text-align: center; }
figure img { max-width: 100%; max-height: 60vh; border-radius: 4px; }
figcaption { font-style: italic; color: #444; margin-top: 0.5rem; }
.source { font: 0.8rem/1.4 system-ui, sans-serif; color: #555; word-break: break-all; }
table { border-collapse: collapse; font: 0.9rem/1.4 system-ui, sans-serif; }
th, td { text-align: left; padding: 0.2rem 0.8rem 0.2rem 0; vertical-align: top; }
@page { margin: 18mm; }
@media print {
  body { background: none; font-size: 12pt; }
  main { max-width: none; padding: 0; }
  article { box-shadow: none; border-radius: 0; padding: 0; margin: 0; break-after: page; }
  figure, figure img { break-inside: avoid; }
  figure img { max-height: 120mm; }
  p { orphans: 3; widows: 3; }
  section.about { break-before: page; }
}
"""


@dataclass
class Page:
    source: str
    caption: str
    story: str
    image: Any = None  # a PIL image, or None: the page has no picture


def data_uri(image: Any) -> str:
    """A PIL image → ``data:image/jpeg;base64,…``, at most ``BOOK_IMAGE`` pixels on a side."""
    picture = image.convert("RGB")
    picture.thumbnail((BOOK_IMAGE, BOOK_IMAGE))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def storybook(pages: list[Page], settings: dict[str, Any], *, title: str = "A storybook") -> str:
    """The whole page as a string; ``settings`` (the models among them) are listed at the end."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head>",
        f"<body><main><h1>{esc(title)}</h1>",
    ]
    for page in pages:
        parts.append("<article>")
        if page.image is not None:
            alt = esc(page.caption or "the picture of the story", quote=True)
            parts.append(f'<figure><img src="{data_uri(page.image)}" alt="{alt}">')
            parts.append(f"<figcaption>{esc(page.caption)}</figcaption></figure>")
        paragraphs = [p for p in page.story.split("\n") if p.strip()] or [""]
        parts += [f"<p>{esc(p)}</p>" for p in paragraphs]
        parts.append(f'<p class="source">From {esc(page.source)}</p></article>')
    rows = "".join(
        f"<tr><th scope='row'>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in settings.items()
    )
    parts.append(f'<section class="about"><h2>How it was made</h2><table>{rows}</table></section>')
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def book_settings(config: Any, **extra: Any) -> dict[str, Any]:
    """The settings a storybook lists: the models first, then how the stories were generated."""
    keys = (
        "caption_model",
        "story_model",
        "length",
        "temperature",
        "top_p",
        "sample",
        "seed",
        "style",
        "genre",
        "mood",
        "age",
        "language",
        "prompt_template",
    )
    return {k: getattr(config, k) for k in keys} | extra


def write_book(path: str | Path, pages: list[Page], settings: dict[str, Any], **kwargs: Any) -> Path:
    from dla_core.runs import atomic_write

    text = storybook(pages, settings, **kwargs)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return Path(path)
