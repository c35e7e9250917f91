"""Detectors and attacks are declared once (lab4_ood/methods.py): an implementation plus its entry is a method of
the CLI, with its --help line, its options and its traits."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import lab4_ood.cli
from dla_core.errors import DlaError
from lab4_ood import attacks, methods
from lab4_ood import detectors as det
from tests.lab4.plugins import installed, write_plugin

ZERO_AND_NOOP = '''
    import torch

    from lab4_ood.detectors import Detector
    from lab4_ood.methods import Attack
    from lab4_ood.methods import Detector as DetectorSpec


    class Zero(Detector):
        def scores(self, x):
            return torch.zeros(len(x))


    def noop(model, x, y, eps, **anything):
        """Leaves the images as they are (and would take any option it were given)."""
        assert not anything, anything
        return x.detach().clone()


    ZERO = DetectorSpec("zero", "every image scores 0 (a test plug-in)", "plugged.methods:Zero")
    NOOP = Attack("noop", "leaves the images as they are", "plugged.methods:noop")
'''


@pytest.fixture
def plugged(tmp_path):
    """lab4's CLI with one more detector (`zero`) and one more attack (`noop`); both gone after."""
    entry_points = {"dla.lab4.detectors": {"zero": "plugged.methods:ZERO"},
                    "dla.lab4.attacks": {"noop": "plugged.methods:NOOP"}}  # fmt: skip
    root = write_plugin(tmp_path / "site", "plugged", {"methods.py": ZERO_AND_NOOP}, entry_points)
    with installed(root, "plugged") as group:
        yield group


