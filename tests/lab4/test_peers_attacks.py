"""Parity with torchattacks 3.5.1 (`nox -s tests-lab4-peers` installs it; skipped without it): on the suite's MLP
trained on digits 0-4, our BIM, MI-FGSM and PGD-L2 give bit-identical adversarial images to torchattacks' BIM,
MIFGSM and PGDL2 (PGD-L2 without a random start, and with one from the same seed), hence the same adversarial
accuracy. At torchattacks' default ε our default step sizes (ε/4, ε/4, ε/5) are its α (2/255, 2/255, 0.2).
So do APGD (CE and DLR) and Square with the same seed, DeepFool, APGD-T (APGDT), FAB and FAB-T (FAB, targeted
with multi_targeted, and with random restarts from the same seed), AutoAttack's standard, plus and rand versions
against torchattacks' AutoAttack at the same steps (10) and seed, and CW where every logit is positive; CW on the plain model differs by one
convention (torchattacks' max over (1 − onehot)·z counts the true class as a logit 0 when every other logit is
negative) and is held to the same adversarial accuracy within 2 points.

A separate file from test_peers.py, which skips as a whole without pytorch-ood."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from lab4_ood.attacks import attack

ta = pytest.importorskip("torchattacks")

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def setting(digits_mlp, digits04):
    return digits_mlp.eval(), digits04.test.images.float() / 255, digits04.test.labels


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def same(model, ours, theirs, y):
    assert torch.equal(ours, theirs), (ours - theirs).abs().max()
    assert accuracy(model, ours, y) == accuracy(model, theirs, y)


@pytest.mark.parametrize("eps", [8 / 255, 0.1, 0.3])
def test_bim(setting, eps):
    model, x, y = setting
    same(model, attack("bim", model, x, y, eps), ta.BIM(model, eps=eps, alpha=eps / 4, steps=10)(x, y), y)
    if eps == 8 / 255:  # our defaults are torchattacks' defaults at its ε
        same(model, attack("bim", model, x, y, eps), ta.BIM(model)(x, y), y)
    atk = ta.BIM(model, eps=eps, alpha=eps / 4, steps=5)
    atk.set_mode_targeted_by_label(quiet=True)
    target = (y + 1) % 5
    same(model, attack("bim", model, x, target, eps, targeted=True, steps=5), atk(x, target), y)


@pytest.mark.parametrize("eps", [8 / 255, 0.1, 0.3])
def test_mifgsm(setting, eps):
    model, x, y = setting
    same(
        model, attack("mifgsm", model, x, y, eps), ta.MIFGSM(model, eps=eps, alpha=eps / 4, steps=10)(x, y), y
    )
    if eps == 8 / 255:
        same(model, attack("mifgsm", model, x, y, eps), ta.MIFGSM(model)(x, y), y)
    atk = ta.MIFGSM(model, eps=eps, alpha=eps / 4, steps=5)
    atk.set_mode_targeted_by_label(quiet=True)
    target = (y + 1) % 5
    same(model, attack("mifgsm", model, x, target, eps, targeted=True, steps=5), atk(x, target), y)


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_pgd_l2(setting, eps):
    from lab4_ood.attacks import pgd_l2

    model, x, y = setting
    theirs = ta.PGDL2(model, eps=eps, alpha=eps / 5, steps=10, random_start=False)(x, y)
    same(model, pgd_l2(model, x, y, eps, random_start=False), theirs, y)
    # with a random start from the same seed: the same draws, the same images
    torch.manual_seed(11)
    ours = attack("pgd-l2", model, x, y, eps)
    torch.manual_seed(11)
    same(model, ours, ta.PGDL2(model, eps=eps, alpha=eps / 5, steps=10)(x, y), y)
    if eps == 1.0:
        torch.manual_seed(12)
        ours = attack("pgd-l2", model, x, y, eps)
        torch.manual_seed(12)
        same(model, ours, ta.PGDL2(model)(x, y), y)


@pytest.mark.parametrize("eps", [8 / 255, 0.1])
@pytest.mark.parametrize(("method", "loss"), [("apgd", "ce"), ("apgd-dlr", "dlr")])
def test_apgd(setting, eps, method, loss):
    model, x, y = setting
    same(model, attack(method, model, x, y, eps), ta.APGD(model, eps=eps, loss=loss)(x, y), y)
    same(model, attack(method, model, x, y, eps, steps=25, seed=3), ta.APGD(model, eps=eps, loss=loss, steps=25,
                                                                             seed=3)(x, y), y)  # fmt: skip


@pytest.mark.parametrize("eps", [8 / 255, 0.1])
def test_square(setting, eps):
    model, x, y = setting
    same(
        model,
        attack("square", model, x, y, eps, n_queries=150),
        ta.Square(model, eps=eps, n_queries=150)(x, y),
        y,
    )
    atk = ta.Square(model, eps=eps, n_queries=100, seed=5)
    atk.set_mode_targeted_by_label(quiet=True)
    target = (y + 1) % 5
    ours = attack("square", model, x, target, eps, targeted=True, n_queries=100, seed=5)
    same(model, ours, atk(x, target), y)


@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_apgd_t(setting, eps):
    model, x, y = setting
    # torchattacks' n_classes is the model's: its targets are the n_classes − 1 most likely wrong classes, ours
    # min(9, classes − 1)
    same(model, attack("apgd-t", model, x, y, eps, steps=10), ta.APGDT(model, eps=eps, n_classes=5)(x, y), y)
    ours = attack("apgd-t", model, x, y, eps, steps=15, n_targets=2, restarts=2, seed=3)
    theirs = ta.APGDT(model, eps=eps, steps=15, n_classes=3, n_restarts=2, seed=3)(x, y)  # 2 targets
    same(model, ours, theirs, y)


@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_fab(setting, eps):
    model, x, y = setting
    theirs = ta.FAB(model, eps=eps, multi_targeted=True, n_classes=5)(x, y)
    same(model, attack("fab-t", model, x, y, eps, steps=10), theirs, y)
    same(model, attack("fab", model, x, y, eps, steps=10), ta.FAB(model, eps=eps, n_classes=5)(x, y), y)
    # later restarts start at random from the same seed
    theirs = ta.FAB(model, eps=eps, steps=8, n_classes=5, n_restarts=3, seed=2)(x, y)
    same(model, attack("fab", model, x, y, eps, steps=8, restarts=3, seed=2), theirs, y)


@pytest.mark.parametrize("version", ["standard", "plus", "rand"])
def test_autoattack(setting, version):
    """torchattacks' AutoAttack runs APGD and FAB with its own default of 10 steps (the original: 100)."""
    model, x, y = setting
    eps = 0.1
    theirs = ta.AutoAttack(model, eps=eps, version=version, n_classes=5, seed=0)(x, y)
    same(model, attack("autoattack", model, x, y, eps, version=version, steps=10), theirs, y)


