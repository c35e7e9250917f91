"""The numbers lab2 reports: features equal a plain forward pass, --seed reproduces runs, evaluate reads the
split it is asked for, and degenerate evaluations say so."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lab2_distilbert.cli import group
from lab2_distilbert.data import DataConfig, TextSet, degenerate_warning, load_text_splits
from lab2_distilbert.experiments import extract_features
from lab2_distilbert.models import load_tokenizer
from lab2_distilbert.tokens import TokenBatches, encode
from tests.lab2.conftest import sentences, write_split

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)  # inside PEFT

# train_seconds: the recipe's sum of epoch_seconds (a wall-clock time like the others)
TIMINGS = {
    "wall_seconds",
    "train_samples_per_second",
    "feature_seconds",
    "epoch_seconds",
    "seconds",
    "train_seconds",
    "peak_memory_bytes",  # a measurement of the process like the times (its peak RSS on a CPU)
}


def lab2(*argv) -> str:
    result = CliRunner().invoke(group, [str(a) for a in argv], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def numbers(m):
    """metrics.json without wall-clock times and file paths."""
    if isinstance(m, dict):
        return {k: numbers(v) for k, v in m.items() if k not in TIMINGS and k != "features_cache"}
    if isinstance(m, list):
        return [numbers(v) for v in m]
    return m


@torch.no_grad()
def plain_features(folder: Path, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """[CLS] and mean features from transformers' AutoModel, one unpadded sentence at a time."""
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    cls, mean = [], []
    for text in texts:
        hidden = model(
            **tok(text, truncation=True, max_length=max_length, return_tensors="pt")
        ).last_hidden_state
        cls.append(hidden[0, 0])
        mean.append(hidden[0].mean(0))
    return {"cls": torch.stack(cls), "mean": torch.stack(mean)}


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_every_feature_row_is_the_models_forward_pass(tiny_distilbert, text_data, tmp_path, pooling):
    """160 training sentences in batches of 64: the last partial batch must have features too (the training
    batches dropped it, leaving zero rows); mean pooling must skip [PAD]; [CLS] is position 0."""
    run = tmp_path / "f"
    lab2("features", "--model", tiny_distilbert, "--data", text_data, "--cache-dir", tmp_path / "c",
         "--pooling", pooling, "--batch-size", 64, "--max-length", 24, "--out", run)  # fmt: skip
    feats = torch.load(metrics(run)["features_cache"], weights_only=True)
    splits = load_text_splits(DataConfig(source=str(text_data)))
    for name, split in splits.items():
        assert feats[name].shape == (len(split), 32)
        expected = plain_features(tiny_distilbert, split.texts, 24)[pooling]
        torch.testing.assert_close(feats[name], expected, rtol=1e-4, atol=1e-5, msg=f"{name} split")


def test_feature_extraction_refuses_to_leave_rows_empty(tiny_distilbert, text_data):
    from transformers import AutoModel

    from dla_core.engine import make_accelerator

    tok = load_tokenizer(str(tiny_distilbert))
    enc = encode(tok, load_text_splits(DataConfig(source=str(text_data))).train, 16)
    encoder, acc = AutoModel.from_pretrained(tiny_distilbert), make_accelerator("no", cpu=True)
    with pytest.raises(ValueError, match="keep the last partial batch"):
        extract_features(encoder, TokenBatches(enc, 64, pad_id=0, shuffle=True), "cls", acc)

    class Lossy(TokenBatches):  # a batch source that silently skips its last batch
        def order(self, epoch, world=1):
            return super().order(epoch, world)[:-1]

    with pytest.raises(RuntimeError, match="left 32 of 160 rows without features"):
        extract_features(encoder, Lossy(enc, 64, pad_id=0), "mean", acc)


@pytest.mark.parametrize(
    "command",
    [
        ["features", "--pooling", "mean", "--neighbours", "4"],
        ["finetune", "--epochs", "2", "--lr", "3e-3", "--batch-size", "16"],
        ["finetune", "--strategy", "head", "--epochs", "1", "--batch-size", "16"],
        ["lora", "--rank", "4", "--epochs", "2", "--lr", "1e-2", "--batch-size", "16"],
    ],
    ids=["features", "finetune", "finetune-head", "lora"],
)
def test_same_seed_same_numbers(tiny_distilbert, text_data, tmp_path, command):
    """Each run gets its own cache (nothing reused), and runs one after another in one process, so without
    seeding at the start of the command the new head / adapters would differ between the first two."""
    cmd, *opts = command
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        lab2(cmd, *opts, "--model", tiny_distilbert, "--data", text_data, "--cache-dir", tmp_path / f"c{name}",
             "--seed", seed, "--cpu", "--out", tmp_path / name)  # fmt: skip
        runs[name] = numbers(metrics(tmp_path / name))
    assert runs["a"] == runs["b"]
    if cmd != "features":  # features draw nothing at random: only the classifiers' seeds are fixed
        assert runs["a"] != runs["c"]  # the seed is used: another seed, another head


def test_sklearn_classifiers_are_seeded():
    from lab2_distilbert.experiments import classifiers

    table = classifiers(5, seed=7)
    assert table["linear_svm"][-1].random_state == 7
    assert table["logistic_regression"][-1].random_state == 7
    assert table["knn"].algorithm == "brute" and table["knn"].n_neighbors == 5


