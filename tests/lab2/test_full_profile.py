"""`lab2 reproduce --profile full --max-steps 1`: the full recipe end to end at its real sizes, offline.

What the full profile downloads is stood in for where the hub's clients look for it offline: DistilBERT base
(66M parameters, random weights, a 30,522-entry WordPiece vocabulary built here) as ``distilbert-base-uncased``
and its SST-2 sequence classifier in the hub cache, and a Rotten-Tomatoes-shaped dataset (8,530 / 1,066 / 1,066
sentences, labels neg/pos) prepared in the datasets cache as ``cornell-movie-review-data/rotten_tomatoes`` —
what a user has after one online run. The recipe's own hub names are used, through the `lab2` console script.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lab2_distilbert import reproduce
from tests.full_size import FULL_SMOKE_TIMEOUT, failure, put_in_hub_cache, run_lab

RT_SIZES = {"train": 8_530, "validation": 1_066, "test": 1_066}
VOCAB_SIZE = 30_522  # distilbert-base-uncased
DISTILBERT_PARAMETERS = 66_955_010  # DistilBERT base with a two-class head
STEPS = ["features", "finetune-full", "finetune-head", "finetune-head-last", "finetune-bf16", "lora-grid",
         "evaluate-full", "evaluate-sst2"]  # fmt: skip


def _words(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct made-up lowercase words of two to four syllables."""
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    words: dict[str, None] = {}
    while len(words) < n:
        words["".join(rng.choice(syllables, size=int(rng.integers(2, 5))))] = None
    return list(words)


def _vocab(words: list[str]) -> list[str]:
    """BERT uncased's layout: [PAD], [unused0-98], [UNK] [CLS] [SEP] [MASK] at 100-103, then the words."""
    head = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens = [*head, *".,!?'-", *words]
    return tokens + [f"[unused{i}]" for i in range(99, 99 + VOCAB_SIZE - len(tokens))]


def _sentences(n: int, words: list[str], rng: np.random.Generator) -> list[str]:
    """Sentences of 3 to 44 words (Rotten Tomatoes averages about 21)."""
    return [" ".join(rng.choice(words, size=int(rng.integers(3, 45)))) + " ." for _ in range(n)]


def _prepare_dataset(datasets_cache: Path, words: list[str], rng: np.random.Generator, work: Path) -> None:
    """The dataset as `datasets` prepares a hub download: <cache>/cornell-movie-review-data___rotten_tomatoes/."""
    import datasets
    import pandas as pd
    from datasets.packaged_modules.parquet.parquet import Parquet

    files = {}
    for split, n in RT_SIZES.items():
        files[split] = str(work / f"{split}.parquet")
        frame = pd.DataFrame({"text": _sentences(n, words, rng), "label": np.arange(n) % 2})
        frame.to_parquet(files[split])
    features = datasets.Features(
        text=datasets.Value("string"), label=datasets.ClassLabel(names=["neg", "pos"])
    )
    builder = Parquet(cache_dir=str(work / "prepared"), dataset_name="rotten_tomatoes", config_name="default",
                      data_files=files, features=features, hash="0" * 40)  # fmt: skip
    builder.download_and_prepare()
    (config,) = (work / "prepared" / "rotten_tomatoes").iterdir()  # default-<hash of the files>
    target = datasets_cache / "cornell-movie-review-data___rotten_tomatoes"
    target.mkdir(parents=True)
    shutil.move(str(config), str(target / "default"))


def _save_models(hub_cache: Path, vocab: list[str], work: Path) -> None:
    import torch
    from transformers import (
        DistilBertConfig,
        DistilBertForMaskedLM,
        DistilBertForSequenceClassification,
        DistilBertTokenizerFast,
    )

    work.mkdir(parents=True, exist_ok=True)
    (work / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = DistilBertTokenizerFast(vocab=str(work / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    labels = {"id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}
    for repo, model in (
        ("distilbert-base-uncased", DistilBertForMaskedLM(DistilBertConfig())),
        ("distilbert-base-uncased-finetuned-sst-2-english",
         DistilBertForSequenceClassification(DistilBertConfig(**labels))),
    ):  # fmt: skip
        folder = work / repo
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        put_in_hub_cache(hub_cache, repo, folder)


@pytest.fixture(scope="session")
def full_size_hub(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment under which `lab2` finds the full profile's models and dataset offline."""
    root = tmp_path_factory.mktemp("lab2-full-size")
    rng = np.random.default_rng(0)
    words = _words(5_000, rng)
    _save_models(root / "hub", _vocab(words), root / "work")
    _prepare_dataset(root / "datasets", words, rng, root / "work")
    shutil.rmtree(root / "work")
    return {
        "HF_HUB_CACHE": str(root / "hub"),
        "HF_DATASETS_CACHE": str(root / "datasets"),
        "HF_HUB_OFFLINE": "1",
    }


@pytest.mark.slow
@pytest.mark.timeout(FULL_SMOKE_TIMEOUT)
def test_full_profile_runs_every_step_at_real_size_and_writes_a_smoke_report(full_size_hub, tmp_path):
    out = tmp_path / "lab2-full"
    r = run_lab("lab2", "reproduce", "--profile", "full", "--max-steps", "1", "--out", out, env=full_size_hub)
    assert r.returncode == 0, failure(r)
    for name in STEPS:
        assert (out / name / "config.json").is_file() and (out / name / "metrics.json").is_file(), name
    report = (out / "report.md").read_text()
    assert "Smoke run: at most 1 step per epoch" in report and (out / "report.html").is_file()
    tuned = json.loads((out / "finetune-full" / "metrics.json").read_text())
    assert tuned["parameters"] == DISTILBERT_PARAMETERS
    assert (
        json.loads((out / "finetune-full" / "config.json").read_text())["config"]["train"]["max_steps"] == 1
    )
    features = json.loads((out / "features" / "metrics.json").read_text())
    smoke_cap = int(reproduce.SMOKE[1])  # sentences per split of a step that does not train
    assert features["sizes"] == dict.fromkeys(RT_SIZES, smoke_cap)
    assert features["feature_dim"] == 768
    manifest = json.loads((out / "metrics.json").read_text())["steps"]
    assert all(manifest[name]["done"] for name in STEPS)
    print({name: manifest[name]["seconds"] for name in STEPS})
