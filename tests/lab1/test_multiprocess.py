"""`lab1 train` under torchrun with two gloo processes, through the command and its run folder, several times.

The run folder used to be created by every rank at once; the slower one then found the other's config.json and
stopped with "already holds a run" (5 of 8 launches). Only the main process may check and write the folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dla_core.stats import read_outcomes

pytestmark = pytest.mark.slow

LAB1 = str(Path(sys.executable).with_name("lab1"))
TRAIN = ["train", "--dataset", "digits:0-4", "--depth", "2", "--width", "16", "--epochs", "2", "--optimizer",
         "sgd", "--lr", "0.05", "--seed", "3"]  # fmt: skip


def torchrun(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        LAB1,
        *argv,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_two_processes_through_the_command_make_one_complete_run_folder(tmp_path):
    one = tmp_path / "one"
    single = subprocess.run([LAB1, *TRAIN, "--batch-size", "64", "--out", str(one)], capture_output=True,
                            text=True, env={**os.environ, "TQDM_DISABLE": "1"})  # fmt: skip
    assert single.returncode == 0, single.stderr
    expected = json.loads((one / "metrics.json").read_text())
    for attempt in range(3):
        out = tmp_path / f"two{attempt}"
        r = torchrun(*TRAIN, "--batch-size", "32", "--out", str(out))
        assert r.returncode == 0, r.stderr[-3000:]
        assert "already holds a run" not in r.stderr
        names = {p.name for p in out.iterdir()}
        assert {"config.json", "metrics.json", "model.safetensors", "learning_curves.png"} <= names
        assert not any(n.startswith(".") for n in names)  # no temporary files left by a second writer
        assert r.stdout.count("test accuracy") == 1  # one voice: only the main process prints
        got = json.loads((out / "metrics.json").read_text())
        assert got["test_accuracy"] == pytest.approx(expected["test_accuracy"], abs=1e-9)
        # the ranks' per-example outcomes gathered in the test set's order, as one process keeps them
        assert read_outcomes(out).correct.tolist() == read_outcomes(one).correct.tolist()
        assert got["history"][-1]["train_loss"] == pytest.approx(
            expected["history"][-1]["train_loss"], rel=1e-4
        )
    again = torchrun(*TRAIN, "--batch-size", "32", "--out", str(tmp_path / "two0"))
    assert again.returncode == 1
    errors = [line for line in again.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "already holds a run" in errors[0]
