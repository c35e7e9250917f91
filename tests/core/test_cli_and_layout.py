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

ROOT = Path(__file__).resolve().parents[2]
LABS = ["lab1_resnet", "lab2_distilbert", "lab3_story", "lab4_ood"]


@click.group()
def demo() -> None:
    """Demo group."""


@demo.command()
@cli.DATA_DIR
@cli.train_options(epochs_default=3, lr_default=0.1, batch_default=8)
@click.option("--eps", default="0,0.1")
@click.option("--open-file", type=click.Path(path_type=Path))
def go(eps, open_file, **opts):
    """Echo options."""
    values = cli.parse_list(eps, float, "--eps")
    if open_file:
        open_file.read_text()
    if opts["epochs"] == 13:
        raise DlaError("thirteen epochs are unlucky")
    click.echo(f"{values} {opts['epochs']} {opts['optimizer']} {opts['data_dir']}")


def run(*argv: str) -> subprocess.CompletedProcess:
    code = (
        "import sys; from tests.core.test_cli_and_layout import demo; from dla_core import cli; "
        "sys.argv = ['demo', *sys.argv[1:]]; cli.entry_point(demo)()"
    )
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT)


def test_entry_point_turns_user_mistakes_into_one_line_errors(tmp_path):
    ok = run("go", "--eps", "0,0.5")
    assert ok.returncode == 0 and ok.stdout.startswith("[0.0, 0.5] 3 adam")
    cases = [
        (["go", "--eps", "a,b"], "Error: --eps: cannot read 'a,b' as a list of float"),
        (["go", "--epochs", "13"], "Error: thirteen epochs are unlucky"),
        (["go", "--epochs", "0"], "Error: Invalid value for '--epochs'"),
        (["go", "--optimizer", "lion"], "Error: Invalid value for '--optimizer'"),
        (["go", "--open-file", str(tmp_path / "missing.txt")], "Error: No such file or directory"),
    ]
    for argv, message in cases:
        r = run(*argv)
        assert r.returncode != 0, argv
        assert message in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)
    assert run("--help").returncode == 0


def test_every_training_option_is_defined_once():
    names = [p.name for p in go.params]
    assert len(names) == len(set(names))
    assert {"epochs", "batch_size", "lr", "optimizer", "precision", "cpu", "seed", "data_dir"} <= set(names)


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
