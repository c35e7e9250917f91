"""`lab1 reproduce` / `lab1 report`: the quick profile end to end (shrunk by DLA_REPRODUCE_TINY=1), the report's
images and findings, resume, --only/--skip, and each finding as a function of the numbers."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from dla_core.reproduce import TINY_ENV
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
    """The '## Findings' summary of a report.md: claim → ✓ / ✗ / –."""
    summary = text.split("## Findings", 1)[1].split("\n## ", 1)[0]
    return {claim: mark for mark, claim in re.findall(r"^- ([✓✗–]) (.+?) — ", summary, flags=re.M)}


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
    assert "These numbers are not results." in md  # tiny says so


@pytest.mark.slow
def test_a_changed_child_metric_flips_its_mark_when_the_report_is_rendered_again(
    quick, tmp_path, monkeypatch
):
    out = _copy(quick, tmp_path)
    monkeypatch.chdir(tmp_path)
    lab1("report", "copy")  # a relative folder: the images are still found and embedded
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 6

    def set_study(plain: float, residual: float):
        def change(row):
            row["test_accuracy_mean"] = plain if row["net"] == "plain" else residual

        return change

    def set_distill(alone: float, distilled: float):
        accuracy = {"teacher": 0.99, "student, labels only": alone, "student, distilled": distilled}
        return lambda row: row.update(test_accuracy=accuracy[row["model"]])

    deep_gap = (
        "skip connections fix it: at the deepest depth the residual MLP scores ≥ 0.2 above the plain one"
    )
    chance = "plain MLPs of depth ≥ 20 stay at chance (0.100 test accuracy)"
    kd = "distillation helps: the distilled student ≥ the same student trained on labels alone"
    for (plain, residual, alone, distilled), mark in (
        ((0.1, 0.9, 0.5, 0.6), "✓"),
        ((0.8, 0.9, 0.6, 0.5), "✗"),
    ):
        _edit_rows(out / "mlp-study" / "metrics.json", set_study(plain, residual))
        _edit_rows(out / "distill" / "metrics.json", set_distill(alone, distilled))
        lab1("report", out)
        found = marks((out / "report.md").read_text())
        assert (found[deep_gap], found[chance], found[kd]) == (mark, mark, mark)
        page = (out / "report.html").read_text()
        assert re.search(rf'class="(ok|fail)">{mark}</span> distillation helps', page)


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


#### Each finding is a function of the numbers ####


def study(*cells: tuple[int, str, float, float]) -> list[dict]:
    return [
        {"depth": d, "net": net, "train_loss_mean": loss, "test_accuracy_mean": acc}
        for d, net, loss, acc in cells
    ]


def test_study_findings():
    good = study(
        (2, "plain", 0.05, 0.95),
        (2, "residual", 0.03, 0.96),
        (20, "plain", 2.30, 0.10),
        (20, "residual", 0.02, 0.97),
    )
    assert findings.plain_degrades(good).ok is True
    assert findings.residual_beats_plain(good).ok is True
    assert findings.residual_keeps_up(good).ok is True
    assert findings.plain_at_chance(good, 20, 0.1).ok is True
    assert "depth 20: residual 0.970 vs plain 0.100" in findings.residual_beats_plain(good).evidence
    bad = study(
        (2, "plain", 0.50, 0.80),
        (2, "residual", 0.03, 0.96),
        (20, "plain", 0.40, 0.85),
        (20, "residual", 0.9, 0.70),
    )
    assert findings.plain_degrades(bad).ok is False
    assert findings.residual_beats_plain(bad).ok is False
    assert findings.residual_keeps_up(bad).ok is False
    assert findings.plain_at_chance(bad, 20, 0.1).ok is False
    # the margins: a gap just under 0.2 and a residual net just within its tolerance
    edge = study((2, "residual", 0.1, 0.90), (20, "plain", 2.3, 0.71), (20, "residual", 0.1, 0.885))
    assert findings.residual_beats_plain(edge).ok is False
    assert findings.residual_keeps_up(edge).ok is True
    for check in (findings.plain_degrades, findings.residual_beats_plain, findings.residual_keeps_up):
        assert check([]).ok is None and check([]).evidence == "not run"
    assert findings.plain_at_chance(study((10, "plain", 2.3, 0.1)), 20, 0.1).ok is None


def test_transfer_and_distillation_findings():
    rows = [
        {"row": "features + linear SVM", "test_accuracy": 0.80},
        {"row": "features + 5-NN", "test_accuracy": 0.95},
        {"row": "finetune-head-adam", "test_accuracy": 0.85},
        {"row": "finetune-none-adam", "test_accuracy": 0.90},
        {"row": "scratch-adam", "test_accuracy": 0.88},
    ]
    assert findings.finetune_beats_features(rows).ok is True
    assert findings.transfer_keeps_up_with_scratch(rows).ok is True
    assert (
        "finetune-none-adam 0.900 vs scratch-adam 0.880"
        in findings.transfer_keeps_up_with_scratch(rows).evidence
    )
    rows[-1]["test_accuracy"] = 0.90
    assert findings.transfer_keeps_up_with_scratch(rows).ok is True  # a tie counts: "at least"
    rows[-1]["test_accuracy"] = 0.91
    rows[0]["test_accuracy"] = 0.91
    assert findings.transfer_keeps_up_with_scratch(rows).ok is False
    assert findings.finetune_beats_features(rows).ok is False
    assert findings.finetune_beats_features(rows[1:]).ok is None
    kd = [
        {"model": "teacher", "parameters": 1000, "test_accuracy": 0.97},
        {"model": "student, labels only", "parameters": 100, "test_accuracy": 0.90},
        {"model": "student, distilled", "parameters": 100, "test_accuracy": 0.90},
    ]
    assert findings.distilled_beats_alone(kd).ok is True  # a tie counts: "at least"
    assert (
        findings.teacher_beats_student(kd).ok is True and "10×" in findings.teacher_beats_student(kd).evidence
    )
    kd[2]["test_accuracy"], kd[0]["test_accuracy"] = 0.89, 0.90
    assert findings.distilled_beats_alone(kd).ok is False
    assert findings.teacher_beats_student(kd).ok is False
    assert findings.distilled_beats_alone(kd[:1]).ok is None


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
