"""Seeding and the process picture, without importing torch at module load (CLI modules import this).

``seed_everything(seed)`` is called once per command, before any model, head, adapter or classifier is built, so
that ``--seed`` alone fixes every random draw of a run (Python, NumPy, torch on every device). The call sits at the
start of the experiment function each command hands its config to (``train_in``, ``run_finetune``, ``run_attack``,
…), not in the click layer: that function is what "config → run" means, so a caller of the library gets the same
numbers as the command, and option errors and ``--help`` stay free of torch.

A command that builds several models in turn (a study's cells, a transfer table's rows, the distilled students,
a LoRA grid's cells, stacked seeds) seeds each with its own seed as it is built instead, so that none depends on
what ran before it and a resumed command equals an uninterrupted one; a ``reproduce`` step is a command of its
own. Inside the training loop, torch is reseeded every step from (seed, epoch, batch, rank) (``reseed_torch``),
so resumed and multi-process runs replay exactly, and ``fit`` seeds everything from the run's seed as it starts
(after the model is built: for the Python and NumPy draws of a step, whoever called it).
"""

from __future__ import annotations

import os


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every GPU) with ``seed``."""
    from accelerate.utils import set_seed

    set_seed(seed)


def reseed_torch(seed: int, device_type: str) -> None:
    """Reseed torch's generators on the CPU and, for ``device_type`` "cuda", the current GPU: what the training
    loop does every step. Not ``torch.manual_seed``: on a machine without CUDA it formats a stack trace each
    call to queue the GPU seeding for later (a millisecond a step), and on a GPU it seeds every device."""
    import torch

    torch.default_generator.manual_seed(seed)
    if device_type == "cuda":
        torch.cuda.manual_seed(seed)


def process_rank() -> int:
    """This process's global rank under torchrun / accelerate launch (0 when run as one process)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Only the main process writes files and prints; the others wait for it (DESIGN: one voice)."""
    return process_rank() == 0
