"""From a command's options to its configs: one way for every lab.

A command's options fall in two kinds. *Experiment* options decide the numbers (depth, lr, seed, precision) and
go into a frozen dataclass that is saved in ``config.json`` and compared on ``--resume``. *Runtime* options say
where and how to run (``--out``, ``--resume``, ``--data-dir``, ``--download``, ``--cpu``, ``--report-to``, ``--threads``): they
go into ``Runtime`` and never into a saved config, so moving the data or switching trackers does not block a
resume.

    cfg = from_options(TrainRun, opts, train={"log_grad_norms": True})
    rt = Runtime.from_options(opts)

Building a config from options also checks it (``check()``, where its class has one: ``Runtime.check`` for the
environment and the trackers, a lab's config for its local paths), before anything is created or loaded.

No torch here: the CLI modules import this at start-up.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from dla_core.errors import DlaError

T = TypeVar("T")
NoneType = type(None)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Where and how a command runs; not part of the experiment (not saved in config.json, free on --resume)."""

    out: Path | None = None
    resume: bool = False
    data_dir: Path = Path("data")
    download: bool = False
    cpu: bool = False
    report_to: tuple[str, ...] = ()
    threads: int | None = None  # torch's CPU threads; None: dla_core.threads decides from the work's size
    compile: str | None = None  # torch.compile mode for the trained model ("default", …); None: eager

    def __post_init__(self) -> None:
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise DlaError(f"--threads: expected a positive number of threads, got {self.threads!r}")

    def check(self) -> None:
        """What a command can refuse before it creates or loads anything: OMP_NUM_THREADS when the thread choice
        will read it (no --threads), DLA_DATA_STREAM and DLA_DATA_MEMORY, the packages of the --report-to
        trackers, and --compile cuda-graph without a CUDA GPU."""
        from dla_core.threads import omp_threads
        from dla_core.trackers import check_trackers

        if self.threads is None:
            omp_threads()
        from dla_core.stream_policy import policy

        policy()  # DLA_DATA_STREAM / DLA_DATA_MEMORY, for every command with data, not only where files load
        if self.compile == "cuda-graph":  # the engine's CUDA_GRAPH
            import torch

            if self.cpu or not torch.cuda.is_available():
                from dla_core.engine import cuda_graph_refusal

                raise DlaError(cuda_graph_refusal("cpu"))
        check_trackers(self.report_to)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], **overrides: Any) -> Runtime:
        return from_options(cls, options, **overrides)


RUNTIME_OPTIONS = frozenset(f.name for f in dataclasses.fields(Runtime))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The hyperparameters of one ``fit`` (engine.py): saved in config.json, compared on --resume."""

    epochs: int = 10
    lr: float = 1e-3
    optimizer: str = "adam"  # sgd | adam | adamw
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine | step | linear, after warmup
    warmup: float = 0.0  # epochs of linear warmup (fractions allowed)
    grad_accum: int = 1
    clip: float | None = None  # max global gradient norm
    precision: str = "no"  # no | fp16 | bf16
    seed: int = 0
    log_grad_norms: bool = False  # per-layer gradient norms, averaged over each epoch
    # the stopping rule: stop once the validation loss has not improved on its best for this many epochs
    # (engine.plateaued; needs a validation split); None: train every epoch
    patience: int | None = None
    # smoke runs (`--max-steps N`): at most N optimizer steps per epoch, N epochs, N batches per evaluation of
    # the run (validation, test); None: the whole run. A capped run's numbers are not results.
    max_steps: int | None = None


def from_options(cls: type[T], options: Mapping[str, Any], **overrides: Any) -> T:
    """Build the frozen dataclass ``cls`` from a command's options.

    Each field takes the option of the same name (absent options keep the field's default); a field whose type
    is itself a dataclass (``train: TrainConfig``) is built the same way from the same options, so one flat set
    of click options fills a nested config. ``overrides`` win over options; a dict override of a nested field
    overrides inside it (``train={"log_grad_norms": True}``). Values are coerced to the field's declared kind:
    lists to tuples, paths to ``str`` for ``str`` fields, strings to ``Path`` for ``Path`` fields.

    Each built dataclass with a ``check()`` method is checked here (nested ones included): this is where a
    command's options become its configuration, so every command refuses a bad environment, a missing tracker
    package or a missing local path before it creates a run folder or loads a model, without calling anything.
    A config built in code (a test, a saved config.json read back) is not checked.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        kind = hints.get(f.name, Any)
        nested = _dataclass_in(kind)
        if nested is not None and (f.name not in overrides or isinstance(overrides[f.name], Mapping)):
            if f.name in options and dataclasses.is_dataclass(options[f.name]):
                values[f.name] = options[f.name]  # a ready-made sub-config
                continue
            inner = overrides.get(f.name, {})
            values[f.name] = from_options(nested, options, **inner)
        elif f.name in overrides:
            values[f.name] = _coerce(overrides[f.name], kind)
        elif f.name in options and (options[f.name] is not None or NoneType in _members(kind)):
            values[f.name] = _coerce(options[f.name], kind)
    built = cls(**values)
    check = getattr(built, "check", None)
    if callable(check):
        check()
    return built


def _dataclass_in(kind: Any) -> type | None:
    """The dataclass type of a field annotated ``X`` or ``X | None``, else None."""
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return kind
    for arg in typing.get_args(kind):
        if dataclasses.is_dataclass(arg) and isinstance(arg, type):
            return arg
    return None


def _members(kind: Any) -> set[Any]:
    """{str, NoneType} for ``str | None``; {tuple} for ``tuple[int, ...]``."""
    union = typing.get_origin(kind) in (typing.Union, types.UnionType)
    return {typing.get_origin(a) or a for a in (typing.get_args(kind) if union else (kind,))}


def _coerce(value: Any, kind: Any) -> Any:
    kinds = _members(kind)
    if tuple in kinds and isinstance(value, list):
        return tuple(value)
    if str in kinds and Path not in kinds and isinstance(value, Path):
        return str(value)
    if Path in kinds and isinstance(value, str):
        return Path(value)
    return value
