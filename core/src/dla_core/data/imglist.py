"""OpenOOD v1.5's image lists: ``benchmark_imglist/<benchmark>/<split>_<set>.txt``, one image a line as
``PATH LABEL`` (the path relative to the image root, ``LABEL`` an integer, -1 for OOD images, or a dict literal
with a ``label`` key in a few lists).

The spec ``imglist:LIST`` reads the images LIST names. Their root is the data folder or, as OpenOOD lays it out,
its ``images_classic/`` or ``images_largescale/`` (the first in which the list's first image exists). A test list
``test_X.txt`` with ``train_X.txt`` (and ``val_X.txt``) beside it gives those splits too (the ID lists of a
benchmark); a list alone is its own (train, test) pair, so ``--grid`` would search on the test images.
"""

from __future__ import annotations

import ast
from pathlib import Path

from dla_core.data.folders import Labelled
from dla_core.errors import DlaError

IMAGE_ROOTS = ("", "images_classic", "images_largescale")  # under the data folder, in the order tried
OOD_LABEL = -1


def _label(text: str, where: str) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        extra = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        extra = None
    if isinstance(extra, dict):
        return int(extra.get("label", OOD_LABEL))
    raise DlaError(f"{where}: expected 'PATH LABEL' (LABEL an integer), got {text!r} as the label")


def read_list(path: Path) -> list[tuple[str, int]]:
    """(relative path, label) per line of an image list; blank lines are skipped."""
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        name, sep, label = line.strip().partition(" ")
        if not sep:
            raise DlaError(f"{path} line {n}: expected 'PATH LABEL', got {line.strip()!r}")
        entries.append((name, _label(label, f"{path} line {n}")))
    if not entries:
        raise DlaError(f"{path} lists no images")
    return entries


def image_root(data_dir: Path, first: str) -> Path:
    """The folder the list's paths are relative to; FileNotFoundError (naming where it looked) when none holds
    the first image."""
    for sub in IMAGE_ROOTS:
        if (data_dir / sub / first).is_file():
            return data_dir / sub
    raise FileNotFoundError(f"{first} under {data_dir} or its {', '.join(s + '/' for s in IMAGE_ROOTS if s)}")


def siblings(test_list: Path) -> dict[str, Path]:
    """{'train': …, 'val': …, 'test': test_list}: the splits whose lists lie beside a ``test_X.txt``."""
    parts = {}
    stem = test_list.name.removeprefix("test_")
    if stem != test_list.name:
        for split in ("train", "val"):
            if (test_list.parent / f"{split}_{stem}").is_file():
                parts[split] = test_list.parent / f"{split}_{stem}"
    return {**parts, "test": test_list}


def scan_imglist(list_file: Path, data_dir: Path) -> tuple[list[str], dict[str, Labelled], dict]:
    """(classes, {split: [(file, label)]}, source) of a list and its sibling splits. A list of OOD images
    (every label -1) is one class, 'ood'. A missing list or image is a FileNotFoundError naming it."""
    if not list_file.is_file():
        raise FileNotFoundError(str(list_file))
    lists = siblings(list_file)
    entries = {split: read_list(path) for split, path in lists.items()}
    root = image_root(data_dir, entries["test"][0][0])
    labels = {y for items in entries.values() for _, y in items}
    ood = labels == {OOD_LABEL}
    if not ood and min(labels) < 0:
        raise DlaError(f"{list_file}: labels mix OOD (-1) and classes")
    classes = ["ood"] if ood else [str(i) for i in range(max(labels) + 1)]
    parts: dict[str, Labelled] = {}
    for split, items in entries.items():
        files = [(root / name, 0 if ood else y) for name, y in items]
        missing = next((f for f, _ in files if not f.is_file()), None)
        if missing is not None:
            raise FileNotFoundError(str(missing))
        parts[split] = files
    source = {
        "imglist": str(list_file),
        "image_root": str(root),
        "splits": {s: str(p) for s, p in lists.items()},
    }
    return classes, parts, source
