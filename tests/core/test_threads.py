"""The thread policy: one thread for small work, every core for large work; --threads and OMP_NUM_THREADS win."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dla_core.errors import DlaError
from dla_core.models import ModelConfig, build_model
from dla_core.threads import (
    AUTO_THRESHOLD_FLOPS,
    ThreadChoice,
    apply_threads,
    choose_threads,
    forward_macs,
    step_flops,
)


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def flops_of(cfg: ModelConfig, batch: int) -> float:
    model = build_model(cfg)
    return step_flops(model, batch, lambda: model(torch.zeros(1, *cfg.in_shape)))


def test_forward_macs_weigh_a_convolution_by_its_output_pixels():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 10 * 10, 5))
    macs = forward_macs(model, lambda: model(torch.zeros(1, 3, 10, 10)))
    assert macs == 8 * 3 * 3 * 3 * (10 * 10) + 800 * 5
    # a Linear over a sequence counts once per token
    seq = nn.Linear(4, 6)
    assert forward_macs(seq, lambda: seq(torch.zeros(1, 7, 4))) == 4 * 6 * 7
    # a strided convolution: fewer output pixels
    strided = nn.Conv2d(2, 4, 3, stride=2, padding=1)
    assert forward_macs(strided, lambda: strided(torch.zeros(1, 2, 8, 8))) == 4 * 2 * 9 * 16


def test_step_flops_count_forward_and_backward():
    model = nn.Linear(10, 3)
    one = lambda: model(torch.zeros(1, 10))  # noqa: E731
    assert step_flops(model, 4, one) == 2 * 30 * 4 * 3
    assert step_flops(model, 4, one, training=False) == 2 * 30 * 4
    assert step_flops(model, 4) == 2 * 33 * 4 * 3  # no example: the parameter count stands in


def test_the_probe_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    stats = model[1].running_mean.clone()
    forward_macs(model, lambda: model(torch.randn(1, 4) * 100))
    assert model.training and torch.equal(model[1].running_mean, stats)


def test_small_mlp_on_digits_gets_one_thread():
    flops = flops_of(ModelConfig("mlp", (1, 8, 8), 10, depth=4, width=64), 64)
    assert flops < AUTO_THRESHOLD_FLOPS
    choice = choose_threads(None, flops, env={}, cores=8)
    assert choice.threads == 1 and choice.why.startswith("auto: ")


def test_large_convolutions_get_every_core():
    flops = flops_of(ModelConfig("cnn", (3, 32, 32), 10, depth=5, width=64), 128)
    assert flops > 1e11  # ~0.4 GMAC per image, forward + backward, 128 images
    for cores in (2, 8):
        choice = choose_threads(None, flops, env={}, cores=cores)
        assert choice.threads == cores and choice.why.startswith("auto: ") and f"{cores} cores" in choice.why
    assert choose_threads(None, flops, env={}, cores=1).threads == 1


def test_the_same_parameters_weigh_more_on_larger_images():
    small = flops_of(ModelConfig("cnn", (3, 8, 8), 10, depth=2, width=16), 64)
    large = flops_of(ModelConfig("cnn", (3, 32, 32), 10, depth=2, width=16), 64)
    assert large > 10 * small


def test_omp_num_threads_and_the_option_win():
    never = lambda: pytest.fail("no estimate when the count is given")  # noqa: E731
    omp = choose_threads(None, never, env={"OMP_NUM_THREADS": "3"}, cores=8)
    assert omp == ThreadChoice(3, "OMP_NUM_THREADS", set_by_us=False)
    assert choose_threads(2, never, env={"OMP_NUM_THREADS": "1"}) == ThreadChoice(2, "--threads")
    assert choose_threads(5, 1e15, env={}, cores=2).threads == 5  # the option even beats a large workload
    assert choose_threads(None, 1e15, env={"OMP_NUM_THREADS": "1"}, cores=2).threads == 1
    assert choose_threads(None, 1e15, env={"OMP_NUM_THREADS": " "}, cores=2).threads == 2  # blank: unset


@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_bad_thread_counts_are_errors(value):
    with pytest.raises(DlaError, match="--threads"):
        choose_threads(value, 0.0, env={})


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_bad_omp_num_threads_is_an_error(value):
    with pytest.raises(DlaError, match="OMP_NUM_THREADS"):
        choose_threads(None, 0.0, env={"OMP_NUM_THREADS": value})


def test_apply_sets_torch_threads_but_leaves_omp_to_torch(keep_threads):
    torch.set_num_threads(1)
    apply_threads(ThreadChoice(2, "--threads"))
    assert torch.get_num_threads() == 2
    apply_threads(ThreadChoice(1, "OMP_NUM_THREADS", set_by_us=False))
    assert torch.get_num_threads() == 2
    assert ThreadChoice(2, "--threads").record() == {"threads": 2, "why": "--threads"}


def test_runtime_refuses_a_bad_thread_count():
    from dla_core.config import Runtime

    assert Runtime(threads=3).threads == 3 and Runtime().threads is None
    with pytest.raises(DlaError, match="--threads"):
        Runtime(threads=0)


class TripleBatches:
    """(x, y, x_ood) batches, as lab4's outlier exposure serves them: more than classification_step unpacks."""

    batch_size = 128

    def iterate(self, epoch: int, **_):
        yield torch.zeros(128, 3, 32, 32), torch.zeros(128, dtype=torch.long), torch.zeros(128, 3, 32, 32)


def test_training_threads_measure_the_model_on_any_tuple_batch(monkeypatch):
    from dla_core.config import Runtime
    from dla_core.engine import classification_step
    from dla_core.recipe import training_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("dla_core.threads.available_cores", lambda: 4)
    big = build_model(ModelConfig("cnn", (3, 32, 32), 10, depth=5, width=64))
    choice = training_threads(big, TripleBatches(), classification_step, Runtime())
    assert choice.threads == 4 and choice.why.startswith("auto: ")
    small = build_model(ModelConfig("cnn", (3, 32, 32), 10, depth=1, width=2))
    assert training_threads(small, TripleBatches(), classification_step, Runtime()).threads == 1
    assert training_threads(big, TripleBatches(), classification_step, Runtime(threads=3)).threads == 3
