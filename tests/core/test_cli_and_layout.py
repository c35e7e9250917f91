from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from dla_core import cli
from dla_core.errors import DlaError
from tests.labs import LABS as LAB_NAMES
from tests.labs import ROOT

LABS = list(LAB_NAMES.values())  # the lab folders


@click.group()
def demo() -> None:
    """Demo group."""


@demo.command()
@cli.DATA_DIR
@cli.train_options(epochs_default=3, lr_default=0.1, batch_default=8)
@click.option("--eps", type=cli.FiniteList(min=0), default="0,0.1")
@click.option("--open-file", type=click.Path(path_type=Path))
@click.option("--fail-with", type=click.Choice(["erofs", "urlerror"]))
def go(eps, open_file, fail_with, **opts):
    """Echo options."""
    values = list(eps)
    if open_file:
        open_file.read_text()
    if fail_with == "erofs":
        import errno
        import os

        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/ro/run")
    if fail_with == "urlerror":
        from urllib.error import URLError

        raise URLError("[Errno -3] Temporary failure in name resolution")
    if opts["epochs"] == 13:
        raise DlaError("thirteen epochs are unlucky")
    click.echo(f"{values} {opts['epochs']} {opts['optimizer']} {opts['data_dir']}")


@demo.command()
@cli.OUT
def write(out):
    """Create a run folder."""
    from dla_core.runs import RunDir

    RunDir.create(out, {}, command="demo write", resumable=False)
    click.echo(f"wrote {out}")


def run(*argv: str) -> subprocess.CompletedProcess:
    """The demo group behind ``cli.entry_point`` in a fresh interpreter, as a console script runs it."""
    code = (
        "import sys; from tests.core.test_cli_and_layout import demo; from dla_core import cli; "
        "sys.argv = ['demo', *sys.argv[1:]]; cli.entry_point(demo)()"
    )
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture
def run_here(capsys, monkeypatch):
    """The same entry point in this process (no interpreter start-up): exit status, stdout, stderr. Anything but
    SystemExit escaping it is what a console script would print as a traceback, so it fails the test."""

    def invoke(*argv: str) -> subprocess.CompletedProcess:
        monkeypatch.setattr(sys, "argv", ["demo", *argv])
        capsys.readouterr()
        try:
            cli.entry_point(demo)()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["demo", *argv], code, out.out, out.err)

    return invoke


def test_entry_point_turns_user_mistakes_into_one_line_errors(tmp_path, run_here):
    # one fresh interpreter for a success and a failure: the console-script path itself
    ok = run("go", "--eps", "0,0.5")
    assert ok.returncode == 0 and ok.stdout.startswith("[0.0, 0.5] 3 adam")
    erofs = run("go", "--fail-with", "erofs")
    assert erofs.returncode == 1 and erofs.stderr == "Error: Read-only file system: /ro/run\n", erofs.stderr
    cases = [
        (["go", "--eps", "a,b"], "Error: Invalid value for '--eps': 'a' is not a number; expected comma-sep"),
        (["go", "--epochs", "13"], "Error: thirteen epochs are unlucky"),
        (["go", "--epochs", "0"], "Error: Invalid value for '--epochs'"),
        (["go", "--optimizer", "lion"], "Error: Invalid value for '--optimizer'"),
        (["go", "--open-file", str(tmp_path / "missing.txt")], "Error: No such file or directory"),
        (["go", "--fail-with", "erofs"], "Error: Read-only file system: /ro/run"),
        (["go", "--fail-with", "urlerror"], "Error: download failed ([Errno -3] Temporary failure"),
        (["write", "--out", ""], "Error: Invalid value for '--out': give a new folder"),
        (["write", "--out", "."], "Error: Invalid value for '--out': give a new folder"),
    ]
    for argv, message in cases:
        r = run_here(*argv)
        assert r.returncode != 0, argv
        # the message is the start of a line of its own (not merely somewhere in a traceback)
        assert any(line.startswith(message) for line in r.stderr.splitlines()), (argv, r.stderr)
        assert "Traceback" not in r.stderr, (argv, r.stderr)
    assert run_here("--help").returncode == 0


def test_a_usage_error_is_one_line_but_the_group_alone_still_shows_its_help(run_here):
    r = run_here("go", "--epochs", "0")  # click would put its usage lines and a hint above the Error line
    assert r.returncode == 2 and r.stderr == (
        "Error: Invalid value for '--epochs': 0 is not in the range x>=1.\n"
    ), r.stderr
    alone = run_here()  # click ≥ 8.2 raises a usage error (status 2) to show the help; 8.1 exits 0
    assert (alone.stdout + alone.stderr).startswith("Usage: demo [OPTIONS] COMMAND"), alone
    assert "Error" not in alone.stderr


def test_a_command_without_resume_does_not_suggest_it(tmp_path, run_here):
    assert run_here("write", "--out", str(tmp_path / "r")).returncode == 0
    again = run_here("write", "--out", str(tmp_path / "r"))
    assert again.returncode == 1
    assert again.stderr.startswith("Error: ") and "already holds a run; choose another --out" in again.stderr
    assert "--resume" not in again.stderr


def test_every_training_option_is_defined_once():
    names = [p.name for p in go.params]
    assert len(names) == len(set(names))
    assert {"epochs", "batch_size", "lr", "optimizer", "precision", "cpu", "seed", "data_dir"} <= set(names)


