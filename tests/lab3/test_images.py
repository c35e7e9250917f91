"""Image sources: real photos from disk and over HTTP, and every kind of bad source as one clear error."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lab3_story.images import FetchLimits, ImageSourceError, load_image


def test_local_photo_and_same_photo_over_http(photos: Path, server: str) -> None:
    local = load_image(photos / "china.jpg")
    remote = load_image(f"{server}/china.jpg")
    assert local.mode == "RGB" and local.size == (640, 427)
    assert np.array_equal(np.asarray(local), np.asarray(remote))
    redirected = load_image(f"{server}/to-china")  # http → http redirect is followed
    assert np.array_equal(np.asarray(local), np.asarray(redirected))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("missing.jpg", "no such file"),
        ("truncated.jpg", "corrupt or truncated"),
        ("garbage.jpg", "not an image"),
        ("page.html", "not an image"),
    ],
)
def test_bad_local_files(photos: Path, name: str, expected: str) -> None:
    with pytest.raises(ImageSourceError, match=expected) as e:
        load_image(photos / name)
    assert e.value.message.startswith(str(photos / name))
    assert "\n" not in e.value.message


def test_folder_is_not_an_image(photos: Path) -> None:
    with pytest.raises(ImageSourceError, match="not a file"):
        load_image(photos)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/nothing-here.jpg", "HTTP 404"),
        ("/page.html", r"not an image PIL can read \(the server sent text/html\)"),
        ("/truncated.jpg", "corrupt or truncated"),
        ("/to-file", "HTTP 302 .*'file:///etc/passwd' is not allowed"),
        ("/to-ftp", "HTTP 302 redirect to unsupported URL 'ftp://127.0.0.1/china.jpg'"),
    ],
)
def test_bad_urls(server: str, path: str, expected: str) -> None:
    url = server + path
    with pytest.raises(ImageSourceError, match=expected) as e:
        load_image(url)
    assert e.value.message.startswith(url)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/cat.jpg", "gopher://x/y"])
def test_unsupported_schemes_are_refused(url: str) -> None:
    with pytest.raises(ImageSourceError, match="unsupported URL scheme") as e:
        load_image(url)
    assert e.value.message.startswith(url)


def test_unreachable_host(closed_port_url: str) -> None:
    with pytest.raises(ImageSourceError, match="cannot reach the server") as e:
        load_image(closed_port_url, FetchLimits(timeout=5))
    assert e.value.message.startswith(closed_port_url)


def test_timeout(server: str) -> None:
    with pytest.raises(ImageSourceError, match=r"timed out after 0.5 s"):
        load_image(f"{server}/slow.jpg", FetchLimits(timeout=0.5))


@pytest.mark.parametrize("path", ["/trickle-body.jpg", "/trickle-headers.jpg"])
def test_timeout_bounds_the_whole_download(server: str, path: str) -> None:
    """A byte every 0.1 s never trips a per-read timeout; the deadline must still end the fetch at 1 s."""
    url = server + path
    start = time.monotonic()
    with pytest.raises(ImageSourceError) as e:
        load_image(url, FetchLimits(timeout=1))
    elapsed = time.monotonic() - start
    assert e.value.message == f"{url}: timed out after 1 s"
    assert 0.9 < elapsed < 2.5  # the server would keep trickling for 6 s


def test_download_size_cap(server: str) -> None:
    url = f"{server}/china.jpg"  # Content-Length 196,…: refused before the body is read
    with pytest.raises(ImageSourceError) as e:
        load_image(url, FetchLimits(max_bytes=100_000))
    assert e.value.message == f"{url}: 0.2 MiB is over the 0.1 MiB limit"


def test_download_size_cap_without_content_length(server: str) -> None:
    """The server streams 64 MiB with no Content-Length: the reader stops itself at the cap."""
    from tests.lab3.conftest import STREAM_TOTAL, _Handler

    url = f"{server}/stream.jpg"
    _Handler.streamed.clear()
    with pytest.raises(ImageSourceError) as e:
        load_image(url, FetchLimits(max_bytes=2**20))
    assert e.value.message == f"{url}: more than the 1.0 MiB limit"
    deadline = time.monotonic() + 10
    while not _Handler.streamed and time.monotonic() < deadline:  # the server sees the hang-up
        time.sleep(0.05)
    assert _Handler.streamed and _Handler.streamed[0] < STREAM_TOTAL / 2  # not read to the end


def test_decompression_bomb_limit(photos: Path) -> None:
    with pytest.raises(ImageSourceError, match="over the 100,000-pixel limit"):
        load_image(photos / "china.jpg", FetchLimits(max_pixels=100_000))  # 640×427 = 273,280 pixels


def test_pixel_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    """A 9-megapixel PNG whose data is cut short: the header alone must be refused, nothing decoded."""
    png = io.BytesIO()
    Image.new("L", (3000, 3000)).save(png, "PNG")
    data = png.getvalue()
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(data[: data.index(b"IDAT") + 20])  # decoding it would fail as truncated
    with pytest.raises(ImageSourceError) as e:
        load_image(bomb, FetchLimits(max_pixels=1_000_000))
    assert e.value.message == (
        f"{bomb}: 3000×3000 pixels is over the 1,000,000-pixel limit (possible decompression bomb)"
    )


def test_pil_own_bomb_error_is_one_error(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over twice Image.MAX_IMAGE_PIXELS, PIL itself raises DecompressionBombError while opening."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # china.jpg: 273,280 > 2 × 50,000
    source = photos / "china.jpg"
    with pytest.raises(ImageSourceError, match="decompression bomb") as e:
        load_image(source)
    assert e.value.message.startswith(f"{source}: Image size (273280 pixels) exceeds limit")


def test_pil_limit_applies_even_when_switched_off(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # some libraries do this; ours falls back to PIL's
    from lab3_story import images

    monkeypatch.setattr(images, "PIL_DEFAULT_MAX_PIXELS", 1000)
    with pytest.raises(ImageSourceError, match="1,000-pixel limit"):
        load_image(photos / "flower.jpg")


@pytest.mark.parametrize(
    ("orientation", "turn"),
    [
        (1, lambda a: a),
        (3, lambda a: np.rot90(a, 2)),  # upside down
        (6, lambda a: np.rot90(a, -1)),  # shown turned 90° clockwise
        (8, lambda a: np.rot90(a, 1)),  # shown turned 90° counter-clockwise
        (2, lambda a: a[:, ::-1]),  # mirrored
    ],
)
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, turn) -> None:
    """A camera's portrait JPEG stores landscape pixels and an Orientation tag; we load it upright."""
    rng = np.random.default_rng(orientation)
    pixels = np.kron(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    path = tmp_path / f"orientation{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    Image.fromarray(pixels).save(path, exif=exif, quality=95)  # 48×32 stored
    with Image.open(path) as raw:
        assert raw.getexif()[0x0112] == orientation
        stored = np.asarray(raw.convert("RGB"))  # the pixels as stored, before any turn
    loaded = np.asarray(load_image(path))
    assert loaded.shape == turn(stored).shape
    assert np.array_equal(loaded, turn(stored))


#### Exact messages, limits at their boundary, and the download worker ####


def test_limits_are_inclusive(photos: Path, server: str) -> None:
    """A download of exactly max_bytes and an image of exactly max_pixels are allowed."""
    size = (photos / "china.jpg").stat().st_size
    exact = FetchLimits(max_bytes=size, max_pixels=640 * 427)
    assert load_image(f"{server}/china.jpg", exact).size == (640, 427)
    assert load_image(photos / "china.jpg", exact).size == (640, 427)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/garbage.jpg", ""),  # the server said image/jpeg: nothing to add
        ("/page.html", " (the server sent text/html)"),
        ("/page-utf8", " (the server sent text/html)"),  # parameters after ';' are dropped
        ("/untyped", ""),  # no Content-Type at all
    ],
)
def test_not_an_image_messages(server: str, path: str, reason: str) -> None:
    url = server + path
    with pytest.raises(ImageSourceError) as e:
        load_image(url)
    assert e.value.message == f"{url}: not an image PIL can read{reason}"


