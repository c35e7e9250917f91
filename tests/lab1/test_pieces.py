"""Unit checks of lab1's pieces: blocks, parameter counts, the distillation loss, freezing, tables."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from dla_core.data import ImageBatches, fake_data
from dla_core.engine import TrainConfig, classification_step, fit, make_accelerator
from dla_core.errors import DlaError
from dla_core.models import (
    BasicBlock,
    ModelConfig,
    ResidualDense,
    build_model,
    count_parameters,
    load_model,
    save_model,
    weight_layers,
)
from lab1_resnet import tables
from lab1_resnet.distill import DistillationStep, distillation_loss
from lab1_resnet.transfer import STRATEGIES, PartlyFrozen, with_new_head


def test_residual_dense_block_with_zeroed_branch_is_the_identity():
    block = ResidualDense(16)
    nn.init.zeros_(block.fc2.weight)
    nn.init.zeros_(block.fc2.bias)
    x = torch.randn(5, 16)
    assert torch.equal(block(x), x)


def test_residual_conv_block_with_zeroed_branch_is_the_identity_on_nonnegative_inputs():
    block = BasicBlock(8, 8, stride=1, residual=True).eval()
    nn.init.zeros_(block.bn2.weight)  # the branch's last BatchNorm outputs its bias, 0
    x = torch.rand(2, 8, 6, 6)  # what a block sees after the ReLU of the previous one
    assert torch.allclose(block(x), x)
    plain = BasicBlock(8, 8, stride=1, residual=False).eval()
    nn.init.zeros_(plain.bn2.weight)
    assert torch.equal(plain(x), torch.zeros_like(x))  # without the skip, the signal is gone


def test_residual_conv_block_with_zeroed_branch_subsamples_and_zero_pads_where_the_shape_changes():
    block = BasicBlock(
        4, 8, stride=2, residual=True
    ).eval()  # the paper's option A: no parameters in the skip
    nn.init.zeros_(block.bn2.weight)
    x = torch.rand(2, 4, 7, 7)
    expected = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 4, 4, 4)], dim=1)
    assert torch.allclose(block(x), expected)
    assert count_parameters(block) == count_parameters(BasicBlock(4, 8, stride=2, residual=False))


def _mlp_count(n_in: int, width: int, depth: int, classes: int, layers_per_block: int) -> int:
    linear = lambda i, o: i * o + o  # noqa: E731
    return linear(n_in, width) + depth * layers_per_block * linear(width, width) + linear(width, classes)


def _cnn_count(c_in: int, w: int, depth: int, classes: int) -> int:
    stem = c_in * w * 9 + 2 * w  # conv (no bias) + BN
    block = 2 * (w * w * 9 + 2 * w)
    return stem + depth * block + w * classes + classes


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("depth", [1, 3])
def test_parameter_counts_match_a_hand_count(residual, depth):
    mlp = build_model(ModelConfig("mlp", (1, 8, 8), 10, residual=residual, depth=depth, width=32))
    assert count_parameters(mlp) == _mlp_count(64, 32, depth, 10, layers_per_block=2)
    cnn = build_model(ModelConfig("cnn", (3, 32, 32), 10, residual=residual, depth=depth, width=8))
    assert count_parameters(cnn) == _cnn_count(3, 8, depth, 10)
    single = ModelConfig("mlp", (1, 8, 8), 10, residual=False, depth=depth, width=32, plain_block="single")
    assert count_parameters(build_model(single)) == _mlp_count(64, 32, depth, 10, layers_per_block=1)
    # the seeds' depth-20 plain MLP had half the weight layers of the residual one it was compared with
    assert _mlp_count(64, 64, 20, 10, layers_per_block=1) == 88_010
    assert _mlp_count(64, 64, 20, 10, layers_per_block=2) == 171_210


MODELS = [("mlp", (1, 8, 8), 1), ("cnn", (3, 16, 16), 1), ("cnn", (3, 16, 16), 3)]


@pytest.mark.parametrize(("family", "shape", "stages"), MODELS)
@pytest.mark.parametrize("depth", [1, 2, 5, 20])
def test_plain_and_residual_nets_of_equal_depth_have_equal_layers_and_parameters(
    family, shape, stages, depth
):
    plain, residual = (
        build_model(ModelConfig(family, shape, 10, residual=r, depth=depth, width=8, stages=stages))
        for r in (False, True)
    )
    assert count_parameters(plain) == count_parameters(residual)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {
        k: v.shape for k, v in residual.state_dict().items()
    }
    assert weight_layers(plain.config) == weight_layers(residual.config) == 2 + 2 * depth * stages


def _without_skips(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The residual net's own layers, in order, with every ``+ skip`` left out (written out by hand)."""
    h = net.stem(net.normalize(x))
    for b in net.blocks:
        if net.config.family == "mlp":
            h = b.fc2(torch.relu(b.fc1(h)))  # residual: h + fc2(relu(fc1(h)))
        else:
            h = torch.relu(b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(h))))))  # residual: relu(… + skip(h))
    return net.head(net.pool(h))


