"""The seeds of one MLP study cell trained together: one Python step serves every seed (work in progress).

The S models of a cell (each built exactly as ``train_in`` builds it: ``seed_everything(seed)`` then
``build_model``) are stacked weight by weight into (S, …) tensors; a layer is one ``baddbmm`` over the seeds, the
loss is the sum of the seeds' mean losses (so each seed's gradient is its own), and one fused Adam steps the
stacked tensors (Adam is element-wise: each seed's slice steps as its own optimizer would). Seed s draws its
batches from its own ``ImageBatches(seed=s)``, as a single run does. Each seed's history, gradient norms and
final weights equal a single ``fit`` of that seed up to float reassociation (``tests/lab1/test_batched.py``).

Not yet wired into ``lab1 study`` (run folders, checkpoints and ``--resume`` per cell are the next step); it
covers the study's default: MLPs, Adam, a constant learning rate, fp32, no clipping or accumulation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from dla_core.data import ImageBatches, Splits
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
    extra: dict[str, Any] = field(default_factory=dict)


def _check(cells: Sequence[TrainRun]) -> None:
    first = cells[0]
    same = {(c.model, c.depth, c.width, c.residual, c.plain_block, c.batch_size, c.augment) for c in cells}
    t = first.train
    if len(same) != 1 or any(c.train.seed == t.seed and c is not first for c in cells):
        raise DlaError("batched seeds: the cells must differ by their seed only")
    if first.model != "mlp" or t.optimizer != "adam" or t.schedule != "constant" or t.warmup:
        raise DlaError("batched seeds cover MLPs trained with Adam at a constant learning rate")
    if t.precision != "no" or t.clip is not None or t.grad_accum != 1 or t.weight_decay:
        raise DlaError("batched seeds cover fp32 runs without clipping, accumulation or weight decay")


class _Stacked:
    """S MLP classifiers of one architecture as stacked (S, …) parameters, with a forward over all of them."""

    def __init__(self, models: Sequence[Classifier]):
        self.template = models[0]
        self.names = [n for n, _ in self.template.named_parameters()]
        per_seed = [dict(m.named_parameters()) for m in models]
        self.params = {
            n: torch.stack([p[n].detach() for p in per_seed]).requires_grad_(True) for n in self.names
        }
        owners = [n.rsplit(".", 1)[0] for n in self.names]
        self.modules = list(dict.fromkeys(owners))
        self.group = torch.tensor([self.modules.index(m) for m in owners])

    def _linear(self, h: torch.Tensor, name: str) -> torch.Tensor:
        w, b = self.params[f"{name}.weight"], self.params[f"{name}.bias"]
        return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(S, B, C, H, W) images in [0, 1] → (S, B, classes) logits."""
        h = self.template.normalize(x.flatten(0, 1)).flatten(1).unflatten(0, x.shape[:2])  # (S, B, C·H·W)
        h = F.relu(self._linear(h, "stem.1"))
        for i, block in enumerate(self.template.blocks):
            if isinstance(block, SingleDense):
                h = F.relu(self._linear(h, f"blocks.{i}.fc"))
            elif isinstance(block, DenseBlock):
                out = self._linear(F.relu(self._linear(h, f"blocks.{i}.fc1")), f"blocks.{i}.fc2")
                h = h + out if block.residual else out
            else:
                raise DlaError(f"batched seeds: unsupported block {type(block).__name__}")
        return self._linear(h, "head")

    def grad_sq_norms(self) -> torch.Tensor:
        """(modules, S) squared gradient norms, weights and biases of a module together."""
        sq = torch.stack([self.params[n].grad.flatten(1).pow(2).sum(1) for n in self.names])  # (params, S)
        return torch.zeros(len(self.modules), sq.shape[1]).index_add_(0, self.group, sq)

    def state_dict(self, s: int) -> dict[str, torch.Tensor]:
        state = {k: v.detach().clone() for k, v in self.template.state_dict().items()}
        state.update({n: self.params[n][s].detach().clone() for n in self.names})
        return state


def _evaluate(net: _Stacked, batches: ImageBatches, seeds: int) -> list[dict[str, float]]:
    sums = torch.zeros(seeds, 3, dtype=torch.float64)  # loss·n, correct, n
    with torch.no_grad():
        for x, y in batches.iterate(0):
            logits = net(x.expand(seeds, *x.shape)).float()
            loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(seeds), reduction="none").view(seeds, -1)
            correct = (logits.argmax(2) == y).sum(1)
            n = float(len(y))
            sums += torch.stack(
                [loss.mean(1).double() * n, correct.double(), torch.full((seeds,), n).double()], 1
            )
    return [{"loss": ln / max(n, 1), "accuracy": c / max(n, 1)} for ln, c, n in sums.tolist()]


def train_seeds(cells: Sequence[TrainRun], data: Splits) -> list[SeedResult]:
    """Train the cells (one config, several seeds) as one stacked model; one result per cell, in order."""
    _check(cells)
    cfg = cells[0].train
    mcfg = model_config(cells[0], data.train)
    models = []
    for cell in cells:
        seed_everything(cell.train.seed)
        models.append(build_model(mcfg))
    net = _Stacked(models)
    seeds = len(cells)
    optimizer = torch.optim.Adam(list(net.params.values()), lr=cfg.lr, fused=True)
    streams = [batches(data, c.batch_size, c.augment, c.train.seed)["train"] for c in cells]
    val = ImageBatches(data.val, EVAL_BATCH) if data.val is not None else None
    histories: list[list[dict[str, float]]] = [[] for _ in cells]
    norms: list[dict[str, list[float]]] = [{} for _ in cells]
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        sums = torch.zeros(seeds, 3, dtype=torch.float64)
        norm_total = torch.zeros(len(net.modules), seeds)
        steps = 0
        for batch in zip(*(s.iterate(epoch) for s in streams), strict=True):
            x = torch.stack([b[0] for b in batch])
            y = torch.stack([b[1] for b in batch])
            logits = net(x).float()
            per_example = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
            loss = per_example.view(seeds, -1).mean(1)
            loss.sum().backward()
            if cfg.log_grad_norms:
                norm_total += net.grad_sq_norms().sqrt()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            n = float(y.shape[1])
            correct = (logits.argmax(2) == y).sum(1).double()
            sums += torch.stack([loss.detach().double() * n, correct, torch.full((seeds,), n).double()], 1)
            steps += 1
        seconds = time.perf_counter() - t0
        evals = _evaluate(net, val, seeds) if val is not None else [{} for _ in cells]
        for s in range(seeds):
            loss_n, correct, n = sums[s].tolist()
            record = {
                "epoch": epoch + 1,
                "train_loss": loss_n / max(n, 1),
                "lr": optimizer.param_groups[0]["lr"],
                "epoch_seconds": round(seconds / seeds, 4),
                "train_accuracy": correct / max(n, 1),
                **{f"val_{k}": v for k, v in evals[s].items()},
            }
            histories[s].append(record)
            if cfg.log_grad_norms:
                for m, name in enumerate(net.modules):
                    norms[s].setdefault(name, []).append(float(norm_total[m, s] / max(steps, 1)))
    return [SeedResult(c.train.seed, histories[s], norms[s], net.state_dict(s)) for s, c in enumerate(cells)]
