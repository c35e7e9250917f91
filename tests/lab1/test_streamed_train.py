"""`lab1 train` on an image folder gives the same run streamed (DLA_DATA_STREAM=always) as decoded in memory:
the same normalisation, losses, accuracies and per-example outcomes; the model's config says which was used."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from dla_core.models import load_model, model_config_of
from dla_core.stats import read_outcomes
from lab1_resnet.cli import group


def test_train_on_a_streamed_image_folder_equals_the_in_memory_run(tmp_path, monkeypatch):
    from sklearn.datasets import load_digits

    d = load_digits()
    folder = tmp_path / "digits"
    for c in range(4):
        for k, i in enumerate(np.flatnonzero(d.target == c)[:30]):
            grey = Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8))
            (folder / str(c)).mkdir(parents=True, exist_ok=True)
            grey.resize((10 + k % 3, 10)).save(folder / str(c) / f"{i}.png")  # sizes vary: resized on decode
    runs = {}
    for mode in ("never", "always"):
        monkeypatch.setenv("DLA_DATA_STREAM", mode)
        out = tmp_path / mode
        r = CliRunner().invoke(group, ["train", "--model", "mlp", "--depth", "1", "--width", "16", "--dataset",
                                       f"imagefolder:{folder}", "--epochs", "2", "--batch-size", "16",
                                       "--out", str(out)])  # fmt: skip
        assert r.exit_code == 0, r.output
        source = model_config_of(load_model(out)).extra["data_source"]
        runs[mode] = (json.loads((out / "metrics.json").read_text()), source, read_outcomes(out).correct)
    (m_mem, s_mem, o_mem), (m_str, s_str, o_str) = runs["never"], runs["always"]
    assert (s_mem["storage"], s_str["storage"]) == ("memory", "streamed")  # recorded with the model
    untimed = [
        [{k: v for k, v in e.items() if k != "epoch_seconds"} for e in m["history"]] for m in (m_mem, m_str)
    ]
    assert untimed[0] == untimed[1] and m_str["test_accuracy"] == m_mem["test_accuracy"]
    assert len(m_mem["history"]) == 2 and np.array_equal(o_str, o_mem)
