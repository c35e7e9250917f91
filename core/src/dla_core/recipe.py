"""The recipe every lab trains with: "train a model into a run folder", written once.

    seed_everything(cfg.train.seed)                 # before the model is built
    model = build_model(model_config_for(data.train, "mlp", depth=20))
    run = RunDir.create(rt.out, cfg, command="lab1 train", resume=rt.resume)
    done = train_into(run, model, {"train": …, "val": …, "test": …}, cfg.train, rt, save=save_classifier(mcfg))

``train_into`` fits (resuming from the run's checkpoint when asked), evaluates on the test split, saves the model
(``save`` decides how: safetensors with its config, a Hugging Face folder, an autoencoder), writes the final
metrics under one set of key names (``METRIC_KEYS``) and draws the learning curves (and gradient norms). Only
then is the run marked ``finished`` in ``metrics.json``: a study, a transfer table or a distillation that
resumes skips finished child runs (``child_run``) and continues the others from their checkpoints. That ending
is ``finish_run``, which a loop of its own (lab1's stacked seeds) calls as well.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch.nn as nn
from accelerate import Accelerator

from dla_core import plots
from dla_core.config import Runtime
from dla_core.data.batches import Batches
from dla_core.engine import (
    Step,
    TrainConfig,
    classification_step,
    evaluate,
    finish_tracking,
    fit,
    make_accelerator,
    plateaued,
)
from dla_core.models import ModelConfig, count_parameters, save_model, weight_layer_names
from dla_core.runs import CONFIG, MODEL, RunDir, wait_for_main
from dla_core.stats import write_outcomes
from dla_core.threads import ThreadChoice, apply_threads, choose_threads, first_example, step_flops

log = logging.getLogger(__name__)

THREADS = "threads"  # metrics.json key: torch's CPU threads for the run and why ({"threads": 1, "why": …})
FINISHED = "finished"  # metrics.json key set once the run's model and final metrics are written
SAVED = "model_file"  # metrics.json key: where in the run folder the model was saved
# The final metrics every trained run reports (those that apply: no accuracy for a reconstruction loss).
METRIC_KEYS = (
    "parameters",
    "trainable_parameters",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "epochs",
    "train_seconds",
)

Saver = Callable[[RunDir, nn.Module], Path]  # writes the model into the run folder, returns where
Extra = Callable[
    [nn.Module, Accelerator, Mapping[str, Any]], Mapping[str, Any]
]  # (model, acc, metrics so far)


@dataclass
class Trained:
    model: nn.Module  # unwrapped, on the accelerator's device, in eval mode
    history: list[dict[str, float]]
    metrics: dict[str, Any]  # everything in metrics.json after the run
    accelerator: Accelerator


def save_classifier(config: ModelConfig, *, module: nn.Module | None = None) -> Saver:
    """Save as ``model.safetensors`` with ``config`` in its metadata (loadable by ``load_model`` in any lab).
    ``module``: the module to save when the trained one wraps it (e.g. a partly frozen network)."""

    def save(run: RunDir, trained: nn.Module) -> Path:
        save_model(run.file(MODEL), module if module is not None else trained, config)
        return run.path / MODEL

    return save


def train_into(
    run: RunDir,
    model: nn.Module,
    batches: Mapping[str, Batches | None],
    train: TrainConfig,
    rt: Runtime,
    *,
    save: Saver | None,
    step: Step = classification_step,
    eval_step: Step | None = None,
    counted: nn.Module | None = None,
    extra: Extra | None = None,
    plot: bool = True,
    name: str | None = None,
) -> Trained:
    """Train ``model`` on ``batches["train"]`` in ``run`` (validating on ``batches["val"]`` when given), test it
    on ``batches["test"]``, save it with ``save``, write the final metrics and plots; returns what was trained.

    ``eval_step`` measures validation and test (default: cross-entropy and accuracy, whatever ``step`` trains
    with; the autoencoder passes its reconstruction step). ``counted``: the module whose parameters ``parameters``
    reports (default ``model``). ``extra(model, accelerator, metrics)`` adds lab-specific final metrics: it sees
    those computed so far and runs before the run is marked finished, so a resumed study never finds a finished
    run without them. With ``rt.report_to`` the trackers get the steps, the epochs and the final metrics.
    Torch's CPU threads follow ``rt.threads``, OMP_NUM_THREADS or the work per step (``dla_core.threads``);
    the choice goes into metrics.json under ``threads``.
    """
    name = name or run.path.name
    eval_step = eval_step or classification_step
    threads = apply_threads(training_threads(model, batches["train"], eval_step, rt))
    run.update_metrics(**{THREADS: threads.record()})
    acc = make_accelerator(
        train.precision,
        rt.cpu,
        report_to=rt.report_to,
        project_dir=run.path,
        config=run.config,
        compile=rt.compile,
    )
    trainable = count_parameters(model, trainable_only=True)
    result = fit(
        model,
        batches["train"],
        train,
        step=step,
        val=batches.get("val"),
        eval_step=eval_step,
        run=run,
        resume=rt.resume,
        accelerator=acc,
        desc=name,
    )
    if train.patience is not None:  # the stopping rule's outcome, beside the config that declared it
        run.update_metrics(stopped_early=plateaued(result.history, train.patience))
    trained = result.model.eval()
    test = None
    if batches.get("test") is not None:
        test = evaluate(
            trained,
            batches["test"],
            step=eval_step,
            accelerator=acc,
            max_batches=train.max_steps,
            per_example=True,
        )
    written = finish_run(
        run,
        trained,
        result.history,
        result.grad_norms,
        parameters=count_parameters(counted if counted is not None else trained),
        trainable=trainable,
        test=test,
        save=save,
        extra=(lambda so_far: extra(trained, acc, so_far)) if extra is not None else None,
        plot=plot,
        name=name,
        trackers=acc if rt.report_to else None,
    )
    wait_for_main()  # the other processes read what the main one wrote only after this
    return Trained(trained, result.history, written, acc)


def finish_run(
    run: RunDir,
    model: nn.Module,
    history: Sequence[Mapping[str, float]],
    grad_norms: Mapping[str, Sequence[float]],
    *,
    parameters: int,
    trainable: int,
    test: Mapping[str, Any] | None,
    save: Saver | None,
    extra: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    plot: bool = True,
    name: str | None = None,
    trackers: Accelerator | None = None,
    **entries: Any,
) -> dict[str, Any]:
    """End a trained run: save ``model`` with ``save``, write the final metrics (``METRIC_KEYS`` from the history,
    the sizes and the ``test`` result, plus ``extra(metrics so far)``), the history and gradient norms, and
    ``entries``, in one metrics.json write that marks the run ``finished``; with ``plot``, the learning curves
    (and gradient norms) first. A ``test`` result with ``"correct"`` (per example, ``evaluate(per_example=True)``)
    goes to outcomes.npz (``stats.write_outcomes``) for the findings' paired comparisons. Every trained run ends here: ``train_into`` after ``engine.fit``, and loops of their
    own that leave ``fit``'s run folders (lab1's stacked seeds). ``trackers``: an accelerator whose trackers get the
    final metrics and are then closed (``--report-to``). Returns metrics.json as written."""
    name = name or run.path.name
    metrics = final_metrics(history, parameters, trainable, test)
    if extra is not None:
        metrics.update(extra(dict(metrics)))
    metrics = present(metrics)
    if save is not None:
        metrics[SAVED] = save(run, model).relative_to(run.path).as_posix()
    if test is not None and test.get("correct") is not None:
        write_outcomes(run.path, test["correct"])
    if plot:
        plots.learning_curves({name: list(history)}, run.file("learning_curves.png"), title=name)
        if grad_norms:
            plots.grad_norms(
                dict(grad_norms),
                run.file("grad_norms.png"),
                title=f"{name}: gradient norms",
                layers=weight_layer_names(model),
            )
    progress = {"history": list(history), **({"grad_norms": dict(grad_norms)} if grad_norms else {})}
    written = run.update_metrics(**entries, **progress, **metrics, **{FINISHED: True})
    if trackers is not None:
        finish_tracking(trackers, metrics)
    return written


def final_metrics(
    history: Sequence[Mapping[str, float]],
    parameters: int,
    trainable_parameters: int,
    test: Mapping[str, float] | None,
) -> dict[str, Any]:
    """The ``METRIC_KEYS`` of a trained run from its history, its sizes and its test result (``evaluate``'s);
    None where one does not apply (``present`` drops those)."""
    last = history[-1] if history else {}
    metrics: dict[str, Any] = {
        "parameters": parameters,
        "trainable_parameters": trainable_parameters,
        "train_loss": last.get("train_loss"),
        "train_accuracy": last.get("train_accuracy"),
        "val_loss": last.get("val_loss"),
        "val_accuracy": last.get("val_accuracy"),
        "epochs": len(history),
        "train_seconds": round(sum(h.get("epoch_seconds", 0.0) for h in history), 4),
    }
    if test is not None:
        metrics["test_loss"] = test["loss"]
        metrics["test_accuracy"] = test.get("accuracy")
    return metrics


def present(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` without None and nan: a metric that does not apply is left out of metrics.json."""
    return {k: v for k, v in metrics.items() if v is not None and v == v}


def training_threads(model: nn.Module, train: Batches | None, eval_step: Step, rt: Runtime) -> ThreadChoice:
    """The thread choice for training ``model`` on ``train``, only when automatic measured by one forward pass on
    the first example of the first training batch: ``model(x)`` for tuple batches (``(x, y)``, ``(x, y, x_ood)``),
    ``eval_step`` for other kinds (a dict of tokens)."""

    def flops() -> float:
        batch = next(iter(train.iterate(0)), None) if train is not None else None
        if batch is None:
            return 0.0
        one = first_example(batch)
        is_tuple = isinstance(one, (tuple, list))
        size = getattr(train, "batch_size", None) or len(batch[0] if is_tuple else next(iter(batch.values())))
        forward = (lambda: model(one[0])) if is_tuple else (lambda: eval_step(model, one))
        return step_flops(model, size, forward)

    return choose_threads(rt.threads, flops)


#### Child runs: a study's cells, a transfer table's rows, a distillation's students ####


def is_finished(path: Path) -> bool:
    """A run folder whose training, final evaluation and model file were all written."""
    path = Path(path)
    metrics = RunDir(path).read_metrics() if (path / CONFIG).exists() else {}
    if not metrics.get(FINISHED):  # or a folder written before the marker
        return "test_accuracy" in metrics and (path / MODEL).exists()
    return SAVED not in metrics or (path / metrics[SAVED]).exists()  # a deleted model is made again


def child_run(
    path: Path, config: Any, *, command: str, work: Callable[[RunDir, Runtime], Any], rt: Runtime
) -> dict[str, Any]:
    """The metrics of the child run in ``path``: read back when it finished before, otherwise created (or resumed
    from its checkpoint, when a previous attempt started it) and done by ``work(run, child_rt)``.

    Every process takes the same decision: they look at the folder only after the main process has written it.
    """
    wait_for_main()
    if not is_finished(path):
        started = (Path(path) / CONFIG).exists()
        run = RunDir.create(path, config, command=command, resume=started)
        work(run, replace(rt, out=Path(path), resume=started))
        wait_for_main()
    return RunDir(path).read_metrics()
