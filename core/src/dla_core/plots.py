"""Figures written into run folders (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from dla_core.runs import atomic_write


def _save(fig: plt.Figure, path: Path, rect: tuple[float, float, float, float] | None = None) -> Path:
    """Lay the figure out (inside ``rect`` of the figure when a legend or title needs the rest), write it
    atomically, close it."""
    fig.tight_layout(rect=rect)
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)
    return Path(path)


def learning_curves(runs: Mapping[str, Sequence[Mapping[str, float]]], path: Path, title: str = "") -> Path:
    """Loss and accuracy per epoch (train solid, validation dashed), one colour per run."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(runs), 1)))
    for color, (label, history) in zip(colors, runs.items(), strict=False):
        epochs = [h["epoch"] for h in history]
        for key, style, ax in (
            ("train_loss", "-", ax_loss),
            ("val_loss", "--", ax_loss),
            ("train_accuracy", "-", ax_acc),
            ("val_accuracy", "--", ax_acc),
        ):
            values = [h.get(key) for h in history]
            if any(v is not None for v in values):
                is_train = key.startswith("train")
                ax.plot(epochs, values, style, color=color, label=f"{label} {'train' if is_train else 'val'}")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    handles, _labels = ax_acc.get_legend_handles_labels()
    if len(handles) > 4:  # many runs: outside the axes, where it hides no curve
        ax_acc.legend(fontsize=7, ncol=1 + len(handles) // 24, loc="upper left", bbox_to_anchor=(1.02, 1))
    elif handles:
        ax_acc.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def grad_norms(
    norms: Mapping[str, Sequence[float]], path: Path, title: str = "gradient norm per layer"
) -> Path:
    """Per-layer gradient norm, first vs last epoch, layers from input (left) to output (right), log scale."""
    names = list(norms)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), 4))
    x = np.arange(len(names))
    first = [norms[n][0] for n in names]
    last = [norms[n][-1] for n in names]
    ax.plot(x, first, "o-", label="first epoch")
    ax.plot(x, last, "s-", label="last epoch")
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=70, fontsize=7)
    ax.set(ylabel="mean gradient L2 norm", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def score_histograms(
    scores: Mapping[str, np.ndarray], path: Path, xlabel: str = "score", title: str = ""
) -> Path:
    """Overlaid normalised histograms, e.g. ID vs each OOD set."""
    fig, ax = plt.subplots(figsize=(6, 4))
    all_scores = np.concatenate([np.asarray(s, dtype=float) for s in scores.values()])
    bins = np.histogram_bin_edges(all_scores[np.isfinite(all_scores)], bins=50)
    for label, s in scores.items():
        # one filled outline per set: the same picture as 50 bars, drawn several times faster
        ax.hist(
            np.asarray(s, dtype=float), bins=bins, alpha=0.5, density=True, label=label, histtype="stepfilled"
        )
    ax.set(xlabel=xlabel, ylabel="density", title=title)
    ax.legend()
    return _save(fig, path)


def curves(
    lines: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    xlabel: str,
    ylabel: str,
    title: str = "",
    diagonal: bool = False,
) -> Path:
    """Generic x/y curves (ROC: diagonal=True; PR; accuracy vs ε)."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, (x, y) in lines.items():
        ax.plot(x, y, label=label)
    if diagonal:
        ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def image_grid(
    images: np.ndarray, captions: Sequence[str], path: Path, ncols: int = 8, title: str = ""
) -> Path:
    """(N, C, H, W) images in [0, 1] with a caption under each."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.8 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, cap in zip(axes.flat, images, captions, strict=False):
        img = np.asarray(img).transpose(1, 2, 0)
        ax.imshow(
            img.squeeze(-1) if img.shape[-1] == 1 else img,
            cmap="gray" if img.shape[-1] == 1 else None,
            vmin=0,
            vmax=1,
        )
        ax.set_title(cap, fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def ranking(
    panels: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    path: Path,
    key: str,
    xlabel: str,
    title: str = "",
    reference: float | None = None,
) -> Path:
    """Horizontal bars, one panel per entry of ``panels`` (e.g. a model): ``panels[panel][item][series][key]``
    (item: a detector, series: a group of OOD sets), items sorted by the mean over their series, best on top,
    one colour per series with one legend below the panels; ``reference`` draws a dotted line (chance)."""
    series = list(dict.fromkeys(s for items in panels.values() for per in items.values() for s in per))
    most = max((len(items) for items in panels.values()), default=1)
    fig, axes = plt.subplots(
        1, max(len(panels), 1), figsize=(5.5 * max(len(panels), 1), 1.2 + 0.32 * most * max(len(series), 1)),
        squeeze=False,
    )  # fmt: skip
    colors = plt.cm.viridis(np.linspace(0, 0.85, max(len(series), 1)))
    height = 0.8 / max(len(series), 1)
    values = [v[key] for items in panels.values() for per in items.values() for v in per.values()]
    low = min(values, default=0.0)
    for ax, (label, items) in zip(axes.flat, panels.items(), strict=False):
        order = sorted(items, key=lambda i: np.mean([v[key] for v in items[i].values()]))  # best at the top
        y = np.arange(len(order))
        for j, (s, color) in enumerate(zip(series, colors, strict=False)):
            xs = [items[i][s][key] if s in items[i] else np.nan for i in order]
            ax.barh(y + (j - (len(series) - 1) / 2) * height, xs, height, color=color, label=s)
        ax.set_yticks(y, order, fontsize=8)
        ax.set_xlim(max(0.0, low - 0.05), 1.0 if max(values, default=1) <= 1 else None)
        ax.set(xlabel=xlabel, title=label)
        ax.grid(axis="x", alpha=0.3)
        if reference is not None:
            ax.axvline(reference, linestyle=":", color="grey")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(handles), 6), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title)
    return _save(fig, path, rect=(0, 0.08, 1, 1))


def curve_panels(
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    path: Path,
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> Path:
    """Side-by-side panels of a few curves each (e.g. accuracy vs ε, one panel per attack, one line per model),
    one shared y axis and one legend outside the panels."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels) + 1.8, 3.6), sharey=True, squeeze=False)
    for ax, (name, lines) in zip(axes[0], panels.items(), strict=True):
        for label, (x, y) in lines.items():
            ax.plot(x, y, "o-", markersize=3, label=label)
        ax.set(xlabel=xlabel, title=name)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    legend = {label: h for ax in axes[0] for h, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    if legend:
        axes[0][-1].legend(
            legend.values(), legend.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1)
        )
    if title:
        fig.suptitle(title)
    return _save(fig, path)
