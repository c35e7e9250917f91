"""The run folder: the interface between commands.

Every command that trains or evaluates writes one::

    RUN/
      config.json        resolved options, seed, package versions, machine
      metrics.json       final metrics + per-epoch history (rewritten atomically after every epoch)
      model.safetensors  final weights; the model config rides in the safetensors metadata
      checkpoint.pt      training state for --resume (dla_core.checkpoint: written with torch, loaded weights_only)
      *.png              plots
      .lock              while a process writes the run: its pid (one writer per folder, dla_core.run_lock)

All writes go to a temporary file in the same folder, are flushed to disk and renamed over the target, so a
crash mid-write leaves the previous file intact.

No torch here (the CLIs and the reports import this without paying for it): the checkpoint's structure and its
file I/O are in ``dla_core.checkpoint``, beside the engine that writes them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from dla_core import run_lock
from dla_core.config import RUNTIME_OPTIONS
from dla_core.errors import DlaError
from dla_core.seeding import is_main_process, world_size

CONFIG = "config.json"
METRICS = "metrics.json"
MODEL = "model.safetensors"
CHECKPOINT = "checkpoint.pt"
# metrics.json keys renamed when the labs' run folders were unified (old name → new name)
RENAMED_KEYS = {"total_params": "parameters", "trainable_params": "trainable_parameters"}

#### Atomic writes ####


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename tmp over ``path``; on any failure the old ``path`` is untouched.

    Only the main process writes (run files, plots, models, checkpoints); on other ranks this does nothing.
    """
    if not is_main_process():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(
            tmp, 0o644
        )  # mkstemp makes 0600; run files are meant to be shared (e.g. a container's /runs)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    atomic_write(path, lambda p: p.write_text(text))


def _json_default(o: Any) -> Any:
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):  # tensors, numpy arrays and scalars (no torch import needed to know them)
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_jsonable(obj: Any) -> Any:
    """Round-trip through JSON so that configs compare equal to what was saved (tuples → lists, Path → str)."""
    return json.loads(json.dumps(obj, default=_json_default))


def environment() -> dict[str, Any]:
    """Package versions and machine, recorded with every run: every installed dla-* distribution and the
    libraries they train with. Read once per import path (scanning the installed distributions takes ~0.2 s:
    once per cell of a study otherwise); each call returns its own copy."""
    return copy.deepcopy(_environment(tuple(sys.path)))


@functools.cache
def _environment(_path: tuple[str, ...]) -> dict[str, Any]:
    ours = {
        d.metadata["Name"] for d in metadata.distributions() if (d.metadata["Name"] or "").startswith("dla-")
    }
    versions = {}
    for dist in (
        *sorted(ours),
        "torch",
        "torchvision",
        "accelerate",
        "transformers",
        "peft",
        "numpy",
        "scikit-learn",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    import torch  # the machine's GPU, recorded with the run (in a command that is about to train anyway)

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "versions": versions,
    }


#### The run folder ####


