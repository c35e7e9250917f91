"""ImageStoryGenerator on tiny random-weight BLIP + GPT-Neo checkpoints."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from lab3_story import ImageSourceError, ImageStoryGenerator
from lab3_story.prompts import make_prompt


@pytest.fixture
def greedy(generator: ImageStoryGenerator):
    saved = generator.config
    generator.config = dataclasses.replace(saved, sample=False)
    yield generator
    generator.config = saved


def test_generate_from_image(generator: ImageStoryGenerator, photos: Path, server: str) -> None:
    local = generator.generate_from_image(photos / "china.jpg", length="short")
    assert set(local) == {"caption", "story", "word_count"}
    assert local["caption"]
    assert local["story"].startswith(make_prompt(local["caption"]))
    assert local["word_count"] == len(local["story"].split())
    # the same photo over HTTP gives the same caption and (same seed) the same story
    assert generator.generate_from_image(f"{server}/china.jpg", length="short") == local


def test_bad_source_raises_one_error(generator: ImageStoryGenerator, photos: Path) -> None:
    with pytest.raises(ImageSourceError, match=r"truncated\.jpg: corrupt or truncated"):
        generator.generate_from_image(photos / "truncated.jpg")


def test_many_sources_keep_order_and_bad_ones_do_not_stop_the_rest(
    generator: ImageStoryGenerator, photos: Path, server: str, closed_port_url: str
) -> None:
    sources = [
        photos / "china.jpg",
        f"{server}/missing.jpg",
        photos / "flower.jpg",
        "ftp://example.com/a.jpg",
        f"{server}/flower.jpg",
        closed_port_url,
    ]  # batch size 4: two batches, errors in both
    results = list(generator.stories(sources, length="short"))
    assert [r.source for r in results] == [str(s) for s in sources]
    assert [r.error is None for r in results] == [True, False, True, False, True, False]
    assert "HTTP 404" in results[1].error and "unsupported URL scheme" in results[3].error
    assert all(r.story and r.word_count > 0 for r in results if r.error is None)
    assert results[2].caption == results[4].caption  # flower.jpg from disk and over HTTP


def test_captions_batched_equal_unbatched(generator: ImageStoryGenerator, photos: Path) -> None:
    from lab3_story.images import load_image

    images = [load_image(photos / n) for n in ("china.jpg", "flower.jpg", "china.jpg")]
    assert generator.caption(images) == [generator.caption([im])[0] for im in images]


def test_stories_batched_equal_unbatched_greedy(greedy: ImageStoryGenerator) -> None:
    """Left padding + attention mask: prompts of different lengths in one batch give the unbatched stories."""
    prompts = [
        make_prompt("a dog"),
        make_prompt("a big red house on the beach near the river with two boats"),
        make_prompt(""),
    ]
    tokens = [len(greedy.tokenizer(p)["input_ids"]) for p in prompts]
    assert len(set(tokens)) == 3  # really padded
    batched = greedy.write(prompts, "short")
    assert batched == [greedy.write([p], "short")[0] for p in prompts]


def test_seed_makes_sampling_reproducible(generator: ImageStoryGenerator, photos: Path) -> None:
    sources = [photos / "china.jpg", photos / "flower.jpg"]
    first = [r.story for r in generator.stories(sources, "short")]
    assert [r.story for r in generator.stories(sources, "short")] == first
    saved = generator.config
    try:
        generator.config = dataclasses.replace(saved, seed=saved.seed + 1)
        assert [r.story for r in generator.stories(sources, "short")] != first
    finally:
        generator.config = saved


def test_length_sets_the_budget(greedy: ImageStoryGenerator) -> None:
    prompt = [make_prompt("a cat")]
    short, long = greedy.write(prompt, "short")[0], greedy.write(prompt, "long")[0]
    n_short = len(greedy.tokenizer(short)["input_ids"])
    n_long = len(greedy.tokenizer(long)["input_ids"])
    assert n_short <= len(greedy.tokenizer(prompt[0])["input_ids"]) + 100 + 2
    assert n_long > n_short


def test_bad_length_and_models(generator: ImageStoryGenerator, models: Path, tmp_path: Path) -> None:
    from dla_core.errors import DlaError

    with pytest.raises(DlaError, match="length must be one of short, medium, long"):
        generator.write(["x"], "epic")
    with pytest.raises(DlaError, match=r"--caption-model .* is a 'gpt_neo' model, not BLIP"):
        ImageStoryGenerator(
            caption_model=str(models / "storyteller"), story_model=str(models / "storyteller")
        )
    with pytest.raises(DlaError, match=r"--story-model .*: cannot load"):
        ImageStoryGenerator(caption_model=str(models / "captioner"), story_model=str(tmp_path / "none"))


def _greedy_reference(
    gen: ImageStoryGenerator, prompt: str, steps: int, penalty: float, *, skip_prompt: bool
) -> str:
    """Greedy decoding by hand, one prompt at a time (no padding), with the repetition penalty written out."""
    import torch

    ids = gen.tokenizer(prompt, return_tensors="pt")["input_ids"]
    prompt_len = ids.shape[1]
    start = prompt_len if skip_prompt else 0
    eos = gen.tokenizer.eos_token_id
    with torch.inference_mode():
        for _ in range(steps):
            scores = gen.storyteller(ids).logits[0, -1].clone()
            for token in set(ids[0, start:].tolist()):  # tokens already seen: less likely again
                score = scores[token]
                scores[token] = score / penalty if score > 0 else score * penalty
            token = int(scores.argmax())
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            if token == eos:
                break
    return prompt + gen.tokenizer.decode(ids[0, prompt_len:], skip_special_tokens=True)


def test_repetition_penalty_counts_only_the_story(
    greedy: ImageStoryGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The penalty applies to the tokens generated so far, never to the (left-padded) prompt."""
    from lab3_story import generator as module
    from lab3_story.prompts import LENGTH_TOKENS

    monkeypatch.setitem(LENGTH_TOKENS, "short", 40)
    monkeypatch.setattr(module, "end_at_sentence", lambda story, keep=0: story)  # compare uncut stories
    penalty = 2.0  # the random model's scores are flat: 1.2 would barely change its greedy choices
    greedy.config = dataclasses.replace(greedy.config, repetition_penalty=penalty)  # the fixture restores it
    prompts = [make_prompt("a dog and a dog"), make_prompt("a big red house on the beach near the river")]
    expected = [_greedy_reference(greedy, p, 40, penalty, skip_prompt=True) for p in prompts]
    # the case tells the three apart: no penalty, the penalty on the prompt too, the penalty on the story only
    assert expected != [_greedy_reference(greedy, p, 40, 1.0, skip_prompt=True) for p in prompts]
    assert expected != [_greedy_reference(greedy, p, 40, penalty, skip_prompt=False) for p in prompts]
    assert greedy.write(prompts, "short") == expected  # batched, left-padded


