"""lab3 serve: time to the first streamed token, full latency, and 8 concurrent clients, against `lab3 story`.

    python bench/bench_lab3_web.py [--clients 8] [--length short] [--repeats 3] [--client gradio|http]
                                   [--reference /work/main]

Tiny random-weight models (``lab3_story.random_models``) on the CPU, scikit-learn's china.jpg / flower.jpg.
The app is started in this process on a loopback port (``lab3_story.web.launch``) and called
through ``gradio_client`` (the crowd also through plain HTTP: ``--client http``) as any API user would (the
upload included). Measured, medians of ``--repeats``:

* one request: seconds from the client's submit to the first story token (the end of the story model's first
  forward pass in the server, timed by a forward hook on any tree: the page shows only settled sentences, so its
  first text is no latency), to the first streamed story text, and to the final story;
* ``--clients`` clients at once, each a process of its own with its own client (started once, untimed;
  ``--threads``: threads of this process, as before, sharing the server's GIL): wall seconds for all their
  stories, and the CPU seconds of the server's process and of the clients meanwhile (``--spread S``: client i
  asks i × S seconds after the first, a crowd that arrives while earlier stories are being written). The
  clients are ``gradio_client.Client`` (``--client gradio``, the default, as in earlier runs) or ``HttpClient``
  (``--client http``): Gradio's own HTTP API with httpx alone: upload the image, join the queue for ``/story``
  with the inputs ``gradio_client`` sends (the page's defaults after ``length``, from the server's API info),
  read the event stream to the final output; none of ``gradio_client``'s threads (its stream reader, its
  50 ms polling of the messages and of cancellation, its heartbeat where the app asks for one) and no diffs applied to the streamed
  updates. With ``--client http`` each run first checks that it gets the final story ``gradio_client``
  gets for the same input (the page's seed), untimed;
* the same stories with ``lab3 story`` from the command line (one process, all images as arguments, batched;
  the process start and the model load included, as a user pays them) and with the loaded generator's batched
  ``stories()`` in this process (the models' work alone).

Last line: ``RESULT lab3-web: ref=<CLI stories/s> ours=<server stories/s, N clients> ratio=…x``.

``--reference DIR`` (repeatable): the same measurements for each side in one run, each in a fresh process: first
with the lab3 package of each checkout DIR (its ``lab3_story/src`` first on ``PYTHONPATH``; e.g. main before the
scheduler), then with this tree's; the load average before and after goes with the numbers. The last line is then
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
import uuid
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


class HttpClient:
    """``/story`` through Gradio's HTTP API with httpx alone, no ``gradio_client``: what any client must do.

    Set up once (untimed, as ``gradio_client.Client`` fetches them in its constructor): the server's config
    (the API prefix, the event's ``fn_index``) and its API info (the defaults of the inputs after ``length``).
    Per story: upload the image (``<prefix>/upload``), join the queue (``<prefix>/queue/join``, the JSON body
    ``gradio_client`` posts: data, fn_index, session_hash) and read the server-sent events of this session
    (``<prefix>/queue/data``) to the event's ``process_completed``; its output data is the final
    (caption, story, words). The streamed updates are parsed but their diffs not applied."""

    def __init__(self, url: str) -> None:
        import httpx

        self.http = httpx.Client(timeout=PATIENT["timeout"], headers={"x-gradio-user": "api"})
        config = self.http.get(url.rstrip("/") + "/config").raise_for_status().json()
        self.api = url.rstrip("/") + "/" + config.get("api_prefix", "").strip("/") + "/"
        self.fn_index = next(
            d.get("id", i) for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "story"
        )
        info = self.http.get(self.api + "info").raise_for_status().json()
        self.parameters = info["named_endpoints"]["/story"]["parameters"]

    def predict(self, image: Path, url: str, length: str) -> tuple:
        with open(image, "rb") as f:
            r = self.http.post(self.api + "upload", files=[("files", (image.name, f))])
        upload = {"path": r.raise_for_status().json()[0], "orig_name": image.name,
                  "meta": {"_type": "gradio.FileData"}}  # fmt: skip
        data = [upload, url, length, *(p["parameter_default"] for p in self.parameters[3:])]
        session = str(uuid.uuid4())
        r = self.http.post(
            self.api + "queue/join", json={"data": data, "fn_index": self.fn_index, "session_hash": session}
        )
        event = r.raise_for_status().json()["event_id"]
        stream = self.http.stream("GET", self.api + "queue/data", params={"session_hash": session})
        with stream as response:
            for line in response.raise_for_status().iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") == event and message["msg"] == "process_completed":
                    if not message.get("success", True):
                        raise RuntimeError(f"the server refused: {message['output'].get('error')}")
                    return tuple(message["output"]["data"])
        raise RuntimeError("the event stream ended before the story")


def same_story(url: str, image: Path, length: str) -> None:
    """The sanity check of ``--client http``: it gets what ``gradio_client`` gets for the same input (the
    page's seed), or the bench stops."""
    from gradio_client import Client, handle_file

    ours = HttpClient(url).predict(image, "", length)
    theirs = Client(url, verbose=False, download_files=False, httpx_kwargs=PATIENT).predict(
        handle_file(image), "", length, api_name="/story"
    )
    if ours != tuple(theirs):
        raise AssertionError(f"--client http got {ours!r}, gradio_client {theirs!r}")


def one_request(client, image: Path, length: str, forwards: list[float]) -> tuple[float, float, float]:
    """Seconds from the client's submit to the first story text it sees, to the final story, and to the end of
    the story model's first forward pass in the server (``forwards``: the server's forward-pass end times, same
    clock): the prefill, after which the first token is picked."""
    from gradio_client import handle_file

    t0 = time.perf_counter()
    job = client.submit(handle_file(image), "", length, api_name="/story")
    first = None
    for caption, story, _ in job:
        if first is None and caption and story and len(story) > len(caption) + 30:  # past the prompt
            first = time.perf_counter() - t0
    job.result()
    full = time.perf_counter() - t0
    token = next((t - t0 for t in forwards if t > t0), float("nan"))
    return first if first is not None else float("nan"), full, token


def many_clients(url: str, images: list[Path], length: str) -> float:
    """The old way: every client a thread of this process, so they share the server's GIL (``--threads``)."""
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


def _client_process(url: str, kind: str, image: str, length: str, barrier, orders, answers) -> None:
    """One client in a process of its own (as a real client is): on each order, wait for the others, ask for
    one story, answer (its CPU seconds, or the error)."""
    if kind == "http":
        client = HttpClient(url)

        def ask() -> None:
            client.predict(Path(image), "", length)
    else:
        from gradio_client import Client, handle_file

        gradio = Client(url, verbose=False, download_files=False, httpx_kwargs=PATIENT)

        def ask() -> None:
            gradio.predict(handle_file(image), "", length, api_name="/story")

    while (delay := orders.get()) is not None:
        barrier.wait()
        time.sleep(delay)  # ``--spread``: this client asks this long after the first
        cpu = time.process_time()
        try:
            ask()
            answers.put(time.process_time() - cpu)
        except BaseException as e:
            answers.put(f"{type(e).__name__}: {e}")


class ClientProcesses:
    """``len(images)`` client processes, started once (their imports are not timed); ``crowd()`` lets them all
    ask at once and returns the wall seconds until the last story came, and the clients' CPU seconds."""

    def __init__(self, url: str, kind: str, images: list[Path], length: str, spread: float = 0.0) -> None:
        self.spread = spread
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.barrier = ctx.Barrier(len(images) + 1)
        self.orders = [ctx.SimpleQueue() for _ in images]
        self.answers = ctx.SimpleQueue()
        self.procs = [
            ctx.Process(
                target=_client_process, args=(url, kind, str(im), length, self.barrier, q, self.answers)
            )
            for im, q in zip(images, self.orders, strict=True)
        ]
        for p in self.procs:
            p.start()

    def crowd(self) -> tuple[float, float]:
        for i, q in enumerate(self.orders):
            q.put(i * self.spread)
        self.barrier.wait(timeout=600)
        t0 = time.perf_counter()
        answers = [self.answers.get() for _ in self.procs]
        wall = time.perf_counter() - t0
        if errors := [a for a in answers if isinstance(a, str)]:
            raise RuntimeError(f"a client failed: {errors[0]}")
        return wall, sum(answers)

    def close(self) -> None:
        for q in self.orders:
            q.put(None)
        for p in self.procs:
            p.join(timeout=30)


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
    forwards: list[float] = []  # end of each forward pass of the story model: the first-token hook, any tree
    gen.storyteller.register_forward_hook(lambda *_: forwards.append(time.perf_counter()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = launch(gen, port=port, block=False)
    images = photos(args.clients)
    crowds = (
        None
        if args.threads
        else ClientProcesses(demo.local_url, args.client, images, args.length, args.spread)
    )

    def crowd() -> tuple[float, float, float]:
        """Wall seconds for the crowd, this (the server's) process's CPU seconds and the clients' then."""
        cpu = time.process_time()
        if crowds is None:
            wall = many_clients(demo.local_url, images, args.length)
            return wall, time.process_time() - cpu, 0.0
        wall, clients_cpu = crowds.crowd()
        return wall, time.process_time() - cpu, clients_cpu

    try:
        client = Client(demo.local_url, verbose=False, download_files=False, httpx_kwargs=PATIENT)
        one_request(client, images[0], args.length, forwards)  # warm-up, untimed
        if args.client == "http":
            same_story(demo.local_url, images[0], args.length)
        crowd()
        if args.cli:
            cli_run(models, images[:1], args.length)
        single, crowd_runs, cli, batched, scheduled = [], [], [], [], []
        for _ in range(args.repeats):
            forwards.clear()
            single.append(one_request(client, images[0], args.length, forwards))
            if (first_tokens := getattr(getattr(gen, "_scheduler", None), "first_tokens", None)) is not None:
                scheduled.append(
                    first_tokens[-1]
                )  # this tree's own hook: submit to the scheduler → first token
            crowd_runs.append(crowd())
            if args.cli:
                cli.append(cli_run(models, images, args.length))
            t0 = time.perf_counter()
            list(gen.stories(images, args.length))
            batched.append(time.perf_counter() - t0)
    finally:
        if crowds is not None:
            crowds.close()
        demo.close()
    med = statistics.median
    return {
        "first_text_s": med(s[0] for s in single),
        "first_token_s": med(s[2] for s in single),
        "scheduler_first_token_s": med(scheduled) if scheduled else float("nan"),
        "full_story_s": med(s[1] for s in single),
        "crowd_s": med(c[0] for c in crowd_runs),
        "crowd_runs_s": [c[0] for c in crowd_runs],
        "server_cpu_s": med(c[1] for c in crowd_runs),
        "clients_cpu_s": med(c[2] for c in crowd_runs),
        "cli_s": med(cli) if cli else float("nan"),
        "batched_s": med(batched),
        "clients": len(images),
        "client": "threads" if args.threads else args.client,
    }


def load() -> str:
    """``uptime``'s load averages (1, 5, 15 minutes): the machine is shared."""
    return (
        subprocess.run(["uptime"], capture_output=True, text=True).stdout.split("load average:")[-1].strip()
    )


def side(label: str, m: dict) -> None:
    n = m["clients"]
    own = m.get("scheduler_first_token_s", float("nan"))
    print(
        f"[{label}] one request: first token (server's first forward pass) {m['first_token_s']:.3f} s"
        + (f" (scheduler's own record, from its submit: {own:.3f} s)" if own == own else "")
        + f", first text on the page {m['first_text_s']:.3f} s, full story {m['full_story_s']:.3f} s"
    )
    runs = ", ".join(f"{t:.2f}" for t in m["crowd_runs_s"])
    print(
        f"[{label}] {n} clients ({m.get('client', 'gradio')}) at once: {m['crowd_s']:.2f} s ({n / m['crowd_s']:.2f} stories/s; runs {runs}); "
        f"CPU s: server {m['server_cpu_s']:.2f}, clients {m['clients_cpu_s']:.2f}"
    )
    work = m["server_cpu_s"] + m["clients_cpu_s"]
    cores = os.cpu_count() or 1
    print(
        f"[{label}] a crowd's CPU, server + clients: {work:.2f} s, at least {work / cores:.2f} s of wall on "
        f"{cores} cores ({work / cores / m['batched_s']:.2f}x the in-process batched time) if nothing else ran"
    )
    if m["cli_s"] == m["cli_s"]:
        print(
            f"[{label}] lab3 story, {n} images in one command: {m['cli_s']:.2f} s ({n / m['cli_s']:.2f} stories/s)"
        )
    print(
        f"[{label}] generator.stories, {n} batched in-process: {m['batched_s']:.2f} s ({n / m['batched_s']:.2f} stories/s)"
    )


def compare(args: argparse.Namespace) -> None:
    """Every side, each in a fresh process, one after the other: each reference checkout's lab3 (in the order
    given; the first is the one the ratios are against), then this tree's."""
    results = {}
    sides = [(f"reference {i + 1}", Path(r) / "lab3_story" / "src") for i, r in enumerate(args.reference)]
    for label, src in [*sides, ("ours", None)]:
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).strip(os.pathsep)
        before = load()
        cmd = [sys.executable, __file__, "--json", "--clients", str(args.clients), "--length", args.length,
               "--repeats", str(args.repeats), "--spread", str(args.spread), "--client", args.client,
               *(["--threads"] if args.threads else [])]  # fmt: skip
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        results[label] = json.loads(out.strip().splitlines()[-1])
        print(f"[{label}] lab3_story from {src or 'this tree'}; load average before {before}, after {load()}")
        side(label, results[label])
    ref, ours = results["reference 1"], results["ours"]
    n = ours["clients"]
    print(f"{n} clients: {ref['crowd_s'] / ours['crowd_s']:.2f}x reference 1's stories/s (target >= 4x); "
          f"ours at {ours['crowd_s'] / ours['batched_s']:.2f}x the in-process batched time (target <= 2x); "
          f"first token {ours['first_token_s'] / ref['first_token_s']:.2f}x reference 1's (target <= 1.2x)")  # fmt: skip
    print(
        f"RESULT lab3-web-batching: ref={n / ref['crowd_s']:.3f} ours={n / ours['crowd_s']:.3f} "
        f"ratio={ref['crowd_s'] / ours['crowd_s']:.2f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--length", default="short", choices=["short", "medium", "long"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--reference", action="append", default=[], help="a checkout whose lab3 to measure first (repeatable)"
    )
    ap.add_argument(
        "--threads",
        action="store_true",
        help="clients as threads of the server's process (the old benchmark)",
    )
    ap.add_argument(
        "--client",
        choices=["gradio", "http"],
        default="gradio",
        help="the crowd's clients: gradio_client (default, as in earlier runs) or plain HTTP with httpx "
        "(upload, queue/join, the event stream; no gradio_client threads or polling)",
    )
    ap.add_argument("--json", action="store_true", help="one JSON line of medians (no `lab3 story` runs)")
    ap.add_argument(
        "--spread",
        type=float,
        default=0.0,
        help="seconds between one client's request and the next (processes)",
    )
    args = ap.parse_args()
    if args.threads and args.client != "gradio":
        ap.error("--threads runs gradio_client clients only")
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
