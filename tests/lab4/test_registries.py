"""Detectors and attacks are registries: one class or function plus its registration is a new method of the CLI."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from click.testing import CliRunner

import lab4_ood.cli
from dla_core.errors import DlaError
from lab4_ood import attacks
from lab4_ood import detectors as det


@pytest.fixture
def plugged():
    """lab4's CLI rebuilt with one more detector (`zero`) and one more attack (`noop`); both gone after."""

    @det.register
    class Zero(det.Detector):
        """every image scores 0 (a test plug-in)"""

        name = "zero"

        def scores(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(x))

    @attacks.register
    def noop(model, x, y, eps, *, targeted=False):
        """Leaves the images as they are (takes no `steps`)."""
        return x.detach().clone()

    try:
        yield importlib.reload(lab4_ood.cli).group
    finally:
        del det.DETECTORS["zero"], attacks.ATTACKS["noop"]
        importlib.reload(lab4_ood.cli)


def run(group, *args, ok=True):
    result = CliRunner().invoke(group, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_detect_help_lists_every_registered_detector_with_its_docstrings_first_line(plugged):
    out = run(plugged, "detect", "--help").output
    flat = " ".join(out.split())
    for name, cls in det.DETECTORS.items():
        assert f"{name} {cls.__doc__.strip().splitlines()[0]}" in flat, (name, out)
    assert "zero" in det.DETECTORS and "every image scores 0 (a test plug-in)" in out


def test_a_registered_detector_runs_through_detect_and_unknown_names_keep_their_errors(
    plugged, digits_run, tmp_path
):
    run(plugged, "detect", "--model", digits_run, "--ood", "fake", "--method", "msp,zero", "--limit", "30",
        "--cpu", "--out", tmp_path / "det")  # fmt: skip
    results = json.loads((tmp_path / "det" / "metrics.json").read_text())["results"]
    assert set(results) == {"msp", "zero"} and results["zero"]["fake"]["auroc"] == 0.5
    r = run(plugged, "detect", "--model", digits_run, "--ood", "fake", "--method", "bogus",
            "--out", tmp_path / "x", ok=False)  # fmt: skip
    choices = "msp, maxlogit, energy, odin, mahalanobis, recon, knn, vim, rmds, gen, entropy, react, ash, scale, dice, fdbd, nci, nac, weiper, adascale, zero"
    assert r.exit_code == 1 and r.output == f"Error: --method: unknown bogus (choose from {choices})\n"
    with pytest.raises(DlaError, match=rf"^unknown method 'bogus' \(choose {choices}\)$"):
        det.make_detector("bogus", torch.nn.Identity(), det.DetectorOptions(), torch.device("cpu"))


def test_options_a_detector_needs_are_checked_before_any_work(digits_run, tmp_path):
    r = run(lab4_ood.cli.group, "detect", "--model", digits_run, "--ood", "fake", "--method", "msp,recon",
            "--out", tmp_path / "b", ok=False)  # fmt: skip
    message = "--method recon needs --autoencoder RUN (the --out folder of 'lab4 train-ae')"
    assert r.exit_code == 1 and r.output == f"Error: {message}\n"
    assert not (tmp_path / "b").exists()  # refused before the run folder was made
    with pytest.raises(DlaError, match=r"^--method recon needs --autoencoder RUN"):
        det.make_detector("recon", torch.nn.Identity(), det.DetectorOptions(), torch.device("cpu"))
    odin = det.make_detector(
        "odin", torch.nn.Identity(), det.DetectorOptions(temperature=7.0, eps=0.25), torch.device("cpu")
    )
    assert isinstance(odin, det.ODIN) and (odin.temperature, odin.eps) == (7.0, 0.25)


def test_a_registered_attack_is_a_choice_of_attack_and_train_and_gets_only_the_options_it_names(
    plugged, digits_run, tmp_path
):
    choices = "[fgsm|pgd|bim|mifgsm|pgd-l2|apgd|apgd-dlr|cw|deepfool|square|autoattack|noop]"
    assert choices in run(plugged, "attack", "--help").output
    assert choices in run(plugged, "train", "--help").output
    run(plugged, "attack", "--model", digits_run, "--method", "noop", "--eps", "0,0.5", "--limit", "30",
        "--cpu", "--out", tmp_path / "att")  # fmt: skip
    rows = json.loads((tmp_path / "att" / "metrics.json").read_text())["rows"]
    assert rows[0]["accuracy"] == rows[1]["accuracy"] > 0.5
    x, y = torch.rand(2, 3), torch.zeros(2, dtype=torch.long)
    assert torch.equal(attacks.attack("noop", torch.nn.Identity(), x, y, 0.1, steps=3), x)
    r = run(
        plugged, "attack", "--model", digits_run, "--method", "pgd,bogus", "--out", tmp_path / "x", ok=False
    )
    assert (
        r.exit_code == 2
        and "'bogus' is not one of 'fgsm', 'pgd', 'bim', 'mifgsm', 'pgd-l2', 'apgd', 'apgd-dlr', 'cw', 'deepfool', 'square', 'autoattack', 'noop'"
        in r.output
    )


def test_the_light_table_of_methods_is_the_registries():
    """lab4's CLI lists --method and --adversarial from methods.py (no torch at --help): the same names, in the
    same order, with the same one-line summaries as the registered detectors and attacks."""
    from lab4_ood import methods

    assert list(methods.DETECTORS.items()) == [(n, det.summary(c)) for n, c in det.DETECTORS.items()]
    assert tuple(attacks.ATTACKS) == methods.ATTACKS
    assert methods.detector_summaries() == methods.DETECTORS and methods.attack_names() == methods.ATTACKS
