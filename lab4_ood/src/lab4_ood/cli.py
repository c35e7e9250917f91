"""The `lab4` command."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from dla_core import cli
from dla_core.config import Runtime, from_options
from dla_core.errors import DlaError
from dla_core.model_spec import MODEL, MODEL_HELP, check_weights, parse_model_spec
from dla_core.model_spec import PREPROCESS_OPTION as PREPROCESS
from dla_core.model_spec import WEIGHTS_OPTION as WEIGHTS
from lab4_ood import method_options as mo
from lab4_ood import methods, suites

# The CLI starts without torch: every method, option, grid and --help line comes from the table in methods.py
# (plug-ins included, through their entry points); the commands import the implementations.
DETECTORS, ATTACKS = methods.detectors(), methods.attacks()
DETECTOR_OPTIONS = mo.click_options(DETECTORS.values(), grids=True)
ATTACK_OPTIONS = mo.click_options(ATTACKS.values())
RUN = mo.RUN
LIMIT = click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Use at most this many images per set (a fixed random subset).",
)


def echo_summary(line: str) -> None:
    """A training command's one line of output (from the main process only, under several)."""
    from dla_core.seeding import is_main_process

    if is_main_process():
        click.echo(line)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@cli.VERBOSE
def group(verbose: int) -> None:
    """Lab 4: out-of-distribution detection, adversarial attacks, robust training."""
    cli.setup_logging(verbose)


@group.command()
@click.option("--model", type=MODEL, required=True, help=MODEL_HELP)
@WEIGHTS
@PREPROCESS
@click.option(
    "--id", "id_spec", default=None, help="In-distribution dataset spec [default: the run's dataset]."
)
@click.option("--ood", multiple=True, required=True, help="OOD dataset spec (repeatable); 'fake' = noise.")
@click.option(
    "--method",
    default="msp",
    show_default=True,
    help=mo.summaries_help(DETECTORS.values(), "Comma-separated, from:"),
)
@DETECTOR_OPTIONS
@cli.batch_size(256)
@LIMIT
@cli.DATA_DIR
@cli.DOWNLOAD
@cli.OUT
@cli.CPU
@cli.THREADS
def detect(**opts):
    """Score ID test images and OOD sets; report AUROC, AUPR-in, AUPR-out, FPR@95%TPR.

    Every score is higher = more in-distribution, and ID is the positive class: AUPR-in ranks ID first,
    AUPR-out ranks OOD first, FPR@95%TPR is the share of OOD images accepted at the threshold that keeps
    95% of ID images. Writes metrics.json and, per method, scores_*.png, roc_*.png, pr_*.png. Detectors
    marked [fits] fit on the ID training split; the hyperparameters' defaults are OpenOOD v1.5's.

    \b
    Example:
      lab4 detect --model runs/c10 --id cifar10 --ood cifar100:people --ood fake \\
                  --method msp,energy,odin --grid --out runs/c10-ood
    """
    chosen = mo.detector_choice(opts["method"], "--method", opts)
    check_weights(parse_model_spec(opts["model"]), opts["weights"], opts["preprocess"])

    from lab4_ood.datasets import id_spec_for
    from lab4_ood.detection import DetectConfig
    from lab4_ood.detection import detect as run_detect

    mo.import_all(chosen, DETECTORS)
    rt = Runtime.from_options(opts)  # the environment, checked before the model's folder is read
    cfg = from_options(DetectConfig, opts, id=id_spec_for(opts["model"], opts["id_spec"]), methods=chosen)
    echo_detection(cfg.id, run_detect(cfg, rt))
    click.echo(f"→ {rt.out}: metrics.json; plots scores_<method>.png, roc_<method>.png, pr_<method>.png")