def test_stream_ends_with_the_batched_story(greedy: ImageStoryGenerator, photos: Path) -> None:
    from lab3_story.images import load_image

    image = load_image(photos / "china.jpg")
    updates = list(greedy.stream(image, "short", source="china.jpg"))
    first, last = updates[0], updates[-1]
    assert first.caption == greedy.caption([image])[0] and first.story == first.prompt  # the caption first
    assert len(updates) > 3 and all(u.source == "china.jpg" and u.caption == first.caption for u in updates)
    texts = [u.story for u in updates[:-1]]
    assert all(b.startswith(a) and len(b) > len(a) for a, b in itertools.pairwise(texts))
    assert [u.word_count for u in updates[:-1]] == [0] * (len(updates) - 1)
    assert last.story == greedy.write([first.prompt], "short")[0]  # cut at a sentence, as the batch is
    assert last.word_count == len(last.story.split())


def test_stream_takes_its_own_settings_and_a_seed_replays(
    generator: ImageStoryGenerator, photos: Path
) -> None:
    from lab3_story.images import load_image

    image = load_image(photos / "flower.jpg")

    def story(**kw) -> str:
        return list(generator.stream(image, "short", **kw))[-1].story

    assert story(seed=5, temperature=1.5) == story(seed=5, temperature=1.5) != story(seed=6, temperature=1.5)
    assert story(sample=False, seed=None) == story(sample=False, seed=7)  # greedy: no draws


def test_closing_a_stream_stops_the_generation(generator: ImageStoryGenerator, photos: Path) -> None:
    from lab3_story.images import load_image

    stream = generator.stream(load_image(photos / "china.jpg"), "long", sample=False)
    next(stream), next(stream)  # the caption, then the first piece
    stream.close()
    assert len(list(generator.stream(load_image(photos / "china.jpg"), "short"))) > 2  # the models were freed
    assert generator.scheduler.batches[-2].tokens < 200  # the long story stopped early (test_scheduler.py)


def test_a_stream_left_unread_does_not_hold_the_models(generator: ImageStoryGenerator, photos: Path) -> None:
    import threading

    from lab3_story.images import load_image

    image = load_image(photos / "china.jpg")
    abandoned = generator.stream(image, "short")
    next(abandoned), next(abandoned)  # mid-story, neither read on nor closed (a client that went away)
    done: list[int] = []
    other = threading.Thread(
        target=lambda: done.append(len(list(generator.stream(image, "short")))), daemon=True
    )
    other.start()
    other.join(timeout=60)
    assert done and done[0] > 2
    abandoned.close()
