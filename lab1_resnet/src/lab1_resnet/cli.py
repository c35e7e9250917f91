"""The `lab1` command: train, study, transfer, distill. Each command validates its options, builds one config
and hands off to one experiment function."""

from __future__ import annotations

from pathlib import Path

import click

from dla_core import cli
from dla_core.config import Runtime, from_options
from dla_core.errors import DlaError
from dla_core.model_spec import FAMILIES as MODEL_FAMILIES
from dla_core.model_spec import MODEL as MODEL_SPEC
from dla_core.model_spec import PREPROCESS_OPTION as PREPROCESS
from dla_core.model_spec import WEIGHTS_OPTION as WEIGHTS
from dla_core.model_spec import check_weights, parse_model_spec
from lab1_resnet.choices import FAMILIES, KINDS, OPTIMIZERS, STRATEGIES

MODEL = click.option(
    "--model", type=click.Choice(FAMILIES), default="mlp", show_default=True, help="Model family."
)
WIDTH = click.option(
    "--width",
    "--channels",
    "width",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="MLP hidden width / CNN channels (of the first stage).",
)
STAGES = click.option(
    "--stages",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="CNN only: stages of --depth blocks, each after the first halves the resolution and doubles the "
    "channels (--stages 3 --depth n --channels 16 is the paper's CIFAR ResNet-(6n+2)).",
)
DATASET = click.option(
    "--dataset",
    default="digits",
    show_default=True,
    help="Dataset spec: digits (offline), mnist, cifar10, cifar100, svhn, dtd, places365, tiny-imagenet, "
    "imagefolder:PATH (your own images), with classes as in cifar100:people.",
)
AUGMENT = click.option(
    "--augment/--no-augment",
    default=True,
    show_default=True,
    help="The dataset's usual augmentation (random crop + flip on CIFAR; nothing on digits / MNIST).",
)
PLAIN_BLOCK = click.option(
    "--plain-block",
    type=click.Choice(["double", "single"]),
    default="double",
    show_default=True,
    help="MLP plain blocks: double = Linear, ReLU, Linear, the residual block without its skip (equal depth, "
    "equal layers and parameters); single = one Linear + ReLU, the seeds' plain net (half the layers).",
)


def seeds_option(default: str, what: str) -> click.Option:
    """--seeds (instead of the shared --seed): ``what`` trains once per seed."""
    return click.option("--seeds", default=default, show_default=True, help=f"Comma-separated seeds {what}.")


def parse_seeds(seeds: str) -> tuple[int, ...]:
    return tuple(dict.fromkeys(cli.parse_list(seeds, int, "--seeds")))


VAL_FRACTION = click.option(
    "--val-fraction",
    type=cli.Finite(0, 1, max_open=True),
    default=0.1,
    show_default=True,
    help="Share of the training split held out for validation.",
)

# Where and how to run (dla_core.config.Runtime), never saved in a run's config: the last options of every command.
RUNTIME = cli.stack(cli.DATA_DIR, cli.DOWNLOAD, cli.OUT, cli.RESUME)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@cli.VERBOSE
def group(verbose: int) -> None:
    """Lab 1: plain vs residual networks as depth grows (He et al., 2016), transfer learning, distillation."""
    cli.setup_logging(verbose)


@group.command()
@MODEL
@click.option("--depth", type=click.IntRange(min=1), default=4, show_default=True, help="Blocks (per stage).")
@WIDTH
@STAGES
@click.option("--residual/--plain", default=True, show_default=True, help="Identity skip connections or not.")
@PLAIN_BLOCK
@DATASET
@AUGMENT
@VAL_FRACTION
@cli.train_options(epochs_default=30, lr_default=1e-3, batch_default=64)
@RUNTIME
def train(**opts) -> None:
    """Train one MLP or CNN, plain or residual; write learning curves, per-layer gradient norms, the model.

    \b
    Examples:
      lab1 train --model mlp --depth 20 --plain --dataset digits --out runs/plain20
      lab1 train --model cnn --depth 3 --stages 3 --channels 16 --dataset cifar10 \\
                 --optimizer sgd --lr 0.1 --schedule cosine --weight-decay 5e-4 --epochs 50 --out runs/resnet20
    """
    from lab1_resnet.train import TrainRun, train_classifier

    cfg = from_options(TrainRun, opts, train={"log_grad_norms": True})
    rt = Runtime.from_options(opts)
    m = train_classifier(cfg, rt)
    click.echo(
        f"{cfg.name}: {m['weight_layers']} weight layers, {m['parameters']:,} parameters, test accuracy {m['test_accuracy']:.4f}, "
        f"final train loss {m['train_loss']:.4f} → {rt.out}"
    )


