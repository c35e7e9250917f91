"""The leaderboard's newest detectors (detectors/recent.py): each formula by value on hand-sized examples, the
declared options and OpenOOD grids, and each detector beating chance on digits 0-4 (ID) vs 5-9 (OOD)."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lab4_ood import detectors as det
from lab4_ood import methods
from lab4_ood.detectors import recent as rd
from lab4_ood.metrics import auroc
from tests.lab4.test_posthoc import B, Linear, W, t

NEW = {"nci": rd.NCI, "nac": rd.NAC, "weiper": rd.WeiPer, "adascale": rd.AdaSCALE}
RNG = np.random.default_rng(0)
BANK = RNG.normal(size=(12, 3))
QUERY = RNG.normal(size=(5, 3))


def fit(detector, rows=BANK):
    return detector.fit([(t(rows[:7]), torch.zeros(7)), (t(rows[7:]), torch.zeros(len(rows) - 7))])


def logits_of(x):
    return x @ np.asarray(W).T + np.asarray(B)


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


#### declarations ####


def defaults(name):
    """The declared defaults of detector ``name``, by the constructor's keyword."""
    return {o.keyword: o.default for o in methods.detectors()[name].options}


def grid(name):
    return {o.keyword: o.grid for o in methods.detectors()[name].options if o.grid}


@pytest.mark.parametrize("name", NEW)
def test_each_new_detector_is_declared_with_every_hyperparameter_of_its_constructor(name):
    cls, spec = NEW[name], methods.detectors()[name]
    assert methods.implementation(spec) is cls and spec.fits
    signature = inspect.signature(cls.__init__).parameters
    hyper = [p for p in signature if p not in ("self", "model", "edges")]
    assert [o.keyword for o in spec.options] == hyper  # every constructor hyperparameter is an option
    for keyword, value in defaults(name).items():  # the constructor's default is the declared one
        assert signature[keyword].default == value, keyword
    for option, values in grid(name).items():  # the grid holds the default (OpenOOD sweeps around it)
        assert defaults(name)[option] in values, option


def test_the_defaults_and_grids_are_openood_v1_5s():
    assert defaults("nci") == {"alpha": 1e-4} and grid("nci") == {"alpha": (1e-4, 1e-3, 1e-2, 1e-1)}
    assert defaults("nac") == {"alpha": 100.0, "m": 50, "o": 50, "fit_images": 1000}
    assert grid("nac") == {"o": (10, 50), "m": (50,), "alpha": (100.0,)}
    ada = defaults("adascale")
    assert ada == {"variant": "a", "p_min": 75.0, "p_max": 85.0, "k1": 5.0, "k2": 1.0, "lmbda": 10.0, "o": 0.05,
                   "step": 0.5, "fit_images": 5000}  # fmt: skip
    # OpenOOD's 36 (p_min, p_max) pairs are the grid's pairs with p_min < p_max
    pairs = [(lo, hi) for lo in grid("adascale")["p_min"] for hi in grid("adascale")["p_max"] if lo < hi]
    assert len(pairs) == 36 and pairs[:3] == [(60, 65), (60, 70), (60, 75)] and pairs[-1] == (95, 99)
    weiper = defaults("weiper")
    assert (weiper["delta"], weiper["repeats"], weiper["bins"], weiper["lambda_1"]) == (2.1, 100, 100, 1.0)
    assert grid("weiper") == {}


#### NCI ####


def test_nci_is_the_cosine_to_the_predicted_class_weights_plus_alpha_times_the_l1_norm():
    mu = BANK.mean(0)
    pred = logits_of(QUERY).argmax(1)
    c = QUERY - mu
    cosine = (np.asarray(W)[pred] * c).sum(1) / np.linalg.norm(c, axis=1)
    expected = cosine + 0.5 * np.abs(QUERY).sum(1)
    got = fit(rd.NCI(Linear(W, B), alpha=0.5)).scores(t(QUERY)).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # both terms matter: α = 0 leaves the cosine alone, which is not the score above
    np.testing.assert_allclose(
        fit(rd.NCI(Linear(W, B), alpha=0.0)).scores(t(QUERY)).double(), cosine, rtol=1e-6
    )
    assert not np.allclose(cosine, expected)


#### NAC ####


def test_nac_edges_are_the_reference_log_spaced_edges_mirrored_about_a_half():
    step = (math.sqrt(1000) - 1) / 3  # M = 8: four edges 0 … ½
    low = [math.log(1 + k * step, 1000) for k in range(4)]
    expected = low[:3] + [1 - v for v in reversed(low)]
    expected[-1] += 0.01
    np.testing.assert_allclose(rd.nac_edges(8).numpy(), expected, rtol=1e-12)
    assert low[-1] == pytest.approx(0.5) and len(rd.nac_edges(50)) == 49  # M − 2 bins
    edges = rd.nac_edges(50).numpy()
    assert (np.diff(edges) > 0).all() and np.diff(edges)[0] > 5 * np.diff(edges)[12]  # dense near ½


