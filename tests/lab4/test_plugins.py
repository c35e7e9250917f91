"""Plug-ins: a package of one's own that declares detectors and attacks under the entry point groups
``dla.lab4.detectors`` / ``dla.lab4.attacks`` is listed in `lab4 --help` (still without torch: the entry is
read, the implementation imported only when a command runs) and usable by every command; a broken plug-in is
one warning line naming it, and lab4 goes on without it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lab4_ood import methods
from tests.lab4.plugins import installed, write_plugin
from tests.startup import run_script

SPEC = """
    from lab4_ood.methods import Attack, Detector, Option

    ZERO = Detector("zero", "every image scores 0 (a plug-in)", "tinyplugin.implementation:Zero")
    NOOP = Attack("noop", "leaves the images as they are (a plug-in)", "tinyplugin.implementation:noop",
                  targeted=True)
    NOT_A_SPEC = "zero"
    CLASH = Detector("msp", "a second msp", "tinyplugin.implementation:Zero")
    OPTION_CLASH = Detector("clashing", "its --knn-k is not knn's", "tinyplugin.implementation:Zero",
                            (Option("knn_k", int, 5, "k."),))
    RESERVED = Detector("reserving", "takes --limit", "tinyplugin.implementation:Zero",
                        (Option("limit", int, 5, "at most."),))
    GHOST = Detector("ghost", "its code is broken", "tinyplugin.raises:Ghost")
"""
IMPLEMENTATION = """
    import torch

    from lab4_ood.detectors import Detector


    class Zero(Detector):
        def scores(self, x):
            return torch.zeros(len(x))


    def noop(model, x, y, eps, *, targeted=False):
        return x.detach().clone()
"""
BROKEN = {
    "missing-module": "tinyplugin.nowhere:ZERO",
    "missing-name": "tinyplugin.spec:NOWHERE",
    "raises": "tinyplugin.raises:ZERO",
    "not-a-spec": "tinyplugin.spec:NOT_A_SPEC",
    "clash": "tinyplugin.spec:CLASH",
    "option-clash": "tinyplugin.spec:OPTION_CLASH",
    "reserved-option": "tinyplugin.spec:RESERVED",
}


def tiny_plugin(root, broken=()):
    """The plug-in `tinyplugin` (detector zero, attack noop), plus the broken entry points named in ``broken``."""
    detectors = {"zero": "tinyplugin.spec:ZERO", **{name: BROKEN[name] for name in broken}}
    files = {
        "spec.py": SPEC,
        "implementation.py": IMPLEMENTATION,
        "raises.py": "raise RuntimeError('boom')\n",
    }
    entry_points = {"dla.lab4.detectors": detectors, "dla.lab4.attacks": {"noop": "tinyplugin.spec:NOOP"}}
    return write_plugin(root, "tinyplugin", files, entry_points)


def test_a_plugin_is_listed_in_help_without_torch_and_a_broken_one_is_one_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(tiny_plugin(tmp_path / "site", broken=["raises"])))
    top = run_script("lab4", "--help", cwd=tmp_path)
    assert top.code == 0 and top.heavy == [] and "detect" in top.stdout
    warnings = top.stderr.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith(
        "warning: lab4 plug-in 'raises' (dla.lab4.detectors = tinyplugin.raises:ZERO) not loaded"
    )
    assert "RuntimeError: boom" in warnings[0]
    detect = run_script("lab4", "detect", "--help", cwd=tmp_path)
    assert detect.heavy == [] and "every image scores 0 (a plug-in)" in " ".join(detect.stdout.split())
    for command in ("train", "attack"):
        page = run_script("lab4", command, "--help", cwd=tmp_path)
        assert page.heavy == [] and f"|{methods.ATTACKS[-1].name}|noop]" in page.stdout, command
    flat = " ".join(page.stdout.split())  # attack's: declared targeted, so listed under --targeted
    assert (
        f"--targeted Push predictions toward --target-class "
        f"({', '.join(a.name for a in methods.ATTACKS if a.targeted)}, noop)" in flat
    )


@pytest.mark.slow  # three fresh interpreters that import torch and run a command each
def test_a_plugin_runs_through_the_installed_commands(tmp_path, monkeypatch, digits_run):
    monkeypatch.setenv("PYTHONPATH", str(tiny_plugin(tmp_path / "site")))
    r = run_script("lab4", "detect", "--model", digits_run, "--ood", "fake", "--method", "msp,zero", "--limit",
                   "20", "--cpu", "--out", tmp_path / "d", cwd=tmp_path)  # fmt: skip
    assert r.code == 0, r.stderr
    results = json.loads((tmp_path / "d" / "metrics.json").read_text())["results"]
    assert results["zero"]["fake"]["auroc"] == 0.5
    r = run_script("lab4", "attack", "--model", digits_run, "--method", "noop", "--targeted", "--target-class",
                   "1", "--eps", "0,0.2", "--limit", "20", "--cpu", "--out", tmp_path / "a", cwd=tmp_path)  # fmt: skip
    assert r.code == 0, r.stderr
    rows = json.loads((tmp_path / "a" / "metrics.json").read_text())["rows"]
    assert rows[0]["accuracy"] == rows[1]["accuracy"]
    r = run_script("lab4", "train", "--dataset", "digits:0-4", "--model", "mlp", "--depth", "1", "--width", "8",
                   "--epochs", "1", "--max-steps", "2", "--adversarial", "noop", "--eps", "0.1", "--cpu",
                   "--out", tmp_path / "t", cwd=tmp_path)  # fmt: skip
    assert r.code == 0, r.stderr
    assert json.loads((tmp_path / "t" / "config.json").read_text())["config"]["adversarial"] == "noop"


@pytest.mark.parametrize("broken", list(BROKEN))
def test_each_kind_of_broken_plugin_is_one_line_naming_it(broken, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tiny_plugin(tmp_path / "site", broken=[broken])))
    methods.reload()
    try:
        found = methods.detectors()
    finally:
        monkeypatch.undo()
        methods.reload()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"warning: lab4 plug-in '{broken}' (dla.lab4.detectors = {BROKEN[broken]}) not loaded"
    )
    assert "zero" in found and broken not in found  # the good plug-in beside it still loads
    if broken == "clash":
        assert "the name 'msp' is taken" in lines[0] and found["msp"] is methods.DETECTORS[0]
    if broken == "option-clash":
        assert "its option 'knn_k' differs from that of knn" in lines[0]


def test_a_plugin_whose_code_is_broken_stops_its_command_with_one_error_line(tmp_path, digits_run):
    root = tiny_plugin(tmp_path / "site")
    (root / "tinyplugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[dla.lab4.detectors]\nghost = tinyplugin.spec:GHOST\n"
    )
    with installed(root, "tinyplugin") as group:
        assert "ghost" in methods.detectors()
        r = CliRunner().invoke(group, ["detect", "--model", str(digits_run), "--ood", "fake", "--method", "msp,ghost",
                                       "--cpu", "--out", str(tmp_path / "d")])  # fmt: skip
    assert r.exit_code == 1 and r.output == (
        "Error: ghost: cannot import tinyplugin.raises:Ghost (RuntimeError: boom)\n"
    ), r.output
    assert not (tmp_path / "d").exists()
