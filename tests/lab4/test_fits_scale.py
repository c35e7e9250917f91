"""Fits that scale: every fit streams over its batches (the same fitted detector whatever the batch size, a bounded
sample past its cap), and a `--grid` passes over the training set once per distinct fit (Detector.gather_key)
and over each held-out set once per distinct view (Detector.view_key), with the rows of fitting and scoring
every point from scratch."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from dla_core.data import load_dataset
from lab4_ood import detection, methods
from lab4_ood import detectors as det
from lab4_ood.datasets import head
from lab4_ood.metrics import ood_metrics

CPU = torch.device("cpu")
# small caps, so that the samples (KNN's and ReAct's banks, NAC's and AdaSCALE's fit images) drop images
SMALL = {"max_bank": 60, "knn_k": 5, "nac_fit_images": 40, "adascale_fit_images": 45, "vim_dim": 16}
FITTING = [d.name for d in methods.DETECTORS if d.fits and d.name != "reconstruction"]


def batches(data, size):
    images = data.images.float() / 255
    return [(images[i : i + size], data.labels[i : i + size]) for i in range(0, len(data), size)]


@pytest.mark.parametrize("name", FITTING)
def test_a_fit_streamed_in_small_batches_equals_the_fit_on_one_batch(name, digits_mlp, digits04):
    """Sums, outer products, banks and samples gathered batch by batch give the detector of one whole-set batch
    (up to float rounding), past the samples' caps too (200 training images, caps of 40-60)."""
    train, test = head(digits04.train, 200), head(digits04.test, 60)
    whole = det.make_detector(name, digits_mlp, SMALL, CPU).fit(batches(train, len(train)))
    streamed = det.make_detector(name, digits_mlp, SMALL, CPU).fit(batches(train, 7))
    np.testing.assert_allclose(
        det.score_set(streamed, test, 64, CPU), det.score_set(whole, test, 64, CPU), rtol=1e-6, atol=1e-9
    )
    # a fit on a third of the images is another detector: the comparison above can fail
    part = det.make_detector(name, digits_mlp, SMALL, CPU).fit(batches(train, 7)[10:])
    assert not np.allclose(det.score_set(part, test, 64, CPU), det.score_set(whole, test, 64, CPU))


# searched option → values; adascale's k1 and nac's alpha change their fits (two passes each), the rest not
GRIDS = {
    "knn": {"knn_k": (1, 5, 10)},
    "react": {"react_percentile": (85.0, 95.0)},
    "dice": {"dice_p": (10.0, 90.0)},
    "nci": {"nci_alpha": (1e-4, 1e-1)},
    "nac": {"nac_alpha": (50.0, 100.0), "nac_o": (10, 50)},
    "adascale": {"adascale_p_min": (60.0, 80.0), "adascale_p_max": (70.0, 85.0), "adascale_k1": (5.0, 10.0)},
}
PASSES = {"knn": 1, "react": 1, "dice": 1, "nci": 1, "nac": 2, "adascale": 2}


def rows_from_scratch(name, model, options, train, id_val, oods, grid):
    """What the grid gave before it shared anything: every point fitted and scored on its own."""
    rows = []
    for values in itertools.product(*grid.values()):
        chosen = dict(zip(grid, values, strict=True))
        try:
            d = det.make_detector(name, model, {**options, **chosen}, CPU)
        except Exception:
            continue
        d.fit(detection.Batches(train, 32, CPU))
        s_id = det.score_set(d, id_val, 32, CPU)
        aurocs = [ood_metrics(s_id, det.score_set(d, data, 32, CPU))["auroc"] for data in oods.values()]
        rows.append({**chosen, "auroc": float(np.mean(aurocs))})
    return rows


@pytest.mark.parametrize("name", GRIDS)
def test_a_grid_passes_over_the_training_set_once_per_fit_and_gives_the_rows_of_separate_fits(
    name, digits_mlp, digits04, monkeypatch
):
    train, id_val = head(digits04.train, 120), head(digits04.val, 40)
    _, ood = load_dataset("digits:5-9")
    oods = {"a": head(ood, 30), "b": head(ood, 30, seed=1)}
    options = {**SMALL, "knn_k": 1}
    expected = rows_from_scratch(name, digits_mlp, options, train, id_val, oods, GRIDS[name])

    passes, views = [], []
    iterate = detection.Batches.__iter__
    monkeypatch.setattr(detection.Batches, "__iter__", lambda self: passes.append(1) or iterate(self))
    views_of_set = det.views_of_set
    monkeypatch.setattr(
        det, "views_of_set", lambda d, data, *a: views.append(len(data)) or views_of_set(d, data, *a)
    )
    rows = detection.search_hyperparameter(
        name, digits_mlp, options, train, id_val, oods, GRIDS[name], 32, CPU
    )

    assert rows == expected
    assert len(rows) == len(expected) >= 2 and len({r["auroc"] for r in rows}) >= 2  # the points differ
    assert len(passes) == PASSES[name]
    # each held-out set viewed once per distinct view: nac's two alphas and adascale's two k1 view twice
    assert len(views) == 3 * (2 if name in ("nac", "adascale") else 1)