@group.command()
@MODEL
@click.option(
    "--depths", default="2,10,20,30", show_default=True, help="Comma-separated depths (blocks) to compare."
)
@click.option(
    "--kinds", default="plain,residual", show_default=True, help="Which of plain, residual to train."
)
@seeds_option("0,1,2", "per cell")
@WIDTH
@STAGES
@PLAIN_BLOCK
@DATASET
@AUGMENT
@VAL_FRACTION
@cli.train_options(epochs_default=30, lr_default=1e-3, batch_default=64, exclude={"seed"})  # --seeds instead
@click.option(
    "--batch-seeds/--no-batch-seeds",
    default=True,
    show_default=True,
    help="Train the seeds of a depth, plain and residual, as one stacked model (MLPs with Adam at a constant "
    "lr, fp32, one process on the CPU, no --report-to): the same numbers, several times faster. "
    "--no-batch-seeds: one run per cell.",
)
@RUNTIME
def study(depths: str, kinds: str, seeds: str, batch_seeds: bool, **opts) -> None:
    """The depth study: depths × {plain, residual} × seeds, then a comparison table and overlaid curves.

    Each cell is its own run folder under OUT/cells/ (a `lab1 train` run folder); the seeds of a depth train
    together as one stacked model unless --no-batch-seeds. --resume skips finished cells and continues
    interrupted ones. Writes table.md, table.csv, learning_curves.png, grad_norms.png. The default (MLPs on
    scikit-learn's digits) runs offline in a few minutes on a CPU and shows plain nets of depth ≥ 20 stuck
    at chance while residual nets learn.

    \b
    Examples:
      lab1 study --out runs/study
      lab1 study --depths 2,10,20 --seeds 0 --epochs 10 --out runs/quick
      lab1 study --model cnn --dataset cifar10 --depths 2,8,16 --channels 32 --epochs 20 --out runs/cnn
    """
    depth_list = cli.parse_list(depths, int, "--depths")
    if any(d < 1 for d in depth_list):
        raise DlaError("--depths: every depth must be at least 1")
    if opts["model"] == "mlp" and opts["stages"] != 1:
        raise DlaError("--stages applies to --model cnn only")
    kind_list = cli.choice_list(kinds, KINDS, "--kinds")
    seed_list = parse_seeds(seeds)

    from lab1_resnet.study import (
        DepthStudy,
        run_study,
    )  # after the checks: a wrong option costs no torch import

    cfg = from_options(
        DepthStudy,
        opts,
        depths=tuple(dict.fromkeys(depth_list)),
        kinds=tuple(dict.fromkeys(kind_list)),
        seeds=seed_list,
        train={"log_grad_norms": True},
    )
    rt = Runtime.from_options(opts)
    click.echo(run_study(cfg, rt, batch_seeds=batch_seeds), nl=False)
    click.echo(f"→ {rt.out}/table.md, table.csv, learning_curves.png, grad_norms.png")


