"""lab3 serve: time to the first streamed token, full latency, and 8 concurrent clients, against `lab3 story`.

    python bench/bench_lab3_web.py [--clients 8] [--length short] [--repeats 3] [--reference /work/main]

Tiny random-weight models (``lab3_story.random_models``) on the CPU, scikit-learn's china.jpg / flower.jpg.
The app is started in this process on a loopback port (``lab3_story.web.launch``, concurrency 2) and called
through ``gradio_client`` as any API user would (the upload included). Measured, medians of ``--repeats``:

* one request: seconds from submit to the first streamed story text, and to the final story;
* ``--clients`` clients at once (one thread and one ``Client`` each): wall seconds for all their stories;
* the same stories with ``lab3 story`` from the command line (one process, all images as arguments, batched;
  the process start and the model load included, as a user pays them) and with the loaded generator's batched
  ``stories()`` in this process (the models' work alone).

Last line: ``RESULT lab3-web: ref=<CLI stories/s> ours=<server stories/s, N clients> ratio=…x``.

``--reference DIR``: the same measurements twice in one run, each side in a fresh process: first with the lab3
package of the checkout DIR (its ``lab3_story/src`` first on ``PYTHONPATH``; e.g. main before the scheduler),
then with this tree's; the load average before and after goes with the numbers. The last line is then
``RESULT lab3-web-batching: ref=<DIR's server stories/s> ours=<this tree's> ratio=…x``.
"""

from __future__ import annotations

import argparse
import json
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

PATIENT = {"timeout": 120}  # httpx's 5 s default is shorter than a loaded machine's replies


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

    clients = [Client(url, verbose=False, download_files=False, httpx_kwargs=PATIENT) for _ in images]
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


def measure(args: argparse.Namespace) -> dict[str, float]:
    """This process's lab3 (whichever ``lab3_story`` it imports): medians of ``--repeats``."""
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
        client = Client(demo.local_url, verbose=False, download_files=False, httpx_kwargs=PATIENT)
        one_request(client, images[0], args.length)  # warm-up, untimed
        many_clients(demo.local_url, images, args.length)
        if args.cli:
            cli_run(models, images[:1], args.length)
        single, crowd, cli, batched = [], [], [], []
        for _ in range(args.repeats):
            single.append(one_request(client, images[0], args.length))
            crowd.append(many_clients(demo.local_url, images, args.length))
            if args.cli:
                cli.append(cli_run(models, images, args.length))
            t0 = time.perf_counter()
            list(gen.stories(images, args.length))
            batched.append(time.perf_counter() - t0)
    finally:
        demo.close()
    med = statistics.median
    return {
        "first_token_s": med(s[0] for s in single),
        "full_story_s": med(s[1] for s in single),
        "crowd_s": med(crowd),
        "crowd_runs_s": crowd,
        "cli_s": med(cli) if cli else float("nan"),
        "batched_s": med(batched),
        "clients": len(images),
    }


def load() -> str:
    """``uptime``'s load averages (1, 5, 15 minutes): the machine is shared."""
    return (
        subprocess.run(["uptime"], capture_output=True, text=True).stdout.split("load average:")[-1].strip()
    )


def side(label: str, m: dict) -> None:
    n = m["clients"]
    print(
        f"[{label}] one request: first token {m['first_token_s']:.3f} s, full story {m['full_story_s']:.3f} s"
    )
    runs = ", ".join(f"{t:.2f}" for t in m["crowd_runs_s"])
    print(
        f"[{label}] {n} clients at once: {m['crowd_s']:.2f} s ({n / m['crowd_s']:.2f} stories/s; runs {runs})"
    )
    if m["cli_s"] == m["cli_s"]:
        print(
            f"[{label}] lab3 story, {n} images in one command: {m['cli_s']:.2f} s ({n / m['cli_s']:.2f} stories/s)"
        )
    print(
        f"[{label}] generator.stories, {n} batched in-process: {m['batched_s']:.2f} s ({n / m['batched_s']:.2f} stories/s)"
    )


def compare(args: argparse.Namespace) -> None:
    """Both sides, each in a fresh process: the reference checkout's lab3, then this tree's."""
    results = {}
    for label, src in (("reference", Path(args.reference) / "lab3_story" / "src"), ("ours", None)):
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).strip(os.pathsep)
        before = load()
        cmd = [sys.executable, __file__, "--json", "--clients", str(args.clients), "--length", args.length,
               "--repeats", str(args.repeats)]  # fmt: skip
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        results[label] = json.loads(out.strip().splitlines()[-1])
        print(f"[{label}] lab3_story from {src or 'this tree'}; load average before {before}, after {load()}")
        side(label, results[label])
    ref, ours = results["reference"], results["ours"]
    n = ours["clients"]
    print(f"{n} clients: {ref['crowd_s'] / ours['crowd_s']:.2f}x the reference's stories/s (target >= 4x); "
          f"ours at {ours['crowd_s'] / ours['batched_s']:.2f}x the in-process batched time (target <= 2x); "
          f"first token {ours['first_token_s'] / ref['first_token_s']:.2f}x the reference's (target <= 1.2x)")  # fmt: skip
    print(
        f"RESULT lab3-web-batching: ref={n / ref['crowd_s']:.3f} ours={n / ours['crowd_s']:.3f} "
        f"ratio={ref['crowd_s'] / ours['crowd_s']:.2f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--length", default="short", choices=["short", "medium", "long"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reference", help="a checkout whose lab3 to measure first, in the same run")
    ap.add_argument("--json", action="store_true", help="one JSON line of medians (no `lab3 story` runs)")
    args = ap.parse_args()
    args.cli = not args.json
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    if args.reference:
        compare(args)
        return
    m = measure(args)
    if args.json:
        print(json.dumps(m))
        return
    side("this tree", m)
    n = m["clients"]
    print(
        f"RESULT lab3-web: ref={n / m['cli_s']:.3f} ours={n / m['crowd_s']:.3f} ratio={m['cli_s'] / m['crowd_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
