"""Image sources: a local path or an http(s) URL, read with limits and decoded by PIL.

transformers' ``load_image`` fetches URLs with no timeout and no size cap, so untrusted sources go through
``load_image`` here instead: http/https only (redirects included), one deadline for the whole download (a
server that trickles bytes cannot stretch it), a byte cap checked against Content-Length and while reading,
and PIL's decompression-bomb pixel limit enforced even when some other library has switched it off. Images
are turned upright by their EXIF orientation, as viewers (and transformers' loader) show them. Every failure
is an ``ImageSourceError`` whose message names the source.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import ipaddress
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from PIL import Image, ImageOps, UnidentifiedImageError

from dla_core.errors import DlaError

SCHEMES = ("http", "https")
PIL_DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default for Image.MAX_IMAGE_PIXELS (~ 9459 × 9459)
USER_AGENT = "dla-lab3/0.1 (+image-to-story)"


class ImageSourceError(DlaError):
    """A source that cannot be read as an image; the message starts with the source."""


@dataclass(frozen=True)
class FetchLimits:
    timeout: float = 15.0  # seconds for a whole download: connection, headers and body
    max_bytes: int = 20 * 1024 * 1024  # larger downloads are refused
    max_pixels: int | None = None  # None: PIL's Image.MAX_IMAGE_PIXELS (or its default if switched off)
    public_only: bool = False  # True: refuse hosts on private, loopback, link-local… addresses (a web server)


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


class _Sockets:
    """The sockets one download opens (redirects included), so that a passed deadline can shut them down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.aborted = False

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.append(sock)
            if self.aborted:  # connected after the deadline: stop at once
                _shutdown(sock)

    def abort(self) -> None:
        """Wake a blocked read: shutdown (not close) is what interrupts a recv in another thread."""
        with self._lock:
            self.aborted = True
            for sock in self._open:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        # socket.socket's own shutdown, also for an SSLSocket (whose shutdown would drop its TLS state)
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def is_public_address(address: str) -> bool:
    """True for an address on the public internet: not private, loopback, link-local, multicast, reserved…"""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope ("fe80::1%eth0") is not part of it
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _public_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, **kwargs):
    """``socket.create_connection`` that first resolves the host and refuses it if any of its addresses is not
    public, then connects to the very addresses it checked (a second lookup could answer differently)."""
    host, port = address[0], address[1]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise OSError(f"cannot resolve {host} ({e.strerror})") from None
    for *_, sockaddr in infos:
        if not is_public_address(sockaddr[0]):
            raise PrivateAddressError(
                f"{host} is a private, loopback or link-local address ({sockaddr[0]}): not fetched here"
            )
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as e:
            error = e
            sock.close()
    raise error if error else OSError(f"cannot resolve {host}")


class PrivateAddressError(DlaError):
    """A URL whose host is not on the public internet, refused by a fetch with ``public_only``."""


def _watched(
    base: type[http.client.HTTPConnection], sockets: _Sockets, public_only: bool = False
) -> type[http.client.HTTPConnection]:
    class Watched(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            if public_only:  # every connection, redirects included, goes through the address check
                self._create_connection = _public_connection

        def connect(self) -> None:
            super().connect()
            sockets.watch(self.sock)

    return Watched


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, sockets: _Sockets, public_only: bool = False) -> None:
        super().__init__()
        self._connection = _watched(http.client.HTTPConnection, sockets, public_only)

    def http_open(self, req):
        return self.do_open(self._connection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, sockets: _Sockets, public_only: bool = False) -> None:
        super().__init__()
        self._connection = _watched(http.client.HTTPSConnection, sockets, public_only)

    def https_open(self, req):
        return self.do_open(self._connection, req, context=self._context)


def _opener(sockets: _Sockets, public_only: bool) -> urllib.request.OpenerDirector:
    """http(s) only, redirects included; with ``public_only`` no proxy from the environment either: through a proxy
    the address check would judge the proxy's address, not the one the URL names."""
    handlers: list[Any] = [
        _HttpOnlyRedirects,
        _HTTPHandler(sockets, public_only),
        _HTTPSHandler(sockets, public_only),
    ]
    if public_only:
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


