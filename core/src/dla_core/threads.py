"""How many CPU threads torch uses for one piece of work: one for small work, every core for large work.

Torch's default (one intra-op thread per core) costs small models dearly: a digits MLP's matrices are too small
to split, so the threads only add synchronisation, and when another process keeps a core busy every parallel
region waits for a thread that is not running (a 0.3 s epoch becomes 3–9 s on a 2-core machine). Large
convolutions and transformers do gain from every core. So the choice follows the work's size:

    choice = choose_threads(rt.threads, step_flops(model, batch_size, probe))
    apply_threads(choice)        # torch.set_num_threads, unless OMP_NUM_THREADS already decided
    run.update_metrics(threads=choice.record())

Order of precedence: ``--threads N`` (``Runtime.threads``), then ``OMP_NUM_THREADS`` (torch read it at start-up;
the policy never overrides it), then the estimate: FLOPs of one step, counted as 2 × multiply-accumulates of one
example's forward pass × batch size (× 3 when training: the backward costs about twice the forward). The
multiply-accumulates are those of the Linear and convolution layers, measured with hooks during one forward pass
on one example (a convolution weighs by its output's spatial size, a Linear in a transformer by the sequence
length); without an example, the parameter count stands in.

The thread count is process-wide (``torch.set_num_threads``) and changes the order of float reductions on the
CPU: a run resumed with another ``--threads`` continues equal up to float reassociation, not bit for bit.
No torch import at module level: the CLI modules may import this at start-up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dla_core.errors import DlaError

if TYPE_CHECKING:
    import torch.nn as nn

# Work per step (FLOPs) from which every core is used. Measured with `python bench/bench_threads.py --crossover`
# on the project's 2-core AMD EPYC machine (torch 2.15, 2026-11-26, shared with other jobs: load average 4.3),
# median of 5 runs of forward + backward + Adam steps, time per step at 1 thread vs 2 threads:
#   digits MLP depth 30 width 64, batch 64      9.6e7 FLOPs/step   65 ms vs  768 ms (2 threads 0.09× as fast)
#   digits CNN depth 2, 16 channels, batch 128  4.6e8              83 ms vs  435 ms (0.19×)
#   MLP depth 4 width 256 (16×16), batch 128    4.5e8              28 ms vs  308 ms (0.09×)
#   CIFAR CNN depth 1, 16 channels, batch 64    2.0e9             160 ms vs  455 ms (0.35×)
#   MLP depth 4 width 512 (16×16), batch 256    3.4e9             183 ms vs 1057 ms (0.17×)
#   CIFAR CNN depth 2, 32 channels, batch 128   3.0e10           1711 ms vs 2573 ms (0.66×)
# On a busy machine a second thread loses at every size measured, least for large convolutions (the loss shrinks
# as the work per step grows); a quiet moment to measure the gain never came on this shared machine. The issue's
# quiet numbers: two threads gain nothing on the digits MLPs (study 72 s vs 67 s at one thread). 1e9 keeps every
# small model (the digits MLPs and CNNs, ≤ 5e8) at one thread and gives the cores to convolutions on real images
# and to transformers (a DistilBERT step on batch 32 is ~1e12); OMP_NUM_THREADS / --threads override it.
AUTO_THRESHOLD_FLOPS = 1e9


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    why: str  # "--threads", "OMP_NUM_THREADS" or "auto: <estimate>"
    set_by_us: bool = True  # False for OMP_NUM_THREADS: torch took it at start-up, nothing to set

    def record(self) -> dict[str, Any]:
        """What the run folder keeps (metrics.json "threads")."""
        return {"threads": self.threads, "why": self.why}


def available_cores() -> int:
    """Cores this process may run on, shared among the processes a launcher started on this machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cores // max(1, local))


