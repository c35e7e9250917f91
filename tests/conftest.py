"""Shared fixtures: tiny datasets written in the real on-disk formats, and a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test touches the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def _images(rng: np.random.Generator, labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Class-dependent images: a bright block whose position encodes the label, plus noise (learnable)."""
    x = rng.integers(0, 60, size=(len(labels), *shape), dtype=np.uint8)
    h = shape[-2]
    for i, y in enumerate(labels):
        r = (int(y) * 3) % (h - 4)
        x[i, ..., r : r + 4, r : r + 4] = 250
    return x


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with MNIST (idx), CIFAR-10 and CIFAR-100 (python pickles) fixtures in torchvision's layout."""
    from dla_core.data import formats

    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for train, n in ((True, 300), (False, 100)):
        y = np.arange(n) % 10
        formats.write_mnist(root, train, _images(rng, y, (28, 28)), y.astype(np.uint8), gz=not train)
    y_tr, y_te = np.arange(200) % 10, np.arange(100) % 10
    formats.write_cifar10(root, _images(rng, y_tr, (3, 32, 32)), y_tr, _images(rng, y_te, (3, 32, 32)), y_te)
    fine_names = [f"class{i}" for i in range(100)]
    fine_names[:5] = ["baby", "boy", "girl", "man", "woman"]
    coarse_names = ["people"] + [f"super{i}" for i in range(1, 20)]
    fine_tr, fine_te = np.arange(400) % 100, np.arange(200) % 100
    coarse = lambda f: f // 5  # noqa: E731  (classes 0-4 form superclass 0, "people")
    formats.write_cifar100(
        root,
        (_images(rng, fine_tr, (3, 32, 32)), fine_tr, coarse(fine_tr)),
        (_images(rng, fine_te, (3, 32, 32)), fine_te, coarse(fine_te)),
        fine_names,
        coarse_names,
    )
    return root


@pytest.fixture(scope="session")
def full_size_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with MNIST, CIFAR-10 and CIFAR-100 at their real sizes (random images, real formats), for
    the smoke runs of the full profiles (``tests/full_size.py``)."""
    from tests.full_size import write_image_datasets

    return write_image_datasets(tmp_path_factory.mktemp("full-size-data"))
