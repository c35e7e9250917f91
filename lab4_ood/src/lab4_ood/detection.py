"""``lab4 detect``: score the ID test split and each OOD test set with one or more detectors.

Scores: higher = more in-distribution; metrics take ID as the positive class (see metrics.py).
The ODIN grid (``--grid``) is searched on held-out data, not on the test sets: the ID validation slice of the
training split against each OOD set's *training* split; the best (T, ε) by mean AUROC is then used for
``odin`` on the test sets. With ``--grid`` every other selected detector with searched options (those declared
with grid values in methods.py: knn's k, react's / ash's / scale's percentile, dice's p) is searched the same way
over its ``--grid-*`` values (every combination, where it has several): for each value the detector is fitted on
the ID training split (as for the test run) and scores the ID validation slice and the OOD training splits; the
value of the highest mean AUROC (the first on a tie) is then used on the test sets. The points share the passes
that their values do not change (one pass over the training set per distinct fit, one over each held-out set
per distinct per-image view: ``search_hyperparameter``).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dla_core import plots
from dla_core.adapters import FeaturesUnavailable, description_of
from dla_core.config import Runtime
from dla_core.data import ImageBatches, ImageSet
from dla_core.engine import evaluate, make_accelerator
from dla_core.errors import DlaError
from dla_core.runs import RunDir, to_jsonable
from dla_core.seeding import seed_everything
from dla_core.stats import write_outcomes
from dla_core.threads import use_threads
from lab4_ood import detectors as det
from lab4_ood import methods, outcomes
from lab4_ood.datasets import head, load_id, load_model_for, load_ood
from lab4_ood.metrics import check_finite, ood_metrics, pr_curve, roc_curve
from lab4_ood.odin import odin_grid

log = logging.getLogger(__name__)

FEW = 20  # fewer images than this in a set: FPR@95%TPR keeps every ID image, AUROC moves in coarse steps


# every option of every declared detector (methods.py), each a field; with --grid values, also a grid_… field
OPTIONS = methods.options_of(methods.detectors().values())
DetectConfig = dataclasses.make_dataclass(
    "DetectConfig",
    [
        (
            "model",
            str,
        ),  # a --model spec (dla_core.model_spec): a run folder, torchvision:…, timm:…, hf:…, a file
        ("id", str),
        ("ood", tuple[str, ...]),
        ("methods", tuple[str, ...]),
        ("grid", bool, dataclasses.field(default=False)),
        *((o.name, o.annotation, dataclasses.field(default=o.default)) for o in OPTIONS.values()),
        *(
            (o.grid_field, tuple[o.type, ...], dataclasses.field(default=o.grid))
            for o in OPTIONS.values()
            if o.grid
        ),
        ("batch_size", int, dataclasses.field(default=256)),
        ("limit", int | None, dataclasses.field(default=None)),  # at most this many images per set
        # none: random (torchvision:, timm:, hf:); or a checkpoint file loaded onto the architecture
        ("weights", str, dataclasses.field(default="pretrained")),
        ("preprocess", str | None, dataclasses.field(default=None)),  # --preprocess [default: the family's]
    ],
    frozen=True,
)
DetectConfig.__module__ = __name__
# odin's T and ε are searched together by the shared-pass grid (odin.odin_grid), each other searched detector
# over its own grid values (search_hyperparameter)
JOINT_GRID = "odin"


def option_values(cfg: DetectConfig) -> dict:
    """The detectors' option values of ``cfg`` by name."""
    return {name: getattr(cfg, name) for name in OPTIONS}


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
    options: dict,
    train: ImageSet,
    id_val: ImageSet,
    oods: dict[str, ImageSet],
    grids: dict[str, tuple],
    batch_size: int,
    device: torch.device,
) -> list[dict]:
    """Mean AUROC (``id_val`` against each of ``oods``) of ``method`` at each combination of its searched options'
    values (``grids``: option → values), fitted on ``train`` for each; rows in the order of the values. A
    combination the detector refuses to be built with (adascale's p_min > p_max) is left out of the search.

    The points share what does not depend on the searched values (Detector's gather/view split): the training
    set is passed over once per distinct ``gather_key`` and each held-out set once per distinct ``view_key``
    (those per-image views are kept, on the CPU, for the other points); a detector without the split is fitted
    and scores from scratch at every point."""
    fits = methods.detectors()[method].fits
    gathered: dict = {}  # gather_key → what the pass over the training set gathered
    views: dict = {}  # (view_key, set) → per-batch views
    rows, refused = [], []

    def scores(detector: det.Detector, name: str, data: ImageSet) -> np.ndarray:
        key = detector.view_key()
        if key is None:
            return det.score_set(detector, data, batch_size, device)
        if (key, name) not in views:
            views[key, name] = list(det.views_of_set(detector, data, batch_size, device))
        out = [
            detector.from_view(tuple(t.to(device) for t in v)).detach().double().cpu()
            for v in views[key, name]
        ]
        return torch.cat(out).numpy() if out else np.zeros(0)

    for combination in tqdm(list(itertools.product(*grids.values())), desc=f"{method} grid", leave=False):
        chosen = dict(zip(grids, combination, strict=True))
        try:
            detector = det.make_detector(method, model, {**options, **chosen}, device)
        except DlaError as error:
            refused.append(str(error))
            continue
        if fits and detector.gather_key() is None:
            detector.fit(Batches(train, batch_size, device))
        elif fits:
            key = detector.gather_key()
            if key not in gathered:
                gathered[key] = detector.gather(Batches(train, batch_size, device))
            detector.derive(gathered[key])
        s_id = scores(detector, "", id_val)
        check_finite(s_id, f"{method} scores of the ID validation slice")
        aurocs = []
        for spec, data in oods.items():
            s = scores(detector, spec, data)
            check_finite(s, f"{method} scores of OOD {spec} (training split)")
            aurocs.append(ood_metrics(s_id, s)["auroc"])
        rows.append({**chosen, "auroc": float(np.mean(aurocs))})
    if not rows:
        raise DlaError(f"--grid: {method} refuses every combination of its --grid-* values ({refused[0]})")
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