def omp_threads(env: Mapping[str, str] | None = None) -> int | None:
    """OMP_NUM_THREADS as a positive count, or None when unset; a bad value is an error, not a guess."""
    value = (os.environ if env is None else env).get("OMP_NUM_THREADS", "").strip()
    if not value:
        return None
    try:
        n = int(value.split(",")[0])  # OpenMP allows a list (nested levels); torch takes the first
    except ValueError:
        n = 0
    if n < 1:
        raise DlaError(
            f"OMP_NUM_THREADS={value!r}: expected a positive number of threads (or leave it unset)"
        )
    return n


def choose_threads(
    requested: int | None,
    flops: float | Callable[[], float],
    *,
    env: Mapping[str, str] | None = None,
    cores: int | None = None,
) -> ThreadChoice:
    """The thread count for work of ``flops`` per step (a number, or a function called only when the choice
    is automatic): ``requested`` (--threads) wins, then OMP_NUM_THREADS, then one thread below
    ``AUTO_THRESHOLD_FLOPS`` and every available core from it on."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise DlaError(f"--threads: expected a positive number of threads, got {requested!r}")
        return ThreadChoice(requested, "--threads")
    omp = omp_threads(env)
    if omp is not None:
        return ThreadChoice(omp, "OMP_NUM_THREADS", set_by_us=False)
    work = flops() if callable(flops) else flops
    n = cores if cores is not None else available_cores()
    if work < AUTO_THRESHOLD_FLOPS:
        return ThreadChoice(1, f"auto: {work:.2g} FLOPs/step < {AUTO_THRESHOLD_FLOPS:.0e}")
    return ThreadChoice(n, f"auto: {work:.2g} FLOPs/step >= {AUTO_THRESHOLD_FLOPS:.0e}, {n} cores")


def apply_threads(choice: ThreadChoice) -> ThreadChoice:
    """Make ``choice`` torch's intra-op thread count (for the whole process); returns it."""
    import torch

    if choice.set_by_us and torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    return choice


#### The estimate ####


def forward_macs(model: nn.Module, forward: Callable[[], Any]) -> int:
    """Multiply-accumulates of the Linear and convolution layers of ``model`` during ``forward()`` (one example's
    forward pass): each layer's weights × the positions it is applied at (a convolution's output pixels, a
    transformer's tokens). Runs under no_grad in eval mode (no batch-norm statistics move) and restores the mode."""
    import torch
    import torch.nn as nn

    total = 0

    def count(module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        if not isinstance(output, torch.Tensor) or output.ndim == 0:
            return
        channels = output.shape[1] if isinstance(module, nn.modules.conv._ConvNd) else output.shape[-1]
        total += module.weight.numel() * (output.numel() // max(1, channels))

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    hooks = [m.register_forward_hook(count) for m in layers]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            forward()
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


def first_example(batch: Any) -> Any:
    """The first example of a batch, still batched (a tensor's [:1]; tuples, lists and dicts item by item)."""
    import torch

    if isinstance(batch, torch.Tensor):
        return batch[:1] if batch.ndim else batch
    if isinstance(batch, Mapping):
        return {k: first_example(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(first_example(v) for v in batch)
    return batch


def step_flops(
    model: nn.Module, batch_size: int, forward: Callable[[], Any] | None = None, *, training: bool = True
) -> float:
    """FLOPs of one step on ``batch_size`` examples: 2 × multiply-accumulates per example (``forward_macs`` of
    ``forward``, one example's forward pass; the parameter count without one) × batch size, × 3 when training."""
    macs = forward_macs(model, forward) if forward is not None else sum(p.numel() for p in model.parameters())
    return 2.0 * macs * batch_size * (3 if training else 1)


def use_threads(
    requested: int | None,
    model: nn.Module,
    batch_size: int,
    forward: Callable[[], Any] | None = None,
    *,
    training: bool,
) -> ThreadChoice:
    """Choose and apply the threads for ``model`` on batches of ``batch_size`` (``forward``: one example's forward
    pass, run only when the choice is automatic); returns the choice, for the run folder."""
    return apply_threads(
        choose_threads(requested, lambda: step_flops(model, batch_size, forward, training=training))
    )