@group.command()
@click.option(
    "--from",
    "source",
    type=MODEL_SPEC,
    required=True,
    help="The trained network: "
    + "; ".join(f"{f.form} ({f.summary})" for f in MODEL_FAMILIES.values() if not f.logits_only)
    + ". A file with logits only (TorchScript, torch.export) has no features or head to transfer.",
)
@WEIGHTS
@PREPROCESS
@click.option("--dataset", default="cifar100", show_default=True, help="Target dataset spec.")
@click.option(
    "--strategies",
    default=",".join(STRATEGIES),
    show_default=True,
    help="Fine-tuning rows: head (new head only, every model), freeze-stem (stem frozen), freeze-early (stem "
    "+ first half of the blocks frozen), none (everything trains). The stem is every parameter before the "
    "first block; the blocks: a run folder's blocks; torchvision's layer1…N, else features[1:], else "
    "encoder.layers; timm's group_matcher groups; Hugging Face's (encoder's) stages/layer(s). A model without "
    "them takes head and none only.",
)
@click.option("--optimizers", default="sgd,adam", show_default=True, help="Optimizers for each strategy.")
@click.option("--lr-sgd", type=cli.Finite(min=0, min_open=True), default=0.01, show_default=True)
@click.option("--lr-adam", type=cli.Finite(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--features/--no-features", default=True, show_default=True,
              help="Rows with frozen features + linear SVM and + k-NN (scikit-learn).")  # fmt: skip
@click.option(
    "--knn-k", type=click.IntRange(min=1), default=5, show_default=True, help="Neighbours for k-NN."
)
@click.option("--scratch/--no-scratch", default=True, show_default=True,
              help="Rows training the same architecture from scratch, same epochs.")  # fmt: skip
@AUGMENT
@VAL_FRACTION
@seeds_option("0", "for each trained row (the table shows their mean ± std)")
@cli.train_options(
    epochs_default=10, batch_default=128, exclude={"lr", "optimizer", "seed"}
)  # per row instead
@RUNTIME
def transfer(source: str, strategies: str, optimizers: str, seeds: str, **opts) -> None:
    """Transfer a trained network to a new dataset: frozen features + SVM / k-NN, fine-tuning strategies
    with SGD and Adam, and training from scratch; one table of test accuracy and trainable parameters.

    A torchvision, timm or Hugging Face model applies its own preprocessing (its weights' resize, crop and
    normalisation) to the images; config.json records it under model_source. --weights none: its architecture
    with random weights (offline).

    \b
    Examples:
      lab1 train --model cnn --depth 3 --stages 3 --channels 16 --dataset cifar10 --out runs/c10
      lab1 transfer --from runs/c10 --dataset cifar100 --epochs 10 --out runs/c10-to-c100
      lab1 transfer --from runs/c10 --dataset cifar100:people --strategies head,none --optimizers adam \\
                    --out runs/people
      lab1 transfer --from torchvision:resnet18 --dataset cifar100 --epochs 3 --out runs/r18-to-c100
      lab1 transfer --from torchvision:resnet18+cifar-stem --weights my_c10.pth \\
                    --preprocess mean=0.4914,0.4822,0.4465,std=0.2470,0.2435,0.2616 --out runs/mine-to-c100
    """
    check_weights(parse_model_spec(source), opts["weights"], opts["preprocess"])
    strategy_list = cli.choice_list(strategies, STRATEGIES, "--strategies")
    optimizer_list = cli.choice_list(optimizers, OPTIMIZERS, "--optimizers")
    seed_list = parse_seeds(seeds)

    from lab1_resnet.transfer import TransferConfig, run_transfer  # after the checks, as in study

    cfg = from_options(
        TransferConfig,
        opts,
        strategies=tuple(dict.fromkeys(strategy_list)),
        optimizers=tuple(dict.fromkeys(optimizer_list)),
        seeds=seed_list,
        source=source,
    )
    rt = Runtime.from_options(opts)
    click.echo(run_transfer(cfg, rt), nl=False)
    click.echo(f"→ {rt.out}/table.md, table.csv, learning_curves.png")


@group.command()
@click.option(
    "--teacher",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Run folder of the trained teacher (a `lab1 train` --out), or its model.safetensors.",
)
@click.option("--dataset", default=None, help="Dataset spec  [default: the teacher's]")
@click.option("--model", type=click.Choice(FAMILIES), default=None,
              help="Student family  [default: the teacher's]")  # fmt: skip
@click.option("--depth", type=click.IntRange(min=1), default=2, show_default=True, help="Student blocks.")
@click.option("--width", "--channels", "width", type=click.IntRange(min=1), default=16, show_default=True,
              help="Student width / channels.")  # fmt: skip
@STAGES
@click.option("--residual/--plain", default=True, show_default=True, help="Student skip connections.")
@PLAIN_BLOCK
@click.option("--T", "temperature", type=cli.Finite(min=0, min_open=True), default=4.0,
              show_default=True, help="Softmax temperature of the soft targets.")  # fmt: skip
@click.option("--alpha", type=cli.Finite(0, 1), default=0.5, show_default=True,
              help="Weight of the hard-label cross-entropy (1 − alpha on the soft KL term).")  # fmt: skip
@click.option("--precompute", is_flag=True,
              help="Compute the teacher's probabilities once on un-augmented training images.")  # fmt: skip
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also train the student on hard labels only, for comparison.")  # fmt: skip
@AUGMENT
@VAL_FRACTION
@seeds_option("0", "for each student (the table shows their mean ± std)")
@cli.train_options(epochs_default=30, lr_default=1e-3, batch_default=64, exclude={"seed"})  # --seeds instead
@RUNTIME
def distill(seeds: str, **opts) -> None:
    """Distil a trained teacher into a small student; compare teacher, student on labels, distilled student.

    \b
    Examples:
      lab1 train --model cnn --depth 4 --channels 64 --dataset cifar10 --out runs/teacher
      lab1 distill --teacher runs/teacher --depth 2 --channels 16 --T 4 --alpha 0.5 --out runs/kd
      lab1 distill --teacher runs/teacher --precompute --epochs 10 --out runs/kd-fast
    """
    from lab1_resnet.distill import DistillConfig, run_distill, student_for

    rt = Runtime.from_options(opts)  # checked before student_for loads the teacher
    seed_list = parse_seeds(seeds)
    cfg = from_options(DistillConfig, opts, student=student_for(opts["teacher"], opts), seeds=seed_list)
    click.echo(run_distill(cfg, rt), nl=False)
    click.echo(f"→ {rt.out}/table.md, table.csv")


# reproduce (the whole lab → report.md / report.html) and report (re-render, or compare run folders)
cli.add_reproduce_commands(group, "lab1_resnet.reproduce:RECIPE")

main = cli.entry_point(group)
