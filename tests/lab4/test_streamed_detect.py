"""`lab4 detect` with an image folder as the OOD set gives the same numbers streamed as decoded in memory, says
which it did in metrics.json, and stops on a corrupt file met mid-run with one Error line."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from lab4_ood.cli import group


def lab4(*args):
    return CliRunner().invoke(group, [str(a) for a in args])


def test_detect_on_a_streamed_image_folder_equals_in_memory_and_reports_a_corrupt_file(tmp_path, monkeypatch):
    from sklearn.datasets import load_digits

    d = load_digits()
    folder = tmp_path / "mine"
    for c in range(5, 10):
        for i in np.flatnonzero(d.target == c)[:9]:
            grey = Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8)).resize((20, 22))
            (folder / str(c)).mkdir(parents=True, exist_ok=True)
            grey.convert("RGB").save(folder / str(c) / f"{i}.png")
    train = ["train", "--dataset", "digits:0-4", "--model", "mlp", "--depth", "1", "--width", "16"]
    r = lab4(*train, "--epochs", "1", "--batch-size", "64", "--cpu", "--out", tmp_path / "base")
    assert r.exit_code == 0, r.output
    spec = f"imagefolder:{folder}"
    detect = ["detect", "--model", tmp_path / "base", "--ood", spec, "--method", "msp,energy,knn",
              "--batch-size", "7", "--cpu"]  # fmt: skip
    metrics = {}
    for mode in ("never", "always"):
        monkeypatch.setenv("DLA_DATA_STREAM", mode)
        r = lab4(*detect, "--out", tmp_path / mode)
        assert r.exit_code == 0, r.output
        metrics[mode] = json.loads((tmp_path / mode / "metrics.json").read_text())
    storage = {mode: m.pop("data_storage") for mode, m in metrics.items()}
    assert storage == {"never": {spec: "memory"}, "always": {spec: "streamed"}}
    for m in metrics.values():
        m.pop("threads", None)
    assert metrics["always"]["results"] == metrics["never"]["results"]
    assert metrics["always"] == metrics["never"]
    from dla_core.data import load_dataset

    _, scored = load_dataset(spec)  # the seeded split's test side is what detect scores
    bad = scored.images.files[len(scored) // 2]
    bad.write_bytes(bad.read_bytes()[:60])  # the header reads, the pixels stop short
    r = lab4(*detect, "--out", tmp_path / "corrupt")
    assert r.exit_code != 0
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {bad}: not a readable image"), r.output