def run(group, *args, ok=True):
    result = CliRunner().invoke(group, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_detect_help_lists_every_declared_detector_with_its_summary(plugged):
    out = run(plugged, "detect", "--help").output
    flat = " ".join(out.split())
    for name, spec in methods.detectors().items():
        assert f"{name} {spec.summary}" in flat, (name, out)
    assert "zero" in methods.detectors() and "every image scores 0 (a test plug-in)" in out


def test_a_declared_detector_runs_through_detect_and_unknown_names_keep_their_errors(
    plugged, digits_run, tmp_path
):
    run(plugged, "detect", "--model", digits_run, "--ood", "fake", "--method", "msp,zero", "--limit", "30",
        "--cpu", "--out", tmp_path / "det")  # fmt: skip
    results = json.loads((tmp_path / "det" / "metrics.json").read_text())["results"]
    assert set(results) == {"msp", "zero"} and results["zero"]["fake"]["auroc"] == 0.5
    r = run(plugged, "detect", "--model", digits_run, "--ood", "fake", "--method", "bogus",
            "--out", tmp_path / "x", ok=False)  # fmt: skip
    choices = ", ".join(methods.detectors())
    assert choices.endswith(f", {methods.DETECTORS[-1].name}, zero")  # the plug-in after the table
    assert r.exit_code == 1 and r.output == f"Error: --method: unknown bogus (choose from {choices})\n"
    with pytest.raises(DlaError, match=rf"^unknown method 'bogus' \(choose {choices}\)$"):
        det.make_detector("bogus", torch.nn.Identity(), {}, torch.device("cpu"))


def test_options_a_detector_needs_are_checked_before_any_work(digits_run, tmp_path):
    r = run(lab4_ood.cli.group, "detect", "--model", digits_run, "--ood", "fake", "--method", "msp,recon",
            "--out", tmp_path / "b", ok=False)  # fmt: skip
    message = "--method recon needs --autoencoder RUN (the --out folder of 'lab4 train-ae')"
    assert r.exit_code == 1 and r.output == f"Error: {message}\n"
    assert not (tmp_path / "b").exists()  # refused before the run folder was made
    with pytest.raises(DlaError, match=r"^--method recon needs --autoencoder RUN"):
        det.make_detector("recon", torch.nn.Identity(), {}, torch.device("cpu"))
    odin = det.make_detector(
        "odin", torch.nn.Identity(), {"temperature": 7.0, "eps": 0.25}, torch.device("cpu")
    )
    assert isinstance(odin, det.ODIN) and (odin.temperature, odin.eps) == (7.0, 0.25) and odin.name == "odin"


def test_a_declared_attack_is_a_choice_of_attack_and_train_and_gets_only_the_options_it_declares(
    plugged, digits_run, tmp_path
):
    choices = f"[{'|'.join(methods.attacks())}]"
    assert choices.endswith(f"|{methods.ATTACKS[-1].name}|noop]")  # the plug-in after the table
    assert choices in run(plugged, "attack", "--help").output
    assert choices in run(plugged, "train", "--help").output
    run(plugged, "attack", "--model", digits_run, "--method", "noop", "--eps", "0,0.5", "--limit", "30",
        "--cpu", "--out", tmp_path / "att")  # fmt: skip
    rows = json.loads((tmp_path / "att" / "metrics.json").read_text())["rows"]
    assert rows[0]["accuracy"] == rows[1]["accuracy"] > 0.5
    x, y = torch.rand(2, 3), torch.zeros(2, dtype=torch.long)
    assert torch.equal(
        attacks.attack("noop", torch.nn.Identity(), x, y, 0.1, steps=3, seed=1, targeted=True), x
    )
    r = run(
        plugged, "attack", "--model", digits_run, "--method", "pgd,bogus", "--out", tmp_path / "x", ok=False
    )
    listed = ", ".join(map(repr, methods.attacks()))
    assert r.exit_code == 2 and f"'bogus' is not one of {listed}" in r.output and "'noop'" in listed


@pytest.mark.parametrize("spec", [*methods.DETECTORS, *methods.ATTACKS], ids=lambda s: s.name)
def test_each_declaration_matches_its_implementation(spec):
    """The implementation imports, and takes every keyword its entry declares (options, seed, targeted)."""
    target = methods.implementation(spec)
    if isinstance(spec, methods.Detector):
        assert issubclass(target, det.Detector)
        build = target.build if "build" in vars(target) else target.__init__
        parameters = inspect.signature(build).parameters
        declared = {o.keyword for o in spec.options}
    else:
        parameters = inspect.signature(target).parameters
        declared = attacks.base.accepted(spec)
        # declared, and so passed: a targeted mode where the entry says so, and only there
        assert ("targeted" in parameters) == spec.targeted and ("seed" in parameters) == spec.seeded
    assert declared <= set(parameters), (spec.name, declared - set(parameters))


@pytest.mark.parametrize("readme", ["README.md", "lab4_ood/README.md"])
def test_the_readmes_method_tables_are_generated_from_the_declarations(readme):
    text = (Path(__file__).parents[2] / readme).read_text()
    assert "| `knn` |" in text and "| `autoattack` |" in text
    assert text == methods.with_tables(text), f"the tables drifted: python -m lab4_ood.methods {readme}"


def test_attacks_are_refused_by_their_declared_traits():
    from lab4_ood.robustness import refusal

    assert refusal(["fgsm", "apgd-dlr", "autoattack"], targeted=False, num_classes=4) is None
    assert refusal(["fgsm", "apgd-dlr", "autoattack"], targeted=False, num_classes=2) == (
        "apgd-dlr, autoattack: needs at least 4 classes, the dataset has 2"
    )
    # autoattack's components decide: standard runs APGD-T (≥ 4 classes), rand only APGD-CE and APGD-DLR (≥ 3)
    assert refusal(["autoattack"], targeted=False, num_classes=3) == (
        "autoattack: needs at least 4 classes, the dataset has 3"
    )
    assert (
        refusal(["autoattack", "apgd-dlr"], targeted=False, num_classes=3, values={"version": "rand"}) is None
    )
    assert (
        refusal(["apgd-t"], targeted=False, num_classes=3)
        == "apgd-t: needs at least 4 classes, the dataset has 3"
    )
    targeted = ", ".join(name for name, a in methods.attacks().items() if a.targeted)
    assert targeted == "fgsm, pgd, bim, mifgsm, pgd-l2, cw, square"
    assert refusal(["pgd", "deepfool"], targeted=True) == (
        f"--targeted: deepfool has no targeted mode (targeted: {targeted})"
    )
    assert refusal(["pgd", "nope"], targeted=False).startswith(
        "--method: unknown nope (choose from fgsm, pgd"
    )


def test_an_attacks_own_default_applies_unless_the_shared_option_is_given():
    """steps is one option of many attacks; apgd-t, fab, fab-t and autoattack declare their own default (100, the
    original AutoAttack's): the config's and the CLI's default is then None, and each attack gets its own."""
    import dataclasses

    from lab4_ood.robustness import AttackConfig, attack_options

    cfg = AttackConfig(model=Path("m"), dataset="digits")
    assert cfg.steps is None
    own = {name: attack_options(cfg, name)["steps"] for name, a in methods.attacks().items() if "steps" in
           {o.name for o in a.options}}  # fmt: skip
    assert own == {name: methods.attacks()[name].defaults.get("steps", 10) for name in own}
    assert own["apgd-t"] == own["autoattack"] == 100 and own["pgd"] == 10
    given = dataclasses.replace(cfg, steps=3)
    assert {attack_options(given, name)["steps"] for name in own} == {3}
