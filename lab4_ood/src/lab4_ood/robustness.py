"""``lab4 attack``: accuracy of a classifier (in eval mode) under one or more registered attacks for each ε, and
a picture of it.

Untargeted: accuracy on the attacked test images. Targeted (toward class K): also the success rate, the share
of images not of class K that the model now assigns to K. Targeted FGSM is a single step and often weak.

With several attacks (``--method fgsm,pgd,apgd``) each row also holds every attack's own accuracy, and its
``accuracy`` is the worst case per image: an image counts as robust only if every attack failed on it (targeted:
a hit by any attack counts). With one attack that is its accuracy, as before. The accuracy at ε = 0 should be
the clean accuracy (every attack returns x there); a warning says so when it is not.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dla_core import plots
from dla_core.adapters import description_of
from dla_core.config import Runtime
from dla_core.data import ImageBatches
from dla_core.engine import make_accelerator
from dla_core.errors import DlaError
from dla_core.runs import RunDir, to_jsonable
from dla_core.seeding import seed_everything
from dla_core.stats import write_outcomes
from dla_core.threads import use_threads
from lab4_ood import methods, outcomes
from lab4_ood.attacks import attack
from lab4_ood.datasets import head, load_id, load_model_for

log = logging.getLogger(__name__)
FEW = 20  # fewer test images than this: accuracies move in steps of more than 5 points


# every option of every declared attack (methods.py), each a field
OPTIONS = methods.options_of(methods.attacks().values())
# None where an attack declares its own default (steps: 10, apgd-t's 100 …): each attack's own
DEFAULTS = {name: methods.default(o, methods.attacks().values()) for name, o in OPTIONS.items()}
AttackConfig = dataclasses.make_dataclass(
    "AttackConfig",
    [
        ("model", str),  # a --model spec (dla_core.model_spec)
        ("dataset", str),
        # one declared attack, or several separated by commas (worst case per image)
        ("method", str, dataclasses.field(default="fgsm")),
        # [0, 1] pixel units
        ("eps", tuple[float, ...], dataclasses.field(default=(0.0, 0.01, 0.05, 0.1, 0.2, 0.3))),
        ("target_class", int | None, dataclasses.field(default=None)),  # targeted toward this class when set
        *(
            (
                o.name,
                o.annotation if DEFAULTS[o.name] is not None else o.annotation | None,
                dataclasses.field(default=DEFAULTS[o.name]),
            )
            for o in OPTIONS.values()
        ),
        ("batch_size", int, dataclasses.field(default=256)),
        ("limit", int | None, dataclasses.field(default=None)),
        ("seed", int, dataclasses.field(default=0)),
        # none: random (torchvision:, timm:, hf:); or a checkpoint file loaded onto the architecture
        ("weights", str, dataclasses.field(default="pretrained")),
        ("preprocess", str | None, dataclasses.field(default=None)),  # --preprocess [default: the family's]
    ],
    frozen=True,
)
AttackConfig.__module__ = __name__


def autoattack_note(cfg: AttackConfig, n_classes: int) -> str:
    """What ``--method autoattack`` ran: the components in order, with their targets, restarts, steps."""
    spec = methods.attacks()["autoattack"]
    targets = min(9, n_classes - 1)
    parts = []
    for name, extra in spec.versions[cfg.version]:
        label = {"apgd": "APGD-CE", "square": "Square"}.get(name, name.upper())
        if "n_targets" in extra:
            label += f" ({targets} targets)"
        if "restarts" in extra:
            label += f" ({extra['restarts']} restarts)"
        if "eot_iter" in extra:
            label += f" ({extra['eot_iter']} EOT passes)"
        if name == "square":
            label += f" ({cfg.n_queries} queries)"
        parts.append(label)
    original = spec.defaults["steps"]
    steps = cfg.steps if cfg.steps is not None else original
    return (
        f"autoattack {cfg.version} = {' → '.join(parts)}, each on the images still robust; "
        f"APGD/FAB with {steps} steps{'' if steps == original else f' (the original: {original})'}"
    )


def attack_options(cfg: AttackConfig, method: str) -> dict:
    """What ``attacks.attack`` gets for ``method``: its declared options' values (as its keywords) and the seed."""
    spec = methods.attacks()[method]
    return {**methods.values_for(spec, {name: getattr(cfg, name) for name in OPTIONS}), "seed": cfg.seed}


