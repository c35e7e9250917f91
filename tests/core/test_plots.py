"""The report plots of dla_core.plots: legends placed, items ranked, every line in the one legend."""

from __future__ import annotations

import pytest

from dla_core import plots


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions make, kept open instead of saved."""
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, rect=None: figures.append(fig) or path)
    yield figures
    for fig in figures:
        plots.plt.close(fig)


def outside_right(fig, legend_ax, of_ax) -> bool:
    fig.canvas.draw()
    legend = legend_ax.get_legend().get_window_extent()
    return legend.x0 >= of_ax.get_window_extent().x1


def test_ranking_puts_the_best_on_top_with_one_legend_inside_the_panel(drawn, tmp_path):
    values = {"weak": {"near": 0.55, "far": 0.6}, "best": {"near": 0.95, "far": 0.99}, "mid": {"near": 0.8}}
    panel = {item: {group: {"auroc": v} for group, v in per.items()} for item, per in values.items()}
    plots.ranking({"model": panel}, tmp_path / "r.png", key="auroc", xlabel="AUROC", reference=0.5)
    (fig,) = drawn
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["weak", "mid", "best"]  # bottom to top
    assert not fig.legends
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["near", "far"]
    assert [line.get_xdata()[0] for line in ax.get_lines()] == [0.5]  # the chance line


def test_curve_panels_one_panel_per_attack_one_legend_outside_with_every_line(drawn, tmp_path):
    panels = {
        "FGSM": {"plain": ([0, 0.1], [1.0, 0.5]), "robust": ([0, 0.1], [1.0, 0.8])},
        "PGD": {"plain": ([0, 0.1], [1.0, 0.3]), "exposed": ([0, 0.1], [1.0, 0.2])},
    }
    plots.curve_panels(panels, tmp_path / "c.png", "ε", "accuracy")
    (fig,) = drawn
    left, right = fig.axes
    assert [left.get_title(), right.get_title()] == ["FGSM", "PGD"]
    assert left.get_legend() is None
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["plain", "robust", "exposed"]
    assert outside_right(fig, right, right)


def test_the_report_plots_write_pngs(tmp_path):
    bars = plots.ranking(
        {"m": {"a": {"x": {"auroc": 0.7}}}}, tmp_path / "bars.png", key="auroc", xlabel="AUROC"
    )
    curves = plots.curve_panels({"p": {"l": ([0, 1], [1, 0])}}, tmp_path / "curves.png", "ε", "accuracy")
    assert bars.read_bytes()[:4] == curves.read_bytes()[:4] == b"\x89PNG"
