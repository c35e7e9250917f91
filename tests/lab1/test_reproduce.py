"""`lab1 reproduce` / `lab1 report`: the quick profile end to end (shrunk by DLA_REPRODUCE_TINY=1), the report's
images and findings, resume, --only/--skip, and each finding as a function of the numbers."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dla_core.report import INCONCLUSIVE_HTML
from dla_core.reproduce import TINY_ENV
from dla_core.stats import read_outcomes, write_outcomes
from lab1_resnet import findings
from lab1_resnet.cli import group
from lab1_resnet.reproduce import steps

STEPS = ["mlp-study", "cnn-study", "source", "transfer", "teacher", "distill"]


def lab1(*argv: str, ok: bool = True):
    result = CliRunner().invoke(group, [str(a) for a in argv], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def marks(text: str) -> dict[str, str]:
    """The finding lines of a report.md's sections: claim → ✓ / ✗ / ～ / –."""
    return {claim: mark for mark, claim in re.findall(r"^- ([✓✗～–]) (.+?) — ", text, flags=re.M)}


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> Path:
    """The quick profile, shrunk to seconds, run once for the module (tests copy it before changing it)."""
    out = tmp_path_factory.mktemp("reproduce") / "lab1-report"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(TINY_ENV, "1")
        lab1("reproduce", "--profile", "quick", "--out", out)
    return out


def _copy(quick: Path, tmp_path: Path) -> Path:
    shutil.copytree(quick, tmp_path / "copy")
    return tmp_path / "copy"


def _edit_rows(path: Path, change) -> None:
    metrics = json.loads(path.read_text())
    for row in metrics["rows"]:
        change(row)
    path.write_text(json.dumps(metrics))


@pytest.mark.slow
def test_quick_profile_runs_every_step_and_writes_both_reports(quick):
    for name in STEPS:
        assert (quick / name / "config.json").is_file() and (quick / name / "metrics.json").is_file(), name
    manifest = json.loads((quick / "metrics.json").read_text())["steps"]
    assert list(manifest) == STEPS and all(s["done"] for s in manifest.values())
    md = (quick / "report.md").read_text()
    page = (quick / "report.html").read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    # both studies' curves and gradient norms, the transfer curves, the distilled student's curves
    assert len(links) == 6, links
    assert all(not Path(link).is_absolute() and (quick / link).is_file() for link in links)
    assert page.count("data:image/png;base64,") == len(links)
    assert "<img" in page and 'src="' + links[0] not in page  # embedded, not linked
    for name in STEPS:  # the command line of each child run, its paths written from the report folder
        assert manifest[name]["command"].endswith(f"--out {quick / name}")
        assert f"--out {name}\n" in md and f"[{name}]({name})" in md  # and a link to its run folder
    assert "lab1 distill --teacher teacher " in md
    # no machine path anywhere (the embedded images aside), a caption under every figure
    visible = re.sub(r"data:image/png;base64,[^\"]+", "", page)
    assert str(quick.parent) not in md and str(quick.parent) not in visible
    captions = re.findall(r"!\[[^]]*\]\([^)]+\)\n\n\*([^*\n]+)\*", md)
    assert len(captions) == len(links) and all("Run folder `" in c for c in captions), captions
    # every finding has a mark computed from the runs: none is left unchecked when every step ran
    found = marks(md)
    assert len(found) == 11 and "–" not in found.values(), found
    # every run folder that tested a model kept its per-example outcomes, one per test example
    examples = {read_outcomes(c).examples for c in (quick / "mlp-study" / "cells").iterdir()}
    examples |= {read_outcomes(c).examples for c in (quick / "cnn-study" / "cells").iterdir()}
    assert examples == {read_outcomes(quick / "teacher").examples}
    for folder in ("source", "transfer/rows/finetune-head-adam", "distill/students/distilled"):
        assert read_outcomes(quick / folder).correct.dtype == np.bool_
    assert (
        read_outcomes(quick / "transfer", "svm").examples
        == read_outcomes(quick / "transfer/rows/scratch-adam").examples
    )
    assert read_outcomes(quick / "distill", "teacher").examples == read_outcomes(quick / "teacher").examples
    assert "These numbers are not results." in md  # tiny says so


