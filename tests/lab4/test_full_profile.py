"""`lab4 reproduce --profile full --max-steps 1`: the full recipe end to end on full-size data, offline.

CIFAR-10 (in distribution), CIFAR-100 (people as the near OOD set, the other 95 classes for outlier exposure) and
MNIST of random images in their official formats and sizes (``tests/full_size.py``) stand in for the downloads.
Every training step trains the real 64-channel network (plain, PGD adversarial training, outlier exposure) and its
autoencoder for one step; detect and attack take the recipe's smoke cap of 64 images per set. Through the `lab4`
console script; the report is written and says it is a smoke run.
"""

from __future__ import annotations

import json

import pytest

from lab4_ood.reproduce import steps
from tests.full_size import FULL_SMOKE_TIMEOUT, failure, run_lab


@pytest.mark.slow
@pytest.mark.timeout(FULL_SMOKE_TIMEOUT)
def test_full_profile_runs_every_step_at_real_size_and_writes_a_smoke_report(full_size_data, tmp_path):
    out = tmp_path / "lab4-full"
    r = run_lab("lab4", "reproduce", "--profile", "full", "--max-steps", "1", "--out", out,
                env={"DLA_DATA_DIR": str(full_size_data)})  # fmt: skip
    assert r.returncode == 0, failure(r)
    plan = steps("full", out, False)
    manifest = json.loads((out / "metrics.json").read_text())["steps"]
    for step in plan:
        cap = "--max-steps 1" if step.name.endswith(("-train", "-ae")) else "--limit 64"
        assert manifest[step.name]["done"] and cap in manifest[step.name]["command"], step.name
        assert json.loads((out / step.name / "metrics.json").read_text()), step.name
    report = (out / "report.md").read_text()
    assert "Smoke run: at most 1 step per epoch" in report and (out / "report.html").is_file()
    print({step.name: manifest[step.name]["seconds"] for step in plan})