class RunDir:
    """One run folder. ``RunDir.create`` for a new run (or a resumed one), ``RunDir.open`` to read one."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock: run_lock.RunLock | None = None  # set by ``create``

    @classmethod
    def create(
        cls, path: Path, config: Any, *, command: str, resume: bool = False, resumable: bool = True
    ) -> RunDir:
        """Start (or resume) a run in ``path`` and snapshot ``config`` (a dataclass or mapping).

        Refuses to overwrite a folder that already holds a run unless ``resume`` is given, and refuses to
        resume with options that differ from the saved ones: nothing the user had is lost by a typo.
        ``resumable=False`` for commands without ``--resume`` (the message then does not suggest it).

        The folder is locked first (``dla_core.run_lock``: one writer per folder, for the run's life), then
        checked and written: a second process given the same folder is refused and changes nothing.
        Under torchrun / accelerate launch only the main process locks, checks and writes the folder; the others
        wait for its verdict and fail with the same message when it fails, so no rank races another to the folder.
        """
        cfg = to_jsonable(config)
        error, lock = None, None
        if is_main_process():
            try:
                lock = cls._lock_check_and_snapshot(Path(path), cfg, command, resume, resumable)
            except DlaError as e:
                error = e.message
        error = _main_verdict(error)
        if error is not None:
            raise DlaError(error)
        run = cls(path)
        run._lock = lock  # the run holds its folder's lock as long as it lives (or its command runs)
        return run

    @classmethod
    def _lock_check_and_snapshot(
        cls, path: Path, cfg: Any, command: str, resume: bool, resumable: bool
    ) -> run_lock.RunLock:
        """Lock ``path`` (refused: in use), then check it and write the snapshot; a refused or failed start
        lets go of a lock taken here and removes the folder when it made it (it is then empty)."""
        if str(path).strip() in ("", "."):
            raise DlaError("--out: give a new folder for the run (refusing to write into the current folder)")
        if resume and not (path / CONFIG).exists():  # said before anything is made (the folder, its parents)
            raise DlaError(f"--resume: no run to resume in {path} (no {CONFIG})")
        if path.exists() and not path.is_dir():
            raise DlaError(f"--out {path} exists and is not a folder")
        made = not path.exists()
        try:
            lock, taken = run_lock.acquire(path)
        except OSError as e:
            raise DlaError(f"--out {path}: cannot write the run folder ({e.strerror or e})") from None
        try:
            cls._check_and_snapshot(path, cfg, command, resume, resumable)
        except BaseException:
            if taken:
                lock.release()
                if made:
                    with contextlib.suppress(OSError):
                        path.rmdir()
            raise
        if taken:
            run_lock.hold(lock)
        return lock

    @staticmethod
    def _check_and_snapshot(path: Path, cfg: Any, command: str, resume: bool, resumable: bool) -> None:
        existing = path / CONFIG
        if resume:
            if not existing.exists():
                raise DlaError(f"--resume: no run to resume in {path} (no {CONFIG})")
            saved = read_json(existing)
            if saved.get("command") != command:
                raise DlaError(f"--resume: {path} holds a '{saved.get('command')}' run, not '{command}'")
            if (path / METRICS).exists():
                read_json(path / METRICS)  # damaged? say so now, not after the resumed training
            diff = _diff(_without_runtime(saved.get("config", {})), _without_runtime(cfg))
            if diff:
                raise DlaError(
                    f"--resume: options differ from the saved run ({diff}); rerun with the same options"
                )
            return
        if existing.exists() or (path / CHECKPOINT).exists():
            hint = "pass --resume to continue it or choose" if resumable else "choose"
            raise DlaError(f"{path} already holds a run; {hint} another --out")
        try:
            write_json(existing, {"command": command, "config": cfg, "environment": environment()})
        except OSError as e:
            raise DlaError(f"--out {path}: cannot write the run folder ({e.strerror or e})") from None

    @classmethod
    def open(cls, path: Path, *, what: str = "run") -> RunDir:
        run = cls(path)
        if not (run.path / CONFIG).exists():
            raise DlaError(f"{path} is not a dla run folder (no {CONFIG}); pass the --out folder of a {what}")
        return run

    # -- config / metrics --

    @property
    def saved(self) -> dict[str, Any]:
        saved = read_json(self.path / CONFIG)
        if not isinstance(saved.get("config"), dict):
            raise DlaError(f"{self.path / CONFIG} is not a dla run config (no 'config' object)")
        return saved

    @property
    def config(self) -> dict[str, Any]:
        return self.saved["config"]

    def read_metrics(self) -> dict[str, Any]:
        """metrics.json, with the key names of folders written by earlier versions brought up to date."""
        p = self.path / METRICS
        metrics = read_json(p) if p.exists() else {}
        for old, new in RENAMED_KEYS.items():
            if old in metrics and new not in metrics:
                metrics[new] = metrics.pop(old)
        return metrics

    def write_metrics(self, metrics: Mapping[str, Any]) -> None:
        write_json(self.path / METRICS, dict(metrics))

    def update_metrics(self, **entries: Any) -> dict[str, Any]:
        metrics = self.read_metrics()
        metrics.update(entries)
        self.write_metrics(metrics)
        return metrics

    def file(self, name: str) -> Path:
        """Path of a file inside the run folder (the folder is created on demand)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path / name

    @property
    def checkpoint_path(self) -> Path:
        """Where the training state for --resume goes (read and written by ``dla_core.checkpoint``)."""
        return self.path / CHECKPOINT


def _without_runtime(cfg: Any) -> Any:
    """A saved config without runtime options (``dla_core.config.Runtime``), at any depth: folders written
    before those left the experiment configs (data_dir, cpu, …) resume like new ones."""
    if not isinstance(cfg, Mapping):
        return cfg
    return {k: _without_runtime(v) for k, v in cfg.items() if k not in RUNTIME_OPTIONS}


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 0.1}} → {'train.lr': 0.1}: changed options are named, not dumped whole."""
    if isinstance(obj, Mapping):
        flat: dict[str, Any] = {}
        for k, v in obj.items():
            flat.update(_flatten(v, f"{prefix}{k}."))
        return flat
    return {prefix.rstrip("."): obj}


def _diff(saved: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    old, cur = _flatten(saved), _flatten(new)
    show = lambda d, k: repr(d[k]) if k in d else "(absent)"  # noqa: E731
    changed = [
        f"{k.replace('_', '-')}: {show(old, k)} → {show(cur, k)}"
        for k in sorted(set(old) | set(cur))
        if k not in old or k not in cur or old[k] != cur[k]
    ]
    return "; ".join(changed)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a run file; a damaged file is an ``Error:`` naming it, not a traceback."""
    try:
        obj = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DlaError(f"{path} is damaged (not valid JSON: {e}); restore it or start a new run") from None
    if not isinstance(obj, dict):
        raise DlaError(f"{path} is damaged (expected a JSON object)")
    return obj


#### Processes: one voice ####


def _main_verdict(error: str | None) -> str | None:
    """Share the main process's outcome (None or an error message) with every rank; a barrier as well."""
    if world_size() == 1:
        return error
    import torch.distributed as dist

    _process_state()
    box = [error]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wait_for_main() -> None:
    """Barrier: the other processes wait here until the main one has written what it owns."""
    if world_size() > 1:
        _process_state().wait_for_everyone()


def _process_state() -> Any:
    """Join (or reuse) the launcher's process group the way ``engine.make_accelerator`` will: gloo on a machine
    without a GPU. (A bare ``PartialState()`` there falls back to one process and the later Accelerator with it.)"""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
