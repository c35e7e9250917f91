"""TRADES, LogitNorm and the BatchNorm rule of adversarial training: each loss by hand on tiny tensors, the attacks'
passes in eval mode, and `lab4 train --eps` for L2 attacks."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from click.testing import CliRunner

import lab4_ood.training as training
from dla_core.models import ModelConfig, build_model
from lab4_ood.cli import group
from lab4_ood.training import RobustStep, logitnorm_loss, trades_attack, trades_kl


def test_logitnorm_loss_by_hand():
    # ‖(3, 4)‖ = 5 and ‖(0, 1)‖ = 1: logits / (τ‖logits‖) at τ = 0.5 are (1.2, 1.6) and (0, 2)
    logits, y = torch.tensor([[3.0, 4.0], [0.0, 1.0]]), torch.tensor([0, 1])
    first = -1.2 + math.log(math.exp(1.2) + math.exp(1.6))  # CE of class 0
    second = -2.0 + math.log(math.exp(0.0) + math.exp(2.0))  # CE of class 1
    assert logitnorm_loss(logits, y, 0.5).item() == pytest.approx((first + second) / 2, rel=1e-6)
    # τ matters (dropping it, or the norm, gives another number)
    assert logitnorm_loss(logits, y, 1.0).item() != pytest.approx((first + second) / 2, rel=1e-3)


def test_trades_kl_by_hand():
    clean, adv = (
        torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]]),
        torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]]),
    )
    # image 1: p = (1/4, 3/4), q = (1/2, 1/2); image 2: p = (1/2, 1/2), q = (3/4, 1/4)
    kl1 = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    kl2 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert trades_kl(clean, adv).item() == pytest.approx((kl1 + kl2) / 2, rel=1e-6)
    assert trades_kl(clean, clean).item() == pytest.approx(0.0, abs=1e-7)


class Linear(nn.Module):
    """logits = W·flatten(x) + b: gradients in closed form."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.w, self.b = nn.Parameter(w), nn.Parameter(b)

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.b


def linear(seed=0):
    torch.manual_seed(seed)
    return Linear(torch.randn(3, 4), torch.randn(3))


def test_trades_step_is_ce_plus_beta_times_kl(monkeypatch):
    model = linear()
    x, y = 0.3 + 0.4 * torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, 0])
    x_adv = 1 - x[:2]  # the attack's answer, fixed here: the loss is the point
    monkeypatch.setattr(training, "trades_attack", lambda model, x, eps, steps: x_adv)
    out = RobustStep(eps=0.1, fraction=0.5, trades_beta=3.0)(model, (x, y))
    w, b = model.w.detach(), model.b.detach()
    logits, logits_adv = x.flatten(1) @ w.T + b, x_adv.flatten(1) @ w.T + b
    ce = -F.log_softmax(logits, 1)[torch.arange(4), y].mean()
    p, q = F.softmax(logits[:2], 1), F.softmax(logits_adv, 1)
    kl = (p * (p.log() - q.log())).sum(1).mean()
    assert out.loss.item() == pytest.approx((ce + 3.0 * kl).item(), rel=1e-6)
    assert kl.item() > 0.01  # so β is seen
    # LogitNorm replaces CE in the natural term
    ln = RobustStep(eps=0.1, fraction=0.5, trades_beta=3.0, logitnorm_tau=0.5)(model, (x, y))
    z = logits / (logits.norm(dim=1, keepdim=True) + 1e-7) / 0.5
    expected = -F.log_softmax(z, 1)[torch.arange(4), y].mean() + 3.0 * kl
    assert ln.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_trades_attack_is_pgd_on_the_kl_term_from_a_small_gaussian_start():
    model = linear(1)
    x = 0.3 + 0.4 * torch.rand(5, 1, 2, 2)  # away from 0 and 1: no clamping in one step of ε = 0.1
    eps, steps = 0.1, 1
    torch.manual_seed(7)
    start = x + 0.001 * torch.randn_like(x)
    w, b = model.w.detach(), model.b.detach()
    p = F.softmax(x.flatten(1) @ w.T + b, 1)
    q = F.softmax(start.flatten(1) @ w.T + b, 1)
    grad = ((q - p) @ w).view_as(x)  # ∇ₓ' of Σ p log(p / q(x')) for logits W x' + b
    expected = torch.minimum(torch.maximum(start + 2.5 * eps / steps * grad.sign(), x - eps), x + eps)
    torch.manual_seed(7)
    torch.testing.assert_close(trades_attack(model, x, eps, steps), expected.clamp(0, 1))
    assert all(param.grad is None for param in model.parameters())
    # the examples raise the KL more than a random corner of the ball does
    with torch.no_grad():
        attacked = trades_kl(model(x), model(trades_attack(model, x, eps, 5))).item()
        corner = trades_kl(model(x), model(x + eps * torch.randn_like(x).sign())).item()
    assert attacked > corner > 0


