from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from dla_core.checkpoint import Checkpoint, load_state, save_state
from dla_core.errors import DlaError
from dla_core.models import (
    BasicBlock,
    ModelConfig,
    ResidualDense,
    build_model,
    count_parameters,
    load_model,
    save_model,
)
from dla_core.runs import RunDir, atomic_write, environment, write_json


def test_mlp_parameter_count_by_hand():
    # stem 64·16+16, 3 blocks of two 16·16+16 layers (plain and residual alike), head 16·10+10
    count = (64 * 16 + 16) + 3 * 2 * (16 * 16 + 16) + (16 * 10 + 10)
    for residual in (False, True):
        cfg = ModelConfig("mlp", (1, 8, 8), 10, residual=residual, depth=3, width=16)
        assert count_parameters(build_model(cfg)) == count
    single = ModelConfig("mlp", (1, 8, 8), 10, residual=False, depth=3, width=16, plain_block="single")
    assert count_parameters(build_model(single)) == (64 * 16 + 16) + 3 * (16 * 16 + 16) + (16 * 10 + 10)


def test_cnn_parameter_count_by_hand():
    cfg = ModelConfig("cnn", (3, 32, 32), 10, residual=True, depth=1, width=8, stages=2)
    stem = 3 * 8 * 9 + 2 * 8
    block1 = 2 * (8 * 8 * 9 + 2 * 8)
    block2 = (8 * 16 * 9 + 2 * 16) + (16 * 16 * 9 + 2 * 16)  # zero-padded identity skip: no parameters
    head = 16 * 10 + 10
    assert count_parameters(build_model(cfg)) == stem + block1 + block2 + head
    projection = ModelConfig(
        "cnn", (3, 32, 32), 10, residual=True, depth=1, width=8, stages=2, shortcut="projection"
    )
    assert count_parameters(build_model(projection)) == stem + block1 + block2 + (8 * 16 + 2 * 16) + head
    out = build_model(cfg)(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_residual_blocks_with_zeroed_branch_are_identity():
    block = ResidualDense(8)
    torch.nn.init.zeros_(block.fc2.weight)
    torch.nn.init.zeros_(block.fc2.bias)
    x = torch.randn(4, 8)
    assert torch.equal(block(x), x)
    conv = BasicBlock(4, 4, 1, residual=True).eval()
    torch.nn.init.zeros_(conv.bn2.weight)
    x = torch.rand(2, 4, 6, 6)  # post-ReLU activations are non-negative
    assert torch.allclose(conv(x), x)


def test_features_and_logits_is_one_pass_of_features_then_head():
    for family in ("mlp", "cnn"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(family, (1, 8, 8), 3, depth=1, width=4)).eval()
        x = torch.rand(5, 1, 8, 8)
        calls: list[int] = []
        model.stem.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        f, logits = model.features_and_logits(x)
        assert len(calls) == 1 and f.shape == (5, 4) and logits.shape == (5, 3)
        torch.testing.assert_close(f, model.features(x))
        torch.testing.assert_close(logits, model(x))


def test_save_and_load_model_roundtrip(tmp_path):
    cfg = ModelConfig("cnn", (1, 8, 8), 3, depth=1, width=4, mean=(0.3,), std=(0.2,))
    model = build_model(cfg).eval()
    save_model(tmp_path / "model.safetensors", model, cfg)
    again = load_model(tmp_path).eval()
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(model(x), again(x)) and again.config == cfg
    with pytest.raises(DlaError, match="no trained model"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DlaError, match="not a dla model"):
        load_model(tmp_path / "junk")


def test_atomic_write_survives_a_crash_mid_write(tmp_path):
    target = tmp_path / "checkpoint.pt"
    torch.save({"w": torch.ones(3)}, target)

    def crash(p):
        p.write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, crash)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind


def test_the_environment_is_read_once_for_many_run_folders(tmp_path, monkeypatch):
    from importlib import metadata

    scans = []
    distributions = metadata.distributions
    monkeypatch.setattr(metadata, "distributions", lambda *a, **k: scans.append(1) or distributions(*a, **k))
    monkeypatch.syspath_prepend(str(tmp_path))  # a new import path: read afresh, then once for every folder
    for i in range(3):
        RunDir.create(tmp_path / f"cell{i}", {"seed": i}, command="train")
    assert len(scans) == 1
    first = environment()
    first["versions"].clear()  # each caller gets its own copy
    assert "torch" in environment()["versions"]


def test_run_folder_refuses_to_clobber_and_checks_resume_options(tmp_path):
    run = RunDir.create(tmp_path / "r", {"depth": 4}, command="train")
    saved = json.loads((run.path / "config.json").read_text())
    assert saved["config"] == {"depth": 4} and "torch" in saved["environment"]["versions"]
    with pytest.raises(DlaError, match="already holds a run"):
        RunDir.create(tmp_path / "r", {"depth": 4}, command="train")
    with pytest.raises(DlaError, match="depth: 4 → 8"):
        RunDir.create(tmp_path / "r", {"depth": 8}, command="train", resume=True)
    with pytest.raises(DlaError, match="pass --resume"):
        RunDir.create(tmp_path / "r", {"depth": 4}, command="train")
    assert RunDir.create(tmp_path / "r", {"depth": 4}, command="train", resume=True).path == run.path
    with pytest.raises(DlaError, match="no run to resume"):
        RunDir.create(tmp_path / "new", {}, command="train", resume=True)
    with pytest.raises(DlaError, match="not a dla run folder"):
        RunDir.open(tmp_path / "new")