@pytest.fixture(scope="module")
def uneven_splits(tmp_path_factory) -> Path:
    """Validation and test of different sizes and contents (40 vs 24 sentences)."""
    root = tmp_path_factory.mktemp("uneven")
    for split, n, seed in (("train", 40, 0), ("validation", 40, 1), ("test", 24, 5)):
        texts, labels = sentences(n, seed)
        write_split(root / f"{split}.csv", texts, [["neg", "pos"][y] for y in labels])
    return root


@torch.no_grad()
def hand_accuracy(folder: Path, data: TextSet) -> float:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"} and data.label_names == ["neg", "pos"]
    hits = [
        int(model(**tok(t, return_tensors="pt")).logits.argmax(1)) == y
        for t, y in zip(data.texts, data.labels.tolist(), strict=True)
    ]
    return sum(hits) / len(hits)


def test_evaluate_reads_the_split_it_is_asked_for(tiny_sst2, uneven_splits, tmp_path):
    splits = load_text_splits(DataConfig(source=str(uneven_splits)))
    for split, data in (("validation", splits.validation), ("test", splits.test)):
        out = lab2("evaluate", "--model", tiny_sst2, "--data", uneven_splits, "--cache-dir", tmp_path / "c",
                   "--split", split, "--out", tmp_path / split)  # fmt: skip
        m = metrics(tmp_path / split)
        assert m["split"] == split and m["examples"] == len(data)
        assert m["accuracy"] == pytest.approx(hand_accuracy(tiny_sst2, data), abs=1e-9)
        assert f"on {len(data)} sentences" in out


def test_degenerate_split_is_named():
    one = TextSet(["fine ."], np.array([1]), ["neg", "pos"])
    assert "only class 'pos' (1 sentence)" in degenerate_warning("test", one)
    two = TextSet(["a", "b"], np.array([0, 1]), ["neg", "pos"])
    assert degenerate_warning("test", two) is None


def test_single_class_evaluation_warns(tiny_sst2, tmp_path, caplog):
    texts, labels = sentences(30, 0)
    write_split(tmp_path / "train.csv", texts, [["neg", "pos"][y] for y in labels])
    write_split(tmp_path / "validation.csv", texts[:6], [["neg", "pos"][y] for y in labels[:6]])
    write_split(tmp_path / "test.csv", [texts[1], texts[3]], ["pos", "pos"])
    with caplog.at_level(logging.WARNING):
        lab2("evaluate", "--model", tiny_sst2, "--data", tmp_path, "--cache-dir", tmp_path / "c",
             "--out", tmp_path / "ev")  # fmt: skip
    message = "the test split has only class 'pos' (2 sentences)"
    assert message in caplog.text
    assert any(message in w for w in metrics(tmp_path / "ev")["warnings"])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        lab2("evaluate", "--model", tiny_sst2, "--data", tmp_path, "--cache-dir", tmp_path / "c",
             "--split", "validation", "--out", tmp_path / "ev2")  # fmt: skip
    assert "only class" not in caplog.text and "warnings" not in metrics(tmp_path / "ev2")


class _Echo(torch.nn.Module):
    """A stand-in encoder whose hidden state for token id t at position p is [t, p, 1]."""

    def forward(self, input_ids, attention_mask):
        from types import SimpleNamespace

        pos = torch.arange(input_ids.shape[1]).expand_as(input_ids).float()
        hidden = torch.stack([input_ids.float(), pos, torch.ones_like(pos)], -1)
        return SimpleNamespace(last_hidden_state=hidden)


def _encoded(lengths: list[int]):
    """Sentence i is `lengths[i]` tokens with ids 1000*i + position."""
    from lab2_distilbert.tokens import Encoded

    ids = torch.tensor([1000 * i + p for i, n in enumerate(lengths) for p in range(n)], dtype=torch.int32)
    lens = torch.tensor(lengths, dtype=torch.int64)
    return Encoded(ids, torch.cumsum(lens, 0) - lens, lens, torch.zeros(len(lengths), dtype=torch.int64))


@pytest.mark.parametrize("shuffle", [False, True])
def test_pooling_by_hand(shuffle):
    """[CLS] is position 0; the mean runs over real tokens only (a one-token sentence is that token), whatever
    order the batches come in."""
    from dla_core.engine import make_accelerator

    acc = make_accelerator("no", cpu=True)
    batches = TokenBatches(_encoded([1, 3, 2, 3]), 2, pad_id=-7, shuffle=shuffle, drop_last=False)
    mean = extract_features(_Echo(), batches, "mean", acc)
    expected = [[0, 0, 1], [1001, 1, 1], [2000.5, 0.5, 1], [3001, 1, 1]]
    assert mean.tolist() == expected
    cls = extract_features(_Echo(), batches, "cls", acc)
    assert cls.tolist() == [[0, 0, 1], [1000, 0, 1], [2000, 0, 1], [3000, 0, 1]]


def test_feature_extraction_messages():
    from dla_core.engine import make_accelerator

    acc = make_accelerator("no", cpu=True)
    with pytest.raises(ValueError) as e:
        extract_features(_Echo(), TokenBatches(_encoded([2, 2, 2]), 2, pad_id=0, shuffle=True), "cls", acc)
    assert str(e.value) == "feature extraction needs batches that keep the last partial batch"
    with pytest.raises(RuntimeError) as e:  # an empty split has no features to return
        extract_features(_Echo(), TokenBatches(_encoded([]), 2, pad_id=0), "mean", acc)
    assert str(e.value) == "feature extraction left 0 of 0 rows without features"
