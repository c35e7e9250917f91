"""Readers and writers of the official on-disk formats, exactly as torchvision lays them out in a data folder.

    MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]   big-endian IDX files
    cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}   python pickles of numpy arrays
    cifar-100-python/{train,test,meta}                              idem, with fine and coarse labels

The writers exist so that tests and benchmarks can make fixture folders in the real layout (torchvision's own
CIFAR classes verify MD5 sums of the official files, so they cannot read made-up ones). The CIFAR pickles are
read with an unpickler that only admits the numpy types these files contain, never arbitrary code.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from dla_core.errors import DlaError

MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


#### MNIST idx ####


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (plain or .gz): magic 0x0000 <dtype> <ndim>, ndim big-endian uint32 sizes, data."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DlaError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DlaError(f"{path}: header says {shape} but holds {data.size} values (truncated file?)")
    return data.reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.suffix == ".gz" else data)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.exists():
            return candidate
    return None


def read_mnist(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """→ images uint8 (N, 1, 28, 28), labels int64 (N,). ``root`` is the data folder (holds MNIST/raw)."""
    folder = root / "MNIST" / "raw"
    paths = [_find(folder, n) for n in MNIST_FILES[train]]
    if None in paths:
        raise FileNotFoundError(folder / MNIST_FILES[train][paths.index(None)])
    images, labels = (read_idx(p) for p in paths)  # type: ignore[arg-type]
    if images.ndim != 3 or len(images) != len(labels):
        raise DlaError(f"{folder}: images {images.shape} and labels {labels.shape} do not match")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def write_mnist(root: Path, train: bool, images: np.ndarray, labels: np.ndarray, gz: bool = False) -> None:
    """Write (N, 28, 28) uint8 images and labels as torchvision's MNIST raw files."""
    folder = root / "MNIST" / "raw"
    suffix = ".gz" if gz else ""
    write_idx(folder / (MNIST_FILES[train][0] + suffix), images)
    write_idx(folder / (MNIST_FILES[train][1] + suffix), labels)


#### CIFAR python pickles ####


class _CifarUnpickler(pickle.Unpickler):
    """Admits only what the CIFAR batches hold: builtins containers and numpy arrays."""

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR file")


def read_pickle(path: Path) -> dict[str, Any]:
    try:
        obj = _CifarUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DlaError(f"{path} is not a CIFAR python batch ({e})") from None
    if not isinstance(obj, dict):
        raise DlaError(f"{path} is not a CIFAR python batch (holds {type(obj).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _names(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _images(data: Any, path: Path) -> torch.Tensor:
    arr = np.asarray(data, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[1] != 3072:
        raise DlaError(f"{path}: expected rows of 3072 bytes, got {arr.shape}")
    return torch.from_numpy(arr.reshape(-1, 3, 32, 32).copy())


def read_cifar10(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    folder = root / CIFAR10_DIR
    names = CIFAR10_TRAIN if train else ["test_batch"]
    xs, ys = [], []
    for n in names:
        if not (folder / n).exists():
            raise FileNotFoundError(folder / n)
        batch = read_pickle(folder / n)
        xs.append(_images(batch["data"], folder / n))
        ys.append(torch.as_tensor(np.asarray(batch["labels"], dtype=np.int64)))
    classes = CIFAR10_CLASSES
    if (folder / "batches.meta").exists():
        classes = _names(read_pickle(folder / "batches.meta")["label_names"])
    return torch.cat(xs), torch.cat(ys), classes


def read_cifar100(
    root: Path, train: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str], list[str]]:
    """→ images, fine labels, coarse labels, fine class names, coarse class (superclass) names."""
    folder = root / CIFAR100_DIR
    path = folder / ("train" if train else "test")
    for p in (path, folder / "meta"):
        if not p.exists():
            raise FileNotFoundError(p)
    batch = read_pickle(path)
    meta = read_pickle(folder / "meta")
    return (
        _images(batch["data"], path),
        torch.as_tensor(np.asarray(batch["fine_labels"], dtype=np.int64)),
        torch.as_tensor(np.asarray(batch["coarse_labels"], dtype=np.int64)),
        _names(meta["fine_label_names"]),
        _names(meta["coarse_label_names"]),
    )


def _dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _rows(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), 3072)


def write_cifar10(
    root: Path,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
) -> None:
    """Write (N, 3, 32, 32) uint8 arrays as the five training batches, the test batch and batches.meta."""
    folder = root / CIFAR10_DIR
    for i, idx in enumerate(np.array_split(np.arange(len(train_images)), 5)):
        _dump(
            folder / CIFAR10_TRAIN[i],
            {
                b"batch_label": b"training batch",
                b"labels": train_labels[idx].tolist(),
                b"data": _rows(train_images[idx]),
            },
        )
    _dump(folder / "test_batch", {b"labels": test_labels.tolist(), b"data": _rows(test_images)})
    _dump(folder / "batches.meta", {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072})


def write_cifar100(
    root: Path,
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
    fine_names: list[str],
    coarse_names: list[str],
) -> None:
    """Write (images, fine, coarse) tuples as cifar-100-python/{train,test,meta}."""
    folder = root / CIFAR100_DIR
    for name, (x, fine, coarse) in (("train", train), ("test", test)):
        _dump(
            folder / name,
            {b"data": _rows(x), b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist()},
        )
    _dump(folder / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names})


#### SVHN .mat (cropped digits) ####

SVHN_DIR = "svhn"
SVHN_FILES = {True: "train_32x32.mat", False: "test_32x32.mat"}


def read_svhn(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """→ images uint8 (N, 3, 32, 32), labels int64 (N,). The files hold X as (32, 32, 3, N) and y as (N, 1)
    with digit 0 stored as label 10 (it becomes 0 here, as in torchvision)."""
    from scipy.io import loadmat

    path = root / SVHN_DIR / SVHN_FILES[train]
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        mat = loadmat(path)
        x, y = np.asarray(mat["X"], dtype=np.uint8), np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise DlaError(f"{path} is not an SVHN .mat file ({e})") from None
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DlaError(f"{path}: expected X of (32, 32, 3, N) and N labels, got {x.shape} and {len(y)}")
    y = np.where(y == 10, 0, y)
    return torch.from_numpy(x.transpose(3, 2, 0, 1).copy()), torch.from_numpy(y)