def test_deepfool(setting):
    model, x, y = setting
    x, y = x[:24], y[:24]  # image by image: a few are enough
    same(model, attack("deepfool", model, x, y, math.inf), ta.DeepFool(model)(x, y), y)
    same(model, attack("deepfool", model, x, y, math.inf, steps=3, overshoot=0.1),
         ta.DeepFool(model, steps=3, overshoot=0.1)(x, y), y)  # fmt: skip


class Shifted(nn.Module):
    """The same classifier with every logit + 1000: all logits positive, where torchattacks' CW margin is the
    paper's."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) + 1000.0


def test_cw(setting):
    model, x, y = setting
    shifted = Shifted(model).eval()
    with torch.no_grad():
        assert shifted(x).min() > 0
    same(shifted, attack("cw", shifted, x, y, math.inf), ta.CW(shifted)(x, y), y)
    same(shifted, attack("cw", shifted, x, y, math.inf, c=3.0, kappa=0.5, steps=20, lr=0.05),
         ta.CW(shifted, c=3.0, kappa=0.5, steps=20, lr=0.05)(x, y), y)  # fmt: skip
    # the plain model, whose logits can all be negative but the true one: the same accuracy within 2 points
    ours, theirs = attack("cw", model, x, y, math.inf), ta.CW(model)(x, y)
    assert abs(accuracy(model, ours, y) - accuracy(model, theirs, y)) <= 0.02
