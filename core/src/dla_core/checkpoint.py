"""Training checkpoints: what a resume needs (``Checkpoint``), when a loop writes it (``SaveCadence``), and the
file I/O (``save_state`` / ``load_state``: ``torch.save`` written atomically, ``torch.load(weights_only=True)``).

``engine.fit`` writes a ``Checkpoint`` into ``RUN/checkpoint.pt`` and resumes from it; a loop of its own that
leaves a run folder behind (lab1's stacked seeds) writes the same structure, so the folder resumes like any other.
Kept apart from ``runs.py``, which knows the run folder without torch (the CLIs import it at start-up).

    ckpt = Checkpoint.load(run.checkpoint_path)        # None when the run has none yet
    Checkpoint(model=…, optimizer=…, …).save(run.checkpoint_path)
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from dla_core.errors import DlaError
from dla_core.runs import RunDir, atomic_write

T = TypeVar("T")

#### File I/O ####


def save_state(path: Path, state: Mapping[str, Any]) -> None:
    """``state`` (tensors, numbers, strings, lists and dicts of them) to ``path``, atomically, by the main process."""
    atomic_write(Path(path), lambda p: torch.save(dict(state), p))


def load_state(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """What ``save_state`` wrote to ``path``; None when there is no file. Loaded with ``weights_only=True``: a file
    that needs unpickling arbitrary objects is refused, as is a damaged one, in one ``Error:`` line."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a checkpoint we did not write, or a damaged one
        # torch's message may advise weights_only=False, i.e. unpickling arbitrary code: never pass that on
        raise DlaError(
            f"cannot read checkpoint {path} ({type(e).__name__}): it is damaged or was not written by dla; "
            "move it away to start the run over"
        ) from None


#### What a resume needs ####


@dataclass
class Checkpoint:
    """Everything ``engine.fit`` needs to resume a run at (``epoch``, ``batch``) and replay the uninterrupted one:
    the layout of ``checkpoint.pt`` (its keys are these fields)."""

    model: dict[str, torch.Tensor]  # the trained module's state_dict, on the CPU
    optimizer: dict[str, Any]  # the torch optimizer's state_dict
    scheduler: dict[str, Any]  # the learning-rate schedule's state_dict (engine.make_scheduler)
    epoch: int  # epochs finished
    batch: int  # batches of epoch ``epoch`` already trained (0 at the end of an epoch)
    history: list[dict[str, float]]  # one record per finished epoch (train_loss, lr, val_…)
    grad_norms: dict[
        str, list[float]
    ]  # per-module mean gradient norm of each finished epoch ({} when not logged)
    # loss·n, correct, n of epoch ``epoch``'s optimizer steps so far (float64; zeros at the end of an epoch)
    sums: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))
    scaler: dict[str, Any] = field(default_factory=dict)  # fp16's GradScaler state; {} at other precisions
    # the running gradient-norm sums of epoch ``epoch`` ({"total": (modules,), "steps": n}), with log_grad_norms
    grad_norm_sums: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if state["grad_norm_sums"] is None:
            del state["grad_norm_sums"]
        return state

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Checkpoint:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in names})

    def save(self, path: Path) -> None:
        save_state(path, self.to_dict())

    @classmethod
    def load(cls, path: Path, map_location: str | torch.device = "cpu") -> Checkpoint | None:
        state = load_state(path, map_location)
        if state is None:
            return None
        try:
            return cls.from_dict(state)
        except TypeError:  # a dict without the required keys
            raise DlaError(
                f"cannot read checkpoint {path}: it is not a training checkpoint; move it away to start the run over"
            ) from None

    def detached(self) -> Checkpoint:
        """A deep copy that later training steps do not change (a checkpoint held in memory until written)."""
        return copy.deepcopy(self)


def write_progress(
    run: RunDir, history: list[dict[str, float]], grad_norms: Mapping[str, list[float]], **entries: Any
) -> None:
    """The history so far (and the gradient norms, when logged) into ``run``'s metrics.json: what goes there with
    every checkpoint, so that a run folder shows its progress while it trains."""
    run.update_metrics(**entries, history=history, **({"grad_norms": dict(grad_norms)} if grad_norms else {}))


#### When to write ####


class SaveCadence(Generic[T]):
    """When a training loop writes its checkpoint: at the end of an epoch once ``SAVE_EVERY`` seconds have passed
    since the last write (the loop writes at other times too: after the last epoch, on Ctrl-C, every epoch under
    several processes). Between writes the last finished epoch's state waits in memory (``hold``) and ``flush``
    writes it on an error or a second Ctrl-C: runs of small models do not pickle and fsync every epoch, and lose
    no finished epoch."""

    SAVE_EVERY = 60.0  # seconds

    def __init__(self, write: Callable[[T], None]):
        self._write = write
        self.saved_at = time.monotonic()
        self.pending: T | None = None

    def due(self) -> bool:
        return time.monotonic() - self.saved_at >= self.SAVE_EVERY

    def write(self, state: T) -> None:
        self._write(state)
        self.saved_at, self.pending = time.monotonic(), None

    def hold(self, state: T) -> None:
        self.pending = state

    def drop(self) -> None:
        self.pending = None

    def flush(self) -> None:
        """Write the held state, if any."""
        if self.pending is not None:
            self.write(self.pending)
