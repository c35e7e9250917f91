"""``lab4 benchmark``: models × detectors × OOD sets grouped as OpenOOD groups them (near / far / your own), and
optionally the robust accuracy of each model under attacks.

Nothing is scored twice over: each model gets child run folders made by the very functions of ``lab4 detect`` and
``lab4 attack`` (``detection.detect``, ``robustness.run_attack``); this module reads their summaries and writes the
comparison::

    OUT/
      config.json, metrics.json   the benchmark's options; every number of the tables below
      table.md                    AUROC / FPR95 per set and per group (the group's mean), detectors ranked
      ranking.png                 detectors sorted by mean AUROC (the mean of the group means), one panel a model
      <model>/detect/             the 'lab4 detect' run folder of that model (plots per detector)
      <model>/attack-<method>/    the 'lab4 attack' run folder per attack (--attacks)

The ranking key, "mean AUROC", is the mean of the groups' mean AUROCs, so that each group weighs the same whatever
its number of sets. With ``--suite`` (suites.py) the groups are OpenOOD v1.5's, and table.md puts OpenOOD's
published AUROC beside ours, with its source and what differs.

Every ID and OOD set is loaded (and checked) before OUT is made: a missing one is one Error line naming all that
are missing, and nothing on disk; so is every model built (a checkpoint that does not fit its architecture or its
ID set's classes is one Error line too).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dla_core import plots
from dla_core.config import Runtime
from dla_core.data import DATASETS, parse_spec
from dla_core.data.registry import HOW_TO_GET
from dla_core.errors import DlaError
from dla_core.runs import RunDir, atomic_write
from lab4_ood import suites
from lab4_ood.datasets import id_spec_for, load_id, load_model_for, load_ood, remembered
from lab4_ood.detection import DetectConfig, detect
from lab4_ood.robustness import AttackConfig, run_attack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkConfig:
    models: tuple[str, ...]  # --model specs (dla_core.model_spec)
    groups: tuple[tuple[str, tuple[str, ...]], ...]  # (name, OOD specs), in the order given
    methods: tuple[str, ...]
    id: str | None = None  # ID spec for every model [default: each run's dataset]
    attacks: tuple[str, ...] = ()
    attack_eps: tuple[float, ...] = (0.0, 0.01, 0.05, 0.1)
    seed: int = 0
    batch_size: int = 256
    limit: int | None = None
    detector: dict[str, Any] = field(default_factory=dict)  # DetectConfig's detector options (--T, --grid, …)
    attack: dict[str, Any] = field(default_factory=dict)  # AttackConfig's attack options (--steps, --cw-c, …)
    # pretrained; none: random weights for torchvision:, timm:, hf: models; or a checkpoint file
    weights: str = "pretrained"
    preprocess: str | None = None  # --preprocess for those models [default: the family's own]
    suite: str | None = None  # an OpenOOD v1.5 protocol (suites.SUITES) that set id and groups
    imglist_dir: Path | None = None  # OpenOOD's benchmark_imglist folder, when the suite reads its lists


def split_specs(text: str) -> list[str]:
    """'fake,cifar100:cat,dog,mnist' → ['fake', 'cifar100:cat,dog', 'mnist']: a comma starts a new spec only
    where a dataset name follows; otherwise it continues the previous spec's class list."""
    specs: list[str] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if specs and ":" in specs[-1] and item.split(":")[0].lower() not in DATASETS:
            specs[-1] += "," + item
        else:
            parse_spec(item)  # an unknown dataset is one Error line, before any work
            specs.append(item)
    return specs


def parse_groups(
    near: tuple[str, ...], far: tuple[str, ...], custom: tuple[str, ...], suite: tuple = ()
) -> tuple:
    """(name, specs) pairs from a suite's groups, --near, --far and --group NAME=SPECS, each set in one group
    only."""
    groups: dict[str, list[str]] = {name: list(specs) for name, specs in suite}
    for name, values in (("near", near), ("far", far)):
        for value in values:
            groups.setdefault(name, []).extend(split_specs(value))
    for value in custom:
        name, sep, specs = value.partition("=")
        if not sep or not name.strip() or not specs.strip():
            raise DlaError(f"--group: expected NAME=SPEC,SPEC (e.g. --group textures=fake), got {value!r}")
        groups.setdefault(name.strip(), []).extend(split_specs(specs))
    if not groups:
        raise DlaError("give the OOD sets: --near SPECS, --far SPECS and/or --group NAME=SPECS")
    seen: dict[str, str] = {}
    for name, specs in groups.items():
        for spec in specs:
            if spec in seen:
                raise DlaError(f"OOD set {spec} is in two groups ({seen[spec]} and {name}): put it in one")
            seen[spec] = name
    return tuple((name, tuple(specs)) for name, specs in groups.items())


