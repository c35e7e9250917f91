"""Datasets stored as image files, decoded once into uint8 tensors of one size.

    imagefolder:PATH      PATH/<class>/*.png|jpg…, or PATH/{train,val,test}/<class>/… when split folders exist
    dtd                   DATA/dtd/dtd/{images/<class>/*.jpg, labels/{train,val,test}1.txt} (torchvision's DTD)
    places365             DATA/places365/{categories_places365.txt, places365_val.txt, val_256/*.jpg}
    tiny-imagenet         DATA/tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG,
                                                  val/images/*.JPEG, val/val_annotations.txt}

Images of varying size are scaled to cover the requested (H, W) with their aspect ratio kept, then centre-cropped
(the usual evaluation transform); a folder of grey images stays one channel, anything else becomes RGB. Classes
are the sorted folder names (ImageFolder's order) unless the format lists them (Places365's category file).
A dataset released with one labelled set and no test split gets a seeded per-class split (``SPLIT_SEED``,
``TEST_FRACTION``), the same on every run; what was done is kept in ``ImageSet.source``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dla_core.errors import DlaError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
SPLIT_SEED = 0  # the seeded split of a folder without test/: fixed, so every run tests on the same images
TEST_FRACTION = 0.2

Labelled = list[tuple[Path, int]]  # (image file, class index)


#### Decoding ####


def _fail(path: Path, e: Exception) -> DlaError:
    return DlaError(f"{path}: not a readable image ({e})")


def _header(path: Path) -> tuple[str, int, int]:
    """(mode, height, width) from the file's header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.mode, img.height, img.width
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise _fail(path, e) from None


