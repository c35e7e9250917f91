"""`lab4 benchmark`: its numbers are those of separate `lab4 detect` / `lab4 attack` runs, its group means are the
means by hand, and its mistakes are one-line errors before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from dla_core.config import Runtime
from dla_core.stats import read_outcomes
from lab4_ood.benchmark import split_specs
from lab4_ood.cli import group
from lab4_ood.detection import DetectConfig, detect
from lab4_ood.outcomes import auroc_arm, eps_name
from lab4_ood.robustness import AttackConfig, run_attack


def lab4(*args, ok=True):
    result = CliRunner().invoke(group, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_a_comma_continues_a_class_list_unless_a_dataset_name_follows():
    assert split_specs("fake,digits:5,6,digits:7-9") == ["fake", "digits:5,6", "digits:7-9"]
    assert split_specs("cifar100:cat,dog,mnist") == ["cifar100:cat,dog", "mnist"]


def test_benchmark_tables_equal_separate_detect_and_attack_runs(digits_run, batchnorm_run, tmp_path):
    out = tmp_path / "bench"
    methods = ("msp", "energy", "knn")
    lab4("benchmark", "--model", digits_run, "--model", batchnorm_run, "--methods", ",".join(methods),
         "--near", "digits:5-7,digits:8-9", "--far", "fake", "--attacks", "fgsm", "--attack-eps", "0,0.1",
         "--knn-k", "5", "--limit", "60", "--cpu", "--out", out)  # fmt: skip
    m = json.loads((out / "metrics.json").read_text())
    assert m["groups"] == {"near": ["digits:5-7", "digits:8-9"], "far": ["fake"]}
    assert list(m["models"]) == [digits_run.name, batchnorm_run.name]
    table = (out / "table.md").read_text()
    assert (out / "ranking.png").stat().st_size > 0
    for run in (digits_run, batchnorm_run):
        got = m["models"][run.name]
        assert (out / run.name / "detect" / "metrics.json").exists()  # the child run folders
        # which keep their per-example outcomes: the detectors' scores give back their AUROCs
        sets = json.loads((out / run.name / "detect" / "metrics.json").read_text())["outcome_sets"]
        assert sets == ["digits:0-4", "digits:5-7", "digits:8-9", "fake"]
        for method in methods:
            for spec, result in got["results"][method].items():
                arm = auroc_arm(out / run.name / "detect", method, sets, spec)
                assert arm.mean() == pytest.approx(result["auroc"], abs=1e-9)
        for r in got["robust"]["fgsm"]["rows"]:
            robust = read_outcomes(out / run.name / "attack-fgsm", eps_name(r["eps"])).correct
            assert robust.mean() == pytest.approx(r["accuracy"])
        if run is digits_run:  # the separate runs for one model (time): its own numbers below, by hand
            separate = got
        else:
            separate = detect(
                DetectConfig(model=run, id="digits:0-4", ood=("digits:5-7", "digits:8-9", "fake"),
                             methods=methods, knn_k=5, limit=60),
                Runtime(out=tmp_path / f"detect-{run.name}", cpu=True),
            )  # fmt: skip
            assert got["results"] == separate["results"] and got["id_accuracy"] == separate["id_accuracy"]
            attacked = run_attack(
                AttackConfig(model=run, dataset="digits:0-4", method="fgsm", eps=(0.0, 0.1), limit=60),
                Runtime(out=tmp_path / f"attack-{run.name}", cpu=True),
            )
            assert got["robust"]["fgsm"]["rows"] == attacked["rows"]
        for method in methods:
            r = separate["results"][method]
            near = {k: (r["digits:5-7"][k] + r["digits:8-9"][k]) / 2 for k in ("auroc", "fpr95")}
            far = {k: r["fake"][k] for k in ("auroc", "fpr95")}
            assert got["groups"][method]["near"] == pytest.approx(near, abs=1e-15)
            assert got["groups"][method]["far"] == pytest.approx(far, abs=1e-15)
            assert got["mean_auroc"][method] == pytest.approx((near["auroc"] + far["auroc"]) / 2, abs=1e-15)
            row = next(
                line
                for line in table.split(f"## {run.name}")[1].splitlines()
                if line.startswith(f"| {method} |")
            )
            cells = row.strip("| ").split(" | ")
            assert cells[1:] == [f"{100 * v:.2f}" for v in (
                r["digits:5-7"]["auroc"], r["digits:8-9"]["auroc"], r["digits:5-7"]["fpr95"], r["digits:8-9"]["fpr95"],
                near["auroc"], near["fpr95"], r["fake"]["auroc"], r["fake"]["fpr95"], far["auroc"], far["fpr95"],
                (near["auroc"] + far["auroc"]) / 2)]  # fmt: skip
        ranking = got["ranking"]
        assert sorted(ranking) == sorted(methods)
        assert all(np.diff([got["mean_auroc"][k] for k in ranking]) <= 0)  # best first
        assert len({got["mean_auroc"][k] for k in ranking}) > 1  # so the order is seen


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--methods", "msp,bogus", "--near", "fake"], "--methods: unknown bogus"),
        (["--near", "nope"], "unknown dataset 'nope'"),
        (["--near", "fake", "--far", "digits:5-9,fake"], "OOD set fake is in two groups (near and far)"),
        ([], "give the OOD sets"),
        (["--near", "fake", "--group", "noise"], "--group: expected NAME=SPEC,SPEC"),
        (["--near", "fake", "--attacks", "fgsm,bogus"], "--attacks: unknown bogus"),
        (["--near", "fake", "--attacks", "fgsm", "--attack-eps", "0,2"], "must lie in [0, 1]"),
        (["--near", "fake", "--methods", "recon"], "--method recon needs --autoencoder"),
        (["--near", "fake", "--grid-knn-k", "0,5"], "--grid-knn-k: every value must be a whole number ≥ 1"),
        (["--near", "fake", "--grid-dice-p", "50,101"], "'--grid-dice-p': 101 is out of range; expected comma-"
         "separated finite numbers, each in [0, 100]"),
        (["--near", "fake", "--attack-eps", "0,nan"], "'--attack-eps': nan is not a finite number"),
    ],
)  # fmt: skip
def test_benchmark_mistakes_are_one_line_errors_before_any_work(argv, message, digits_run, tmp_path):
    r = lab4("benchmark", "--model", digits_run, *argv, "--out", tmp_path / "b", ok=False)
    usage = message.startswith("'--")  # a value its option's type refuses: click's usage error
    assert r.exit_code == (2 if usage else 1) and message in r.output, r.output
    assert r.output.strip().splitlines()[-1].startswith("Error: "), r.output
    assert "Traceback" not in r.output and not (tmp_path / "b").exists()


def test_benchmark_help_has_an_example():
    out = lab4("benchmark", "--help").output
    assert "Example:" in out and "lab4 benchmark --model" in out and "--near" in out
