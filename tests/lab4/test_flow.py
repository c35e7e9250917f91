"""What each step of `detect` and `attack` sees: which split, which mode; and the numbers built from them."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import dla_core.models
import lab4_ood.detection as detection
from dla_core.config import Runtime
from dla_core.data import load_dataset, load_splits
from dla_core.errors import DlaError
from dla_core.models import load_model
from lab4_ood import detectors as det
from lab4_ood.attacks import fgsm
from lab4_ood.detection import DetectConfig, detect
from lab4_ood.methods import attacks, detectors
from lab4_ood.metrics import auroc
from lab4_ood.robustness import AttackConfig, run_attack


def pixels(data):
    return data.images.float() / 255


def cat(batches):
    return torch.cat([x.cpu() for x in batches])


@pytest.fixture(scope="module")
def digits():
    splits = load_splits("digits:0-4")
    ood_train, ood_test = load_dataset("digits:5-9")
    return splits, ood_train, ood_test


def test_grid_sees_held_out_data_mahalanobis_fits_on_train_and_the_test_sets_are_scored(
    digits_run, digits, tmp_path, monkeypatch
):
    splits, ood_train, ood_test = digits
    grid_inputs, fit_inputs, scored = [], [], {}

    real_grid = detection.odin_grid

    def spy_grid(model, x, temperatures, epsilons):
        grid_inputs.append(x.detach().clone())
        return real_grid(model, x, temperatures, epsilons)

    real_fit = det.Mahalanobis.fit

    def spy_fit(self, batches):
        batches = list(batches)
        fit_inputs.extend(x for x, _ in batches)
        return real_fit(self, batches)

    real_score_set = det.score_set

    def spy_score_set(detector, data, batch_size, device):
        scored.setdefault(detector.name, []).append(data.images.clone())
        return real_score_set(detector, data, batch_size, device)

    monkeypatch.setattr(detection, "odin_grid", spy_grid)
    monkeypatch.setattr(det.Mahalanobis, "fit", spy_fit)
    monkeypatch.setattr(det, "score_set", spy_score_set)
    summary = detect(
        DetectConfig(
            model=digits_run,
            id="digits:0-4",
            ood=("digits:5-9",),
            methods=("mahalanobis", "odin"),
            grid=True,
            grid_temperatures=(1.0, 1000.0),
            grid_eps=(0.0, 0.01),
        ),
        Runtime(out=tmp_path / "det", cpu=True),
    )
    # the grid: the ID validation slice, then the OOD set's training split; never a test set
    assert torch.equal(cat(grid_inputs), torch.cat([pixels(splits.val), pixels(ood_train)]))
    # Mahalanobis: class means and covariance from the ID training split (not val, not test)
    assert torch.equal(cat(fit_inputs), pixels(splits.train))
    # every method scores the ID test split and the OOD test split
    for name in ("mahalanobis", "odin"):
        assert [len(x) for x in scored[name]] == [len(splits.test), len(ood_test)]
        assert torch.equal(scored[name][0], splits.test.images)
        assert torch.equal(scored[name][1], ood_test.images)
    # the best pair is the one with the highest mean AUROC, and it is the one used on the test sets
    rows = summary["odin_grid"]["rows"]
    assert len({r["auroc"] for r in rows}) > 1  # otherwise "best" and "worst" would be one pair
    best = max(rows, key=lambda r: r["auroc"])
    assert summary["odin_grid"]["best"] == best
    assert summary["odin"] == {"temperature": best["temperature"], "eps": best["eps"]}


def test_the_science_a_trained_classifier_tells_digits_0_4_from_5_9(digits_run, tmp_path):
    """An OOD detector on a classifier trained by `lab4 train` beats chance clearly."""
    summary = detect(
        DetectConfig(
            model=digits_run,
            id="digits:0-4",
            ood=("digits:5-9",),
            methods=("msp", "energy", "mahalanobis"),
        ),
        Runtime(out=tmp_path / "det", cpu=True),
    )
    assert summary["id_accuracy"] > 0.9
    for method, per_ood in summary["results"].items():
        assert per_ood["digits:5-9"]["auroc"] > 0.75, method


def spy_on_loads(monkeypatch):
    """Record each model the command loads, with a copy of its BatchNorm buffers as loaded."""
    loaded = []

    def spy(source, *args, **kwargs):
        model = load_model(source, *args, **kwargs)
        assert model.training  # as loaded: a fresh module is in train mode; the command must switch it
        loaded.append((model, {k: v.clone() for k, v in model.named_buffers()}))
        return model

    monkeypatch.setattr(dla_core.models, "load_model", spy)  # where every --model run folder loads (adapters)
    return loaded


def assert_buffers_unchanged(loaded):
    assert loaded
    for model, buffers in loaded:
        assert any("running_mean" in k for k in buffers)  # the test means something: there is BatchNorm
        for k, v in model.named_buffers():
            assert torch.equal(v, buffers[k]), f"{k} changed: the model ran in train mode"


def test_detect_scores_a_batchnorm_model_in_eval_mode(batchnorm_run, digits, tmp_path, monkeypatch):
    splits, _, ood_test = digits
    reference = load_model(batchnorm_run).eval()
    with torch.no_grad():
        expected = auroc(
            det.MSP(reference).scores(pixels(splits.test)).double().numpy(),
            det.MSP(reference).scores(pixels(ood_test)).double().numpy(),
        )
    loaded = spy_on_loads(monkeypatch)
    summary = detect(
        DetectConfig(
            model=batchnorm_run,
            id="digits:0-4",
            ood=("digits:5-9",),
            # every detector but recon (it needs an autoencoder run): the feature-space ones hook the model too
            methods=tuple(m for m in detectors() if m != "recon"),
            batch_size=64,
        ),
        Runtime(out=tmp_path / "det", cpu=True),
    )
    assert_buffers_unchanged(loaded)
    assert summary["results"]["msp"]["digits:5-9"]["auroc"] == pytest.approx(expected, abs=1e-9)


def test_attack_runs_a_batchnorm_model_in_eval_mode(batchnorm_run, digits, tmp_path, monkeypatch):
    splits, _, _ = digits
    reference = load_model(batchnorm_run).eval()
    with torch.no_grad():
        clean = int((reference(pixels(splits.test)).argmax(1) == splits.test.labels).sum()) / len(splits.test)
    for method in attacks():  # the iterative attacks added since run through the same command
        loaded = spy_on_loads(monkeypatch)
        summary = run_attack(
            AttackConfig(
                model=batchnorm_run,
                dataset="digits:0-4",
                method=method,
                eps=(0.0, 0.1),
                steps=2,
                # a couple of iterations each (not CW's and DeepFool's 50, Square's 5000 queries): the mode is
                # the point, and it is set before the first forward pass
                cw_steps=2,
                deepfool_steps=2,
                n_queries=10,
                batch_size=64,
            ),
            Runtime(out=tmp_path / f"att-{method}", cpu=True),
        )
        assert_buffers_unchanged(loaded)
        assert summary["rows"][0]["accuracy"] == pytest.approx(clean, abs=1e-12), method


def test_targeted_success_counts_only_images_not_already_of_the_target(digits_run, digits, tmp_path):
    splits, _, _ = digits
    x, y = pixels(splits.test), splits.test.labels
    model = load_model(digits_run).eval()
    target = 2
    others = y != target
    expected = []
    for eps in (0.0, 0.1):
        adv = fgsm(model, x, torch.full_like(y, target), eps, targeted=True)
        with torch.no_grad():
            pred = model(adv).argmax(1)
        expected.append(int((pred[others] == target).sum()) / int(others.sum()))
    summary = run_attack(
        AttackConfig(
            model=digits_run,
            dataset="digits:0-4",
            method="fgsm",
            eps=(0.0, 0.1),
            target_class=target,
            batch_size=1024,
        ),
        Runtime(out=tmp_path / "att", cpu=True),
    )
    got = [r["target_success"] for r in summary["rows"]]
    assert got == pytest.approx(expected, abs=1e-12)
    assert expected[0] < 0.05 < expected[1]  # a good model rarely calls others 2; the attack makes it


def test_degenerate_evaluations_warn(digits_run, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    detect(
        DetectConfig(
            model=digits_run,
            id="digits:0-4",
            ood=("digits:5-9",),
            methods=("msp",),
            limit=1,
        ),
        Runtime(out=tmp_path / "det", cpu=True),
    )
    assert "ID digits:0-4 has only 1 image(s) (--limit)" in caplog.text
    assert "OOD digits:5-9 has only 1 image(s) (--limit)" in caplog.text
    caplog.clear()
    run_attack(
        AttackConfig(model=digits_run, dataset="digits:0-4", eps=(0.0,), limit=3),
        Runtime(out=tmp_path / "att", cpu=True),
    )
    assert "only 3 test image(s) (--limit)" in caplog.text
    # a targeted rate over no images at all was reported as 0.0: refuse it
    from lab4_ood.datasets import head

    label = int(head(load_splits("digits:0-4", val_fraction=0).test, 1).labels[0])
    cfg = AttackConfig(
        model=digits_run,
        dataset="digits:0-4",
        eps=(0.0,),
        limit=1,
        target_class=label,
    )
    with pytest.raises(DlaError, match="every test image is of class"):
        run_attack(cfg, Runtime(out=tmp_path / "t", cpu=True))


def test_constant_scores_warn(caplog):
    caplog.set_level(logging.WARNING)
    detection.warn_constant("msp", np.ones(30), {"x": np.ones(40)})
    assert "msp gives every image the same score" in caplog.text
    caplog.clear()
    detection.warn_constant("msp", np.ones(30), {"x": np.r_[np.ones(39), 0.5]})
    assert caplog.text == ""


def test_grid_of_the_new_detectors_fits_on_train_scores_held_out_data_and_uses_the_best_on_test(
    digits_run, digits, tmp_path, monkeypatch
):
    """knn's k and react's percentile: one pass over the ID training split gathers what every grid value's fit
    derives from, one over the ID validation slice and the OOD training split gives what each value scores; the
    best value by mean AUROC then fits and scores the test sets."""
    splits, ood_train, ood_test = digits
    fits, viewed, scored = [], [], []

    for cls in (det.KNN, det.ReAct):
        real_gather = cls.gather

        def spy_gather(self, batches, real_gather=real_gather):
            fits.append((self.name, cat(x for x, _ in batches)))
            return real_gather(self, batches)

        monkeypatch.setattr(cls, "gather", spy_gather)
    real_score_set, real_views = det.score_set, det.views_of_set

    def spy_score_set(detector, data, batch_size, device):
        value = detector.k if detector.name == "knn" else detector.percentile
        scored.append((detector.name, value, data.images.clone()))
        return real_score_set(detector, data, batch_size, device)

    def spy_views(detector, data, batch_size, device):
        viewed.append((detector.name, data.images.clone()))
        return real_views(detector, data, batch_size, device)

    monkeypatch.setattr(det, "score_set", spy_score_set)
    monkeypatch.setattr(det, "views_of_set", spy_views)
    summary = detect(
        DetectConfig(
            model=digits_run,
            id="digits:0-4",
            ood=("digits:5-9",),
            methods=("knn", "react"),
            grid=True,
            grid_temperatures=(1.0,),
            grid_eps=(0.0,),
            grid_knn_k=(1, 200),
            grid_react_percentile=(10.0, 99.0),
        ),
        Runtime(out=tmp_path / "det", cpu=True),
    )
    # the grid's one pass over the data and the final fit, per method, see the ID training split, nothing else
    assert [name for name, _ in fits] == ["knn"] * 2 + ["react"] * 2
    assert all(torch.equal(x, pixels(splits.train)) for _, x in fits)
    for name, field, values in (("knn", "knn_k", (1, 200)), ("react", "react_percentile", (10.0, 99.0))):
        grid = summary["grids"][name]
        # the grid: the ID validation slice then the OOD training split, once for every value; never a test set
        (_, a), (_, b) = [(n, images) for n, images in viewed if n == name]
        assert torch.equal(a, splits.val.images) and torch.equal(b, ood_train.images)
        rows = grid["rows"]
        assert [r[field] for r in rows] == list(values) and rows[0]["auroc"] != rows[1]["auroc"]
        best = max(rows, key=lambda r: r["auroc"])
        assert grid["best"] == best and grid["option"] == "--" + field.replace("_", "-")
        # then the test sets, with the best value
        (v1, a), (v2, b) = [(v, images) for n, v, images in scored if n == name]
        assert v1 == v2 == best[field]
        assert torch.equal(a, splits.test.images) and torch.equal(b, ood_test.images)
    # the grid's AUROC of a value is the one its detector gets on the held-out data
    knn = det.KNN(load_model(digits_run).eval(), k=200)
    knn.fit([(pixels(splits.train), splits.train.labels)])
    with torch.no_grad():
        expected = auroc(
            knn.scores(pixels(splits.val)).double().numpy(), knn.scores(pixels(ood_train)).double().numpy()
        )
    assert summary["grids"]["knn"]["rows"][1]["auroc"] == pytest.approx(expected, abs=1e-9)
