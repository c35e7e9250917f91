"""Standard AutoAttack's new pieces by value: the targeted DLR loss and APGD-T (it drives the target's logit up, one
run per target, the most likely wrong classes, only on the images still robust), FAB's L∞ projection against an
independent bisection and FAB's minimal perturbation on a linear model (where the boundary is known exactly), and
autoattack's versions running each stage only on the images the earlier ones did not fool."""

from __future__ import annotations

import importlib
import itertools

import pytest
import torch
import torch.nn as nn

from lab4_ood import attacks
from lab4_ood.attacks import attack
from lab4_ood.attacks.apgd_targeted import dlr_targeted_each
from lab4_ood.attacks.fab import project_linf
from lab4_ood.methods import AUTOATTACK_VERSIONS

# the modules (the package's names apgd, fab and autoattack are the attack functions)
apgd_module, apgd_targeted, fab, autoattack_module = (
    importlib.import_module(f"lab4_ood.attacks.{name}")
    for name in ("apgd", "apgd_targeted", "fab", "autoattack")
)


@pytest.fixture(scope="module")
def digits(digits_mlp, digits04):
    return digits_mlp.eval(), digits04.test.images[:120].float() / 255, digits04.test.labels[:120]


def predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def test_targeted_dlr_loss_by_hand():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0, -2.0]])
    # −(z_y − z_t) / (z_π1 − ½(z_π3 + z_π4)) = −(3 − 1) / (3 − ½(0 − 1))
    assert dlr_targeted_each(z, torch.tensor([0]), torch.tensor([1])).item() == pytest.approx(-2 / 3.5)
    assert dlr_targeted_each(z, torch.tensor([0]), torch.tensor([4])).item() == pytest.approx(-5 / 3.5)
    # it rises as the target's logit rises, and is blind to the logits' shift and scale
    up = z.clone()
    up[0, 4] += 1.0
    assert dlr_targeted_each(up, torch.tensor([0]), torch.tensor([4])) > dlr_targeted_each(
        z, torch.tensor([0]), torch.tensor([4])
    )
    assert dlr_targeted_each(7 * z + 5, torch.tensor([0]), torch.tensor([1])).item() == pytest.approx(
        -2 / 3.5
    )
    with pytest.raises(ValueError, match="at least 4 classes"):
        dlr_targeted_each(z[:, :3], torch.tensor([0]), torch.tensor([1]))


def test_apgd_t_drives_the_target_logit_up(digits):
    model, x, y = digits
    with torch.no_grad():
        clean = model(x)
    right = clean.argmax(1) == y
    target = clean.sort(dim=1)[1][:, -2]  # with one target: the most likely wrong class
    adv = attack("apgd-t", model, x, y, 0.1, steps=10, n_targets=1)
    with torch.no_grad():
        logits = model(adv)
    rows = torch.arange(len(y))
    gap = lambda z: z[rows, target] - z[rows, y]  # noqa: E731
    fooled = (logits.argmax(1) != y) & right
    assert fooled[right].float().mean() > 0.2  # it fools a good share
    assert (gap(logits) > gap(clean))[fooled].all()  # each fooled image: the target gained on the true class
    assert (logits.argmax(1)[fooled] == target[fooled]).float().mean() > 0.9  # … and mostly became the target
    assert torch.equal(adv[~right], x[~right]) and (adv - x).abs().max() <= 0.1 + 1e-6


def spy_runs(monkeypatch, module, name, record):
    real = getattr(module, name)

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        record(args, out)
        return out

    monkeypatch.setattr(module, name, spy)


def test_apgd_t_and_fab_t_attack_each_likely_wrong_class_in_turn(digits, monkeypatch):
    """9 targets asked, 5 classes: 4 runs, toward the 2nd … 5th largest clean logit."""
    model, x, y = digits
    right = predict(model, x) == y
    with torch.no_grad():
        ranked = model(x[right]).sort(dim=1)[1]
    seen = []
    spy_runs(
        monkeypatch, apgd_targeted, "_apgd_run", lambda args, out: seen.append(args[5].keywords["target"])
    )
    spy_runs(monkeypatch, fab, "_fab_run", lambda args, out: seen.append(args[5]))
    eps = 1e-4  # fools nothing: every target runs on every image classified right
    for method in ("apgd-t", "fab-t"):
        seen.clear()
        attack(method, model, x, y, eps, steps=2, n_targets=9)
        assert len(seen) == 4, method
        for rank, target in zip(range(2, 6), seen, strict=True):
            assert torch.equal(target, ranked[:, -rank]), (method, rank)
        seen.clear()
        attack(method, model, x, y, eps, steps=2, n_targets=2)
        assert len(seen) == 2, method


