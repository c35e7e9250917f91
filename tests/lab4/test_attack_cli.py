"""`lab4 attack` with several attacks: the worst case per image, each attack's accuracy, the curve, the note on
AutoAttack's version (its components, the clean accuracy with n), and the warning when ε = 0 is not the clean accuracy."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from click.testing import CliRunner

import lab4_ood.cli
from dla_core.models import load_model
from lab4_ood import attacks
from lab4_ood.datasets import head, load_id
from tests.lab4.plugins import installed, write_plugin


def run(group, *args, ok=True):
    result = CliRunner().invoke(group, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_several_attacks_give_each_accuracy_and_the_worst_case_per_image(batchnorm_run, tmp_path):
    # a small CNN: on the 8×8 digits MLP the three attacks fool the very same images at every ε
    out = run(lab4_ood.cli.group, "attack", "--model", batchnorm_run, "--method", "autoattack,apgd,fgsm",
              "--n-queries", "40", "--steps", "5", "--eps", "0,0.05,0.1,0.25", "--limit", "80", "--seed", "4",
              "--cpu", "--out", tmp_path / "w").output  # fmt: skip
    m = metrics(tmp_path / "w")
    assert m["methods"] == ["autoattack", "apgd", "fgsm"] and m["method"] == "autoattack,apgd,fgsm"
    assert m["autoattack"]["components"] == ["apgd", "apgd-t", "fab-t", "square"]
    assert m["autoattack"]["version"] == "standard" and m["n"] == 80
    # digits 0-4: 4 wrong classes, so 4 targets; the steps given, and what the original runs
    assert (
        "autoattack standard = APGD-CE → APGD-T (4 targets) → FAB-T (4 targets) → Square (40 queries)" in out
    )
    assert "with 5 steps (the original: 100)" in out and "worst case" in out
    assert f"clean accuracy {m['clean_accuracy']:.4f} on n = 80 test images" in out
    assert "warning" not in out
    # the worst case by hand: an image is robust only if no attack fooled it (attacks with the run's seed)
    model = load_model(batchnorm_run).eval()
    test = head(load_id("digits:0-4", tmp_path / "data", False, val_fraction=0).test, 80)
    x, y = test.images.float() / 255, test.labels
    with torch.no_grad():
        assert m["clean_accuracy"] == pytest.approx((model(x).argmax(1) == y).float().mean().item())
    for row in m["rows"]:
        robust = torch.ones_like(y, dtype=torch.bool)
        for name in m["methods"]:
            adv = attacks.attack(name, model, x, y, row["eps"], steps=5, n_queries=40, seed=4)
            with torch.no_grad():
                right = model(adv).argmax(1) == y
            assert row["by_method"][name]["accuracy"] == pytest.approx(right.float().mean().item()), name
            robust &= right
        assert row["accuracy"] == pytest.approx(robust.float().mean().item())
        assert row["accuracy"] <= min(r["accuracy"] for r in row["by_method"].values())
    # FGSM, last, leaves images robust that the others fool: the worst case is not the last attack's accuracy
    assert any(r["accuracy"] < r["by_method"]["fgsm"]["accuracy"] for r in m["rows"][1:]), [
        (r["eps"], r["accuracy"], {k: v["accuracy"] for k, v in r["by_method"].items()}) for r in m["rows"]
    ]
    assert m["rows"][0]["accuracy"] == pytest.approx(m["clean_accuracy"])
    assert m["rows"][-1]["accuracy"] < m["rows"][1]["accuracy"] < m["rows"][0]["accuracy"]
    assert (tmp_path / "w" / "accuracy_vs_eps.png").stat().st_size > 0
    # one attack: rows as before (no by_method), plus the clean accuracy
    run(lab4_ood.cli.group, "attack", "--model", batchnorm_run, "--method", "apgd", "--eps", "0,0.1", "--limit",
        "40", "--cpu", "--out", tmp_path / "one")  # fmt: skip
    one = metrics(tmp_path / "one")
    assert set(one["rows"][0]) == {"eps", "accuracy"} and "methods" not in one and "clean_accuracy" in one


def test_attacks_without_a_target_or_with_two_classes_are_refused(digits_run, tmp_path):
    group = lab4_ood.cli.group
    r = run(group, "attack", "--model", digits_run, "--method", "pgd,deepfool", "--eps", "0,1",
            "--out", tmp_path / "a", ok=False)  # fmt: skip
    assert r.exit_code == 1 and "mixes L2 attacks (deepfool) with L∞ attacks (pgd)" in r.output
    r = run(group, "attack", "--model", digits_run, "--method", "apgd,square", "--targeted", "--target-class",
            "1", "--out", tmp_path / "b", ok=False)  # fmt: skip
    assert r.exit_code == 1 and r.output.startswith("Error: --targeted: apgd has no targeted mode"), r.output
    assert not (tmp_path / "b").exists()
    r = run(group, "attack", "--model", digits_run, "--method", "pgd,pgd", "--out", tmp_path / "c", ok=False)
    assert r.exit_code == 2 and "each attack once" in r.output


SHAKY = '''
    from lab4_ood.methods import Attack


    def shaky(model, x, y, eps):
        """Moves even at ε = 0 (a broken plug-in)."""
        return (1 - x).detach()


    SHAKY = Attack("shaky", "moves even at ε = 0", "shaky_plugin.attack:shaky")
'''


@pytest.fixture
def shaky(tmp_path):
    entry_points = {"dla.lab4.attacks": {"shaky": "shaky_plugin.attack:SHAKY"}}
    root = write_plugin(tmp_path / "site", "shaky_plugin", {"attack.py": SHAKY}, entry_points)
    with installed(root, "shaky_plugin") as group:
        yield group


def test_a_warning_when_eps_0_is_not_the_clean_accuracy(shaky, digits_run, tmp_path, caplog):
    out = run(shaky, "attack", "--model", digits_run, "--method", "fgsm,shaky", "--eps", "0,0.1", "--limit", "40",
              "--cpu", "--out", tmp_path / "s").output  # fmt: skip
    m = metrics(tmp_path / "s")
    assert len(m["warnings"]) == 1 and m["warnings"][0].startswith("shaky at ε = 0 gives accuracy")
    assert f"warning: {m['warnings'][0]}" in out
    assert any("shaky at ε = 0" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


@pytest.mark.parametrize(
    ("version", "components", "note"),
    [
        ("rand", ["apgd", "apgd-dlr"], "APGD-CE (20 EOT passes) → APGD-DLR (20 EOT passes)"),
        (
            "plus",
            ["apgd", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"],
            "FAB (5 restarts) → Square (20 queries)",
        ),
    ],
)
def test_version_reaches_the_stages(digits_run, tmp_path, monkeypatch, version, components, note):
    ran = []  # the components autoattack calls, in order, with the options they get
    real = attacks.attack
    stages = importlib.import_module(
        "lab4_ood.attacks.autoattack"
    )  # the module: the package's name is the function

    def spy(name, *args, **options):
        if name != "autoattack":
            ran.append((name, {k: options[k] for k in ("restarts", "eot_iter", "n_targets") if k in options}))
        return real(name, *args, **options)

    monkeypatch.setattr(stages, "attack", spy)
    monkeypatch.setattr("lab4_ood.robustness.attack", spy)
    out = run(lab4_ood.cli.group, "attack", "--model", digits_run, "--method", "autoattack", "--version", version,
              "--n-queries", "20", "--steps", "2", "--eps", "0.03", "--limit", "30", "--cpu",
              "--out", tmp_path / version).output  # fmt: skip
    m = metrics(tmp_path / version)
    assert m["autoattack"]["components"] == components and note in out
    assert [name for name, _ in ran] == components  # in order (at a small ε some image survives every stage)
    extra = dict(ran)
    if version == "rand":
        assert extra == {"apgd": {"eot_iter": 20}, "apgd-dlr": {"eot_iter": 20}}
    else:
        assert extra["apgd"] == {"restarts": 5}
    r = run(lab4_ood.cli.group, "attack", "--model", digits_run, "--method", "autoattack", "--version", "bogus",
            "--out", tmp_path / "bogus", ok=False)  # fmt: skip
    assert r.exit_code == 2 and "'bogus' is not one of 'standard', 'plus', 'rand'" in r.output


def test_the_targeted_dlr_loss_needs_four_classes(tmp_path):
    from dla_core.config import Runtime
    from dla_core.engine import TrainConfig
    from lab4_ood.training import TrainRunConfig, train_classifier

    three = tmp_path / "three"
    cfg = TrainRunConfig(dataset="digits:0-2", family="mlp", depth=1, width=8, stages=1, batch_size=64,
                         train=TrainConfig(epochs=1, lr=3e-3))  # fmt: skip
    train_classifier(cfg, Runtime(out=three, cpu=True))
    for method in ("autoattack", "apgd-t", "fgsm,apgd-t"):
        r = run(lab4_ood.cli.group, "attack", "--model", three, "--method", method, "--out", tmp_path / "no",
                ok=False)  # fmt: skip
        short = method.split(",")[-1]
        assert r.exit_code == 1, r.output
        assert r.output == f"Error: {short}: needs at least 4 classes, the dataset has 3\n"
        assert not (tmp_path / "no").exists()
    # rand has no targeted stage: 3 classes are enough
    out = run(lab4_ood.cli.group, "attack", "--model", three, "--method", "autoattack", "--version", "rand",
              "--steps", "1", "--eps", "0.1", "--limit", "10", "--cpu", "--out", tmp_path / "rand").output  # fmt: skip
    assert "autoattack rand = APGD-CE (20 EOT passes) → APGD-DLR (20 EOT passes)" in out
