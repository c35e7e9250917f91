"""The seeds of a study's cells trained together: one Python step serves every seed (``lab1 study``'s default).

The S models of a group (each built exactly as ``train_in`` builds it: ``seed_everything(seed)`` then
``build_model``) are stacked weight by weight: the stem and the head as (S, …) tensors, the blocks' layers as one
(layers, S, in, out) tensor, so that a layer is one ``baddbmm`` over the seeds and the gradient norms of every
layer of every seed are a handful of reductions. The loss is the sum of the seeds' mean losses (so each seed's
gradient is its own), and one fused Adam steps the stacked tensors (Adam is element-wise: each seed's slice steps
as its own optimizer would). Seed s draws its batches from its own ``ImageBatches(seed=s)``, as a single run does.

A plain and a residual MLP of one depth (``plain_block="double"``) have the same layers: they differ only by the
skips, so they stack too, a per-model 0/1 skip factor deciding whether a block adds its input. Each model's
history, gradient norms, test metrics and final weights equal a single ``fit`` of its cell up to float
reassociation (``tests/lab1/test_batched.py``); ``Group.single_checkpoint`` gives the checkpoint that ``fit``
would have left, so a cell's run folder is a ``lab1 train`` run folder whichever way it was trained.

Covers the study's default: MLPs, Adam, a constant learning rate, fp32, no clipping, accumulation or weight
decay. ``STACKED`` says so field by field for every field of a cell (``TrainRun`` and its ``TrainConfig``);
``batchable`` reads it, and ``groups`` leaves other cells to the single runs.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from dla_core.checkpoint import Checkpoint
from dla_core.data import ImageBatches, Splits
from dla_core.engine import make_optimizer, make_scheduler
from dla_core.errors import DlaError
from dla_core.models import Classifier, DenseBlock, SingleDense, build_model
from dla_core.seeding import seed_everything
from lab1_resnet.train import EVAL_BATCH, TrainRun, batches, model_config


@dataclass
class SeedResult:
    seed: int
    history: list[dict[str, float]]
    grad_norms: dict[str, list[float]]
    state_dict: dict[str, torch.Tensor]  # the trained weights and buffers, as the single run's model has them
    extra: dict[str, Any] = field(
        default_factory=dict
    )  # test_loss, test_accuracy when a test split was given


def _shape_key(cell: TrainRun) -> tuple:
    """What cells must share to stack: everything but the seed and (for double plain blocks) the skips."""
    skips = "double" if cell.plain_block == "double" else ("single", cell.residual)
    return (replace(cell, residual=True, plain_block="double", train=replace(cell.train, seed=0)), skips)


#### What the stack reproduces ####

ANY = "any value"  # a field the stacked models honour whatever its value
# Every field of a cell, with what the stacked seeds do with it: ANY value is reproduced, or the one value they
# train with (a cell with another value trains as a single run). A nested dataclass field maps its own fields.
# A field missing here keeps every cell out of the stack (and tests/lab1/test_batched.py fails) until it is
# classified: a new training option is never silently ignored by `lab1 study`.
STACKED: dict[str, Any] = {
    "dataset": ANY,
    "model": "mlp",  # _Stacked is MLPs' stem, dense blocks and head
    "depth": ANY,
    "width": ANY,
    "stages": ANY,  # 1 for every MLP
    "residual": ANY,  # a per-model skip factor (double blocks); single blocks stack with their own kind
    "plain_block": ANY,
    "batch_size": ANY,
    "augment": ANY,  # each model draws its batches from its own ImageBatches, augmentation included
    "val_fraction": ANY,
    "train": {
        "epochs": ANY,
        "lr": ANY,
        "optimizer": "adam",  # one fused Adam over the stacked tensors (element-wise: per seed)
        "momentum": ANY,  # SGD's only
        "weight_decay": 0.0,
        "schedule": "constant",
        "warmup": 0.0,
        "grad_accum": 1,
        "clip": None,  # a global norm per model: not done by the one stacked optimizer step
        "precision": "no",
        "seed": ANY,  # models are built and draw batches from their own seed
        "log_grad_norms": ANY,
        "patience": None,  # stopping each seed on its own plateau: the one loop (engine.fit) does that
        "max_steps": None,  # a smoke run's capped epochs and steps: the one loop (engine.fit) does those
    },
}


_UNCLASSIFIED = object()


def _refused(obj: Any, table: dict[str, Any]) -> list[str]:
    """The fields of dataclass ``obj`` whose values ``table`` does not reproduce (unclassified ones included)."""
    refused = []
    for f in dataclasses.fields(obj):
        rule, value = table.get(f.name, _UNCLASSIFIED), getattr(obj, f.name)
        if isinstance(rule, dict):
            refused += [f"{f.name}.{name}" for name in _refused(value, rule)]
        elif rule is not ANY and (rule is _UNCLASSIFIED or value != rule):
            refused.append(f.name)
    return refused


def batchable(cell: TrainRun) -> bool:
    """Whether ``cell``'s training is one the stacked models reproduce (``STACKED``)."""
    return not _refused(cell, STACKED)