@pytest.mark.slow
def test_changed_child_outcomes_move_their_findings_when_the_report_is_rendered_again(
    quick, tmp_path, monkeypatch
):
    out = _copy(quick, tmp_path)
    monkeypatch.chdir(tmp_path)
    lab1("report", "copy")  # a relative folder: the images are still found and embedded
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 6
    study_cells = sorted((out / "mlp-study" / "cells").iterdir())
    n = read_outcomes(study_cells[0]).examples

    def set_outcomes(plain: np.ndarray, residual: np.ndarray, alone: np.ndarray, distilled: np.ndarray):
        for cell in study_cells:
            write_outcomes(cell, plain if "-plain-" in cell.name else residual)
        write_outcomes(out / "distill" / "students" / "baseline", alone)
        write_outcomes(out / "distill" / "students" / "distilled", distilled)

    deep_gap = (
        "skip connections fix it: at the deepest depth the residual MLP scores > 0.2 above the plain one"
    )
    chance = "plain MLPs of depth ≥ 20 stay at chance (0.1 test accuracy, within 0.05)"
    kd = "distillation helps: the distilled student beats the same student trained on labels alone"
    tenth = np.arange(n) % 10 == 0  # exactly chance
    half = np.arange(n) % 2 == 0
    everything = np.ones(n, dtype=bool)
    near = half.copy()
    near[1] = True  # one example better: an interval straddling 0
    for outcomes, mark in (
        ((tenth, everything, half, everything), "✓"),
        ((half, half, half, near), "～"),
        ((everything, tenth, everything, half), "✗"),
    ):
        set_outcomes(*outcomes)
        lab1("report", out)
        md = (out / "report.md").read_text()
        found = marks(md)
        assert found[kd] == mark, md
        assert found[deep_gap] == {"～": "✗"}.get(mark, mark)  # the same outcomes: [0, 0], not above 0.2
        assert found[chance] == {"～": "✗"}.get(mark, mark)  # half right is far from chance
        page = (out / "report.html").read_text()
        css = {"✓": "ok", "✗": "fail", "～": "unknown"}[mark]
        shown = INCONCLUSIVE_HTML if mark == "～" else mark  # drawn in ASCII, the character kept in the text
        assert f'class="{css}">{shown}</span> distillation helps' in page
        summary = md.split("## Conclusion", 1)[1].split("\n## ", 1)[0]
        lines = list(found.values())
        assert f"{len(lines)} findings: " in summary
        assert all(f"{lines.count(m)} {m}" in summary for m in set(lines))


@pytest.mark.slow
def test_resume_skips_done_steps_and_reruns_an_unfinished_one(quick):
    out = quick  # in place: the steps' command lines name the folder (a copy would be another run); left complete
    before = (out / "teacher" / "metrics.json").read_text()
    manifest = json.loads((out / "metrics.json").read_text())
    del manifest["steps"]["distill"]  # as if interrupted during the distillation
    (out / "metrics.json").write_text(json.dumps(manifest))
    shutil.rmtree(out / "distill" / "students" / "distilled")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(TINY_ENV, "1")
        r = lab1("reproduce", "--profile", "quick", "--out", out, "--resume")
    assert r.output.count("done before, skipped") == 5
    assert f"lab1 distill --teacher {out / 'teacher'}" in r.output
    assert (out / "distill" / "students" / "distilled" / "model.safetensors").is_file()
    assert (out / "teacher" / "metrics.json").read_text() == before  # not retrained
    assert json.loads((out / "metrics.json").read_text())["steps"]["distill"]["done"]


def test_only_and_skip_run_part_of_the_lab(tmp_path, monkeypatch):
    monkeypatch.setenv(TINY_ENV, "1")
    r = lab1("reproduce", "--only", "transfer", "--out", tmp_path / "a", ok=False)
    assert r.exit_code == 1 and "Error: step transfer needs source" in r.output
    out = tmp_path / "b"
    lab1("reproduce", "--only", "source,transfer", "--out", out)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["source", "transfer"]
    found = marks((out / "report.md").read_text())
    transfer = [m for claim, m in found.items() if "fine-tuning" in claim]
    assert len(transfer) == 2 and "–" not in transfer
    assert [m for claim, m in found.items() if "fine-tuning" not in claim] == [
        "–"
    ] * 9  # not run: not checked
    lab1("reproduce", "--out", out, "--resume", "--skip", "mlp-study,cnn-study,teacher,distill")
    assert not (out / "mlp-study").exists() and not (out / "distill").exists()


