"""`lab4 detect` on your own images: an image folder of PNGs (digits 5-9, RGB, 24 px) scored as OOD for a
model trained on 8 px grey digits 0-4 — decoded straight to the model's input size."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from lab4_ood.cli import group


def lab4(*args):
    return CliRunner().invoke(group, [str(a) for a in args])


def test_detect_scores_an_image_folder_as_ood_and_refuses_a_missing_one(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    folder = tmp_path / "mine"
    for c in range(5, 10):
        for i in np.flatnonzero(d.target == c)[:8]:
            grey = Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8)).resize((24, 24))
            (folder / str(c)).mkdir(parents=True, exist_ok=True)
            grey.convert("RGB").save(folder / str(c) / f"{i}.png")
    train = ["train", "--dataset", "digits:0-4", "--model", "mlp", "--depth", "1", "--width", "32"]
    r = lab4(*train, "--epochs", "3", "--batch-size", "64", "--cpu", "--out", tmp_path / "base")
    assert r.exit_code == 0, r.output
    missing = tmp_path / "nowhere"
    r = lab4("detect", "--model", tmp_path / "base", "--ood", f"imagefolder:{missing}", "--method", "msp",
             "--cpu", "--out", tmp_path / "refused")  # fmt: skip
    assert r.exit_code != 0 and r.output.strip() == f"Error: imagefolder: {missing} is not a folder"
    assert not (tmp_path / "refused").exists()
    spec = f"imagefolder:{folder}"
    r = lab4("detect", "--model", tmp_path / "base", "--ood", spec, "--method", "msp", "--cpu",
             "--out", tmp_path / "det")  # fmt: skip
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "det" / "metrics.json").read_text())
    assert m["results"]["msp"][spec]["auroc"] > 0.6  # digits 5-9 look less familiar than 0-4
