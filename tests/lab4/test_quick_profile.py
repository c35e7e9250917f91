"""What `lab4 reproduce --profile quick` promises as declared in its recipe (issue 23), read without running it:
its classifiers and autoencoders train well past where their losses were still falling, the findings that compare
models rest on 3 training seeds, and its measured cost fits the quick profile's time budget. Each step's options are resolved by its own click command."""

from __future__ import annotations

from pathlib import Path

from dla_core.reproduce import QUICK_BUDGET_MINUTES, time_estimate
from lab4_ood import reproduce as rep
from lab4_ood.cli import group

MIN_SEEDS = 3
MIN_EPOCHS = 20  # at 10 every training loss and autoencoder loss of the quick profile was still falling
STARTUP_AND_REPORT_MINUTES = 0.5  # imports, data and the report around the steps


def quick(tmp_path):
    return rep.steps("quick", tmp_path, tiny=False)


def options(step, tmp_path):
    """The step's options as its command resolves them (defaults included; the folders it reads exist)."""
    for need in step.needs:
        (tmp_path / need).mkdir(exist_ok=True)
    argv = [*step.argv[1:], "--out", str(tmp_path / step.name)]
    return group.commands[step.argv[0]].make_context(step.argv[0], argv).params


def test_every_training_step_runs_past_where_its_loss_was_still_falling(tmp_path):
    trained = [s for s in quick(tmp_path) if s.argv[0] in ("train", "train-ae")]
    assert len(trained) == (2 + MIN_SEEDS - 1) * len(rep.MODELS)
    for step in trained:
        assert options(step, tmp_path)["epochs"] >= MIN_EPOCHS, step.name


def test_the_steps_the_model_comparisons_read_run_on_three_training_seeds(tmp_path):
    """energy vs MSP and outlier exposure (detect on base and oe), the attack findings (FGSM on base and adv):
    each step once per training seed, on a model trained with that seed and otherwise the same options."""
    plan = {s.name: s for s in quick(tmp_path)}
    for step in ("base-detect", "oe-detect", "base-fgsm", "adv-fgsm"):
        runs = [plan[step], *(plan[rep.seeded(step, k)] for k in range(1, MIN_SEEDS))]
        models = [options(s, tmp_path)["model"] for s in runs]
        trains = [plan[Path(m).name] for m in models]
        seeds = [options(t, tmp_path)["seed"] for t in trains]
        assert sorted(seeds) == list(range(MIN_SEEDS)), (step, seeds)
        first = options(trains[0], tmp_path)
        for t in trains[1:]:
            assert {k: v for k, v in options(t, tmp_path).items() if k not in ("seed", "out")} == {
                k: v for k, v in first.items() if k not in ("seed", "out")
            }, t.name
        if "detect" in step:  # the further seeds score the detectors the findings compare
            assert set(rep.SEED_DETECTORS) <= set(options(runs[-1], tmp_path)["method"].split(","))


def test_the_declared_cost_is_measured_for_every_step_and_fits_the_budget(tmp_path):
    plan = quick(tmp_path)
    assert all(s.cpu_minutes for s in plan), [s.name for s in plan if not s.cpu_minutes]
    assert sum(s.cpu_minutes for s in plan) + STARTUP_AND_REPORT_MINUTES <= QUICK_BUDGET_MINUTES
    line = time_estimate(plan)
    assert line and "of one CPU core (measured" in line and "of the steps" not in line


def test_the_tiny_steps_declare_no_cost_they_were_not_measured_at(tmp_path):
    assert all(s.cpu_minutes is None for s in rep.steps("quick", tmp_path, tiny=True))


def test_quick_and_full_run_every_detector(tmp_path):
    """Both profiles score with every built-in detector (the full one left out NCI, NAC, WeiPer and AdaSCALE
    while their grids passed over the whole training set once per grid point)."""
    from lab4_ood import methods
    from lab4_ood.reproduce import steps

    def detectors(profile: str) -> list[str]:
        argv = list(next(s for s in steps(profile, tmp_path, False) if s.name == "base-detect").argv)
        return argv[argv.index("--method") + 1].split(",")

    every = [d.name for d in methods.DETECTORS]
    assert detectors("quick") == every
    assert detectors("full") == every and {"nci", "nac", "weiper", "adascale"} <= set(every)


def test_every_training_step_stops_on_its_plateau(tmp_path):
    """Issue 23: the nets and autoencoders train until their validation loss levels off (``--patience``), their
    epochs a cap; every seed's training the same rule. The tiny steps (one epoch) have none."""
    trained = [s for s in quick(tmp_path) if s.argv[0] in ("train", "train-ae")]
    for step in trained:
        params = options(step, tmp_path)
        assert params["patience"] == rep.PROFILES["quick"].patience, step.name
        assert params["epochs"] >= 5 * params["patience"], step.name  # room to find the plateau
    assert all("--patience" not in s.argv for s in rep.steps("quick", tmp_path, tiny=True))