def echo_detection(id_spec: str, summary: dict) -> None:
    """`lab4 detect`'s output: the ID accuracy, the grids searched, one line of metrics per method and OOD set."""
    click.echo(f"ID accuracy on {id_spec}: {summary['id_accuracy']:.4f}")
    if "odin_grid" in summary:
        click.echo("ODIN grid (mean AUROC, held-out data):")
        for row in summary["odin_grid"]["rows"]:
            click.echo(f"  T={row['temperature']:<8g} eps={row['eps']:<8g} {row['auroc']:.4f}")
        best = summary["odin_grid"]["best"]
        click.echo(f"  best: T={best['temperature']:g} eps={best['eps']:g}")
    for m, grid in summary.get("grids", {}).items():
        values = lambda row: " ".join(f"{v:g}" for k, v in row.items() if k != "auroc")  # noqa: E731
        click.echo(f"{m} grid {grid['option']} (mean AUROC, held-out data):")
        click.echo("  " + "  ".join(f"{values(row)}: {row['auroc']:.4f}" for row in grid["rows"]))
        click.echo(f"  best: {grid['option']} {values(grid['best'])}")
    click.echo(f"{'method':<12} {'OOD':<20} {'AUROC':>7} {'AUPR-in':>8} {'AUPR-out':>9} {'FPR95':>7}")
    for m, per_ood in summary["results"].items():
        for spec, r in per_ood.items():
            click.echo(
                f"{m:<12} {spec:<20} {r['auroc']:7.4f} {r['aupr_in']:8.4f} {r['aupr_out']:9.4f} "
                f"{r['fpr95']:7.4f}"
            )


