"""Sentences and labels: the Rotten Tomatoes hub dataset, or local CSV / TSV / JSONL files.

Rotten Tomatoes (``cornell-movie-review-data/rotten_tomatoes``): 5,331 positive + 5,331 negative sentences,
splits 8,530 / 1,066 / 1,066, labels ``neg``/``pos``. Local data: a file (validation and test carved off it by
``--val-split``) or a folder holding files named train / validation (or val, dev) / test. ``dla-reviews`` (when
no local file or folder has that name): the 500 sentences lab2 ships (``lab2_distilbert.dla_reviews``; written
for this project, not Rotten Tomatoes), 280 / 60 / 160, labels ``neg``/``pos``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dla_core.errors import DlaError

log = logging.getLogger(__name__)

HUB_DATASET = "cornell-movie-review-data/rotten_tomatoes"
SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "val", "dev", "valid"), "test": ("test",)}


@dataclass(frozen=True)
class DataConfig:
    source: str | None = None  # file or folder; None = the hub dataset
    text_column: str = "text"
    label_column: str = "label"
    val_split: float = 0.1  # fraction carved off train for a missing validation (and test) split
    max_length: int = 128  # tokens; Rotten Tomatoes sentences average ~25 tokens, the longest ~70
    cache_dir: str = "data/lab2-cache"
    seed: int = 0
    limit: int | None = None  # at most this many sentences per split (a fixed random subset); None: all


@dataclass
class TextSet:
    texts: list[str]
    labels: np.ndarray  # int64 class indices into label_names
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: np.ndarray) -> TextSet:
        return TextSet([self.texts[i] for i in idx], self.labels[idx], self.label_names)


@dataclass
class TextSplits:
    train: TextSet
    validation: TextSet
    test: TextSet

    @property
    def label_names(self) -> list[str]:
        return self.train.label_names

    def items(self) -> list[tuple[str, TextSet]]:
        return [("train", self.train), ("validation", self.validation), ("test", self.test)]


def load_text_splits(cfg: DataConfig) -> TextSplits:
    """Train / validation / test sentences with labels mapped to one shared list of names."""
    raw = _read_hub(cfg) if cfg.source is None else _read_local(shipped(cfg.source), cfg)
    names = _label_names(raw["train"][1], raw.get("names"))
    sets = {
        split: _to_textset(texts, labels, names, split) for split, (texts, labels) in _splits(raw).items()
    }
    rng = np.random.default_rng(cfg.seed)
    if "validation" not in sets or "test" not in sets:
        sets = _carve(sets, cfg.val_split, rng)
    for split, s in sets.items():
        if len(s) == 0:
            raise DlaError(f"the {split} split is empty; use more data or a larger --val-split")
    if cfg.limit is not None:  # after the carve: the subsets come from the same splits as a whole run's
        pick = np.random.default_rng([cfg.seed, 1])
        sets = {k: v.subset(np.sort(pick.permutation(len(v))[: cfg.limit])) for k, v in sets.items()}
    log.info("data: %s", {k: len(v) for k, v in sets.items()})
    return TextSplits(sets["train"], sets["validation"], sets["test"])


#### Readers ####


def shipped(source: str) -> Path:
    """The folder of a data set lab2 ships (``dla-reviews``) unless a local path has that name; else ``source``."""
    from lab2_distilbert import dla_reviews

    path = Path(source)
    return dla_reviews.FOLDER if str(source) == dla_reviews.NAME and not path.exists() else path


def _read_hub(cfg: DataConfig) -> dict:
    import datasets

    try:
        ds = datasets.load_dataset(HUB_DATASET)
    except Exception as e:  # offline, no cache, hub down
        raise DlaError(
            f"cannot load {HUB_DATASET} from the Hugging Face hub ({type(e).__name__}); "
            "pass --data FILE_OR_DIR with local CSV/TSV/JSONL files"
        ) from None
    names = ds["train"].features["label"].names
    return {
        split: (list(ds[split]["text"]), [names[i] for i in ds[split]["label"]])
        for split in ("train", "validation", "test")
    } | {"names": names}


def _read_local(path: Path, cfg: DataConfig) -> dict:
    if not path.exists():
        raise DlaError(f"--data {path}: no such file or folder")
    if path.is_file():
        return {"train": _read_file(path, cfg)}
    files = sorted(f for f in path.iterdir() if f.suffix in SUFFIXES)
    found: dict = {}
    for split, stems in SPLIT_NAMES.items():  # train first, so its errors come first
        match = [f for f in files if f.stem.lower() in stems]
        if match:
            found[split] = _read_file(match[0], cfg)
    if "train" not in found:
        raise DlaError(
            f"--data {path}: no train file (expected train.csv, train.tsv or train.jsonl, "
            "and optionally validation.* and test.*)"
        )
    return found


def _read_file(path: Path, cfg: DataConfig) -> tuple[list[str], list]:
    import pandas as pd

    try:
        if path.suffix in (".jsonl", ".json"):
            df = pd.read_json(path, lines=path.suffix == ".jsonl")
        else:
            df = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", keep_default_na=False)
    except ValueError as e:
        raise DlaError(f"cannot read {path}: {e}") from None
    missing = [c for c in (cfg.text_column, cfg.label_column) if c not in df.columns]
    if missing:
        flag = {cfg.text_column: "--text-column", cfg.label_column: "--label-column"}
        raise DlaError(
            f"{path.name} has no column {', '.join(repr(m) for m in missing)} "
            f"({'; '.join(flag[m] for m in missing)}); its columns are {', '.join(map(str, df.columns))}"
        )
    return df[cfg.text_column].astype(str).tolist(), df[cfg.label_column].tolist()


#### Labels and splits ####


def _label_key(v: object) -> str:
    """1, 1.0 and "1" are one label; strings keep their spelling."""
    if isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer()):
        return str(int(v))
    return str(v).strip()


def _label_names(train_labels: list, hub_names: list[str] | None) -> list[str]:
    if hub_names is not None:
        return list(hub_names)
    keys = sorted({_label_key(v) for v in train_labels})
    if all(k.lstrip("-").isdigit() for k in keys):
        keys = sorted(keys, key=int)
    if len(keys) < 2:
        raise DlaError(
            f"the training data has {len(keys)} label value(s) ({', '.join(keys)}); need at least 2"
        )
    return keys


def _to_textset(texts: list[str], labels: list, names: list[str], split: str) -> TextSet:
    index = {n: i for i, n in enumerate(names)}
    keys = [_label_key(v) for v in labels]
    unknown = sorted({k for k in keys if k not in index})
    if unknown:
        raise DlaError(
            f"unknown label {', '.join(repr(u) for u in unknown[:5])} in the {split} split "
            f"(the training labels are {', '.join(names)})"
        )
    return TextSet(list(texts), np.array([index[k] for k in keys], dtype=np.int64), names)


def degenerate_warning(split: str, data: TextSet) -> str | None:
    """A warning when an accuracy on ``data`` would say little: fewer than two classes present (one sentence,
    or a single-class split), so a constant guess can score 100%."""
    present = sorted({data.label_names[i] for i in data.labels.tolist()})
    if len(present) >= 2:
        return None
    which = f"only class {present[0]!r}" if present else "no sentences"
    return (
        f"the {split} split has {which} ({len(data)} sentence{'s' if len(data) != 1 else ''}): "
        "its accuracy cannot tell a classifier from a constant guess"
    )


def _splits(raw: dict) -> dict:
    return {k: v for k, v in raw.items() if k in SPLIT_NAMES}


def _carve(sets: dict[str, TextSet], fraction: float, rng: np.random.Generator) -> dict[str, TextSet]:
    """Missing validation / test splits: each takes ``fraction`` of the training sentences."""
    train = sets["train"]
    order = rng.permutation(len(train))
    k = max(1, round(fraction * len(train)))
    taken = 0
    for split in ("validation", "test"):
        if split not in sets:
            sets[split] = train.subset(order[taken : taken + k])
            taken += k
    sets["train"] = train.subset(order[taken:])
    return sets
