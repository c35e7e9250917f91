"""Lab 3: image → BLIP caption → TinyStories story.

The public names load on first use (PEP 562), so that ``lab3 --help`` (which imports this package) starts
without torch, transformers or PIL.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["ImageSourceError", "ImageStoryGenerator", "StoryConfig", "StoryResult", "load_image"]

_HOMES = {
    "ImageSourceError": "lab3_story.images",
    "ImageStoryGenerator": "lab3_story.generator",
    "StoryConfig": "lab3_story.config",
    "StoryResult": "lab3_story.generator",
    "load_image": "lab3_story.images",
}

if TYPE_CHECKING:
    from lab3_story.config import StoryConfig
    from lab3_story.generator import ImageStoryGenerator, StoryResult
    from lab3_story.images import ImageSourceError, load_image


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