@group.command()
@click.option(
    "--model",
    "models",
    type=MODEL,
    multiple=True,
    required=True,
    help=f"(repeatable: every model is evaluated the same way) {MODEL_HELP}",
)
@WEIGHTS
@PREPROCESS
@click.option("--id", "id_spec", default=None, help="ID dataset spec [default: each run's dataset].")
@click.option(
    "--methods",
    default="all",
    show_default=True,
    help="Comma-separated detectors (those of 'lab4 detect --method'), or 'all': every detector but those "
    f"that need a run folder of one model ({', '.join(mo.needy())}).",
)
@click.option(
    "--suite",
    type=click.Choice(tuple(suites.SUITES)),
    default=None,
    help="An OpenOOD v1.5 protocol: its ID set and near / far groups, and OpenOOD's published AUROC beside ours.",
)
@click.option(
    "--imglist-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="With --suite: OpenOOD's benchmark_imglist folder; its lists name images relative to --data-dir "
    "[default: the datasets' own test splits].",
)
@click.option("--near", multiple=True, help="Near-OOD sets, comma-separated specs (repeatable).")
@click.option("--far", multiple=True, help="Far-OOD sets, comma-separated specs (repeatable).")
@click.option(
    "--group",
    "groups",
    multiple=True,
    help="A group of your own, NAME=SPEC,SPEC (repeatable); each OOD set belongs to one group.",
)
@click.option(
    "--attacks",
    default=None,
    help="Comma-separated attacks (those of 'lab4 attack --method'): a robust-accuracy table per model.",
)
@click.option(
    "--attack-eps",
    type=cli.FiniteList(min=0),
    default="0,0.01,0.05,0.1",
    show_default=True,
    help=f"The attacks' radii in [0, 1] pixel units ({mo.l2_names()}: L2 radii); --eps stays ODIN's, as in "
    "'lab4 detect'.",
)
@DETECTOR_OPTIONS
@ATTACK_OPTIONS
@cli.batch_size(256)
@LIMIT
@cli.SEED
@cli.DATA_DIR
@cli.DOWNLOAD
@cli.OUT
@cli.CPU
@cli.THREADS
def benchmark(**opts):
    """Evaluate models × detectors × OOD sets grouped near / far (as OpenOOD), and optionally attacks.

    Each model gets the child run folders of 'lab4 detect' (OUT/MODEL/detect) and, per attack, of 'lab4 attack'
    (OUT/MODEL/attack-METHOD), made by those commands' own code. OUT holds table.md and metrics.json (AUROC and
    FPR@95%TPR per set, the mean over each group, detectors ranked by the mean of the group means) and
    ranking.png. Specs are comma-separated; a comma continues a spec's class list unless a dataset name
    follows ('cifar100:cat,dog,mnist' is two sets). --grid searches on held-out data, as in 'lab4 detect'.

    \b
    Example:
      lab4 benchmark --model runs/c10 --model runs/c10-oe --methods msp,energy,knn,vim \\
                     --near cifar100 --far mnist,fake --attacks fgsm,pgd --attack-eps 0,0.01,0.03 \\
                     --out runs/bench
      lab4 benchmark --model runs/d04 --methods all --near digits:5-9 --group noise=fake --out runs/d04-bench
      lab4 benchmark --suite openood-cifar10 --model runs/c10 --methods msp,energy,knn --data-dir data \\
                     --imglist-dir data/benchmark_imglist --out runs/c10-openood
      lab4 benchmark --suite openood-cifar10 --model torchvision:resnet18 --weights r18_cifar10.pth \\
                     --preprocess mean=0.4914,0.4822,0.4465,std=0.2470,0.2435,0.2616 --data-dir data \\
                     --out runs/r18-openood   # your own checkpoint (README: "Your own model")
    """
    needy = mo.needy()
    every = tuple(m for m in DETECTORS if m not in needy)
    chosen = every if opts["methods"] == "all" else mo.detector_choice(opts["methods"], "--methods", opts)
    attacks = tuple(cli.choice_list(opts["attacks"], tuple(ATTACKS), "--attacks")) if opts["attacks"] else ()
    mo.check_radii(attacks, opts["attack_eps"], "--attack-eps", one_norm=False)
    for m in (m for m in chosen if m in needy and len(opts["models"]) > 1):
        raise DlaError(f"--methods {m} takes one {needy[m]}, so one --model")
    for model in opts["models"]:
        check_weights(parse_model_spec(model), opts["weights"], opts["preprocess"])

    if opts["imglist_dir"] is not None and opts["suite"] is None:
        raise DlaError("--imglist-dir reads a suite's image lists: give --suite too")
    if opts["suite"] is not None and (opts["near"] or opts["far"]):
        raise DlaError(
            f"--suite {opts['suite']} sets the near and far groups; add sets of your own with --group"
        )
    from lab4_ood.benchmark import BenchmarkConfig, parse_groups, run_benchmark
    from lab4_ood.detection import DetectConfig
    from lab4_ood.robustness import OPTIONS as ATTACK_FIELDS

    mo.import_all(chosen, DETECTORS)
    mo.import_all(attacks, ATTACKS)

    shared = {
        "model",
        "weights",
        "preprocess",
        "id",
        "ood",
        "methods",
        "batch_size",
        "limit",
    }  # the benchmark's own, per model
    plan = suites.plan(opts["suite"], opts["imglist_dir"]) if opts["suite"] else None
    if plan is not None and opts["id_spec"] is None:
        suites.check_trained_on(plan, opts["suite"], opts["models"])
    cfg = from_options(
        BenchmarkConfig,
        opts,
        groups=parse_groups(opts["near"], opts["far"], opts["groups"], plan.groups if plan else ()),
        methods=chosen,
        id=opts["id_spec"] or (plan.id if plan else None),
        attacks=attacks,
        detector={f.name: opts[f.name] for f in dataclasses.fields(DetectConfig) if f.name not in shared},
        attack={name: opts[name] for name in ATTACK_FIELDS},
    )
    rt = Runtime.from_options(opts)
    result = run_benchmark(cfg, rt)
    for name, m in result["models"].items():
        click.echo(f"{name} (ID {m['id']}, accuracy {m['id_accuracy']:.4f}): mean AUROC by detector")
        for method in m["ranking"]:
            per_group = "  ".join(f"{g} {v['auroc']:.4f}" for g, v in m["groups"][method].items())
            click.echo(f"  {method:<12} {m['mean_auroc'][method]:.4f}   {per_group}")
        for method, r in m.get("robust", {}).items():
            click.echo(
                f"  {method} accuracy: "
                + "  ".join(f"ε={row['eps']:g} {row['accuracy']:.4f}" for row in r["rows"])
            )
    if "suite" in result:
        click.echo(f"{opts['suite']}: images from {result['suite']['data']}")
        click.echo(f"OpenOOD v1.5's published AUROC beside ours in table.md ({suites.SOURCE.split(';')[0]})")
    click.echo(f"table.md, metrics.json, ranking.png → {rt.out}")