def test_resume_with_changed_nested_options_names_only_those(tmp_path):
    cfg = {"depth": 4, "train": {"lr": 0.1, "epochs": 3, "seed": 0}, "data_dir": "data"}
    RunDir.create(tmp_path / "r", cfg, command="train")
    changed = {**cfg, "train": {**cfg["train"], "lr": 0.5}}
    with pytest.raises(DlaError) as e:
        RunDir.create(tmp_path / "r", changed, command="train", resume=True)
    assert "(train.lr: 0.1 → 0.5)" in e.value.message
    assert "epochs" not in e.value.message and "seed" not in e.value.message


def test_folders_saved_with_runtime_options_in_their_config_still_resume(tmp_path):
    """Before runtime options left the experiment configs, config.json held data_dir, out, cpu (also nested)."""
    old = {"depth": 4, "data_dir": "data", "out": "runs/r", "train": {"lr": 0.1, "cpu": True}}
    RunDir.create(tmp_path / "r", old, command="train")
    assert RunDir.create(tmp_path / "r", {"depth": 4, "train": {"lr": 0.1}}, command="train", resume=True)
    with pytest.raises(DlaError, match=r"\(train.lr: 0.1 → 0.2\)"):
        RunDir.create(tmp_path / "r", {"depth": 4, "train": {"lr": 0.2}}, command="train", resume=True)


def test_out_that_is_the_current_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out in ("", "."):
        with pytest.raises(DlaError, match="refusing to write into the current folder"):
            RunDir.create(out, {}, command="train")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_out_is_a_clear_error(tmp_path, monkeypatch):
    import errno

    import dla_core.runs as runs

    def read_only(path, obj):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(runs, "write_json", read_only)
    with pytest.raises(DlaError, match="cannot write the run folder \\(Read-only file system\\)"):
        RunDir.create(tmp_path / "r", {}, command="train")


@pytest.mark.parametrize("damaged", ["config.json", "metrics.json"])
@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_damaged_run_files_are_clear_errors_before_any_work(tmp_path, damaged, text):
    run = RunDir.create(tmp_path / "r", {"depth": 4}, command="train")
    run.write_metrics({"history": []})
    (run.path / damaged).write_text(text)
    with pytest.raises(DlaError, match=f"{damaged} is damaged"):
        RunDir.create(tmp_path / "r", {"depth": 4}, command="train", resume=True)
    with pytest.raises(DlaError, match=f"{damaged} is damaged"):
        run.config if damaged == "config.json" else run.read_metrics()


def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    run = RunDir.create(tmp_path / "r", {}, command="train")
    run.checkpoint_path.write_bytes(b"garbage")
    with pytest.raises(DlaError, match="cannot read checkpoint") as e:
        Checkpoint.load(run.checkpoint_path)
    assert "weights_only" not in e.value.message  # torch's advice to unpickle arbitrary code is not passed on
    # a pickle that weights_only refuses (torch's message then advises weights_only=False)
    torch.save({"f": print}, run.checkpoint_path)
    with pytest.raises(DlaError, match="damaged or was not written by dla") as e:
        Checkpoint.load(run.checkpoint_path)
    assert "weights_only" not in e.value.message and "False" not in e.value.message
    save_state(run.checkpoint_path, {"epoch": 3})  # readable, but not a training checkpoint
    with pytest.raises(DlaError, match="not a training checkpoint"):
        Checkpoint.load(run.checkpoint_path)
    write_json(tmp_path / "x.json", {"p": tmp_path, "t": (1, 2), "tensor": torch.tensor([0.5, 2.0])})
    assert json.loads((tmp_path / "x.json").read_text()) == {
        "p": str(tmp_path),
        "t": [1, 2],
        "tensor": [0.5, 2.0],
    }


def test_a_checkpoint_is_its_fields_on_disk_and_reads_back(tmp_path):
    ckpt = Checkpoint(model={"w": torch.ones(2)}, optimizer={"state": {}}, scheduler={"last_epoch": 4}, epoch=2,
                      batch=5, history=[{"epoch": 1, "train_loss": 0.5}], grad_norms={"head": [0.1]})  # fmt: skip
    ckpt.save(tmp_path / "c.pt")
    on_disk = torch.load(tmp_path / "c.pt", weights_only=True)
    assert set(on_disk) == {f.name for f in dataclasses.fields(Checkpoint)} - {
        "grad_norm_sums"
    }  # None: absent
    back = Checkpoint.load(tmp_path / "c.pt")
    assert (back.epoch, back.batch, back.history, back.grad_norms) == (2, 5, ckpt.history, ckpt.grad_norms)
    assert torch.equal(back.model["w"], ckpt.model["w"]) and back.sums.dtype == torch.float64
    assert back.scaler == {} and back.grad_norm_sums is None
    assert Checkpoint.load(tmp_path / "none.pt") is None and load_state(tmp_path / "none.pt") is None


def test_the_run_folder_module_loads_without_torch():
    """dla_core.runs knows run folders without torch (checkpoints are dla_core.checkpoint's): the reports, the
    reproduce recipes and the CLIs import it without paying for torch."""
    from tests.startup import HEAVY

    code = "import sys, dla_core.runs; print(*sorted({m.split('.')[0] for m in sys.modules}))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert set(r.stdout.split()) & HEAVY == set()
