"""The feature- and logit-space detectors: each score formula by hand on tiny tensors (a flipped sign or a
dropped term fails), the bounded-memory fits, and each detector beating chance on digits 0-4 vs 5-9."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

import lab4_ood.cli
from dla_core.errors import DlaError
from lab4_ood import detectors as det
from lab4_ood import methods
from lab4_ood.metrics import auroc


class Linear(nn.Module):
    """A classifier whose penultimate features are its input and whose head is one linear layer (W, b)."""

    def __init__(self, w, b):
        super().__init__()
        self.head = nn.Linear(len(w[0]), len(w)).double()
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor(w, dtype=torch.float64))
            self.head.bias.copy_(torch.tensor(b, dtype=torch.float64))

    def features(self, x):
        return x.flatten(1)

    def features_and_logits(self, x):
        return x.flatten(1), self.head(x.flatten(1))

    def forward(self, x):
        return self.head(x.flatten(1))


W = [[1.0, -1.0, 0.5], [2.0, 0.0, -1.0], [-0.5, 1.5, 1.0]]
B = [0.1, -0.2, 0.3]


def t(a):
    return torch.tensor(a, dtype=torch.float64)


def logsumexp(z):
    z = np.asarray(z, dtype=np.float64)
    return np.log(np.exp(z).sum(-1))


def close(actual, expected, rtol=1e-5):
    np.testing.assert_allclose(actual.double().numpy(), expected, rtol=rtol, atol=1e-6)


def test_knn_is_minus_the_distance_to_the_kth_nearest_normalised_training_feature():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(30, 3))
    query = rng.normal(size=(5, 3))
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    dist = np.linalg.norm(unit(query)[:, None] - unit(bank)[None], axis=2)
    expected = -np.sort(dist, axis=1)[:, 3]  # k = 4
    batches = [(t(bank[:13]), torch.zeros(13)), (t(bank[13:]), torch.zeros(17))]
    for chunk in (1, 7, 100):  # the bank searched in chunks: the same neighbours
        d = det.KNN(Linear(W, B), k=4, chunk=chunk).fit(batches)
        close(d.scores(t(query)), expected)
    # scaling a feature vector does not move it (normalised), the k-th neighbour is not the nearest
    close(d.scores(t(query * 7)), expected)
    assert not np.allclose(expected, -np.sort(dist, axis=1)[:, 0])


def test_knn_bank_is_capped_at_max_bank_a_uniform_sample_of_the_stream():
    stream = torch.arange(1000, dtype=torch.float64)[:, None].repeat(1, 2) + torch.tensor([1.0, 0.0])
    bank = det.Reservoir(50)
    for i in range(0, 1000, 64):
        bank.add(stream[i : i + 64])
        assert len(bank.rows) <= 50  # bounded at every step, not only at the end
    first = bank.rows[:, 0].long() - 1
    assert len(bank.rows) == 50 and len(set(first.tolist())) == 50  # distinct rows of the stream
    assert (first >= 500).sum() > 10 and (first < 500).sum() > 10  # drawn from the whole stream
    small = det.Reservoir(50)
    small.add(stream[:30])
    assert torch.equal(small.rows, stream[:30])  # a stream within the cap: every row, in order
    knn = det.KNN(Linear(W, B), k=3, max_bank=20).fit([(torch.rand(200, 3).double(), torch.zeros(200))])
    assert knn.bank.shape == (20, 3)
    with pytest.raises(DlaError, match=r"^--knn-k 30 needs at least 30 ID training images, got 20$"):
        det.KNN(Linear(W, B), k=30, max_bank=20).fit([(torch.rand(200, 3).double(), torch.zeros(200))])


def test_vim_is_energy_minus_alpha_times_the_residual_norm():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(40, 3)) * [3.0, 1.0, 0.2] + [1.0, -1.0, 0.5]
    w, b = np.array(W), np.array(B)
    u = -np.linalg.pinv(w) @ b
    c = f - u
    _, vectors = np.linalg.eigh(c.T @ c / len(f))
    residual = vectors[:, :2]  # dim = 1: all but the top direction
    norms = np.linalg.norm(c @ residual, axis=1)
    logits = f @ w.T + b
    alpha = logits.max(1).mean() / norms.mean()
    q = rng.normal(size=(6, 3))
    expected = logsumexp(q @ w.T + b) - alpha * np.linalg.norm((q - u) @ residual, axis=1)
    d = det.ViM(Linear(W, B), dim=1).fit([(t(f[:25]), torch.zeros(25)), (t(f[25:]), torch.zeros(15))])
    assert d.alpha == pytest.approx(alpha, rel=1e-6)
    close(d.scores(t(q)), expected)


def test_vim_dim_not_below_the_feature_dimension_falls_back_to_half(caplog):
    f = torch.randn(20, 4, dtype=torch.float64)
    model = Linear([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], [0.0, 0.0])
    d = det.ViM(model, dim=256).fit([(f, torch.zeros(20))])
    assert d.residual.shape == (4, 2) and "ViM uses 2" in caplog.text


def test_rmds_is_minus_the_smallest_class_distance_less_the_background_distance():
    rng = np.random.default_rng(2)
    means = np.array([[0.0, 0.0, 0.0], [3.0, 1.0, -2.0]])
    f = np.concatenate([rng.normal(m, [1.0, 0.5, 2.0], (60, 3)) for m in means])
    y = np.repeat([0, 1], 60)
    mu = np.stack([f[y == k].mean(0) for k in (0, 1)])
    prec = np.linalg.inv((f - mu[y]).T @ (f - mu[y]) / len(f))
    mu0 = f.mean(0)
    prec0 = np.linalg.inv((f - mu0).T @ (f - mu0) / len(f))
    q = rng.normal(1, 3, (8, 3))
    dk = np.stack([np.einsum("nd,de,ne->n", q - m, prec, q - m) for m in mu], 1)
    d0 = np.einsum("nd,de,ne->n", q - mu0, prec0, q - mu0)
    expected = -(dk - d0[:, None]).min(1)
    order = rng.permutation(len(f))  # classes mixed across the batches
    f, y = f[order], y[order]
    batches = [(t(f[:50]), torch.tensor(y[:50])), (t(f[50:]), torch.tensor(y[50:]))]
    close(det.RMDS(Linear(W, B)).fit(batches).scores(t(q)), expected)  # no ridge by default, as OpenOOD
    assert not np.allclose(det.RMDS(Linear(W, B), ridge=0.1).fit(batches).scores(t(q)).numpy(), expected)
    assert not np.allclose(expected, -dk.min(1), rtol=1e-2)  # the background term matters here


def test_gen_and_entropy_by_hand():
    eye = Linear(np.eye(3).tolist(), [0.0, 0.0, 0.0])
    z = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.4]])
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    g = 0.1
    every = -(p**g * (1 - p) ** g).sum(1)
    top2 = np.sort(p, 1)[:, ::-1][:, :2]
    close(det.GEN(eye).scores(t(z)), every)  # M = 100 ≥ 3 classes: every probability
    close(det.GEN(eye, gamma=0.5, m=2).scores(t(z)), -(top2**0.5 * (1 - top2) ** 0.5).sum(1))
    close(det.Entropy(eye).scores(t(z)), (p * np.log(p)).sum(1))
    for d in (det.GEN(eye), det.Entropy(eye)):  # the confident row scores higher
        s = d.scores(t(z))
        assert s[0] > s[1], d.name


def test_react_clips_at_the_percentile_of_the_training_activations():
    f = np.arange(1.0, 31.0).reshape(10, 3)  # activations 1 … 30
    threshold = np.percentile(f.ravel(), 90)  # 27.1
    d = det.ReAct(Linear(W, B)).fit([(t(f[:4]), torch.zeros(4)), (t(f[4:]), torch.zeros(6))])
    assert d.threshold == pytest.approx(threshold)
    q = np.array([[1.0, 40.0, 2.0], [28.0, 0.0, 30.0]])
    close(d.scores(t(q)), logsumexp(np.minimum(q, threshold) @ np.array(W).T + B))
    assert det.ReAct(Linear(W, B), percentile=50).fit([(t(f), None)]).threshold == pytest.approx(15.5)


def test_ash_variants_and_scale_by_hand():
    five = Linear([[1.0, 0.0, 2.0, -1.0, 0.5], [0.0, 1.0, -1.0, 1.0, 1.0]], [0.0, 1.0])
    w = np.array([[1.0, 0.0, 2.0, -1.0, 0.5], [0.0, 1.0, -1.0, 1.0, 1.0]])
    f = np.array([[3.0, 1.0, 4.0, 1.5, 5.0]])  # percentile 60: keep the top 5 − round(3) = 2 (4 and 5)
    kept = np.array([[0.0, 0.0, 4.0, 0.0, 5.0]])
    shaped = {
        "p": kept,
        "b": np.array([[0.0, 0.0, 14.5 / 2, 0.0, 14.5 / 2]]),
        "s": kept * np.exp(14.5 / 9.0),
    }
    for variant, expected in shaped.items():
        d = det.ASH(five, variant, 60.0)
        close(d.shape(t(f)), expected)
        close(d.scores(t(f)), logsumexp(expected @ w.T + [0.0, 1.0]))
    scaled = f * np.exp(14.5 / 9.0)  # SCALE: the same factor, nothing pruned
    close(det.SCALE(five, 60.0).shape(t(f)), scaled)
    close(det.SCALE(five, 60.0).scores(t(f)), logsumexp(scaled @ w.T + [0.0, 1.0]))
    assert det.top_k_count(512, 90) == 51 and det.top_k_count(10, 100) == 1
    with pytest.raises(DlaError, match=r"^--ash-variant must be one of s, b, p, got 'x'$"):
        det.ASH(five, "x")


def test_dice_masks_the_weights_of_smallest_contribution():
    model = Linear([[1.0, -1.0], [2.0, 3.0]], [0.5, -0.5])
    f = np.array([[0.0, 1.0], [2.0, 3.0]])  # mean activation (1, 2): contributions [[1, −2], [2, 6]]
    d = det.DICE(model, p=50.0).fit([(t(f), None)])  # 50th percentile of {−2, 1, 2, 6} = 1.5
    torch.testing.assert_close(d.masked.double(), t([[0.0, 0.0], [2.0, 3.0]]))
    q = np.array([[1.0, 1.0], [0.0, 2.0]])
    close(d.scores(t(q)), logsumexp(q @ np.array([[0.0, 0.0], [2.0, 3.0]]).T + [0.5, -0.5]))


def test_fdbd_is_the_mean_boundary_distance_over_the_feature_distance_to_the_mean():
    w, b = np.array(W), np.array(B)
    train = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]])
    mean = train.mean(0)
    q = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    expected = []
    for z in q:
        logits = w @ z + b
        y = logits.argmax()
        others = [c for c in range(3) if c != y]
        gaps = [abs(logits[y] - logits[c]) / np.linalg.norm(w[y] - w[c]) for c in others]
        expected.append(np.mean(gaps) / np.linalg.norm(z - mean))
    d = det.FDBD(Linear(W, B)).fit([(t(train), None)])
    close(d.scores(t(q)), np.array(expected))


def test_fitted_detectors_refuse_to_score_before_fit():
    for cls in (det.KNN, det.ViM, det.RMDS, det.ReAct, det.DICE, det.FDBD):
        with pytest.raises(RuntimeError, match=rf"^{cls.__name__}\.fit must run before scores$"):
            cls(Linear(W, B)).scores(torch.zeros(2, 3, dtype=torch.float64))


# each new detector beats chance by a margin on digits 0-4 (ID) vs 5-9 (OOD), the suite's trained MLP; the
# activation-shaping methods were made for post-ReLU ImageNet features and are weakest on this residual MLP
FLOORS = {
    "knn": 0.85,
    "vim": 0.9,
    "rmds": 0.85,
    "gen": 0.85,
    "entropy": 0.8,
    "react": 0.85,
    "ash": 0.6,
    "scale": 0.6,
    "dice": 0.7,
    "fdbd": 0.65,
}


def test_each_new_detector_separates_digits_0_4_from_5_9(digits_mlp, digits04):
    from dla_core.data import load_dataset

    _, ood = load_dataset("digits:5-9")
    cpu = torch.device("cpu")
    train = [(digits04.train.images.float() / 255, digits04.train.labels)]
    for name, floor in FLOORS.items():
        d = det.make_detector(name, digits_mlp, {}, cpu)
        if det.spec_of(name).fits:
            d.fit(train)
        s_id, s_ood = det.score_set(d, digits04.test, 64, cpu), det.score_set(d, ood, 64, cpu)
        assert np.isfinite(s_id).all() and np.isfinite(s_ood).all(), name
        assert auroc(s_id, s_ood) > floor, (name, auroc(s_id, s_ood))


def test_detect_runs_every_new_method_with_its_options_recorded(digits_run, tmp_path):
    args = ["detect", "--model", digits_run, "--ood", "fake", "--method", ",".join(FLOORS), "--limit", "40",
            "--knn-k", "5", "--max-bank", "100", "--vim-dim", "8", "--gen-gamma", "0.5", "--gen-m", "3",
            "--react-percentile", "80", "--ash-variant", "s", "--ash-percentile", "70",
            "--scale-percentile", "75", "--dice-p", "60", "--cpu", "--out", tmp_path / "d"]  # fmt: skip
    result = CliRunner().invoke(lab4_ood.cli.group, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert list(metrics["results"]) == list(FLOORS)
    assert all(metrics["results"][m]["fake"]["auroc"] > 0.5 for m in FLOORS)
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    config = config.get("config", config)
    assert {k: config[k] for k in ("knn_k", "max_bank", "vim_dim", "ash_variant", "dice_p")} == {
        "knn_k": 5, "max_bank": 100, "vim_dim": 8, "ash_variant": "s", "dice_p": 60.0}  # fmt: skip
    bad = CliRunner().invoke(lab4_ood.cli.group, [*map(str, args[:-1]), tmp_path / "e", "--knn-k", "0"])
    assert bad.exit_code == 2 and "--knn-k" in bad.output


def test_options_reach_each_detector():
    options = dict(knn_k=7, max_bank=9, vim_dim=3, gen_gamma=0.2, gen_m=4, react_percentile=80,
                                  ash_variant="p", ash_percentile=70, scale_percentile=60, dice_p=50)  # fmt: skip
    built = {n: det.make_detector(n, Linear(W, B), options, torch.device("cpu")) for n in FLOORS}
    assert (built["knn"].k, built["knn"].max_bank, built["vim"].dim) == (7, 9, 3)
    assert (built["gen"].gamma, built["gen"].m, built["react"].percentile, built["react"].max_bank) == (
        0.2,
        4,
        80,
        9,
    )
    assert (built["ash"].variant, built["ash"].percentile, built["scale"].percentile, built["dice"].p) == (
        "p", 70, 60, 50)  # fmt: skip
    defaults = SimpleNamespace(**{n: o.default for n, o in methods.options_of(methods.DETECTORS).items()})
    assert (defaults.knn_k, defaults.vim_dim, defaults.gen_gamma, defaults.gen_m) == (50, 256, 0.1, 100)
    assert (defaults.react_percentile, defaults.ash_variant, defaults.ash_percentile) == (90, "b", 90)
    assert (defaults.scale_percentile, defaults.dice_p) == (85, 90)
