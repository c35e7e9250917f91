"""End to end through the `lab4` command: digits 0-4 in distribution, 5-9 out; and the fixture data_dir."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lab4_ood.cli import group

FAST = ["--epochs", "6", "--lr", "3e-3", "--batch-size", "64", "--cpu"]
MLP = ["--dataset", "digits:0-4", "--model", "mlp", "--depth", "1", "--width", "64"]


def lab4(*args, ok=True):
    result = CliRunner().invoke(group, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def metrics(run):
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab4")
    lab4("train", *MLP, *FAST, "--out", root / "base")
    return root


def test_help_has_examples_and_states_the_convention():
    for command in ("detect", "train-ae", "attack", "train"):
        out = lab4(command, "--help").output
        assert "Example:" in out and "lab4 " in out
    assert "higher = more in-distribution" in lab4("detect", "--help").output
    assert "ID is the positive class" in lab4("detect", "--help").output


@pytest.mark.slow
def test_detect_digits_all_methods(runs, tmp_path):
    base = metrics(runs / "base")
    assert base["test_accuracy"] > 0.9 and (runs / "base" / "model.safetensors").exists()
    lab4(
        "train-ae",
        "--encoder",
        runs / "base",
        "--epochs",
        "2",
        "--cpu",
        "--width",
        "16",
        "--out",
        tmp_path / "ae",
    )
    assert metrics(tmp_path / "ae")["test_mse"] > 0
    out = lab4(
        "detect",
        "--model",
        runs / "base",
        "--ood",
        "digits:5-9",
        "--ood",
        "fake",
        "--method",
        "msp,maxlogit,energy,odin,mahalanobis,recon",
        "--autoencoder",
        tmp_path / "ae",
        "--grid",
        "--grid-T",
        "1,100",
        "--grid-eps",
        "0,0.002",
        "--threads",
        "1",
        "--out",
        tmp_path / "det",
    ).output
    assert "mahalanobis" in out and "best: T=" in out
    m = metrics(tmp_path / "det")
    assert m["id_accuracy"] == pytest.approx(base["test_accuracy"])
    assert m["threads"] == {"threads": 1, "why": "--threads"}
    assert set(m["results"]) == {"msp", "maxlogit", "energy", "odin", "mahalanobis", "recon"}
    for per_ood in m["results"].values():
        assert set(per_ood) == {"digits:5-9", "fake"}
        for r in per_ood.values():
            assert set(r) == {"auroc", "aupr_in", "aupr_out", "fpr95"} and all(
                0 <= v <= 1 for v in r.values()
            )
    assert m["results"]["msp"]["digits:5-9"]["auroc"] > 0.7
    assert m["results"]["mahalanobis"]["fake"]["auroc"] > 0.9
    assert len(m["odin_grid"]["rows"]) == 4
    for name in ("scores_msp.png", "roc_odin.png", "pr_recon.png"):
        assert (tmp_path / "det" / name).stat().st_size > 0


@pytest.mark.slow
def test_attack_digits(runs, tmp_path):
    out = lab4("attack", "--model", runs / "base", "--eps", "0,0.05,0.2", "--threads", "1",
               "--out", tmp_path / "fgsm").output  # fmt: skip
    assert metrics(tmp_path / "fgsm")["threads"] == {"threads": 1, "why": "--threads"}
    rows = metrics(tmp_path / "fgsm")["rows"]
    assert rows[0]["accuracy"] == pytest.approx(metrics(runs / "base")["test_accuracy"])  # ε = 0 is clean
    assert rows[0]["accuracy"] > rows[1]["accuracy"] > rows[2]["accuracy"] and "accuracy" in out
    assert (tmp_path / "fgsm" / "adversarial_examples.png").exists()
    assert (tmp_path / "fgsm" / "accuracy_vs_eps.png").exists()
    lab4(
        "attack",
        "--model",
        runs / "base",
        "--method",
        "pgd",
        "--eps",
        "0,0.2",
        "--targeted",
        "--target-class",
        "3",
        "--steps",
        "5",
        "--out",
        tmp_path / "pgd",
    )
    rows = metrics(tmp_path / "pgd")["rows"]
    assert rows[1]["target_success"] > rows[0]["target_success"] + 0.3


def test_attack_runs_the_iterative_attacks_and_takes_l2_radii_above_1(runs, tmp_path):
    for method, radii in (("bim", "0,0.2"), ("mifgsm", "0,0.2"), ("pgd-l2", "0,3")):
        out = lab4("attack", "--model", runs / "base", "--method", method, "--eps", radii, "--steps", "3",
                   "--limit", "60", "--out", tmp_path / method).output  # fmt: skip
        rows = metrics(tmp_path / method)["rows"]
        assert [r["eps"] for r in rows] == [float(e) for e in radii.split(",")], (method, out)
        assert rows[1]["accuracy"] < rows[0]["accuracy"], (method, rows)
    for radii, code, message in (
        ("0,1.5", 1, "Error: --eps: every ε must lie in [0, 1]"),
        ("0,inf", 2, "Error: Invalid value for '--eps': inf is not a finite number; expected comma-separated "
         "finite numbers, each ≥ 0"),
        ("-1", 2, "Error: Invalid value for '--eps': -1 is out of range; expected comma-separated"),
    ):  # fmt: skip
        method = "bim" if radii == "0,1.5" else "pgd-l2"
        r = lab4("attack", "--model", runs / "base", "--method", method, "--eps", radii,
                 "--out", tmp_path / "bad", ok=False)  # fmt: skip
        # the Error line (CliRunner calls the group, whose usage errors add click's usage lines above it)
        assert r.exit_code == code and r.output.strip().splitlines()[-1].startswith(message), r.output
    assert "pgd-l2" in lab4("attack", "--help").output and "torchattacks" in lab4("attack", "--help").output


@pytest.mark.slow
def test_robust_training_runs_and_outlier_exposure_helps(runs, tmp_path):
    lab4(
        "train",
        *MLP,
        *FAST,
        "--adversarial",
        "fgsm",
        "--eps",
        "0.1",
        "--adv-fraction",
        "0.5",
        "--out",
        tmp_path / "adv",
    )
    adv = metrics(tmp_path / "adv")
    assert adv["test_accuracy"] > 0.8 and "test_fgsm_accuracy@0.1" in adv
    lab4("train", *MLP, *FAST, "--outlier-exposure", "digits:5-9", "--out", tmp_path / "oe")
    for name in ("base", "oe"):
        run = runs / "base" if name == "base" else tmp_path / "oe"
        lab4(
            "detect",
            "--model",
            run,
            "--ood",
            "digits:5-9",
            "--method",
            "msp",
            "--out",
            tmp_path / f"d-{name}",
        )
    auroc = {n: metrics(tmp_path / f"d-{n}")["results"]["msp"]["digits:5-9"]["auroc"] for n in ("base", "oe")}
    assert auroc["oe"] > auroc["base"]


@pytest.mark.slow
def test_fixture_data_cifar_with_grey_and_fake_ood(data_dir, tmp_path):
    common = ["--data-dir", data_dir]
    lab4(
        "train",
        "--dataset",
        "cifar10",
        "--model",
        "cnn",
        "--depth",
        "1",
        "--width",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--cpu",
        *common,
        "--out",
        tmp_path / "c10",
    )
    lab4(
        "detect",
        "--model",
        tmp_path / "c10",
        "--ood",
        "cifar100:people",
        "--ood",
        "mnist",
        "--ood",
        "fake",
        "--method",
        "energy,odin",
        "--T",
        "10",
        "--limit",
        "50",
        *common,
        "--out",
        tmp_path / "det",
    )
    m = metrics(tmp_path / "det")
    assert set(m["results"]["odin"]) == {"cifar100:people", "mnist", "fake"}
    assert m["odin"] == {"temperature": 10.0, "eps": 0.0014}
    lab4(
        "attack",
        "--model",
        tmp_path / "c10",
        "--eps",
        "0,0.03",
        "--limit",
        "40",
        *common,
        "--out",
        tmp_path / "att",
    )
    assert len(metrics(tmp_path / "att")["rows"]) == 2


def test_user_mistakes_are_one_line_errors(runs, tmp_path):
    cases = [
        (
            [
                "detect",
                "--model",
                runs / "base",
                "--ood",
                "fake",
                "--method",
                "msp,bogus",
                "--out",
                tmp_path / "a",
            ],
            "--method: unknown bogus",
        ),
        (
            [
                "detect",
                "--model",
                runs / "base",
                "--ood",
                "fake",
                "--method",
                "recon",
                "--out",
                tmp_path / "b",
            ],
            "--method recon needs --autoencoder",
        ),
        (
            ["detect", "--model", runs / "base", "--id", "digits", "--ood", "fake", "--out", tmp_path / "c"],
            "the model has 5 classes but digits has 10",
        ),
        (
            ["detect", "--model", tmp_path, "--id", "digits", "--ood", "fake", "--out", tmp_path / "d"],
            "no trained model",
        ),
        (["attack", "--model", runs / "base", "--targeted", "--out", tmp_path / "e"], "go together"),
        (["attack", "--model", runs / "base", "--eps", "0,2", "--out", tmp_path / "f"], "must lie in [0, 1]"),
        (
            [
                "attack",
                "--model",
                runs / "base",
                "--targeted",
                "--target-class",
                "7",
                "--out",
                tmp_path / "g",
            ],
            "--target-class 7 is not a class",
        ),
        (["train", *MLP, "--epochs", "1", "--out", runs / "base"], "already holds a run"),
        (["train", "--dataset", "nope", "--out", tmp_path / "h"], "unknown dataset 'nope'"),
    ]
    for argv, message in cases:
        r = lab4(*argv, ok=False)
        assert r.exit_code == 1, (argv, r.output)
        assert r.output.startswith("Error: ") and message in r.output, (argv, r.output)
        assert "Traceback" not in r.output


def test_commands_without_resume_do_not_suggest_it(runs, tmp_path):
    lab4("attack", "--model", runs / "base", "--eps", "0", "--limit", "50", "--out", tmp_path / "att")
    for argv in (
        ["attack", "--model", runs / "base", "--eps", "0", "--limit", "50"],
        ["detect", "--model", runs / "base", "--ood", "fake", "--limit", "50"],
    ):
        r = lab4(*argv, "--out", tmp_path / "att", ok=False)
        assert r.exit_code == 1 and r.output.startswith("Error: "), r.output
        assert "already holds a run" in r.output and "--resume" not in r.output, r.output


@pytest.mark.parametrize(
    "option,value",
    [
        ("--grid-T", "0,10"),
        ("--grid-T", "-1"),
        ("--grid-T", "nan,10"),  # a lone nan or ±inf: tests/lab4/test_float_options.py, as for every option
        ("--grid-eps", "0,-0.001"),
    ],
)
def test_odin_grid_values_are_checked_at_the_edge(runs, tmp_path, option, value):
    """T = 0 made NaN scores that came out as AUPR 1.0 / FPR95 0.0 with exit 0: refuse before any work."""
    r = lab4(
        "detect",
        "--model",
        runs / "base",
        "--ood",
        "fake",
        "--method",
        "odin",
        "--grid",
        option,
        value,
        "--out",
        tmp_path / "det",
        ok=False,
    )
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]  # the usage lines above it are CliRunner's (not lab4's script)
    assert line.startswith(f"Error: Invalid value for '{option}': "), r.output
    assert "expected comma-separated finite numbers, each" in line, r.output
    assert not (tmp_path / "det").exists()  # refused before the run folder was made


def numbers(obj):
    """metrics.json without its timings."""
    if isinstance(obj, dict):
        return {k: numbers(v) for k, v in obj.items() if "seconds" not in k and "time" not in k}
    if isinstance(obj, list):
        return [numbers(v) for v in obj]
    return obj


def scramble_global_rngs(seed):
    """Leave Python's, NumPy's and torch's global generators somewhere else before each run."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.mark.slow
