"""Tokenize once, cache on disk, serve length-grouped, dynamically padded batches from memory.

A split is stored ragged: every sentence's token ids end to end in one int32 tensor plus per-sentence offsets
and lengths. A batch gathers its rows with one index matrix and pads only to its own longest sentence, so
there is no per-sample Python and no [PAD] compute beyond a few tokens per batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from dla_core.data.batches import batch_count, epoch_generator, shard
from dla_core.runs import atomic_write
from lab2_distilbert.data import TextSet

log = logging.getLogger(__name__)

CACHE_VERSION = 1


#### Encoding with a disk cache ####


@dataclass
class Encoded:
    ids: torch.Tensor  # (total_tokens,) int32, every sentence's ids end to end
    offsets: torch.Tensor  # (N,) int64 start of each sentence in ids
    lengths: torch.Tensor  # (N,) int64
    labels: torch.Tensor  # (N,) int64
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.lengths)


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of everything that decides the ids: the tokenizer's serialised vocabulary, rules and class."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # without the truncation/padding state that the last call left on it
        rules = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        h.update(json.dumps(rules, sort_keys=True).encode())
    else:  # a slow tokenizer: its vocabulary and special tokens
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps(tokenizer.all_special_tokens).encode())
    return h.hexdigest()


def cache_key(tokenizer, data: TextSet, max_length: int) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{tokenizer_fingerprint(tokenizer)}|{max_length}|".encode())
    for text in data.texts:
        h.update(text.encode())
        h.update(b"\0")
    h.update(data.labels.tobytes())
    return h.hexdigest()[:24]


def encode(tokenizer, data: TextSet, max_length: int, cache_dir: Path | None = None) -> Encoded:
    """Token ids of ``data`` (truncated to ``max_length``), read from ``cache_dir`` when tokenized before."""
    path = Path(cache_dir) / f"tokens-{cache_key(tokenizer, data, max_length)}.pt" if cache_dir else None
    if path is not None and path.exists():
        try:
            saved = torch.load(path, weights_only=True)
            log.info("tokens from cache %s", path)
            return Encoded(**saved, from_cache=True)
        except Exception as e:  # a damaged cache file is rebuilt
            log.warning("ignoring unreadable token cache %s (%s)", path, e)
    rows = tokenizer(data.texts, truncation=True, max_length=max_length, padding=False)["input_ids"]
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    offsets = torch.cumsum(lengths, 0) - lengths
    ids = torch.tensor([t for r in rows for t in r], dtype=torch.int32)
    enc = Encoded(ids, offsets, lengths, torch.from_numpy(data.labels.copy()))
    if path is not None:
        state = {"ids": enc.ids, "offsets": enc.offsets, "lengths": enc.lengths, "labels": enc.labels}
        atomic_write(path, lambda p: torch.save(state, p))
        log.info("tokenized %d sentences → %s", len(enc), path)
    return enc


#### Batches ####


class TokenBatches:
    """Dict batches {input_ids, attention_mask, labels, index} of an encoded split, padded per batch.

    Length grouping: training draws a permutation from (seed, epoch), cuts it into pools of ``pool`` global
    batches, sorts each pool by length, and serves the pool's batches in a random order; evaluation sorts the
    whole split. Global batch i is split into contiguous slices, one per process (as ImageBatches do).
    """

    def __init__(
        self,
        data: Encoded,
        batch_size: int,
        *,
        pad_id: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool | None = None,
        pool: int = 50,
    ):
        self.data = data
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = shuffle if drop_last is None else drop_last
        self.pool = pool
        self._device: torch.device | None = None
        self._t = (data.ids.long(), data.offsets, data.lengths, data.labels)

    def __len__(self) -> int:
        return self.num_batches(1)

    def num_batches(self, world: int) -> int:
        return batch_count(len(self.data), self.batch_size * world, self.drop_last)

    def to(self, device: torch.device) -> TokenBatches:
        if self._device != device:
            d = self.data
            self._t = tuple(t.to(device) for t in (d.ids.long(), d.offsets, d.lengths, d.labels))
            self._device = device
        return self

    def order(self, epoch: int, world: int = 1) -> list[torch.Tensor]:
        """The global batches of ``epoch`` as index tensors (identical on every process)."""
        n, g = len(self.data), self.batch_size * world
        lengths = self.data.lengths
        n_batches = self.num_batches(world)
        if self.drop_last and n < g:
            g = n
        if not self.shuffle:
            idx = torch.argsort(lengths, stable=True)
            return [idx[i * g : (i + 1) * g] for i in range(n_batches)]
        gen = epoch_generator(self.seed, epoch)
        perm = torch.randperm(n, generator=gen)[: n_batches * g]  # drop the tail
        batches = []
        for p in range(0, len(perm), g * self.pool):
            chunk = perm[p : p + g * self.pool]
            chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
            batches += list(chunk.split(g))
        return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]

    def iterate(
        self, epoch: int, *, rank: int = 0, world: int = 1, device: torch.device | None = None, start: int = 0
    ) -> Iterator[dict[str, torch.Tensor]]:
        if device is not None:
            self.to(device)
        ids, offsets, lengths, labels = self._t
        for batch in self.order(epoch, world)[start:]:
            local = batch[shard(len(batch), rank, world)].to(ids.device)
            if len(local) == 0:
                continue
            n_tok = lengths[local]  # (B,)
            width = int(n_tok.max())
            pos = torch.arange(width, device=ids.device)  # (T,)
            mask = pos[None, :] < n_tok[:, None]  # (B, T)
            index = (offsets[local][:, None] + pos[None, :]).clamp_(max=len(ids) - 1)
            input_ids = torch.where(mask, ids[index], self.pad_id)  # (B, T)
            yield {
                "input_ids": input_ids,
                "attention_mask": mask.long(),
                "labels": labels[local],
                "index": local,
            }
