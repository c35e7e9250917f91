from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dla_core.data import ImageSet
from dla_core.models import ModelConfig, build_model
from lab4_ood import detectors as det
from lab4_ood.autoencoder import FeatureAutoencoder, load_autoencoder, reconstruction_step, save_autoencoder
from lab4_ood.metrics import auroc


class Identity(nn.Module):
    """A 'classifier' whose features are its (flattened) input, for closed-form checks."""

    def features(self, x):
        return x.flatten(1)

    def forward(self, x):
        return x.flatten(1)


def test_logit_scores_point_the_stated_way():
    model = Identity()
    confident, unsure = torch.tensor([[9.0, 0.0, 0.0]]), torch.tensor([[1.0, 1.0, 1.0]])
    for d in (det.MSP(model), det.MaxLogit(model), det.Energy(model), det.ODIN(model, 1.0, 0.0)):
        assert d.scores(confident) > d.scores(unsure), d.name
    torch.testing.assert_close(det.Energy(model).scores(unsure), torch.log(torch.tensor([3.0])) + 1)
    torch.testing.assert_close(det.Energy(model, 2.0).scores(unsure), 2 * torch.log(torch.tensor([3.0])) + 1)


def test_mahalanobis_equals_the_closed_form():
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0, 0.0], [4.0, 1.0, -2.0]])
    f = np.concatenate([rng.normal(m, [1.0, 0.5, 2.0], (200, 3)) for m in means])
    y = np.repeat([0, 1], 200)
    d = det.Mahalanobis(Identity()).fit(
        [(torch.tensor(f[:250]), torch.tensor(y[:250])), (torch.tensor(f[250:]), torch.tensor(y[250:]))]
    )
    mu = np.stack([f[y == c].mean(0) for c in (0, 1)])
    centred = f - mu[y]
    prec = np.linalg.inv(centred.T @ centred / len(f))
    q = rng.normal(2, 3, (20, 3))
    expected = -np.min([np.einsum("nd,de,ne->n", q - m, prec, q - m) for m in mu], axis=0)
    np.testing.assert_allclose(d.scores(torch.tensor(q)).double().numpy(), expected, rtol=1e-4)
    far = torch.tensor(rng.normal(30, 1, (20, 3)))
    assert (d.scores(far) < d.scores(torch.tensor(f[:20]))).all()


def test_trained_model_separates_digits_0_4_from_5_9(digits_mlp, digits04):
    from dla_core.data import load_dataset

    _, ood = load_dataset("digits:5-9")
    maha = det.Mahalanobis(digits_mlp).fit([(digits04.train.images.float() / 255, digits04.train.labels)])
    for d in (det.MSP(digits_mlp), maha):
        s_id = det.score_set(d, digits04.test, 64, torch.device("cpu"))
        s_ood = det.score_set(d, ood, 64, torch.device("cpu"))
        assert s_id.shape == (len(digits04.test),) and auroc(s_id, s_ood) > 0.75, d.name


@pytest.mark.parametrize("family,stages", [("mlp", 1), ("cnn", 1), ("cnn", 2)])
def test_autoencoder_shapes_frozen_encoder_and_round_trip(tmp_path, family, stages):
    torch.manual_seed(0)
    encoder = build_model(ModelConfig(family, (3, 12, 12), 4, depth=1, width=8, stages=stages))
    ae = FeatureAutoencoder.around(encoder, width=8)
    x = torch.rand(5, 3, 12, 12)
    assert ae(x).shape == x.shape and ae(x).min() >= 0 and ae(x).max() <= 1
    ae.train()
    assert ae.training and not ae.encoder.training
    out = reconstruction_step(ae, (x, None))
    out.loss.backward()
    assert all(p.grad is None for p in ae.encoder.parameters())
    assert all(p.grad is not None for p in ae.decoder.parameters())
    save_autoencoder(tmp_path / "ae.safetensors", ae.eval())
    again = load_autoencoder(tmp_path / "ae.safetensors")
    torch.testing.assert_close(again.errors(x), ae.errors(x))
    torch.testing.assert_close(det.Reconstruction(again).scores(x), -ae.errors(x))


def test_logit_scores_are_per_row_by_value():
    """Each row gets its own max softmax / max logit; a batch of one keeps its batch dimension."""
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [1.0, 3.0, -1.0, 0.5]])
    p = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no implicit-dimension softmax (a deprecation warning per call)
        torch.testing.assert_close(det.MSP(Identity()).scores(logits), p.amax(1))
        torch.testing.assert_close(det.MaxLogit(Identity()).scores(logits), torch.tensor([2.0, 3.0]))
        one = logits[1:]
        assert det.MSP(Identity()).scores(one).shape == det.MaxLogit(Identity()).scores(one).shape == (1,)
    assert det.MSP(Identity()).scores(logits)[0] == pytest.approx(np.exp(2) / (np.exp(2) + 3))


def test_odin_defaults_are_the_papers_t_1000_eps_0_0014():
    """ODIN(model) by hand on a linear model: T = 1000, ε = 0.0014 (Liang et al.), with an input gradient."""
    w = torch.tensor([[40.0, -30.0], [-50.0, 20.0], [10.0, 60.0]], dtype=torch.float64)
    b = torch.tensor([5.0, 0.0, -20.0], dtype=torch.float64)
    model = nn.Linear(2, 3).double()
    with torch.no_grad():
        model.weight.copy_(w)
        model.bias.copy_(b)
    x = torch.tensor([[0.5, 0.5], [0.2, 0.9], [0.9, 0.1]], dtype=torch.float64)
    t, eps = 1000.0, 0.0014
    z = x @ w.T + b
    grad = (torch.softmax(z / t, 1) - F.one_hot(z.argmax(1), 3).double()) @ w / t
    expected = torch.softmax(((x - eps * grad.sign()) @ w.T + b) / t, 1).amax(1)
    odin = det.ODIN(model)
    assert odin.needs_grad and not det.ODIN(model, t, 0.0).needs_grad and not det.MSP(model).needs_grad
    torch.testing.assert_close(odin.scores(x).double(), expected, rtol=1e-6, atol=0)
    # the perturbation and T both matter at this precision: no perturbation, or T = 1001, is another number
    assert not torch.allclose(torch.softmax(z / t, 1).amax(1), expected, rtol=1e-6, atol=0)
    assert not torch.allclose(det.ODIN(model, 1001.0).scores(x).double(), expected, rtol=1e-6, atol=0)


def test_score_set_of_an_empty_set_is_an_empty_array():
    empty = ImageSet(torch.zeros(0, 1, 2, 2, dtype=torch.uint8), torch.zeros(0, dtype=torch.long), ["a"], "e")
    out = det.score_set(det.MaxLogit(Identity()), empty, 4, torch.device("cpu"))
    assert isinstance(out, np.ndarray) and out.shape == (0,)


def test_score_set_scores_every_image_in_order():
    images = torch.tensor([[10, 200, 3, 0], [0, 0, 255, 1], [7, 7, 7, 7]], dtype=torch.uint8).view(3, 1, 2, 2)
    data = ImageSet(images, torch.zeros(3, dtype=torch.long), ["a"], "e")
    out = det.score_set(det.MaxLogit(Identity()), data, 2, torch.device("cpu"))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [200 / 255, 1.0, 7 / 255], rtol=1e-6)


def test_mahalanobis_refuses_to_score_before_fit():
    with pytest.raises(RuntimeError, match=r"^Mahalanobis\.fit must run before scores$"):
        det.Mahalanobis(Identity()).scores(torch.zeros(2, 3))
