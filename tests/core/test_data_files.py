"""Datasets from files in their released layouts: SVHN's .mat, DTD's folders and label files, Tiny ImageNet's
wnids.txt / val_annotations.txt, Places365's 256 px validation set, and an image folder of your own (PNGs made
from scikit-learn's digits). Every fixture is written here, in tmp_path, in the real on-disk format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dla_core.data import load_dataset, load_splits
from dla_core.errors import DlaError


def _png(path: Path, array: np.ndarray) -> None:
    """PNG bytes whatever the suffix (.jpg/.JPEG names as released; lossless, so pixels can be checked)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def _solid(path: Path, value: int, size: tuple[int, int] = (20, 30)) -> None:
    """A (h, w) RGB image whose every pixel is ``value``: the label can be read back from the pixels."""
    _png(path, np.full((*size, 3), value, dtype=np.uint8))


#### SVHN ####


def test_svhn_mat_files_give_digit_zero_label_zero_and_nchw_images(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for name, n in (("train_32x32.mat", 30), ("test_32x32.mat", 12)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # SVHN's (H, W, C, N)
        y = (np.arange(n) % 10 + 1).reshape(-1, 1)  # 1..10, digit 0 stored as 10
        (tmp_path / "svhn").mkdir(exist_ok=True)
        savemat(tmp_path / "svhn" / name, {"X": x, "y": y})
        if name.startswith("train"):
            x_train, y_train = x, y
    train, test = load_dataset("svhn", tmp_path)
    assert train.images.shape == (30, 3, 32, 32) and len(test) == 12
    assert train.labels[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    k = 7  # image k at pixel (row 3, col 5), channel 2, as the file stores it
    assert train.images[k, 2, 3, 5] == x_train[3, 5, 2, k]
    assert train.images[k, 1, 5, 3] == x_train[5, 3, 1, k]
    zeros, _ = load_dataset("svhn:0", tmp_path)
    assert len(zeros) == 3 and int((y_train == 10).sum()) == 3
    savemat(tmp_path / "svhn" / "test_32x32.mat", {"images": x_train})
    with pytest.raises(DlaError, match=r"test_32x32\.mat is not an SVHN \.mat file"):
        load_dataset("svhn", tmp_path)


#### DTD ####


def _dtd(root: Path) -> dict[str, dict[str, int]]:
    """DTD's layout with three classes whose pixels encode the class; returns the files of each split."""
    data = root / "dtd" / "dtd"
    classes = {"banded": 10, "zigzagged": 200, "dotted": 90}  # written out of sorted order
    splits: dict[str, dict[str, int]] = {"train": {}, "val": {}, "test": {}}
    for c, value in classes.items():
        for i in range(6):
            name = f"{c}/{c}_{i:04d}.jpg"
            _png(data / "images" / name, np.full((40 + i, 50, 3), value, np.uint8))
            splits[("train", "train", "val", "test", "test", "test")[i]][name] = value  # 2 / 1 / 3 per class
    (data / "labels").mkdir()
    for split, files in splits.items():
        (data / "labels" / f"{split}1.txt").write_text("".join(f"{f}\n" for f in files))
    return splits


def test_dtd_splits_come_from_the_label_files_and_classes_are_sorted(tmp_path):
    files = _dtd(tmp_path)
    splits = load_splits("dtd", tmp_path, size=(8, 8))
    assert splits.train.classes == ["banded", "dotted", "zigzagged"]
    value_of = {0: 10, 1: 90, 2: 200}
    for part, name in ((splits.train, "train"), (splits.val, "val"), (splits.test, "test")):
        assert len(part) == len(files[name]) and part.shape == (3, 8, 8)
        pixel = part.images[:, 0, 4, 4].tolist()
        assert pixel == [value_of[label] for label in part.labels.tolist()]  # label ↔ image, per split
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 3, 9)
    assert splits.test.labels.tolist() == [0, 0, 0, 2, 2, 2, 1, 1, 1]  # the label file's order
    labels = tmp_path / "dtd" / "dtd" / "labels" / "val1.txt"
    labels.write_text("".join(f for f in labels.read_text().splitlines(True) if not f.startswith("banded")))
    assert load_splits("dtd", tmp_path, size=(8, 8)).val.labels.tolist() == [2, 1]  # not re-indexed 0, 1
    dotted, _ = load_dataset("dtd:dotted", tmp_path, size=(8, 8))
    assert dotted.class_map == [1] and int(dotted.images[:, 0].float().mean()) == 90


#### Tiny ImageNet ####


def _tiny(root: Path) -> list[str]:
    base = root / "tiny-imagenet-200"
    wnids = ["n09999999", "n01443537", "n02000000"]  # the released file is not sorted
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for k, w in enumerate(wnids):
        for i in range(3):
            _solid(base / "train" / w / "images" / f"{w}_{i}.JPEG", 50 * k + 10, (64, 64))
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for i, k in enumerate([2, 0, 1, 1]):
        _solid(base / "val" / "images" / f"val_{i}.JPEG", 50 * k + 10, (64, 64))
        lines.append(f"val_{i}.JPEG\t{wnids[k]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return wnids


def test_tiny_imagenet_released_layout(tmp_path):
    wnids = _tiny(tmp_path)
    train, test = load_dataset("tiny-imagenet", tmp_path)
    assert train.classes == sorted(wnids) and train.shape == (3, 64, 64)
    assert len(train) == 9 and len(test) == 4
    order = [sorted(wnids).index(w) for w in (wnids[2], wnids[0], wnids[1], wnids[1])]
    assert test.labels.tolist() == order  # val_annotations.txt's wnid per file, in sorted-wnid indices
    value = {sorted(wnids).index(w): 50 * k + 10 for k, w in enumerate(wnids)}
    assert train.images[:, 0, 0, 0].tolist() == [value[y] for y in train.labels.tolist()]
    assert test.images[:, 0, 0, 0].tolist() == [value[y] for y in test.labels.tolist()]


def test_tiny_imagenet_unknown_wnid_in_annotations(tmp_path):
    _tiny(tmp_path)
    ann = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_9.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(DlaError, match="line 5: unknown wnid"):
        load_dataset("tiny-imagenet", tmp_path)


#### Places365 ####


def test_places365_val_256_layout_uses_the_category_file_indices(tmp_path):
    base = tmp_path / "places365"
    base.mkdir()
    (base / "categories_places365.txt").write_text("/a/airfield 0\n/b/bakery/shop 1\n/c/canyon 2\n")
    lines = []
    for i in range(15):
        k = (i * 2) % 3
        _solid(base / "val_256" / f"Places365_val_{i + 1:08d}.jpg", 60 * k + 5, (32, 48))
        lines.append(f"Places365_val_{i + 1:08d}.jpg {k}")
    (base / "places365_val.txt").write_text("\n".join(lines) + "\n")
    train, test = load_dataset("places365", tmp_path, size=(16, 16))
    assert train.classes == ["airfield", "bakery/shop", "canyon"]
    assert len(train) + len(test) == 15 and sorted(set(test.labels.tolist())) == [0, 1, 2]
    for part in (train, test):
        assert part.images[:, 1, 8, 8].tolist() == [60 * y + 5 for y in part.labels.tolist()]
    assert test.source["split"] == "seeded"


#### Your own image folder ####


def _digits_folder(root: Path, split_folders: bool) -> None:
    """PNGs of scikit-learn's digits, 12 per class, grey, in ``root/<digit>/`` or ``root/{train,test}/<digit>/``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    for c in range(10):
        idx = np.flatnonzero(d.target == c)[:12]
        for n, i in enumerate(idx):
            where = root / ("test" if n < 3 else "train") if split_folders else root
            _png(where / str(c) / f"{i:04d}.png", (d.images[i] * 16).clip(0, 255).astype(np.uint8))


def _digit_of(images: torch.Tensor) -> list[int]:
    """Which of sklearn's digit images each one is (by pixels): the label must match its digit."""
    from sklearn.datasets import load_digits

    d = load_digits()
    ref = torch.from_numpy((d.images * 16).clip(0, 255).astype(np.uint8)).flatten(1)
    return [int(d.target[int((ref == im.flatten()).all(1).nonzero()[0, 0])]) for im in images]


def test_image_folder_of_digits_pngs_seeded_split_recorded(tmp_path):
    _digits_folder(tmp_path / "pngs", split_folders=False)
    (tmp_path / "pngs" / "notes.txt").write_text("not an image, not a class")
    train, test = load_dataset(f"imagefolder:{tmp_path / 'pngs'}")
    assert train.classes == [str(c) for c in range(10)] and train.shape == (1, 8, 8)
    assert len(train) == 100 and len(test) == 20  # 12 per class: 2 (20 %) of each in test
    assert torch.bincount(test.labels).tolist() == [2] * 10
    assert _digit_of(train.images) == train.labels.tolist()
    assert _digit_of(test.images) == test.labels.tolist()
    _, again_test = load_dataset(f"imagefolder:{tmp_path / 'pngs'}")
    assert torch.equal(again_test.images, test.images)  # seeded: the same split every run
    assert test.source == {"root": str((tmp_path / "pngs").resolve()), "split": "seeded", "split_seed": 0,
                           "test_fraction": 0.2, "storage": "memory", "bytes": test.images.numel(),
                           "budget": 4 << 30, "forced": False}  # fmt: skip
    from dla_core.models import model_config_for

    assert model_config_for(train, "mlp").extra["data_source"]["split_seed"] == 0  # saved with the model


def test_image_folder_with_split_folders_and_class_subset(tmp_path):
    _digits_folder(tmp_path, split_folders=True)
    s = load_splits(f"imagefolder:{tmp_path}:7,2", val_fraction=0.1)
    assert s.train.classes == ["7", "2"] and s.train.class_map == [7, 2]
    assert len(s.train) + len(s.val) == 18 and len(s.test) == 6  # test/ holds 3 per class
    assert [("7", "2")[y] for y in s.test.labels.tolist()] == [str(d) for d in _digit_of(s.test.images)]
    assert s.test.source["split"] == "folders: train, test"


def test_image_folder_images_are_resized_and_centre_cropped_to_the_size_asked(tmp_path):
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 20:60] = 255  # a white centre square between two black side bands
    _png(tmp_path / "a" / "wide.png", img)
    _png(tmp_path / "b" / "other.png", img)
    _png(tmp_path / "b" / "third.png", img)
    _png(tmp_path / "a" / "fourth.png", img)
    train, test = load_dataset(f"imagefolder:{tmp_path}", size=(10, 10))
    assert train.shape == (3, 10, 10)
    assert (
        int(test.images.min()) > 200
    )  # the crop kept the centre square, not the bands (squashed: 0 at edges)


def _truncated(folder: Path) -> None:
    """PNGs whose header reads but whose pixels stop short (a copy cut off)."""
    for n in "ab":
        _png(
            folder / "cat" / f"{n}.png",
            np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8),
        )
        data = (folder / "cat" / f"{n}.png").read_bytes()
        (folder / "cat" / f"{n}.png").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "is not a folder"),
        (lambda p: p.mkdir(), "has no class subfolders"),
        (lambda p: (p / "cat").mkdir(parents=True), "no image files"),
        (lambda p: _png(p / "cat" / "a.png", np.zeros((4, 4), np.uint8)), "no training or no test images"),
        (
            lambda p: [
                (p / "cat").mkdir(parents=True),
                *((p / "cat" / f"{n}.png").write_bytes(b"junk") for n in "ab"),
            ],
            r"\.png: not a readable image",
        ),
        (_truncated, r"\.png: not a readable image \(.*truncated"),
    ],
)
def test_image_folder_errors_are_one_clear_line(tmp_path, make, message):
    make(tmp_path / "mine")
    with pytest.raises(DlaError, match=message) as e:
        load_dataset(f"imagefolder:{tmp_path / 'mine'}")
    assert "\n" not in e.value.message


def test_missing_released_datasets_say_where_and_how(tmp_path):
    for spec in ("svhn", "dtd", "tiny-imagenet", "places365"):
        with pytest.raises(DlaError, match="--download") as e:
            load_dataset(spec, tmp_path)
        assert str(tmp_path) in e.value.message
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("spec", ["svhn", "dtd", "places365", "tiny-imagenet"])
def test_download_without_network_is_one_clear_error(tmp_path, monkeypatch, spec):
    from urllib.error import URLError

    import torchvision
    import torchvision.datasets.utils

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    for name in ("SVHN", "DTD", "Places365"):
        monkeypatch.setattr(torchvision.datasets, name, offline)
    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    with pytest.raises(DlaError) as e:
        load_dataset(spec, tmp_path, download=True)
    assert e.value.message.startswith(f"--download: could not fetch {spec} into {tmp_path}")
    assert "Temporary failure in name resolution" in e.value.message
