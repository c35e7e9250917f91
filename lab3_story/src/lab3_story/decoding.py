"""Each story its own settings inside one batched ``generate``: length, temperature, greedy or sampled, seed.

A sampled row draws its tokens from its own ``torch.Generator``, seeded with the story's seed: one uniform per
step, turned into a token through the row's top-p distribution (``RowSampler``). No draw depends on the other
rows, on the batch size or on the global RNG, so a story is the same whether it was written alone or beside
seven others with other settings (tested), and two stories never share a stream of draws. ``RowStops`` ends each
row at its own budget, at its end-of-text token or when its request is cancelled, and hands each new token to
a callback (the scheduler streams text from it). ``generate`` itself runs greedy: the sampler's chosen token is
the only finite score of a sampled row, so the argmax is that token.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, StoppingCriteria


@dataclass(frozen=True)
class Decoding:
    """How one story is written."""

    new_tokens: int  # the budget (``prompts.story_tokens``)
    sample: bool = True  # False: greedy, nothing drawn
    temperature: float = 1.0
    seed: int | None = None  # None: a fresh seed from the OS, a new story each time

    def generator(self, device: torch.device) -> torch.Generator | None:
        if not self.sample:
            return None
        seed = secrets.randbits(63) if self.seed is None else self.seed
        return torch.Generator(device=device).manual_seed(seed)


class RowSampler(LogitsProcessor):
    """Temperature, then top-p, then one draw per sampled row from that row's generator; greedy rows pass."""

    def __init__(self, decodings: Sequence[Decoding], top_p: float, device: torch.device) -> None:
        self.sampled = torch.tensor([d.sample for d in decodings], device=device)
        temperature = [d.temperature if d.sample else 1.0 for d in decodings]
        self.temperature = torch.tensor(temperature, dtype=torch.float32, device=device)[:, None]  # (B, 1)
        self.generators = [d.generator(device) for d in decodings]
        self.top_p = top_p
        self.device = device

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not any(self.generators):
            return scores
        token = _draw(scores, self.temperature, self.generators, self.top_p)
        chosen = torch.full_like(scores, float("-inf")).scatter(-1, token, 0.0)
        return torch.where(self.sampled[:, None], chosen, scores)


def _draw(
    scores: torch.Tensor,
    temperature: torch.Tensor,
    generators: Sequence[torch.Generator | None],
    top_p: float,
) -> torch.Tensor:
    """(B, 1): each sampled row's token, drawn from its top-p distribution at its temperature (B, 1) with one
    uniform from its generator; a greedy row (None) draws nothing and gets a meaningless pick."""
    device = scores.device
    uniform = torch.stack(
        [
            torch.rand((), generator=g, device=device) if g is not None else torch.zeros((), device=device)
            for g in generators
        ]
    )  # (B,): every sampled row draws exactly one number per step
    probs = torch.softmax(scores.float() / temperature, dim=-1)  # (B, V)
    sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the more likely tokens
    kept = sorted_probs * (before < top_p)  # the smallest head whose mass reaches top_p (≥ 1 token)
    cdf = kept.cumsum(-1)
    pick = torch.searchsorted(cdf, (uniform * cdf[:, -1])[:, None], right=True)  # (B, 1)
    return order.gather(-1, pick.clamp(max=scores.shape[-1] - 1))


def pick(
    scores: torch.Tensor,
    decodings: Sequence[Decoding],
    generators: Sequence[torch.Generator | None],
    top_p: float,
) -> torch.Tensor:
    """(B,): the next token of each row, as ``generate`` with ``RowSampler`` picks it (the running batch's
    way): a greedy row's argmax, a sampled row's draw from its own generator."""
    greedy = scores.argmax(-1)
    if not any(g is not None for g in generators):
        return greedy
    temperature = [d.temperature if d.sample else 1.0 for d in decodings]
    temperature = torch.tensor(temperature, dtype=torch.float32, device=scores.device)[:, None]
    token = _draw(scores, temperature, generators, top_p)[:, 0]
    sampled = torch.tensor([g is not None for g in generators], device=scores.device)
    return torch.where(sampled, token, greedy)


OnTokens = Callable[[int, list[int], bool], bool]  # (row, its new tokens so far, row done) → keep writing it?


class RowStops(StoppingCriteria):
    """Per row: stop at its budget, at end of text, or when ``on_tokens`` says so; ``tokens`` are its story's."""

    def __init__(self, budgets: Sequence[int], eos_token_id: int, on_tokens: OnTokens | None = None) -> None:
        self.budgets = list(budgets)
        self.eos = eos_token_id
        self.on_tokens = on_tokens
        self.tokens: list[list[int]] = [[] for _ in budgets]
        self.done = [False] * len(budgets)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        for row, token in enumerate(input_ids[:, -1].tolist()):
            if self.done[row]:
                continue  # its later tokens are padding
            if token == self.eos:
                self.done[row] = True
            else:
                self.tokens[row].append(token)
                self.done[row] = len(self.tokens[row]) >= self.budgets[row]
            if self.on_tokens is not None and not self.on_tokens(row, self.tokens[row], self.done[row]):
                self.done[row] = True  # cancelled
        return torch.tensor(self.done, device=input_ids.device)
