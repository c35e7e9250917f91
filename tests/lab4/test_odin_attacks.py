from __future__ import annotations

import itertools
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dla_core.models import ModelConfig, build_model
from lab4_ood import methods
from lab4_ood.attacks import attack, fgsm, pgd
from lab4_ood.odin import odin_grid, odin_scores
from lab4_ood.training import RobustStep, WithOutliers, outlier_exposure_loss


def random_classifier(seed=0, family="mlp"):
    torch.manual_seed(seed)
    cfg = ModelConfig(family, (1, 8, 8), 5, depth=1, width=16, stages=1, mean=(0.3,), std=(0.2,))
    return build_model(cfg).eval()


def test_odin_perturbation_raises_max_softmax():
    model = random_classifier()
    x = torch.rand(64, 1, 8, 8)
    for t in (1.0, 10.0):
        clean = odin_scores(model, x, t, 0.0)
        perturbed = odin_scores(model, x, t, 0.005)
        assert (perturbed > clean).float().mean() > 0.9
        assert perturbed.mean() > clean.mean()


def test_odin_eps_is_a_pixel_step_of_eps():
    """ε·sign(g)/std on normalised inputs (the libraries) is ε·sign(g) on pixels (here): same perturbed image."""
    model = random_classifier(1)
    x = torch.rand(8, 1, 8, 8)
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    F.cross_entropy(logits, logits.argmax(1), reduction="sum").backward()
    z = model.normalize(x)
    z_lib = z - 0.002 * xg.grad.sign() / model.normalize.std  # as pytorch-ood / OpenOOD do
    after_lib = F.softmax(model.head(model.pool(model.blocks(model.stem(z_lib)))), 1).amax(1)
    torch.testing.assert_close(odin_scores(model, x, 1.0, 0.002), after_lib, atol=1e-6, rtol=1e-5)


def test_odin_grid_equals_each_pair_from_scratch():
    model = random_classifier(2, "cnn")
    x = torch.rand(16, 1, 8, 8)
    temps, epsilons = (1.0, 10.0, 1000.0), (0.0, 0.001, 0.004)
    grid = odin_grid(model, x, temps, epsilons)
    assert list(grid) == [(t, e) for t in temps for e in epsilons]
    for (t, e), scores in grid.items():
        torch.testing.assert_close(scores, odin_scores(model, x, t, e), atol=1e-6, rtol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def linear_odin_expected(w, b, x, temperature, eps):
    """ODIN on logits = W x + b by hand (float64): ∇ₓ −log softmax(z/T)_ŷ = Wᵀ(softmax(z/T) − e_ŷ) / T."""
    z = x @ w.T + b
    pred = z.argmax(1)
    p = torch.softmax(z / temperature, 1)
    grad = (p - F.one_hot(pred, w.shape[0]).double()) @ w / temperature
    x_tilde = x - eps * grad.sign()
    return torch.softmax((x_tilde @ w.T + b) / temperature, 1).amax(1)


def test_odin_on_a_linear_model_equals_the_closed_form():
    """T ≠ 1 everywhere: the gradient's direction and the final score both depend on T.

    Coordinate 0 of the gradient is p₁·1 + p₂·(−2) (p = softmax(z/T), ŷ = 0): positive at T = 1, where
    p₁/p₂ = e², negative at T = 10, where p₁/p₂ = e^0.2 — so a gradient taken without T moves x the wrong way.
    """
    w = torch.tensor([[0.0, 0.5], [1.0, -1.0], [-2.0, 0.3]], dtype=torch.float64)
    b = torch.tensor([3.0, 0.5, 0.0], dtype=torch.float64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 3)).double()
    with torch.no_grad():
        model[1].weight.copy_(w)
        model[1].bias.copy_(b)
    x = torch.tensor([[0.5, 0.5], [0.2, 0.9], [0.7, 0.1]], dtype=torch.float64)
    for t in (10.0, 1000.0):
        for e in (0.0, 0.1):
            expected = linear_odin_expected(w, b, x, t, e)
            torch.testing.assert_close(odin_scores(model, x.view(3, 1, 2), t, e).double(), expected)
    grid = odin_grid(model, x.view(3, 1, 2), (10.0, 1000.0), (0.0, 0.1))
    for (t, e), scores in grid.items():
        torch.testing.assert_close(scores.double(), linear_odin_expected(w, b, x, t, e))
    # the numbers above are not the T = 1 ones: a T dropped anywhere changes them
    assert not torch.allclose(
        linear_odin_expected(w, b, x, 10.0, 0.1), linear_odin_expected(w, b, x, 1.0, 0.1)
    )


