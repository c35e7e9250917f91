"""lab4 attacks: time of standard AutoAttack (APGD-CE → APGD-T → FAB-T → Square) per 100 images, against
torchattacks' in the same run.

    python bench/bench_lab4_attacks.py [--n 100] [--eps 0.002] [--steps 10] [--repeats 3] [--threads 1]

On the core CNN (residual, 2 stages × 1 block, width 16) at CIFAR shape 3×32×32 with 10 classes (9 targets for
APGD-T and FAB-T), its weights trained for a few steps on random labels so that it classifies its own images right
(an untrained model is fooled at the start and would time nothing): ``--n`` images, L∞ ε (the default is a radius
at which most images survive APGD-CE, so every stage runs), ``--steps`` for APGD and FAB (torchattacks' AutoAttack
fixes 10; the original runs 100), Square with 5,000 queries (torchattacks' AutoAttack fixes it), seed 0.

The reference: torchattacks 3.5.1's ``AutoAttack(version="standard", n_classes=10, seed=0)`` when torchattacks is
installed (``.nox/tests-lab4-peers``), else our PGD-10 (one forward/backward per step: the cost of a plain
iterative attack). Reference and ours alternate; medians of ``--repeats`` after an untimed warm-up; robust
accuracy printed for both, and whether the images are identical. The load average is printed with the result: on
a shared machine the absolute seconds grow with it, the ratio of the alternating runs much less. Prints a Markdown
table and ``RESULT`` lines.
"""

from __future__ import annotations

import argparse
import os
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
    ap.add_argument("--eps", type=float, default=0.002)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, x, y = model_and_data(args.n)
    for p in model.parameters():
        p.requires_grad_(False)

    def ours() -> torch.Tensor:
        return attack("autoattack", model, x, y, args.eps, version="standard", steps=args.steps, seed=0)

    try:
        import torchattacks as ta

        name = 'torchattacks AutoAttack(version="standard")'
        multi = ta.AutoAttack(model, eps=args.eps, version="standard", n_classes=10, seed=0)
        for component in multi._autoattack.attacks:  # APGD, APGDT and FAB take the same steps as ours
            if hasattr(component, "steps"):
                component.steps = args.steps

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
    load = os.getloadavg()[0]
    print(f"{cpu_model()}, {os.cpu_count()} cores, load average {load:.1f}, {args.threads} thread(s), torch "
          f"{torch.__version__}; n={args.n}, ε={args.eps:.4f}, APGD/FAB steps={args.steps}, clean accuracy {clean:.2f}")  # fmt: skip
    print("| attack | s / 100 images | robust accuracy |\n|---|---|---|")
    print(f"| {name} | {per100['reference']:.2f} | {robust(model, outputs['reference'], y):.2f} |")
    print(f"| ours autoattack --version standard (APGD-CE → APGD-T → FAB-T → Square) | {per100['ours']:.2f} | "
          f"{robust(model, outputs['ours'], y):.2f} |")  # fmt: skip
    print(f"RESULT autoattack_s_per_100={per100['ours']:.3f} reference_s_per_100={per100['reference']:.3f} "
          f"ratio={per100['ours'] / per100['reference']:.2f} load={load:.1f} same_images={torch.equal(outputs['ours'], outputs['reference'])}")  # fmt: skip


if __name__ == "__main__":
    main()
