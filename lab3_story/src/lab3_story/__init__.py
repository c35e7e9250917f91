"""Lab 3: image → BLIP caption → TinyStories story."""

from lab3_story.generator import ImageStoryGenerator, StoryConfig, StoryResult
from lab3_story.images import ImageSourceError, load_image

__version__ = "0.1.0"
__all__ = ["ImageSourceError", "ImageStoryGenerator", "StoryConfig", "StoryResult", "load_image"]
