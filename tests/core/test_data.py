from __future__ import annotations

import numpy as np
import pytest
import torch

from dla_core.data import (
    Augment,
    ImageBatches,
    ImageSet,
    formats,
    load_dataset,
    load_splits,
    parse_spec,
    random_crop,
    random_flip,
    shard,
)
from dla_core.data.batches import batch_count
from dla_core.errors import DlaError


def test_digits_loads_offline_and_splits_deterministically():
    s1 = load_splits("digits", val_fraction=0.1)
    s2 = load_splits("digits", val_fraction=0.1)
    assert s1.train.images.dtype == torch.uint8 and s1.train.shape == (1, 8, 8)
    assert len(s1.train) + len(s1.val) + len(s1.test) == 1797
    assert torch.equal(s1.val.labels, s2.val.labels)
    assert s1.train.images.max() > 200  # 0..16 grey levels scaled to the uint8 range


def test_half_of_digits_is_the_test_set_stratified_by_class():
    """Issue 23: the labs' findings on digits rest on as many test images as the bundled 1,797 allow while the
    other half still trains: 899 test images, every class split the same way (its 5-9 half: 448)."""
    train, test = load_dataset("digits")
    assert (len(train), len(test)) == (898, 899)
    per_class = torch.bincount(test.labels, minlength=10) / torch.bincount(
        torch.cat([train.labels, test.labels]), minlength=10
    )
    assert torch.all((per_class - 0.5).abs() < 0.02)
    assert len(load_dataset("digits:5-9")[1]) == 448


def test_class_subset_is_reindexed_and_mapping_recorded():
    train, _test = load_dataset("digits:5-9")
    assert train.classes == ["5", "6", "7", "8", "9"]
    assert train.class_map == [5, 6, 7, 8, 9]
    assert set(train.labels.tolist()) == {0, 1, 2, 3, 4}
    full, _ = load_dataset("digits")
    assert len(train) == int(sum((full.labels == c).sum() for c in range(5, 10)))
    order, _ = load_dataset("digits:9,3")
    assert order.class_map == [9, 3] and set(order.labels.tolist()) == {0, 1}


def test_mnist_fixture_in_real_idx_layout(data_dir):
    train, test = load_dataset("mnist", data_dir)
    assert train.images.shape == (300, 1, 28, 28) and test.images.shape == (
        100,
        1,
        28,
        28,
    )  # test files are .gz
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_idx_roundtrip_and_truncated_file(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    formats.write_idx(tmp_path / "x-idx3-ubyte", a)
    assert np.array_equal(formats.read_idx(tmp_path / "x-idx3-ubyte"), a)
    (tmp_path / "bad").write_bytes((tmp_path / "x-idx3-ubyte").read_bytes()[:-3])
    with pytest.raises(DlaError, match="truncated"):
        formats.read_idx(tmp_path / "bad")


def test_cifar_fixtures_and_superclass(data_dir):
    train, _test = load_dataset("cifar10", data_dir)
    assert train.images.shape == (200, 3, 32, 32) and train.classes[3] == "cat"
    cats, _ = load_dataset("cifar10:cat,dog", data_dir)
    assert cats.classes == ["cat", "dog"] and len(cats) == 40
    people, people_test = load_dataset("cifar100:people", data_dir)
    assert people.classes == ["baby", "boy", "girl", "man", "woman"]
    assert people.class_map == [0, 1, 2, 3, 4] and len(people) == 20 and len(people_test) == 10
    some, _ = load_dataset("cifar100:0,5,9", data_dir)
    assert some.class_map == [0, 5, 9]


def test_cifar_reader_refuses_code_in_pickles(tmp_path):
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    (tmp_path / "cifar-10-batches-py").mkdir()
    for name in [*formats.CIFAR10_TRAIN, "test_batch"]:
        (tmp_path / "cifar-10-batches-py" / name).write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(DlaError, match="refusing"):
        load_dataset("cifar10", tmp_path)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("imagenet", "unknown dataset 'imagenet'"),
        ("digits:12", "out of range"),
        ("digits:cats", "unknown class 'cats'"),
        ("digits:7-3", "empty class range"),
    ],
)
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(DlaError, match=message):
        load_dataset(spec)


def test_missing_dataset_says_where_and_how(tmp_path):
    with pytest.raises(DlaError) as e:
        load_dataset("cifar100:people", tmp_path)
    assert str(tmp_path) in e.value.message and "--download" in e.value.message
    assert parse_spec("CIFAR10:cat") == ("cifar10", "cat")


