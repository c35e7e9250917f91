"""dla-reviews: the labelled sentences lab2 ships for offline runs (not Rotten Tomatoes)."""

from __future__ import annotations

import filecmp

from lab2_distilbert import dla_reviews
from lab2_distilbert.data import DataConfig, load_text_splits
from lab2_distilbert.dla_reviews import make
from tests.lab2.conftest import sentences, write_split


def test_dla_reviews_is_a_balanced_shipped_set_whose_test_verdicts_training_never_shows(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # no local folder called dla-reviews
    splits = load_text_splits(DataConfig(source="dla-reviews"))
    assert splits.label_names == ["neg", "pos"]
    assert {name: len(s) for name, s in splits.items()} == {"train": 280, "validation": 60, "test": 160}
    for _, s in splits.items():
        assert 2 * int(s.labels.sum()) == len(s)  # balanced
    texts = [t for _, s in splits.items() for t in s.texts]
    assert len(set(texts)) == len(texts) == 500
    verdict = {v for v in make.POSITIVE + make.NEGATIVE}

    def verdicts(s) -> set[str]:
        return {v for t in s.texts for v in verdict if t.endswith(f" {v}.")}

    assert not verdicts(splits.train) & verdicts(splits.test)
    assert not verdicts(splits.train) & verdicts(splits.validation)
    for t, y in zip(splits.test.texts, splits.test.labels, strict=True):  # labels follow the verdicts
        assert any(t.endswith(f" {v}.") for v in (make.POSITIVE if y == 1 else make.NEGATIVE))
    assert "not Rotten Tomatoes" in dla_reviews.__doc__.replace("NOT", "not")


def test_the_test_split_holds_every_subject_with_every_test_verdict(tmp_path, monkeypatch):
    """As many test sentences as the verdicts allow (issue 23: one sentence of 60 was 1.7 points)."""
    monkeypatch.chdir(tmp_path)
    test = load_text_splits(DataConfig(source="dla-reviews")).test
    a, b, _ = make.SPLITS["test"]
    verdicts = make.POSITIVE[a:b] + make.NEGATIVE[a:b]
    pairs = {
        (s, v) for t in test.texts for s in make.SUBJECTS for v in verdicts if t.lower().endswith(f"{s} {v}.")
    }
    assert len(pairs) == len(test) == len(make.SUBJECTS) * len(verdicts)


def test_the_shipped_files_are_what_make_writes(tmp_path):
    make.write(tmp_path)
    for split in ("train", "validation", "test"):
        assert filecmp.cmp(tmp_path / f"{split}.csv", dla_reviews.FOLDER / f"{split}.csv", shallow=False), (
            split
        )


def test_a_local_folder_named_dla_reviews_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dla-reviews").mkdir()
    texts, labels = sentences(20, 0)
    write_split(tmp_path / "dla-reviews" / "train.csv", texts, labels)
    splits = load_text_splits(DataConfig(source="dla-reviews"))
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 20
