"""lab3 fixtures: tiny random BLIP + GPT-Neo checkpoints, scikit-learn's two photos, a local HTTP server."""

from __future__ import annotations

import http.server
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest
import sklearn.datasets

PHOTOS = Path(sklearn.datasets.__file__).parent / "images"  # china.jpg (427×640), flower.jpg (427×640)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/captioner (BlipForConditionalGeneration + BlipProcessor), root/storyteller (GPT-Neo + GPT-2 BPE)."""
    from lab3_story.random_models import save_random_models

    return save_random_models(tmp_path_factory.mktemp("lab3_models"))


@pytest.fixture(scope="session")
def narrator_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random VITS text-to-speech model (MMS-TTS's classes) with two voices."""
    from lab3_story.random_models import save_random_narrator

    return save_random_narrator(tmp_path_factory.mktemp("lab3_narrator"), speakers=2)


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


TRICKLE_SECONDS = 0.1  # one byte this often: every read is quick, the whole download is not
TRICKLE_FOR = 6.0  # seconds a trickling response lasts before the server hangs up
STREAM_CHUNK = 64 * 1024
STREAM_TOTAL = 64 * 2**20  # bytes /stream.jpg sends (without Content-Length) unless the client hangs up


class _Handler(http.server.SimpleHTTPRequestHandler):
    streamed: ClassVar[list[int]] = []  # bytes /stream.jpg managed to send, one entry per request
    trickled: ClassVar[list[float]] = []  # seconds each trickling response lasted until it stopped
    headers_seen: ClassVar[list[dict[str, str]]] = []  # the request headers of every GET

    def do_GET(self) -> None:
        _Handler.headers_seen.append(dict(self.headers))
        if self.path == "/hang-up":  # the connection closes without a response
            self.close_connection = True
            return
        if self.path in ("/untyped", "/page-utf8"):  # not an image: no Content-Type, or one with parameters
            body = b"<html><body>not a picture</body></html>"
            self.send_response(200)
            if self.path == "/page-utf8":
                self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path == "/slow.jpg":  # longer than the tests' timeout
            time.sleep(3)
        if self.path == "/trickle-body.jpg":  # quick headers, then one byte at a time
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self._trickle(b"\xff\xd8\xff\xe0" + b"\0" * 1000)
            return
        if self.path == "/trickle-headers.jpg":  # even the status line comes one byte at a time
            self._trickle(b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\nX-Slow: " + b"x" * 1000)
            return
        if self.path == "/stream.jpg":  # no Content-Length: only the reader's own cap stops it
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            sent = 0
            try:
                while sent < STREAM_TOTAL:
                    self.wfile.write(b"\0" * STREAM_CHUNK)
                    sent += STREAM_CHUNK
            except OSError:  # the client hung up
                pass
            finally:
                _Handler.streamed.append(sent)
            return
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

    def _trickle(self, data: bytes) -> None:
        start = time.monotonic()
        try:
            for i in range(len(data)):
                if time.monotonic() > start + TRICKLE_FOR:
                    return
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(TRICKLE_SECONDS)
        except OSError:  # the client hung up
            pass
        finally:
            _Handler.trickled.append(time.monotonic() - start)

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