def test_full_profile_downloads_estimates_its_time_and_uses_real_options(tmp_path):
    full = steps("full", tmp_path, False)
    assert [s.name for s in full] == STEPS
    assert all("--download" in s.argv and s.minutes for s in full)
    assert "digits" not in " ".join(a for s in full for a in s.argv)
    for step in [*full, *steps("quick", tmp_path, False)]:  # every option exists (--help parses the rest)
        lab1(*step.argv, "--out", tmp_path / step.name, "--help")


#### Each finding is a claim judged by its interval ####

N = 300  # synthetic test examples


def hits(accuracy: float, seed: int = 0) -> np.ndarray:
    """N outcomes, exactly round(accuracy · N) of them right, at places drawn from ``seed``."""
    out = np.zeros(N, dtype=bool)
    out[np.random.default_rng(seed).permutation(N)[: round(accuracy * N)]] = True
    return out


def study(folder: Path, *cells: tuple[int, str, list[float], list[float]]) -> list[dict]:
    """A study's run folder: per (depth, net) one cell per seed with its train loss and test outcomes."""
    rows = []
    for depth, net, losses, accuracies in cells:
        for s, (loss, acc) in enumerate(zip(losses, accuracies, strict=True)):
            cell = folder / "cells" / f"mlp-d{depth}-{net}-s{s}"
            cell.mkdir(parents=True)
            (cell / "metrics.json").write_text(json.dumps({"train_loss": loss, "test_accuracy": acc}))
            write_outcomes(cell, hits(acc, 10 * depth + s))
        rows.append({"depth": depth, "net": net, "train_loss_mean": float(np.mean(losses))})
    return rows


def test_study_findings_move_through_the_three_verdicts(tmp_path):
    good = study(
        tmp_path / "good",
        (2, "plain", [0.05, 0.06], [0.95, 0.94]),
        (2, "residual", [0.03, 0.04], [0.96, 0.95]),
        (20, "plain", [2.30, 2.29], [0.10, 0.10]),
        (20, "residual", [0.02, 0.03], [0.97, 0.96]),
    )
    where = tmp_path / "good"
    assert findings.plain_degrades(good, where).mark == "✓"
    beats = findings.residual_beats_plain(good, where)
    assert (
        beats.mark == "✓"
        and "residual depth 20 better than plain depth 20 by more than 0.2" in beats.evidence
    )
    assert f"{N} test examples, 2 seeds each" in beats.evidence
    assert findings.residual_keeps_up(good, where).mark == "✓"
    assert findings.plain_at_chance(good, where, 20, 0.1).mark == "✓"
    assert "not per test example" in findings.plain_degrades(good, where).evidence
    bad = study(
        tmp_path / "bad",
        (2, "plain", [0.50, 0.52], [0.80, 0.80]),
        (2, "residual", [0.03, 0.02], [0.96, 0.96]),
        (20, "plain", [0.40, 0.41], [0.85, 0.85]),
        (20, "residual", [0.9, 0.91], [0.70, 0.70]),
    )
    where = tmp_path / "bad"
    assert findings.plain_degrades(bad, where).mark == "✗"
    assert findings.residual_beats_plain(bad, where).mark == "✗"
    assert findings.residual_keeps_up(bad, where).mark == "✗"
    assert findings.plain_at_chance(bad, where, 20, 0.1).mark == "✗"
    # near the margins, with 300 examples and noisy seeds: the intervals straddle them
    edge = study(
        tmp_path / "edge",
        (2, "plain", [0.5, 2.0], [0.5, 0.5]),
        (2, "residual", [0.1, 0.1], [0.90, 0.90]),
        (20, "plain", [1.9, 0.6], [0.71, 0.70]),
        (20, "residual", [0.1, 0.1], [0.89, 0.90]),
    )
    where = tmp_path / "edge"
    assert findings.residual_beats_plain(edge, where).mark == "～"
    assert findings.residual_keeps_up(edge, where).mark == "～"
    assert findings.plain_degrades(edge, where).mark == "～"
    for check in (findings.plain_degrades, findings.residual_beats_plain, findings.residual_keeps_up):
        assert check([], tmp_path).mark == "–" and check([], tmp_path).evidence == "not run"
    assert findings.plain_at_chance(good[:1], tmp_path / "good", 20, 0.1).mark == "–"


def test_study_findings_pair_the_right_cells(tmp_path):
    """Swapping which net is which flips the finding: the arms are read from the right cells."""
    rows = study(
        tmp_path,
        (20, "plain", [2.3], [0.95]),
        (20, "residual", [0.1], [0.10]),
        (2, "residual", [0.1], [0.95]),
    )
    assert findings.residual_beats_plain(rows, tmp_path).mark == "✗"
    assert findings.residual_keeps_up(rows, tmp_path).mark == "✗"


