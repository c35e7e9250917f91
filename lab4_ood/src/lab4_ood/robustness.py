"""``lab4 attack``: accuracy of a classifier (in eval mode) under a registered attack for each ε, and a picture of it.

Untargeted: accuracy on the attacked test images. Targeted (toward class K): also the success rate, the share
of images not of class K that the model now assigns to K. Targeted FGSM is a single step and often weak.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dla_core import plots
from dla_core.config import Runtime
from dla_core.data import ImageBatches
from dla_core.engine import make_accelerator
from dla_core.errors import DlaError
from dla_core.models import load_model
from dla_core.runs import RunDir
from dla_core.seeding import seed_everything
from dla_core.threads import use_threads
from lab4_ood.attacks import attack
from lab4_ood.datasets import check_model_fits, head, load_id

log = logging.getLogger(__name__)
FEW = 20  # fewer test images than this: accuracies move in steps of more than 5 points


@dataclass(frozen=True)
class AttackConfig:
    model: Path
    dataset: str
    method: str = "fgsm"
    eps: tuple[float, ...] = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3)  # [0, 1] pixel units
    target_class: int | None = None  # targeted attack toward this class when set
    steps: int = 10  # pgd steps
    batch_size: int = 256
    limit: int | None = None
    seed: int = 0


def run_attack(cfg: AttackConfig, rt: Runtime) -> dict:
    seed_everything(cfg.seed)  # before anything random (PGD's random start draws from torch's global RNG)
    device = make_accelerator(cpu=rt.cpu).device
    model = load_model(cfg.model).to(device).eval()
    test = head(load_id(cfg.dataset, rt.data_dir, rt.download, val_fraction=0).test, cfg.limit)
    check_model_fits(model, test)
    if cfg.target_class is not None and not 0 <= cfg.target_class < test.num_classes:
        raise DlaError(
            f"--target-class {cfg.target_class} is not a class of {cfg.dataset} (0-{test.num_classes - 1})"
        )
    targeted = cfg.target_class is not None
    if targeted and bool((test.labels == cfg.target_class).all()):
        raise DlaError(
            f"every test image is of class {cfg.target_class}: a targeted success rate over the images "
            "not already of the target class is undefined"
        )
    if len(test) < FEW:
        log.warning(
            "only %d test image(s)%s: the accuracies are coarse and can look perfect by chance",
            len(test),
            " (--limit)" if cfg.limit is not None else "",
        )
    run = RunDir.create(rt.out, cfg, command="lab4 attack", resumable=False)
    one = lambda: model(test.images[:1].to(device).float() / 255)  # noqa: E731  (one example, for the estimate)
    # each attack step is a forward and a backward pass: training-sized work
    run.update_metrics(threads=use_threads(rt.threads, model, cfg.batch_size, one, training=True).record())
    rows = []
    grid_x, grid_adv, grid_y, grid_pred = None, None, None, None
    for eps in tqdm(cfg.eps, desc=f"{cfg.method} ε", leave=False):
        correct = hits = others = 0
        for i, (x, y) in enumerate(ImageBatches(test, cfg.batch_size).iterate(0, device=device)):
            goal = torch.full_like(y, cfg.target_class) if targeted else y
            x_adv = attack(cfg.method, model, x, goal, eps, targeted=targeted, steps=cfg.steps)
            with torch.no_grad():
                pred = model(x_adv).argmax(1)
            correct += int((pred == y).sum())
            if targeted:
                mask = y != cfg.target_class
                hits += int((pred[mask] == cfg.target_class).sum())
                others += int(mask.sum())
            if i == 0 and eps == max(cfg.eps):
                grid_x, grid_adv, grid_y, grid_pred = x[:8], x_adv[:8], y[:8], pred[:8]
        row = {"eps": eps, "accuracy": correct / len(test)}
        if targeted:
            row["target_success"] = hits / others
        rows.append(row)
    with torch.no_grad():
        clean_pred = model(grid_x).argmax(1)
    names = test.classes
    captions = [f"{names[a]} → {names[b]}" for a, b in zip(grid_y.tolist(), clean_pred.tolist(), strict=True)]
    captions += [f"ε={max(cfg.eps):g}: {names[p]}" for p in grid_pred.tolist()]
    images = torch.cat([grid_x, grid_adv]).float().cpu().numpy()
    plots.image_grid(
        images,
        captions,
        run.file("adversarial_examples.png"),
        ncols=len(grid_x),
        title="top: label → clean prediction; bottom: prediction on the adversarial image",
    )
    lines = {"accuracy": (np.array(cfg.eps), np.array([r["accuracy"] for r in rows]))}
    if targeted:
        lines[f"targeted success (→{names[cfg.target_class]})"] = (
            np.array(cfg.eps),
            np.array([r["target_success"] for r in rows]),
        )
    plots.curves(
        lines,
        run.file("accuracy_vs_eps.png"),
        "ε (pixel units, [0, 1])",
        "fraction",
        title=f"{cfg.method}{' targeted' if targeted else ''} on {cfg.dataset}",
    )
    summary = {"method": cfg.method, "targeted": targeted, "rows": rows}
    run.update_metrics(**summary)
    return summary
