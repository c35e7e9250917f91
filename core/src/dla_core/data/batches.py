"""Batches served from memory, sharded across processes, augmented as whole tensors.

No Dataset, no DataLoader, no per-sample Python: the uint8 images sit on the accelerator once; each epoch draws
one permutation and one set of augmentation parameters for every image from a generator seeded by
(seed, epoch), so an epoch is reproducible, resumable from any batch, and identical whatever the number of
processes: global batch i is ``perm[i*G:(i+1)*G]`` and process r takes its r-th slice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from dla_core.data.registry import ImageSet
from dla_core.data.streamed import ImageFiles, prefetched


class Batches(Protocol):
    """What ``engine.fit`` and ``engine.evaluate`` iterate over (images here; token batches in lab2)."""

    def __len__(self) -> int:
        """Batches per epoch in one process."""
        ...

    def num_batches(self, world: int) -> int:
        """Batches per epoch when ``world`` processes share each batch; the same on every process."""
        ...

    def iterate(
        self, epoch: int, *, rank: int = 0, world: int = 1, device: torch.device | None = None, start: int = 0
    ) -> Iterator[Any]:
        """This process's share of each batch of ``epoch``, from batch ``start`` on."""
        ...


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def shard(n: int, rank: int, world: int) -> slice:
    """Contiguous share of ``n`` items for process ``rank`` (sizes differ by at most one)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return slice(lo, lo + base + (1 if rank < extra else 0))


def batch_count(n: int, global_batch: int, drop_last: bool) -> int:
    """Global batches per epoch: training drops a partial last batch (but keeps one batch of a tiny set)."""
    if drop_last:
        return max(1, n // global_batch) if n else 0
    return -(-n // global_batch)


#### Augmentation on whole batches ####


@dataclass(frozen=True)
class Augment:
    crop_padding: int = 0  # random crop of the zero-padded image (CIFAR: 4)
    flip: bool = False  # random horizontal flip

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Parameters for n images: (n, 3) int64 columns dy, dx, flip."""
        p = self.crop_padding
        shifts = torch.randint(0, 2 * p + 1, (n, 2), generator=gen)
        flips = (
            torch.randint(0, 2, (n, 1), generator=gen) if self.flip else torch.zeros(n, 1, dtype=torch.int64)
        )
        return torch.cat([shifts, flips], 1)

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) any dtype; params: (B, 3) from ``draw``, on x's device."""
        p = self.crop_padding
        if p > 0:
            b, c, h, w = x.shape
            padded = F.pad(x, (p, p, p, p))  # (B, C, H+2p, W+2p)
            rows = (params[:, 0:1] + torch.arange(h, device=x.device)).view(b, 1, h, 1)
            cols = (params[:, 1:2] + torch.arange(w, device=x.device)).view(b, 1, 1, w)
            batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
            chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
            x = padded[batch, chan, rows, cols]  # (B, C, H, W)
        if self.flip:
            x = torch.where(params[:, 2].view(-1, 1, 1, 1).bool(), x.flip(-1), x)
        return x


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    aug = Augment(crop_padding=padding)
    return aug.apply(x, aug.draw(len(x), gen).to(x.device))


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    aug = Augment(flip=True)
    return aug.apply(x, aug.draw(len(x), gen).to(x.device))


#### Image batches ####


class ImageBatches:
    """(images float in [0, 1], labels) batches of an ImageSet, served from memory, or decoded from its files
    batch by batch when it is streamed (the same batches: ``streamed.py``).

    Training (``shuffle=True``) drops a last partial batch so every process steps on equal shares;
    evaluation keeps every image.
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: Augment | None = None,
        seed: int = 0,
        drop_last: bool | None = None,
    ):
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment if augment is not None and augment.active else None
        self.seed = seed
        self.drop_last = shuffle if drop_last is None else drop_last
        self._device: torch.device | None = None
        self._images, self._labels = data.images, data.labels

    def __len__(self) -> int:
        return self.num_batches(1)

    def num_batches(self, world: int) -> int:
        return batch_count(len(self.data), self.batch_size * world, self.drop_last)

    def to(self, device: torch.device) -> ImageBatches:
        """Move the uint8 tensors to ``device`` once (a no-op when already there)."""
        if self._device != device:
            self._images, self._labels = self.data.images.to(device), self.data.labels.to(device)
            self._device = device
        return self

    def iterate(
        self, epoch: int, *, rank: int = 0, world: int = 1, device: torch.device | None = None, start: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if device is not None:
            self.to(device)
        images, labels = self._images, self._labels
        n = len(labels)
        gen = epoch_generator(self.seed, epoch)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        params = self.augment.draw(n, gen) if self.augment else None
        if isinstance(images, ImageFiles):  # decoded batch by batch, a few batches ahead, then moved
            for idx, x in prefetched(images, self._plan(order, rank, world, start)):
                x, y = x.to(labels.device), labels[idx.to(labels.device)]
                if params is not None:
                    x = self.augment.apply(x, params[idx].to(x.device))  # type: ignore[union-attr]
                yield x.float().div_(255), y
            return
        # drawn on the CPU (the same numbers on every device), then moved once per epoch: on a GPU a per-batch copy
        # of the indices would wait for the device every step
        order = order.to(images.device)
        params = params.to(images.device) if params is not None else None
        for idx in self._plan(order, rank, world, start):
            x = images[idx]
            if params is not None:
                x = self.augment.apply(x, params[idx])  # type: ignore[union-attr]
            yield x.float().div_(255), labels[idx]

    def _plan(self, order: torch.Tensor, rank: int, world: int, start: int) -> Iterator[torch.Tensor]:
        """The indices of this process's share of each global batch from ``start`` on: global batch i is
        ``order[i*G:(i+1)*G]`` and process ``rank`` takes its ``rank``-th contiguous slice."""
        n, g = len(order), self.batch_size * world
        n_batches = self.num_batches(world)
        if self.drop_last and n < g:  # a dataset smaller than one global batch: one batch of everything
            g = n
        for i in range(start, n_batches):
            chunk = slice(i * g, min((i + 1) * g, n))
            mine = shard(chunk.stop - chunk.start, rank, world)
            if mine.stop == mine.start:
                continue
            yield order[chunk][mine]
