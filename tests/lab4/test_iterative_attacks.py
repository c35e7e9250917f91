"""BIM, MI-FGSM and PGD-L2 (lab4_ood.attacks): single steps by hand on tiny linear models, the L2 projection,
the documented defaults, the train/eval state, and accuracy that falls with ε on the suite's digits model."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lab4_ood import methods
from lab4_ood.attacks import attack, bim, fgsm, mifgsm, pgd, pgd_l2


def linear(seed=0, inputs=12, classes=3):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(inputs, classes))
    return model, model[1].weight.detach(), model[1].bias.detach()


def ce_grad(w, b, x, y):
    """∇ₓ of the batch-mean cross-entropy of logits W x + b: (p − e_y)ᵀ W / N."""
    p = F.softmax(x.flatten(1) @ w.T + b, 1)
    return ((p - F.one_hot(y, w.shape[0]).float()) @ w).view_as(x) / len(x)


def test_the_registry_names_the_new_attacks():
    assert {"bim", "mifgsm", "pgd-l2"} <= set(methods.attacks())
    assert methods.implementation(methods.attacks()["pgd-l2"]) is pgd_l2


def test_one_bim_step_is_fgsm_with_step_alpha_clipped_to_the_ball():
    model, w, b = linear(0)
    x, y = torch.rand(10, 1, 3, 4), torch.randint(0, 3, (10,))
    # one step of α ≤ ε is FGSM with ε = α (clamped to [0, 1])
    torch.testing.assert_close(bim(model, x, y, 0.1, steps=1, step_size=0.04), fgsm(model, x, y, 0.04))
    # a step larger than ε is clipped back to the ε-ball
    torch.testing.assert_close(bim(model, x, y, 0.05, steps=1, step_size=0.2), fgsm(model, x, y, 0.05))
    # two steps by hand; default step ε/4, no random start (deterministic: no RNG drawn)
    eps, step = 0.1, 0.03
    adv = x
    for _ in range(2):
        adv = torch.minimum(torch.maximum(adv + step * ce_grad(w, b, adv, y).sign(), x - eps), x + eps).clamp(
            0, 1
        )
    torch.testing.assert_close(bim(model, x, y, eps, steps=2, step_size=step), adv)
    torch.manual_seed(0)
    a = bim(model, x, y, 0.2)
    torch.manual_seed(1)
    torch.testing.assert_close(a, bim(model, x, y, 0.2))
    torch.testing.assert_close(a, pgd(model, x, y, 0.2, steps=10, step_size=0.05, random_start=False))
    torch.testing.assert_close(attack("bim", model, x, y, 0.2, steps=3), bim(model, x, y, 0.2, steps=3))
    assert not torch.allclose(bim(model, x, y, 0.2, steps=3, step_size=0.06), bim(model, x, y, 0.2, steps=3))
    assert torch.equal(bim(model, x, y, 0.0), x)


def mifgsm_by_hand(w, b, x, y, eps, steps, step, decay):
    adv, g = x, torch.zeros_like(x)
    for _ in range(steps):
        grad = ce_grad(w, b, adv, y)
        g = decay * g + grad / grad.abs().flatten(1).mean(1).view(-1, 1, 1, 1)
        adv = (x + (adv + step * g.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    return adv


def test_mifgsm_accumulates_l1_normalised_gradients_on_a_linear_model():
    """Two pixels, three classes, y = 0: ∂CE/∂x₀ = p₁ − p₂ and ∂CE/∂x₁ = 4·p₂. From (0.5, 0.5) the first gradient
    is (+0.045, 1.718); after one step to (0.6, 0.6) class 2 overtakes class 1 and it is (−0.046, 1.932). With
    decay 1 the L1-normalised sum keeps pixel 0 going up (0.045/0.88 − 0.046/0.99 > 0); with decay 0.5 or 0, or
    without the normalisation (0.045 − 0.046 < 0), pixel 0 turns back."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 4.0]]))
        model[1].bias.copy_(torch.tensor([0.0, 1.1, 0.0]))
    x, y = torch.tensor([[[[0.5, 0.5]]]]), torch.tensor([0])
    w, b = model[1].weight.detach(), model[1].bias.detach()
    expected = {1.0: [0.7, 0.7], 0.5: [0.5, 0.7], 0.0: [0.5, 0.7]}
    for decay, pixels in expected.items():
        adv = mifgsm(model, x, y, 0.3, steps=2, step_size=0.1, decay=decay)
        torch.testing.assert_close(adv.flatten(), torch.tensor(pixels))
        for steps in (1, 2, 3):
            torch.testing.assert_close(
                mifgsm(model, x, y, 0.3, steps=steps, step_size=0.1, decay=decay),
                mifgsm_by_hand(w, b, x, y, 0.3, steps, 0.1, decay),
            )
    # on a random linear model, many images and steps: the same, and decay matters
    model, w, b = linear(4)
    x, y = 0.2 + 0.6 * torch.rand(16, 1, 3, 4), torch.randint(0, 3, (16,))
    for decay in (1.0, 0.3):
        expected = mifgsm_by_hand(w, b, x, y, 0.1, 6, 0.03, decay)
        torch.testing.assert_close(mifgsm(model, x, y, 0.1, steps=6, step_size=0.03, decay=decay), expected)
    # defaults: 10 steps of ε/4, decay 1.0, through attack too
    torch.testing.assert_close(mifgsm(model, x, y, 0.1), mifgsm_by_hand(w, b, x, y, 0.1, 10, 0.025, 1.0))
    torch.testing.assert_close(
        attack("mifgsm", model, x, y, 0.1, steps=4), mifgsm_by_hand(w, b, x, y, 0.1, 4, 0.025, 1.0)
    )
    targeted = mifgsm(model, x, y, 0.1, steps=3, targeted=True)
    assert not torch.allclose(targeted, mifgsm(model, x, y, 0.1, steps=3))
    assert torch.equal(mifgsm(model, x, y, 0.0), x)


