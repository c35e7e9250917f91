"""Figures written into run folders (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # one per run: lines that coincide stay told apart


def seeds_of(history_or_seeds: Sequence[Any]) -> list[Sequence[Mapping[str, float]]]:
    """A run's histories: one history (a list of epoch records) is one seed."""
    if history_or_seeds and isinstance(history_or_seeds[0], Mapping):
        return [history_or_seeds]
    return [h for h in history_or_seeds if h]


def seed_band(histories: Sequence[Sequence[Mapping[str, float]]], key: str) -> tuple[np.ndarray, ...] | None:
    """(epochs, mean, low, high) of ``key`` over the seeds' histories, up to the epoch every seed reached that
    records it; None when none does. low/high: the smallest and largest seed."""
    epochs = min((len(h) for h in histories), default=0)
    rows = [[h[e].get(key) for e in range(epochs)] for h in histories]
    keep = [e for e in range(epochs) if all(r[e] is not None for r in rows)]
    if not keep:
        return None
    values = np.array([[r[e] for e in keep] for r in rows], dtype=float)  # (seeds, epochs)
    x = np.array([histories[0][e].get("epoch", e + 1) for e in keep], dtype=float)
    return x, values.mean(0), values.min(0), values.max(0)


def spans_decades(values: Sequence[float] | np.ndarray, ratio: float = 30.0) -> bool:
    """Whether positive ``values`` spread over enough orders of magnitude to need a log axis."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return len(v) > 1 and float(v.max() / v.min()) >= ratio


def learning_curves(runs: Mapping[str, Sequence[Any]], path: Path, title: str = "") -> Path:
    """Loss and accuracy per epoch (train solid, validation dashed), one colour and marker per run; a run given
    as several histories (seeds) is drawn as their mean with a band from the lowest to the highest seed. The
    loss axis turns logarithmic when the losses span decades; accuracy runs over [0, 1]."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(runs), 1)))
    losses: list[float] = []
    for i, (color, (label, given)) in enumerate(zip(colors, runs.items(), strict=False)):
        histories = seeds_of(given)
        seeds = f" ({len(histories)} seeds)" if len(histories) > 1 else ""
        for key, style, ax in (
            ("train_loss", "-", ax_loss),
            ("val_loss", "--", ax_loss),
            ("train_accuracy", "-", ax_acc),
            ("val_accuracy", "--", ax_acc),
        ):
            band = seed_band(histories, key)
            if band is None:
                continue
            x, mean, low, high = band
            if ax is ax_loss:
                losses += [*low, *high]
            split = "train" if key.startswith("train") else "val"
            marker = MARKERS[i % len(MARKERS)]
            ax.plot(x, mean, style, color=color, marker=marker, markevery=max(1, len(x) // 8), markersize=4,
                    label=f"{label} {split}{seeds}")  # fmt: skip
            if len(histories) > 1:
                ax.fill_between(x, low, high, color=color, alpha=0.15, linewidth=0)
    if spans_decades(losses):
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
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
    norms: Mapping[str, Sequence[float]],
    path: Path,
    title: str = "gradient norm per weight layer",
    layers: Sequence[str] | None = None,
) -> Path:
    """Per-layer gradient norm, first vs last epoch, one point per weight layer from input (left) to output
    (right), log scale. ``layers``: the weight layers (conv / linear modules) to show, in order; the norms of
    any other module (BatchNorm's scale and shift) are left out. None: every entry of ``norms``."""
    names = [n for n in (layers if layers is not None else norms) if n in norms]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), 4))
    x = np.arange(1, len(names) + 1)
    first = [norms[n][0] for n in names]
    last = [norms[n][-1] for n in names]
    ax.plot(x, first, "o-", label="first epoch")
    ax.plot(x, last, "s--", label="last epoch")
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=70, fontsize=7)
    ax.set(xlabel="weight layer (input → output)", ylabel="mean gradient L2 norm", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def score_histograms(
    scores: Mapping[str, np.ndarray], path: Path, xlabel: str = "score", title: str = ""
) -> Path:
    """Overlaid normalised histograms, e.g. ID vs each OOD set; the legend right of the axes, off the bars."""
    fig, ax = plt.subplots(figsize=(7.5, 4))
    all_scores = np.concatenate([np.asarray(s, dtype=float) for s in scores.values()])
    bins = np.histogram_bin_edges(all_scores[np.isfinite(all_scores)], bins=50)
    for label, s in scores.items():
        # one filled outline per set: the same picture as 50 bars, drawn several times faster
        ax.hist(
            np.asarray(s, dtype=float), bins=bins, alpha=0.5, density=True, label=label, histtype="stepfilled"
        )
    ax.set(xlabel=xlabel, ylabel="density", title=title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)  # off the bars
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


def image_rows(
    images: np.ndarray,
    captions: Sequence[Sequence[str]],
    rows: Sequence[str],
    path: Path,
    title: str = "",
) -> Path:
    """(R, N, C, H, W) images in [0, 1] as R rows of N (e.g. one row per attack budget ε), each row named on its
    left (``rows``) and each image captioned above (``captions[r][n]``, kept short: a class name); the layout
    leaves every caption its own room, clear of the images."""
    images = np.asarray(images)
    nrows, ncols = images.shape[:2]
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.5 * ncols + 1.2, 1.75 * nrows + 0.4), squeeze=False)
    for r, (row_axes, name) in enumerate(zip(axes, rows, strict=True)):
        for n, ax in enumerate(row_axes):
            img = images[r, n].transpose(1, 2, 0)
            gray = img.shape[-1] == 1
            ax.imshow(img.squeeze(-1) if gray else img, cmap="gray" if gray else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_title(captions[r][n], fontsize=7, pad=2)
        row_axes[0].set_ylabel(name, fontsize=9, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
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
    one colour per series with one legend inside the last panel; ``reference`` (chance, 0.5 for AUROC) is where the
    axis starts and the bars grow from, drawn as a dotted line."""
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
            base = 0.0 if reference is None else reference  # bars grow from chance: above it goes right
            ax.barh(y + (j - (len(series) - 1) / 2) * height, np.asarray(xs) - base, height, left=base,
                    color=color, label=s)  # fmt: skip
        ax.set_yticks(y, order, fontsize=8)
        # from chance (a little left of it, so that its line is not hidden by the axis)
        start = max(0.0, low - 0.05) if reference is None else min(reference, low) - 0.02
        ax.set_xlim(start, 1.0 if max(values, default=1) <= 1 else None)
        ax.set(xlabel=xlabel, title=label)
        ax.grid(axis="x", alpha=0.3)
        if reference is not None:
            ax.axvline(reference, linestyle=":", color="black", linewidth=1.5, zorder=3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:  # inside the last panel, by its weakest items: one figure, one page, nothing split off
        axes.flat[-1].legend(handles, labels, loc="lower right", fontsize=8, framealpha=0.9)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


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
