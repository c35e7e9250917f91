"""APGD (CE, DLR), CW, DeepFool, Square and the AutoAttack subset (lab4_ood.attacks): the pieces by hand on tiny
tensors and linear models, the train/eval state, [0, 1] and the ε-ball, seeds, and on the suite's digits model
that the stronger attacks are stronger and the AutoAttack subset is at least as strong as each component."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from lab4_ood import attacks
from lab4_ood.attacks import AUTOATTACK, attack
from lab4_ood.attacks.apgd import _dlr_each, _oscillates
from lab4_ood.attacks.minimum_norm import _cw_margin
from lab4_ood.attacks.square import _square_p

NEW = ("apgd", "apgd-dlr", "cw", "deepfool", "square", "autoattack")
L2 = ("cw", "deepfool")
FAST = {"n_queries": 30, "steps": 5}  # what each attack names of these, for tiny tests


def bn_model(seed=0, classes=5):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(144, classes),
    )


def size(method, adv, x):
    d = (adv - x).flatten(1)
    return d.norm(dim=1) if method in L2 else d.abs().amax(1)


@pytest.mark.parametrize("method", NEW)
def test_new_attacks_keep_the_mode_the_range_and_the_ball(method):
    model = bn_model()
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 5, (6,))
    eps = 0.8 if method in L2 else 0.1
    for mode in (True, False):
        model.train(mode)
        adv = attack(method, model, x, y, eps, **FAST)
        assert all(m.training == mode for m in model.modules()), (method, mode)
        assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
        assert (size(method, adv, x) <= eps + 1e-6).all(), (method, size(method, adv, x))
        assert all(p.grad is None for p in model.parameters())
        assert torch.equal(attack(method, model, x, y, 0.0, **FAST), x)


@pytest.mark.parametrize("method", ["apgd", "apgd-dlr", "square", "autoattack"])
def test_random_attacks_are_fixed_by_their_seed_and_leave_the_global_rng_alone(method, digits_mlp, digits04):
    x, y = digits04.test.images[:40].float() / 255, digits04.test.labels[:40]
    state = torch.get_rng_state()
    a = attack(method, digits_mlp, x, y, 0.15, seed=1, **FAST)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)  # the global RNG does not matter
    assert torch.equal(attack(method, digits_mlp, x, y, 0.15, seed=1, **FAST), a)
    assert not torch.equal(attack(method, digits_mlp, x, y, 0.15, seed=2, **FAST), a)


def test_dlr_loss_by_hand_and_its_invariance():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.5, 2.0, 1.5, 0.0]])
    y = torch.tensor([0, 0])
    # image 0: y is on top, so the margin is to the second: −(3 − 1)/(3 − 0); image 1: −(0.5 − 2)/(2 − 0.5)
    expected = torch.tensor([-2 / 3, 1.0])
    torch.testing.assert_close(_dlr_each(logits, y), expected)
    torch.testing.assert_close(_dlr_each(4 * logits + 7, y), expected)
    with pytest.raises(ValueError, match="at least 3 classes"):
        _dlr_each(logits[:, :2], y)


def test_apgd_checkpoint_rule_by_hand():
    """A step-size checkpoint after k steps halves where the loss rose in at most ρ·k of them; the first one
    compares the first loss with the history's unfilled last row (0), as the reference does."""
    history = torch.tensor([[1.0, 1.0], [2.0, 0.5], [3.0, 0.7], [4.0, 0.6], [0.0, 0.0]])
    # image 0 rose at steps 1, 2, 3 (3 of 3 > 0.75·3): keep; image 1 rose once: halve
    assert _oscillates(history, 3, 3, 0.75).tolist() == [False, True]
    # first checkpoint, k = 2 at step 1: rises 1 > 0 (row −1) and 2 > 1 for image 0; 1 > 0 only for image 1
    assert _oscillates(history, 1, 2, 0.75).tolist() == [False, True]
    # at the threshold itself (3 rises of 4 = 0.75·4): halve
    history = torch.tensor([[1.0], [2.0], [3.0], [4.0], [3.5]])
    assert _oscillates(history, 4, 4, 0.75).tolist() == [True]


