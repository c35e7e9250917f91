"""Seeding and the process picture, without importing torch at module load (CLI modules import this).

``seed_everything(seed)`` is called once at the start of every command, before any model, head, adapter or
classifier is built, so that ``--seed`` alone fixes every random draw of a run (Python, NumPy, torch on every
device). Inside the training loop, randomness is re-derived from (seed, epoch, batch, rank) so resumed and
multi-process runs replay exactly.
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