def test_train_options_leave_out_what_a_command_replaces_and_mark_the_command():
    @click.command()
    @cli.train_options(epochs_default=2, batch_default=4, exclude={"seed", "lr"})
    def study(**opts):
        click.echo(sorted(opts))

    names = {p.name for p in study.params}
    assert "seed" not in names and "lr" not in names
    assert {"epochs", "batch_size", "optimizer", "clip", "compile", "report_to", "threads"} <= names
    assert getattr(study.callback, cli.TRAIN_OPTIONS_LEFT_OUT) == {"seed", "lr"}
    assert getattr(go.callback, cli.TRAIN_OPTIONS_LEFT_OUT) == frozenset()
    with pytest.raises(ValueError, match="no option sed"):
        cli.train_options(epochs_default=1, lr_default=0.1, batch_default=1, exclude={"sed"})
    with pytest.raises(ValueError, match="lr_default"):
        cli.train_options(epochs_default=1, batch_default=1)


@pytest.mark.parametrize("lab", LABS)
def test_no_lab_imports_another_lab(lab):
    others = {x for x in LABS if x != lab}
    for path in (ROOT / lab / "src").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                assert mod.split(".")[0] not in others, f"{path} imports {mod}"


@pytest.mark.parametrize("lab", LABS)
def test_each_lab_declares_its_script_and_depends_on_core(lab):
    text = (ROOT / lab / "pyproject.toml").read_text()
    n = lab[3]
    assert re.search(rf'^lab{n} = "{lab}\.cli:main"', text, re.M)
    assert '"dla-core"' in text and "workspace = true" in text


def test_report_to_takes_a_comma_separated_list_of_trackers():
    from click.testing import CliRunner

    @click.command()
    @cli.REPORT_TO
    def show(report_to):
        click.echo(repr(report_to))

    runner = CliRunner()
    assert runner.invoke(show, []).output.strip() == "()"  # default none: no tracker
    assert (
        runner.invoke(show, ["--report-to", "tensorboard, mlflow"]).output.strip()
        == "('tensorboard', 'mlflow')"
    )
    assert runner.invoke(show, ["--report-to", "all"]).output.strip() == "('all',)"
    for bad, message in (("tensorbored", "unknown tensorbored"), ("none,wandb", "'none' cannot be combined")):
        r = runner.invoke(show, ["--report-to", bad])
        assert r.exit_code == 2 and message in r.output, r.output
        assert r.output.count("--report-to") == 1, r.output  # named once, by click
    assert "report_to" in {p.name for p in go.params}  # every training command has it


def test_per_epoch_lines_only_with_verbose_and_only_from_the_main_process(monkeypatch):
    import logging

    core, root = logging.getLogger("dla_core"), logging.getLogger()
    saved = core.level, root.level
    engine_log = logging.getLogger("dla_core.engine")
    try:
        monkeypatch.delenv("RANK", raising=False)
        cli.setup_logging(0)
        assert not engine_log.isEnabledFor(logging.INFO) and engine_log.isEnabledFor(logging.WARNING)
        cli.setup_logging(1)
        assert engine_log.isEnabledFor(logging.INFO)
        monkeypatch.setenv("RANK", "1")  # another process of a torchrun launch
        cli.setup_logging(2)
        assert not engine_log.isEnabledFor(logging.WARNING) and engine_log.isEnabledFor(logging.ERROR)
    finally:
        core.setLevel(saved[0])
        root.setLevel(saved[1])


def test_the_modules_the_clis_import_at_start_up_are_light():
    """dla_core.cli, .config (TrainConfig included), .errors, .seeding, .hub, .trackers, .threads and .reproduce
    load without torch & co., so that `labN --help` does not pay a torch import and a command checks its
    configuration before anything heavy (tests/labN/test_startup.py runs the scripts themselves)."""
    from tests.startup import HEAVY

    light = (
        "dla_core.cli, dla_core.config, dla_core.errors, dla_core.seeding, dla_core.hub, dla_core.trackers, "
        "dla_core.threads, dla_core.reproduce"
    )
    code = f"import sys, {light}; print(*sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(HEAVY)})))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.split() == []
    from dla_core import config, engine

    assert engine.TrainConfig is config.TrainConfig  # one class, importable from both


def test_compile_takes_an_optional_mode():
    from click.testing import CliRunner

    from dla_core.config import Runtime

    @click.command()
    @cli.COMPILE
    @click.option("--out")
    def cmd(**opts):
        click.echo(repr(Runtime.from_options(opts).compile))

    run = lambda *a: CliRunner().invoke(cmd, list(a))  # noqa: E731
    assert run().output.strip() == "None"
    assert run("--compile").output.strip() == "'default'"
    assert run("--compile", "--out", "x").output.strip() == "'default'"
    assert run("--compile", "reduce-overhead").output.strip() == "'reduce-overhead'"
    bad = run("--compile", "fast")
    assert bad.exit_code == 2 and "'fast' is not one of" in bad.output


def test_defaults_from_gives_the_options_the_configs_defaults():
    from dataclasses import dataclass

    from click.testing import CliRunner

    @dataclass(frozen=True)
    class Settings:
        length: str = "medium"
        tokens: int = 30

    @click.command()
    @cli.defaults_from(Settings)
    @click.option("--length", show_default=True)
    @click.option("--tokens", type=int)
    @click.option("--other", default="o")
    def show(length: str, tokens: int, other: str) -> None:
        click.echo(f"{length} {tokens} {other}")

    runner = CliRunner()
    assert runner.invoke(show, []).output == "medium 30 o\n"
    assert runner.invoke(show, ["--tokens", "5"]).output == "medium 5 o\n"
    assert "[default: medium]" in runner.invoke(show, ["--help"]).output