def test_square_schedule_and_query_budget(digits_mlp, digits04):
    """p_init halves at fixed points of a 10,000-query schedule (rescaled to n_queries); the attack spends at
    most n_queries queries (forward passes) per image."""
    p = [_square_p(i, 10000, 0.8) for i in (0, 30, 100, 300, 600, 1500, 3000, 5000, 7000, 9000)]
    assert p == [0.8 / d for d in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)]
    assert _square_p(6, 100, 0.8) == 0.05  # query 6 of 100 is query 600 of 10,000
    calls = []

    class Counting(nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return digits_mlp(x)

    x, y = digits04.test.images[:30].float() / 255, digits04.test.labels[:30]
    adv = attacks.square(Counting(), x, y, 0.1, n_queries=25)
    # one clean pass, the stripes' start, at most 25 queries, one check of the result
    assert len(calls) <= 25 + 3
    assert (adv - x).abs().max() <= 0.1 + 1e-6


def test_cw_margin_and_the_l2_radius(digits_mlp, digits04):
    logits = torch.tensor([[2.0, -1.0, -3.0], [0.5, 1.5, -2.0]])
    y = torch.tensor([0, 0])
    # z_y − max_{i≠y} z_i, floored at −κ: 2 − (−1) = 3 (the true max of the others, not 0); 0.5 − 1.5 = −1 → −0.5
    torch.testing.assert_close(_cw_margin(logits, y, 0.5, False), torch.tensor([3.0, -0.5]))
    torch.testing.assert_close(_cw_margin(logits, y, 10.0, True), torch.tensor([-3.0, 1.0]))
    x, y = digits04.test.images[:30].float() / 255, digits04.test.labels[:30]
    free = attacks.cw(digits_mlp, x, y, steps=30, c=5.0, lr=0.1)
    dist = (free - x).flatten(1).norm(dim=1)
    with torch.no_grad():
        wrong = digits_mlp(free).argmax(1) != y
    assert wrong.sum() >= 5 and torch.equal(dist > 0, wrong)  # moved ⇔ fooled (the closest fooling iterate)
    r = float(dist[wrong].median())
    bounded = attacks.cw(digits_mlp, x, y, r, steps=30, c=5.0, lr=0.1)
    torch.testing.assert_close(bounded, torch.where((dist > r).view(-1, 1, 1, 1), x, free))


def test_deepfool_on_a_linear_model_steps_to_the_boundary_times_overshoot():
    """Two classes, logits W x + b: one step x + (1 + o)·|f₁ − f₀|·(w₁ − w₀)/‖w₁ − w₀‖² crosses the boundary by
    the overshoot, and the prediction flips."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    w = model[1].weight.detach()
    with torch.no_grad():  # the boundary near the images: no step reaches 0 or 1
        model[1].bias.copy_(torch.tensor([0.0, -0.5 * float((w[1] - w[0]).sum()) + 0.05]))
    b = model[1].bias.detach()
    x = 0.45 + 0.1 * torch.rand(5, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    out = attacks.deepfool(model, x, y, overshoot=0.1, steps=1)
    for i in range(5):
        other = 1 - int(y[i])
        wp = (w[other] - w[int(y[i])]).view(1, 4, 4)
        gap = (x[i].flatten() @ (w[other] - w[int(y[i])]) + b[other] - b[int(y[i])]).abs()
        expected = (x[i] + 1.1 * gap * wp / wp.norm() ** 2).clamp(0, 1)
        torch.testing.assert_close(out[i], expected)
    with torch.no_grad():
        assert (model(out).argmax(1) != y).all()
    torch.testing.assert_close(attacks.deepfool(model, x, y), attacks.deepfool(model, x, y, steps=1))
    assert torch.equal(attacks.deepfool(model, x, 1 - y), x)  # already "misclassified": left alone


def test_stronger_attacks_on_digits(digits_mlp, digits04):
    """APGD is at least as strong as PGD with the same steps; the AutoAttack subset leaves no image robust that
    one of its components fooled, so it is at least as strong as each; Square (black box) is weaker than APGD."""
    x, y = digits04.test.images.float() / 255, digits04.test.labels

    def robust(method, **options):
        with torch.no_grad():
            return digits_mlp(attack(method, digits_mlp, x, y, 0.1, **options)).argmax(1) == y

    torch.manual_seed(0)
    pgd = robust("pgd").float().mean()
    each = {m: robust(m, n_queries=200) for m in AUTOATTACK}
    auto = robust("autoattack", n_queries=200)
    assert each["apgd"].float().mean() <= pgd
    for m, r in each.items():
        assert (auto <= r).all(), m
    assert auto.float().mean() <= min(r.float().mean() for r in each.values())
    assert each["square"].float().mean() > each["apgd"].float().mean()
    assert auto.float().mean() < robust("fgsm").float().mean()