def test_nac_states_are_sigmoid_alpha_z_times_the_gradient_of_kl_to_uniform():
    model = Linear(W, B)
    z = t(QUERY).requires_grad_(True)
    logp = F.log_softmax(model.head(z), 1)
    kl = (-math.log(3) - logp.mean(1)).sum()  # Σ_images KL(u ‖ softmax), u uniform over the 3 classes
    (grad,) = torch.autograd.grad(kl, z)
    expected = torch.sigmoid(7.0 * z.detach() * grad)
    torch.testing.assert_close(rd.NAC(model, alpha=7.0).states(t(QUERY)), expected)


def test_nac_scores_are_the_mean_capped_coverage_of_each_neurons_bin():
    edges = np.array([0.0, 0.3, 0.5, 0.7, 1.01])
    d = rd.NAC(Linear(W, B), alpha=3.0, o=3, edges=torch.tensor(edges))
    fit(d)

    def bins(x):
        p = softmax(logits_of(x))
        s = 1 / (1 + np.exp(-3.0 * x * ((p - 1 / 3) @ np.asarray(W))))
        return np.searchsorted(edges[1:-1], s, side="right")

    fitted = bins(BANK)
    counts = np.stack([[(fitted[:, j] == k).sum() for k in range(4)] for j in range(3)])  # (D, bins)
    np.testing.assert_array_equal(d.counts.numpy(), counts)
    query = bins(QUERY)
    expected = np.minimum(counts[np.arange(3)[None], query] / 3, 1).mean(1)
    np.testing.assert_allclose(d.scores(t(QUERY)).double().numpy(), expected, rtol=1e-6)
    assert expected.min() > 0 and expected.max() <= 1 and len(set(expected.round(6))) > 1


def test_nac_bins_hold_their_lower_edge():
    d = rd.NAC(Linear(W, B), edges=t([0.0, 0.25, 0.5, 0.75, 1.01]))
    # a state on an edge belongs to the bin above it (the reference's edges[k] ≤ s < edges[k+1])
    assert d.bins(t([[0.0, 0.25, 0.5, 0.75, 0.99, 1.0]])).tolist() == [[0, 1, 2, 3, 3, 3]]


def test_nac_counts_at_most_fit_images_rows():
    d = fit(rd.NAC(Linear(W, B), fit_images=5))
    assert (d.counts.sum(1) == 5).all()


#### WeiPer ####


def test_weiper_histograms_are_shares_of_a_rows_values_in_equal_bins_over_the_training_range():
    h = rd.value_histograms(t([[0.0, 0.6, 1.0, 2.0], [0.2, 0.2, 0.9, -1.0]]), 0.0, 1.0, 2)
    np.testing.assert_allclose(h.numpy(), [[0.25, 0.5], [0.5, 0.25]])  # 2.0 and −1.0 fall outside