@pytest.mark.parametrize("spec", ["mnist", "cifar10", "cifar100:people"])
def test_download_without_network_is_one_clear_error(tmp_path, monkeypatch, spec):
    from urllib.error import URLError

    import torchvision

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    for name in ("MNIST", "CIFAR10", "CIFAR100"):
        monkeypatch.setattr(torchvision.datasets, name, offline)
    with pytest.raises(DlaError) as e:
        load_dataset(spec, tmp_path, download=True)
    assert e.value.message.startswith(f"--download: could not fetch {spec.split(':')[0]} into {tmp_path}")
    assert "Temporary failure in name resolution" in e.value.message


def test_a_single_class_selection_warns_that_accuracy_is_trivial(caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        load_dataset("digits:0-1")
    assert "single class" not in caplog.text
    with caplog.at_level(logging.WARNING):
        train, _ = load_dataset("digits:3")
    assert train.num_classes == 1 and "digits:3 selects a single class" in caplog.text


def test_fake_and_adapt():
    fake, _ = load_dataset("fake")
    assert fake.shape == (3, 32, 32) and fake.images.dtype == torch.uint8
    grey = fake.subset(torch.arange(4)).adapt((1, 8, 8))
    assert grey.images.shape == (4, 1, 8, 8) and grey.images.dtype == torch.uint8


def test_batch_augmentation_keeps_shape_dtype_and_varies():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    cropped = random_crop(x, 4, g)
    flipped = random_flip(x, g)
    assert cropped.shape == x.shape and cropped.dtype == torch.uint8
    assert flipped.shape == x.shape and flipped.dtype == torch.uint8
    assert not torch.equal(cropped, x) and not torch.equal(flipped, x)
    # every flipped image is either the original or its mirror; some of each
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 0 < int(same.sum()) < 64
    # a crop is a shifted window: zero offset (dy = dx = padding) is the identity
    aug = Augment(crop_padding=4)
    params = torch.tensor([[4, 4, 0], [0, 8, 0]])
    out = aug.apply(x[:2], params)
    assert torch.equal(out[0], x[0])
    # dy=0, dx=8: shifted down by 4 (zero rows on top) and left by 4
    assert torch.equal(out[1, :, 4:, :28], x[1, :, :28, 4:]) and int(out[1, :, :4].sum()) == 0


def test_batches_are_reproducible_and_shard_like_one_process():
    train, _ = load_dataset("digits")
    loader = ImageBatches(train, 32, shuffle=True, augment=Augment(crop_padding=1, flip=True), seed=3)
    a = [y for _, y in loader.iterate(2)]
    b = [y for _, y in loader.iterate(2)]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(torch.cat(a), torch.cat([y for _, y in loader.iterate(3)]))
    # two processes with batch 16 see exactly the 32-image batches of one process, split in halves
    half = ImageBatches(train, 16, shuffle=True, augment=Augment(crop_padding=1, flip=True), seed=3)
    assert half.num_batches(2) == loader.num_batches(1)
    r0 = list(half.iterate(2, rank=0, world=2))
    r1 = list(half.iterate(2, rank=1, world=2))
    one = list(loader.iterate(2))
    for (x0, y0), (x1, y1), (x, y) in zip(r0, r1, one, strict=True):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    # resuming from batch k replays the same batches
    assert torch.equal(next(iter(loader.iterate(2, start=5)))[1], a[5])


def test_eval_batches_keep_every_image():
    _, test = load_dataset("digits")
    loader = ImageBatches(test, 100)
    xs = [x for x, _ in loader.iterate(0)]
    assert sum(len(x) for x in xs) == len(test)
    assert xs[0].dtype == torch.float32 and float(xs[0].max()) <= 1.0


def _tiny_set(n: int) -> ImageSet:
    """n 1×2×2 images whose pixels are all 255 except the first, labels 0..n-1 (identity is visible in y)."""
    images = torch.full((n, 1, 2, 2), 255, dtype=torch.uint8)
    images[:, 0, 0, 0] = 0
    return ImageSet(images, torch.arange(n), [str(i) for i in range(n)], "tiny")


def test_shard_sizes_and_offsets_are_exact():
    # 10 items over 3 processes: 4, 3, 3, contiguous and complete (kills +/- and 1→2 mutants of shard)
    assert [shard(10, r, 3) for r in range(3)] == [slice(0, 4), slice(4, 7), slice(7, 10)]
    assert [shard(11, r, 3) for r in range(3)] == [slice(0, 4), slice(4, 8), slice(8, 11)]


def test_batch_count_edges():
    assert batch_count(0, 8, True) == 0 and batch_count(0, 8, False) == 0
    assert batch_count(5, 8, True) == 1  # a set smaller than one batch still trains one batch
    assert batch_count(17, 8, True) == 2 and batch_count(17, 8, False) == 3


def test_batches_defaults_scale_and_tiny_training_set():
    data = _tiny_set(5)
    # evaluation keeps the partial last batch, training (shuffle) drops it unless told otherwise
    assert len(ImageBatches(data, 2)) == 3 and len(ImageBatches(data, 2, shuffle=True)) == 2
    assert len(ImageBatches(data, 2, shuffle=True, drop_last=False)) == 3
    x, y = next(iter(ImageBatches(data, 8).iterate(0)))
    assert torch.equal(y, torch.arange(5))  # unshuffled, and a set smaller than a batch is one batch
    assert float(x.max()) == 1.0 and float(x.min()) == 0.0  # uint8 255 → exactly 1.0
    (_, ys), *rest = list(ImageBatches(data, 8, shuffle=True).iterate(0))
    assert not rest and sorted(ys.tolist()) == list(range(5))  # drop_last keeps one batch of everything


def test_inactive_augment_is_dropped_and_seed_changes_the_order():
    data = _tiny_set(64)
    assert ImageBatches(data, 8, augment=Augment()).augment is None
    assert ImageBatches(data, 8, augment=Augment(flip=True)).augment is not None
    a = torch.cat([y for _, y in ImageBatches(data, 8, shuffle=True).iterate(1)])
    b = torch.cat([y for _, y in ImageBatches(data, 8, shuffle=True, seed=1).iterate(1)])
    c = torch.cat([y for _, y in ImageBatches(data, 8, shuffle=True, seed=0).iterate(1)])
    assert not torch.equal(a, b) and torch.equal(a, c)


def test_draw_follows_its_contract():
    # (n, 3) int64 columns dy, dx in [0, 2p] and flip in {0, 1}; no flip column when flipping is off
    n = 400
    crop = Augment(crop_padding=2).draw(n, torch.Generator().manual_seed(0))
    assert crop.shape == (n, 3) and crop.dtype == torch.int64
    assert set(crop[:, :2].unique().tolist()) == {0, 1, 2, 3, 4} and not crop[:, 2].any()
    flip = Augment(flip=True).draw(n, torch.Generator().manual_seed(0))
    assert flip.shape == (n, 3) and not flip[:, :2].any() and set(flip[:, 2].unique().tolist()) == {0, 1}


def test_padding_one_crop_shifts_by_the_drawn_offset():
    x = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3)
    # padding 1, dy=0, dx=2: the window starts one row above (zeros) and one column to the right
    out = Augment(crop_padding=1).apply(x, torch.tensor([[0, 2, 0]]))
    assert out[0, 0].tolist() == [[0, 0, 0], [2, 3, 0], [5, 6, 0]]


