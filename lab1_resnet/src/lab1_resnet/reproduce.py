"""`lab1 reproduce`: the whole lab — MLP and CNN depth studies, transfer, distillation — and its report.

    lab1 reproduce --profile quick --out runs/lab1-report     # digits, offline, a few minutes on a CPU
    lab1 reproduce --profile full --out runs/lab1-full        # MNIST / CIFAR-10 / CIFAR-100 (--download), a GPU

Each step is an ordinary lab1 command with its own run folder under OUT; the report is built from those folders
alone (``sections``), so `lab1 report OUT` rebuilds it after a child's metrics change. No torch here.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dla_core.report import Section, Table, fmt, plus_minus
from dla_core.reproduce import Recipe, Step, read_run_file
from lab1_resnet import findings, tables

CHANCE = 0.1  # every profile's datasets (digits, MNIST, CIFAR-10) have 10 classes
MAX_EPOCHS, PATIENCE = 60, 8  # the quick profile's single nets (source, transfer, teacher, distill)
AT_CHANCE_DEPTH = 20  # plain MLPs this deep stay at chance (README, `lab1 study --help`)


#### Steps ####


def _step(name: str, args: str, needs: tuple[str, ...] = (), minutes: float | None = None,
          cpu_minutes: float | None = None) -> Step:  # fmt: skip
    """A step from its command line as one would type it (without `lab1` and --out)."""
    return Step(name, tuple(shlex.split(args)), needs=needs, minutes=minutes, cpu_minutes=cpu_minutes)


def _quick(out: str, tiny: bool) -> list[Step]:
    """digits (scikit-learn's 8×8 images): no download, under ``dla_core.reproduce.QUICK_BUDGET_MINUTES`` on a
    2-core CPU. Both studies train 3 seeds (the MLPs' seeds and kinds stacked as one model, ``lab1_resnet.batched``)
    for a fixed number of epochs; so do the rows the transfer and distillation findings compare (``--seeds``: the
    fine-tuned and scratch rows, both students), from one source net and one teacher, each of them until its
    validation loss stops improving (``--patience``). Every test set is digits' test half (899 images, 448 for the
    transfer's 5-9). ``cpu_minutes``: one run of this profile, measured per step with one thread on the project's
    2-core CPU (bench/RESULTS.md, "Issue 23")."""
    if tiny:  # tests: every step in seconds; the numbers mean nothing
        mlp = "--depths 2,20 --seeds 0 --width 16 --epochs 1"
        cnn = "--depths 1,2 --channels 4 --seeds 0 --epochs 1"
        source, transfer = "--depth 1 --channels 4", "--strategies head,none"
        teacher, student = "--depth 1 --channels 8", "--depth 1 --channels 4"
        epochs = "--epochs 1"
    else:
        # the studies' seeds train as one stacked model (``batched``), which cannot stop each seed on its own
        # plateau: they train a fixed number of epochs, as many optimizer steps as before digits' test half
        # (``DIGITS_TEST_FRACTION``) took 38% of their training images — 45 and 30 epochs of 13 batches
        mlp = "--epochs 45"  # else lab1 study's defaults, the README's demo: depths 2, 10, 20, 30 × 3 seeds
        cnn = "--depths 1,4,8 --channels 8 --seeds 0,1,2 --epochs 30 --lr 3e-3"
        # the findings' rows (fine-tuning, scratch, both students) train 3 seeds; source and teacher are given
        source = "--depth 2 --channels 16"
        transfer = "--strategies head,freeze-early,none --lr-adam 1e-2 --seeds 0,1,2"
        teacher, student = (
            "--depth 4 --channels 32",
            "--depth 1 --channels 8 --lr 1e-2 --precompute --seeds 0,1,2",
        )
        # until the validation loss has not improved for PATIENCE epochs (the stopping rule), at most MAX_EPOCHS;
        # every curve of these steps was still falling at 10
        epochs = f"--epochs {MAX_EPOCHS} --patience {PATIENCE}"

    def cost(minutes: float) -> float | None:  # one CPU core, measured; the tiny steps are not what was timed
        return None if tiny else minutes

    return [
        _step("mlp-study", f"study --model mlp --dataset digits {mlp}", cpu_minutes=cost(0.8)),
        _step("cnn-study", f"study --model cnn --dataset digits {cnn}", cpu_minutes=cost(1.3)),
        _step(
            "source",
            f"train --model cnn {source} --dataset digits:0-4 {epochs}",
            cpu_minutes=cost(0.1),
        ),
        _step(
            "transfer",
            f"transfer --from {out}/source --dataset digits:5-9 {transfer} --optimizers adam {epochs}",
            needs=("source",),
            cpu_minutes=cost(0.4),  # 3 seeds
        ),
        _step(
            "teacher",
            f"train --model cnn {teacher} --dataset digits {epochs}",
            cpu_minutes=cost(0.35),
        ),
        _step(
            "distill",
            f"distill --teacher {out}/teacher {student} {epochs}",
            needs=("teacher",),
            cpu_minutes=cost(0.3),  # 3 seeds, both students stopping on their plateau
        ),
    ]


# the seeds' CIFAR recipe: SGD 0.1 with momentum 0.9, weight decay 5e-4, a cosine schedule; batch 128 everywhere
SGD = "--optimizer sgd --lr 0.1 --schedule cosine --weight-decay 5e-4"
DL = "--download --batch-size 128"


def _full(out: str) -> list[Step]:
    """The seeds' setups (MNIST, CIFAR-10 → CIFAR-100). ``minutes``: one recent GPU, a guess (never timed on one);
    ``cpu_minutes``: one CPU core, measured — CPU seconds per optimizer step of each network at batch 128, one
    thread (MLP depth 30 0.021 s, ResNet-20/32/56 0.63 / 1.16 / 2.15 s, the 64-channel teacher 4.9 s, the
    student 0.18 s; bench/full_profile_steps.py, bench/RESULTS.md) × the step's optimizer steps and evaluations."""
    resnet20 = "--model cnn --stages 3 --depth 3 --channels 16"  # the paper's CIFAR ResNet-20
    return [
        _step(
            "mlp-study",
            f"study --model mlp --dataset mnist --depths 2,10,20,30 --epochs 20 {DL}",
            minutes=20,
            cpu_minutes=36,
        ),
        _step(  # the paper's CIFAR nets: 6n+2 = 20, 32, 56 layers
            "cnn-study",
            f"study --model cnn --stages 3 --channels 16 --depths 3,5,9 --seeds 0 --dataset cifar10 {SGD} "
            f"--epochs 30 {DL}",
            minutes=25,
            cpu_minutes=1415,
        ),
        _step(
            "source", f"train {resnet20} --dataset cifar10 {SGD} --epochs 50 {DL}", minutes=8, cpu_minutes=193
        ),
        _step(
            "transfer",
            f"transfer --from {out}/source --dataset cifar100 --epochs 10 {DL}",
            ("source",),
            15,
            cpu_minutes=373,
        ),
        _step(
            "teacher",
            f"train --model cnn --depth 4 --channels 64 --dataset cifar10 --epochs 30 {DL}",
            minutes=8,
            cpu_minutes=896,
        ),
        _step(
            "distill",
            f"distill --teacher {out}/teacher --depth 2 --channels 16 --T 4 --alpha 0.5 --epochs 30 {DL}",
            ("teacher",),
            10,
            cpu_minutes=352,  # the student's steps (distilled and alone) and the teacher's forward passes
        ),
    ]


def steps(profile: str, out: Path, tiny: bool) -> list[Step]:
    where = shlex.quote(str(out))
    return _quick(where, tiny) if profile == "quick" else _full(where)


#### Report ####


def _metrics(folder: Path) -> dict[str, Any]:
    """A child's metrics.json ({} when the step has not run)."""
    return read_run_file(folder)


def _images(folder: Path, *names: str) -> list[Path]:
    """Absolute: a report folder given relative to the current one is not where the report resolves relative paths."""
    return [(folder / n).absolute() for n in names if (folder / n).is_file()]


def _pm(row: Mapping[str, Any], key: str) -> str | None:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if mean is None:
        return None
    return plus_minus(mean, std)


def study_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """One line per depth, plain and residual side by side (mean ± std over seeds)."""
    by = {(r["depth"], r["net"]): r for r in rows}
    lines = []
    for depth in sorted({r["depth"] for r in rows}):
        plain, residual = by.get((depth, "plain"), {}), by.get((depth, "residual"), {})
        first = plain or residual
        lines.append(
            [depth, first.get("weight_layers"), first.get("parameters")]
            + [_pm(r, k) for k in ("train_loss", "test_accuracy") for r in (plain, residual)]
        )
    columns = ["depth", "weight layers", "params", "train loss plain", "train loss residual",
               "test acc plain", "test acc residual"]  # fmt: skip
    seeds = max((r.get("seeds", 1) for r in rows), default=1)
    return Table(columns, lines, caption=f"final epoch, mean ± std over {seeds} seed(s)")


STUDY_TEXT = {
    "MLP": "Plain and residual MLPs of growing depth, with equal layers and parameters at each depth (a plain block "
    "is the residual block without its skip). Deep plain nets stop learning — the training loss itself stays "
    "high, so it is not overfitting — while residual nets of the same depth train fine (He et al., 2016).",
    "CNN": "The same question for convolutional nets (3×3 conv blocks with BatchNorm, plain or residual).",
}


def _study_section(out: Path, step: Step | None, net: str) -> Section:
    rows = _metrics(out / step.name).get("rows", []) if step else []
    folder = out / step.name if step else out
    checks = [
        findings.plain_degrades(rows, folder, net),
        findings.residual_beats_plain(rows, folder, net),
        findings.residual_keeps_up(rows, folder, net),
    ]
    if net == "MLP":
        checks.insert(1, findings.plain_at_chance(rows, folder, AT_CHANCE_DEPTH, CHANCE, net))
    return Section(
        f"Depth study: {net}s",
        text=STUDY_TEXT[net],
        commands=[step.command_line("lab1", out)] if step else [],
        tables=[study_table(rows)] if rows else [],
        images=_images(out / step.name, "learning_curves.png", "grad_norms.png") if step else [],
        findings=checks,
    )


def _table(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str], caption: str = "") -> list[Table]:
    """A command's table rows (from its metrics.json) as a report table; none when the step has not run."""
    if not rows:
        return []
    table = [[r.get(k) for k in columns] for r in tables.with_spread(rows)]
    return [Table(list(columns.values()), table, caption=caption, headline="test acc")]


TRANSFER_COLUMNS = {"row": "method", "optimizer": "optimizer", "trainable_parameters": "trainable params",
                    "val_accuracy": "val acc", "test_accuracy": "test acc"}  # fmt: skip


def _transfer_section(out: Path, commands: list[str]) -> Section:
    rows = _metrics(out / "transfer").get("rows", [])
    source = _metrics(out / "source").get("test_accuracy")
    caption = f"on the target classes; the source net scored {fmt(source)} test accuracy on its own classes"
    return Section(
        "Transfer learning",
        text="A CNN trained on the source classes is reused on new classes: a linear SVM and k-NN on its frozen "
        "features, fine-tuning with a new head (the method names what stays frozen), and the same net trained "
        "from scratch for the same epochs.",
        commands=commands,
        tables=_table(rows, TRANSFER_COLUMNS, caption),
        images=_images(out / "transfer", "learning_curves.png"),
        findings=[
            findings.finetune_beats_features(rows, out / "transfer"),
            findings.transfer_keeps_up_with_scratch(rows, out / "transfer"),
        ],
    )


def _first_student(folder: Path, name: str) -> Path:
    """A student's run folder, its first seed's where there are several (``tables.seed_folder``)."""
    found = sorted(folder.glob(f"students/{name}-s*"), key=lambda p: int(p.name.rsplit("-s", 1)[1]))
    return found[0] if found else folder / "students" / name


def _distill_section(out: Path, commands: list[str]) -> Section:
    rows = _metrics(out / "distill").get("rows", [])
    return Section(
        "Knowledge distillation",
        text="A small CNN student learns from a trained teacher's softened outputs (`α·CE + (1−α)·T²·KL`), "
        "compared with the same student trained on the labels alone.",
        commands=commands,
        tables=_table(rows, {"model": "model", "parameters": "params", "test_accuracy": "test acc"}),
        images=_images(_first_student(out / "distill", "distilled"), "learning_curves.png"),
        findings=[
            findings.teacher_beats_student(rows, out / "distill"),
            findings.distilled_beats_alone(rows, out / "distill"),
        ],
    )


def sections(out: Path, steps: list[Step]) -> list[Section]:
    """The report from the child run folders alone; a step not run leaves its findings unchecked (–)."""
    out = Path(out)
    by = {s.name: s for s in steps}

    def commands(*names: str) -> list[str]:
        return [by[n].command_line("lab1", out) for n in names if n in by]

    return [
        _study_section(out, by.get("mlp-study"), "MLP"),
        _study_section(out, by.get("cnn-study"), "CNN"),
        _transfer_section(out, commands("source", "transfer")),
        _distill_section(out, commands("teacher", "distill")),
    ]


INTRO = """\
A small-scale replication of He et al., “Deep Residual Learning for Image Recognition” (2016) — plain networks
get worse as they get deeper and identity skip connections fix it — then two ways to reuse a trained network:
transfer learning and knowledge distillation (Hinton et al., 2015).

Profile quick: scikit-learn's 8×8 digits (no download): MLP and CNN depth studies, a CNN trained on digits 0–4
transferred to digits 5–9, distillation of a CNN teacher into a much smaller student. Profile full: MNIST, CIFAR-10
and CIFAR-10 → CIFAR-100 as in the seeds' reports. Each finding is a claim about a difference, judged by its 95%
interval (a paired bootstrap over the test examples and the seeds): ✓ supported (the interval lies on the claim's
side of its margin), ✗ contradicted (on the other side), ～ inconclusive (it straddles the margin), – not checked
(a run is missing)."""

RECIPE = Recipe("lab1", "Lab 1 — plain vs residual networks, transfer, distillation", INTRO, steps, sections)