class _Download:
    """One URL fetched in a worker thread, so that the caller can stop waiting at the deadline."""

    def __init__(self, url: str, limits: FetchLimits) -> None:
        self.url, self.limits = url, limits
        self.sockets = _Sockets()
        self.result: tuple[bytes, str] | None = None
        self.error: ImageSourceError | None = None

    def run(self) -> None:
        try:
            self.result = self._fetch()
        except ImageSourceError as e:
            self.error = e
        except Exception as e:  # anything unforeseen still reaches the caller's thread
            self.error = ImageSourceError(f"{self.url}: download failed ({_reason(e)})")

    def _fetch(self) -> tuple[bytes, str]:
        url, limits = self.url, self.limits
        opener = _opener(self.sockets, limits.public_only)
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
        try:
            # the socket timeout only frees this thread; the caller's deadline is the download's timeout
            with opener.open(request, timeout=limits.timeout) as response:
                ctype = response.headers.get("Content-Type", "") or ""
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > limits.max_bytes:
                    raise ImageSourceError(
                        f"{url}: {_mib(int(declared))} is over the {_mib(limits.max_bytes)} limit"
                    )
                data = response.read(limits.max_bytes + 1)  # the cap also holds without Content-Length
        except urllib.error.HTTPError as e:
            raise ImageSourceError(f"{url}: HTTP {e.code} {e.reason}") from None
        except PrivateAddressError as e:
            raise ImageSourceError(f"{url}: {e.message}") from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, TimeoutError):
                raise ImageSourceError(_timed_out(url, limits)) from None
            raise ImageSourceError(f"{url}: cannot reach the server ({_reason(reason)})") from None
        except TimeoutError:
            raise ImageSourceError(_timed_out(url, limits)) from None
        except (OSError, ValueError) as e:  # connection reset, bad port, http.client errors (IncompleteRead…)
            raise ImageSourceError(f"{url}: download failed ({_reason(e)})") from None
        if len(data) > limits.max_bytes:
            raise ImageSourceError(f"{url}: more than the {_mib(limits.max_bytes)} limit")
        return data, ctype.split(";")[0].strip()


def fetch_url(url: str, limits: FetchLimits = FetchLimits()) -> tuple[bytes, str]:
    """Download ``url`` → (bytes, content type); raises ``ImageSourceError`` naming the URL.

    ``limits.timeout`` is a deadline for the whole download (name lookup, connection, headers, body and
    redirects): a server that trickles bytes cannot hold the caller longer than that.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise ImageSourceError(f"{url}: unsupported URL scheme '{scheme}://' (use http(s) or a local path)")
    download = _Download(url, limits)
    worker = threading.Thread(target=download.run, name="lab3-download", daemon=True)
    worker.start()
    worker.join(limits.timeout)
    if worker.is_alive():  # past the deadline: stop waiting, and end the worker's reads
        download.sockets.abort()
        raise ImageSourceError(_timed_out(url, limits))
    if download.error is not None:
        raise download.error
    assert download.result is not None
    return download.result


def _timed_out(url: str, limits: FetchLimits) -> str:
    return f"{url}: timed out after {limits.timeout:g} s"


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
    ImageOps.exif_transpose(image, in_place=True)  # upright as a viewer shows it (EXIF Orientation 2–8)
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


#### Many sources ####


class Opened(NamedTuple):
    source: str
    image: Image.Image | None
    error: str | None  # the one-line reason the source could not be opened


def open_source(source: str | Path, limits: FetchLimits = FetchLimits()) -> Opened:
    try:
        return Opened(str(source), load_image(source, limits), None)
    except ImageSourceError as e:
        return Opened(str(source), None, e.message)


def open_sources(
    sources: Iterable[str | Path], limits: FetchLimits = FetchLimits(), batch_size: int = 8
) -> Iterator[list[Opened]]:
    """The sources read or downloaded and decoded, a batch of ``batch_size`` at a time (the downloads of a batch
    overlap, at most 8 at once): a caller sees every source of a batch opened or refused before it does anything
    with them, and loads its models only once an image has opened."""
    sources = [str(s) for s in sources]
    with ThreadPoolExecutor(max_workers=max(1, min(8, batch_size))) as pool:
        for start in range(0, len(sources), batch_size):
            yield list(pool.map(lambda s: open_source(s, limits), sources[start : start + batch_size]))
