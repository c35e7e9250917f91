"""``lab4 detect``: score the ID test split and each OOD test set with one or more detectors.

Scores: higher = more in-distribution; metrics take ID as the positive class (see metrics.py).
The ODIN grid (``--grid``) is searched on held-out data, not on the test sets: the ID validation slice of the
training split against each OOD set's *training* split; the best (T, ε) by mean AUROC is then used for
``odin`` on the test sets. With ``--grid`` every other selected detector with a searched hyperparameter
(``Detector.searched``: knn's k, react's / ash's / scale's percentile, dice's p) is searched the same way over its
``--grid-*`` values: for each value the detector is fitted on the ID training split (as for the test run) and
scores the ID validation slice and the OOD training splits; the value of the highest mean AUROC (the first on a
tie) is then used on the test sets.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dla_core import plots
from dla_core.config import Runtime
from dla_core.data import ImageBatches, ImageSet
from dla_core.engine import evaluate, make_accelerator
from dla_core.errors import DlaError
from dla_core.models import load_model
from dla_core.runs import RunDir
from dla_core.seeding import seed_everything
from dla_core.stats import write_outcomes
from dla_core.threads import use_threads
from lab4_ood import detectors as det
from lab4_ood import outcomes
from lab4_ood.datasets import check_model_fits, head, load_id, load_ood
from lab4_ood.metrics import check_finite, ood_metrics, pr_curve, roc_curve
from lab4_ood.odin import odin_grid

log = logging.getLogger(__name__)

FEW = 20  # fewer images than this in a set: FPR@95%TPR keeps every ID image, AUROC moves in coarse steps


@dataclass(frozen=True)
class DetectConfig:
    model: Path
    id: str
    ood: tuple[str, ...]
    methods: tuple[str, ...]
    temperature: float = 1000.0  # ODIN T
    eps: float = 0.0014  # ODIN ε (the libraries' convention, see odin.py)
    grid: bool = False
    grid_temperatures: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)
    grid_eps: tuple[float, ...] = (0.0, 0.0005, 0.001, 0.0014, 0.002)
    autoencoder: Path | None = None  # train-ae run, for recon
    # --grid values of the searched hyperparameters (Detector.searched): GRID_FIELDS
    grid_knn_k: tuple[int, ...] = (1, 10, 50, 100, 200)
    grid_react_percentile: tuple[float, ...] = (85.0, 90.0, 95.0, 99.0)
    grid_ash_percentile: tuple[float, ...] = (65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0)
    grid_scale_percentile: tuple[float, ...] = (65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0)
    grid_dice_p: tuple[float, ...] = (10.0, 30.0, 50.0, 70.0, 90.0)
    # the feature-space detectors' hyperparameters (detectors.DetectorOptions: OpenOOD's defaults)
    knn_k: int = 50
    max_bank: int = 100_000
    vim_dim: int = 256
    gen_gamma: float = 0.1
    gen_m: int = 100
    react_percentile: float = 90.0
    ash_variant: str = "b"
    ash_percentile: float = 90.0
    scale_percentile: float = 85.0
    dice_p: float = 90.0
    batch_size: int = 256
    limit: int | None = None  # at most this many images per set


def grid_search(
    model: torch.nn.Module,
    id_val: ImageSet,
    oods: dict[str, ImageSet],
    cfg: DetectConfig,
    device: torch.device,
) -> list[dict[str, float]]:
    """Mean AUROC over the OOD sets for every (T, ε), from shared passes (odin.odin_grid)."""

    def scores(data: ImageSet) -> dict[tuple[float, float], np.ndarray]:
        parts: dict[tuple[float, float], list[torch.Tensor]] = {}
        for x, _ in ImageBatches(data, cfg.batch_size).iterate(0, device=device):
            for key, s in odin_grid(model, x, cfg.grid_temperatures, cfg.grid_eps).items():
                parts.setdefault(key, []).append(s.double().cpu())
        return {k: torch.cat(v).numpy() for k, v in parts.items()}

    id_scores = scores(id_val)
    ood_scores = {name: scores(data) for name, data in tqdm(oods.items(), desc="odin grid", leave=False)}
    rows = []
    for (t, e), s_id in id_scores.items():
        aurocs = [ood_metrics(s_id, s[(t, e)])["auroc"] for s in ood_scores.values()]
        rows.append({"temperature": t, "eps": e, "auroc": float(np.mean(aurocs))})
    return rows


def search_hyperparameter(
    method: str,
    model: torch.nn.Module,
    options: det.DetectorOptions,
    train: ImageSet,
    id_val: ImageSet,
    oods: dict[str, ImageSet],
    values: tuple,
    batch_size: int,
    device: torch.device,
) -> list[dict]:
    """Mean AUROC (``id_val`` against each of ``oods``) of ``method`` at each value of its searched hyperparameter,
    fitted on ``train`` for each value; rows in the order of ``values``."""
    field = det.DETECTORS[method].searched
    rows = []
    for value in tqdm(values, desc=f"{method} grid", leave=False):
        detector = det.make_detector(method, model, dataclasses.replace(options, **{field: value}), device)
        if detector.needs_fit:
            detector.fit(Batches(train, batch_size, device))
        s_id = det.score_set(detector, id_val, batch_size, device)
        check_finite(s_id, f"{method} scores of the ID validation slice")
        aurocs = []
        for spec, data in oods.items():
            s = det.score_set(detector, data, batch_size, device)
            check_finite(s, f"{method} scores of OOD {spec} (training split)")
            aurocs.append(ood_metrics(s_id, s)["auroc"])
        rows.append({field: value, "auroc": float(np.mean(aurocs))})
    return rows


@dataclass(frozen=True)
class Batches:
    """The batches of an image set, iterable more than once (ViM's fit takes two passes), one at a time in
    memory."""

    data: ImageSet
    batch_size: int
    device: torch.device

    def __iter__(self):
        return ImageBatches(self.data, self.batch_size).iterate(0, device=self.device)


HYPERPARAMETERS = tuple(
    f.name
    for f in dataclasses.fields(det.DetectorOptions)
    if f.name not in ("temperature", "eps", "autoencoder")
)
GRID_FIELDS = tuple(f.name for f in dataclasses.fields(DetectConfig) if f.name.startswith("grid_") and
                    f.name not in ("grid_temperatures", "grid_eps"))  # fmt: skip


def warn_degenerate(cfg: DetectConfig, id_test: ImageSet, ood_test: dict[str, ImageSet]) -> None:
    """Say so when the numbers cannot mean much, instead of printing a silently perfect one."""
    # a single-class ID set is warned about where it is loaded (dla_core.data); its constant msp/odin scores
    # are caught by warn_constant
    for name, data in {f"ID {cfg.id}": id_test, **{f"OOD {k}": v for k, v in ood_test.items()}}.items():
        if len(data) < FEW:
            log.warning(
                "%s has only %d image(s)%s: AUROC/AUPR/FPR95 on so few images are coarse and can look perfect "
                "by chance",
                name,
                len(data),
                " (--limit)" if cfg.limit is not None else "",
            )


def warn_constant(method: str, s_id: np.ndarray, s_ood: dict[str, np.ndarray]) -> None:
    everything = np.concatenate([s_id, *s_ood.values()])
    if len(everything) and np.all(everything == everything[0]):
        log.warning("%s gives every image the same score: its AUROC of 0.5 says nothing", method)


def detect(cfg: DetectConfig, rt: Runtime) -> dict:
    seed_everything(0)  # nothing here should draw at random; if anything does, it draws the same every run
    acc = make_accelerator(cpu=rt.cpu)
    device = acc.device
    model = load_model(cfg.model).to(device).eval()
    splits = load_id(cfg.id, rt.data_dir, rt.download)
    check_model_fits(model, splits.test)
    shape = splits.test.shape
    id_test = head(splits.test, cfg.limit)
    oods = {spec: load_ood(spec, shape, rt.data_dir, rt.download) for spec in cfg.ood}
    ood_test = {spec: head(test, cfg.limit) for spec, (_, test) in oods.items()}
    warn_degenerate(cfg, id_test, ood_test)
    run = RunDir.create(rt.out, cfg, command="lab4 detect", resumable=False)
    one = lambda: model(id_test.images[:1].to(device).float() / 255)  # noqa: E731  (one example, for the estimate)
    run.update_metrics(threads=use_threads(rt.threads, model, cfg.batch_size, one, training=False).record())
    tested = evaluate(model, ImageBatches(id_test, cfg.batch_size), accelerator=acc, per_example=True)
    write_outcomes(run.path, tested["correct"])
    summary: dict = {"id_accuracy": tested["accuracy"], outcomes.SETS: [cfg.id, *ood_test]}

    temperature, eps = cfg.temperature, cfg.eps
    if cfg.grid:
        if splits.val is None:
            raise DlaError(
                f"{cfg.id} has no validation split to search the --grid on (ODIN and the searched hyperparameters)"
            )
        held_out = {spec: head(train, cfg.limit) for spec, (train, _) in oods.items()}
        rows = grid_search(model, head(splits.val, cfg.limit), held_out, cfg, device)
        best = max(rows, key=lambda r: r["auroc"])
        temperature, eps = best["temperature"], best["eps"]
        summary["odin_grid"] = {
            "searched_on": "ID validation split vs OOD training splits",
            "rows": rows,
            "best": best,
        }

    options = det.DetectorOptions(
        temperature=temperature,
        eps=eps,
        autoencoder=cfg.autoencoder,
        **{name: getattr(cfg, name) for name in HYPERPARAMETERS},
    )
    train = head(splits.train, cfg.limit and 4 * cfg.limit)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for method in cfg.methods:
        field = det.DETECTORS[method].searched
        if cfg.grid and field is not None and hasattr(cfg, f"grid_{field}"):
            rows = search_hyperparameter(
                method,
                model,
                options,
                train,
                head(splits.val, cfg.limit),
                {spec: head(train_ood, cfg.limit) for spec, (train_ood, _) in oods.items()},
                getattr(cfg, f"grid_{field}"),
                cfg.batch_size,
                device,
            )
            best = max(rows, key=lambda r: r["auroc"])  # the first of the highest
            summary.setdefault("grids", {})[method] = {
                "searched_on": "ID validation split vs OOD training splits (fitted on the ID training split)",
                "option": "--" + field.replace("_", "-"),
                "rows": rows,
                "best": best,
            }
            detector = det.make_detector(
                method, model, dataclasses.replace(options, **{field: best[field]}), device
            )
        else:
            detector = det.make_detector(method, model, options, device)
        if detector.needs_fit:
            detector.fit(Batches(train, cfg.batch_size, device))
        s_id = det.score_set(detector, id_test, cfg.batch_size, device)
        s_ood = {
            spec: det.score_set(detector, data, cfg.batch_size, device)
            for spec, data in tqdm(ood_test.items(), desc=method, leave=False)
        }
        check_finite(s_id, f"{method} scores of ID {cfg.id}")
        for spec, s in s_ood.items():
            check_finite(s, f"{method} scores of OOD {spec}")
        warn_constant(method, s_id, s_ood)
        results[method] = {spec: ood_metrics(s_id, s) for spec, s in s_ood.items()}
        outcomes.write_detector(run.path, method, s_id, s_ood)
        # the plots say which model and, for ODIN, which T and ε (no machine path: the run folder's name)
        odin = f" (T={temperature:g}, ε={eps:g})" if method == "odin" else ""
        title = f"{method}{odin}, model {Path(cfg.model).name}"
        plots.score_histograms(
            {f"ID {cfg.id}": s_id, **{f"OOD {k}": v for k, v in s_ood.items()}},
            run.file(f"scores_{method}.png"),
            xlabel=f"{method} score (higher = ID)",
            title=title,
        )
        plots.curves(
            {spec: roc_curve(s_id, s) for spec, s in s_ood.items()},
            run.file(f"roc_{method}.png"),
            "false positive rate (OOD accepted)",
            "true positive rate (ID accepted)",
            title=f"ROC, {title}",
            diagonal=True,
        )
        plots.curves(
            {spec: pr_curve(s_id, s) for spec, s in s_ood.items()},
            run.file(f"pr_{method}.png"),
            "recall (ID)",
            "precision (ID)",
            title=f"PR (ID positive), {title}",
        )
    summary["results"] = results
    summary["odin"] = {"temperature": temperature, "eps": eps}
    run.update_metrics(**summary)
    return summary