def groups(cells: Sequence[TrainRun]) -> list[list[TrainRun]]:
    """The cells that train as one stacked model (``batchable`` ones sharing their shapes), in order of first
    appearance; every other cell is a group of its own (``batchable`` false: a single run)."""
    out: dict[Any, list[TrainRun]] = {}
    for i, cell in enumerate(cells):
        out.setdefault(_shape_key(cell) if batchable(cell) else i, []).append(cell)
    return list(out.values())


def _check(cells: Sequence[TrainRun]) -> None:
    if not cells:
        raise DlaError("batched seeds: no cells to train")
    if len({_shape_key(c) for c in cells}) != 1 or len({c.name for c in cells}) != len(cells):
        raise DlaError(
            "batched seeds: the cells must differ by their seed (and plain/residual with double blocks) only"
        )
    refused = _refused(cells[0], STACKED)  # one shape: the cells share every field STACKED restricts
    if refused:
        raise DlaError(
            f"batched seeds do not reproduce this training ({', '.join(refused)}); train single runs"
        )


# the stacked tensors, in the optimizer's order, and the dimension that indexes the models in each
KEYS = ("stem_w", "stem_b", "blk_w", "blk_b", "head_w", "head_b")
MODEL_DIM = {"stem_w": 0, "stem_b": 0, "blk_w": 1, "blk_b": 1, "head_w": 0, "head_b": 0}