def refuse_featureless(
    model: torch.nn.Module, cfg: DetectConfig, train: ImageSet, device: torch.device
) -> None:
    """A model that gives logits only (a TorchScript / torch.export file): each method is tried on two training
    images (fitted on them where it fits), and one that asks for features is refused before the run folder."""
    if getattr(model, "has_features", True):
        return
    x, y = train.images[:2].to(device).float() / 255, train.labels[:2].to(device)
    for method in cfg.methods:
        try:
            detector = det.make_detector(method, model, option_values(cfg), device)
            if methods.detectors()[method].fits:
                detector.fit([(x, y)])
            with torch.set_grad_enabled(detector.needs_grad):
                detector.scores(x)
        except FeaturesUnavailable as e:
            raise DlaError(f"--method {method}: {e.message}") from None
        except Exception:  # two images may be too few for a fit: the real run says so, not the probe
            continue


def detect(cfg: DetectConfig, rt: Runtime) -> dict:
    seed_everything(0)  # nothing here should draw at random; if anything does, it draws the same every run
    acc = make_accelerator(cpu=rt.cpu)
    device = acc.device
    # the data first: a bad dataset spec fails before a model loads (or downloads)
    splits = load_id(cfg.id, rt.data_dir, rt.download)
    shape = splits.test.shape
    id_test = head(splits.test, cfg.limit)
    oods = {spec: load_ood(spec, shape, rt.data_dir, rt.download) for spec in cfg.ood}
    ood_test = {spec: head(test, cfg.limit) for spec, (_, test) in oods.items()}
    warn_degenerate(cfg, id_test, ood_test)
    model = load_model_for(cfg.model, cfg.weights, splits.test, cfg.preprocess).to(device)
    train = head(splits.train, cfg.limit and 4 * cfg.limit)
    refuse_featureless(model, cfg, train, device)
    source = description_of(model)  # another family's model: its spec, weights and preprocessing
    snapshot = cfg if source is None else {**to_jsonable(cfg), "model_source": source}
    run = RunDir.create(rt.out, snapshot, command="lab4 detect", resumable=False)
    one = lambda: model(id_test.images[:1].to(device).float() / 255)  # noqa: E731  (one example, for the estimate)
    run.update_metrics(threads=use_threads(rt.threads, model, cfg.batch_size, one, training=False).record())
    stored = {
        k: d.source["storage"] for k, d in {cfg.id: id_test, **ood_test}.items() if "storage" in d.source
    }
    if stored:  # image files: decoded in memory or streamed (dla_core.data.streamed)
        run.update_metrics(data_storage=stored)
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

    options = {**option_values(cfg), "temperature": temperature, "eps": eps}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for method in cfg.methods:
        searched = methods.detectors()[method].searched
        if cfg.grid and searched and method != JOINT_GRID:
            rows = search_hyperparameter(
                method,
                model,
                options,
                train,
                head(splits.val, cfg.limit),
                {spec: head(train_ood, cfg.limit) for spec, (train_ood, _) in oods.items()},
                {name: getattr(cfg, OPTIONS[name].grid_field) for name in searched},
                cfg.batch_size,
                device,
            )
            best = max(rows, key=lambda r: r["auroc"])  # the first of the highest
            summary.setdefault("grids", {})[method] = {
                "searched_on": "ID validation split vs OOD training splits (fitted on the ID training split)",
                "option": ", ".join(OPTIONS[name].cli_flag for name in searched),
                "rows": rows,
                "best": best,
            }
            detector = det.make_detector(method, model, {**options, **{n: best[n] for n in searched}}, device)
        else:
            detector = det.make_detector(method, model, options, device)
        if methods.detectors()[method].fits:
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
        title = f"{method}{odin}, model {Path(cfg.model).name}"  # hf:org/name → name
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
