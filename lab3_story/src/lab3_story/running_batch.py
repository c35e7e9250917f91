"""Continuous batching: stories join a running batch at its next decoding step and leave it when they end.

    batch = RunningBatch(generator)
    batch.join(prompts, decodings, callbacks)   # prefilled together, merged into the batch, first token picked
    while batch:
        batch.step()                            # one token for every row; ended or cancelled rows leave

Each row has its own slice of the KV cache (its own rows of every layer's keys and values), its own attention
mask row and its own position ids, so rows that joined at different steps share each forward pass. All rows'
real tokens end at the cache's right edge (every step appends one column to every row), so a row that joins is
left-padded (masked) to the batch's length, or the batch is left-padded to the newcomers'; the columns no row
uses any more are cut when rows leave. Padding is on the left and masked, and every row's own tokens keep their
distances, so GPT-Neo's local (windowed) attention sees the same tokens as alone: a story is the one
``ImageStoryGenerator.decode`` writes (HF ``generate``) for the same prompt and ``Decoding`` (tested).

Each token is picked as ``decode`` picks it: the repetition penalty over the row's own story tokens (not its
prompt), then ``decoding.pick`` with the row's own generator (one draw per step of a sampled row). The tokens a
row has written are kept as a (B, V) mask beside its cache rows, so the penalty is three tensor operations per
step for the whole batch, not a few per row (per-row Python was 40% of a step's time with 8 rows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from lab3_story.decoding import Decoding, pick

if TYPE_CHECKING:
    from lab3_story.generator import ImageStoryGenerator

RowCallback = Callable[
    [list[int], bool], bool
]  # (the row's story tokens so far, row done) → keep writing it?


@dataclass
class Row:
    decoding: Decoding
    on_tokens: RowCallback
    draws: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    done: bool = False


class RunningBatch:
    """The rows being written now, with their KV cache, attention mask and next positions."""

    def __init__(self, generator: ImageStoryGenerator) -> None:
        self.gen = generator
        self.model = generator.storyteller
        self.device = generator.device
        self.eos = generator.tokenizer.eos_token_id
        self.rows: list[Row] = []
        self.cache = None  # transformers' DynamicCache: each layer's keys/values (B, heads, T, head_dim)
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)  # (B, T): 1 = a real token
        self.positions = torch.zeros((0,), dtype=torch.long, device=self.device)  # (B,): the next token's
        self.last = torch.zeros((0,), dtype=torch.long, device=self.device)  # (B,): the token fed next
        # (B, V): the story tokens each row has written (its repetition penalty)
        self.seen = torch.zeros((0, 0), dtype=torch.bool, device=self.device)
        self.steps = 0  # forward passes since the batch was last empty
        self.widest = 0  # most rows at once since then

    def __len__(self) -> int:
        return len(self.rows)

    @torch.inference_mode()
    def join(
        self, prompts: Sequence[str], decodings: Sequence[Decoding], callbacks: Sequence[RowCallback]
    ) -> None:
        """Prefill ``prompts`` together (left-padded), merge them into the batch and pick their first tokens;
        ``callbacks[i](tokens, done)`` then hears about each of row i's tokens."""
        from transformers import DynamicCache

        enc = self.gen.tokenizer(list(prompts), return_tensors="pt", padding=True).to(self.device)
        mask = enc["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()  # full layers: the local window is GPT-Neo's own mask over the cache columns
        with self.gen._models:
            logits = self.model(
                input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions, cache=cache
            ).logits[:, -1]
        rows = [Row(d, cb, d.generator(self.device)) for d, cb in zip(decodings, callbacks, strict=True)]
        self._merge(rows, cache, mask, mask.sum(-1), logits.shape[-1])
        self._advance(logits, range(len(self.rows) - len(rows), len(self.rows)))

    @torch.inference_mode()
    def step(self) -> None:
        """One token for every row; rows that end (budget, end of text, cancelled) leave the batch."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        with self.gen._models:
            logits = self.model(
                input_ids=self.last[:, None],
                attention_mask=self.mask,
                position_ids=self.positions[:, None],
                cache=self.cache,
            ).logits[:, -1]
        self.positions = self.positions + 1
        self.steps += 1
        self._advance(logits, range(len(self.rows)))

    def _advance(self, logits: torch.Tensor, rows: range) -> None:
        """Pick the next token of ``rows`` (indices into the batch) from their ``logits`` (len(rows), V)."""
        scores = logits.float()
        penalty = self.gen.config.repetition_penalty
        picked = self.rows[rows.start : rows.stop]
        if penalty != 1.0:  # as HF's RepetitionPenaltyLogitsProcessor, over the row's story tokens only
            penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
            scores = torch.where(self.seen[rows.start : rows.stop], penalized, scores)
        tokens = pick(scores, [r.decoding for r in picked], [r.draws for r in picked], self.gen.config.top_p)
        self.last[rows.start : rows.stop] = tokens
        # marked even when it is the end of text: that row leaves in this step
        self.seen[torch.arange(rows.start, rows.stop, device=self.device), tokens] = True
        for row, token in zip(picked, tokens.tolist(), strict=True):
            if token == self.eos:
                row.done = True
            else:
                row.tokens.append(token)
                row.done = len(row.tokens) >= row.decoding.new_tokens
            if not row.on_tokens(row.tokens, row.done):
                row.done = True  # cancelled
        if any(r.done for r in picked):
            self._keep([i for i, r in enumerate(self.rows) if not r.done])

    def _merge(self, rows: list[Row], cache, mask: torch.Tensor, positions: torch.Tensor, vocab: int) -> None:
        """Add prefilled rows: the shorter side is left-padded (masked columns) to the longer one's length."""
        seen = torch.zeros((len(rows), vocab), dtype=torch.bool, device=self.device)
        if not self.rows:
            self.cache, self.mask, self.positions, self.seen = cache, mask, positions, seen
            self.last = positions.new_zeros(len(rows))
            self.rows = rows
            self.steps = 0
            self.widest = len(rows)
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_left(old.keys, width, -2), _pad_left(new.keys, width, -2)])
            old.values = torch.cat([_pad_left(old.values, width, -2), _pad_left(new.values, width, -2)])
        self.mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(mask, width, 1)])
        self.positions = torch.cat([self.positions, positions])
        self.last = torch.cat([self.last, self.last.new_zeros(len(rows))])
        self.seen = torch.cat([self.seen, seen])
        self.rows += rows
        self.widest = max(self.widest, len(self.rows))

    def _keep(self, keep: list[int]) -> None:
        """Only the rows ``keep`` stay; the columns that none of them uses are cut."""
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = None
            self.mask = self.mask[:0, :0]
            self.positions, self.last, self.seen = self.positions[:0], self.last[:0], self.seen[:0]
            return
        index = torch.tensor(keep, device=self.device)
        self.mask, self.positions, self.last = self.mask[index], self.positions[index], self.last[index]
        self.seen = self.seen[index]
        first = int(self.mask.any(0).long().argmax())  # the first column some row still uses
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, first:]
            layer.values = layer.values[index, :, first:]


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``t`` with zeros before its columns along ``dim``, up to ``width`` columns."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)