@group.command("train-ae")
@click.option("--encoder", type=RUN, required=True, help="Classifier run folder whose features are frozen.")
@click.option("--dataset", default=None, help="Dataset spec [default: the encoder run's dataset].")
@click.option("--width", type=click.IntRange(min=1), default=64, show_default=True, help="Decoder channels.")
@cli.DATA_DIR
@cli.DOWNLOAD
@cli.OUT
@cli.RESUME
@cli.train_options(epochs_default=10, lr_default=1e-3, batch_default=128)
def train_ae(**opts):
    """Train a convolutional decoder on a classifier's frozen features (for --method recon).

    The loss is the mean squared error between image and reconstruction; writes autoencoder.safetensors
    (encoder + decoder), learning_curves.png and reconstructions.png.

    \b
    Example:
      lab4 train-ae --encoder runs/c10 --epochs 5 --out runs/c10-ae
      lab4 detect --model runs/c10 --ood fake --method recon --autoencoder runs/c10-ae --out runs/c10-recon
    """
    from lab4_ood.datasets import id_spec_for
    from lab4_ood.training import AutoencoderConfig, train_autoencoder

    rt = Runtime.from_options(opts)  # the environment, checked before the encoder's folder is read
    cfg = from_options(
        AutoencoderConfig, opts, dataset=id_spec_for(opts["encoder"], opts["dataset"], "--dataset")
    )
    m = train_autoencoder(cfg, rt)
    echo_summary(
        f"lab4 train-ae: decoder of {m['decoder_parameters']:,} parameters, {m['epochs']} epochs, "
        f"test reconstruction MSE {m['test_mse']:.5f} → {rt.out}"
    )


@group.command()
@click.option("--model", type=MODEL, required=True, help=MODEL_HELP)
@WEIGHTS
@PREPROCESS
@click.option("--dataset", default=None, help="Dataset spec [default: the run's dataset].")
@click.option(
    "--method",
    default="fgsm",
    show_default=True,
    metavar=f"[{'|'.join(ATTACKS)}][,…]",
    callback=mo.attack_list,
    help=mo.summaries_help(
        ATTACKS.values(),
        "One attack, or several separated by commas: each row then also gives the worst case per image (robust "
        "only if every attack failed). Step sizes are torchattacks 3.5.1's defaults scaled with ε; "
        f"{', '.join(n for n, a in ATTACKS.items() if a.seeded)} draw from --seed.",
    ),
)
@click.option(
    "--eps",
    type=cli.FiniteList(min=0),
    default="0,0.01,0.05,0.1,0.2,0.3",
    show_default=True,
    help=f"Comma-separated L∞ radii in [0,1] pixel units ({mo.l2_names()}: L2 radii, any ε ≥ 0).",
)
@click.option(
    "--targeted",
    is_flag=True,
    help=f"Push predictions toward --target-class ({', '.join(n for n, a in ATTACKS.items() if a.targeted)}).",
)
@click.option("--target-class", type=int, default=None, help="Target class index for --targeted.")
@ATTACK_OPTIONS
@cli.batch_size(256)
@LIMIT
@cli.SEED
@cli.DATA_DIR
@cli.DOWNLOAD
@cli.OUT
@cli.CPU
@cli.THREADS
def attack(eps, targeted, **opts):
    """Accuracy under one or more attacks (--method) for each ε, in [0,1] pixel space (the model normalises
    inside); with several attacks, also the worst case per image. Prints the clean accuracy with the number of
    test images n, then the robust accuracy.

    Writes metrics.json (accuracy per ε — the worst case per image over the attacks, each attack's own under
    by_method —, targeted success rate, clean accuracy), accuracy_vs_eps.png (robust accuracy per ε: each
    attack, the worst case, the clean accuracy) and adversarial_examples.png (originals above, the first
    attack's images at the largest ε below). Warns when the accuracy at ε = 0 is not the clean accuracy.

    \b
    Example:
      lab4 attack --model runs/c10 --method fgsm --eps 0,0.01,0.05,0.1 --out runs/c10-fgsm
      lab4 attack --model runs/c10 --method pgd --targeted --target-class 3 --out runs/c10-pgd-cat
      lab4 attack --model runs/c10 --method fgsm,pgd,apgd,square --n-queries 1000 --out runs/c10-worst
      lab4 attack --model runs/c10 --method autoattack --version standard --eps 0.031 --out runs/c10-aa
    """
    chosen = opts["method"].split(",")
    mo.check_radii(chosen, eps, "--eps")
    if targeted != (opts["target_class"] is not None):
        raise DlaError("--targeted and --target-class K go together")
    check_weights(parse_model_spec(opts["model"]), opts["weights"], opts["preprocess"])

    from lab4_ood.datasets import id_spec_for
    from lab4_ood.robustness import AttackConfig, run_attack

    mo.import_all(chosen, ATTACKS)
    rt = Runtime.from_options(opts)  # the environment, checked before the model's folder is read
    dataset = id_spec_for(opts["model"], opts["dataset"], "--dataset")
    cfg = from_options(AttackConfig, opts, dataset=dataset, eps=list(eps))
    result = run_attack(cfg, rt)
    if "autoattack" in chosen:
        click.echo(result["autoattack"]["note"])
    click.echo(
        f"clean accuracy {result['clean_accuracy']:.4f} on n = {result['n']} test images; robust accuracy:"
    )
    echo_robustness(chosen, result)


