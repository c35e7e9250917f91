"""The argv each image's entrypoint runs, run here: `labN --help` (the image's default) and the README's examples.

The images run `ENTRYPOINT + docker run arguments`; these tests run the same argv with the lab's console
script from this environment. A lab that is not installed here (nox's tests-core has only core) is skipped.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .dockerfile_model import LAB_FOLDERS, Dockerfile, exec_form, last_value, readme_docker_runs

LABS = sorted(LAB_FOLDERS)


def _script(name: str) -> str:
    """The installed console script `name` (the venv's own first: it may not be on PATH), or skip."""
    try:
        importlib.metadata.distribution(f"dla-{name}")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"dla-{name} is not installed in this environment")
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"console script {name} not found")
    return found


def _image_argv(lab: str, args: list[str] | None = None) -> list[str]:
    """What `docker run dla/labN [args]` executes: ENTRYPOINT + (args or the image's CMD)."""
    chain = Dockerfile.read().chain(lab)
    entrypoint = exec_form(last_value(chain, "ENTRYPOINT") or "")
    cmd = exec_form(last_value(chain, "CMD") or "[]") or []
    assert entrypoint, f"{lab}: no exec-form ENTRYPOINT"
    return [*entrypoint, *(cmd if args is None else args)]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_script(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=120)


def _readme_examples() -> list[tuple[str, list[str]]]:
    """(lab, arguments after the image) for every `docker run … dla/labN …` in docker/README.md."""
    out = []
    for argv in readme_docker_runs():
        image = next(i for i, word in enumerate(argv) if re.fullmatch(r"dla/lab\d(:\S+)?", word))
        out.append((argv[image].split("/")[1].split(":")[0], argv[image + 1 :]))
    return out


@pytest.mark.parametrize("lab", LABS)
def test_default_command_is_the_labs_help(lab: str) -> None:
    argv = _image_argv(lab)
    assert argv == [lab, "--help"]
    proc = _run(argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Usage: {lab} "), proc.stdout[:200]


def _run_in_process(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """argv run through the console script's own entry point object, in this process (cheaper than a fork)."""
    _script(argv[0])  # skips when the lab is not installed
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name=argv[0])
    monkeypatch.setattr(sys, "argv", argv)
    try:
        entry.load()()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("lab", LABS)
def test_readme_examples_name_commands_the_lab_has(
    lab: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each README example's command, with --help in place of its work: the command and its options exist."""
    examples = [args for name, args in _readme_examples() if name == lab]
    assert examples, f"docker/README.md has no `docker run … dla/{lab} …` example"
    for args in examples:
        command = args[0]
        code, out, err = _run_in_process(_image_argv(lab, [command, "--help"]), monkeypatch, capsys)
        assert code == 0, f"`{lab} {command}`: {err.strip()[-300:]}"
        assert re.match(rf"Usage: \S.* {re.escape(command)} ", out), out[
            :200
        ]  # (in-process: prog name differs)
        for option in (word.split("=")[0] for word in args[1:] if word.startswith("--")):
            assert option in out, f"`{lab} {command}` has no option {option}"
