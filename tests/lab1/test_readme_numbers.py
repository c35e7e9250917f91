"""The numbers the README quotes for lab1 are test accuracies of a recorded quick-profile run, with their spread.

``bench/lab1_quick/`` holds the tables of one `lab1 reproduce --profile quick` run (bench/RESULTS.md, "Issue 23"):
the MLP study (``lab1 study``'s defaults, the README's demo) and the distillation step. A README that quotes the
train accuracy (issue 23: "~88%" where the test accuracy is 0.81 ± 0.10), drops the spread or keeps a number
after the profile changed fails here; rerun the profile, copy its tables there and quote them again.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from lab1_resnet.cli import group
from lab1_resnet.reproduce import steps

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "bench" / "lab1_quick"
DEMO_TABLE = "| depth | weight layers | test accuracy, plain | test accuracy, residual |"


def rows(name: str) -> list[dict[str, str]]:
    with (RECORDED / name).open(newline="") as f:
        return list(csv.DictReader(f))


def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def quoted(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def demo_table(text: str) -> dict[int, list[str]]:
    """depth → [weight layers, plain, residual] as the README's demo table writes them."""
    lines = text.split(DEMO_TABLE, 1)[1].strip().splitlines()[1:]  # after the header's |---| line
    table = {}
    for line in lines:
        if not line.startswith("|"):
            break
        depth, *cells = (c.strip() for c in line.strip("|").split("|"))
        table[int(depth)] = cells
    return table


def test_the_demo_table_quotes_the_recorded_test_accuracy_with_its_spread():
    assert DEMO_TABLE in readme()
    table = demo_table(readme())
    study = rows("mlp-study.csv")
    assert sorted(table) == sorted({int(r["depth"]) for r in study})
    for r in study:
        assert int(r["seeds"]) >= 3
        column = 1 if r["net"] == "plain" else 2
        cells = table[int(r["depth"])]
        assert cells[0] == r["weight_layers"]
        assert cells[column] == quoted(float(r["test_accuracy_mean"]), float(r["test_accuracy_std"])), r


def test_the_distillation_sentence_quotes_the_recorded_test_accuracies():
    """Both students' mean ± std over their seeds (the quick profile's `distill --seeds 0,1,2`)."""
    number = r"([\d.]+ ± [\d.]+)"
    found = re.search(
        rf"distilled student .{{0,80}}?test accuracy\s+{number} vs {number}", readme(), flags=re.S
    )
    assert found, "the README's distillation sentence"
    by_model = {r["model"]: r for r in rows("distill.csv")}
    assert all(int(by_model[m]["seeds"]) >= 3 for m in ("student, distilled", "student, labels only"))
    assert found.groups() == tuple(
        quoted(float(by_model[m]["test_accuracy"]), float(by_model[m]["test_accuracy_std"]))
        for m in ("student, distilled", "student, labels only")
    )


def test_the_recorded_study_is_the_quick_profiles_mlp_study(tmp_path):
    (step,) = [s for s in steps("quick", tmp_path, False) if s.name == "mlp-study"]
    params = (
        group.commands["study"].make_context("study", [*step.argv[1:], "--out", str(tmp_path / "s")]).params
    )
    study = rows("mlp-study.csv")
    assert {int(r["depth"]) for r in study} == {int(d) for d in params["depths"].split(",")}
    assert {int(r["seeds"]) for r in study} == {len(params["seeds"].split(","))}
