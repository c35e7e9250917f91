"""Every lab2 command end to end on tiny random models and fixture files."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab2_distilbert.cli import group
from lab2_distilbert.data import DataConfig, load_text_splits
from tests.lab2.test_trust import hand_accuracy

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)  # inside PEFT

ROOT = Path(__file__).resolve().parents[2]


def lab2(*argv: str) -> dict:
    result = CliRunner().invoke(group, [str(a) for a in argv], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return {"output": result.output}


def common(model: Path, data: Path, cache: Path) -> list[str]:
    return ["--model", model, "--data", data, "--cache-dir", cache]


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_features_table_and_feature_cache(tiny_distilbert, text_data, tmp_path):
    args = common(tiny_distilbert, text_data, tmp_path / "cache")
    out = lab2("features", *args, "--pooling", "mean", "--threads", "1", "--out", tmp_path / "f1")["output"]
    assert "linear_svm" in out and "logistic_regression" in out and "knn" in out
    m = metrics(tmp_path / "f1")
    assert m["threads"] == {"threads": 1, "why": "--threads"}
    assert set(m["classifiers"]) == {"linear_svm", "logistic_regression", "knn"}
    assert m["feature_dim"] == 32 and m["sizes"] == {"train": 160, "validation": 40, "test": 40}
    assert (tmp_path / "f1" / "features_pc1.png").stat().st_size > 0
    assert (
        "cpu" not in json.loads((tmp_path / "f1" / "config.json").read_text())["config"]
    )  # runtime, not config
    assert Path(m["features_cache"]).exists()
    lab2("features", *args, "--pooling", "mean", "--out", tmp_path / "f2")
    again = CliRunner().invoke(group, ["features", *map(str, args), "--out", str(tmp_path / "f2")])
    assert (
        again.exit_code == 1 and again.output.startswith("Error: ") and "already holds a run" in again.output
    )
    assert "--resume" not in again.output  # features has no --resume to pass
    assert metrics(tmp_path / "f2")["classifiers"] == m["classifiers"]  # same cached features, same table
    assert len(list((tmp_path / "cache").glob("features-*.pt"))) == 1
    lab2("features", *args, "--pooling", "cls", "--out", tmp_path / "f3")
    assert len(list((tmp_path / "cache").glob("features-*.pt"))) == 2


def test_finetune_learns_and_saves_a_loadable_model(tiny_distilbert, text_data, tmp_path, caplog):
    run = tmp_path / "ft"
    with caplog.at_level(logging.WARNING):
        out = lab2("finetune", *common(tiny_distilbert, text_data, tmp_path / "c"), "--epochs", "8", "--lr", "3e-3",
                   "--batch-size", "16", "--precision", "fp16", "--cpu", "--out", run)["output"]  # fmt: skip
    assert "fp16 needs a GPU" in caplog.text  # the CPU falls back to fp32 and says so
    assert "trainable parameters: 21,538 of 21,538" in out and "wall time" in out
    summary = [line for line in out.splitlines() if "trainable parameters" in line]
    assert len(summary) == 1 and "test accuracy" in summary[0] and summary[0].endswith(f"run folder: {run}")
    m = metrics(run)
    assert m["test_accuracy"] >= 0.85 and m["precision"] == "no" and len(m["history"]) == 8
    assert m["finished"] and m["model_file"] == "model" and m["epochs"] == 8  # through the core recipe
    assert m["trainable_parameters"] == m["parameters"] == 21_538 and m["trainable_fraction"] == 1.0
    assert m["history"][-1]["train_loss"] < m["history"][0]["train_loss"]
    assert (run / "learning_curves.png").exists() and (run / "model" / "model.safetensors").exists()
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["strategy"] == "full" and cfg["train"]["epochs"] == 8 and cfg["data"]["max_length"] == 128
    ev = lab2(
        "evaluate",
        "--model",
        run,
        "--data",
        text_data,
        "--cache-dir",
        tmp_path / "c",
        "--out",
        tmp_path / "ev",
    )
    assert metrics(tmp_path / "ev")["accuracy"] == pytest.approx(m["test_accuracy"])
    assert "neg→neg" in ev["output"]


def test_finetune_head_trains_only_the_head_and_resumes(tiny_bert, text_data, tmp_path):
    argv = ["finetune", *common(tiny_bert, text_data, tmp_path / "c"), "--strategy", "head", "--epochs", "1",
            "--out", tmp_path / "h"]  # fmt: skip
    lab2(*argv)
    m = metrics(tmp_path / "h")
    assert m["trainable_parameters"] == 32 * 2 + 2 and m["parameters"] > 10_000
    again = CliRunner().invoke(group, [str(a) for a in argv])
    assert again.exit_code == 1 and again.output.startswith("Error: ") and "pass --resume" in again.output
    lab2(*argv, "--resume")  # the finished run's checkpoint: nothing left to train, same result
    assert metrics(tmp_path / "h")["history"] == m["history"]
    assert metrics(tmp_path / "h")["test_accuracy"] == pytest.approx(m["test_accuracy"])


def test_lora_command_adapter_and_merged_model(tiny_distilbert, text_data, tmp_path):
    run = tmp_path / "lora"
    out = lab2("lora", *common(tiny_distilbert, text_data, tmp_path / "c"), "--rank", "4", "--alpha", "8",
               "--targets", "q,v", "--epochs", "6", "--lr", "1e-2", "--batch-size", "16", "--merge",
               "--out", run)["output"]  # fmt: skip
    m = metrics(run)
    assert m["lora_params"] == 2 * 2 * (4 * 32 + 32 * 4)  # 2 layers × (q, v) × (A + B)
    assert m["head_params"] == 32 * 32 + 32 + 32 * 2 + 2  # pre_classifier + classifier
    assert f"LoRA parameters: {m['lora_params']:,}" in out
    assert (run / "adapter" / "adapter_model.safetensors").exists() and (
        run / "merged" / "model.safetensors"
    ).exists()
    assert json.loads((run / "adapter" / "adapter_labels.json").read_text()) == ["neg", "pos"]
    assert m["finished"] and m["model_file"] == "adapter"
    assert m["head_params"] + m["lora_params"] == m["trainable_parameters"] < m["parameters"]
    evals = {}
    for name in ("adapter", "merged"):
        lab2("evaluate", "--model", run / name, "--data", text_data, "--cache-dir", tmp_path / "c",
             "--out", tmp_path / f"ev-{name}")  # fmt: skip
        evals[name] = metrics(tmp_path / f"ev-{name}")
    assert evals["adapter"]["accuracy"] == evals["merged"]["accuracy"] == pytest.approx(m["test_accuracy"])
    assert evals["adapter"]["loss"] == pytest.approx(evals["merged"]["loss"], rel=1e-4)


def test_evaluate_maps_labels_through_id2label(tiny_sst2, text_data, tmp_path):
    out = lab2("evaluate", "--model", tiny_sst2, "--data", text_data, "--cache-dir", tmp_path / "c",
               "--split", "validation", "--threads", "1", "--out", tmp_path / "ev")["output"]  # fmt: skip
    m = metrics(tmp_path / "ev")
    assert m["threads"] == {"threads": 1, "why": "--threads"}
    assert m["label_mapping"] == {"NEGATIVE": "neg", "POSITIVE": "pos"} and m["examples"] == 40
    validation = load_text_splits(DataConfig(source=str(text_data))).validation
    assert m["accuracy"] == pytest.approx(hand_accuracy(tiny_sst2, validation), abs=1e-9)
    assert "NEGATIVE→neg" in out and (tmp_path / "ev" / "scores.png").exists()
    assert "cpu" not in json.loads((tmp_path / "ev" / "config.json").read_text())["config"]


def test_bad_input_is_one_line_error(tiny_distilbert, text_data, tmp_path):
    nope = tmp_path / "nope"
    cases = [
        (["features", "--text-column", "review"], "train.csv has no column 'review' (--text-column)"),
        (["lora", "--targets", "q,z"], "--targets: unknown z (choose from q, k, v, o, ffn)"),
        # a missing local folder is named as such, not as a malformed hub repo id
        (["evaluate", "--model", str(nope)], f"the model folder {nope} does not exist"),
        (
            ["features", "--model", str(nope / "deep" / "er")],
            f"the model folder {nope}/deep/er does not exist",
        ),
        (["finetune", "--model", "./runs/missing"], "the model folder ./runs/missing does not exist"),
        (["lora", "--model", "runs/missing"], "no local folder of that name either"),
    ]
    for i, (argv, message) in enumerate(cases):
        cmd, *rest = argv
        extra = [] if "--model" in rest else ["--model", str(tiny_distilbert)]
        out = tmp_path / f"{cmd}{i}"
        r = CliRunner().invoke(group, [cmd, *rest, *extra, "--data", str(text_data), "--out", str(out)])
        assert r.exit_code == 1 and r.output.startswith("Error: "), (argv, r.output)
        assert message in r.output and len(r.output.strip().splitlines()) == 1, (argv, r.output)
        assert "Repo id" not in r.output and not out.exists()  # a failed start leaves no half-made run


def test_console_script_error_has_no_traceback(tmp_path):
    code = "import sys; from lab2_distilbert.cli import main; sys.argv = ['lab2', *sys.argv[1:]]; main()"
    r = subprocess.run([sys.executable, "-c", code, "finetune", "--data", str(tmp_path / "missing.csv"),
                        "--out", str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert r.returncode == 1 and r.stderr.startswith("Error: --data") and "no such file" in r.stderr
    assert "Traceback" not in r.stderr
