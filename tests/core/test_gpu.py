"""The engine on a CUDA GPU: channels_last convolutions, bf16/fp16, compile, same seed → same numbers."""

from __future__ import annotations

import pytest
import torch

from dla_core.data import Augment, ImageBatches, ImageSet
from dla_core.engine import TrainConfig, evaluate, fit, make_accelerator
from dla_core.models import ModelConfig, build_model
from tests.gpu import needs_gpu

pytestmark = needs_gpu


def blobs(n: int = 512, seed: int = 0) -> ImageSet:
    """Learnable 3×16×16 images: a bright square whose place encodes the class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randint(0, 60, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
    for c in range(4):
        x[y == c, :, 4 * c : 4 * c + 4, 4 * c : 4 * c + 4] = 250
    return ImageSet(x, y, [str(c) for c in range(4)], "blobs")


def cnn(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig("cnn", (3, 16, 16), 4, depth=2, width=16, mean=(0.2,), std=(0.3,)))


@pytest.mark.parametrize("precision", ["no", "bf16", "fp16"])
def test_cnn_trains_channels_last_at_every_precision(precision):
    data = blobs()
    acc = make_accelerator(precision)
    model = cnn()
    result = fit(model, ImageBatches(data, 64, shuffle=True), TrainConfig(epochs=4, lr=3e-3, precision=precision),
                 accelerator=acc)  # fmt: skip
    assert acc.device.type == "cuda" and next(model.parameters()).is_cuda
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    h = result.history
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in h)
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert evaluate(model, ImageBatches(data, 128), accelerator=acc)["accuracy"] > 0.9


def test_same_seed_same_numbers_on_the_gpu():
    data = blobs()
    runs = []
    for _ in range(2):
        r = fit(cnn(), ImageBatches(data, 64, shuffle=True), TrainConfig(epochs=2, seed=4, precision="bf16"),
                accelerator=make_accelerator("bf16"), val=ImageBatches(data, 128))  # fmt: skip
        runs.append([(h["train_loss"], h["val_loss"]) for h in r.history])
    assert runs[0] == runs[1]


def test_compile_on_the_gpu_matches_eager():
    data = blobs()
    histories = []
    for compile_ in (False, True):
        r = fit(cnn(), ImageBatches(data, 64, shuffle=True), TrainConfig(epochs=2, seed=1),
                accelerator=make_accelerator(compile=compile_), val=ImageBatches(data, 128))  # fmt: skip
        histories.append(r.history)
    for eager, comp in zip(*histories, strict=True):
        assert comp["train_loss"] == pytest.approx(eager["train_loss"], abs=1e-2)
        assert comp["val_accuracy"] == pytest.approx(eager["val_accuracy"], abs=0.02)


def test_training_steps_do_not_wait_for_the_gpu():
    """No host-device synchronisation per step: only the loss check every LOG_EVERY steps, the epoch's order and
    crops moved once, and the epoch's end. The model and the images are on the GPU before counting: each
    parameter's and buffer's first copy there is a synchronising copy from pageable memory (on an H200 a first
    version of this test, which counted them, saw 45 for a 60-step epoch)."""
    import warnings

    data = blobs(64 * 60)
    acc = make_accelerator()
    model = cnn().to(acc.device)
    batches = ImageBatches(data, 64, shuffle=True, augment=Augment(crop_padding=2, flip=True)).to(acc.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fit(model, batches, TrainConfig(epochs=1, log_grad_norms=True), accelerator=acc)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "called a synchronizing" in str(w.message)]
    assert len(syncs) < 15, len(syncs)  # 60 steps: ≥ 60 if every step waited


def test_cuda_graph_step_matches_eager():
    """--compile cuda-graph: the forward/backward replayed from CUDA graphs train to eager's numbers (float
    rounding apart), batch-norm statistics included, and the model's state_dict keys are its own."""
    data = blobs()
    runs = []
    for mode in (None, "cuda-graph"):
        r = fit(cnn(), ImageBatches(data, 64, shuffle=True, augment=Augment(crop_padding=2, flip=True)),
                TrainConfig(epochs=2, seed=3, optimizer="sgd", lr=0.05, momentum=0.9, log_grad_norms=True),
                accelerator=make_accelerator(compile=mode), val=ImageBatches(data, 100))  # fmt: skip
        runs.append(r)
    eager, graphed = runs
    for a, b in zip(eager.history, graphed.history, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-3)
    sa, sb = eager.model.state_dict(), graphed.model.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sb[k].float(), sa[k].float(), rtol=1e-3, atol=1e-4, msg=k)


def test_fused_optimizers_on_the_gpu():
    from dla_core.engine import make_optimizer

    p = [torch.nn.Parameter(torch.randn(3, device="cuda"))]
    for name in ("sgd", "adam", "adamw"):
        assert make_optimizer(p, TrainConfig(optimizer=name)).defaults["fused"] is True


def test_padded_evaluation_under_reduce_overhead_matches_eager():
    """The CUDA-graph compile mode pads the last evaluation batch (100 = 64 + 36) and gets eager's numbers."""
    data = blobs(100)
    model = cnn().cuda().to(memory_format=torch.channels_last)
    eager = evaluate(model, ImageBatches(data, 64), accelerator=make_accelerator(), per_example=True)
    acc = make_accelerator(compile="reduce-overhead")
    assert acc.static_shapes
    padded = evaluate(acc.place(cnn()), ImageBatches(data, 64), accelerator=acc, per_example=True)
    assert padded["loss"] == pytest.approx(eager["loss"], rel=1e-3)
    assert padded["correct"].tolist() == eager["correct"].tolist()