def model_names(models: tuple[str, ...]) -> list[str]:
    """Child folder names: each run folder's or file's name, a named model's spec with '-' for ':' and '/'
    ('torchvision-resnet18'), made unique with -2, -3, … ('runs/a/base', 'runs/b/base')."""
    names: list[str] = []
    for m in models:
        path = Path(m)
        base = (path.resolve().name if path.exists() else re.sub(r"[^\w.-]+", "-", m)) or "model"
        name, i = base, 1
        while name in names:
            i += 1
            name = f"{base}-{i}"
        names.append(name)
    return names


def group_means(per_set: dict[str, dict[str, float]], groups: tuple) -> dict[str, dict[str, float]]:
    """{group: {"auroc": mean, "fpr95": mean}} over each group's sets."""
    return {
        name: {k: float(np.mean([per_set[s][k] for s in specs])) for k in ("auroc", "fpr95")}
        for name, specs in groups
    }


PROBE_SHAPE = (3, 32, 32)  # the shape OOD sets are checked at when no ID set loaded


def check_data(id_specs: list[str], ood: tuple[str, ...], rt: Runtime, what: str) -> None:
    """Load every ID and OOD set (remembered for the detect runs); the missing ones are one Error line naming
    them all. OOD sets load at each ID set's image shape; when no ID set loads, at ``PROBE_SHAPE``, only to
    find which are missing too."""
    errors: dict[str, str] = {}
    shapes = []
    for spec in dict.fromkeys(id_specs):
        try:
            shapes.append(load_id(spec, rt.data_dir, rt.download).test.shape)
        except DlaError as e:
            errors[spec] = str(e)
    for shape in dict.fromkeys(shapes or [PROBE_SHAPE]):
        for spec in (s for s in ood if s not in errors):
            try:
                load_ood(spec, shape, rt.data_dir, rt.download)
            except DlaError as e:
                errors[spec] = str(e)
    if errors:
        hint = f"; {HOW_TO_GET}"  # said once, not after each set
        said = [e.removesuffix(hint) for e in errors.values()]
        tail = hint if any(e.endswith(hint) for e in errors.values()) else ""
        raise DlaError(f"{what}: {len(errors)} set(s) missing or unreadable: " + "; ".join(said) + tail)


def run_benchmark(cfg: BenchmarkConfig, rt: Runtime) -> dict:
    with remembered():
        return _run_benchmark(cfg, rt)


def _run_benchmark(cfg: BenchmarkConfig, rt: Runtime) -> dict:
    # each model's ID dataset and every set first: bad input is refused before the folder is made
    id_specs = [id_spec_for(model, cfg.id) for model in cfg.models]
    ood = tuple(spec for _, specs in cfg.groups for spec in specs)
    check_data(id_specs, ood, rt, f"--suite {cfg.suite}" if cfg.suite else "lab4 benchmark")
    for model, id_spec in zip(cfg.models, id_specs, strict=True):  # each model builds and fits its ID set
        # (built again by its detect run: a model a detector hooks into is not shared between runs)
        load_model_for(model, cfg.weights, load_id(id_spec, rt.data_dir, rt.download).test, cfg.preprocess)
    run = RunDir.create(rt.out, cfg, command="lab4 benchmark", resumable=False)
    names = model_names(cfg.models)
    models: dict[str, dict] = {}
    bar = tqdm(total=len(cfg.models) * (1 + len(cfg.attacks)), desc="benchmark")
    for name, model, id_spec in zip(names, cfg.models, id_specs, strict=True):
        bar.set_postfix_str(f"{name}: detect")
        dcfg = DetectConfig(
            model=model,
            id=id_spec,
            ood=ood,
            methods=cfg.methods,
            batch_size=cfg.batch_size,
            limit=cfg.limit,
            weights=cfg.weights,
            preprocess=cfg.preprocess,
            **cfg.detector,
        )
        summary = detect(dcfg, dataclasses.replace(rt, out=run.path / name / "detect"))
        bar.update()
        per_method = {m: group_means(per_set, cfg.groups) for m, per_set in summary["results"].items()}
        mean_auroc = {
            m: float(np.mean([g["auroc"] for g in groups.values()])) for m, groups in per_method.items()
        }
        entry: dict[str, Any] = {
            "run": str(model),
            "id": id_spec,
            "id_accuracy": summary["id_accuracy"],
            "detect": f"{name}/detect",
            "results": summary["results"],
            "groups": per_method,
            "mean_auroc": mean_auroc,
            "ranking": sorted(mean_auroc, key=lambda m: -mean_auroc[m]),
        }
        for key in ("odin", "odin_grid", "grids"):
            if key in summary:
                entry[key] = summary[key]
        for method in cfg.attacks:
            bar.set_postfix_str(f"{name}: {method}")
            acfg = AttackConfig(
                model=model,
                dataset=id_spec,
                method=method,
                eps=cfg.attack_eps,
                batch_size=cfg.batch_size,
                limit=cfg.limit,
                seed=cfg.seed,
                weights=cfg.weights,
                preprocess=cfg.preprocess,
                **cfg.attack,
            )
            result = run_attack(acfg, dataclasses.replace(rt, out=run.path / name / f"attack-{method}"))
            entry.setdefault("robust", {})[method] = {
                "run": f"{name}/attack-{method}",
                "rows": result["rows"],
            }
            bar.update()
        models[name] = entry
    bar.close()
    metrics = {"groups": {n: list(s) for n, s in cfg.groups}, "methods": list(cfg.methods), "models": models}
    if cfg.suite:
        metrics["suite"] = suite_report(cfg)
    run.update_metrics(**metrics)
    plots.ranking(
        {
            f"{name} (ID {m['id']})": {method: m["groups"][method] for method in m["ranking"]}
            for name, m in models.items()
        },
        run.file("ranking.png"),
        key="auroc",
        xlabel="AUROC (group mean; detectors sorted by the mean over groups)",
        title="lab4 benchmark",
    )
    atomic_write(run.file("table.md"), lambda p: p.write_text(table_markdown(metrics, cfg)))
    return metrics