def test_same_seed_same_metrics_for_every_command(tmp_path):
    """--seed alone fixes a run: whatever state the process's generators are in, every number repeats."""
    model = ["--model", tmp_path / "train0"]
    commands = {
        "train": ["train", *MLP, "--epochs", "2", "--batch-size", "64", "--cpu", "--seed", "3"],
        "train-ae": [
            "train-ae",
            "--encoder",
            tmp_path / "train0",
            "--epochs",
            "1",
            "--width",
            "8",
            "--seed",
            "3",
        ],
        "attack": ["attack", *model, "--method", "pgd", "--eps", "0.1", "--steps", "2", "--seed", "3"],
        "detect": ["detect", *model, "--ood", "fake", "--method", "msp,odin,mahalanobis", "--limit", "100"],
    }
    for name, argv in commands.items():
        for i in range(2):
            scramble_global_rngs(100 + i)
            lab4(*argv, "--out", tmp_path / f"{name}{i}")
        first, second = metrics(tmp_path / f"{name}0"), metrics(tmp_path / f"{name}1")
        assert numbers(first) == numbers(second), name


def test_a_damaged_config_json_of_the_model_run_is_one_error_line(runs, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(runs / "base", broken)
    (broken / "config.json").write_text('{"config": {"dataset": "digits:0-4"')  # cut short mid-write
    r = lab4("detect", "--model", broken, "--ood", "fake", "--limit", "50", "--out", tmp_path / "d", ok=False)
    assert r.exit_code == 1 and r.output.startswith("Error: "), r.output
    assert "config.json is damaged" in r.output and not (tmp_path / "d").exists()


def _titles(monkeypatch) -> dict[str, list[str]]:
    """The titles of every figure dla_core.plots saves, by file name (suptitle first, then each axes')."""
    from dla_core import plots

    titles: dict[str, list[str]] = {}
    save = plots._save

    def keep(fig, path, rect=None):
        suptitle = fig._suptitle.get_text() if fig._suptitle else ""
        titles[path.name] = [suptitle, *(ax.get_title() for ax in fig.axes)]
        return save(fig, path, rect)

    monkeypatch.setattr(plots, "_save", keep)
    return titles


def test_detect_plots_name_the_model_and_odins_t_and_eps_and_say_where_they_went(runs, tmp_path, monkeypatch):
    titles = _titles(monkeypatch)
    out = lab4("detect", "--model", runs / "base", "--ood", "digits:5-9", "--method", "msp,odin", "--T", "10",
               "--eps", "0.002", "--limit", "40", "--out", tmp_path / "det").output  # fmt: skip
    assert titles["scores_odin.png"][1] == "odin (T=10, ε=0.002), model base"
    assert titles["roc_msp.png"][1] == "ROC, msp, model base"
    assert not any(str(tmp_path) in t or str(runs) in t for ts in titles.values() for t in ts)
    assert f"→ {tmp_path / 'det'}: metrics.json; plots scores_<method>.png" in out


def test_the_adversarial_grid_has_a_row_per_eps(runs, tmp_path, monkeypatch):
    titles = _titles(monkeypatch)
    lab4("attack", "--model", runs / "base", "--eps", "0,0.05,0.2", "--limit", "16", "--threads", "1",
         "--out", tmp_path / "fgsm")  # fmt: skip
    grid = titles["adversarial_examples.png"]
    assert grid[0] == "fgsm on base: predictions under attack, a row per ε"
    assert len(grid) - 1 == 4 * 8  # clean + three ε, 8 images each
    assert "model base" in titles["accuracy_vs_eps.png"][1]
