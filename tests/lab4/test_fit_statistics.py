"""The fitted statistics of Mahalanobis, RMDS and ViM, value by value, against a direct numpy computation on the
whole feature matrix: the block-triangular Σ zzᵀ (add_gram), the class sums, the inverses (Cholesky where the
ridge makes the pseudo-inverse the inverse, else pinv) and ViM's residual norm through the top directions.
Widths above GRAM_BLOCK (256), so that Σ zzᵀ is made of several block rows, the last one short."""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn as nn

from lab4_ood import detectors as det
from lab4_ood.detectors.base import GRAM_BLOCK, ClassStatistics, add_gram, symmetric, symmetric_inverse

D, K = 300, 4  # two block rows of Σ zzᵀ: 256 columns, then 44


class Features(nn.Module):
    """Penultimate features = the input; a linear head (W, b) in float64."""

    def __init__(self, w: np.ndarray, b: np.ndarray):
        super().__init__()
        self.head = nn.Linear(w.shape[1], w.shape[0]).double()
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor(w))
            self.head.bias.copy_(torch.tensor(b))

    def features(self, x):
        return x

    def features_and_logits(self, x):
        return x, self.head(x)


def data(dead: int = 0, seed: int = 0):
    """(N, D) post-ReLU-like features of K classes (the last ``dead`` dimensions always 0: a singular
    covariance), labels in no order, a head, and the stream of uneven batches that the fits see."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, 900)
    centres = rng.uniform(0, 2, (K, D))
    f = np.maximum(centres[y] + rng.normal(size=(900, D)) * rng.uniform(0.5, 2, D), 0)
    if dead:
        f[:, D - dead :] = 0
    w, b = rng.normal(size=(K, D)) / np.sqrt(D), rng.normal(size=K)
    cuts = [0, 128, 129, 500, 900]
    batches = [(torch.tensor(f[a:z]), torch.tensor(y[a:z])) for a, z in itertools.pairwise(cuts)]
    return f, y, Features(w, b), batches


def direct_within(f, y):
    means = np.stack([f[y == c].mean(0) for c in range(K)])
    centred = f - means[y]
    return means, centred.T @ centred / len(f)


def close(a, b, rtol=1e-9):
    np.testing.assert_allclose(np.asarray(a), b, rtol=rtol, atol=rtol * np.abs(b).max())


def test_add_gram_sums_the_whole_outer_product_over_batches():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(50, 70))
    outer = None
    for part in (f[:20], f[20:21], f[21:]):
        outer = add_gram(outer, torch.tensor(part), block=16)  # 5 block rows, the last of 6 columns
    close(symmetric(outer), f.T @ f, rtol=1e-12)
    assert D > GRAM_BLOCK


def test_class_statistics_are_the_direct_sums_means_and_covariances():
    f, y, model, batches = data()
    stats = ClassStatistics.of(model, batches, "test")
    assert list(stats.sums) == list(range(K)) and stats.counts == {c: int((y == c).sum()) for c in range(K)}
    close(stats.outer, f.T @ f, rtol=1e-12)
    means, within = direct_within(f, y)
    close(stats.means, means, rtol=1e-12)
    close(stats.within, within)
    close(stats.mean, f.mean(0), rtol=1e-12)
    close(stats.total, np.cov(f.T, bias=True))


def test_symmetric_inverse_is_the_inverse_with_a_ridge_and_the_pseudo_inverse_without():
    f, _, _, _ = data(dead=20)
    cov = torch.tensor(np.cov(f.T, bias=True))  # rank D − 20
    lifted = cov.numpy() + 1e-6 * np.diag(cov).mean() * np.eye(D)
    close(symmetric_inverse(cov, 1e-6), np.linalg.inv(lifted), rtol=1e-7)
    close(symmetric_inverse(cov, 0.0), np.linalg.pinv(cov.numpy()), rtol=1e-7)
    # a ridge too small to lift the null space above pinv's cutoff: still the pseudo-inverse, not ≈1e14·I there
    tiny = cov.numpy() + 1e-14 * np.diag(cov).mean() * np.eye(D)
    close(symmetric_inverse(cov, 1e-14), np.linalg.pinv(tiny), rtol=1e-7)


def test_mahalanobis_and_rmds_fit_the_direct_means_and_precisions():
    f, y, model, batches = data(dead=10)
    means, within = direct_within(f, y)
    maha = det.Mahalanobis(model).fit(batches)
    close(maha.means, means, rtol=1e-12)
    close(maha.precision, np.linalg.inv(within + 1e-6 * np.diag(within).mean() * np.eye(D)), rtol=1e-7)
    rmds = det.RMDS(model).fit(batches)  # no ridge: pseudo-inverses of the singular covariances
    close(rmds.precision, np.linalg.pinv(within), rtol=1e-7)
    close(rmds.mean0, f.mean(0), rtol=1e-12)
    close(rmds.precision0, np.linalg.pinv(np.cov(f.T, bias=True)), rtol=1e-7)


def test_vim_fits_the_direct_residual_space_and_alpha():
    f, _, model, batches = data(seed=3)
    w, b = model.head.weight.detach().numpy(), model.head.bias.detach().numpy()
    u = -np.linalg.pinv(w) @ b
    c = f - u
    _, vectors = np.linalg.eigh(c.T @ c / len(f))
    residual = vectors[:, : D - 40]
    alpha = (f @ w.T + b).max(1).mean() / np.linalg.norm(c @ residual, axis=1).mean()
    vim = det.ViM(model, dim=40).fit(batches)
    assert abs(vim.alpha - alpha) <= 1e-7 * alpha  # the max logits come as float32
    # the residual space (its projector: the eigenvectors' signs are free; ≈3e-8 apart from numpy's eigh here,
    # as near eigenvalues at the cut make it sensitive)
    close(vim.residual @ vim.residual.T, residual @ residual.T, rtol=1e-6)
    q = np.maximum(np.random.default_rng(4).normal(1, 2, (30, D)), 0)
    norms = np.linalg.norm((q - u) @ residual, axis=1)
    logits = q @ w.T + b
    energy = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    close(vim.scores(torch.tensor(q)).double(), energy - alpha * norms, rtol=1e-6)  # scores are float32
