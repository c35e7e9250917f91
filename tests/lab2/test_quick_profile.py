"""What `lab2 reproduce --profile quick` declares (issue 23), read without running it: every fine-tune and LoRA
cell trains past where the full fine-tune's validation accuracy was still rising, and its findings rest on
dla-reviews' whole test split."""

from __future__ import annotations

from lab2_distilbert import reproduce as rep
from lab2_distilbert.cli import group

MIN_EPOCHS = (
    6  # all-MiniLM-L6-v2, full fine-tuning on dla-reviews: validation 0.72 after 3 epochs, 0.87 at 4-6
)


def test_every_quick_training_step_trains_to_the_plateau_on_the_whole_test_split(tmp_path):
    trained = [
        s
        for s in rep.steps("quick", tmp_path, False, model=str(tmp_path))
        if s.argv[0] in ("finetune", "lora")
    ]
    assert len(trained) == rep.SEEDS["quick"] * len(rep.FINETUNES) + 1
    for step in trained:
        argv = [*step.argv[1:], "--out", str(tmp_path / step.name)]
        params = group.commands[step.argv[0]].make_context(step.argv[0], argv).params
        assert params["epochs"] >= MIN_EPOCHS, step.name
        assert params["limit"] is None, step.name  # every test sentence


def test_every_quick_fine_tune_trains_three_seeds_and_its_findings_read_them_all(tmp_path):
    """Issue 23: the findings comparing fine-tunes get an interval over training seeds, not one run's luck."""
    plan = rep.steps("quick", tmp_path, False, model=str(tmp_path))
    by_name = {s.name: s for s in plan}
    for name, *_ in rep.FINETUNES:
        runs = [by_name[n] for n in (name, f"{name}-s1", f"{name}-s2")]
        params = [
            group.commands["finetune"].make_context("finetune", [*s.argv[1:], "--out", str(tmp_path)]).params
            for s in runs
        ]
        assert [p["seed"] for p in params] == [0, 1, 2], name
        assert all(p == {**params[0], "seed": p["seed"]} for p in params), name  # only the seed differs
        assert f"{name}-s3" not in by_name
        assert rep._seed_steps(plan, name) == [s.name for s in runs]
