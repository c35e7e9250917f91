"""Lab 3: image → BLIP caption → TinyStories story."""

__version__ = "0.1.0"