def echo_robustness(chosen: list[str], result: dict) -> None:
    """`lab4 attack`'s output: accuracy per ε (each attack's and the worst case, with several), warnings."""
    several = "methods" in result
    hit = f" {'target hit':>10}" if result["targeted"] else ""
    if several:
        click.echo(f"{'eps':>8}" + "".join(f" {m:>10}" for m in chosen) + f" {'worst case':>10}{hit}")
    else:
        click.echo(f"{'eps':>8} {'accuracy':>9}{hit}")
    for r in result["rows"]:
        extra = f" {r['target_success']:10.4f}" if result["targeted"] else ""
        if several:
            each = "".join(f" {r['by_method'][m]['accuracy']:10.4f}" for m in chosen)
            click.echo(f"{r['eps']:8g}{each} {r['accuracy']:10.4f}{extra}")
        else:
            click.echo(f"{r['eps']:8g} {r['accuracy']:9.4f}{extra}")
    for line in result.get("warnings", []):
        click.echo(f"warning: {line}")


@group.command()
@click.option("--dataset", required=True, help="Training dataset spec, e.g. cifar10 or digits:0-4.")
@click.option("--model", "family", type=click.Choice(["mlp", "cnn"]), default="cnn", show_default=True)
@click.option("--depth", type=click.IntRange(min=0), default=2, show_default=True, help="Blocks (per stage).")
@click.option("--width", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--stages", type=click.IntRange(min=1), default=2, show_default=True, help="CNN stages.")
@click.option("--residual/--plain", default=True, show_default=True)
@click.option(
    "--adversarial",
    type=click.Choice(list(ATTACKS)),
    default=None,
    help="Train on adversarial examples made on the fly.",
)
@click.option(
    "--eps",
    type=cli.Finite(min=0),
    default=0.03,
    show_default=True,
    help=f"Adversarial radius (pixel units): an L∞ radius in [0, 1], or for {mo.l2_names()} an L2 radius (any "
    "ε ≥ 0).",
)
@click.option(
    "--alpha",
    type=cli.Finite(0, 1),
    default=0.5,
    show_default=True,
    help="Loss = α·CE(x) + (1−α)·CE(x_adv).",
)
@click.option(
    "--adv-fraction",
    type=cli.Finite(0, 1, min_open=True),
    default=1.0,
    show_default=True,
    help="Share of each batch that is attacked.",
)
@click.option(
    "--trades-beta",
    type=cli.Finite(min=0),
    default=None,
    help="TRADES (Zhang et al. 2019): loss CE(x) + β·KL(p(x) ‖ p(x')), x' from PGD maximising the KL in the "
    "L∞ --eps ball (7 steps of 2.5·ε/7 from x + 0.001·N(0, I)); replaces --adversarial and --alpha.",
)
@click.option(
    "--logitnorm-tau",
    type=cli.Finite(min=0, min_open=True),
    default=None,
    help="LogitNorm (Wei et al. 2022): cross-entropy on logits / (τ·‖logits‖₂) instead of on the logits "
    "(the paper's τ: 0.04 on CIFAR-10).",
)
@click.option("--outlier-exposure", default=None, help="OOD spec for outlier exposure.")
@click.option(
    "--oe-weight",
    type=cli.Finite(min=0),
    default=0.5,
    show_default=True,
    help="λ of the outlier-exposure loss (CE to uniform on OOD batches).",
)
@click.option(
    "--augment/--no-augment",
    default=True,
    show_default=True,
    help="The dataset's usual augmentation (crop + flip on CIFAR).",
)
@cli.DATA_DIR
@cli.DOWNLOAD
@cli.OUT
@cli.RESUME
@cli.train_options(epochs_default=10, lr_default=1e-3, batch_default=128)
def train(**opts):
    """Train a classifier, optionally with adversarial training (or TRADES), LogitNorm and/or outlier exposure.

    Writes a run folder (model.safetensors, metrics.json, learning_curves.png) that 'lab4 detect' and
    'lab4 attack' take as --model, so a robust model can be compared with its base model.

    BatchNorm: adversarial examples (--adversarial, --trades-beta) are made with the model in eval mode, so
    the running statistics normalise the attack's passes and are not updated by them (as TRADES' reference
    code does); the loss and the update then run in train mode.

    \b
    Example:
      lab4 train --dataset digits:0-4 --model mlp --epochs 10 --out runs/d04
      lab4 train --dataset digits:0-4 --adversarial fgsm --eps 0.1 --alpha 0.5 --out runs/d04-adv
      lab4 train --dataset digits:0-4 --trades-beta 6 --eps 0.1 --out runs/d04-trades
      lab4 train --dataset cifar10 --logitnorm-tau 0.04 --out runs/c10-logitnorm
      lab4 train --dataset cifar10 --outlier-exposure cifar100 --oe-weight 0.5 --out runs/c10-oe
    """
    eps, adversarial = opts["eps"], opts["adversarial"]
    if (adversarial is None or ATTACKS[adversarial].norm == "linf") and eps > 1:
        raise DlaError(f"--eps: an L∞ radius must lie in [0, 1] (pixel units), got {eps:g}")
    if adversarial is not None and opts["trades_beta"] is not None:
        raise DlaError(
            "--trades-beta makes its own adversarial examples (PGD on the KL term): drop --adversarial"
        )
    if (adversarial is not None or opts["trades_beta"] is not None) and eps == 0:
        raise DlaError(f"{'--adversarial' if adversarial else '--trades-beta'} needs --eps > 0")

    from lab4_ood.training import TrainRunConfig, train_classifier

    mo.import_all([adversarial] if adversarial else [], ATTACKS)

    cfg = from_options(TrainRunConfig, opts)
    rt = Runtime.from_options(opts)
    m = train_classifier(cfg, rt)
    key = f"test_fgsm_accuracy@{cfg.eps:g}"
    robust = f" (FGSM ε={cfg.eps:g}: {m[key]:.4f})" if key in m else ""
    echo_summary(
        f"lab4 train: {cfg.family} on {cfg.dataset}, {m['parameters']:,} parameters, {m['epochs']} epochs, "
        f"test accuracy {m['test_accuracy']:.4f}{robust}, final train loss {m['train_loss']:.4f} → {rt.out}"
    )


cli.add_reproduce_commands(group, "lab4_ood.reproduce:RECIPE")

main = cli.entry_point(group)