def test_local_file_messages(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImageSourceError) as e:
        load_image(photos / "garbage.jpg")
    assert e.value.message == f"{photos / 'garbage.jpg'}: not an image PIL can read"
    with pytest.raises(ImageSourceError) as e:
        load_image(photos / "truncated.jpg")
    assert e.value.message == (
        f"{photos / 'truncated.jpg'}: corrupt or truncated image (image file is truncated (13 bytes not processed))"
    )

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", refused)  # as root a chmod 000 file is still readable
    with pytest.raises(ImageSourceError) as e:
        load_image(photos / "china.jpg")
    assert e.value.message == f"{photos / 'china.jpg'}: cannot read (Permission denied)"


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_every_mode_is_loaded_as_rgb(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / ("x.tiff" if mode == "CMYK" else "x.png")
    image.save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    assert np.array_equal(np.asarray(loaded), np.asarray(image.convert("RGB")))


def test_download_failure_messages(server: str, closed_port_url: str) -> None:
    with pytest.raises(ImageSourceError) as e:
        load_image(closed_port_url, FetchLimits(timeout=5))
    assert e.value.message == f"{closed_port_url}: cannot reach the server (Connection refused)"
    url = f"{server}/hang-up"
    with pytest.raises(ImageSourceError) as e:
        load_image(url)
    assert e.value.message == f"{url}: download failed (Remote end closed connection without response)"
    url = "http://127.0.0.1:port/x.jpg"  # http.client's own error, neither OSError nor ValueError
    with pytest.raises(ImageSourceError) as e:
        load_image(url)
    assert e.value.message == f"{url}: download failed (nonnumeric port: 'port')"


def test_https_goes_through_the_fetcher(closed_port_url: str) -> None:
    url = closed_port_url.replace("http://", "https://")
    with pytest.raises(ImageSourceError) as e:
        load_image(url, FetchLimits(timeout=5))
    assert e.value.message == f"{url}: cannot reach the server (Connection refused)"


def test_a_reason_is_never_empty() -> None:
    from lab3_story.images import _reason

    assert _reason(ValueError()) == "ValueError"
    assert _reason(OSError(2, "No such file or directory")) == "No such file or directory"


def test_request_names_the_client_and_asks_for_an_image(server: str) -> None:
    from lab3_story.images import USER_AGENT
    from tests.lab3.conftest import _Handler

    _Handler.headers_seen.clear()
    load_image(f"{server}/flower.jpg")
    assert _Handler.headers_seen[-1]["User-Agent"] == USER_AGENT
    assert _Handler.headers_seen[-1]["Accept"] == "image/*"


@pytest.mark.parametrize("where", ["connect", "response"])
def test_socket_timeouts_read_as_timeouts(server: str, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """The worker's own socket timeout (while connecting or waiting for headers) gives the deadline's message."""
    import http.client
    import socket

    def timed_out(*args, **kwargs):
        raise TimeoutError("timed out")

    if where == "connect":
        monkeypatch.setattr(socket, "create_connection", timed_out)
    else:
        monkeypatch.setattr(http.client.HTTPConnection, "getresponse", timed_out)
    url = f"{server}/china.jpg"
    start = time.monotonic()
    with pytest.raises(ImageSourceError) as e:
        load_image(url, FetchLimits(timeout=7))
    assert e.value.message == f"{url}: timed out after 7 s"
    assert time.monotonic() - start < 5  # the worker's error, not the caller's deadline


def test_deadline_hangs_up_on_the_server(server: str) -> None:
    """At the deadline the worker's socket is shut down: the server stops trickling then, not after 6 s."""
    from tests.lab3.conftest import _Handler

    _Handler.trickled.clear()
    with pytest.raises(ImageSourceError):
        load_image(f"{server}/trickle-body.jpg", FetchLimits(timeout=1))
    deadline = time.monotonic() + 10
    while not _Handler.trickled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _Handler.trickled and _Handler.trickled[0] < 3


def test_a_socket_connected_after_the_deadline_is_shut_at_once() -> None:
    import socket

    from lab3_story.images import _shutdown, _Sockets

    sockets = _Sockets()
    sockets.abort()
    a, b = socket.socketpair()
    with a, b:
        b.settimeout(5)  # without the shutdown, recv would wait for ever
        sockets.watch(a)
        assert b.recv(1) == b""  # the peer sees the shutdown
    _shutdown(a)  # a closed socket: nothing to do, no error


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata services
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),  # an IPv4 address written as IPv6 is judged as IPv4
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    from lab3_story.images import is_public_address

    assert is_public_address(address) is public


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_public_only_refuses_loopback_before_any_request(server: str, host: str) -> None:
    from tests.lab3.conftest import _Handler

    url = server.replace("127.0.0.1", host) + "/china.jpg"
    seen = len(_Handler.headers_seen)
    with pytest.raises(
        ImageSourceError, match=rf"{url}: {host} is a private, loopback or link-local address"
    ):
        load_image(url, FetchLimits(public_only=True))
    assert len(_Handler.headers_seen) == seen  # refused before connecting: the server heard nothing
    assert load_image(url).size == (640, 427)  # the default (the CLI) fetches it


def test_public_only_connects_to_the_address_it_checked(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from lab3_story import images

    checked: list[str] = []
    monkeypatch.setattr(images, "is_public_address", lambda a: checked.append(a) or True)
    assert load_image(f"{server}/to-china", FetchLimits(public_only=True)).size == (640, 427)
    assert checked == ["127.0.0.1", "127.0.0.1"]  # the URL and its redirect, each checked


@pytest.mark.parametrize("public_only", [True, False])
def test_public_only_fetches_ignore_proxies_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, public_only: bool
) -> None:
    """Through a proxy the address check would see the proxy's address, not the URL's: a web server's fetches go
    direct; the command line keeps the user's proxy."""
    from lab3_story.images import _opener, _Sockets

    monkeypatch.setenv("http_proxy", "http://10.0.0.1:3128")
    monkeypatch.setenv("https_proxy", "http://10.0.0.1:3128")
    proxies = [h.proxies for h in _opener(_Sockets(), public_only).handlers if hasattr(h, "proxies")]
    assert any("http" in p for p in proxies) == (not public_only)
