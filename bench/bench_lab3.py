"""lab3: stories per second for N images, batched ``ImageStoryGenerator`` vs the seed's way.

    python bench/bench_lab3.py [--n 16] [--batch-size 8] [--length short] [--size tiny|real] [--precision no]

Both sides get the same random-weight checkpoints (``lab3_story.random_models``: BLIP captioner + GPT-Neo
storyteller in the real classes and files; ``--size real`` = BLIP base at 384×384 and TinyStories-33M's
architecture, meant for a GPU with ``--precision fp16``) and the same images (scikit-learn's china.jpg and
flower.jpg, alternating, read from disk).

* seed's way: one image at a time: BLIP captions it (loaded once, unbatched: the ``image-to-text`` pipeline
  is gone in transformers 5) and a fresh ``pipeline("text-generation")`` is built for every image and
  called with the prompt, as the seed did.
* batched: ``ImageStoryGenerator`` with both models loaded once, batches of ``--batch-size`` for both.

Sampling settings are the same (temperature 0.65, top-p 0.9, repetition penalty 1.2, the --length token
budget). After an untimed warm-up of both, timings include model loading on both sides ("end to end"); the
batched side is also shown without its one-time load. Target: ≥ 3× end to end on the CPU with the tiny models.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


def images(n: int) -> list[Path]:
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    return [folder / ("china.jpg" if i % 2 == 0 else "flower.jpg") for i in range(n)]


def seeds_way(
    root: Path, sources: list[Path], length: str, device: torch.device, dtype: torch.dtype
) -> float:
    from PIL import Image
    from transformers import BlipForConditionalGeneration, BlipProcessor, pipeline

    from lab3_story.prompts import LENGTH_TOKENS, make_prompt

    t0 = time.perf_counter()
    processor = BlipProcessor.from_pretrained(root / "captioner")
    blip = BlipForConditionalGeneration.from_pretrained(root / "captioner", dtype=dtype).to(device).eval()
    for src in sources:
        image = Image.open(src).convert("RGB")
        pixels = processor(images=image, return_tensors="pt")["pixel_values"].to(device, dtype)
        with torch.inference_mode():
            ids = blip.generate(pixel_values=pixels, max_new_tokens=30)
        caption = processor.decode(ids[0], skip_special_tokens=True)
        generator = pipeline("text-generation", model=str(root / "storyteller"), device=device, dtype=dtype)
        generator(
            make_prompt(caption),
            max_new_tokens=LENGTH_TOKENS[length],
            do_sample=True,
            temperature=0.65,
            top_p=0.9,
            repetition_penalty=1.2,
            pad_token_id=generator.tokenizer.eos_token_id,
        )
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def batched(root: Path, sources: list[Path], length: str, batch_size: int, precision: str, cpu: bool):
    from lab3_story import ImageStoryGenerator

    t0 = time.perf_counter()
    gen = ImageStoryGenerator(
        caption_model=str(root / "captioner"),
        story_model=str(root / "storyteller"),
        batch_size=batch_size,
        precision=precision,
        cpu=cpu,
    )
    t1 = time.perf_counter()
    results = list(gen.stories(sources, length))
    if gen.device.type == "cuda":
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    assert all(r.error is None for r in results)
    return t2 - t0, t2 - t1, gen.device, gen.dtype


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=16, help="images")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--length", choices=["short", "medium", "long"], default="short")
    p.add_argument("--size", choices=["tiny", "real"], default="tiny", help="random models of this size")
    p.add_argument("--precision", choices=["no", "fp16", "bf16"], default="no")
    p.add_argument("--cpu", action="store_true", help="stay on the CPU even with a GPU")
    p.add_argument("--skip-seed", action="store_true", help="only time the batched side")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")

    from transformers.utils import logging as hf_logging

    from lab3_story.random_models import save_random_models

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    sources = images(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        root = save_random_models(Path(tmp), size=args.size)
        # warm-up (untimed): lazy imports and first-call kernel setup would otherwise bill whichever runs first
        _, _, device, dtype = batched(root, sources[:2], args.length, 2, args.precision, args.cpu)
        if not args.skip_seed:
            seeds_way(root, sources[:1], args.length, device, dtype)
        ours, ours_no_load, device, dtype = batched(
            root, sources, args.length, args.batch_size, args.precision, args.cpu
        )
        print(f"device {device} ({dtype}), {args.n} images, length {args.length}, {args.size} models")
        print(f"  {platform.processor() or platform.machine()}, torch {torch.__version__}")
        print(f"batched (bs {args.batch_size}):  {ours:7.2f} s end to end  {args.n / ours:7.2f} stories/s")
        print(
            f"  without model load:  {ours_no_load:7.2f} s              {args.n / ours_no_load:7.2f} stories/s"
        )
        if args.skip_seed:
            return
        seed = seeds_way(root, sources, args.length, device, dtype)
        print(f"seed's way:            {seed:7.2f} s              {args.n / seed:7.2f} stories/s")
        print(f"ratio: {seed / ours:.1f}× end to end, {seed / ours_no_load:.1f}× without the one-time load")


if __name__ == "__main__":
    main()
