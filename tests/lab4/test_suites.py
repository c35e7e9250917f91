"""`lab4 benchmark --suite openood-…`: OpenOOD v1.5's near / far groups on fixtures in the real formats (CIFAR
pickles, MNIST idx, SVHN .mat, DTD, Tiny ImageNet, Places365's val_256, OpenOOD image lists), a tiny dla model
trained on the CIFAR-10 fixture, OpenOOD's published AUROC beside ours, and missing data refused up front."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lab4_ood.cli import group
from lab4_ood.suites import SUITES
from tests.core.test_data_files import _dtd, _solid, _tiny
from tests.core.test_imglist import write_list


def lab4(*args):
    return CliRunner().invoke(group, [str(a) for a in args])


def _svhn(root: Path) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(1)
    (root / "svhn").mkdir()
    for name, n in (("train_32x32.mat", 20), ("test_32x32.mat", 15)):
        savemat(root / "svhn" / name, {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                       "y": (np.arange(n) % 10 + 1).reshape(-1, 1)})  # fmt: skip


def _places(root: Path) -> None:
    base = root / "places365"
    base.mkdir()
    (base / "categories_places365.txt").write_text("/a/airfield 0\n/c/canyon 1\n")
    lines = []
    for i in range(10):
        _solid(base / "val_256" / f"Places365_val_{i + 1:08d}.jpg", 40 + 20 * i, (24, 24))
        lines.append(f"Places365_val_{i + 1:08d}.jpg {i % 2}")
    (base / "places365_val.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def suite_data(data_dir, tmp_path_factory):
    """The shared CIFAR / MNIST fixtures plus SVHN, DTD, Tiny ImageNet and Places365 in their released layouts."""
    root = tmp_path_factory.mktemp("suite-data") / "data"
    shutil.copytree(data_dir, root)
    _svhn(root)
    _dtd(root)
    _tiny(root)
    _places(root)
    return root


@pytest.fixture(scope="module")
def cifar_run(suite_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("suite-run") / "c10"
    r = lab4("train", "--dataset", "cifar10", "--model", "mlp", "--depth", "1", "--width", "16", "--epochs", "1",
             "--batch-size", "64", "--data-dir", suite_data, "--cpu", "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    return out


def _table_row(table: str, method: str) -> list[str]:
    return (
        next(line for line in table.splitlines() if line.startswith(f"| {method} |")).strip("| ").split(" | ")
    )


def test_suite_runs_openoods_groups_on_the_datasets_own_splits_with_the_reference_column(
    suite_data, cifar_run, tmp_path
):
    out = tmp_path / "bench"
    r = lab4("benchmark", "--suite", "openood-cifar10", "--model", cifar_run, "--methods", "msp,energy,entropy",
             "--data-dir", suite_data, "--cpu", "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "own test splits" in r.output and "OpenOOD v1.5" in r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["groups"] == {
        "near": ["cifar100", "tiny-imagenet"],
        "far": ["mnist", "svhn", "dtd", "places365"],
    }
    model = m["models"]["c10"]
    assert model["id"] == "cifar10" and set(model["results"]["msp"]) == {
        *m["groups"]["near"],
        *m["groups"]["far"],
    }
    suite = m["suite"]
    assert suite["name"] == "openood-cifar10" and suite["imglists"] is False
    assert suite["reference"] == {
        "msp": {"near": 88.03, "far": 90.73},
        "energy": {"near": 87.58, "far": 91.21},
    }
    assert suite["reference_rows"] == {"msp": "MSP", "energy": "EBO"}  # the leaderboard rows compared
    assert "arXiv:2306.09301" in suite["reference_source"]
    table = (out / "table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| detector"))
    columns = header.strip("| ").split(" | ")
    near_ref, far_ref = columns.index("*OpenOOD v1.5* near AUROC"), columns.index("*OpenOOD v1.5* far AUROC")
    assert columns[near_ref - 2] == "**near** AUROC" and columns[far_ref - 2] == "**far** AUROC"
    msp, energy, entropy = (_table_row(table, k) for k in ("msp", "energy", "entropy"))
    assert (msp[near_ref], msp[far_ref]) == ("88.03", "90.73")
    assert (energy[near_ref], energy[far_ref]) == ("87.58", "91.21")
    assert (entropy[near_ref], entropy[far_ref]) == ("—", "—")  # no published row for this detector
    ours = float(msp[columns.index("**near** AUROC")])
    assert ours == pytest.approx(100 * model["groups"]["msp"]["near"]["auroc"], abs=0.01)
    assert "Source: OpenOOD v1.5 leaderboard" in table and "ResNet-18, 100 epochs" in table
    assert "- Checkpoint:" in table and "- Preprocessing:" in table and "- Lists:" in table


def test_suite_with_openoods_image_lists(suite_data, cifar_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(suite_data, data)
    suite = SUITES["openood-cifar10"]
    sizes = {}
    for k, entry in enumerate((*suite.near, *suite.far)):
        n = 3 + k
        write_list(data, entry.listed, [(f"{entry.name}/test/{i}.png", -1, 20 * k + i) for i in range(n)])
        sizes[entry.name] = n
    out = tmp_path / "bench"
    run = ("benchmark", "--suite", "openood-cifar10", "--model", cifar_run, "--methods", "msp", "--data-dir",
           data, "--imglist-dir", data / "benchmark_imglist", "--cpu", "--out", out)  # fmt: skip
    svhn = data / "benchmark_imglist" / "cifar10" / "test_svhn.txt"
    svhn.rename(svhn.with_suffix(".away"))
    r = lab4(*run)
    assert r.exit_code != 0 and r.output.startswith("Error: --suite openood-cifar10: 1 set(s) missing"), (
        r.output
    )
    assert f"imglist: {svhn} not found" in r.output and not out.exists()
    svhn.with_suffix(".away").rename(svhn)
    r = lab4(*run)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    listed = data / "benchmark_imglist" / "cifar10"
    assert m["groups"]["near"] == [
        f"imglist:{listed / 'test_cifar100.txt'}",
        f"imglist:{listed / 'test_tin.txt'}",
    ]
    assert m["models"]["c10"]["id"] == "cifar10"  # the ID set stays the dataset the model was trained on
    assert m["suite"]["imglists"] is True and "image lists" in m["suite"]["data"]
    detect = json.loads((out / "c10" / "detect" / "metrics.json").read_text())
    assert "OpenOOD v1.5's image lists" in (out / "table.md").read_text()
    assert list(detect["results"]["msp"]) == [*m["groups"]["near"], *m["groups"]["far"]]
    scored = np.load(out / "c10" / "detect" / "outcomes-msp.npz")["scores"]
    assert len(scored) == 100 + sum(sizes.values())  # the ID test split and exactly the listed OOD images


def test_missing_datasets_are_one_error_line_and_nothing_on_disk(data_dir, cifar_run, tmp_path):
    out = tmp_path / "refused"
    r = lab4("benchmark", "--suite", "openood-cifar10", "--model", cifar_run, "--methods", "msp",
             "--data-dir", data_dir, "--cpu", "--out", out)  # fmt: skip
    assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1, r.output
    line = r.output.strip()
    assert line.startswith("Error: --suite openood-cifar10: 4 set(s) missing or unreadable: ")
    assert line.endswith("pass --download to fetch it (needs network), or copy the official files there")
    assert line.count("--download") == 1
    for name, where in (("tiny-imagenet", "tiny-imagenet-200"), ("svhn", "svhn"), ("dtd", "dtd"),
                        ("places365", "places365")):  # fmt: skip
        assert f"{name} not found in {data_dir}" in line and where in line
    assert not out.exists()


def test_benchmark_checks_every_set_before_making_its_folder(data_dir, cifar_run, tmp_path):
    out = tmp_path / "refused"
    r = lab4("benchmark", "--model", cifar_run, "--methods", "msp", "--near", "cifar100", "--far", "svhn",
             "--data-dir", data_dir, "--cpu", "--out", out)  # fmt: skip
    assert r.exit_code != 0 and r.output.strip().startswith(
        "Error: lab4 benchmark: 1 set(s) missing or unreadable: svhn"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (("--suite", "openood-cifar10", "--near", "fake"), "--suite openood-cifar10 sets the near and far groups; add sets of your own "
         "with --group"),
        (("--imglist-dir", "."), "--imglist-dir reads a suite's image lists: give --suite too"),
        (("--suite", "openood-cifar100"), "{run} was trained on cifar10 but --suite openood-cifar100 takes "
         "cifar100 as ID; pass --id SPEC to score it anyway"),
        (("--suite", "openood-imagenet200"), "--suite openood-imagenet200 needs OpenOOD's image lists for "
         "imagenet200, ssb_hard, ninco, inaturalist, openimage_o (no dataset of dla holds them): pass "
         "--imglist-dir DIR, OpenOOD's benchmark_imglist folder"),
    ],
)  # fmt: skip
def test_suite_refusals(cifar_run, tmp_path, args, message):
    r = lab4("benchmark", "--model", cifar_run, "--methods", "msp", *args, "--cpu", "--out", tmp_path / "o")
    assert r.exit_code != 0 and r.output.strip() == f"Error: {message.format(run=cifar_run)}", r.output
    assert not (tmp_path / "o").exists()


def test_benchmark_loads_each_set_once_though_it_checks_them_first(digits_run, tmp_path, monkeypatch):
    import lab4_ood.datasets as datasets

    calls: list[str] = []
    for name in ("load_splits", "load_dataset"):
        real = getattr(datasets, name)
        monkeypatch.setattr(
            datasets, name, lambda spec, *a, _real=real, **k: calls.append(spec) or _real(spec, *a, **k)
        )
    r = lab4("benchmark", "--model", digits_run, "--methods", "msp", "--near", "digits:5-9", "--far", "fake",
             "--cpu", "--out", tmp_path / "b")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert sorted(calls) == ["digits:0-4", "digits:5-9"]  # the check's loads are the detect run's
