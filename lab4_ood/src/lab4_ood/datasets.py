"""The lab's data: the in-distribution splits of a classifier and OOD sets converted to its input shape."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn as nn

from dla_core.data import ImageSet, Splits, fake_data, load_dataset, load_splits, parse_spec
from dla_core.errors import DlaError
from dla_core.models import model_config_of
from dla_core.runs import CONFIG, read_json


def dataset_of_run(run: Path) -> str | None:
    """The ``dataset`` a classifier run was trained on, when its config.json records one."""
    path = Path(run) / CONFIG
    if not path.exists():
        return None
    config = read_json(path).get("config", {})  # a damaged file is one Error line, not a traceback
    value = config.get("dataset") or config.get("id")
    return value if isinstance(value, str) else None


def id_spec_for(run: Path, spec: str | None, option: str = "--id") -> str:
    spec = spec or dataset_of_run(run)
    if spec is None:
        raise DlaError(f"{run} does not record its dataset; pass {option} SPEC (e.g. {option} cifar10)")
    return spec


def load_model_for(spec: str, weights: str, data: ImageSet, preprocess: str | None = None) -> nn.Module:
    """The classifier of a ``--model`` spec (``dla_core.adapters``) for ``data``, in eval mode, checked to fit it:
    ``--weights none`` gives a random head with ``data``'s classes, a checkpoint its own."""
    from dla_core.adapters import load_classifier

    model = load_classifier(spec, weights, num_classes=data.num_classes, preprocess=preprocess).eval()
    check_model_fits(model, data)
    return model


def check_model_fits(model: nn.Module, data: ImageSet) -> None:
    if not hasattr(model, "config"):  # another family's model: it resizes and converts the images itself
        classes = getattr(model, "num_classes", 0)  # 0: a file that does not say
        if classes and classes != data.num_classes:
            d = model.description
            where = {"checkpoint": f"its checkpoint {d.get('checkpoint', {}).get('path')}"}.get(
                d.get("weights"), f"its {d.get('weights') or 'pretrained'} weights"
            )
            raise DlaError(
                f"{d['model']} has {classes} classes ({where}) but {data.spec} has {data.num_classes}: give "
                "--weights CHECKPOINT trained on these classes (or --weights none for a random head)"
            )
        return
    cfg = model_config_of(model)
    if tuple(cfg.in_shape) != data.shape:
        raise DlaError(f"the model takes {tuple(cfg.in_shape)} images but {data.spec} has {data.shape}")
    if cfg.num_classes != data.num_classes:
        raise DlaError(f"the model has {cfg.num_classes} classes but {data.spec} has {data.num_classes}")


_loaded: dict | None = None  # while `remembered()`: (function, arguments) → what it loaded


@contextlib.contextmanager
def remembered() -> Iterator[None]:
    """Within the block, ``load_id`` / ``load_ood`` load each set once (``lab4 benchmark`` loads every set to
    check it before making its folder, then its detect runs get the same objects; nothing writes into them)."""
    global _loaded
    outer, _loaded = _loaded, ({} if _loaded is None else _loaded)
    try:
        yield
    finally:
        _loaded = outer


def _once(load):
    @functools.wraps(load)
    def wrapper(*args, **kwargs):
        if _loaded is None:
            return load(*args, **kwargs)
        key = (load.__name__, args, tuple(sorted(kwargs.items())))
        if key not in _loaded:
            _loaded[key] = load(*args, **kwargs)
        return _loaded[key]

    return wrapper


@_once
def load_id(spec: str, data_dir: Path, download: bool, val_fraction: float = 0.1) -> Splits:
    return load_splits(spec, data_dir, download, val_fraction=val_fraction)


@_once
def load_ood(
    spec: str, shape: tuple[int, int, int], data_dir: Path, download: bool, n_fake: int = 1000
) -> tuple[ImageSet, ImageSet]:
    """(train, test) of an OOD spec in ``shape`` (grey ↔ RGB, resized); ``fake`` is FakeData noise."""
    name, _ = parse_spec(spec)
    if name == "fake":
        train, test = _fake(tuple(shape), n_fake)
    else:
        train, test = load_dataset(spec, data_dir, download, size=tuple(shape[1:]))  # files: decoded to size
    return train.adapt(shape), test.adapt(shape)


@functools.lru_cache(maxsize=4)
def _fake(shape: tuple[int, int, int], n: int) -> tuple[ImageSet, ImageSet]:
    """FakeData noise, made once per process: torchvision seeds every image on its own (1-2 ms each), and
    `lab4 reproduce` scores the same noise in three detect runs. Nothing writes into an ImageSet's tensors."""
    return fake_data(shape, n_train=n, n_test=n)


def head(data: ImageSet, limit: int | None, seed: int = 0) -> ImageSet:
    """A fixed random subset of at most ``limit`` images (all when None), the same for every run."""
    if limit is None or len(data) <= limit:
        return data
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(perm[:limit].sort().values)
