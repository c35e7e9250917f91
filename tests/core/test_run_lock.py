"""One writer per run folder (``dla_core.run_lock``): the lock taken by ``RunDir.create`` for the run's life.

Two real commands racing for one ``--out`` are in tests/lab1/test_one_writer.py (slow); these are the lock's own
rules, with a light holder process (it imports no torch).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dla_core import run_lock
from dla_core.errors import DlaError
from dla_core.runs import RunDir

# Locks the folder in argv[1] in a process of its own, says so, then waits to be killed.
HOLDER = """
import sys, time
from dla_core import run_lock
lock = run_lock.acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""
# Takes the lock of the folder in argv[1] and lets go at once.
TAKER = "import sys; from dla_core import run_lock; run_lock.acquire(sys.argv[1])"


@pytest.fixture
def holder():
    """holder(folder) → a process holding ``folder``'s lock (killed with SIGKILL at the end of the test)."""
    procs: list[subprocess.Popen] = []

    def start(folder: Path) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline() == "locked\n"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_a_folder_locked_by_another_process_is_refused_with_its_pid_and_left_as_it_was(tmp_path, holder):
    out = tmp_path / "r"
    RunDir.create(out, {"lr": 0.1}, command="train")  # a run, resumable …
    p = holder(out)  # … that another process is writing now
    before = files(out)
    assert json.loads(before[run_lock.LOCK]) == p.pid
    message = f"{out} is in use by process {p.pid}"
    for resume, cfg in ((False, {"lr": 0.1}), (True, {"lr": 0.1}), (True, {"lr": 0.2}), (False, {"lr": 0.3})):
        with pytest.raises(DlaError) as e:
            RunDir.create(out, cfg, command="train", resume=resume)
        assert e.value.message == message  # not "already holds a run": the lock is looked at first
        assert files(out) == before
    new = tmp_path / "new"
    holder(new)
    with pytest.raises(DlaError, match="is in use by process"):
        RunDir.create(new, {}, command="train")
    assert [p.name for p in new.iterdir()] == [run_lock.LOCK]  # no config.json written


def test_a_killed_holder_frees_the_folder_at_once(tmp_path, holder):
    out = tmp_path / "r"
    RunDir.create(out, {"lr": 0.1}, command="train")
    p = holder(out)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (out / run_lock.LOCK).exists()  # left behind by the killed process: it blocks nothing
    run = RunDir.create(out, {"lr": 0.1}, command="train", resume=True)
    assert json.loads((out / run_lock.LOCK).read_text()) == os.getpid()
    del run
    assert not (out / run_lock.LOCK).exists()


def test_a_stale_lock_file_does_not_make_a_folder_a_run(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / run_lock.LOCK).write_text("12345\n")  # a killed process's
    RunDir.create(out, {}, command="train")  # not "already holds a run"


def _command(keep: list, fail: BaseException | None = None) -> click.Command:
    @click.command()
    @click.argument("out")
    def cmd(out: str) -> None:
        keep.append(RunDir.create(out, {"x": 1}, command="t", resume=Path(out, "config.json").exists()))
        if fail is not None:
            raise fail

    return cmd


@pytest.mark.parametrize("fail", [None, DlaError("bad"), KeyboardInterrupt()], ids=["ok", "error", "ctrl-c"])
def test_the_lock_goes_when_the_command_ends(tmp_path, holder, fail):
    """However the command ends, another process may resume at once, though the RunDir is still referenced (as
    by a traceback kept in a test's result)."""
    out = tmp_path / "r"
    keep: list[RunDir] = []
    CliRunner().invoke(_command(keep, fail), [str(out)])
    assert keep and (out / "config.json").exists()
    assert not (out / run_lock.LOCK).exists()
    holder(out)  # would hang reading "locked" (and fail) if the lock were still held here


def test_one_process_may_create_and_resume_its_own_folder(tmp_path):
    """A process holding a folder shares its lock: in-process sequences (a study resumed, tests) work."""
    out = tmp_path / "r"
    first = RunDir.create(out, {"x": 1}, command="t")
    again = RunDir.create(out, {"x": 1}, command="t", resume=True)
    with pytest.raises(DlaError, match="already holds a run"):
        RunDir.create(out, {"x": 1}, command="t")
    del first
    assert (out / run_lock.LOCK).exists()  # `again` still holds it: a refused create did not let go
    del again
    assert not (out / run_lock.LOCK).exists()


def test_refused_starts_leave_nothing_behind(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(DlaError, match="no run to resume"):
        RunDir.create(folder, {}, command="t", resume=True)
    assert files(folder) == {"notes.txt": "mine"}
    with pytest.raises(DlaError, match="no run to resume"):
        RunDir.create(tmp_path / "missing", {}, command="t", resume=True)
    import dla_core.runs as runs

    def no_space(path, obj):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(runs, "write_json", no_space)
    with pytest.raises(DlaError, match="No space left"):
        RunDir.create(tmp_path / "new", {}, command="t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # the folder made for the run is gone


def test_only_the_main_process_locks(tmp_path, monkeypatch):
    """Under torchrun the other ranks take no lock (the main one holds it and decides for all)."""
    monkeypatch.setenv("RANK", "1")
    run = RunDir.create(tmp_path / "r", {}, command="t")
    assert run._lock is None and not (tmp_path / "r").exists()


def test_a_lock_file_removed_while_it_was_being_taken_is_taken_again(tmp_path, monkeypatch):
    """The owner removes the file as it lets go: one who opened it just before then locks a file no one else
    will open, so the taker checks that the file it locked is still the folder's, and tries again if not."""
    out = tmp_path / "r"
    flock, calls = run_lock.fcntl.flock, []

    def owner_lets_go_meanwhile(fd, op):
        if not calls:
            (out / run_lock.LOCK).unlink()
        calls.append(op)
        return flock(fd, op)

    monkeypatch.setattr(run_lock.fcntl, "flock", owner_lets_go_meanwhile)
    lock, taken = run_lock.acquire(out)
    assert taken and len(calls) == 2
    assert os.path.samestat(os.stat(out / run_lock.LOCK), os.fstat(lock._fd))


def test_a_command_holds_its_folder_to_its_end(tmp_path):
    """Though the RunDir is not kept (``reproduce`` keeps none of its folder's): another process is refused."""
    out = tmp_path / "r"
    tries = []

    @click.command()
    def cmd() -> None:
        RunDir.create(out, {}, command="t")
        gc.collect()
        tries.append(subprocess.run([sys.executable, "-c", TAKER, str(out)], capture_output=True, text=True))

    result = CliRunner().invoke(cmd, [])
    assert result.exit_code == 0, result.output
    assert f"is in use by process {os.getpid()}" in tries[0].stderr
    assert not (out / run_lock.LOCK).exists()