def table(folder: Path, **rows: tuple[float, float | None]) -> list[dict]:
    """A transfer or distill table: name → (test accuracy, val accuracy), each row with its outcomes file."""
    folder.mkdir(parents=True)
    out = []
    for i, (name, (acc, val)) in enumerate(rows.items()):
        write_outcomes(folder, hits(acc, i) if acc < 1 else np.ones(N, dtype=bool), name=f"r{i}")
        key = "model" if name in ("teacher", "student, labels only", "student, distilled") else "row"
        out.append(
            {
                key: name,
                "test_accuracy": acc,
                "val_accuracy": val,
                "parameters": 100 * 10 ** (key == "model" and name == "teacher"),
                "outcomes": f"outcomes-r{i}.npz",
            }
        )
    return out


def test_transfer_and_distillation_findings(tmp_path):
    rows = table(
        tmp_path / "t1",
        **{"features + linear SVM": (0.70, None), "features + 5-NN": (0.95, None),
           "finetune-head-adam": (0.85, 0.9), "finetune-none-adam": (0.99, 0.8), "scratch-adam": (0.88, 0.7)},
    )  # fmt: skip
    assert findings.finetune_beats_features(rows, tmp_path / "t1").mark == "✓"
    kept = findings.transfer_keeps_up_with_scratch(rows, tmp_path / "t1")
    # chosen by validation accuracy: finetune-head-adam (0.85), not the test set's best (0.99)
    assert kept.mark == "～" and "finetune-head-adam at most 0.02 below scratch-adam" in kept.evidence
    assert findings.finetune_beats_features(rows[1:], tmp_path / "t1").mark == "–"
    rows = table(
        tmp_path / "t2",
        **{
            "features + linear SVM": (0.95, None),
            "finetune-head-adam": (0.80, 0.9),
            "scratch-adam": (0.95, 0.7),
        },
    )
    assert findings.finetune_beats_features(rows, tmp_path / "t2").mark == "✗"
    assert findings.transfer_keeps_up_with_scratch(rows, tmp_path / "t2").mark == "✗"
    kd = table(
        tmp_path / "kd",
        **{"teacher": (0.97, None), "student, labels only": (0.70, None), "student, distilled": (0.90, None)},
    )
    assert findings.distilled_beats_alone(kd, tmp_path / "kd").mark == "✓"
    teacher = findings.teacher_beats_student(kd, tmp_path / "kd")
    assert teacher.mark == "✓" and "10×" in teacher.claim
    kd = table(
        tmp_path / "kd2",
        **{"teacher": (0.60, None), "student, labels only": (0.90, None), "student, distilled": (0.70, None)},
    )
    assert findings.distilled_beats_alone(kd, tmp_path / "kd2").mark == "✗"
    assert findings.teacher_beats_student(kd, tmp_path / "kd2").mark == "✗"
    assert findings.distilled_beats_alone(kd[:1], tmp_path / "kd2").mark == "–"


#### Plots: no legend over the curves ####


def _capture(monkeypatch, module) -> list:
    figures = []
    monkeypatch.setattr(module, "_save", lambda fig, path: figures.append(fig) or path)
    return figures


def _right_of_axes(fig, legend) -> bool:
    fig.canvas.draw()
    box = legend.get_window_extent()
    return all(box.x0 >= ax.get_window_extent().x1 for ax in fig.axes)


def test_study_curves_put_plain_and_residual_in_panels_with_the_legend_outside(monkeypatch, tmp_path):
    from lab1_resnet import study

    figures = _capture(monkeypatch, study)
    cfg = study.DepthStudy(depths=(2, 10, 20, 30))
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "train_accuracy": 0.5, "val_accuracy": 0.5}
               for e in (1, 2)]  # fmt: skip
    study.study_curves(cfg, {f"d{d} {k}": history for d in cfg.depths for k in cfg.kinds}, tmp_path / "c.png")
    fig = figures[0]
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["plain: loss", "plain: accuracy", "residual: loss", "residual: accuracy"]
    assert all(len(ax.get_lines()) == 8 for ax in fig.axes)  # 4 depths × train, validation per panel
    assert not any(ax.get_legend() for ax in fig.axes) and len(fig.legends) == 1
    assert _right_of_axes(fig, fig.legends[0])


