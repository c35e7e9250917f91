"""`lab1 distill`: knowledge distillation (Hinton et al., 2015) from a trained teacher into a small student.

    loss = α · CE(student, labels) + (1 − α) · T² · KL(softmax(teacher / T) ‖ softmax(student / T))

The T² keeps the soft term's gradients on the scale of the hard term's as T grows. The teacher runs on each
(augmented) batch, or — with ``precompute`` — once over the un-augmented training images before training; the
student is then fed each image's index and looks up its label and teacher probabilities.

One table compares the teacher, the student trained on labels only, and the distilled student; each student is
a run folder under OUT/students/<name>/, one per seed with several seeds (OUT/students/<name>-s<seed>/: the
table shows their mean ± std).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from dla_core.config import Runtime, from_options
from dla_core.data import ImageBatches, ImageSet
from dla_core.engine import StepOutput, classification_step, evaluate, make_accelerator
from dla_core.errors import DlaError
from dla_core.evidence import OUTCOMES_KEY
from dla_core.models import build_model, count_parameters, load_model
from dla_core.recipe import child_run, save_classifier, train_into
from dla_core.runs import RunDir
from dla_core.seeding import seed_everything
from dla_core.stats import OUTCOMES, write_outcomes
from lab1_resnet import tables
from lab1_resnet.train import EVAL_BATCH, TrainRun, batches, load_data, model_config

log = logging.getLogger(__name__)

#### The loss and the step ####


def distillation_loss(
    student_logits: torch.Tensor, labels: torch.Tensor, teacher_probs: torch.Tensor, T: float, alpha: float
) -> torch.Tensor:
    """α·CE(hard labels) + (1−α)·T²·KL(teacher ‖ student at temperature T), averaged over the batch."""
    s = student_logits.float()
    hard = F.cross_entropy(s, labels)
    soft = F.kl_div(F.log_softmax(s / T, dim=1), teacher_probs.float(), reduction="batchmean")
    return alpha * hard + (1 - alpha) * T * T * soft


class DistillationStep:
    """A training step for ``fit``. Without ``probs`` a batch is (x, y) and the teacher runs on x; with
    precomputed ``probs`` (N, classes) a batch is (x, index) and ``labels[index]``, ``probs[index]`` are used."""

    def __init__(
        self,
        teacher: nn.Module | None,
        T: float,
        alpha: float,
        labels: torch.Tensor | None = None,
        probs: torch.Tensor | None = None,
    ):
        if teacher is None and probs is None:
            raise ValueError("a teacher or precomputed probabilities are needed")
        self.teacher, self.T, self.alpha, self.labels, self.probs = teacher, T, alpha, labels, probs

    def setup(self, accelerator: Any) -> None:
        """Called once by ``fit``: the teacher (frozen, eval mode) and the lookup tables go to the device."""
        device = accelerator.device
        if self.teacher is not None:
            self.teacher = self.teacher.to(device).eval().requires_grad_(False)
        if self.probs is not None:
            self.probs, self.labels = self.probs.to(device), self.labels.to(device)

    def teacher_probs(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.softmax(self.teacher(x).float() / self.T, dim=1)

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        x, y = batch
        if self.probs is not None:
            y, p = self.labels[y], self.probs[y]  # y was the image index
        else:
            p = self.teacher_probs(x)
        logits = model(x)
        loss = distillation_loss(logits, y, p, self.T, self.alpha)
        return StepOutput(loss, len(y), logits.argmax(1) == y)


@torch.no_grad()
def precompute_probs(teacher: nn.Module, data: ImageSet, T: float, device: torch.device) -> torch.Tensor:
    """softmax(teacher / T) for every training image (no augmentation), in dataset order: (N, classes)."""
    teacher = teacher.to(device).eval()
    out = [
        F.softmax(teacher(x).float() / T, 1).cpu()
        for x, _ in ImageBatches(data, EVAL_BATCH).iterate(0, device=device)
    ]
    return torch.cat(out)


#### Config and experiment ####


@dataclass(frozen=True)
class DistillConfig:
    teacher: str  # run folder (or model.safetensors) of the teacher
    student: TrainRun  # the student's architecture, data and training (its dataset = the teacher's)
    temperature: float = 4.0
    alpha: float = 0.5  # weight of the hard-label loss
    precompute: bool = False  # teacher probabilities computed once (un-augmented) instead of per batch
    baseline: bool = True  # also train the student on hard labels only
    seeds: tuple[int, ...] = (0,)  # each student once per seed (the student's own train seed is not used)


def run_distill(cfg: DistillConfig, rt: Runtime) -> str:
    # the teacher is evaluated, not drawn: each seed goes to each student as it is built (below)
    teacher = load_model(Path(cfg.teacher))
    s = cfg.student
    data = load_data(s.dataset, rt.data_dir, s.val_fraction, rt.download)
    tc = teacher.config
    if data.train.shape != tuple(tc.in_shape) or data.train.num_classes != tc.num_classes:
        raise DlaError(
            f"{s.dataset} ({data.train.num_classes} classes of {data.train.shape} images) does not match the "
            f"teacher ({tc.num_classes} classes of {tuple(tc.in_shape)}); pass the teacher's --dataset"
        )
    run = RunDir.create(rt.out, cfg, command="lab1 distill", resume=rt.resume)
    acc = make_accelerator(s.train.precision, rt.cpu)
    b = batches(data, s.batch_size, s.augment, cfg.seeds[0])
    teacher_test = evaluate(
        teacher.to(acc.device), b["test"], accelerator=acc, max_batches=s.train.max_steps, per_example=True
    )
    teacher_outcomes = write_outcomes(run.path, teacher_test["correct"], name="teacher")
    mcfg = model_config(s, data.train)

    def student(name: str, seed: int):
        def work(srun: RunDir, srt: Runtime) -> None:
            student_batches, step = batches(data, s.batch_size, s.augment, seed), classification_step
            if name == "distilled":
                if cfg.precompute:
                    probs = precompute_probs(teacher, data.train, cfg.temperature, acc.device)
                    indexed = replace(data.train, labels=torch.arange(len(data.train)))
                    student_batches["train"] = replace_train(student_batches["train"], indexed)
                    step = DistillationStep(None, cfg.temperature, cfg.alpha, data.train.labels, probs)
                else:
                    step = DistillationStep(teacher, cfg.temperature, cfg.alpha)
            # both students start from the same weights, whichever trained first (and a resumed one too)
            seed_everything(seed)
            train_into(srun, build_model(mcfg), student_batches, replace(s.train, seed=seed), srt,
                       save=save_classifier(mcfg), step=step)  # fmt: skip

        return work

    rows: list[dict[str, Any]] = [
        {
            "model": "teacher",
            "parameters": count_parameters(teacher),
            "test_accuracy": teacher_test["accuracy"],
            OUTCOMES_KEY: teacher_outcomes.name,
        }
    ]
    students = (["labels only"] if cfg.baseline else []) + ["distilled"]
    for name in students:
        base = "baseline" if name == "labels only" else "distilled"
        folders = [f"students/{tables.seed_folder(base, seed, cfg.seeds)}" for seed in cfg.seeds]
        metrics = [
            child_run(
                run.path / folder,
                {"distill": cfg, "student": name, "seed": seed},
                command="lab1 distill student",
                work=student(name, seed),
                rt=rt,
            )
            for seed, folder in zip(cfg.seeds, folders, strict=True)
        ]
        rows.append({"model": f"student, {name}", "parameters": metrics[0]["parameters"],
                     **tables.over_seeds(metrics, ("test_accuracy",)),
                     OUTCOMES_KEY: [f"{f}/{OUTCOMES}" for f in folders]})  # fmt: skip
    columns = {"model": "model", "parameters": "params", "test_accuracy": "test acc"}
    text = tables.write_tables(tables.with_spread(rows), columns, run.path, csv_rows=rows)
    run.update_metrics(rows=rows, temperature=cfg.temperature, alpha=cfg.alpha)
    return text


def replace_train(train: ImageBatches, data: ImageSet) -> ImageBatches:
    return ImageBatches(data, train.batch_size, shuffle=True, augment=train.augment, seed=train.seed)


def student_for(teacher_source: str | Path, options: Mapping[str, Any]) -> TrainRun:
    """The student's TrainRun from a command's options, on the teacher's dataset and family (read from its saved
    model config) where ``options`` leave them out."""
    teacher_cfg = load_model(Path(teacher_source)).config
    dataset = options.get("dataset") or teacher_cfg.extra.get("dataset")
    if not dataset:
        raise DlaError(f"{teacher_source}: the teacher does not record its dataset; pass --dataset")
    return from_options(TrainRun, options, dataset=dataset, model=options.get("model") or teacher_cfg.family)
