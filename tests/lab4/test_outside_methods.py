"""A detector with an option and a grid, and an attack with an option, added from outside lab4 as the README says:
per method its implementation and one spec entry (the options live in the entry), in a package of one's own
named by an entry point. They then run through `lab4 detect`, `lab4 attack` and `lab4 benchmark` like the
built-in methods: options, --grid, config.json and the benchmark's pass-through included."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.lab4.plugins import installed, write_plugin

IMPLEMENTATION = '''
    import torch.nn.functional as F

    from lab4_ood.attacks.base import input_grad
    from lab4_ood.detectors import Detector


    class Blend(Detector):
        """w·max logit + (1 − w)·max softmax"""

        def __init__(self, model, weight=0.5):
            self.model, self.weight = model, weight

        def scores(self, x):
            logits = self.model(x).float()
            return self.weight * logits.amax(1) + (1 - self.weight) * F.softmax(logits, 1).amax(1)


    def nudge(model, x, y, eps, *, scale=1.0):
        """One signed gradient step of scale·ε."""
        return (x.detach() + scale * eps * input_grad(model, x, y).sign()).clamp(0, 1)
'''
SPEC = """
    from lab4_ood.methods import Attack, Detector, Option

    BLEND = Detector(
        "blend",
        "w·max logit + (1 − w)·max softmax (--blend-weight)",
        "mymethods.implementation:Blend",
        (Option("blend_weight", float, 0.5, "weight w of the max logit.", grid=(0.0, 1.0), min=0, max=1,
                arg="weight"),),
    )
    NUDGE = Attack(
        "nudge",
        "one signed gradient step of --nudge-scale·ε",
        "mymethods.implementation:nudge",
        (Option("nudge_scale", float, 1.0, "multiplies the step.", min=0, arg="scale"),),
    )
"""


@pytest.fixture
def lab4_with_mine(tmp_path):
    root = write_plugin(
        tmp_path / "site",
        "mymethods",
        {"implementation.py": IMPLEMENTATION, "spec.py": SPEC},
        {
            "dla.lab4.detectors": {"blend": "mymethods.spec:BLEND"},
            "dla.lab4.attacks": {"nudge": "mymethods.spec:NUDGE"},
        },
    )
    with installed(root, "mymethods") as group:
        yield group


def run(group, *args):
    result = CliRunner().invoke(group, [str(a) for a in args])
    assert result.exit_code == 0, result.output + "".join(
        __import__("traceback").format_exception(*result.exc_info)
    )
    return result.output


def read(folder, name="metrics.json"):
    data = json.loads((folder / name).read_text())
    return data.get("config", data)


def test_a_detector_from_outside_runs_through_detect_with_its_option_and_grid(
    lab4_with_mine, digits_run, tmp_path
):
    group = lab4_with_mine
    help_text = " ".join(run(group, "detect", "--help").split())
    assert "blend w·max logit + (1 − w)·max softmax (--blend-weight)" in help_text
    assert "--blend-weight" in help_text and "--grid-blend-weight" in help_text
    common = ("--model", digits_run, "--ood", "digits:5-9", "--limit", "60", "--cpu")
    run(
        group,
        "detect",
        *common,
        "--method",
        "msp,maxlogit,blend",
        "--blend-weight",
        "1",
        "--out",
        tmp_path / "d",
    )
    results = read(tmp_path / "d")["results"]
    # w = 1 is the max logit: the option reached the constructor
    assert results["blend"]["digits:5-9"] == results["maxlogit"]["digits:5-9"] != results["msp"]["digits:5-9"]
    assert read(tmp_path / "d", "config.json")["blend_weight"] == 1.0
    out = run(group, "detect", *common, "--method", "blend", "--grid", "--grid-T", "1", "--grid-eps", "0",
              "--grid-blend-weight", "0,1", "--out", tmp_path / "g")  # fmt: skip
    grid = read(tmp_path / "g")["grids"]["blend"]
    assert [row["blend_weight"] for row in grid["rows"]] == [0.0, 1.0] and grid["option"] == "--blend-weight"
    assert grid["best"] == max(grid["rows"], key=lambda r: r["auroc"]) and "blend grid --blend-weight" in out


def test_an_attack_from_outside_runs_through_attack_with_its_option(lab4_with_mine, digits_run, tmp_path):
    group = lab4_with_mine
    assert "nudge" in run(group, "attack", "--help") and "--nudge-scale" in run(group, "attack", "--help")
    common = ("--model", digits_run, "--eps", "0,0.3", "--limit", "60", "--cpu")
    run(group, "attack", *common, "--method", "fgsm,nudge", "--out", tmp_path / "a")
    rows = read(tmp_path / "a")["rows"]
    # scale 1 is FGSM, image for image
    assert [r["by_method"]["nudge"] for r in rows] == [r["by_method"]["fgsm"] for r in rows]
    assert rows[1]["by_method"]["nudge"]["accuracy"] < rows[0]["by_method"]["nudge"]["accuracy"]
    run(group, "attack", *common, "--method", "nudge", "--nudge-scale", "0", "--out", tmp_path / "z")
    still = read(tmp_path / "z")
    assert [r["accuracy"] for r in still["rows"]] == [still["clean_accuracy"]] * 2  # scale 0 moves nothing
    assert read(tmp_path / "z", "config.json")["nudge_scale"] == 0.0


def test_methods_from_outside_run_through_benchmark_with_their_options(lab4_with_mine, digits_run, tmp_path):
    out = tmp_path / "bench"
    run(lab4_with_mine, "benchmark", "--model", digits_run, "--methods", "msp,blend", "--far", "digits:5-9",
        "--attacks", "fgsm,nudge", "--attack-eps", "0,0.3", "--blend-weight", "1", "--nudge-scale", "0",
        "--limit", "60", "--cpu", "--out", out)  # fmt: skip
    model = read(out)["models"][digits_run.name]
    assert set(model["results"]) == {"msp", "blend"}
    assert read(out / digits_run.name / "detect", "config.json")["blend_weight"] == 1.0
    nudge, fgsm = (model["robust"][a]["rows"] for a in ("nudge", "fgsm"))
    assert read(out / digits_run.name / "attack-nudge", "config.json")["nudge_scale"] == 0.0
    assert nudge[1]["accuracy"] == nudge[0]["accuracy"] > fgsm[1]["accuracy"]  # --nudge-scale 0 reached it