def test_mifgsm_momentum_differs_from_bim_where_gradients_turn():
    """On a ReLU network gradient signs change between steps: momentum (decay 1) ends elsewhere than decay 0,
    and decay 0 is BIM with the same steps (the L1 normalisation does not change a sign)."""
    torch.manual_seed(7)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5))
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 5, (32,))
    plain = mifgsm(model, x, y, 0.3, steps=8, step_size=0.05, decay=0.0)
    torch.testing.assert_close(plain, bim(model, x, y, 0.3, steps=8, step_size=0.05))
    assert not torch.equal(mifgsm(model, x, y, 0.3, steps=8, step_size=0.05), plain)


def test_mifgsm_leaves_images_without_gradient_alone():
    """An image whose gradient is all zero has L1 norm 0: 0/0 is NaN, whose sign is 0 in torch (as torchattacks
    relies on), so it stays put and no NaN reaches the image."""
    model, _, _ = linear(3)
    with torch.no_grad():
        model[1].weight.zero_()
    x, y = torch.rand(4, 1, 3, 4), torch.randint(0, 3, (4,))
    assert torch.equal(mifgsm(model, x, y, 0.1), x)


def l2_norms(t):
    return t.flatten(1).norm(dim=1)


def test_pgd_l2_step_and_projection_by_hand():
    model, w, b = linear(5)
    x, y = 0.3 + 0.4 * torch.rand(8, 1, 3, 4), torch.randint(0, 3, (8,))
    # one small step from x: x + α ∇/‖∇‖ (inside the ball: no projection)
    g = ce_grad(w, b, x, y)
    step = x + 0.05 * g / (l2_norms(g) + 1e-10).view(-1, 1, 1, 1)
    torch.testing.assert_close(pgd_l2(model, x, y, 1.0, steps=1, step_size=0.05, random_start=False), step)
    # a step longer than ε is projected back onto the sphere of radius ε: δ·ε/‖δ‖
    adv = pgd_l2(model, x, y, 0.1, steps=1, step_size=0.5, random_start=False)
    delta = 0.5 * g / (l2_norms(g) + 1e-10).view(-1, 1, 1, 1)
    torch.testing.assert_close(adv, (x + delta * (0.1 / l2_norms(delta)).view(-1, 1, 1, 1)).clamp(0, 1))
    torch.testing.assert_close(l2_norms(adv - x), torch.full((8,), 0.1))
    # targeted goes the other way; ε = 0 is the identity
    torch.testing.assert_close(
        pgd_l2(model, x, y, 1.0, steps=1, step_size=0.05, random_start=False, targeted=True),
        x - 0.05 * g / (l2_norms(g) + 1e-10).view(-1, 1, 1, 1),
    )
    assert torch.equal(pgd_l2(model, x, y, 0.0), x)


