"""CPU seconds per optimizer step of the full profiles' real-size networks, and what that makes of each step.

    python bench/full_profile_steps.py [--only resnet20,distilbert] [--repeats 2]

Hardware: the machine it runs on, one torch thread. Time: a minute or two per network on the project's 2-core
CPU. Evidence: *process* CPU time (``time.process_time``) of one forward + backward + optimizer step on random
inputs at the recipe's batch size, after one untimed step — CPU time, not wall time, so that other jobs on the
cores do not inflate it (cache sharing still does, a little). ``RUNS`` multiplies it by the optimizer steps of
each full-profile step (epochs × batches of its split; evaluations as a third of a step per example) and prints
CPU hours of one core (the recipes' ``cpu_minutes``); a quiet machine's wall time is that over the speed-up of its
threads, which this does not measure. Only what installs here runs: DistilBERT needs the lab2 environment.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn as nn

# name → (kind, options, batch size)
NETWORKS = {
    "mlp-d30": ("image", dict(family="mlp", in_shape=(1, 28, 28), depth=30, width=64), 128),
    "resnet20": ("image", dict(family="cnn", in_shape=(3, 32, 32), depth=3, width=16, stages=3), 128),
    "resnet32": ("image", dict(family="cnn", in_shape=(3, 32, 32), depth=5, width=16, stages=3), 128),
    "resnet56": ("image", dict(family="cnn", in_shape=(3, 32, 32), depth=9, width=16, stages=3), 128),
    "lab1-teacher": ("image", dict(family="cnn", in_shape=(3, 32, 32), depth=4, width=64), 128),
    "lab1-student": ("image", dict(family="cnn", in_shape=(3, 32, 32), depth=2, width=16), 128),
    "lab4-cnn": ("image", dict(family="cnn", in_shape=(3, 32, 32), depth=2, width=64, stages=3), 128),
    "distilbert": ("text", {}, 32),
}
TEXT_TOKENS = 48  # a padded Rotten Tomatoes batch: sentences average ~25 tokens, a batch pads to its longest
EVAL = 1 / 3  # an evaluation example against a training one (forward only)
# step of a full profile → [(network, steps per epoch, epochs, evaluated examples, step multiplier)]
# the multiplier: PGD-7 adversarial training runs 7 attack passes (forward + backward) besides the update;
# outlier exposure adds an OOD batch to every step; distillation adds a teacher forward
C10, C100_95, MNIST = 45_000, 42_750, 54_000  # training examples after the 10% validation split
RUNS = {
    "lab1 mlp-study": [
        ("mlp-d30", MNIST / 128, 20, 6_000 * 20 + 10_000, 8 * 3 / 2)
    ],  # 8 cells × 3 seeds, ~half as deep on average
    "lab1 cnn-study": [
        (n, C10 / 128, 30, 5_000 * 30 + 10_000, 2) for n in ("resnet20", "resnet32", "resnet56")
    ],
    "lab1 source": [("resnet20", C10 / 128, 50, 5_000 * 50 + 10_000, 1)],
    "lab1 transfer": [("resnet20", C100_95 / 128 * 50 / 47.5, 10, 5_000 * 10 + 10_000, 10)],  # ~10 rows
    "lab1 teacher": [("lab1-teacher", C10 / 128, 30, 5_000 * 30 + 10_000, 1)],
    "lab1 distill": [
        ("lab1-student", C10 / 128, 30, 5_000 * 30 + 10_000, 2),
        ("lab1-teacher", C10 / 128, 30, 0, EVAL),
    ],
    "lab4 base-train": [("lab4-cnn", C10 / 128, 30, 5_000 * 30 + 10_000, 1)],
    "lab4 adv-train": [("lab4-cnn", C10 / 128, 30, 5_000 * 30 + 10_000, 1 + 7)],
    "lab4 oe-train": [("lab4-cnn", C10 / 128, 30, 5_000 * 30 + 10_000, 2)],
    "lab2 finetune-full": [("distilbert", 8_530 / 32, 3, 1_066 * 4, 1)],
    "lab2 finetune-bf16": [
        ("distilbert", 8_530 / 32, 3, 1_066 * 4, 1)
    ],  # fp32 measured; bf16 on a CPU differs
}


def _image_step(options: dict, batch: int):
    from dla_core.models import ModelConfig, build_model

    options = dict(options)
    shape = options.pop("in_shape")
    model = build_model(ModelConfig(options.pop("family"), shape, 10, **options))
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    return model, lambda: nn.functional.cross_entropy(model(x), y)


def _text_step(batch: int):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    model = DistilBertForSequenceClassification(DistilBertConfig())  # distilbert-base-uncased's sizes
    ids = torch.randint(1000, 30_000, (batch, TEXT_TOKENS))
    y = torch.randint(0, 2, (batch,))
    return model, lambda: model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=y).loss


def cpu_seconds_per_step(name: str, repeats: int) -> float:
    kind, options, batch = NETWORKS[name]
    model, loss = _text_step(batch) if kind == "text" else _image_step(options, batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for i in range(repeats + 1):
        start = time.process_time()
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()
        if i:  # the first step allocates: not timed
            times.append(time.process_time() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated networks (default: every one that imports)")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    names = [n for n in args.only.split(",") if n] or list(NETWORKS)
    measured: dict[str, float] = {}
    for name in names:
        try:
            measured[name] = cpu_seconds_per_step(name, args.repeats)
        except ImportError as e:
            print(f"{name}: skipped ({e})")
            continue
        print(f"{name}: {measured[name]:.3f} CPU s per step (1 thread, batch {NETWORKS[name][2]})")
    print("\n| full-profile step | CPU hours (1 thread) |\n|---|---:|")
    for step, parts in RUNS.items():
        if not all(n in measured for n, *_ in parts):
            continue
        seconds = sum(
            measured[n] * (math.ceil(per_epoch) * epochs * mult + evals / NETWORKS[n][2] * EVAL)
            for n, per_epoch, epochs, evals, mult in parts
        )
        print(f"| {step} | {seconds / 3600:.1f} |")


if __name__ == "__main__":
    main()
