"""What `lab1 reproduce --profile quick` promises as declared in its recipe (issue 23), read without running it:
3 seeds for the studies and for the transfer and distillation rows, training well past where the curves were still falling, and a measured cost within
the quick profile's time budget. Each step's options are resolved by its own click command, defaults included."""

from __future__ import annotations

from typing import Any

from dla_core.reproduce import QUICK_BUDGET_MINUTES, time_estimate
from lab1_resnet.cli import group
from lab1_resnet.reproduce import steps

MIN_SEEDS = 3
MIN_EPOCHS = 20  # at 10 (and the CNN study's 8) every learning curve of the quick profile was still falling
STARTUP_AND_REPORT_MINUTES = 0.5  # imports, data and the report around the steps (bench/RESULTS.md: ~10 s)


def options(step, tmp_path) -> dict[str, Any]:
    """The step's options as its command resolves them (defaults included; the folders it reads exist)."""
    for need in step.needs:
        (tmp_path / need).mkdir(exist_ok=True)
    command = group.commands[step.argv[0]]
    ctx = command.make_context(step.argv[0], [*step.argv[1:], "--out", str(tmp_path / step.name)])
    return ctx.params


def quick(tmp_path):
    return steps("quick", tmp_path, False)


def test_both_depth_studies_train_three_seeds_or_more(tmp_path):
    studies = [s for s in quick(tmp_path) if s.argv[0] == "study"]
    assert [s.name for s in studies] == ["mlp-study", "cnn-study"]
    for step in studies:
        seeds = options(step, tmp_path)["seeds"].split(",")
        assert len(set(seeds)) >= MIN_SEEDS, (step.name, seeds)


def test_the_rows_the_transfer_and_distillation_findings_compare_train_three_seeds_or_more(tmp_path):
    compared = {s.name: s for s in quick(tmp_path) if s.argv[0] in ("transfer", "distill")}
    assert sorted(compared) == ["distill", "transfer"]
    for step in compared.values():
        seeds = options(step, tmp_path)["seeds"].split(",")
        assert len(set(seeds)) >= MIN_SEEDS, (step.name, seeds)


def test_every_training_step_runs_past_where_its_curves_were_still_falling(tmp_path):
    for step in quick(tmp_path):
        assert options(step, tmp_path)["epochs"] >= MIN_EPOCHS, step.name


def test_the_declared_cost_is_measured_for_every_step_and_fits_the_budget(tmp_path):
    plan = quick(tmp_path)
    assert all(s.cpu_minutes for s in plan), [s.name for s in plan if not s.cpu_minutes]
    assert sum(s.cpu_minutes for s in plan) + STARTUP_AND_REPORT_MINUTES <= QUICK_BUDGET_MINUTES
    line = time_estimate(plan)
    assert line and "of one CPU core (measured" in line and "of the steps" not in line


def test_the_tiny_steps_declare_no_cost_they_were_not_measured_at(tmp_path):
    assert all(s.cpu_minutes is None for s in steps("quick", tmp_path, True))


def test_the_single_nets_stop_on_their_plateau_and_the_studies_train_as_many_steps_as_before(tmp_path):
    """Issue 23: source, transfer, teacher and distill train until their validation loss levels off
    (``--patience``, epochs a cap); the studies' stacked seeds cannot stop one by one, so they train a fixed
    number of epochs: at least the optimizer steps they took on digits' former 80% training split."""
    from dla_core.data.registry import load_splits

    batches = -(-len(load_splits("digits").train) // 64)  # per epoch, batch 64
    before = {"mlp-study": 30 * 21, "cnn-study": 20 * 21}  # 1,293 training images: 21 batches
    for step in quick(tmp_path):
        params = options(step, tmp_path)
        if step.argv[0] == "study":
            assert params["patience"] is None and params["epochs"] * batches >= 0.9 * before[step.name]
        else:
            assert params["patience"] is not None and params["epochs"] >= 5 * params["patience"], step.name