def bn_model():
    torch.manual_seed(0)
    cfg = ModelConfig("cnn", (1, 8, 8), 5, depth=1, width=4, stages=1, mean=(0.3,), std=(0.2,))
    return build_model(cfg).train()


def bn_buffers(model):
    return {k: v.clone() for k, v in model.named_buffers() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize(
    "options",
    [{"adversarial": "pgd", "eps": 0.1, "pgd_steps": 3}, {"trades_beta": 2.0, "eps": 0.1, "pgd_steps": 3}],
    ids=["pgd", "trades"],
)
def test_the_attack_runs_in_eval_mode_and_leaves_batchnorm_statistics_alone(options):
    """Only the update's own forward passes (clean, adversarial) move the running statistics: replaying those two
    passes in train mode on a copy gives the very same buffers; the model is back in train mode after."""
    model, replay = bn_model(), bn_model()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 5, (8,))
    step = RobustStep(**options)
    seen_modes = []
    real = step.adversarial_examples

    def spy(model_, x_, y_):
        before = bn_buffers(model_)
        x_adv = real(model_, x_, y_)
        seen_modes.append(model_.training)
        after = bn_buffers(model_)
        assert all(torch.equal(before[k], after[k]) for k in before), "the attack moved the BN statistics"
        spy.x_adv = x_adv
        return x_adv

    # the attack itself in eval mode: record the mode inside it
    inside = []
    real_forward = model.forward
    model.forward = lambda inp: (inside.append(model.training), real_forward(inp))[1]
    step.adversarial_examples = spy
    step(model, (x, y))
    assert model.training and seen_modes == [True]  # restored to train mode after the attack
    assert inside[0] is False and inside[-2:] == [True, True]  # attack passes in eval, the update's in train
    with torch.no_grad():
        replay(x), replay(spy.x_adv)  # the two train-mode passes of the update, and nothing else
    got, expected = bn_buffers(model), bn_buffers(replay)
    assert any("running_mean" in k for k in got)
    for k in expected:
        assert torch.equal(got[k], expected[k]), k


def lab4(*args, ok=True):
    result = CliRunner().invoke(group, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


MLP = ["--dataset", "digits:0-4", "--model", "mlp", "--depth", "1", "--width", "16", "--epochs", "1", "--cpu"]


def test_train_takes_trades_logitnorm_and_l2_radii_above_1(tmp_path):
    lab4("train", *MLP, "--trades-beta", "6", "--eps", "0.1", "--out", tmp_path / "trades")
    lab4("train", *MLP, "--logitnorm-tau", "0.04", "--out", tmp_path / "ln")
    lab4("train", *MLP, "--adversarial", "pgd-l2", "--eps", "2.5", "--out", tmp_path / "l2")
    cfg = {
        n: json.loads((tmp_path / n / "config.json").read_text())["config"] for n in ("trades", "ln", "l2")
    }
    assert cfg["trades"]["trades_beta"] == 6.0 and cfg["ln"]["logitnorm_tau"] == 0.04
    assert cfg["l2"]["eps"] == 2.5 and cfg["l2"]["adversarial"] == "pgd-l2"
    m = json.loads((tmp_path / "trades" / "metrics.json").read_text())
    assert "test_fgsm_accuracy@0.1" in m  # L∞ training reports FGSM at its ε; an L2 radius is not one
    assert not any(
        k.startswith("test_fgsm") for k in json.loads((tmp_path / "l2" / "metrics.json").read_text())
    )
    assert "eval mode" in lab4("train", "--help").output


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--adversarial", "fgsm", "--eps", "1.5"], "an L∞ radius must lie in [0, 1]"),
        (["--adversarial", "pgd-l2", "--eps", "inf"], "inf is not a finite number; expected a number ≥ 0"),
        (["--adversarial", "pgd-l2", "--eps", "nan"], "nan is not a finite number; expected a number ≥ 0"),
        (["--adversarial", "pgd-l2", "--eps", "-1"], "-1 is out of range; expected a number ≥ 0"),
        (["--trades-beta", "1", "--eps", "2"], "an L∞ radius must lie in [0, 1]"),
        (["--trades-beta", "1", "--adversarial", "pgd"], "--trades-beta makes its own adversarial examples"),
        (["--trades-beta", "1", "--eps", "0"], "--trades-beta needs --eps > 0"),
    ],
)
def test_train_radius_errors(argv, message, tmp_path):
    r = lab4("train", *MLP, *argv, "--out", tmp_path / "x", ok=False)
    usage = "expected a number" in message  # a value its option's type refuses: click's usage error, status 2
    assert r.exit_code == (2 if usage else 1) and message in r.output, r.output
    assert r.output.strip().splitlines()[-1].startswith("Error: "), r.output
    assert not (tmp_path / "x").exists()
