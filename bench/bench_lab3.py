"""lab3: stories per second for N images, batched ``ImageStoryGenerator`` vs the seed's way, same run.

    python bench/bench_lab3.py [--n 16] [--batch-size 8] [--length short] [--size tiny|real] [--precision no]
                               [--device auto|cpu|cuda] [--repeats 3] [--fresh-pipeline]

Both sides get the same random-weight checkpoints (``lab3_story.random_models``: BLIP captioner + GPT-Neo
storyteller in the real classes and files; ``--size real`` = BLIP base at 384×384 and TinyStories-33M's
architecture, meant for a GPU with ``--precision fp16``), the same device and dtype (``pick_device_dtype``, as
``ImageStoryGenerator`` picks them) and the same images (scikit-learn's china.jpg and flower.jpg, alternating,
read from disk).

* seed's way, as the seed wrote it: the BLIP captioner and one ``pipeline("text-generation")`` built once, then
  one image at a time: caption it (BLIP ``generate`` unbatched, ``max_new_tokens=30``: the ``image-to-text``
  pipeline the seed used is gone in transformers 5), then call the pipeline with the prompt.
  ``--fresh-pipeline`` also times the variant that builds a new pipeline for every image (this benchmark's
  reference before 2026-11-26, which flattered the batched side).
* batched: ``ImageStoryGenerator`` with both models loaded once, batches of ``--batch-size`` for both.

Sampling settings are the same (temperature 0.65, top-p 0.9, repetition penalty 1.2, the --length token
budget). After an untimed warm-up of both sides, each run times both sides "end to end" (model loading
included, on both) and "without load" (from the models being ready to the last story, on both). ``--repeats``
runs alternate the order of the sides; medians and their ratios are reported, and a last line
``RESULT lab3: ref=… ours=… ratio=…x`` (stories/s without model load; the end-to-end ratio follows it).
Default device: CUDA when there is one.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported (transformers)

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model


def images(n: int) -> list[Path]:
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    return [folder / ("china.jpg" if i % 2 == 0 else "flower.jpg") for i in range(n)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seeds_way(
    root: Path,
    sources: list[Path],
    length: str,
    device: torch.device,
    dtype: torch.dtype,
    fresh_pipeline: bool = False,
) -> tuple[float, float]:
    """Seconds end to end and without the one-time model load."""
    from PIL import Image
    from transformers import BlipForConditionalGeneration, BlipProcessor, pipeline

    from lab3_story.prompts import LENGTH_TOKENS, make_prompt

    def text_pipeline():
        return pipeline("text-generation", model=str(root / "storyteller"), device=device, dtype=dtype)

    sync(device)
    t0 = time.perf_counter()
    processor = BlipProcessor.from_pretrained(root / "captioner")
    blip = BlipForConditionalGeneration.from_pretrained(root / "captioner", dtype=dtype).to(device).eval()
    generator = None if fresh_pipeline else text_pipeline()
    sync(device)
    t1 = time.perf_counter()
    for src in sources:
        image = Image.open(src).convert("RGB")
        pixels = processor(images=image, return_tensors="pt")["pixel_values"].to(device, dtype)
        with torch.inference_mode():
            ids = blip.generate(pixel_values=pixels, max_new_tokens=30)
        caption = processor.decode(ids[0], skip_special_tokens=True)
        if fresh_pipeline:
            generator = text_pipeline()
        generator(
            make_prompt(caption),
            max_new_tokens=LENGTH_TOKENS[length],
            do_sample=True,
            temperature=0.65,
            top_p=0.9,
            repetition_penalty=1.2,
            pad_token_id=generator.tokenizer.eos_token_id,
        )
    sync(device)
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1


def batched(root: Path, sources: list[Path], length: str, batch_size: int, precision: str, cpu: bool):
    """Seconds end to end and without the one-time model load, and the device and dtype it ran at."""
    from lab3_story import ImageStoryGenerator

    t0 = time.perf_counter()
    gen = ImageStoryGenerator(
        caption_model=str(root / "captioner"),
        story_model=str(root / "storyteller"),
        batch_size=batch_size,
        precision=precision,
        cpu=cpu,
    )
    sync(gen.device)
    t1 = time.perf_counter()
    results = list(gen.stories(sources, length))
    sync(gen.device)
    t2 = time.perf_counter()
    assert all(r.error is None for r in results)
    return t2 - t0, t2 - t1, gen.device, gen.dtype


def release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=16, help="images")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--length", choices=["short", "medium", "long"], default="short")
    p.add_argument("--size", choices=["tiny", "real"], default="tiny", help="random models of this size")
    p.add_argument("--precision", choices=["no", "fp16", "bf16"], default="no")
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when there is one"
    )
    p.add_argument("--cpu", dest="device", action="store_const", const="cpu", help="same as --device cpu")
    p.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating; medians reported")
    p.add_argument("--skip-seed", action="store_true", help="only time the batched side")
    p.add_argument(
        "--fresh-pipeline", action="store_true", help="also time the seed's way with a new pipeline per image"
    )
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    cpu = args.device == "cpu"

    from transformers.utils import logging as hf_logging

    from lab3_story.generator import pick_device_dtype
    from lab3_story.random_models import save_random_models

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    device, dtype = pick_device_dtype(args.precision, cpu)  # what ImageStoryGenerator picks; the seed's too
    sources = images(args.n)
    times: dict[str, list[tuple[float, float]]] = {"batched": [], "seed": [], "fresh": []}
    sides = ["batched"] + ([] if args.skip_seed else ["seed"] + (["fresh"] if args.fresh_pipeline else []))
    with tempfile.TemporaryDirectory() as tmp:
        root = save_random_models(Path(tmp), size=args.size)
        # warm-up (untimed): lazy imports and first-call kernel setup would otherwise bill whichever runs first
        batched(root, sources[:2], args.length, 2, args.precision, cpu)
        if not args.skip_seed:
            seeds_way(root, sources[:1], args.length, device, dtype)
        release()
        for r in range(args.repeats):
            for side in sides if r % 2 == 0 else sides[::-1]:
                if side == "batched":
                    e2e, steady, got_device, got_dtype = batched(
                        root, sources, args.length, args.batch_size, args.precision, cpu
                    )
                    assert (got_device.type, got_dtype) == (device.type, dtype), (got_device, got_dtype)
                else:
                    e2e, steady = seeds_way(root, sources, args.length, device, dtype, side == "fresh")
                times[side].append((e2e, steady))
                release()
            line = ", ".join(
                f"{s} {times[s][-1][0]:.2f} s ({times[s][-1][1]:.2f} s without load)" for s in sides
            )
            print(f"run {r + 1}: {line}", flush=True)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu_model()})"
    print(f"device {device} ({dtype}), {where}, {args.n} images, length {args.length}, {args.size} models")
    print(f"  torch {torch.__version__}, {torch.get_num_threads()} torch threads; median of {args.repeats}")
    med = {
        s: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v))
        for s, v in times.items()
        if v
    }
    names = {
        "batched": f"batched (bs {args.batch_size})",
        "seed": "seed's way (pipeline once)",
        "fresh": "fresh pipeline per image",
    }
    for s in sides:
        e2e, steady = med[s]
        print(
            f"{names[s]:27s} {e2e:7.2f} s end to end {args.n / e2e:7.2f} stories/s | "
            f"{steady:7.2f} s without load {args.n / steady:7.2f} stories/s"
        )
    if args.skip_seed:
        return
    (ours_e2e, ours), (ref_e2e, ref) = med["batched"], med["seed"]
    print(
        f"ratio vs the seed's way: {ref_e2e / ours_e2e:.2f}× end to end, {ref / ours:.2f}× without the load"
    )
    if "fresh" in med:
        f_e2e, f = med["fresh"]
        print(
            f"ratio vs a fresh pipeline per image: {f_e2e / ours_e2e:.2f}× end to end, {f / ours:.2f}× without"
        )
    print(
        f"RESULT lab3: ref={args.n / ref:.3f} ours={args.n / ours:.3f} ratio={ref / ours:.2f}x "
        f"(stories/s without model load; end to end: ref={args.n / ref_e2e:.3f} ours={args.n / ours_e2e:.3f} "
        f"ratio={ref_e2e / ours_e2e:.2f}x)"
    )


if __name__ == "__main__":
    main()
