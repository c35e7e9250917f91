"""Image sources: a local path or an http(s) URL, read with limits and decoded by PIL.

transformers' ``load_image`` fetches URLs with no timeout and no size cap, so untrusted sources go through
``load_image`` here instead: http/https only (redirects included), a timeout, a byte cap checked against
Content-Length and while reading, and PIL's decompression-bomb pixel limit enforced even when some other
library has switched it off. Every failure is an ``ImageSourceError`` whose message names the source.
"""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from dla_core.errors import DlaError

SCHEMES = ("http", "https")
PIL_DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default for Image.MAX_IMAGE_PIXELS (~ 9459 × 9459)
USER_AGENT = "dla-lab3/0.1 (+image-to-story)"


class ImageSourceError(DlaError):
    """A source that cannot be read as an image; the message starts with the source."""


@dataclass(frozen=True)
class FetchLimits:
    timeout: float = 15.0  # seconds for connecting and for each read
    max_bytes: int = 20 * 1024 * 1024  # larger downloads are refused
    max_pixels: int | None = None  # None: PIL's Image.MAX_IMAGE_PIXELS (or its default if switched off)


def is_url(source: str) -> bool:
    return "://" in source


#### Fetching ####


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s) (urllib itself allows ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme.lower() not in SCHEMES:
            raise urllib.error.HTTPError(
                req.full_url, code, f"redirect to unsupported URL {newurl!r}", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(_HttpOnlyRedirects)


def fetch_url(url: str, limits: FetchLimits = FetchLimits()) -> tuple[bytes, str]:
    """Download ``url`` → (bytes, content type); raises ``ImageSourceError`` naming the URL."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise ImageSourceError(f"{url}: unsupported URL scheme '{scheme}://' (use http(s) or a local path)")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
    try:
        with _opener.open(request, timeout=limits.timeout) as response:
            ctype = response.headers.get("Content-Type", "") or ""
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limits.max_bytes:
                raise ImageSourceError(
                    f"{url}: {_mib(int(declared))} is over the {_mib(limits.max_bytes)} limit"
                )
            data = response.read(limits.max_bytes + 1)
    except urllib.error.HTTPError as e:
        raise ImageSourceError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError):
            raise ImageSourceError(f"{url}: timed out after {limits.timeout:g} s") from None
        raise ImageSourceError(f"{url}: cannot reach the server ({_reason(reason)})") from None
    except TimeoutError:
        raise ImageSourceError(f"{url}: timed out after {limits.timeout:g} s") from None
    except (OSError, ValueError) as e:  # connection reset, bad port, http.client errors (IncompleteRead…)
        raise ImageSourceError(f"{url}: download failed ({_reason(e)})") from None
    if len(data) > limits.max_bytes:
        raise ImageSourceError(f"{url}: more than the {_mib(limits.max_bytes)} limit")
    return data, ctype.split(";")[0].strip()


def _reason(e: object) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


#### Decoding ####


def decode_image(
    data: bytes | Path, source: str, limits: FetchLimits = FetchLimits(), ctype: str = ""
) -> Image.Image:
    """Bytes or a file → RGB image, or ``ImageSourceError``: not an image, corrupt, or too many pixels."""
    max_pixels = limits.max_pixels or Image.MAX_IMAGE_PIXELS or PIL_DEFAULT_MAX_PIXELS
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            return _checked_rgb(image, source, max_pixels)
    except UnidentifiedImageError:
        sent = f" (the server sent {ctype})" if ctype and not ctype.startswith("image/") else ""
        raise ImageSourceError(f"{source}: not an image PIL can read{sent}") from None
    except Image.DecompressionBombError as e:
        raise ImageSourceError(f"{source}: {e}") from None
    except PermissionError as e:
        raise ImageSourceError(f"{source}: cannot read ({_reason(e)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or corrupt data
        raise ImageSourceError(f"{source}: corrupt or truncated image ({_reason(e)})") from None


def _checked_rgb(image: Image.Image, source: str, max_pixels: int) -> Image.Image:
    width, height = image.size
    if width * height > max_pixels:  # checked on the header, before anything is decompressed
        raise ImageSourceError(
            f"{source}: {width}×{height} pixels is over the {max_pixels:,}-pixel limit "
            "(possible decompression bomb)"
        )
    image.load()
    return image.convert("RGB")


def load_image(source: str | Path, limits: FetchLimits = FetchLimits()) -> Image.Image:
    """A local path or an http(s) URL → RGB PIL image; every failure is one ``ImageSourceError``."""
    source = str(source)
    if is_url(source):
        data, ctype = fetch_url(source, limits)
        return decode_image(data, source, limits, ctype)
    path = Path(source).expanduser()
    if not path.exists():
        raise ImageSourceError(f"{source}: no such file")
    if not path.is_file():
        raise ImageSourceError(f"{source}: not a file")
    return decode_image(path, source, limits)
