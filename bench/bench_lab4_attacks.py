"""lab4 attacks: time of the AutoAttack subset (APGD-CE → APGD-DLR → Square) per 100 images, against a reference
in the same run.

    python bench/bench_lab4_attacks.py [--n 100] [--eps 0.0314] [--n-queries 1000] [--repeats 3] [--threads 1]

On the core CNN (residual, 2 stages × 1 block, width 16) at CIFAR shape 3×32×32, its weights trained for a few
steps on random labels so that it classifies its own images right (an untrained model is fooled at the start and
would time nothing): ``--n`` images, L∞ ε, ``--n-queries`` for Square (torchattacks' default is 5,000; Square
stops per image as soon as it succeeds), 10 APGD steps (torchattacks' default).

The reference: torchattacks' ``MultiAttack`` of the same three (APGD ce, APGD dlr, Square) when torchattacks is
installed (``.nox/tests-lab4-peers``), else our PGD-10 (one forward/backward per step: the cost of a plain
iterative attack). Reference and ours alternate; medians of ``--repeats`` after an untimed warm-up; robust
accuracy printed for both. Prints a Markdown table and ``RESULT`` lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model

from dla_core.models import ModelConfig, build_model
from lab4_ood.attacks import attack


def model_and_data(n: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(ModelConfig("cnn", (3, 32, 32), 10, depth=1, width=16, stages=2, residual=True))
    x, y = torch.rand(n, 3, 32, 32), torch.randint(0, 10, (n,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):  # memorise the labels: the attacks then have work to do
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x, y


def robust(model: torch.nn.Module, adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(adv).argmax(1) == y).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--eps", type=float, default=8 / 255)
    ap.add_argument("--n-queries", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, x, y = model_and_data(args.n)
    for p in model.parameters():
        p.requires_grad_(False)

    def ours() -> torch.Tensor:
        return attack("autoattack", model, x, y, args.eps, steps=10, n_queries=args.n_queries, seed=0)

    try:
        import torchattacks as ta

        name = "torchattacks MultiAttack(APGD-CE, APGD-DLR, Square)"
        multi = ta.MultiAttack(
            [
                ta.APGD(model, eps=args.eps, loss="ce", seed=0),
                ta.APGD(model, eps=args.eps, loss="dlr", seed=0),
                ta.Square(model, eps=args.eps, n_queries=args.n_queries, seed=0),
            ]
        )

        def reference() -> torch.Tensor:
            return multi(x, y)
    except ImportError:
        name = "ours PGD-10 (torchattacks not installed)"

        def reference() -> torch.Tensor:
            torch.manual_seed(0)
            return attack("pgd", model, x, y, args.eps, steps=10)

    times: dict[str, list[float]] = {"reference": [], "ours": []}
    outputs: dict[str, torch.Tensor] = {}
    for rep in range(args.repeats + 1):  # the first round is the warm-up
        for key, fn in (("reference", reference), ("ours", ours)):
            t = time.perf_counter()
            outputs[key] = fn()
            if rep:
                times[key].append(time.perf_counter() - t)
    per100 = {k: statistics.median(v) * 100 / args.n for k, v in times.items()}
    clean = robust(model, x, y)
    print(f"{cpu_model()}, {args.threads} thread(s), torch {torch.__version__}; n={args.n}, ε={args.eps:.4f}, "
          f"Square n_queries={args.n_queries}, clean accuracy {clean:.2f}")  # fmt: skip
    print("| attack | s / 100 images | robust accuracy |\n|---|---|---|")
    print(f"| {name} | {per100['reference']:.2f} | {robust(model, outputs['reference'], y):.2f} |")
    print(f"| ours autoattack (APGD-CE → APGD-DLR → Square) | {per100['ours']:.2f} | "
          f"{robust(model, outputs['ours'], y):.2f} |")  # fmt: skip
    print(f"RESULT autoattack_s_per_100={per100['ours']:.3f} reference_s_per_100={per100['reference']:.3f} "
          f"ratio={per100['ours'] / per100['reference']:.2f} same_images={torch.equal(outputs['ours'], outputs['reference'])}")  # fmt: skip


if __name__ == "__main__":
    main()