def test_pgd_starts_at_a_random_point_of_the_ball():
    """One step from x + δ, δ ~ U(−ε, ε) drawn from torch's global RNG, by hand on a linear model."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    w, b = model[1].weight.detach(), model[1].bias.detach()
    x = 0.3 + 0.4 * torch.rand(10, 1, 3, 4)
    y = torch.randint(0, 3, (10,))
    eps, step = 0.1, 0.05
    torch.manual_seed(1)
    start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    p = F.softmax(start.flatten(1) @ w.T + b, 1)
    grad = ((p - F.one_hot(y, 3).float()) @ w).view_as(x)
    expected = torch.minimum(torch.maximum(start + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    torch.manual_seed(1)
    torch.testing.assert_close(pgd(model, x, y, eps, steps=1, step_size=step), expected)
    torch.manual_seed(2)
    assert not torch.equal(pgd(model, x, y, eps, steps=1, step_size=step), expected)  # another start


def test_fgsm_on_a_linear_model_equals_the_closed_form():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    w, b = model[1].weight.detach(), model[1].bias.detach()
    x = 0.3 + 0.4 * torch.rand(10, 1, 3, 4)  # away from 0 and 1: no clamping at ε = 0.1
    y = torch.randint(0, 3, (10,))
    p = F.softmax(x.flatten(1) @ w.T + b, 1)
    grad = (p - F.one_hot(y, 3).float()) @ w  # ∇ₓ CE for logits = Wx + b (mean over the batch only scales it)
    expected = x + 0.1 * grad.sign().view_as(x)
    torch.testing.assert_close(fgsm(model, x, y, 0.1), expected)
    torch.testing.assert_close(fgsm(model, x, y, 0.1, targeted=True), (x - 0.1 * grad.sign().view_as(x)))
    assert torch.equal(fgsm(model, x, y, 0.0), x)


def test_attacks_stay_in_the_ball_and_the_image_range_and_keep_the_mode():
    model = random_classifier(3, "cnn").train()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 5, (8,))
    for method in ("fgsm", "pgd"):
        adv = attack(method, model, x, y, 0.3)
        assert adv.min() >= 0 and adv.max() <= 1
        assert (adv - x).abs().max() <= 0.3 + 1e-6
        assert model.training  # the attack did not switch the model to eval (torchattacks #21)
        assert all(p.grad is None for p in model.parameters())


def test_pgd_is_stronger_than_fgsm_and_targeted_pgd_reaches_the_target(digits_mlp, digits04):
    x = digits04.test.images.float() / 255
    y = digits04.test.labels
    torch.manual_seed(0)
    with torch.no_grad():
        clean = (digits_mlp(x).argmax(1) == y).float().mean()
        acc_fgsm = (digits_mlp(fgsm(digits_mlp, x, y, 0.1)).argmax(1) == y).float().mean()
        acc_pgd = (digits_mlp(pgd(digits_mlp, x, y, 0.1)).argmax(1) == y).float().mean()
    assert clean > 0.9 and acc_pgd <= acc_fgsm < clean
    target = torch.full_like(y, 3)
    with torch.no_grad():
        before = (digits_mlp(x).argmax(1) == 3).float().mean()
        after = (digits_mlp(pgd(digits_mlp, x, target, 0.2, targeted=True)).argmax(1) == 3).float().mean()
    assert after > before + 0.3


def test_outlier_exposure_loss_is_cross_entropy_to_uniform():
    logits = torch.randn(6, 5)
    uniform = torch.full((6, 5), 0.2)
    expected = -(uniform * F.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(outlier_exposure_loss(logits), expected)
    assert outlier_exposure_loss(torch.zeros(3, 5)).item() == pytest.approx(
        torch.log(torch.tensor(5.0)).item()
    )


def test_robust_step_keeps_train_mode_and_mixes_losses():
    model = random_classifier(4, "cnn").train()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 5, (8,))
    clean = RobustStep()(model, (x, y))
    adv = RobustStep("fgsm", eps=0.1, alpha=0.0, fraction=0.5)(model, (x, y))
    assert model.training and clean.count == adv.count == 8
    assert adv.loss.requires_grad and adv.loss.item() != pytest.approx(clean.loss.item())


def test_fgsm_accuracy_falls_as_eps_grows(digits_mlp, digits04):
    """The science: on a trained digits model, each larger ε leaves fewer test images classified right."""
    x, y = digits04.test.images.float() / 255, digits04.test.labels
    accuracy = []
    for eps in (0.0, 0.05, 0.1, 0.2):
        with torch.no_grad():
            accuracy.append((digits_mlp(fgsm(digits_mlp, x, y, eps)).argmax(1) == y).float().mean().item())
    assert accuracy[0] > 0.9
    assert all(a > b for a, b in itertools.pairwise(accuracy)), accuracy
    assert accuracy[-1] < 0.5 * accuracy[0], accuracy


def test_outlier_batches_follow_from_epoch_and_batch_only(digits04):
    """OOD batch of (epoch, i) = batch k mod M of OOD pass k div M, k = epoch·N + i; the same when started late."""
    from dla_core.data import ImageBatches

    train = ImageBatches(digits04.train, 64, shuffle=True, seed=3)  # N = 6 batches per epoch
    # 180 images: M = 2 batches of 64 per pass (the last partial batch is dropped), fewer than N
    ood_set = digits04.test.subset(torch.arange(180))
    ood = ImageBatches(ood_set, 64, shuffle=True, seed=4)
    paired = WithOutliers(train, ood)
    n, m = len(train), len(ood)
    cycle = [x for p in range(3 * n // m + 1) for x, _ in ood.iterate(p)]  # the OOD set, pass after pass
    for epoch in range(3):
        served = list(paired.iterate(epoch))
        assert len(served) == n
        for i, (_, _, x_ood) in enumerate(served):
            assert torch.equal(x_ood, cycle[epoch * n + i])
        for (x, y), (x2, y2, _) in zip(train.iterate(epoch), served, strict=True):
            assert torch.equal(x, x2) and torch.equal(y, y2)
        late = list(paired.iterate(epoch, start=4))
        assert (
            all(torch.equal(a[2], b[2]) for a, b in zip(late, served[4:], strict=True)) and len(late) == n - 4
        )
    assert m == 2 and not torch.equal(cycle[0], cycle[m])  # a fresh order each pass


def test_robust_step_adds_the_outlier_exposure_term():
    model = random_classifier(5)
    x, y, x_ood = torch.rand(8, 1, 8, 8), torch.randint(0, 5, (8,)), torch.rand(6, 1, 8, 8)
    plain = RobustStep(oe_weight=0.3)(model, (x, y)).loss
    with_oe = RobustStep(oe_weight=0.3)(model, (x, y, x_ood)).loss
    torch.testing.assert_close(with_oe, plain + 0.3 * outlier_exposure_loss(model(x_ood)))


def test_odin_grid_without_perturbation_is_temperature_scaling_for_every_t():
    model = random_classifier(6)
    x = torch.rand(12, 1, 8, 8)
    temps = (1.0, 5.0, 100.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no implicit-dimension softmax (a deprecation warning per call)
        grid = odin_grid(model, x, temps, (0.0,))
    assert list(grid) == [(t, 0.0) for t in temps]
    with torch.no_grad():
        logits = model(x)
    for t in temps:
        torch.testing.assert_close(grid[(t, 0.0)], F.softmax(logits / t, 1).amax(1))
    only_perturbed = odin_grid(model, x, temps, (0.003,))
    assert list(only_perturbed) == [(t, 0.003) for t in temps]
    for t in temps:
        torch.testing.assert_close(only_perturbed[(t, 0.003)], odin_scores(model, x, t, 0.003))


def linear_model(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    return model, model[1].weight.detach(), model[1].bias.detach()


def pgd_by_hand(w, b, x, y, eps, steps, step, start, sign=1.0):
    """PGD on logits = W x + b with the closed-form input gradient (p − e_y)ᵀ W of the cross-entropy."""
    adv = start
    for _ in range(steps):
        p = F.softmax(adv.flatten(1) @ w.T + b, 1)
        grad = ((p - F.one_hot(y, 3).float()) @ w).view_as(x)
        adv = torch.minimum(torch.maximum(adv + sign * step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return adv


def pgd_reference(model, x, y, eps, steps, step, start):
    """PGD written out: signed steps of the summed cross-entropy's input gradient, projected each step."""
    adv = start
    for _ in range(steps):
        a = adv.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(a), y, reduction="sum"), a)
        adv = torch.minimum(torch.maximum(adv + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return adv


def test_pgd_defaults_are_ten_steps_of_a_quarter_eps_from_a_random_start():
    """The documented defaults (10 steps of 2.5·ε/10, random start, untargeted), through pgd and attack.

    A ReLU network, where gradient signs flip from step to step (on a linear model PGD saturates at a corner of
    the ball and the step count would not show); the images span [0, 1], so starts and steps get clamped.
    """
    model = random_classifier(7)
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 5, (32,))
    for eps in (0.1, 0.5):
        torch.manual_seed(1)
        start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
        expected = pgd_reference(model, x, y, eps, 10, 0.25 * eps, start)
        for run in (pgd, lambda *args: attack("pgd", *args)):
            torch.manual_seed(1)
            torch.testing.assert_close(run(model, x, y, eps), expected)
        # the test can tell: other step counts or sizes end elsewhere
        assert not torch.allclose(pgd_reference(model, x, y, eps, 11, 0.25 * eps, start), expected)
        assert not torch.allclose(pgd_reference(model, x, y, eps, 10, 0.35 * eps, start), expected)


def test_pgd_from_x_itself_targeted_and_at_eps_1():
    model, w, b = linear_model(1)
    x, y = torch.rand(16, 1, 3, 4), torch.randint(0, 3, (16,))
    for eps, steps, step in ((0.2, 3, 0.07), (1.0, 2, 0.3)):
        expected = pgd_by_hand(w, b, x, y, eps, steps, step, x)
        torch.testing.assert_close(
            pgd(model, x, y, eps, steps=steps, step_size=step, random_start=False), expected
        )
        targeted = pgd_by_hand(w, b, x, y, eps, steps, step, x, sign=-1.0)
        torch.testing.assert_close(
            pgd(model, x, y, eps, steps=steps, step_size=step, random_start=False, targeted=True), targeted
        )
    torch.manual_seed(5)
    targeted = attack("pgd", model, x, y, 0.2, targeted=True, steps=3)
    torch.manual_seed(5)
    torch.testing.assert_close(targeted, pgd(model, x, y, 0.2, steps=3, targeted=True))
    torch.manual_seed(5)
    assert not torch.equal(targeted, pgd(model, x, y, 0.2, steps=3))
    assert torch.equal(pgd(model, x, y, 0.0), x)
    # a random start draws from the global RNG: two seeds, two starts (random_start is on by default)
    torch.manual_seed(3)
    a = pgd(model, x, y, 0.2, steps=1, step_size=0.01)
    torch.manual_seed(4)
    assert not torch.equal(a, pgd(model, x, y, 0.2, steps=1, step_size=0.01))


def test_fgsm_at_eps_1_saturates_and_attack_defaults_to_untargeted():
    model, w, b = linear_model(2)
    x, y = torch.rand(10, 1, 3, 4), torch.randint(0, 3, (10,))
    p = F.softmax(x.flatten(1) @ w.T + b, 1)
    direction = ((p - F.one_hot(y, 3).float()) @ w).sign().view_as(x)
    torch.testing.assert_close(fgsm(model, x, y, 1.0), (x + direction).clamp(0, 1))
    torch.testing.assert_close(attack("fgsm", model, x, y, 0.3), (x + 0.3 * direction).clamp(0, 1))
    torch.testing.assert_close(
        attack("fgsm", model, x, y, 0.3, targeted=True), (x - 0.3 * direction).clamp(0, 1)
    )


def test_attack_refuses_an_unknown_method():
    model, _, _ = linear_model(0)
    choices = ", ".join(a.name for a in methods.ATTACKS)
    with pytest.raises(ValueError, match=rf"^unknown attack 'bogus' \(choose {choices}\)$"):
        attack("bogus", model, torch.rand(2, 1, 3, 4), torch.zeros(2, dtype=torch.long), 0.1)


def test_odin_leaves_pixels_without_gradient_alone_and_takes_any_eps():
    """A pixel the model ignores has gradient 0: sign 0, so it stays put (no 0/0 NaN); ε = 1 is an ε like others."""
    w = torch.tensor(
        [[1.0, 0.0, 2.0], [-1.0, 0.0, 0.5], [0.3, 0.0, -2.0]], dtype=torch.float64
    )  # pixel 1 unused
    b = torch.tensor([0.2, 0.0, -0.1], dtype=torch.float64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 3)).double()
    with torch.no_grad():
        model[1].weight.copy_(w)
        model[1].bias.copy_(b)
    x = torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.9, 0.4], [0.7, 0.1, 0.8]], dtype=torch.float64)
    epsilons = (0.0, 0.01, 1.0)
    grid = odin_grid(model, x.view(3, 1, 3), (2.0,), epsilons)
    for e in epsilons:
        expected = linear_odin_expected(w, b, x, 2.0, e)
        assert torch.isfinite(expected).all()
        torch.testing.assert_close(odin_scores(model, x.view(3, 1, 3), 2.0, e).double(), expected)
        torch.testing.assert_close(grid[(2.0, e)].double(), expected)
    assert not torch.allclose(
        linear_odin_expected(w, b, x, 2.0, 1.0), linear_odin_expected(w, b, x, 2.0, 0.0)
    )


def test_attacks_leave_pixels_without_gradient_alone():
    """A pixel the model ignores has gradient sign 0: FGSM and PGD (from x) must not move it."""
    model, _, _ = linear_model(3)
    with torch.no_grad():
        model[1].weight[:, 5] = 0.0  # pixel (1, 1) of the 3 x 4 image is unused
    x, y = 0.2 + 0.6 * torch.rand(6, 1, 3, 4), torch.randint(0, 3, (6,))
    for adv in (fgsm(model, x, y, 0.1), pgd(model, x, y, 0.1, steps=2, step_size=0.05, random_start=False)):
        assert torch.equal(adv[:, 0, 1, 1], x[:, 0, 1, 1])
        assert (adv - x).abs().amax() == pytest.approx(0.1, abs=1e-6)  # the other pixels do move
