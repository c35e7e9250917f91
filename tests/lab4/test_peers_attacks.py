"""Parity with torchattacks 3.5.1 (`nox -s tests-lab4-peers` installs it; skipped without it): on the suite's MLP
trained on digits 0-4, our BIM, MI-FGSM and PGD-L2 give bit-identical adversarial images to torchattacks' BIM,
MIFGSM and PGDL2 (PGD-L2 without a random start, and with one from the same seed), hence the same adversarial
accuracy. At torchattacks' default ε our default step sizes (ε/4, ε/4, ε/5) are its α (2/255, 2/255, 0.2).

A separate file from test_peers.py, which skips as a whole without pytorch-ood."""

from __future__ import annotations

import pytest
import torch

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