def test_each_target_runs_only_on_the_images_still_robust(digits, monkeypatch):
    model, x, y = digits
    sizes = {"apgd-t": [], "fab-t": []}
    spy_runs(
        monkeypatch, apgd_targeted, "_apgd_run", lambda a, out: sizes["apgd-t"].append((len(a[1]), out[0]))
    )

    def fab_record(args, best):
        fooled = (predict(model, best) != args[2]) & ((best - args[1]).flatten(1).abs().amax(1) <= args[3])
        sizes["fab-t"].append((len(args[1]), ~fooled))

    spy_runs(monkeypatch, fab, "_fab_run", fab_record)
    for method in sizes:
        adv = attack(method, model, x, y, 0.08, steps=5, n_targets=4)
        runs = sizes[method]
        assert len(runs) == 4 and runs[0][0] == int((predict(model, x) == y).sum())
        for (_, still), (n_next, _) in itertools.pairwise(runs):
            assert n_next == int(still.sum()), method  # the next target gets exactly those left
        assert runs[-1][0] < runs[0][0], method  # and some were fooled on the way
        assert int((predict(model, adv) == y).sum()) == int(runs[-1][1].sum()), method


def brute_lambda(t, w, b):
    """The smallest λ with ⟨w, u(λ)⟩ = b, u(λ) moving each coordinate by λ toward b's side within [0, 1], found by
    bisection on the monotone ⟨w, u(λ)⟩ (independent of project_linf's sorting)."""
    side = torch.sign((w * t).sum() - b)
    move = lambda lam: (t - side * torch.sign(w) * lam).clamp(0, 1)  # noqa: E731
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if side * ((w * move(mid)).sum() - b) > 0:
            lo = mid
        else:
            hi = mid
    return hi, move(1.0)


def test_linf_projection_is_the_smallest_step_in_the_box():
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(40, 30, generator=gen, dtype=torch.float64)
    w = torch.randn(40, 30, generator=gen, dtype=torch.float64)
    w[::5, :4] = 0  # coordinates the hyperplane ignores stay
    reach = (w * torch.rand(40, 30, generator=gen, dtype=torch.float64)).sum(
        1
    )  # ⟨w, ·⟩ of a point in the box
    b = torch.where(torch.arange(40) % 4 == 0, reach + 100 * torch.sign(reach - (w * t).sum(1)), reach)
    d = project_linf(t, w, b)
    for i in range(40):
        lam, corner = brute_lambda(t[i], w[i], b[i])
        assert ((t[i] + d[i]) >= -1e-9).all() and ((t[i] + d[i]) <= 1 + 1e-9).all()
        assert (d[i][w[i] == 0] == 0).all()
        if i % 4:  # reachable: on the hyperplane, with the smallest L∞ step
            assert (w[i] * (t[i] + d[i])).sum().item() == pytest.approx(b[i].item(), abs=1e-6)
            assert d[i].abs().max().item() == pytest.approx(lam, abs=1e-6)
        else:  # out of reach: every coordinate as far toward it as the box allows
            assert torch.allclose(t[i] + d[i], torch.where(w[i] == 0, t[i], corner))


