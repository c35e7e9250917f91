"""Streamed image files: the same batches as in memory for the same (seed, epoch) — permutation, augmentation,
last partial batch, per-process shares — with memory bounded by a few batches, chosen against the declared
budget and recorded in ``source``."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dla_core.data import Augment, ImageBatches, load_dataset, streamed
from dla_core.data import folders as folders_module
from dla_core.errors import DlaError


def _folder(root: Path, n_per_class: int = 23, classes: int = 3, grey: bool = False, seed: int = 0) -> Path:
    """PNGs of varying size (resized/cropped on decode), random pixels so any misplaced image shows."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"k{c}").mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            shape = (18 + i % 7, 22 + i % 3) + (() if grey else (3,))
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / f"k{c}" / f"{i:03d}.png")
    return root


def _load(spec: str, mode: str, monkeypatch, size=(12, 12)):
    monkeypatch.setenv("DLA_DATA_STREAM", mode)
    return load_dataset(spec, size=size)


def _batches(
    data, epoch: int, rank: int = 0, world: int = 1, **kw
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(ImageBatches(data, **kw).iterate(epoch, rank=rank, world=world))


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, y) and torch.equal(s, t) for (x, s), (y, t) in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("grey", [False, True])
def test_streamed_batches_equal_in_memory_ones_for_each_seed_epoch_and_process(tmp_path, monkeypatch, grey):
    spec = f"imagefolder:{_folder(tmp_path / 'f', grey=grey)}"
    mem, mem_test = _load(spec, "never", monkeypatch)
    lazy, lazy_test = _load(spec, "always", monkeypatch)
    assert isinstance(lazy.images, streamed.ImageFiles) and isinstance(mem.images, torch.Tensor)
    assert lazy.shape == mem.shape == ((1,) if grey else (3,)) + (12, 12)
    assert lazy.stats() == mem.stats()
    train = {"batch_size": 5, "shuffle": True, "augment": Augment(crop_padding=2, flip=True)}
    for kw in (train, {"batch_size": 4}):  # training (drops a partial batch) and evaluation (keeps it)
        for world in (1, 2):
            for rank in range(world):
                for epoch, seed in ((0, 0), (3, 7)):
                    a = _batches(mem, epoch, rank, world, seed=seed, **kw)
                    b = _batches(lazy, epoch, rank, world, seed=seed, **kw)
                    assert _same(a, b), (kw, world, rank, epoch)
    evaluation = _batches(lazy_test, 0, batch_size=4)
    assert len(lazy_test) % 4 != 0 and len(evaluation[-1][0]) == len(lazy_test) % 4  # the last partial batch
    assert _same(_batches(mem_test, 0, batch_size=4), evaluation)
    resumed = list(ImageBatches(lazy, 5, shuffle=True, seed=1).iterate(2, start=3))
    assert _same(resumed, _batches(mem, 2, batch_size=5, shuffle=True, seed=1)[3:])  # resumed mid-epoch


def test_streamed_subsets_and_conversions_equal_in_memory_ones(tmp_path, monkeypatch):
    spec = f"imagefolder:{_folder(tmp_path / 'f')}:k2,k0"
    mem, _ = _load(spec, "never", monkeypatch)
    lazy, _ = _load(spec, "always", monkeypatch)
    assert isinstance(lazy.images, streamed.ImageFiles) and lazy.labels.tolist() == mem.labels.tolist()
    index = torch.tensor([9, 2, 30, 4])
    pairs = (
        (mem.subset(index), lazy.subset(index)),
        (mem.adapt((1, 8, 6)), lazy.adapt((1, 8, 6))),
        (mem.adapt((1, 8, 6)).adapt((3, 5, 5)), lazy.adapt((1, 8, 6)).adapt((3, 5, 5))),  # chained
    )
    for a, b in pairs:
        assert isinstance(b.images, streamed.ImageFiles) and b.shape == a.shape
        assert _same(_batches(a, 0, batch_size=6), _batches(b, 0, batch_size=6))
    for k in (5, torch.tensor(5), slice(1, 9, 3), torch.tensor([7, 0]), mem.labels == 1, [4, 2]):
        assert torch.equal(lazy.images[k], mem.images[k]), k  # decoded on demand, as a tensor indexes


