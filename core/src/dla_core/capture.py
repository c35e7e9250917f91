"""The training step's forward and backward replayed from CUDA graphs (``--compile cuda-graph``).

A CIFAR-sized CNN step launches about a thousand small kernels; on a fast GPU the host issuing them is the
bottleneck, not the arithmetic. ``torch.cuda.make_graphed_callables`` records the model's forward and backward
once and replays each as one launch. The loss, the optimizer (fused: one launch) and the metrics stay eager, so
the loop is unchanged.

Capture runs on the first training call, with that batch's shape; later training calls of the same shape and
dtype replay the graphs, any other (evaluation, a last short batch) runs the model eagerly, as do models called
with keyword arguments (lab2's transformers: a warning says so). The capture's warm-up
passes would move batch-norm's running statistics: they are put back, so the numbers are eager's up to float
rounding (dropout masks come from the graph's own random stream: same distribution, other draws).
Gradient accumulation is refused (``fit``): the graph's gradient buffers are reused by the next replay.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn as nn

log = logging.getLogger(__name__)


class CapturedTraining(nn.Module):
    """``model`` whose training forward/backward replay CUDA graphs captured on the first training call.

    Wraps the (single-process) model ``fit`` trains; checkpoints keep reading the model itself, whose
    state_dict keys do not change."""

    WARMUP = 3  # eager passes on a side stream before capture (cuDNN picks its algorithms there)

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.signature: tuple | None = None  # shapes and dtypes of the captured call's inputs
        self.eager: Any = None  # the model's own forward, for calls the graphs do not fit
        self.warned = False

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.training or kwargs or not all(isinstance(a, torch.Tensor) for a in args):
            if self.training and not self.warned:
                log.warning(
                    "--compile cuda-graph: this model takes keyword or non-tensor arguments; it runs eagerly"
                )
                self.warned = True
            return (self.eager or self.model)(*args, **kwargs)
        signature = tuple((a.shape, a.dtype, a.device) for a in args)
        if self.signature is None:
            self._capture(args)
            self.signature = signature
        if signature != self.signature:
            return self.eager(*args)
        return self.model(*args)  # make_graphed_callables' forward: replays in training mode

    def release(self) -> None:
        """Give the model its own forward back (``fit`` calls this at its end): the graphs hold static copies of
        the inputs, and a later ``fit`` of the same model captures afresh."""
        if self.eager is not None:
            self.model.__dict__.pop("forward", None)  # make_graphed_callables' per-instance forward
            if self.model.forward != self.eager:
                self.model.forward = self.eager  # the model had a per-instance forward of its own
            self.eager, self.signature = None, None

    def _capture(self, args: tuple[torch.Tensor, ...]) -> None:
        model = self.model
        kept = [(b, b.detach().clone()) for b in model.buffers()]  # batch-norm statistics, counters
        self.eager = model.forward
        torch.cuda.make_graphed_callables(model, args, num_warmup_iters=self.WARMUP)
        with torch.no_grad():
            for buffer, before in kept:
                buffer.copy_(before)