def test_weiper_smoothing_is_the_references_same_conv_with_replicate_padding():
    h = t([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_allclose(rd.moving_average(h, 3).numpy(), [[4 / 3, 2, 3, 11 / 3]])
    np.testing.assert_allclose(rd.moving_average(h, 4).numpy(), [[7 / 4, 10 / 4, 13 / 4, 15 / 4]])
    rows = t(RNG.random((3, 11)))
    for width in (1, 2, 5, 6):
        conv = nn.Conv1d(3, 3, width, padding="same", padding_mode="replicate", bias=False).double()
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[range(3), range(3)] = 1 / width
            torch.testing.assert_close(rd.moving_average(rows, width), conv(rows))


def test_weiper_kl_is_symmetric_after_epsilon_and_renormalising():
    mean, h = np.array([0.5, 0.5, 0.0]), np.array([[0.2, 0.3, 0.5], [0.0, 1.0, 0.0]])
    p = (mean + 0.1) / (mean + 0.1).sum()
    q = (h + 0.1) / (h + 0.1).sum(1, keepdims=True)
    expected = (p * np.log(p / q)).sum(1) + (q * np.log(q / p)).sum(1)
    np.testing.assert_allclose(rd.symmetric_kl(t(mean), t(h), 0.1).numpy(), expected)


def test_weiper_perturbs_each_class_row_by_delta_times_its_norm_seeded():
    d = rd.WeiPer(Linear(W, B), delta=0.3, repeats=4)
    w, b = d.perturbed_heads()
    rows = np.asarray(W)
    moved = w.numpy().reshape(4, 3, 3) - rows[None]  # copy i in rows i·C … (i+1)·C
    np.testing.assert_allclose(
        np.linalg.norm(moved, axis=2), 0.3 * np.linalg.norm(rows, axis=1)[None].repeat(4, 0)
    )
    np.testing.assert_allclose(b.numpy(), np.tile(B, 4))
    assert torch.equal(w, d.perturbed_heads()[0]) and not torch.equal(w, rd.WeiPer(Linear(W, B), seed=1,
                                                                                   repeats=4).perturbed_heads()[0])  # fmt: skip


def test_weiper_score_by_value():
    kw = dict(delta=0.5, repeats=3, bins=4, smoothing=2, smoothing_perturbed=3, eps=0.05, eps_perturbed=0.1,
              lambda_1=0.7, lambda_2=1.3)  # fmt: skip
    d = fit(rd.WeiPer(Linear(W, B), **kw))
    w, b = (v.numpy() for v in d.perturbed_heads())

    def hist(v, lo, hi, n=4):
        edges = np.linspace(lo, hi + 1e-8, n + 1)
        return np.stack([[((r >= edges[k]) & (r < edges[k + 1])).mean() for k in range(n)] for r in v])

    def smooth(h, s):
        before = (s - 1) // 2
        padded = np.concatenate(
            [np.repeat(h[:, :1], before, 1), h, np.repeat(h[:, -1:], s - 1 - before, 1)], 1
        )
        return np.stack([padded[:, k : k + s].mean(1) for k in range(h.shape[1])], 1)

    def kl(mean, h, eps):
        p, q = (mean + eps) / (mean + eps).sum(), (h + eps) / (h + eps).sum(1, keepdims=True)
        return ((p - q) * np.log(p / q)).sum(1)

    train_p, query_p = BANK @ w.T + b, QUERY @ w.T + b
    z_range, p_range = (BANK.min(), BANK.max()), (train_p.min(), train_p.max())
    kl_z = kl(hist(BANK, *z_range).mean(0), smooth(hist(QUERY, *z_range), 2), 0.05)
    kl_p = kl(hist(train_p, *p_range).mean(0), smooth(hist(query_p, *p_range), 3), 0.1)
    msp = softmax(query_p.reshape(-1, 3)).max(1).reshape(5, 3).mean(1)
    expected = -kl_z - 0.7 * kl_p + 1.3 * msp
    np.testing.assert_allclose(d.scores(t(QUERY)).double().numpy(), expected, rtol=1e-5)
    assert min(np.ptp(kl_z), np.ptp(kl_p), np.ptp(msp)) > 1e-3  # each term moves the score


#### AdaSCALE ####


def test_adascale_scale_is_the_relu_sum_over_each_rows_top_share():
    f = t([[1.0, 2.0, 3.0, -1.0], [1.0, 2.0, 3.0, -1.0]])
    # p = 50: the top 4 − 2 = 2 of relu (3 + 2); p = 75: the top 1 (3); the sum 6 counts no negative feature
    np.testing.assert_allclose(rd.AdaSCALE.scale(f, t([50.0, 75.0])).numpy(), [[6 / 5], [6 / 3]])


def test_adascale_percentile_falls_as_the_shift_statistic_rises_through_the_id_cdf():
    d = rd.AdaSCALE(Linear(W, B), p_min=75.0, p_max=85.0)
    d.fitted = t([1.0, 2.0, 3.0, 4.0])
    # F(q) = share of fitted values ≤ q: 0, ½ (at 2 itself), ½, 1
    np.testing.assert_allclose(d.percentile(t([0.0, 2.0, 2.5, 10.0])).numpy(), [85, 80, 80, 75])


def test_adascale_shift_statistic_sums_perturbed_activations_and_shifts_of_the_top_features():
    d = rd.AdaSCALE(Linear(W, B), k1=50.0, k2=25.0, lmbda=10.0)  # D = 4: the top 2 and the top 1
    f, fp = t([[4.0, 1.0, 3.0, 2.0]]), t([[3.0, -1.0, -5.0, 0.0]])
    # top 2 of z: features 0 and 2 → relu(z′) 3 + 0; top 1: feature 0 → |4 − 3| = 1
    assert d.shift_statistic(f, fp).item() == pytest.approx(3 + 10 * 1)


class Normalised(Linear):
    """Linear with a normalisation std: AdaSCALE's step is in units of it."""

    def __init__(self, std):
        super().__init__(W, B)
        self.normalize = nn.Module()
        self.normalize.std = torch.tensor(std, dtype=torch.float64)


def test_adascale_perturbs_the_pixels_of_smallest_gradient_along_its_sign():
    x = t([[0.5, 0.5, 0.5]])
    # logits W x + b = (0.35, 0.3, 1.3): the max logit's gradient is W[2] = (−0.5, 1.5, 1)
    out = rd.AdaSCALE(Linear(W, B), o=0.67, step=0.5).perturbed(x)  # the two smallest |g|: pixels 0 and 2
    np.testing.assert_allclose(out.numpy(), [[0.5 - 0.5, 0.5, 0.5 + 0.5]])
    out = rd.AdaSCALE(Normalised(0.25), o=0.34, step=0.5).perturbed(x)  # one pixel, a step of 0.5 std
    np.testing.assert_allclose(out.numpy(), [[0.5 - 0.5 * 0.25, 0.5, 0.5]])


@pytest.mark.parametrize("variant", ["a", "l"])
def test_adascale_score_by_value(variant):
    d = fit(rd.AdaSCALE(Linear(W, B), variant=variant, p_min=10.0, p_max=90.0, k1=40.0, k2=40.0, o=0.34))
    f = QUERY
    q = d.shift_statistic(t(f), d.model.features(d.perturbed(t(f))).double()).numpy()
    fitted = np.sort(d.fitted.numpy())
    p = 10 + (1 - np.searchsorted(fitted, q, side="right") / len(fitted)) * 80
    a = np.maximum(f, 0)
    k = np.clip(3 - np.round(3 * p / 100).astype(int), 1, 3)
    s = a.sum(1) / np.array([np.sort(r)[::-1][:n].sum() for r, n in zip(a, k, strict=True)])
    logits = logits_of(f * np.exp(s)[:, None]) if variant == "a" else logits_of(f) * (s**2)[:, None]
    expected = np.log(np.exp(logits).sum(1))
    np.testing.assert_allclose(d.scores(t(f)).double().numpy(), expected, rtol=1e-6)
    assert len(set(p.round(6))) > 1 and len(set(k)) > 1  # the percentile adapts per image here


#### digits ####

# each beats chance by a margin on digits 0-4 vs 5-9, the suite's trained residual MLP (measured: NCI 0.77,
# NAC 0.90, WeiPer 0.91, AdaSCALE-A 0.71 where SCALE gets 0.67)
FLOORS = {"nci": 0.7, "nac": 0.85, "weiper": 0.85, "adascale": 0.65}


def test_each_recent_detector_separates_digits_0_4_from_5_9(digits_mlp, digits04):
    from dla_core.data import load_dataset

    _, ood = load_dataset("digits:5-9")
    cpu = torch.device("cpu")
    train = [(digits04.train.images.float() / 255, digits04.train.labels)]
    for name, floor in FLOORS.items():
        d = det.make_detector(name, digits_mlp, {}, cpu)
        d.fit(train)
        s_id, s_ood = det.score_set(d, digits04.test, 64, cpu), det.score_set(d, ood, 64, cpu)
        assert np.isfinite(s_id).all() and np.isfinite(s_ood).all(), name
        assert auroc(s_id, s_ood) > floor, (name, auroc(s_id, s_ood))


def test_grid_searches_the_new_detectors_over_their_declared_values(digits_run, tmp_path):
    """`lab4 detect --grid` sweeps nci's α and adascale's (p_min, p_max) from their --grid-* options; a pair
    adascale refuses (p_min > p_max) is left out of the search, not an error."""
    import json

    from click.testing import CliRunner

    import lab4_ood.cli

    r = CliRunner().invoke(lab4_ood.cli.group, [
        "detect", "--model", str(digits_run), "--id", "digits:0-4", "--ood", "digits:5-9", "--method",
        "nci,adascale", "--grid", "--grid-T", "1", "--grid-eps", "0", "--grid-nci-alpha", "0.0001,0.1",
        "--grid-adascale-p-min", "60,90", "--grid-adascale-p-max", "70", "--adascale-fit-images", "50",
        "--limit", "60", "--cpu", "--out", str(tmp_path / "g")])  # fmt: skip
    assert r.exit_code == 0, r.output
    grids = json.loads((tmp_path / "g" / "metrics.json").read_text())["grids"]
    assert [row["nci_alpha"] for row in grids["nci"]["rows"]] == [0.0001, 0.1]
    rows = grids["adascale"]["rows"]
    assert [(row["adascale_p_min"], row["adascale_p_max"]) for row in rows] == [(60.0, 70.0)]
    assert grids["adascale"]["best"] == rows[0]
