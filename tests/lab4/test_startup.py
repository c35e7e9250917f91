"""`lab4 --help`, every `lab4 CMD --help` and option errors answer without torch (tests/startup.py), with the
detectors and attacks listed from the declarations in methods.py."""

from __future__ import annotations

import pytest

from lab4_ood import methods
from lab4_ood.cli import group
from tests.startup import check_help, check_option_error, run_script


@pytest.mark.parametrize("command", [None, *group.commands])
def test_help_imports_nothing_heavy(command, tmp_path):
    check_help("lab4", command, tmp_path)


def test_help_without_torch_lists_every_declared_method(tmp_path):
    from lab4_ood import methods

    flat = " ".join(run_script("lab4", "detect", "--help", cwd=tmp_path).stdout.split())
    for name, spec in methods.detectors().items():
        assert f"{name} {spec.summary}" in flat, name
    choices = f"[{'|'.join(methods.attacks())}]"
    assert choices in run_script("lab4", "attack", "--help", cwd=tmp_path).stdout
    assert choices in run_script("lab4", "train", "--help", cwd=tmp_path).stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["detect", "--model", "run", "--ood", "fake", "--method", "msp,bogus", "--out", "x"], 1,
         f"Error: --method: unknown bogus (choose from {', '.join(d.name for d in methods.DETECTORS)})\n"),
        (["attack", "--model", "run", "--method", "cw,bogus", "--out", "x"], 2,
         f"'bogus' is not one of {', '.join(repr(a.name) for a in methods.ATTACKS)}."),
        (["attack", "--model", "run", "--method", "pgd,cw", "--out", "x"], 1, "Error: --method mixes L2 attacks (cw) with L∞ attacks (pgd)"),
        (["attack", "--model", "run", "--eps", "0,2", "--out", "x"], 1, "Error: --eps: every ε must lie in [0, 1]"),
        (["attack", "--model", "run", "--targeted", "--out", "x"], 1, "Error: --targeted and --target-class K go"),
        (["train", "--dataset", "digits"], 2, "Error: Missing option '--out'."),
        (["train", "--dataset", "digits", "--adversarial", "fgsm", "--eps", "0", "--out", "x"], 1,
         "Error: --adversarial needs --eps > 0"),
        (["train", "--dataset", "digits", "--adversarial", "pgd-l2", "--eps", "inf", "--out", "x"], 2,
         "Error: Invalid value for '--eps': inf is not a finite number; expected a number ≥ 0\n"),
        (["reproduce", "--only", "bogus", "--out", "x"], 1, "Error: --only: unknown step bogus (steps: base-train, "),
    ],
)  # fmt: skip
def test_option_errors_import_nothing_heavy(args, code, message, tmp_path):
    (tmp_path / "run").mkdir()
    check_option_error("lab4", args, code, message, tmp_path)