class _Stacked:
    """S MLP classifiers of one shape as stacked tensors, weights as (…, out, in) like ``nn.Linear``'s (``baddbmm``
    takes them transposed, as ``F.linear`` does: the same matrix products as the single models), biases as
    (…, 1, out); a forward over all of them."""

    def __init__(self, models: Sequence[Classifier], residual: Sequence[bool]):
        self.template = models[0]
        blocks = list(self.template.blocks)
        if all(isinstance(b, DenseBlock) for b in blocks):
            self.layers = [f"blocks.{i}.fc{j}" for i in range(len(blocks)) for j in (1, 2)]
            self.double = True
        elif all(isinstance(b, SingleDense) for b in blocks):
            self.layers = [f"blocks.{i}.fc" for i in range(len(blocks))]
            self.double = False
        else:
            raise DlaError("batched seeds: unsupported blocks")
        self.modules = ["stem.1", *self.layers, "head"]  # as the single run's gradient norms name them
        per_model = [dict(m.named_parameters()) for m in models]
        names = {f"{m}.{k}" for m in self.modules for k in ("weight", "bias")}
        if any(set(p) != names for p in per_model):
            raise DlaError("batched seeds: the models' parameters differ")

        def stack(module: str) -> tuple[torch.Tensor, torch.Tensor]:
            w = torch.stack([p[f"{module}.weight"].detach() for p in per_model])
            b = torch.stack([p[f"{module}.bias"].detach() for p in per_model]).unsqueeze(1)
            return w, b

        stem, head = stack("stem.1"), stack("head")
        layers = [stack(name) for name in self.layers]
        tensors = (*stem, torch.stack([w for w, _ in layers]), torch.stack([b for _, b in layers]), *head)
        self.params = {k: t.contiguous().requires_grad_(True) for k, t in zip(KEYS, tensors, strict=True)}
        self.residual = list(residual)
        self.skip = torch.tensor([1.0 if r else 0.0 for r in residual]).view(-1, 1, 1)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(…, C, H, W) images in [0, 1] → (…, C·H·W) normalised as the models' ``normalize`` does."""
        lead = x.shape[:-3]
        return (
            self.template.normalize(x.flatten(0, len(lead) - 1) if lead else x).flatten(1).unflatten(0, lead)
        )

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """(S, B, C·H·W) normalised inputs → (S, B, classes) logits."""
        p = self.params
        h = F.relu(torch.baddbmm(p["stem_b"], h, p["stem_w"].transpose(1, 2)))
        # unbind, then transpose each layer: the backward stacks the layers' gradients straight into the
        # parameter's layout (transposing the stacked tensor first costs a copy of every gradient per step)
        ws = [w.transpose(1, 2) for w in p["blk_w"].unbind(0)]
        bs = p["blk_b"].unbind(0)
        if not self.double:
            for w, b in zip(ws, bs, strict=True):
                h = F.relu(torch.baddbmm(b, h, w))
        else:
            every, none = all(self.residual), not any(self.residual)
            for i in range(0, len(ws), 2):
                out = torch.baddbmm(bs[i + 1], F.relu(torch.baddbmm(bs[i], h, ws[i])), ws[i + 1])
                h = out + h if every else out if none else torch.addcmul(out, self.skip, h)
        return torch.baddbmm(p["head_b"], h, p["head_w"].transpose(1, 2))

    def add_grad_norms(self, total: torch.Tensor) -> None:
        """Add this step's gradient norms (weights and biases of a module together) to ``total`` (modules, S)."""
        g = {k: self.params[k].grad for k in KEYS}
        norm = torch.linalg.vector_norm
        for rows, w, b, dims in ((total[:1], "stem_w", "stem_b", (1, 2)), (total[1:-1], "blk_w", "blk_b", (2, 3)),
                                 (total[-1:], "head_w", "head_b", (1, 2))):  # fmt: skip
            rows += torch.hypot(norm(g[w], dim=dims), norm(g[b], dim=dims))

    def per_model(self, tensors: Mapping[str, torch.Tensor], s: int) -> dict[str, torch.Tensor]:
        """Model ``s``'s slice of tensors laid out like the parameters (the weights, Adam's moments), under the
        single model's parameter names and shapes."""
        out = {"stem.1.weight": tensors["stem_w"][s], "stem.1.bias": tensors["stem_b"][s, 0]}
        for j, name in enumerate(self.layers):
            out[f"{name}.weight"] = tensors["blk_w"][j, s]
            out[f"{name}.bias"] = tensors["blk_b"][j, s, 0]
        out["head.weight"], out["head.bias"] = tensors["head_w"][s], tensors["head_b"][s, 0]
        return {k: v.detach().clone().contiguous() for k, v in out.items()}

    def state_dict(self, s: int) -> dict[str, torch.Tensor]:
        state = {k: v.detach().clone() for k, v in self.template.state_dict().items()}
        state.update(self.per_model(self.params, s))
        return state


def _select(tensors: Mapping[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v.index_select(MODEL_DIM[k], index).contiguous() for k, v in tensors.items()}


def _epoch_inputs(net: _Stacked, streams: Sequence[ImageBatches], epoch: int) -> tuple[torch.Tensor, ...]:
    """One epoch of every model's batches at once: (steps, S, B, C·H·W) normalised inputs, (steps, S, B)
    labels. Models with one seed share its stream (drawn once)."""
    drawn: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    xs, ys = [], []
    for stream in streams:
        if id(stream) not in drawn:
            drawn[id(stream)] = list(stream.iterate(epoch))
        batches_ = drawn[id(stream)]
        xs.append(torch.stack([x for x, _ in batches_]))
        ys.append(torch.stack([y for _, y in batches_]))
    return net.inputs(torch.stack(xs, 1)), torch.stack(ys, 1)


def _evaluate(
    net: _Stacked, prepared: Sequence[tuple[torch.Tensor, torch.Tensor]], per_example: bool = False
) -> list[dict[str, Any]]:
    """Loss and accuracy of every model over ``prepared`` batches ((B, C·H·W) inputs, labels), as ``evaluate``
    computes them for one model: each batch's mean loss × its size, summed, over the examples; ``per_example``:
    also ``"correct"``, each model's (examples,) bool numpy correctness, as ``evaluate(per_example=True)``."""
    seeds = net.skip.shape[0]
    loss_n = torch.zeros(seeds, dtype=torch.float64)
    hits = []  # (S, B) per batch
    n = 0
    with torch.no_grad():
        for h, y in prepared:
            logits = net(h.expand(seeds, *h.shape)).float()
            loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(seeds), reduction="none").view(seeds, -1)
            loss_n += loss.mean(1).double() * len(y)
            hits.append(logits.argmax(2) == y)
            n += len(y)
    correct = torch.cat(hits, 1) if hits else torch.zeros(seeds, 0, dtype=torch.bool)  # (S, N)
    results: list[dict[str, Any]] = [
        {"loss": ln / max(n, 1), "accuracy": c / max(n, 1)}
        for ln, c in zip(loss_n.tolist(), correct.sum(1).tolist(), strict=True)
    ]
    if per_example:
        for r, row in zip(results, correct.cpu().numpy(), strict=True):
            r["correct"] = row
    return results


