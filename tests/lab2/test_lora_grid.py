"""`lab2 lora` with lists: the LoRA grid as child runs, its table; --dora, --rslora and all-linear targets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab2_distilbert.cli import group

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

LAYERS, DIM, HIDDEN = 2, 32, 64  # the tiny DistilBERT of conftest.py
HEAD = DIM * DIM + DIM + DIM * 2 + 2  # pre_classifier + classifier


def lab2(*argv) -> str:
    result = CliRunner().invoke(group, [str(a) for a in argv], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def lora_args(model: Path, data: Path, cache: Path) -> list:
    return ["lora", "--model", model, "--data", data, "--cache-dir", cache, "--epochs", "1", "--batch-size", "32",
            "--max-length", "24", "--lr", "1e-2", "--threads", "1", "--cpu"]  # fmt: skip


def adapters(rank: int, shapes: list[tuple[int, int]]) -> int:
    """A + B of each adapted (in, out) linear layer, in every block."""
    return LAYERS * sum(rank * i + o * rank for i, o in shapes)


def test_a_two_by_two_grid_makes_four_child_runs_and_its_table_and_resumes(
    tiny_distilbert, text_data, tmp_path
):
    out = tmp_path / "grid"
    argv = [*lora_args(tiny_distilbert, text_data, tmp_path / "c"), "--rank", "2,4", "--targets", "q", "q,v",
            "--out", out]  # fmt: skip
    printed = lab2(*argv)
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert cells == ["q+v-r2", "q+v-r4", "q-r2", "q-r4"]
    for name in cells:  # each an ordinary, finished `lab2 lora` run folder
        saved = json.loads((out / "cells" / name / "config.json").read_text())
        assert saved["command"] == "lab2 lora" and metrics(out / "cells" / name)["finished"]
        assert (out / "cells" / name / "adapter" / "adapter_model.safetensors").exists()
    m = metrics(out)
    assert json.loads((out / "config.json").read_text())["command"] == "lab2 lora grid"
    rows = {(r["targets"], r["rank"]): r for r in m["rows"]}
    assert list(rows) == [("q", 2), ("q", 4), ("q,v", 2), ("q,v", 4)]
    for (targets, rank), r in rows.items():
        assert r["lora_params"] == adapters(rank, [(DIM, DIM)] * len(targets.split(",")))
        assert r["head_params"] == HEAD
        cell = metrics(out / r["run"])
        assert r["test_accuracy"] == cell["test_accuracy"] and r["wall_seconds"] == cell["wall_seconds"]
        size = (out / r["run"] / "adapter" / "adapter_model.safetensors").stat().st_size
        assert r["adapter_mb"] == pytest.approx(size / 2**20, abs=1e-3) and cell["adapter_bytes"] == size
        assert r["peak_memory_mb"] > 10 and r["peak_memory"] == "peak RSS"
        assert r["trainable_percent"] == pytest.approx(
            100 * (r["lora_params"] + HEAD) / cell["parameters"], abs=1e-3
        )
    table = (out / "table.md").read_text()
    assert table in printed and "LoRA params" in table and "peak memory MB" in table
    assert "| q,v | 4 | 1,024 | 1,122 |" in table  # 2 layers × 2 matrices × (4·32 + 32·4)
    assert (out / "lora_grid.png").stat().st_size > 0

    # resume: finished cells are read back, not trained again; a lost cell is trained again
    stamps = {n: (out / "cells" / n / "metrics.json").stat().st_mtime_ns for n in cells}
    again = CliRunner().invoke(group, [str(a) for a in argv])
    assert again.exit_code == 1 and "pass --resume" in again.output
    import shutil

    shutil.rmtree(out / "cells" / "q-r4")
    lab2(*argv, "--resume")
    assert all(
        (out / "cells" / n / "metrics.json").stat().st_mtime_ns == stamps[n] for n in cells if n != "q-r4"
    )
    assert metrics(out / "cells" / "q-r4")["finished"]
    assert [r["targets"] for r in metrics(out)["rows"]] == ["q", "q", "q,v", "q,v"]


def test_dora_rslora_and_all_linear_reach_peft(tiny_distilbert, text_data, tmp_path):
    run = tmp_path / "dora"
    lab2(*lora_args(tiny_distilbert, text_data, tmp_path / "c"), "--rank", "4", "--alpha", "8", "--targets",
         "all-linear", "--dora", "--rslora", "--out", run)  # fmt: skip
    peft = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert peft["use_dora"] is True and peft["use_rslora"] is True and peft["r"] == 4
    m = metrics(run)
    # all-linear: q, k, v, out (DIM→DIM), lin1 (DIM→HIDDEN), lin2 (HIDDEN→DIM); DoRA adds a magnitude per output
    shapes = [(DIM, DIM)] * 4 + [(DIM, HIDDEN), (HIDDEN, DIM)]
    assert m["lora_params"] == adapters(4, shapes) + LAYERS * (4 * DIM + HIDDEN + DIM)
    assert m["head_params"] == HEAD and m["peak_memory_bytes"] > 0 and m["adapter_bytes"] > 0
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["dora"] and cfg["rslora"] and cfg["targets"] == ["all-linear"] and cfg["rank"] == 4


def test_rslora_scales_by_the_square_root_of_the_rank(tiny_distilbert):
    from lab2_distilbert import models

    def scaling(**kw) -> float:
        model = models.add_lora(models.load_classifier(str(tiny_distilbert), ["a", "b"]), 4, 8, ["q"], **kw)
        return next(
            m.scaling["default"]
            for n, m in model.named_modules()
            if n.endswith("q_lin") and hasattr(m, "scaling")
        )

    assert scaling() == 8 / 4 and scaling(rslora=True) == pytest.approx(8 / math.sqrt(4))


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (["q,z"], "--targets: unknown z (choose from q, k, v, o, ffn); or all-linear"),
        (
            ["q", "v,all-linear"],
            "--targets: unknown all-linear (choose from q, k, v, o, ffn); all-linear adapts",
        ),
    ],
)
def test_bad_target_sets_are_one_line_errors(targets, message, tiny_distilbert, tmp_path):
    r = CliRunner().invoke(group, ["lora", "--model", str(tiny_distilbert), "--targets", *targets, "--out",
                                   str(tmp_path / "x")])  # fmt: skip
    assert r.exit_code == 1 and r.output.startswith("Error: ") and message in r.output, r.output
    assert not (tmp_path / "x").exists()


def test_targets_take_several_values_after_one_flag():
    from lab2_distilbert.cli import ManyValues

    ctx = group.make_context("lab2", ["lora", "--help"], resilient_parsing=True)
    cmd = group.commands["lora"]
    assert isinstance(cmd, ManyValues)
    parsed = cmd.make_context("lora", ["--targets", "q", "q,v", "all-linear", "--rank", "4,8", "--out", "x"],
                              parent=ctx)  # fmt: skip
    assert parsed.params["targets"] == ("q", "q,v", "all-linear") and parsed.params["ranks"] == "4,8"
    one = cmd.make_context("lora", ["--targets=q,k", "v", "--out", "x"], parent=ctx)
    assert one.params["targets"] == ("q,k", "v")
    default = cmd.make_context("lora", ["--out", "x"], parent=ctx)
    assert default.params["targets"] == ("q,v",) and default.params["ranks"] == "8"
