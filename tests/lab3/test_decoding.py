"""RowSampler by value on a hand-made distribution: top-p keeps the smallest head reaching p, temperature
sharpens or flattens, a greedy row is left as it is, and each row's draws come from its own seed."""

from __future__ import annotations

import math

import torch

from lab3_story.decoding import Decoding, RowSampler

PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])
CPU = torch.device("cpu")


def _draws(decoding: Decoding, top_p: float, n: int = 4000) -> torch.Tensor:
    """The tokens one row picks over ``n`` steps (the only finite score of a sampled row is its pick)."""
    sampler = RowSampler([decoding], top_p, CPU)
    scores = PROBS.log()[None]  # (1, V)
    picks = [int(sampler(None, scores.clone()).argmax()) for _ in range(n)]
    return torch.bincount(torch.tensor(picks), minlength=len(PROBS)).float() / n


def test_top_p_keeps_the_smallest_head_that_reaches_p() -> None:
    freq = _draws(Decoding(1, temperature=1.0, seed=0), top_p=0.7)  # 0.5 < 0.7 ≤ 0.5 + 0.3: two tokens
    assert freq[2:].sum() == 0
    assert torch.allclose(freq[:2], torch.tensor([0.5, 0.3]) / 0.8, atol=0.03)
    assert torch.allclose(_draws(Decoding(1, seed=0), top_p=1.0), PROBS, atol=0.03)  # all four


def test_temperature_reshapes_the_distribution() -> None:
    t = 0.5
    sharp = PROBS ** (1 / t) / (PROBS ** (1 / t)).sum()
    assert torch.allclose(_draws(Decoding(1, temperature=t, seed=1), top_p=1.0), sharp, atol=0.03)


def test_rows_draw_from_their_own_seeds_and_greedy_rows_pass() -> None:
    rows = [Decoding(1, seed=7), Decoding(1, sample=False), Decoding(1, seed=7), Decoding(1, seed=8)]
    sampler = RowSampler(rows, 1.0, CPU)
    scores = PROBS.log()[None].repeat(4, 1)
    picks = torch.stack([sampler(None, scores.clone()).argmax(-1) for _ in range(200)])  # (steps, rows)
    assert torch.equal(picks[:, 0], picks[:, 2]) and not torch.equal(picks[:, 0], picks[:, 3])
    assert (picks[:, 1] == 0).all()  # greedy: the argmax of the untouched scores
    untouched = sampler(None, scores.clone())[1]
    assert torch.equal(untouched, scores[1])
    assert math.isinf(float(sampler(None, scores.clone())[0].min()))  # a sampled row: one finite score
