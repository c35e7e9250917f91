"""Loading sentences, the token cache, and length-grouped, dynamically padded batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dla_core.errors import DlaError
from lab2_distilbert.data import DataConfig, load_text_splits
from lab2_distilbert.models import load_tokenizer
from lab2_distilbert.tokens import TokenBatches, encode
from tests.lab2.conftest import sentences, write_split


def test_local_folder_reads_csv_tsv_jsonl_and_maps_string_labels(text_data):
    s = load_text_splits(DataConfig(source=str(text_data)))
    assert (len(s.train), len(s.validation), len(s.test)) == (160, 40, 40)
    assert s.label_names == ["neg", "pos"]
    texts, labels = sentences(40, 2)
    assert s.test.texts == texts and s.test.labels.tolist() == labels


def test_single_file_is_split_by_val_split(tmp_path):
    texts, labels = sentences(100, 3)
    write_split(tmp_path / "all.tsv", texts, labels, "sentence", "y")
    s = load_text_splits(DataConfig(source=str(tmp_path / "all.tsv"), text_column="sentence", label_column="y",
                                    val_split=0.2))  # fmt: skip
    assert (len(s.train), len(s.validation), len(s.test)) == (60, 20, 20)
    assert s.label_names == ["0", "1"]
    together = sorted(s.train.texts + s.validation.texts + s.test.texts)
    assert together == sorted(texts)  # a partition: nothing lost, nothing shared


def test_wrong_column_and_unknown_label_are_clear_errors(text_data, tmp_path):
    with pytest.raises(
        DlaError, match=r"no column 'sentence' \(--text-column\); its columns are text, label"
    ):
        load_text_splits(DataConfig(source=str(text_data), text_column="sentence"))
    texts, labels = sentences(20, 4)
    write_split(tmp_path / "train.csv", texts, labels)
    write_split(tmp_path / "test.csv", texts[:4], [0, 1, 7, 1])
    with pytest.raises(
        DlaError, match=r"unknown label '7' in the test split \(the training labels are 0, 1\)"
    ):
        load_text_splits(DataConfig(source=str(tmp_path)))
    with pytest.raises(DlaError, match="no such file or folder"):
        load_text_splits(DataConfig(source=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DlaError, match="no train file"):
        load_text_splits(DataConfig(source=str(tmp_path / "empty")))


def test_hub_dataset_code_path(monkeypatch):
    import datasets

    def fake_hub(name):
        assert name == "cornell-movie-review-data/rotten_tomatoes"
        features = datasets.Features({"text": datasets.Value("string"),
                                      "label": datasets.ClassLabel(names=["neg", "pos"])})  # fmt: skip

        def split(n: int, seed: int) -> datasets.Dataset:
            return datasets.Dataset.from_dict(
                dict(zip(("text", "label"), sentences(n, seed), strict=True)), features
            )

        return datasets.DatasetDict(train=split(30, 0), validation=split(10, 1), test=split(10, 2))

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    s = load_text_splits(DataConfig())
    assert (
        s.label_names == ["neg", "pos"]
        and len(s.train) == 30
        and s.test.labels.tolist() == sentences(10, 2)[1]
    )

    def offline(name):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DlaError, match="pass --data FILE_OR_DIR"):
        load_text_splits(DataConfig())


def test_tokenization_is_cached_and_reused(tiny_distilbert, text_data, tmp_path, monkeypatch):
    tok = load_tokenizer(str(tiny_distilbert))
    s = load_text_splits(DataConfig(source=str(text_data)))
    first = encode(tok, s.train, 16, tmp_path)
    assert not first.from_cache and len(list(tmp_path.glob("tokens-*.pt"))) == 1
    calls = []
    monkeypatch.setattr(
        type(tok), "__call__", lambda *a, **k: calls.append(1)
    )  # a real tokenizer call now fails
    again = encode(load_tokenizer(str(tiny_distilbert)), s.train, 16, tmp_path)
    assert again.from_cache and not calls
    assert torch.equal(again.ids, first.ids) and torch.equal(again.lengths, first.lengths)
    monkeypatch.undo()
    other = encode(tok, s.train, 8, tmp_path)  # another max_length is another cache entry
    assert not other.from_cache and other.lengths.max() == 8 and len(list(tmp_path.glob("tokens-*.pt"))) == 2
    # the ids are what the tokenizer gives, truncated
    row = tok(s.train.texts[5], truncation=True, max_length=16)["input_ids"]
    o = int(first.offsets[5])
    assert first.ids[o : o + len(row)].tolist() == row and int(first.lengths[5]) == len(row)


@pytest.fixture(scope="module")
def encoded(tiny_distilbert, text_data):
    tok = load_tokenizer(str(tiny_distilbert))
    return tok, encode(tok, load_text_splits(DataConfig(source=str(text_data))).train, 32)


def test_batches_pad_dynamically_and_cover_each_example_once(encoded):
    tok, enc = encoded
    batches = TokenBatches(enc, 16, pad_id=tok.pad_token_id, shuffle=True, seed=1)
    seen = []
    for b in batches.iterate(0):
        lengths = b["attention_mask"].sum(1)
        assert b["input_ids"].shape[1] == int(lengths.max())  # padded only to the batch's longest
        assert (b["input_ids"][b["attention_mask"] == 0] == tok.pad_token_id).all()
        for row, i, n in zip(b["input_ids"], b["index"], lengths, strict=True):
            o = int(enc.offsets[i])
            assert row[:n].tolist() == enc.ids[o : o + int(n)].tolist()
        assert torch.equal(b["labels"], enc.labels[b["index"]])
        seen += b["index"].tolist()
    assert sorted(seen) == list(range(160)) and len(batches) == 10


def test_length_grouping_cuts_padding_and_epochs_are_reproducible(encoded):
    _, enc = encoded
    grouped = TokenBatches(enc, 16, pad_id=0, shuffle=True, seed=1)
    ungrouped = TokenBatches(enc, 16, pad_id=0, shuffle=True, seed=1, pool=1)
    padded = lambda bs: sum(b["input_ids"].numel() for b in bs.iterate(0))  # noqa: E731
    assert padded(grouped) < 0.8 * padded(ungrouped)
    order = lambda e, start=0: [b["index"].tolist() for b in grouped.iterate(e, start=start)]  # noqa: E731
    assert order(0) == order(0) and order(0) != order(1)
    assert order(0, start=4) == order(0)[4:]  # resuming mid-epoch replays the same batches


def test_batches_shard_across_processes_like_one_process(encoded):
    _, enc = encoded
    batches = TokenBatches(enc, 8, pad_id=0, shuffle=True, seed=2)
    assert batches.num_batches(2) == 10
    ranks = [[b["index"].tolist() for b in batches.iterate(3, rank=r, world=2)] for r in (0, 1)]
    global_batches = [b.tolist() for b in batches.order(3, world=2)]
    for i, g in enumerate(global_batches):
        assert ranks[0][i] + ranks[1][i] == g and len(ranks[0][i]) == 8
    ev = TokenBatches(enc, 48, pad_id=0)
    assert sorted(np.concatenate([b["index"].numpy() for b in ev.iterate(0)]).tolist()) == list(range(160))


def _tiny(lengths: list[int]):
    """An Encoded split whose sentence i is `lengths[i]` tokens, ids 1000*i + position, label i % 2."""
    from lab2_distilbert.tokens import Encoded

    ids = torch.tensor([1000 * i + p for i, n in enumerate(lengths) for p in range(n)], dtype=torch.int32)
    lens = torch.tensor(lengths, dtype=torch.int64)
    return Encoded(ids, torch.cumsum(lens, 0) - lens, lens, torch.arange(len(lengths)) % 2)


def test_evaluation_batches_by_hand():
    """Evaluation: sorted by length (ties in split order), the last partial batch kept, pads set to pad_id."""
    enc = _tiny([3, 1, 2, 1, 3])
    batches = TokenBatches(enc, 2, pad_id=-7)
    assert len(batches) == 3 and not batches.drop_last
    got = list(batches.iterate(0))
    assert [b["index"].tolist() for b in got] == [[1, 3], [2, 0], [4]]
    assert got[1]["input_ids"].tolist() == [[2000, 2001, -7], [0, 1, 2]]
    assert got[1]["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert got[2]["input_ids"].tolist() == [[4000, 4001, 4002]]  # the last token of the last sentence
    assert got[0]["labels"].tolist() == [1, 1]


def test_training_batches_drop_the_tail_unless_the_split_is_smaller_than_a_batch():
    enc = _tiny([1, 2, 3, 4, 5])
    train = TokenBatches(enc, 2, pad_id=0, shuffle=True)
    assert train.drop_last and len(train) == 2
    assert sorted(i for b in train.iterate(0) for i in b["index"].tolist()) != list(range(5))
    small = TokenBatches(enc, 8, pad_id=0, shuffle=True)  # five sentences, batches of eight: one batch of all
    assert len(small) == 1 and sorted(next(iter(small.iterate(0)))["index"].tolist()) == list(range(5))
    assert [b["index"].tolist() for b in train.iterate(0)] == [
        b["index"].tolist() for b in TokenBatches(enc, 2, pad_id=0, shuffle=True, seed=0).iterate(0)
    ]  # the default seed is 0


def test_a_process_with_no_rows_gets_no_batches():
    enc = _tiny([1, 2, 3])
    batches = TokenBatches(enc, 1, pad_id=0)  # global batch 4 of 3 sentences: the fourth process gets none
    assert list(batches.iterate(0, rank=3, world=4)) == []
    rows = [[b["index"].tolist() for b in batches.iterate(0, rank=r, world=4)] for r in range(3)]
    assert rows == [[[0]], [[1]], [[2]]]


def test_cache_key_separates_what_decides_the_ids(tiny_distilbert, tiny_bert):
    from lab2_distilbert.data import TextSet
    from lab2_distilbert.tokens import cache_key

    tok, other = load_tokenizer(str(tiny_distilbert)), load_tokenizer(str(tiny_bert))
    data = TextSet(["ab", "c"], np.array([0, 1]), ["0", "1"])
    key = cache_key(tok, data, 16)
    assert len(key) == 24 and key == cache_key(load_tokenizer(str(tiny_distilbert)), data, 16)
    # sentence boundaries count
    assert key != cache_key(tok, TextSet(["a", "bc"], np.array([0, 1]), ["0", "1"]), 16)
    assert key != cache_key(tok, TextSet(["ab", "c"], np.array([1, 1]), ["0", "1"]), 16)
    assert key != cache_key(tok, data, 8)
    assert key != cache_key(other, data, 16)


def test_damaged_cache_is_rebuilt(encoded, text_data, tiny_distilbert, tmp_path):
    tok = load_tokenizer(str(tiny_distilbert))
    train = load_text_splits(DataConfig(source=str(text_data))).train
    first = encode(tok, train, 32, tmp_path)
    (path,) = tmp_path.glob("tokens-*.pt")
    path.write_bytes(b"not a torch file")
    again = encode(tok, train, 32, tmp_path)
    assert not again.from_cache and torch.equal(again.ids, first.ids)
    assert torch.equal(again.ids, encoded[1].ids) and again.ids.dtype == torch.int32
    assert encode(tok, train, 32, tmp_path).from_cache  # rewritten whole


def test_fingerprint_and_cache_key_by_hand(tiny_distilbert):
    """The hashes are what the docstrings say, byte for byte (a fast tokenizer, then a slow one)."""
    import hashlib
    import json

    from lab2_distilbert.data import TextSet
    from lab2_distilbert.tokens import CACHE_VERSION, cache_key, tokenizer_fingerprint

    tok = load_tokenizer(str(tiny_distilbert))
    h = hashlib.sha256(type(tok).__name__.encode())
    rules = json.loads(tok.backend_tokenizer.to_str())
    del rules["truncation"], rules["padding"]
    h.update(json.dumps(rules, sort_keys=True).encode())
    h.update(json.dumps(tok.all_special_tokens).encode())
    assert tokenizer_fingerprint(tok) == h.hexdigest()
    tok(
        ["a b"], truncation=True, max_length=3, padding=True
    )  # leaves truncation/padding state on the backend
    assert tokenizer_fingerprint(tok) == h.hexdigest()  # the same ids, the same key (once rebuilt every call)

    class Slow:  # no backend_tokenizer: the vocabulary and the special tokens decide the ids
        def __init__(self):
            self.all_special_tokens = ["[PAD]", "[X]"]

        def get_vocab(self):
            return {"b": 1, "a": 0}

    h = hashlib.sha256(b"Slow")
    h.update(json.dumps([["a", 0], ["b", 1]]).encode())
    h.update(json.dumps(["[PAD]", "[X]"]).encode())
    assert tokenizer_fingerprint(Slow()) == h.hexdigest()
    other = Slow()
    other.all_special_tokens = ["[PAD]", "[Y]"]  # same vocabulary, other special tokens: another tokenizer
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(Slow())

    data = TextSet(["ab", "c"], np.array([0, 1]), ["0", "1"])
    h = hashlib.sha256(f"v{CACHE_VERSION}|{tokenizer_fingerprint(tok)}|16|".encode())
    for part in (b"ab", b"\0", b"c", b"\0", np.array([0, 1]).tobytes()):
        h.update(part)
    assert cache_key(tok, data, 16) == h.hexdigest()[:24]


def test_cache_file_name_and_log_lines(tiny_distilbert, text_data, tmp_path, caplog):
    from lab2_distilbert.tokens import cache_key

    tok = load_tokenizer(str(tiny_distilbert))
    train = load_text_splits(DataConfig(source=str(text_data))).train
    path = tmp_path / f"tokens-{cache_key(tok, train, 12)}.pt"
    with caplog.at_level("INFO", logger="lab2_distilbert.tokens"):
        encode(tok, train, 12, tmp_path)
        assert list(tmp_path.iterdir()) == [path]
        encode(tok, train, 12, tmp_path)
        path.write_bytes(b"not a torch file")
        try:
            torch.load(path, weights_only=True)
        except Exception as e:  # torch's own reason, which the warning passes on
            reason = str(e)
        encode(tok, train, 12, tmp_path)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "lab2_distilbert.tokens"]
    assert lines[:3] == [
        ("INFO", f"tokenized 160 sentences → {path}"),
        ("INFO", f"tokens from cache {path}"),
        ("WARNING", lines[2][1]),
    ]
    assert lines[2][1] == f"ignoring unreadable token cache {path} ({reason})"
    assert lines[3:] == [("INFO", f"tokenized 160 sentences → {path}")]
    assert not list(tmp_path.glob("tokens-*.pt.*"))  # written whole, no temporary left


def test_a_cache_file_that_needs_full_unpickling_is_not_trusted(tiny_distilbert, text_data, tmp_path):
    """The cache is read with weights_only=True: a file holding arbitrary Python objects is rebuilt, not run."""
    from fractions import Fraction

    from lab2_distilbert.tokens import cache_key

    tok = load_tokenizer(str(tiny_distilbert))
    train = load_text_splits(DataConfig(source=str(text_data))).train
    good = encode(tok, train, 12)
    path = tmp_path / f"tokens-{cache_key(tok, train, 12)}.pt"
    torch.save({"ids": Fraction(1, 3), "offsets": 0, "lengths": 0, "labels": 0}, path)
    again = encode(tok, train, 12, tmp_path)
    assert not again.from_cache and torch.equal(again.ids, good.ids)


def test_batch_options_by_default_and_when_given():
    enc = _tiny([(7 * i) % 11 + 1 for i in range(120)])
    # pools of 50 global batches by default (batch 1: 120 sentences make pools of 50, 50, 20)
    default = TokenBatches(enc, 1, pad_id=0, shuffle=True, seed=3)
    assert [b.tolist() for b in default.order(0)] == [
        b.tolist() for b in TokenBatches(enc, 1, pad_id=0, shuffle=True, seed=3, pool=50).order(0)
    ]
    assert len(default.order(0)) == 120  # one process by default: global batches of one sentence
    assert [b.tolist() for b in default.order(0)] != [
        b.tolist() for b in TokenBatches(enc, 1, pad_id=0, shuffle=True, seed=3, pool=51).order(0)
    ]
    small = _tiny([1, 2, 3, 4, 5])
    keep = TokenBatches(small, 2, pad_id=0, shuffle=True, drop_last=False)  # training, tail kept
    assert len(keep) == 3 and sorted(i for b in keep.iterate(0) for i in b["index"].tolist()) == list(
        range(5)
    )
    drop = TokenBatches(small, 2, pad_id=0, drop_last=True)  # evaluation order, tail dropped
    assert [b["index"].tolist() for b in drop.iterate(0)] == [[0, 1], [2, 3]]


def test_batches_moved_to_a_device_serve_the_same_values():
    enc = _tiny([3, 1, 2])
    batches = TokenBatches(enc, 2, pad_id=0)
    plain = list(batches.iterate(0))
    cpu = torch.device("cpu")
    assert batches.to(cpu) is batches and batches._device == cpu
    assert [t.dtype for t in batches._t] == [torch.int64] * 4
    moved = list(TokenBatches(enc, 2, pad_id=0).iterate(0, device=cpu))
    for a, b in zip(plain, moved, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_equal_lengths_keep_their_order_when_sorted():
    """Ties in length keep split order (evaluation) and permutation order (training pools): a stable sort, which
    torch's default argsort is not on a hundred rows with three lengths."""
    from dla_core.data.batches import epoch_generator

    lengths = [(5 * i) % 3 + 1 for i in range(100)]
    enc = _tiny(lengths)
    lens = torch.tensor(lengths)
    ev = TokenBatches(enc, 10, pad_id=0)
    expected = sorted(range(100), key=lambda i: lengths[i])  # Python's sort is stable
    assert [i for b in ev.iterate(0) for i in b["index"].tolist()] == expected
    train = TokenBatches(enc, 10, pad_id=0, shuffle=True, seed=4)  # one pool: 10 batches of 10
    gen = epoch_generator(4, 2)
    perm = torch.randperm(100, generator=gen).tolist()
    pool = sorted(perm, key=lambda i: lengths[i])  # ties in permutation order
    batches = [pool[k : k + 10] for k in range(0, 100, 10)]
    assert [b.tolist() for b in train.order(2)] == [
        batches[k] for k in torch.randperm(10, generator=gen).tolist()
    ]
    assert lens[expected].tolist() == sorted(lengths)