def test_crop_and_flip_helpers_follow_the_given_generator():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    crop = [random_crop(x, 2, torch.Generator().manual_seed(5)) for _ in range(2)]
    flip = [random_flip(x, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(*crop) and torch.equal(*flip)


def test_iterate_applies_the_augmentation():
    # _tiny_set's dark pixel is at column 0: a flipped image has it at column 1
    data = _tiny_set(64)
    x = torch.cat([x for x, _ in ImageBatches(data, 16, augment=Augment(flip=True)).iterate(0)])
    dark_left, dark_right = x[:, 0, 0, 0] == 0, x[:, 0, 0, 1] == 0
    assert bool((dark_left ^ dark_right).all()) and 0 < int(dark_right.sum()) < 64
    # the same epoch draws the same flips; another epoch draws others
    again = torch.cat([x for x, _ in ImageBatches(data, 16, augment=Augment(flip=True)).iterate(0)])
    other = torch.cat([x for x, _ in ImageBatches(data, 16, augment=Augment(flip=True)).iterate(1)])
    assert torch.equal(x, again) and not torch.equal(x, other)


def test_a_last_batch_smaller_than_the_world_is_shared_without_loss():
    # 9 images, 4 per process, 2 processes: global batches of 8 and 1; rank 1 gets nothing of the second
    data = _tiny_set(9)
    batches = ImageBatches(data, 4)
    r0 = [y.tolist() for _, y in batches.iterate(0, rank=0, world=2)]
    r1 = [y.tolist() for _, y in batches.iterate(0, rank=1, world=2)]
    assert r0 == [[0, 1, 2, 3], [8]] and r1 == [[4, 5, 6, 7]]


def test_to_moves_the_images_once_and_iterate_serves_from_there():
    meta = torch.device("meta")  # a device every torch build has: proves where the tensors went
    batches = ImageBatches(_tiny_set(5), 2)
    assert batches.to(meta) is batches
    x, y = next(iter(batches.iterate(0)))
    assert x.device == meta and y.device == meta and x.shape == (2, 1, 2, 2)
    fresh = ImageBatches(_tiny_set(5), 2)
    x, y = next(iter(fresh.iterate(0, device=meta)))
    assert x.device == meta and y.device == meta
    x, y = next(iter(ImageBatches(_tiny_set(5), 2).iterate(0)))  # no device: stays where the data is
    assert x.device.type == "cpu" and torch.equal(y, torch.tensor([0, 1]))
