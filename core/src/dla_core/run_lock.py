"""One writer per run folder: an exclusive ``fcntl.flock`` on ``RUN/.lock``, held for the run's life.

``RunDir.create`` takes it (a new run and ``--resume`` alike) before it looks at the folder or writes
``config.json``, so two commands given the same ``--out`` cannot both pass the "already holds a run" check: the
second gets ``Error: <out> is in use by process <pid>`` and changes nothing. The lock file holds the owner's pid
for that message; it is removed when the owner lets go. The kernel frees a flock when its process dies, so a
killed run can be resumed at once (its stale ``.lock`` is simply taken over).

How long a lock lives (the one place: ``hold``, called by ``RunDir.create``):

- inside a click command: until that command ends — returns, raises, or is interrupted (Ctrl-C, the engine's
  stop flag): click closes the command's context, which releases it (the child runs of a study or a grid
  included). A ``labN reproduce`` step is a command of its own, so each step's lock goes when the step does,
  while the reproduce folder's stays with the parent until the report is written.
- outside a command (a library caller, a test): until the ``RunDir`` that holds it is dropped;
- a process that already holds a folder's lock shares it (one process is one writer): a test or a sequence of
  runs in one process may create and resume the same folder.

Only the main process of a torchrun / accelerate launch takes it (``RunDir.create``); the others follow its
verdict. A file system without flock support (rare network mounts) runs unlocked, with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
import weakref
from pathlib import Path

from dla_core.errors import DlaError

log = logging.getLogger(__name__)

LOCK = ".lock"  # inside the run folder while a process writes it; holds that process's pid
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}
# folder (real path) → the lock this process holds on it
_HELD: weakref.WeakValueDictionary[str, RunLock] = weakref.WeakValueDictionary()


class RunLock:
    """This process's exclusive lock on one run folder (``acquire``); ``release`` or dropping it lets go."""

    def __init__(self, folder: Path, fd: int | None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self._fd = fd
        # close (and remove the file) on release, on garbage collection, at interpreter exit
        self._release = weakref.finalize(self, _let_go, self.path, fd)

    @property
    def held(self) -> bool:
        return self._release.alive

    def release(self) -> None:
        self._release()


def acquire(folder: Path) -> tuple[RunLock, bool]:
    """Lock ``folder`` (made when missing) for this process: (the lock, whether it was taken just now rather
    than already held here). Another process holding it: ``DlaError`` naming that process, nothing changed."""
    folder = Path(folder)
    key = os.path.realpath(folder)
    held = _HELD.get(key)
    if held is not None and held.held and _same_file(held.path, held._fd):
        return held, False
    path = folder / LOCK
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DlaError(f"{folder} is in use by process {_owner(path)}") from None
        except OSError as e:
            os.close(fd)
            if e.errno not in _UNSUPPORTED:
                raise
            log.warning("%s: the file system cannot lock files (%s); running without a lock", folder, e)
            return RunLock(folder, None), True
        # The owner before us removes the file as it lets go: if it did so after we opened it, we hold a lock on
        # a file no one else will open. Hold the one that is there now.
        if _same_file(path, fd):
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    lock = RunLock(folder, fd)
    _HELD[key] = lock
    return lock, True


def hold(lock: RunLock) -> None:
    """Release ``lock`` when the click command now running ends (if any): see the module docstring."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(lock.release)  # and holds it till then, whatever becomes of the RunDir


def _let_go(path: Path, fd: int | None) -> None:
    if fd is None:
        return
    if _same_file(path, fd):  # not a newer lock file made after ours was removed (e.g. the folder deleted)
        with contextlib.suppress(OSError):
            path.unlink()
    os.close(fd)  # drops the flock


def _same_file(path: Path, fd: int | None) -> bool:
    if fd is None:
        return True
    try:
        on_disk, ours = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (on_disk.st_dev, on_disk.st_ino) == (ours.st_dev, ours.st_ino)


def _owner(path: Path) -> str:
    """The pid in a lock file; its owner writes it right after locking, so wait a moment for it."""
    deadline = time.monotonic() + 1.0
    while True:
        with contextlib.suppress(OSError):
            pid = path.read_text().strip()
            if pid:
                return pid
        if time.monotonic() > deadline:
            return "(unknown)"
        time.sleep(0.01)
