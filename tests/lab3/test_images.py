"""Image sources: real photos from disk and over HTTP, and every kind of bad source as one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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


def test_download_size_cap(server: str) -> None:
    with pytest.raises(ImageSourceError, match=r"over the 0\.0 MiB limit"):
        load_image(f"{server}/china.jpg", FetchLimits(max_bytes=10_000))


def test_decompression_bomb_limit(photos: Path) -> None:
    with pytest.raises(ImageSourceError, match="over the 100,000-pixel limit"):
        load_image(photos / "china.jpg", FetchLimits(max_pixels=100_000))  # 640×427 = 273,280 pixels


def test_pil_limit_applies_even_when_switched_off(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # some libraries do this; ours falls back to PIL's
    from lab3_story import images

    monkeypatch.setattr(images, "PIL_DEFAULT_MAX_PIXELS", 1000)
    with pytest.raises(ImageSourceError, match="1,000-pixel limit"):
        load_image(photos / "flower.jpg")
