"""Image files too large to hold decoded: kept as a file list and decoded batch by batch, a few batches ahead.

A dataset read from image files (``folders.py``) is decoded once into memory when its uint8 tensor fits the
memory budget, and otherwise kept as ``ImageFiles``: the files (known up front, with their labels), the size
and channels every image is decoded to (from a header-only scan), and the conversion ``ImageSet.adapt`` asked
for. ``ImageBatches`` serves both the same way: the same permutation and augmentation drawn from (seed, epoch),
the same batch boundaries and the same per-process shares; a streamed epoch decodes each batch's files on a small
thread pool, at most ``PREFETCH`` batches ahead of the one being used, so memory holds a few batches, never the
dataset. Per-image work (decode, resize, grey ↔ RGB) does not depend on the batch, so the values are equal.

Declared in the environment, recorded in each ImageSet's ``source`` (and so in the run folder's config.json):

    DLA_DATA_MEMORY=SIZE         the budget for one decoded dataset split, e.g. 512M, 8G (default 4G)
    DLA_DATA_STREAM=auto|always|never   auto: stream what exceeds the budget; always/never force it
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dla_core.data import folders
from dla_core.errors import DlaError
from dla_core.stream_policy import DEFAULT_BUDGET, parse_size, policy  # noqa: F401  (torch-free, re-exported)

PREFETCH = 2  # batches decoded ahead of the one in use
WORKERS = 4  # decoding threads at most (PIL lets go of the GIL while it decodes and resizes)
STATS_CHUNK = 1024  # images per block when channel statistics are summed


#### The declared policy (dla_core.stream_policy: torch-free, so every command checks it at its edge) ####

#### A lazy uint8 image store ####


@dataclass(frozen=True, eq=False)
class ImageFiles:
    """N image files standing in for a uint8 (N, C, H, W) tensor: ``x[i]`` decodes, ``take(i)`` does not."""

    files: tuple[Path, ...]
    size: tuple[int, int]  # (H, W) each file is decoded to
    channels: int  # 1 or 3, as decoded
    targets: tuple[tuple[int, int, int], ...] = ()  # the (C, H, W) of each ``ImageSet.adapt``, in order

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> torch.Size:
        return torch.Size(
            (len(self.files), *(self.targets[-1] if self.targets else (self.channels, *self.size)))
        )

    @property
    def nbytes(self) -> int:
        """What the decoded uint8 tensor would take."""
        return int(np.prod(self.shape))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, device: Any) -> ImageFiles:
        return self  # the files stay on disk; each batch goes to the device as it is decoded

    def take(self, index: torch.Tensor | slice) -> ImageFiles:
        """The files at ``index`` (int or bool tensor, or slice), still undecoded."""
        if isinstance(index, slice):
            return replace(self, files=self.files[index])
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        return replace(self, files=tuple(self.files[i] for i in index.tolist()))

    def adapted(self, shape: tuple[int, int, int]) -> ImageFiles:
        return replace(self, targets=(*self.targets, tuple(shape)))  # type: ignore[arg-type]

    def __getitem__(self, index: Any) -> torch.Tensor:
        """Decode the images at ``index`` now: uint8 (n, C, H, W), or (C, H, W) for a single index."""
        if isinstance(index, int) or (torch.is_tensor(index) and index.ndim == 0):
            return self.take(torch.tensor([int(index)])).decode()[0]
        return self.take(index).decode()

    def decode(self) -> torch.Tensor:
        """All of these images, decoded on a few threads."""
        workers = max(1, min(WORKERS, torch.get_num_threads(), len(self.files)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return self.finish(*self.submit(range(len(self.files)), pool))

    def submit(self, idx: Sequence[int], pool: ThreadPoolExecutor) -> tuple[np.ndarray, list[Future]]:
        """Start decoding the files at ``idx`` into one (n, H, W, C) buffer; ``finish`` waits for them."""
        h, w = self.size
        out = np.empty((len(idx), h, w, self.channels), dtype=np.uint8)

        def fill(k: int, i: int) -> None:
            out[k] = folders._decode(self.files[i], h, w, self.channels)

        return out, [pool.submit(fill, k, i) for k, i in enumerate(idx)]

    def finish(self, out: np.ndarray, jobs: list[Future]) -> torch.Tensor:
        for job in jobs:
            job.result()  # in file order: the first unreadable file is the one reported
        x = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
        for shape in self.targets:
            x = convert(x, shape)
        return x


def convert(images: torch.Tensor, shape: tuple[int, int, int], spec: str = "") -> torch.Tensor:
    """uint8 (N, C, H, W) → uint8 (N, *shape): grey ↔ RGB and bilinear resize, image by image."""
    c, h, w = shape
    if tuple(images.shape[1:]) == tuple(shape):
        return images
    x = images.float()
    if x.shape[1] == 3 and c == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] == 1 and c == 3:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != c:
        raise DlaError(f"cannot convert {spec} images with {x.shape[1]} channels to {c}")
    if x.shape[2:] != (h, w):
        x = torch.nn.functional.interpolate(
            x, size=(h, w), mode="bilinear", align_corners=False, antialias=True
        )
    return x.round().clamp_(0, 255).to(torch.uint8)


#### Choosing, and serving batches ####


def image_store(
    files: Sequence[Path], size: tuple[int, int] | None, channels: int | None = None
) -> tuple[torch.Tensor | ImageFiles, dict[str, Any]]:
    """The images of ``files`` decoded in memory, or as ``ImageFiles`` when the policy says to stream them; and
    what was decided (for ``ImageSet.source``)."""
    mode, budget = policy()
    if mode == "never":
        return folders.read_images(files, size, channels), {"storage": "memory", "forced": True}
    headers = [folders._header(f) for f in files]
    if channels is None:
        channels = 1 if headers and all(m in folders.GREY_MODES for m, _, _ in headers) else 3
    hw = size if size is not None else (headers[0][1:] if headers else (1, 1))
    lazy = ImageFiles(tuple(files), (int(hw[0]), int(hw[1])), channels)
    how = {"bytes": lazy.nbytes, "budget": budget, "forced": mode == "always"}
    if mode == "always" or lazy.nbytes > budget:
        return lazy, {"storage": "streamed", **how, "prefetch": PREFETCH, "workers": WORKERS}
    return folders.read_images(files, size, channels), {"storage": "memory", **how}


def prefetched(
    images: ImageFiles, plan: Iterable[torch.Tensor], depth: int = PREFETCH, workers: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(index, decoded uint8 images) for each index tensor of ``plan``, decoded ``depth`` batches ahead on
    ``workers`` threads (default: WORKERS, at most torch's thread count, as the in-memory decode uses)."""
    workers = workers or max(1, min(WORKERS, torch.get_num_threads()))
    plan = iter(plan)
    queue: deque = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            for idx in islice(plan, depth + 1):
                queue.append((idx, images.submit(idx.tolist(), pool)))
            while queue:
                idx, started = queue.popleft()
                yield idx, images.finish(*started)  # while it is used, ``depth`` batches are decoded
                nxt = next(plan, None)
                if nxt is not None:
                    queue.append((nxt, images.submit(nxt.tolist(), pool)))
        finally:
            for _, (_, jobs) in queue:
                for job in jobs:
                    job.cancel()


def channel_stats(blocks: Iterable[torch.Tensor]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) std in [0, 1] units, summed in float64 over uint8 blocks."""
    total = squares = None
    n = 0
    for x in blocks:
        v = x.double().div_(255).transpose(0, 1).reshape(x.shape[1], -1)
        s, q = v.sum(1), (v * v).sum(1)
        total, squares = (s, q) if total is None else (total + s, squares + q)
        n += v.shape[1]
    if total is None or n < 2:
        raise DlaError("channel statistics need at least two pixels")
    mean = total / n
    std = ((squares - n * mean * mean) / (n - 1)).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


def blocks(images: ImageFiles) -> Iterator[torch.Tensor]:
    """The images in blocks of STATS_CHUNK, decoded a block ahead."""
    n = len(images)
    plan = (torch.arange(i, min(i + STATS_CHUNK, n)) for i in range(0, n, STATS_CHUNK))
    return (x for _, x in prefetched(images, plan, depth=1))
