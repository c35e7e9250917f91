"""ImageStoryGenerator on a CUDA GPU in fp16: captions and stories from the two photos, batched = unbatched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lab3_story import ImageStoryGenerator
from lab3_story.images import load_image
from tests.gpu import needs_gpu
from tests.lab3.conftest import PHOTOS

pytestmark = needs_gpu


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_stories_in_half_precision_on_the_gpu(models: Path, precision: str):
    gen = ImageStoryGenerator(caption_model=str(models / "captioner"), story_model=str(models / "storyteller"),
                              batch_size=4, precision=precision, sample=False)  # fmt: skip
    assert (
        gen.device.type == "cuda" and gen.dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    )
    images = [load_image(PHOTOS / n) for n in ("china.jpg", "flower.jpg", "china.jpg")]
    captions = gen.caption(images)
    assert len(captions) == 3 and captions[0] == captions[2]
    stories = gen.write(["Once upon a time", "A cat"], "short")
    assert all(isinstance(s, str) and s for s in stories)
    assert stories == [gen.write([p], "short")[0] for p in ("Once upon a time", "A cat")]
