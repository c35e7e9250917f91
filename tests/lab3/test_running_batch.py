"""Continuous batching by value: rows that join a running batch at different steps, with prompts longer and
shorter than the batch's, and leave it at different steps, write exactly what HF ``generate`` writes for each
prompt alone; a row whose callback says stop leaves at once."""

from __future__ import annotations

import dataclasses

import pytest

from lab3_story import ImageStoryGenerator
from lab3_story.decoding import Decoding
from lab3_story.running_batch import RunningBatch

PROMPTS = [
    "A cat.",
    "This is a story about a red bike on a long road near a park with a big tree and a small house.",
    "Hi",
    "Once upon a time there was a dog.",
]
DECODINGS = [
    Decoding(60, sample=False),
    Decoding(40, seed=1, temperature=1.3),
    Decoding(25, seed=2),
    Decoding(50, seed=1, temperature=0.7),
]


def _collector(texts: dict, i: int, tokenizer, stop_after: int | None = None):
    def on_tokens(tokens: list[int], done: bool) -> bool:
        if stop_after is not None and len(tokens) >= stop_after:
            texts[i] = tokens
            return False
        if done:
            texts[i] = tokenizer.decode(tokens, skip_special_tokens=True)
        return True

    return on_tokens


def test_rows_joining_and_leaving_write_what_generate_writes_alone(generator: ImageStoryGenerator) -> None:
    alone = [generator.decode([p], [d])[0] for p, d in zip(PROMPTS, DECODINGS, strict=True)]
    texts: dict[int, str] = {}
    batch = RunningBatch(generator)
    widths = []

    def join(*rows: int) -> None:
        before = batch.mask.shape[1]
        batch.join(
            [PROMPTS[i] for i in rows],
            [DECODINGS[i] for i in rows],
            [_collector(texts, i, generator.tokenizer) for i in rows],
        )
        widths.append((before, len(generator.tokenizer(PROMPTS[rows[0]])["input_ids"])))

    join(0)
    for _ in range(3):
        batch.step()
    join(1)  # longer than the batch: the batch is padded
    for _ in range(30):
        batch.step()
    join(2, 3)  # shorter than the batch: the newcomers are padded
    steps = 0
    while batch:
        batch.step()
        steps += 1
    assert widths[1][0] < widths[1][1] and widths[2][0] > widths[2][1]  # both ways of padding happened
    assert [texts[i] for i in range(len(PROMPTS))] == alone
    assert batch.widest == 4 and batch.steps == 3 + 30 + steps
    assert batch.mask.shape[0] == 0 and batch.cache is None  # everything left


def test_cut_columns_and_a_stopped_row(generator: ImageStoryGenerator) -> None:
    """A row stopped by its callback leaves at that token; when the longest prompt's row leaves, the columns
    no other row uses are cut, and the others go on unchanged."""
    rows = [1, 0, 2]  # the long prompt first; it is stopped after 3 tokens
    alone = generator.decode([PROMPTS[i] for i in rows[1:]], [DECODINGS[i] for i in rows[1:]])
    texts: dict[int, object] = {}
    tok = generator.tokenizer
    callbacks = [_collector(texts, 1, tok, stop_after=3)] + [_collector(texts, i, tok) for i in rows[1:]]
    batch = RunningBatch(generator)
    batch.join([PROMPTS[i] for i in rows], [DECODINGS[i] for i in rows], callbacks)
    for _ in range(4):
        batch.step()
    assert len(texts[1]) == 3 and len(batch) == 2  # the stopped row left at its third token
    shorter = max(len(tok(PROMPTS[i])["input_ids"]) for i in rows[1:])
    assert batch.mask.shape[1] == batch.cache.layers[0].keys.shape[2] == shorter + 4  # the long one's cut
    while batch:
        batch.step()
    assert [texts[0], texts[2]] == alone


@pytest.mark.parametrize("penalty", [1.0, 1.5])
def test_the_repetition_penalty_is_generates(
    generator: ImageStoryGenerator, penalty: float, monkeypatch
) -> None:
    monkeypatch.setattr(
        generator, "config", dataclasses.replace(generator.config, repetition_penalty=penalty)
    )
    (alone,) = generator.decode([PROMPTS[3]], [Decoding(60, sample=False)])
    texts: dict[int, str] = {}
    batch = RunningBatch(generator)
    batch.join([PROMPTS[3]], [Decoding(60, sample=False)], [_collector(texts, 0, generator.tokenizer)])
    while batch:
        batch.step()
    assert texts[0] == alone
