"""`lab1 reproduce --profile full --max-steps 1`: the full recipe end to end on full-size data, offline.

MNIST (idx, 60,000 / 10,000), CIFAR-10 and CIFAR-100 (python pickles, 50,000 / 10,000) of random images in
torchvision's layout (``tests/full_size.py``) stand in for the downloads; the recipe's `--download` finds them
present and reads them. Every step trains its real-size networks (ResNet-20/32/56, the 64-channel teacher, …)
for one step of one epoch, through the `lab1` console script, and the report is written and says so.
"""

from __future__ import annotations

import json

import pytest

from lab1_resnet.reproduce import steps
from tests.full_size import FULL_SMOKE_TIMEOUT, failure, run_lab

RESNET20_PARAMETERS = (
    269_722  # He et al.'s CIFAR ResNet-20 (6n+2, n=3; zero-padding shortcuts), 10 classes: 0.27M
)


@pytest.mark.slow
@pytest.mark.timeout(FULL_SMOKE_TIMEOUT)
def test_full_profile_runs_every_step_at_real_size_and_writes_a_smoke_report(full_size_data, tmp_path):
    out = tmp_path / "lab1-full"
    r = run_lab("lab1", "reproduce", "--profile", "full", "--max-steps", "1", "--out", out,
                env={"DLA_DATA_DIR": str(full_size_data)})  # fmt: skip
    assert r.returncode == 0, failure(r)
    names = [s.name for s in steps("full", out, False)]
    manifest = json.loads((out / "metrics.json").read_text())["steps"]
    for name in names:
        assert manifest[name]["done"] and "--max-steps 1" in manifest[name]["command"], name
        assert json.loads((out / name / "metrics.json").read_text()), name
    report = (out / "report.md").read_text()
    assert "Smoke run: at most 1 step per epoch" in report and (out / "report.html").is_file()
    source = json.loads((out / "source" / "metrics.json").read_text())
    assert source["parameters"] == RESNET20_PARAMETERS and source["epochs"] == 1
    print({name: manifest[name]["seconds"] for name in names})