@pytest.mark.parametrize(("family", "shape", "stages"), MODELS)
def test_a_residual_net_without_its_skips_is_the_plain_net(family, shape, stages):
    torch.manual_seed(0)
    residual = build_model(
        ModelConfig(family, shape, 10, residual=True, depth=3, width=8, stages=stages)
    ).eval()
    plain = build_model(
        ModelConfig(family, shape, 10, residual=False, depth=3, width=8, stages=stages)
    ).eval()
    plain.load_state_dict(residual.state_dict())  # identical weights: strict, so no layer is extra or missing
    x = torch.rand(4, *shape)
    assert not torch.allclose(residual(x), plain(x), atol=1e-4)  # the skips matter
    assert torch.allclose(plain(x), _without_skips(residual, x), atol=1e-6)  # … and are the only difference


def test_weight_layers_count_the_paper_way():
    resnet20 = ModelConfig("cnn", (3, 32, 32), 10, depth=3, width=16, stages=3)
    assert weight_layers(resnet20) == 20  # 6n + 2 with n = 3
    single = ModelConfig("mlp", (1, 8, 8), 10, residual=False, depth=20, plain_block="single")
    assert weight_layers(single) == 22 and weight_layers(replace(single, plain_block="double")) == 42


def test_models_saved_before_the_block_options_load_as_they_were(tmp_path):
    """A config without plain_block / shortcut is an older save: one-layer plain blocks, projection skips."""
    old_blocks = {"plain_block": "single", "shortcut": "projection"}
    for cfg in (
        ModelConfig("mlp", (1, 8, 8), 3, residual=False, depth=2, width=8, **old_blocks),
        ModelConfig("cnn", (3, 8, 8), 3, residual=True, depth=1, width=4, stages=2, **old_blocks),
    ):
        model = build_model(cfg).eval()
        old = {k: v for k, v in cfg.to_dict().items() if k not in ("plain_block", "shortcut")}
        meta = {"model_config": json.dumps(old)}
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp_path / "model.safetensors"), metadata=meta)
        again = load_model(tmp_path).eval()
        x = torch.rand(2, *cfg.in_shape)
        assert again.config == cfg and torch.equal(again(x), model(x))
    with pytest.raises(DlaError, match="plain_block"):
        ModelConfig("mlp", (1, 8, 8), 3, plain_block="triple")
    saved = ModelConfig("mlp", (1, 8, 8), 3, residual=False, depth=1)
    save_model(tmp_path / "model.safetensors", build_model(saved), saved)
    assert load_model(tmp_path).config.plain_block == "double"  # a new save keeps the new default


def test_distillation_loss_equals_a_hand_computed_value():
    s = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    t = np.array([[1.0, 2.0, 0.0], [0.5, 0.5, 2.0]])
    y = np.array([0, 2])
    T, alpha = 2.0, 0.3

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    ce = -np.mean(np.log(softmax(s)[np.arange(2), y]))
    p_t, p_s = softmax(t / T), softmax(s / T)
    kl = np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    expected = alpha * ce + (1 - alpha) * T**2 * kl
    got = distillation_loss(torch.tensor(s), torch.tensor(y), torch.tensor(p_t), T, alpha)
    assert math.isclose(got.item(), expected, rel_tol=1e-6)
    # alpha = 1 is plain cross-entropy; a student equal to the teacher has no soft loss
    assert math.isclose(distillation_loss(torch.tensor(s), torch.tensor(y), torch.tensor(p_t), T, 1.0).item(), ce,
                        rel_tol=1e-6)  # fmt: skip
    same = distillation_loss(torch.tensor(t), torch.tensor(y), torch.tensor(p_t), T, 0.0)
    assert abs(same.item()) < 1e-6


class _Acc:
    device = torch.device("cpu")


