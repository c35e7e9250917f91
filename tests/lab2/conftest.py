"""Tiny random DistilBERT / BERT models with a WordPiece tokenizer, and Rotten-Tomatoes-like fixture files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

POSITIVE = ["good", "great", "moving", "funny", "brilliant", "charming", "superb", "warm"]
NEGATIVE = ["bad", "dull", "boring", "awful", "flat", "tedious", "clumsy", "weak"]
FILLER = ["the", "film", "movie", "is", "a", "story", "with", "and", "its", "cast", "plot", "really", "quite"]
# Tests never reach the hub: local folders only (set before transformers / huggingface_hub are imported)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + POSITIVE + NEGATIVE + FILLER + [".", ",", "##s", "##ly"]


def sentences(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Sentences of 4-20 words whose label is decided by the sentiment words they hold."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = list(rng.choice(FILLER, size=int(rng.integers(3, 18))))
        for _ in range(int(rng.integers(1, 3))):
            words.insert(
                int(rng.integers(0, len(words) + 1)), str(rng.choice(POSITIVE if label else NEGATIVE))
            )
        texts.append(" ".join(words) + " .")
        labels.append(label)
    return texts, labels


def write_split(path: Path, texts: list[str], labels: list, text_col: str = "text", label_col: str = "label"):
    if path.suffix == ".jsonl":
        path.write_text(
            "".join(
                json.dumps({text_col: t, label_col: y}) + "\n" for t, y in zip(texts, labels, strict=True)
            )
        )
    else:
        sep = "\t" if path.suffix == ".tsv" else ","
        rows = [f"{text_col}{sep}{label_col}"] + [
            f'"{t}"{sep}{y}' for t, y in zip(texts, labels, strict=True)
        ]
        path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="session")
def text_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with train.csv (160), validation.tsv (40) and test.jsonl (40), labels neg/pos."""
    root = tmp_path_factory.mktemp("rt")
    for split, n, suffix, seed in (
        ("train", 160, "csv", 0),
        ("validation", 40, "tsv", 1),
        ("test", 40, "jsonl", 2),
    ):
        texts, labels = sentences(n, seed)
        write_split(root / f"{split}.{suffix}", texts, [["neg", "pos"][y] for y in labels])
    return root


def _vocab_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return folder / "vocab.txt"


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer DistilBERT base model (no head) with its tokenizer, saved like a hub checkpoint."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-distilbert")
    tok = DistilBertTokenizerFast(vocab=str(_vocab_file(folder / "vocab")))  # 5.x ignores vocab_file=
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=len(VOCAB), n_layers=2, dim=32, hidden_dim=64, n_heads=2,
                              max_position_embeddings=64)  # fmt: skip
    DistilBertModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = BertTokenizerFast(vocab=str(_vocab_file(folder / "vocab")))  # 5.x ignores vocab_file=
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                        num_attention_heads=2, max_position_embeddings=64)  # fmt: skip
    BertModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sst2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random DistilBERT sequence classifier whose labels are named like the SST-2 fine-tune's."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-sst2")
    tok = DistilBertTokenizerFast(vocab=str(_vocab_file(folder / "vocab")))  # 5.x ignores vocab_file=
    torch.manual_seed(1)
    config = DistilBertConfig(vocab_size=len(VOCAB), n_layers=1, dim=32, hidden_dim=64, n_heads=2,
                              max_position_embeddings=64, id2label={0: "NEGATIVE", 1: "POSITIVE"},
                              label2id={"NEGATIVE": 0, "POSITIVE": 1})  # fmt: skip
    DistilBertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