def test_pgd_l2_random_start_lies_inside_the_ball_and_the_defaults():
    """Random start x + ε·r·z/‖z‖ (z normal, r uniform per image, global RNG), then 10 steps of ε/5."""
    model, w, b = linear(6)
    x, y = torch.rand(32, 1, 3, 4), torch.randint(0, 3, (32,))
    eps = 2.0
    torch.manual_seed(3)
    z = torch.empty_like(x).normal_()
    r = torch.zeros(32, 1, 1, 1).uniform_(0, 1)
    adv = (x + z * (r / l2_norms(z).view(-1, 1, 1, 1) * eps)).clamp(0, 1)
    for _ in range(10):
        g = ce_grad(w, b, adv, y)
        adv = adv + 0.4 * g / (l2_norms(g) + 1e-10).view(-1, 1, 1, 1)
        delta = adv - x
        adv = (x + delta * torch.clamp(eps / l2_norms(delta), max=1).view(-1, 1, 1, 1)).clamp(0, 1)
    for run in (pgd_l2, lambda *args: attack("pgd-l2", *args)):
        torch.manual_seed(3)
        out = run(model, x, y, eps)
        torch.testing.assert_close(out, adv)
        assert (l2_norms(out - x) <= eps + 1e-5).all() and out.min() >= 0 and out.max() <= 1
    torch.manual_seed(3)
    start = pgd_l2(model, x, y, 0.5, steps=0)  # the start alone: inside the ball, not at x
    assert (l2_norms(start - x) <= 0.5 + 1e-6).all() and (l2_norms(start - x) > 0).all()
    torch.manual_seed(4)
    assert not torch.equal(pgd_l2(model, x, y, 0.5, steps=0), start)


@pytest.mark.parametrize("method", ["bim", "mifgsm", "pgd-l2"])
def test_iterative_attacks_keep_the_mode_the_range_and_the_ball(method):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.Linear(144, 5)
    )
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 5, (8,))
    for mode in (True, False):
        model.train(mode)
        adv = attack(method, model, x, y, 0.3, steps=3)
        assert all(m.training == mode for m in model.modules()), (method, mode)
        assert adv.min() >= 0 and adv.max() <= 1
        size = l2_norms(adv - x) if method == "pgd-l2" else (adv - x).abs().flatten(1).amax(1)
        assert (size <= 0.3 + 1e-6).all()
        assert all(p.grad is None for p in model.parameters())


def test_iterative_attack_accuracy_falls_as_eps_grows(digits_mlp, digits04):
    """The science: on the trained digits model, each larger ε leaves fewer test images classified right, and
    the iterative attacks are at least as strong as FGSM at the same L∞ ε."""
    x, y = digits04.test.images.float() / 255, digits04.test.labels
    torch.manual_seed(0)

    def accuracy(method, eps):
        with torch.no_grad():
            return (digits_mlp(attack(method, digits_mlp, x, y, eps)).argmax(1) == y).float().mean().item()

    linf, l2 = (0, 0.05, 0.1, 0.2), (0, 0.5, 1.0, 2.0)
    for method, radii in (("bim", linf), ("mifgsm", linf), ("pgd-l2", l2)):
        acc = [accuracy(method, e) for e in radii]
        assert acc[0] > 0.9, (method, acc)
        assert all(a > b for a, b in itertools.pairwise(acc)), (method, acc)
        assert acc[-1] < 0.5 * acc[0], (method, acc)
    fgsm_acc = accuracy("fgsm", 0.1)
    assert accuracy("bim", 0.1) <= fgsm_acc and accuracy("mifgsm", 0.1) <= fgsm_acc