def _decode(path: Path, h: int, w: int, channels: int) -> np.ndarray:
    """One image as (h, w, channels) uint8: scaled to cover (h, w) with its aspect kept, then centre-cropped."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if (img.height, img.width) != (h, w):
                scale = max(h / img.height, w / img.width)
                rh, rw = max(h, round(img.height * scale)), max(w, round(img.width * scale))
                img = img.resize((rw, rh), Image.BILINEAR)
                top, left = (rh - h) // 2, (rw - w) // 2
                img = img.crop((left, top, left + w, top + h))
            return np.asarray(img).reshape(h, w, channels)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise _fail(path, e) from None


def read_images(
    files: Sequence[Path], size: tuple[int, int] | None, channels: int | None = None
) -> torch.Tensor:
    """Decode ``files`` → uint8 (N, C, H, W). ``size`` None: the first image's size. ``channels`` None: 1 when
    every image is grey, else 3. One image is decoded at a time per thread (PIL lets go of the GIL while it
    decodes and resizes), so memory holds the result and a few full-size images, never all of them."""
    from concurrent.futures import ThreadPoolExecutor

    headers = [_header(f) for f in files]
    if not headers:
        return torch.zeros((0, channels or 3, *(size or (1, 1))), dtype=torch.uint8)
    if channels is None:
        channels = 1 if all(mode in GREY_MODES for mode, _, _ in headers) else 3
    h, w = size if size is not None else headers[0][1:]
    out = np.empty((len(files), h, w, channels), dtype=np.uint8)

    def fill(k: int) -> None:
        out[k] = _decode(files[k], h, w, channels)

    with ThreadPoolExecutor(max_workers=min(8, torch.get_num_threads(), len(files)) or 1) as pool:
        list(pool.map(fill, range(len(files))))  # list(): re-raises the first error, in file order
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def labelled_tensors(
    items: Labelled, size: tuple[int, int] | None, channels: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_images([p for p, _ in items], size, channels)
    return images, torch.tensor([c for _, c in items], dtype=torch.int64)


def seeded_split(
    items: Labelled, seed: int = SPLIT_SEED, fraction: float = TEST_FRACTION
) -> tuple[Labelled, Labelled]:
    """Per class, a seeded ``fraction`` (at least one image when the class has two) goes to the test side."""
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in sorted({c for _, c in items}):
        mine = [it for it in items if it[1] == c]
        n_test = max(1, round(len(mine) * fraction)) if len(mine) > 1 else 0
        perm = torch.randperm(len(mine), generator=g).tolist()
        test += [mine[i] for i in sorted(perm[:n_test])]
        train += [mine[i] for i in sorted(perm[n_test:])]
    return train, test


#### An image folder ####


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def scan_image_folder(root: Path) -> tuple[list[str], dict[str, Labelled], dict]:
    """→ classes, {split: [(file, class)]} with split in train/val/test, and what was done (``source``)."""
    if not root.is_dir():
        raise DlaError(f"imagefolder: {root} is not a folder")
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" not in split_dirs:
        split_dirs = {}
    folders = split_dirs or {"all": root}
    classes = sorted({c for f in folders.values() for c in _class_dirs(f)})
    if not classes:
        raise DlaError(f"imagefolder: {root} has no class subfolders (expected {root}/<class>/<image files>)")
    index = {c: i for i, c in enumerate(classes)}
    found = {
        s: [(p, index[c]) for c in _class_dirs(f) for p in _image_files(f / c)] for s, f in folders.items()
    }
    if not any(found.values()):
        raise DlaError(f"imagefolder: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    source: dict = {"root": str(root.resolve())}
    if "all" in found:
        train, test = seeded_split(found["all"])
        found = {"train": train, "test": test}
        source.update(split="seeded", split_seed=SPLIT_SEED, test_fraction=TEST_FRACTION)
    else:
        if "test" not in found:  # train/ + val/ (ImageNet's layout): val is the test set
            found = {"train": found["train"], "test": found.get("val", [])}
        source["split"] = "folders: " + ", ".join(found)
    if not found["train"] or not found["test"]:
        raise DlaError(f"imagefolder: {root} gives no training or no test images ({source['split']})")
    return classes, found, source


#### Tiny ImageNet, Places365 ####

TINY_DIR = "tiny-imagenet-200"
PLACES_DIR = "places365"
PLACES_CATEGORIES = "categories_places365.txt"
PLACES_VAL = "places365_val.txt"
PLACES_IMAGES = "val_256"


def _need(*paths: Path) -> None:
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(p)


def scan_tiny_imagenet(data_dir: Path) -> tuple[list[str], dict[str, Labelled]]:
    """Classes are the wnids sorted (ImageFolder's order on train/); the labelled val set is the test set."""
    root = data_dir / TINY_DIR
    _need(root / "wnids.txt", root / "train", root / "val" / "val_annotations.txt")
    classes = sorted(line.strip() for line in (root / "wnids.txt").read_text().splitlines() if line.strip())
    index = {c: i for i, c in enumerate(classes)}
    train = [(p, index[c]) for c in classes for p in _image_files(root / "train" / c / "images")]
    test = []
    for n, line in enumerate((root / "val" / "val_annotations.txt").read_text().splitlines(), 1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2 or fields[1] not in index:
            raise DlaError(f"{root / 'val' / 'val_annotations.txt'} line {n}: unknown wnid in {line!r}")
        test.append((root / "val" / "images" / fields[0], index[fields[1]]))
    return classes, {"train": train, "test": test}


def scan_places365_val(data_dir: Path) -> tuple[list[str], Labelled]:
    """The 256 px validation set; class k is the category file's line with index k ('/a/airfield 0' → airfield)."""
    root = data_dir / PLACES_DIR
    _need(root / PLACES_CATEGORIES, root / PLACES_VAL, root / PLACES_IMAGES)
    named = {}
    for line in (root / PLACES_CATEGORIES).read_text().splitlines():
        if line.strip():
            name, idx = line.rsplit(maxsplit=1)
            named[int(idx)] = name.strip("/").split("/", 1)[-1]  # '/a/airfield' → 'airfield'
    classes = [named[i] for i in range(len(named))]
    items = []
    for line in (root / PLACES_VAL).read_text().splitlines():
        if line.strip():
            file, idx = line.split()
            items.append((root / PLACES_IMAGES / file.lstrip("/"), int(idx)))
    return classes, items