def refusal(
    names: list[str], targeted: bool, num_classes: int | None = None, values: dict | None = None
) -> str | None:
    """Why the attacks ``names`` cannot run (unknown, targeted without the trait, too few classes), or None."""
    table = methods.attacks()
    unknown = [m for m in names if m not in table]
    if unknown:
        return f"--method: unknown {', '.join(unknown)} (choose from {', '.join(table)})"
    untargeted = [m for m in names if targeted and not table[m].targeted]
    if untargeted:
        return (f"--targeted: {', '.join(untargeted)} has no targeted mode "
                f"(targeted: {', '.join(m for m, a in table.items() if a.targeted)})")  # fmt: skip
    few = [
        m for m in names if num_classes is not None and num_classes < methods.min_classes(table[m], values)
    ]
    if few:
        need = max(methods.min_classes(table[m], values) for m in few)
        return f"{', '.join(few)}: needs at least {need} classes, the dataset has {num_classes}"
    return None


def run_attack(cfg: AttackConfig, rt: Runtime) -> dict:
    chosen = cfg.method.split(",")
    if reason := refusal(chosen, cfg.target_class is not None):
        raise DlaError(reason)
    seed_everything(cfg.seed)  # before anything random (PGD's random start draws from torch's global RNG)
    device = make_accelerator(cpu=rt.cpu).device
    test = head(load_id(cfg.dataset, rt.data_dir, rt.download, val_fraction=0).test, cfg.limit)
    model = load_model_for(cfg.model, cfg.weights, test, cfg.preprocess).to(device)
    values = {name: getattr(cfg, name) for name in OPTIONS}
    if reason := refusal(chosen, cfg.target_class is not None, test.num_classes, values):
        raise DlaError(reason)
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
    source = description_of(model)  # another family's model: its spec, weights and preprocessing
    snapshot = cfg if source is None else {**to_jsonable(cfg), "model_source": source}
    run = RunDir.create(rt.out, snapshot, command="lab4 attack", resumable=False)
    one = lambda: model(test.images[:1].to(device).float() / 255)  # noqa: E731  (one example, for the estimate)
    # each attack step is a forward and a backward pass: training-sized work
    run.update_metrics(threads=use_threads(rt.threads, model, cfg.batch_size, one, training=True).record())
    batches = lambda: ImageBatches(test, cfg.batch_size).iterate(0, device=device)  # noqa: E731
    with torch.no_grad():
        clean_hits = torch.cat([(model(x).argmax(1) == y).cpu() for x, y in batches()])
    write_outcomes(run.path, clean_hits.numpy())
    clean_count = int(clean_hits.sum())
    clean = clean_count / len(test)
    several = len(chosen) > 1
    rows, warnings = [], []
    grid_x, grid_y, grid = None, None, {}  # the first images, and per ε their attacked version and prediction
    for eps in tqdm(cfg.eps, desc=f"{cfg.method} ε", leave=False):
        correct = dict.fromkeys(chosen, 0)
        hits = dict.fromkeys(chosen, 0)
        worst = any_hit = others = 0
        kept = []  # per batch: robust correctness, every method failing counts an image lost
        for i, (x, y) in enumerate(batches()):
            goal = torch.full_like(y, cfg.target_class) if targeted else y
            robust = torch.ones_like(y, dtype=torch.bool)
            hit = torch.zeros_like(y, dtype=torch.bool)
            mask = y != cfg.target_class if targeted else None
            for method in chosen:
                x_adv = attack(method, model, x, goal, eps, targeted=targeted, **attack_options(cfg, method))
                with torch.no_grad():
                    pred = model(x_adv).argmax(1)
                right = pred == y
                correct[method] += int(right.sum())
                robust &= right
                if targeted:
                    hits[method] += int((pred[mask] == cfg.target_class).sum())
                    hit |= (pred == cfg.target_class) & mask
                if i == 0 and method == chosen[0]:
                    grid_x, grid_y, grid[eps] = x[:8], y[:8], (x_adv[:8], pred[:8])
            worst += int(robust.sum())
            kept.append(robust.cpu())
            if targeted:
                any_hit += int(hit.sum())
                others += int(mask.sum())
        write_outcomes(run.path, torch.cat(kept).numpy(), name=outcomes.eps_name(eps))
        row = {"eps": eps, "accuracy": worst / len(test)}
        if targeted:
            row["target_success"] = any_hit / others
        if several:
            row["by_method"] = {
                m: {
                    "accuracy": correct[m] / len(test),
                    **({"target_success": hits[m] / others} if targeted else {}),
                }
                for m in chosen
            }
        rows.append(row)
        if eps == 0:
            for m in chosen:
                if correct[m] != clean_count:
                    warnings.append(
                        f"{m} at ε = 0 gives accuracy {correct[m] / len(test):.4f}, not the clean accuracy "
                        f"{clean:.4f}: the attack changed unperturbed images (or the model is not deterministic)"
                    )
                    log.warning("%s", warnings[-1])
    adversarial_grid(model, grid_x, grid_y, grid, test.classes, f"{chosen[0]} on {model_name(cfg)}", run)
    radii = np.array(cfg.eps)
    if several:
        lines = {m: (radii, np.array([r["by_method"][m]["accuracy"] for r in rows])) for m in chosen}
        lines["worst case per image"] = (radii, np.array([r["accuracy"] for r in rows]))
    else:
        lines = {"accuracy": (radii, np.array([r["accuracy"] for r in rows]))}
    lines[f"clean ({clean:.3f})"] = (radii, np.full(len(radii), clean))
    if targeted:
        lines[f"targeted success (→{test.classes[cfg.target_class]})"] = (
            np.array(cfg.eps),
            np.array([r["target_success"] for r in rows]),
        )
    plots.curves(
        lines,
        run.file("accuracy_vs_eps.png"),
        "ε (pixel units, [0, 1]; L2 radius for pgd-l2, cw, deepfool)",
        "fraction",
        title=f"{cfg.method}{' targeted' if targeted else ''} on {cfg.dataset}, model {model_name(cfg)}",
    )
    summary = {
        "method": cfg.method,
        "targeted": targeted,
        "rows": rows,
        "clean_accuracy": clean,
        "n": len(test),
    }
    if several:
        summary["methods"] = chosen
    if "autoattack" in chosen:
        summary["autoattack"] = {
            "version": cfg.version,
            "components": [name for name, _ in methods.attacks()["autoattack"].versions[cfg.version]],
            "note": autoattack_note(cfg, test.num_classes),
        }
    if warnings:
        summary["warnings"] = warnings
    run.update_metrics(**summary)
    return summary


def model_name(cfg: AttackConfig) -> str:
    """The model as plots name it: its run folder's name (never the machine path)."""
    return Path(cfg.model).name


def adversarial_grid(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacked: dict[float, tuple[torch.Tensor, torch.Tensor]],
    names: list[str],
    what: str,
    run: RunDir,
) -> None:
    """adversarial_examples.png: the first test images, clean (titled label → prediction), then a row per ε of
    the same images under attack, each titled with the model's prediction on it."""
    with torch.no_grad():
        clean_pred = model(x).argmax(1)
    rows = [x, *(attacked[eps][0] for eps in sorted(attacked))]
    captions = [[f"{names[a]} → {names[b]}" for a, b in zip(y.tolist(), clean_pred.tolist(), strict=True)]]
    captions += [[names[p] for p in attacked[eps][1].tolist()] for eps in sorted(attacked)]
    plots.image_rows(
        torch.stack(rows).float().cpu().numpy(),
        captions,
        ["clean\n(label → pred)", *(f"ε = {eps:g}" for eps in sorted(attacked))],
        run.file("adversarial_examples.png"),
        title=f"{what}: predictions under attack, a row per ε",
    )
