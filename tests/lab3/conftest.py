"""lab3 fixtures: tiny random BLIP + GPT-Neo checkpoints, scikit-learn's two photos, a local HTTP server."""

from __future__ import annotations

import http.server
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import sklearn.datasets

PHOTOS = Path(sklearn.datasets.__file__).parent / "images"  # china.jpg (427×640), flower.jpg (427×640)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/captioner (BlipForConditionalGeneration + BlipProcessor), root/storyteller (GPT-Neo + GPT-2 BPE)."""
    from lab3_story.random_models import save_random_models

    return save_random_models(tmp_path_factory.mktemp("lab3_models"))


@pytest.fixture(scope="session")
def generator(models: Path):
    from lab3_story import ImageStoryGenerator

    return ImageStoryGenerator(
        caption_model=str(models / "captioner"), story_model=str(models / "storyteller"), batch_size=4
    )


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the two real photos and some bad files next to them."""
    root = tmp_path_factory.mktemp("photos")
    for name in ("china.jpg", "flower.jpg"):
        shutil.copy(PHOTOS / name, root / name)
    jpeg = (root / "china.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])  # a real JPEG header, data cut short
    (root / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)  # JPEG magic, junk body
    (root / "page.html").write_text("<html><body>not a picture</body></html>")
    return root


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow.jpg":  # longer than the tests' timeout
            time.sleep(3)
        if self.path in ("/to-file", "/to-ftp"):  # redirects the fetcher must refuse to follow
            self.send_response(302)
            target = "file:///etc/passwd" if self.path == "/to-file" else "ftp://127.0.0.1/china.jpg"
            self.send_header("Location", target)
            self.end_headers()
            return
        if self.path == "/to-china":
            self.send_response(301)
            self.send_header("Location", "/china.jpg")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # clients that hang up early (timeouts, caps)
        pass


@pytest.fixture(scope="session")
def server(photos: Path):
    """Base URL of an HTTP server on 127.0.0.1 serving ``photos``."""
    handler = lambda *a, **kw: _Handler(*a, directory=str(photos), **kw)  # noqa: E731
    httpd = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def closed_port_url() -> str:
    """A URL on 127.0.0.1 whose port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/china.jpg"
