"""lab3 serve: time to the first streamed token, full latency, and 8 concurrent clients, against `lab3 story`.

    python bench/bench_lab3_web.py [--clients 8] [--length short] [--repeats 3]

Tiny random-weight models (``lab3_story.random_models``) on the CPU, scikit-learn's china.jpg / flower.jpg.
The app is started in this process on a loopback port (``lab3_story.web.launch``, concurrency 2) and called
through ``gradio_client`` as any API user would (the upload included). Measured, medians of ``--repeats``:

* one request: seconds from submit to the first streamed story text, and to the final story;
* ``--clients`` clients at once (one thread and one ``Client`` each): wall seconds for all their stories;
* the same stories with ``lab3 story`` from the command line (one process, all images as arguments, batched;
  the process start and the model load included, as a user pays them) and with the loaded generator's batched
  ``stories()`` in this process (the models' work alone).

Last line: ``RESULT lab3-web: ref=<CLI stories/s> ours=<server stories/s, N clients> ratio=…x``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model


def photos(n: int) -> list[Path]:
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    return [folder / ("china.jpg" if i % 2 == 0 else "flower.jpg") for i in range(n)]


def one_request(client, image: Path, length: str) -> tuple[float, float]:
    from gradio_client import handle_file

    t0 = time.perf_counter()
    job = client.submit(handle_file(image), "", length, api_name="/story")
    first = None
    for caption, story, _ in job:
        if first is None and caption and story and len(story) > len(caption) + 30:  # past the prompt
            first = time.perf_counter() - t0
    job.result()
    return first if first is not None else float("nan"), time.perf_counter() - t0


def many_clients(url: str, images: list[Path], length: str) -> float:
    from gradio_client import Client, handle_file

    clients = [Client(url, verbose=False, download_files=False) for _ in images]
    barrier = threading.Barrier(len(images) + 1)
    errors: list[BaseException] = []

    def run(client, image: Path) -> None:
        barrier.wait()
        try:
            client.predict(handle_file(image), "", length, api_name="/story")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c, im)) for c, im in zip(clients, images, strict=True)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0


def cli_run(models: Path, images: list[Path], length: str) -> float:
    lab3 = Path(sys.executable).parent / "lab3"
    t0 = time.perf_counter()
    subprocess.run(
        [str(lab3), "story", *map(str, images), "--length", length, "--cpu", "--json",
         "--caption-model", str(models / "captioner"), "--story-model", str(models / "storyteller")],
        check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--length", default="short", choices=["short", "medium", "long"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from gradio_client import Client

    from lab3_story import ImageStoryGenerator
    from lab3_story.random_models import save_random_models
    from lab3_story.web import launch

    models = save_random_models(Path(tempfile.mkdtemp(prefix="bench-lab3-web-")))
    gen = ImageStoryGenerator(
        caption_model=str(models / "captioner"), story_model=str(models / "storyteller"), batch_size=8
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = launch(gen, port=port, block=False)
    images = photos(args.clients)
    try:
        client = Client(demo.local_url, verbose=False, download_files=False)
        one_request(client, images[0], args.length)  # warm-up, untimed
        cli_run(models, images[:1], args.length)
        single, crowd, cli, batched = [], [], [], []
        for _ in range(args.repeats):
            single.append(one_request(client, images[0], args.length))
            crowd.append(many_clients(demo.local_url, images, args.length))
            cli.append(cli_run(models, images, args.length))
            t0 = time.perf_counter()
            list(gen.stories(images, args.length))
            batched.append(time.perf_counter() - t0)
    finally:
        demo.close()
    med = statistics.median
    n = len(images)
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    print(
        f"one request: first token {med(s[0] for s in single):.3f} s, full story {med(s[1] for s in single):.3f} s"
    )
    print(f"{n} clients at once: {med(crowd):.2f} s ({n / med(crowd):.2f} stories/s)")
    print(
        f"lab3 story, {n} images in one command: {med(cli):.2f} s ({n / med(cli):.2f} stories/s, start + load)"
    )
    print(
        f"generator.stories, {n} images batched in-process: {med(batched):.2f} s ({n / med(batched):.2f} stories/s)"
    )
    ratio = med(cli) / med(crowd)
    print(f"RESULT lab3-web: ref={n / med(cli):.3f} ours={n / med(crowd):.3f} ratio={ratio:.2f}x")


if __name__ == "__main__":
    main()