def suite_report(cfg: BenchmarkConfig) -> dict:
    """The suite's record in metrics.json: where the images came from, OpenOOD's published AUROC (%) per
    detector and group, its source, and what differs from our run."""
    assert cfg.suite is not None
    suite = suites.SUITES[cfg.suite]
    plan = suites.plan(cfg.suite, cfg.imglist_dir)
    return {
        "name": cfg.suite,
        "data": plan.data,
        "imglists": cfg.imglist_dir is not None,
        "reference": {
            m: {"near": suite.reference[m][0], "far": suite.reference[m][1]}
            for m in cfg.methods
            if m in suite.reference
        },
        "reference_rows": {m: suites.LEADERBOARD_NAMES[m] for m in cfg.methods if m in suite.reference},
        "reference_source": suites.SOURCE,
        "reference_checkpoint": suite.checkpoint,
        "differences": suites.differences(cfg.suite, cfg.imglist_dir is not None, cfg.preprocess),
    }


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def table_markdown(metrics: dict, cfg: BenchmarkConfig) -> str:
    """table.md: per model, detectors ranked by mean AUROC, AUROC / FPR95 (%) per set and per group."""
    groups = metrics["groups"]
    lines = [
        "# lab4 benchmark",
        "",
        "ID test split against each OOD test set. AUROC and FPR@95%TPR in % (ID positive; higher AUROC and lower "
        "FPR95 are better). A group's columns are the means over its sets; *mean AUROC* is the mean of the group "
        "means, the ranking key.",
        "",
        "Groups: " + "; ".join(f"**{g}**: {', '.join(specs)}" for g, specs in groups.items()),
    ]
    suite = metrics.get("suite")
    reference = suite["reference"] if suite else {}
    if suite:
        lines += [
            "",
            f"Suite **{suite['name']}**; images: {suite['data']}.",
            "",
            f"*OpenOOD v1.5* columns: the published mean AUROC (%) of the same detector over the group, "
            f"{suite['reference_checkpoint']}. Source: {suite['reference_source']}. A reference, not a check: "
            "what differs —",
            "",
            *(f"- {line}" for line in suite["differences"]),
        ]
    for name, m in metrics["models"].items():
        lines += [
            "",
            f"## {name}",
            "",
            f"`{m['run']}`: ID {m['id']}, test accuracy {_pct(m['id_accuracy'])}%",
            "",
        ]
        header = ["detector"]
        for g, specs in groups.items():
            header += [f"{s} AUROC" for s in specs] + [f"{s} FPR95" for s in specs]
            header += [f"**{g}** AUROC", f"**{g}** FPR95"]
            header += [f"*OpenOOD v1.5* {g} AUROC"] if suite and g in ("near", "far") else []
        header.append("mean AUROC")
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method in m["ranking"]:
            per_set, per_group = m["results"][method], m["groups"][method]
            row = [method]
            for g, specs in groups.items():
                row += [_pct(per_set[s]["auroc"]) for s in specs] + [_pct(per_set[s]["fpr95"]) for s in specs]
                row += [_pct(per_group[g]["auroc"]), _pct(per_group[g]["fpr95"])]
                if suite and g in ("near", "far"):
                    row.append(f"{reference[method][g]:.2f}" if method in reference else "—")
            row.append(_pct(m["mean_auroc"][method]))
            lines.append("| " + " | ".join(row) + " |")
        if "robust" in m:
            radii = cfg.attack_eps
            lines += ["", f"Robust accuracy (%) of {name} per ε (pixel units):", ""]
            lines += [
                "| attack | " + " | ".join(f"ε={e:g}" for e in radii) + " |",
                "|" + "---|" * (1 + len(radii)),
            ]
            for method, r in m["robust"].items():
                lines.append(f"| {method} | " + " | ".join(_pct(row["accuracy"]) for row in r["rows"]) + " |")
    return "\n".join(lines) + "\n"
