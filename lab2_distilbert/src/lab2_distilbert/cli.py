"""The `lab2` command."""

from __future__ import annotations

import os
from pathlib import Path

import click

from dla_core import cli
from dla_core.config import Runtime, from_options
from lab2_distilbert.choices import LORA_ROLES, STRATEGIES


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
        help="Local CSV/TSV/JSONL file, or a folder with train/validation/test files. "
        "Default: the hub dataset cornell-movie-review-data/rotten_tomatoes.",
    ),
    click.option("--text-column", default="text", show_default=True, help="Column holding the sentence."),
    click.option("--label-column", default="label", show_default=True, help="Column holding the label."),
    click.option(
        "--val-split",
        type=click.FloatRange(0, 0.5, min_open=True),
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


@group.command()
@MODEL
@DATA
@click.option("--rank", type=click.IntRange(min=1), default=8, show_default=True, help="LoRA rank r.")
@click.option("--alpha", type=click.FloatRange(min=0, min_open=True), default=16.0, show_default=True,
              help="LoRA scaling α (updates are scaled by α / r).")  # fmt: skip
@click.option("--targets", default="q,v", show_default=True,
              help=f"Comma-separated roles to adapt ({', '.join(LORA_ROLES)}), mapped per architecture.")  # fmt: skip
@click.option("--lora-dropout", "dropout", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True, help="Dropout on the adapter inputs.")  # fmt: skip
@click.option("--merge", is_flag=True, help="Also write the base model with the adapter merged in (merged/).")
@cli.train_options(epochs_default=3, lr_default=5e-4, batch_default=32, optimizer_default="adamw")
@cli.OUT
@cli.RESUME
def lora(targets, **opts) -> None:
    """Train LoRA adapters (PEFT) and the classifier head; the base weights stay frozen.

    Saves the adapter with save_pretrained in RUN/adapter (and RUN/merged with --merge).

    \b
    Example:
      lab2 lora --rank 8 --alpha 16 --targets q,v --out runs/lab2-lora-qv
      lab2 lora --rank 16 --targets q,k,v --merge --out runs/lab2-lora-qkv
    """
    roles = cli.choice_list(targets, LORA_ROLES, "--targets")

    from lab2_distilbert.experiments import (
        LoraConfig,
        run_lora,
    )  # after the check: no torch for a wrong option

    rt = Runtime.from_options(opts)
    metrics = run_lora(from_options(LoraConfig, opts, targets=roles), rt)
    lora = f"LoRA parameters: {metrics['lora_params']:,}; head parameters: {metrics['head_params']:,}; "
    report_training(metrics, rt.out, prefix=lora)


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
