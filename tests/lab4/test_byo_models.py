"""`lab4 detect / attack / benchmark --model` with classifiers from anywhere (dla_core.adapters), offline: a
random-weight torchvision ResNet-18 scoring digits against an image folder of PNGs, a TorchScript file refusing
the feature detectors, and the datasets checked before any model loads."""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn as nn
from click.testing import CliRunner
from PIL import Image

from lab4_ood.cli import group


def lab4(*args):
    return CliRunner().invoke(group, [str(a) for a in args])


def png_folder(root, classes=range(5, 10), per_class=4):
    from sklearn.datasets import load_digits

    d = load_digits()
    for c in classes:
        for i in np.flatnonzero(d.target == c)[:per_class]:
            grey = Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8)).resize((24, 24))
            (root / str(c)).mkdir(parents=True, exist_ok=True)
            grey.convert("RGB").save(root / str(c) / f"{i}.png")
    return root


def test_detect_with_a_random_torchvision_resnet_on_an_image_folder(tmp_path):
    spec = f"imagefolder:{png_folder(tmp_path / 'mine')}"
    out = tmp_path / "det"
    r = lab4("detect", "--model", "torchvision:resnet18", "--weights", "none", "--id", "digits:0-4",
             "--ood", spec, "--method", "msp,knn,react", "--knn-k", "3", "--limit", "6", "--batch-size", "8",
             "--cpu", "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["results"]) == {"msp", "knn", "react"}
    assert all(0 <= m["results"][k][spec]["auroc"] <= 1 for k in m["results"])
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["model"] == "torchvision:resnet18" and saved["weights"] == "none"
    source = saved["model_source"]  # what the model was and how its images were prepared
    assert source["family"] == "torchvision" and source["transform_of"] == "IMAGENET1K_V1"
    assert source["preprocessing"] == {"resize": [256], "crop": [224, 224], "interpolation": "bilinear",
                                       "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                       "channels": 3}  # fmt: skip


def test_detect_checks_the_datasets_before_the_model_and_refuses_bad_specs(tmp_path):
    out = tmp_path / "det"
    # an unknown torchvision name passes the spec's syntax; the bad OOD set is said first, before any model loads
    r = lab4("detect", "--model", "torchvision:resnet19", "--weights", "none", "--id", "digits:0-4",
             "--ood", "nosuchset", "--cpu", "--out", out)  # fmt: skip
    assert r.exit_code != 0 and "nosuchset" in r.output and "resnet19" not in r.output, r.output
    r = lab4("detect", "--model", "torchvision:resnet19", "--weights", "none", "--id", "digits:0-4",
             "--ood", "fake", "--cpu", "--out", out)  # fmt: skip
    assert r.exit_code != 0 and r.output.strip() == (
        "Error: torchvision has no classifier 'resnet19' (see torchvision.models.list_models())"
    )
    for bad in (["--model", "resnet18"], ["--model", "timm:"]):
        r = lab4("detect", *bad, "--id", "digits:0-4", "--ood", "fake", "--cpu", "--out", out)
        assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1 and "Error:" in r.output, r.output
    r = lab4(
        "detect",
        "--model",
        "torchvision:resnet18",
        "--id",
        "digits:0-4",
        "--ood",
        "fake",
        "--cpu",
        "--out",
        out,
    )  # fmt: skip  (pretrained weights: no network here)
    # one Error line (beside it, torch.hub's own "Downloading: …" line on stderr)
    (error,) = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert r.exit_code != 0 and error.startswith("Error: could not load resnet18's IMAGENET1K_V1 weights")
    assert error.endswith("offline, --weights none builds the architecture with random weights")
    r = lab4("detect", "--model", "torchvision:resnet18", "--ood", "fake", "--cpu", "--out", out)
    assert (
        r.output.strip()
        == "Error: torchvision:resnet18 does not record its dataset; pass --id SPEC (e.g. --id cifar10)"
    )
    assert not out.exists()


def test_a_torchscript_file_scores_logits_and_refuses_feature_detectors(tmp_path):
    torch.manual_seed(0)
    net = torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(64, 5)))
    net.save(str(tmp_path / "m.pt"))
    common = [
        "--model",
        tmp_path / "m.pt",
        "--id",
        "digits:0-4",
        "--ood",
        "digits:5-9",
        "--limit",
        "20",
        "--cpu",
    ]
    r = lab4("detect", *common, "--method", "msp,energy", "--out", tmp_path / "ok")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ok" / "config.json").read_text())["config"]["model_source"]["family"] == (
        "torchscript"
    )
    r = lab4("detect", *common, "--method", "msp,vim", "--out", tmp_path / "refused")
    assert (
        r.exit_code != 0
        and r.output.strip().startswith("Error: --method vim: ")
        and "logits only" in r.output
    )
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "refused").exists()
    r = lab4("attack", "--model", tmp_path / "m.pt", "--dataset", "digits:0-4", "--method", "fgsm",
             "--eps", "0,0.1", "--limit", "20", "--cpu", "--out", tmp_path / "att")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = lab4("attack", "--model", tmp_path / "m.pt", "--weights", "none", "--dataset", "digits:0-4",
             "--cpu", "--out", tmp_path / "att2")  # fmt: skip
    assert r.output.strip().endswith("has its own weights") and not (tmp_path / "att2").exists()


def test_benchmark_names_a_named_model_folder_from_its_spec(tmp_path):
    torch.manual_seed(0)
    torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(64, 5))).save(str(tmp_path / "m.pt"))
    r = lab4("benchmark", "--model", tmp_path / "m.pt", "--id", "digits:0-4", "--methods", "msp",
             "--far", "digits:5-9", "--limit", "20", "--cpu", "--out", tmp_path / "bench")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (tmp_path / "bench" / "m.pt" / "detect" / "metrics.json").exists()
    from lab4_ood.benchmark import model_names

    assert model_names(("torchvision:resnet18", "hf:org/vit", "timm:resnet18")) == [
        "torchvision-resnet18", "hf-org-vit", "timm-resnet18"]  # fmt: skip