def test_distillation_step_precomputed_probabilities_match_the_live_teacher():
    torch.manual_seed(0)
    teacher = build_model(ModelConfig("mlp", (1, 8, 8), 4, depth=1, width=16))
    student = build_model(ModelConfig("mlp", (1, 8, 8), 4, depth=1, width=8))
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    live = DistillationStep(teacher, T=3.0, alpha=0.5)
    live.setup(_Acc())
    probs = live.teacher_probs(x)
    pre = DistillationStep(None, T=3.0, alpha=0.5, labels=y, probs=probs)
    pre.setup(_Acc())
    a, b = live(student, (x, y)), pre(student, (x, torch.arange(6)))
    assert torch.allclose(a.loss, b.loss) and torch.equal(a.correct, b.correct) and a.count == 6
    assert not any(p.requires_grad for p in live.teacher.parameters())


def _expected_trainable(model, strategy: str) -> int:
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    head = n(model.head)
    blocks = [n(b) for b in model.blocks]
    return {
        "head": head,
        "freeze-stem": head + sum(blocks),
        "freeze-early": head + sum(blocks[len(blocks) // 2 :]),
        "none": n(model),
    }[strategy]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_freezing_strategies_train_exactly_what_they_say(strategy):
    torch.manual_seed(0)
    source = build_model(ModelConfig("cnn", (3, 8, 8), 10, depth=4, width=4))
    inner = with_new_head(source, 5, {"dataset": "fake"})
    model = PartlyFrozen(inner, strategy)
    trainable = count_parameters(model, trainable_only=True)
    assert trainable == _expected_trainable(inner, strategy)
    if strategy == "head":
        assert trainable == 4 * 5 + 5
    before = {k: v.clone() for k, v in inner.state_dict().items()}
    train, _ = fake_data((3, 8, 8), n_train=32, n_test=8, num_classes=5)
    fit(
        model,
        ImageBatches(train, 16, shuffle=True),
        TrainConfig(epochs=1, lr=0.05),
        accelerator=make_accelerator(),
        step=classification_step,
    )
    after = inner.state_dict()
    frozen = {"head": ["stem.", "blocks."], "freeze-stem": ["stem."], "freeze-early": ["stem.", "blocks.0.", "blocks.1."],
              "none": []}[strategy]  # fmt: skip
    changed = {k for k in before if "num_batches" not in k and not torch.equal(before[k], after[k])}
    for k in before:
        if "num_batches" in k:
            continue
        if any(k.startswith(p) for p in frozen):
            assert k not in changed, f"{strategy}: frozen {k} changed (weights or BatchNorm statistics)"
    assert any(k.startswith("head.") for k in changed)
    if strategy == "none":
        assert any(k.startswith("stem.") for k in changed)
    assert inner.config.num_classes == 5 and inner.head.out_features == 5


def test_tables_mean_std_and_markdown(tmp_path):
    assert tables.mean_std([0.5]) == "0.500" and tables.mean_std([0.5, 0.5]) == "0.500"  # no "± 0"
    assert tables.mean_std([0.9, 1.0]) == f"0.950 ± {np.std([0.9, 1.0], ddof=1):.2g}"
    text = tables.write_tables(
        [{"a": "x", "n": 1200, "acc": 0.5}], {"a": "name", "n": "params", "acc": "acc"}, tmp_path
    )
    assert text.splitlines()[0] == "| name | params | acc |"
    assert "| x | 1,200 | 0.500 |" in text
    assert (tmp_path / "table.csv").read_text().splitlines() == ["a,n,acc", "x,1200,0.5"]


def test_the_cli_offers_the_strategies_transfer_freezes_and_imports_no_torch():
    import subprocess
    import sys

    from lab1_resnet import choices
    from lab1_resnet.cli import group
    from lab1_resnet.transfer import FROZEN_PARTS

    assert tuple(FROZEN_PARTS) == choices.STRATEGIES == STRATEGIES
    option = next(p for p in group.commands["transfer"].params if p.name == "strategies")
    assert option.default == ",".join(FROZEN_PARTS)
    heavy = "import sys, lab1_resnet.cli; print(*sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy'}))"
    r = subprocess.run([sys.executable, "-c", heavy], capture_output=True, text=True, check=True)
    assert r.stdout.split() == []  # the CLI starts without torch: it takes its choices from a light module


def test_experiment_configs_hold_no_runtime_options():
    from dataclasses import fields

    from dla_core.config import RUNTIME_OPTIONS
    from lab1_resnet.distill import DistillConfig
    from lab1_resnet.study import DepthStudy
    from lab1_resnet.train import TrainRun
    from lab1_resnet.transfer import TransferConfig

    for cls in (TrainRun, DepthStudy, TransferConfig, DistillConfig):
        assert not {f.name for f in fields(cls)} & RUNTIME_OPTIONS, cls.__name__
