"""Fewer, larger kernels per step: the optimizers' kernels, one norm launch for the gradient norms, evaluation
padded to one batch size, and the captured step of --compile cuda-graph (its routing; the capture on a GPU is in
test_gpu.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dla_core.capture import CapturedTraining
from dla_core.config import Runtime
from dla_core.data import ImageBatches, ImageSet
from dla_core.engine import (
    IGNORED_LABEL,
    StepOutput,
    TrainConfig,
    _GradNorms,
    classification_step,
    evaluate,
    fit,
    make_accelerator,
    make_optimizer,
    optimizer_kernels,
    pad_batch,
)
from dla_core.errors import DlaError


def test_every_optimizer_is_fused_on_cuda_and_sgd_multi_tensor_on_the_cpu():
    for name in ("sgd", "adam", "adamw"):
        assert optimizer_kernels(name, {"cuda"}) == {"fused": True}, name
    assert optimizer_kernels("sgd", {"cpu"}) == {"foreach": True}
    assert optimizer_kernels("adam", {"cpu"}) == optimizer_kernels("adamw", {"cpu"}) == {"fused": True}
    # parameter groups, parameters split over devices, other devices: torch's default
    assert optimizer_kernels("adam", None) == optimizer_kernels("sgd", {"cpu", "cuda"}) == {}
    assert optimizer_kernels("adam", {"mps"}) == {}


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_the_fast_optimizer_kernels_give_the_plain_loops_numbers(name):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    plain = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    plain.load_state_dict(net.state_dict())
    cfg = TrainConfig(optimizer=name, lr=0.05, momentum=0.9, weight_decay=0.01)
    fast = make_optimizer(net.parameters(), cfg)
    assert fast.defaults["fused" if name != "sgd" else "foreach"] is True
    kind = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    extra = {"momentum": 0.9} if name == "sgd" else {}
    slow = kind(plain.parameters(), lr=0.05, weight_decay=0.01, foreach=False, **extra)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    for model, opt in ((net, fast), (plain, slow)):
        for _ in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b in zip(net.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_norms_take_one_norm_launch_per_step(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    model(torch.randn(5, 4)).square().sum().backward()
    norms = _GradNorms(model, torch.device("cpu"))
    expected = {
        str(i): torch.cat([model[i].weight.grad.flatten(), model[i].bias.grad]).norm().item()
        for i in (0, 2, 4)
    }
    calls = []
    real = torch._foreach_norm
    monkeypatch.setattr(
        torch, "_foreach_norm", lambda ts, *a, **k: calls.append(len(ts)) or real(ts, *a, **k)
    )
    monkeypatch.setattr(torch.linalg, "vector_norm", lambda *a, **k: pytest.fail("a norm per tensor"))
    norms.add()
    assert calls == [6]  # one launch over all six gradients
    assert norms.epoch_means() == pytest.approx(expected, rel=1e-6)


#### Evaluation padded to one batch size ####


def _images(n: int = 100) -> ImageSet:
    g = torch.Generator().manual_seed(3)
    y = torch.arange(n) % 4
    x = torch.randint(0, 255, (n, 1, 6, 6), generator=g, dtype=torch.uint8)
    return ImageSet(x, y, [str(c) for c in range(4)], "tiny")


def test_padded_evaluation_sees_one_batch_size_and_counts_only_real_examples():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 4))
    sizes: list[int] = []

    def step(m, batch):
        sizes.append(len(batch[1]))
        return classification_step(m, batch)

    acc = make_accelerator()
    batches = ImageBatches(_images(), 32)  # 32, 32, 32, 4
    plain = evaluate(model, batches, accelerator=acc, step=step, per_example=True)
    assert sizes == [32, 32, 32, 4]
    sizes.clear()
    padded = evaluate(model, batches, accelerator=acc, step=step, per_example=True, pad=True)
    assert sizes == [32, 32, 32, 32]
    assert padded["loss"] == pytest.approx(plain["loss"], rel=1e-6)
    assert padded["accuracy"] == plain["accuracy"]
    assert padded["correct"].tolist() == plain["correct"].tolist() and len(padded["correct"]) == 100


def test_padding_is_zero_inputs_with_the_ignored_label():
    x, y = pad_batch((torch.ones(2, 3), torch.tensor([1, 0])), 5)
    assert x.shape == (5, 3) and x[2:].abs().sum() == 0 and x[:2].eq(1).all()
    assert y.tolist() == [1, 0, IGNORED_LABEL, IGNORED_LABEL, IGNORED_LABEL]
    out = classification_step(lambda t: torch.zeros(len(t), 2), (x, y))
    assert out.loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())  # the two real rows only
    assert out.correct[2:].sum() == 0  # type: ignore[index]


def test_only_the_cuda_graph_compile_modes_pad_evaluation_by_default():
    assert make_accelerator(compile="reduce-overhead").static_shapes
    assert not make_accelerator().static_shapes and not make_accelerator(compile="default").static_shapes


#### --compile cuda-graph ####


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_cuda_graph_is_refused_without_a_cuda_gpu():
    with pytest.raises(DlaError, match="needs one CUDA GPU"):
        make_accelerator(compile="cuda-graph")
    with pytest.raises(DlaError, match="needs one CUDA GPU"):
        Runtime(compile="cuda-graph").check()
    Runtime(compile="reduce-overhead").check()


def test_cuda_graph_is_refused_on_the_cpu_even_with_a_gpu():
    with pytest.raises(DlaError, match="needs one CUDA GPU"):
        Runtime(compile="cuda-graph", cpu=True).check()


class _Counted(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, x):
        return self.bn(self.fc(x))


def test_the_captured_step_replays_same_shape_training_calls_and_runs_the_rest_eagerly(monkeypatch):
    """Routing, with make_graphed_callables replaced by a stand-in that runs the warm-up passes (moving the
    batch-norm statistics, as the real one does) and marks its replays."""
    replays = []

    def fake_graph(module, args, num_warmup_iters):
        eager = module.forward
        for _ in range(num_warmup_iters + 1):  # warm-up and capture run the forward for real
            eager(*args)

        def replay(*a):
            replays.append(a[0].shape)
            return eager(*a)

        module.forward = replay
        return module

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", fake_graph)
    torch.manual_seed(0)
    model = _Counted()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    captured = CapturedTraining(model).train()
    x = torch.randn(8, 3)
    out = captured(x)
    # the warm-up passes' batch-norm updates are undone: only the step's own call moved the statistics
    reference = _Counted()
    reference.load_state_dict(before)
    torch.testing.assert_close(out, reference.train()(x))
    torch.testing.assert_close(model.bn.running_mean, reference.bn.running_mean)
    assert model.bn.num_batches_tracked.item() == 1
    assert replays == [(8, 3)]
    captured(torch.randn(8, 3))
    captured(torch.randn(5, 3))  # another shape: eager
    captured.eval()(torch.randn(8, 3))  # evaluation: eager
    assert replays == [(8, 3), (8, 3)]
    assert list(model.state_dict()) == list(before)  # checkpoints read the model's own keys
    captured.release()
    assert "forward" not in model.__dict__ and model.forward == _Counted().forward.__func__.__get__(model)
    captured.train()(torch.randn(8, 3))  # a later fit captures afresh
    assert replays == [(8, 3), (8, 3), (8, 3)]


def test_cuda_graph_refuses_gradient_accumulation():
    acc = make_accelerator()
    acc.compile = "cuda-graph"  # as on a GPU (the CPU refuses the mode itself)
    with pytest.raises(DlaError, match="--grad-accum"):
        fit(
            nn.Linear(36, 4),
            ImageBatches(_images(), 32, shuffle=True),
            TrainConfig(grad_accum=2),
            accelerator=acc,
        )


def test_step_output_count_of_a_padded_batch_is_the_real_one():
    """A step that reports the padded size is corrected by evaluate (it knows how many it padded)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 4))

    def step(m, batch):
        out = classification_step(m, batch)
        return StepOutput(out.loss, len(batch[1]), out.correct)

    acc = make_accelerator()
    a = evaluate(model, ImageBatches(_images(70), 64), accelerator=acc, step=step, pad=True)
    b = evaluate(model, ImageBatches(_images(70), 64), accelerator=acc, step=step)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["accuracy"] == b["accuracy"]


class _Keyword(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x=None):
        return self.fc(x)


def test_a_model_called_with_keywords_runs_eagerly_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", lambda *a, **k: pytest.fail("captured"))
    captured = CapturedTraining(_Keyword()).train()
    with caplog.at_level("WARNING", "dla_core.capture"):
        captured(x=torch.randn(4, 3))
        captured(x=torch.randn(4, 3))
    assert [r.message for r in caplog.records] == [
        "--compile cuda-graph: this model takes keyword or non-tensor arguments; it runs eagerly"
    ]