def test_study_curves_band_the_seeds_and_share_the_accuracy_range(monkeypatch, tmp_path):
    from lab1_resnet import study

    figures = _capture(monkeypatch, study)
    cfg = study.DepthStudy(depths=(2, 10))

    def history(seed, kind):
        return [{"epoch": e, "train_loss": 10.0 ** -e * (1 + seed), "train_accuracy": 0.2 * e + seed / 100
                 + (0.3 if kind == "residual" else 0)} for e in (1, 2, 3)]  # fmt: skip

    seeds = {f"d{d} {k}": [history(s, k) for s in (0, 1, 2)] for d in cfg.depths for k in cfg.kinds}
    study.study_curves(cfg, seeds, tmp_path / "c.png")
    (fig,) = figures
    plain_loss, plain_acc, residual_loss, residual_acc = fig.axes
    assert plain_acc.get_ylim() == residual_acc.get_ylim() == (0, 1.02)
    assert plain_loss.get_yscale() == residual_loss.get_yscale() == "log"  # 1e-3 … 0.3: decades
    assert all(len(ax.collections) == 2 for ax in fig.axes)  # a seed band per depth (train only here)
    mean = plain_acc.get_lines()[0].get_ydata()
    assert mean[0] == pytest.approx(0.2 + 0.01)  # the mean over the three seeds


def test_the_study_grad_norm_plot_has_one_point_per_weight_layer(monkeypatch, tmp_path):
    from dla_core.models import weight_layers
    from lab1_resnet import study
    from lab1_resnet.train import load_data, model_config

    figures = _capture(monkeypatch, study)
    cfg = study.DepthStudy(model="cnn", depths=(1, 2), seeds=(0,))
    cells = cfg.cells()
    data = load_data("digits", tmp_path, 0.1)
    layers = study.weight_layers_of(data)
    results = {}
    for cell in cells:  # as the engine records them: every module with parameters, BatchNorm's included
        model = study.build_model(model_config(cell, data.train))
        modules = dict.fromkeys(n.rsplit(".", 1)[0] for n, _ in model.named_parameters())
        results[cell.name] = {"grad_norms": {m: [1.0 + i] for i, m in enumerate(modules)}}
    study.first_epoch_grad_norms(cfg, cells, results, tmp_path / "g.png", layers)
    (fig,) = figures
    for ax, kind in zip(fig.axes, cfg.kinds, strict=True):
        points = [len(line.get_xdata()) for line in ax.get_lines()]
        expected = [weight_layers(model_config(next(c for c in cells if c.depth == d and c.kind == kind),
                                               data.train)) for d in cfg.depths]  # fmt: skip
        assert points == expected == [1 + 2 * d + 1 for d in cfg.depths]


def test_learning_curves_of_many_runs_keep_the_legend_outside_the_axes(monkeypatch, tmp_path):
    from dla_core import plots

    figures = _capture(monkeypatch, plots)
    history = [{"epoch": 1, "train_accuracy": 0.5, "val_accuracy": 0.4}, {"epoch": 2, "train_accuracy": 0.6}]
    plots.learning_curves({f"row {i}": history for i in range(10)}, tmp_path / "c.png")
    fig = figures[0]
    assert _right_of_axes(fig, fig.axes[1].get_legend())


def test_a_row_with_one_outcomes_file_per_seed_is_judged_over_its_seeds(tmp_path):
    """`--seeds`: a transfer or distill row names one outcomes file per seed; its arm holds them all."""
    folder = tmp_path / "kd"
    kd = table(folder, **{"teacher": (0.97, None), "student, labels only": (0.70, None),
                          "student, distilled": (0.90, None)})  # fmt: skip
    for row, acc in ((kd[1], 0.70), (kd[2], 0.90)):
        names = [row["outcomes"]]
        for seed in (1, 2):
            name = f"{row['outcomes'][:-4]}-s{seed}"
            write_outcomes(folder, hits(acc, seed), name=name.removeprefix("outcomes-"))
            names.append(f"{name}.npz")
        row["outcomes"] = names
    found = findings.distilled_beats_alone(kd, folder)
    assert found.mark == "✓" and "3 seeds each" in found.evidence, found.evidence
    teacher = findings.teacher_beats_student(kd, folder)  # one teacher run against 3 students
    assert "1 and 3 seeds" in teacher.evidence, teacher.evidence