def test_streaming_holds_a_few_batches_not_the_dataset(tmp_path, monkeypatch):
    spec = f"imagefolder:{_folder(tmp_path / 'f', n_per_class=200, classes=2)}"
    size, batch = (48, 48), 8
    lazy, _ = _load(spec, "always", monkeypatch, size)
    decode = folders_module._decode
    decoded = [0]

    def counted(*a):
        decoded[0] += 1
        return decode(*a)

    monkeypatch.setattr(folders_module, "_decode", counted)
    consumed, ahead = 0, []
    for x, _ in ImageBatches(lazy, batch, shuffle=True).iterate(0):
        consumed += len(x)
        ahead.append(decoded[0] - consumed)  # decoded (or decoding) but not yet handed out
    assert consumed == len(lazy) // batch * batch and max(ahead) <= streamed.PREFETCH * batch
    monkeypatch.setattr(folders_module, "_decode", decode)

    def peak(data) -> int:
        tracemalloc.start()
        for _ in ImageBatches(data, batch, shuffle=True).iterate(0):
            pass
        held = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return held

    tracemalloc.start()
    mem, _ = _load(spec, "never", monkeypatch, size)
    in_memory = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    whole = int(np.prod(mem.images.shape))
    assert in_memory >= whole  # tracemalloc sees the decoded buffers
    one_batch = batch * 3 * 48 * 48
    held = peak(lazy)
    assert held < 8 * one_batch < whole / 4, held  # a few batches (and the pool's own), not 320 images


def test_budget_decides_and_the_decision_is_recorded(tmp_path, monkeypatch):
    spec = f"imagefolder:{_folder(tmp_path / 'f', n_per_class=5, classes=2)}"
    monkeypatch.setenv("DLA_DATA_STREAM", "auto")
    whole = 8 * 3 * 12 * 12  # the training split: 8 of 10 images at (3, 12, 12)
    monkeypatch.setenv("DLA_DATA_MEMORY", str(whole))
    fits, _ = load_dataset(spec, size=(12, 12))
    assert isinstance(fits.images, torch.Tensor)
    assert (
        fits.source | {"storage": "memory", "bytes": whole, "budget": whole, "forced": False} == fits.source
    )
    monkeypatch.setenv("DLA_DATA_MEMORY", str(whole - 1))
    over, _ = load_dataset(spec, size=(12, 12))
    assert isinstance(over.images, streamed.ImageFiles) and over.source["storage"] == "streamed"
    assert over.source["budget"] == whole - 1 and over.source["forced"] is False
    monkeypatch.setenv("DLA_DATA_MEMORY", "1G")
    monkeypatch.setenv("DLA_DATA_STREAM", "always")
    forced, _ = load_dataset(spec, size=(12, 12))
    assert forced.source["storage"] == "streamed" and forced.source["forced"] is True
    assert streamed.parse_size("1.5g") == 3 << 29 and streamed.parse_size("512M") == 512 << 20
    for name, value, message in (
        ("DLA_DATA_MEMORY", "lots", "not a size"),
        ("DLA_DATA_STREAM", "yes", "auto"),
    ):
        monkeypatch.setenv(name, value)
        with pytest.raises(DlaError, match=message):
            load_dataset(spec, size=(12, 12))


def test_a_corrupt_file_met_mid_epoch_is_one_error_line(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "f", n_per_class=30, classes=2)
    bad = folder / "k1" / "011.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:2000])  # the header reads; the pixels stop short
    lazy, _ = _load(f"imagefolder:{folder}", "always", monkeypatch)  # found only when decoded
    with pytest.raises(DlaError, match=r"011\.png: not a readable image") as e:
        for _ in ImageBatches(lazy, 4).iterate(0):
            pass
    assert "\n" not in e.value.message