class Group:
    """The training of a group of cells (``groups``) as one stacked model, epoch by epoch, resumable.

    ``state()`` is what a resume needs after a finished epoch (the stacked weights, Adam's state, the histories
    and gradient norms so far); ``Group(cells, data, state=…)`` continues from it, exactly: the batches are drawn
    from (seed, epoch), so the rest of the run is the uninterrupted one. A state of a larger group (cells
    finished since by other means) serves a subset of its cells.
    """

    def __init__(self, cells: Sequence[TrainRun], data: Splits, *, state: Mapping[str, Any] | None = None):
        _check(cells)
        self.cells, self.data = list(cells), data
        self.cfg = cells[0].train
        self.mcfgs = [model_config(c, data.train) for c in cells]
        models = []
        for cell, mcfg in zip(cells, self.mcfgs, strict=True):
            seed_everything(cell.train.seed)
            models.append(build_model(mcfg))
        self.models = models
        self.net = _Stacked(models, [c.residual for c in cells])
        self.optimizer = torch.optim.Adam(list(self.net.params.values()), lr=self.cfg.lr, fused=True)
        streams: dict[int, ImageBatches] = {}
        for c in cells:
            if c.train.seed not in streams:
                streams[c.train.seed] = batches(data, c.batch_size, c.augment, c.train.seed)["train"]  # type: ignore[assignment]
        self.streams = [streams[c.train.seed] for c in cells]
        self.steps_per_epoch = self.streams[0].num_batches(1)
        if self.steps_per_epoch == 0:
            raise DlaError("no training data: the training split is empty")
        self.val = self._prepared(data.val) if data.val is not None else None
        self.histories: list[list[dict[str, float]]] = [[] for _ in cells]
        self.norms: list[dict[str, list[float]]] = [{} for _ in cells]
        self.epoch = 0
        if state is not None:
            self._restore(state)

    def _prepared(self, images: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self.net.inputs(x), y) for x, y in ImageBatches(images, EVAL_BATCH).iterate(0)]

    #### State ####

    def state(self) -> dict[str, Any]:
        """A copy of everything a resume after the last finished epoch needs (tensors, lists: ``weights_only``)."""
        return copy.deepcopy(
            {
                "cells": [c.name for c in self.cells],
                "epoch": self.epoch,
                "params": {k: v.detach() for k, v in self.net.params.items()},
                "optimizer": self.optimizer.state_dict(),
                "histories": self.histories,
                "grad_norms": self.norms,
            }
        )

    def _restore(self, state: Mapping[str, Any]) -> None:
        saved = list(state["cells"])
        missing = [c.name for c in self.cells if c.name not in saved]
        if missing:
            raise DlaError(f"batched seeds: the group checkpoint lacks {', '.join(missing)}")
        rows = [saved.index(c.name) for c in self.cells]
        index = torch.tensor(rows)
        with torch.no_grad():
            for k, v in _select(state["params"], index).items():
                self.net.params[k].copy_(v)
        opt = copy.deepcopy(state["optimizer"])
        for i, key in enumerate(KEYS):
            entry = opt["state"].get(i, {})
            for name in ("exp_avg", "exp_avg_sq"):
                if name in entry:
                    entry[name] = _select({key: entry[name]}, index)[key]
        self.optimizer.load_state_dict(opt)
        self.epoch = int(state["epoch"])
        self.histories = [list(state["histories"][r]) for r in rows]
        self.norms = [{k: list(v) for k, v in state["grad_norms"][r].items()} for r in rows]

    #### Training ####

    def train_epoch(self) -> None:
        """Train epoch ``self.epoch`` of every model, validate, append to the histories."""
        net, opt, cfg = self.net, self.optimizer, self.cfg
        seeds = len(self.cells)
        t0 = time.perf_counter()
        inputs, labels = _epoch_inputs(net, self.streams, self.epoch)
        loss_n = torch.zeros(seeds, dtype=torch.float64)
        correct = torch.zeros(seeds, dtype=torch.int64)
        norm_total = torch.zeros(len(net.modules), seeds)
        n = 0
        for h, y in zip(inputs, labels, strict=True):
            logits = net(h).float()
            loss = (
                F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(seeds, -1).mean(1)
            )
            loss.sum().backward()
            if cfg.log_grad_norms:
                net.add_grad_norms(norm_total)
            opt.step()
            opt.zero_grad(set_to_none=True)
            count = y.shape[1]
            loss_n += loss.detach().double() * count
            correct += (logits.detach().argmax(2) == y).sum(1)
            n += count
        seconds = time.perf_counter() - t0
        evals = _evaluate(net, self.val) if self.val is not None else [{} for _ in self.cells]
        steps = len(labels)
        means = (norm_total / max(steps, 1)).t().tolist()  # (S, modules)
        for s, (ln, c) in enumerate(zip(loss_n.tolist(), correct.tolist(), strict=True)):
            self.histories[s].append(
                {
                    "epoch": self.epoch + 1,
                    "train_loss": ln / max(n, 1),
                    "lr": opt.param_groups[0]["lr"],
                    "epoch_seconds": round(seconds / seeds, 4),
                    "train_accuracy": c / max(n, 1),
                    **{f"val_{k}": v for k, v in evals[s].items()},
                }
            )
            if cfg.log_grad_norms:
                for name, value in zip(net.modules, means[s], strict=True):
                    self.norms[s].setdefault(name, []).append(value)
        self.epoch += 1

    def fit(self, end_epoch: Callable[[Group], None] | None = None) -> None:
        """Train the remaining epochs; ``end_epoch(self)`` after each (checkpoints, progress)."""
        while self.epoch < self.cfg.epochs:
            self.train_epoch()
            if end_epoch is not None:
                end_epoch(self)

    #### Results ####

    def test(self) -> list[dict[str, Any]]:
        """Test loss, accuracy and per-example correctness of every model (as ``engine.evaluate`` gives them for
        one with ``per_example``)."""
        return _evaluate(self.net, self._prepared(self.data.test), per_example=True)

    def results(self, test: bool = True) -> list[SeedResult]:
        tests = self.test() if test else [{} for _ in self.cells]
        return [
            SeedResult(
                c.train.seed,
                self.histories[s],
                self.norms[s],
                self.net.state_dict(s),
                {f"test_{k}": v for k, v in tests[s].items() if k != "correct"},
            )
            for s, c in enumerate(self.cells)
        ]

    def model(self, s: int) -> Classifier:
        """Model ``s`` as a single run's trained model (its own module, the trained weights, eval mode)."""
        model = self.models[s]
        model.load_state_dict(self.net.state_dict(s))
        return model.eval()

    def single_checkpoint(self, s: int, model: Classifier) -> Checkpoint:
        """The checkpoint ``engine.fit`` leaves after the last epoch of model ``s``'s single run (same optimizer
        and schedule state): its run folder resumes like any ``lab1 train`` run's."""
        cfg = self.cfg
        optimizer = make_optimizer(model.parameters(), cfg)
        scheduler = make_scheduler(optimizer, cfg, self.steps_per_epoch)
        moments = {
            name: self.net.per_model(
                {k: self.optimizer.state[p][name] for k, p in self.net.params.items()}, s
            )
            for name in ("exp_avg", "exp_avg_sq")
        }
        step = self.optimizer.state[self.net.params["stem_w"]]["step"]
        for name, p in model.named_parameters():
            optimizer.state[p] = {
                "step": step.clone(),
                "exp_avg": moments["exp_avg"][name],
                "exp_avg_sq": moments["exp_avg_sq"][name],
            }
        steps = int(step.item())
        sched = scheduler.state_dict()
        sched.update(last_epoch=steps, _step_count=steps + 1)
        scheduler.load_state_dict(sched)
        modules = len(self.net.modules)
        return Checkpoint(
            model={k: v.detach().cpu() for k, v in model.state_dict().items()},
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            epoch=self.epoch,
            batch=0,  # at the end of an epoch: sums and scaler keep their defaults
            history=self.histories[s],
            grad_norms=self.norms[s],
            grad_norm_sums={"total": torch.zeros(modules), "steps": 0} if cfg.log_grad_norms else None,
        )


def train_seeds(cells: Sequence[TrainRun], data: Splits) -> list[SeedResult]:
    """Train the cells (one shape, several seeds; plain and residual together with double blocks) as one stacked
    model; one result per cell, in order."""
    group = Group(cells, data)
    group.fit()
    return group.results()
