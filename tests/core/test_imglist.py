"""OpenOOD's image lists (``benchmark_imglist/<benchmark>/test_<set>.txt``, lines ``PATH LABEL``) read through the
registry's ``imglist:LIST`` spec, on a tiny list fixture laid out as OpenOOD lays out its data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dla_core.data import load_dataset, load_parts
from dla_core.errors import DlaError
from tests.core.test_data_files import _solid


def write_list(
    data: Path, listed: str, images: list[tuple[str, int, int]], root: str = "images_classic"
) -> Path:
    """An image list at data/benchmark_imglist/LISTED naming images under data/ROOT/, one solid image each:
    (relative path, label, pixel value)."""
    lines = []
    for name, label, value in images:
        _solid(data / root / name, value, (12, 20))
        lines.append(f"{name} {label}")
    path = data / "benchmark_imglist" / listed
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n\n")
    return path


def test_an_ood_list_reads_its_images_in_order_from_openoods_image_root(tmp_path):
    values = [30, 90, 150, 210]
    path = write_list(
        tmp_path, "cifar10/test_tin.txt", [(f"tin/test/n01/{i}.png", -1, v) for i, v in enumerate(values)]
    )
    train, test = load_dataset(f"imglist:{path}", tmp_path, size=(8, 8))
    assert test.images.shape == (4, 3, 8, 8) and test.classes == ["ood"]
    assert test.images[:, 0, 4, 4].tolist() == values  # the list's order, each line its own file
    assert test.labels.tolist() == [0, 0, 0, 0]
    assert train.images.equal(test.images)  # a list alone: its own (train, test)
    assert test.source["image_root"] == str(tmp_path / "images_classic")


def test_an_id_list_takes_its_train_and_val_siblings_and_labels(tmp_path):
    write_list(tmp_path, "c/train_c.txt", [("c/train/a.png", 1, 40), ("c/train/b.png", 0, 80)])
    write_list(tmp_path, "c/val_c.txt", [("c/val/a.png", 2, 120)])
    path = write_list(tmp_path, "c/test_c.txt", [("c/test/a.png", 2, 160), ("c/test/b.png", 0, 200)])
    train, val, test = load_parts(f"imglist:{path}", tmp_path, size=(4, 4))
    assert train.classes == ["0", "1", "2"]
    assert train.labels.tolist() == [1, 0] and val.labels.tolist() == [2] and test.labels.tolist() == [2, 0]
    assert test.images[:, 1, 0, 0].tolist() == [160, 200] and train.images[:, 1, 0, 0].tolist() == [40, 80]


def test_dict_labels_and_the_largescale_root(tmp_path):
    path = tmp_path / "benchmark_imglist" / "imagenet200" / "test_ninco.txt"
    path.parent.mkdir(parents=True)
    _solid(tmp_path / "images_largescale" / "ninco" / "x.jpg", 7, (10, 10))
    path.write_text("ninco/x.jpg {'label': -1}\n")
    _, test = load_dataset(f"imglist:{path}", tmp_path, size=(5, 5))
    assert test.classes == ["ood"] and int(test.images[0, 0, 2, 2]) == 7


def _listing(data: Path, text: str) -> Path:
    """A list whose lines are ``text``, beside one real image (images_classic/a/0.png)."""
    path = write_list(data, "x/test_a.txt", [("a/0.png", -1, 5)])
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        (None, r"imglist: .*nope\.txt not found"),
        ("a/0.png -1\na/1.png -1\n", r"imglist: .*images_classic/a/1\.png not found"),
        ("a/0.png\n", r"test_a\.txt line 1: expected 'PATH LABEL'"),
        ("a/0.png -1\na/0.png cat\n", r"test_a\.txt line 2: expected 'PATH LABEL'"),
        ("elsewhere/0.png -1\n", r"elsewhere/0\.png under .* images_classic/, images_largescale/ not found"),
        ("\n", r"test_a\.txt lists no images"),
        ("a/0.png -1\na/0.png 3\n", r"labels mix OOD"),
    ],
)
def test_list_errors_are_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "nope.txt" if text is None else _listing(tmp_path, text)
    with pytest.raises(DlaError, match=message) as e:
        load_dataset(f"imglist:{path}", tmp_path, size=(4, 4))
    assert "\n" not in str(e.value) and "--download" not in str(e.value)


def test_pixels_are_not_shared_between_lines(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 256, 6).tolist()
    path = write_list(tmp_path, "s/test_s.txt", [(f"s/{i}.png", -1, v) for i, v in enumerate(values)])
    _, test = load_dataset(f"imglist:{path}", tmp_path, size=(3, 3))
    assert test.images[:, 2, 1, 1].tolist() == values