def test_fab_finds_the_nearest_boundary_of_a_linear_model_where_a_fixed_eps_attack_overshoots():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5)).eval()
    x = 0.45 + 0.1 * torch.rand(30, 1, 8, 8)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    W = model[1].weight.detach()
    # the exact L∞ distance to the nearest boundary (the box [0, 1] is far): min_k (z_y − z_k) / ‖w_y − w_k‖₁
    gaps = (z.gather(1, y[:, None]) - z) / (W[y][:, None, :] - W[None]).abs().sum(-1)
    gaps[torch.arange(30), y] = float("inf")
    nearest = gaps.min(1)[0]
    assert (nearest < 0.3).all()
    adv = attack("fab", model, x, y, 1.0, steps=20)
    found = (adv - x).flatten(1).abs().amax(1)
    assert (predict(model, adv) != y).all()
    assert (found >= nearest - 1e-5).all() and (found <= nearest * 1.02).all(), (found / nearest).max()
    # step by step: the first lands η = 1.05 beyond the boundary (α mixes two equal points); the second starts
    # from x + β·1.05·d, projects onto the boundary 0.055·δ away, and mixes with x's projection at α = a/(a + δ)
    one = (attack("fab", model, x, y, 1.0, steps=1) - x).flatten(1).abs().amax(1)
    assert torch.allclose(one, 1.05 * nearest, rtol=1e-3)
    back, a = 0.9 * 1.05, 1 - 0.9 * 1.05
    alpha = a / (a + 1)
    two = (attack("fab", model, x, y, 1.0, steps=2) - x).flatten(1).abs().amax(1)
    assert torch.allclose(two, ((back + 1.05 * a) * (1 - alpha) + 1.05 * alpha) * nearest, rtol=1e-3)
    # APGD at a radius twice the nearest boundary fools too, but its step fills the whole ε-ball
    apgd_adv = attack("apgd", model, x, y, 2 * nearest.max().item(), steps=10)
    assert (predict(model, apgd_adv) != y).all()
    assert ((apgd_adv - x).flatten(1).abs().amax(1) > 1.5 * found).all()
    # at a radius just under the nearest boundary, no image can be fooled: FAB returns x for all
    assert torch.equal(attack("fab", model, x, y, 0.99 * nearest.min().item(), steps=20), x)


@pytest.mark.parametrize("version", ["standard", "plus", "rand"])
def test_each_stage_runs_only_on_the_images_still_robust(digits, monkeypatch, version):
    model, x, y = digits
    stages = []
    real = autoattack_module.attack

    def spy(name, model_, x_, y_, eps, **options):
        adv = real(name, model_, x_, y_, eps, **options)
        stages.append((name, x_.clone(), predict(model, adv) == y_))
        return adv

    monkeypatch.setattr(autoattack_module, "attack", spy)
    adv = attacks.autoattack(model, x, y, 0.06, version=version, steps=3, n_queries=30)
    names = [name for name, _ in AUTOATTACK_VERSIONS[version]]
    assert [s[0] for s in stages] == names[: len(stages)] and len(stages) >= 2
    left = torch.ones(len(x), dtype=torch.bool)
    for name, given, robust in stages:
        assert torch.equal(given, x[left]), name  # exactly the images no earlier stage fooled
        left[left.clone()] = robust
    assert torch.equal(predict(model, adv) == y, left)  # worst case over the stages per image


def test_standard_needs_four_classes_and_rand_three():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="at least 4 classes"):
        attack("apgd-t", model, x, y, 0.1, steps=2)
    assert attack("autoattack", model, x, y, 0.1, version="rand", steps=2).shape == x.shape
    with pytest.raises(ValueError, match="unknown AutoAttack version 'bogus'"):
        attack("autoattack", model, x, y, 0.1, version="bogus")


class Drifting(nn.Module):
    """A randomised model in miniature: its k-th call scales the logits by k, so ∇ of call k is k·∇ of call 1."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.calls * self.linear(x.flatten(1))


def test_eot_averages_the_gradient_over_its_passes():
    torch.manual_seed(0)
    model = Drifting()
    x, y = torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 2])
    _, _, once = apgd_module._loss_and_grad(model, x, y, lambda z, label: z.sum(1))
    model.calls = 0
    losses, _, mean = apgd_module._loss_and_grad(model, x, y, lambda z, label: z.sum(1), eot_iter=4)
    assert model.calls == 4
    assert torch.allclose(mean, once * (1 + 2 + 3 + 4) / 4)  # the mean of the four passes' gradients
    assert torch.allclose(losses, 4 * model.linear(x.flatten(1)).sum(1).detach())  # the last pass's losses
    # APGD passes its eot_iter to every gradient: for 2 steps one clean pass, then 20 per gradient, 3 gradients
    with torch.no_grad():
        y = model(x).argmax(1)
    model.calls = 0
    attacks.apgd_dlr(model, x, y, 0.1, steps=2, eot_iter=20)
    assert model.calls == 1 + 20 * 3
