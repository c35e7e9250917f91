"""Shared click pieces: options defined once and stacked as decorators, one entry-point wrapper.

Usage in a lab::

    from dla_core import cli

    @group.command()
    @cli.DATA_DIR
    @cli.OUT
    @cli.train_options(epochs=10, lr=1e-3, batch_size=64)
    def train(**opts): ...
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from dla_core.errors import DlaError

#### Runtime options (where and how to run; not hyperparameters) ####

DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("DLA_DATA_DIR", "data"),
    show_default="$DLA_DATA_DIR or ./data",
    help="Folder holding datasets in their official on-disk layout.",
)
DOWNLOAD = click.option(
    "--download", is_flag=True, help="Download missing datasets into --data-dir (needs network)."
)


def _run_folder(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None and str(value).strip() in ("", "."):
        raise click.BadParameter("give a new folder for the run, not the current folder")
    return value


OUT = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    callback=_run_folder,
    help="Run folder to write: config.json, metrics.json, plots, checkpoints.",
)
RESUME = click.option(
    "--resume",
    is_flag=True,
    help="Continue from the last checkpoint in --out (same options as the first run).",
)
SEED = click.option("--seed", type=int, default=0, show_default=True, help="Seeds Python, NumPy and torch.")
PRECISION = click.option(
    "--precision",
    type=click.Choice(["no", "fp16", "bf16"]),
    default="no",
    show_default=True,
    help="Mixed precision. fp16 needs a GPU; bf16 also runs on the CPU (autocast).",
)
CPU = click.option("--cpu", is_flag=True, help="Run on the CPU even when a GPU is present.")
# --report-to names (Accelerate's tracker names) → the package each needs; the first three are dla-core extras
TRACKER_PACKAGES = {
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
    "wandb": "wandb",
    "comet_ml": "comet_ml",
    "aim": "aim",
    "clearml": "clearml",
    "dvclive": "dvclive",
}
TRACKER_EXTRAS = ("tensorboard", "mlflow", "wandb")
REPORT_TO_CHOICES = (*TRACKER_PACKAGES, "all", "none")


def _trackers(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    try:
        items = choice_list(value, REPORT_TO_CHOICES, "--report-to")
    except DlaError as e:
        # click already names the option ("Invalid value for '--report-to': …"): say it once
        raise click.BadParameter(e.message.removeprefix("--report-to: ")) from None
    if "none" in items and len(items) > 1:
        raise click.BadParameter("'none' cannot be combined with trackers")
    return tuple(t for t in dict.fromkeys(items) if t != "none")


REPORT_TO = click.option(
    "--report-to",
    default="none",
    show_default=True,
    callback=_trackers,
    help=f"Trackers to log to, comma-separated: {', '.join(REPORT_TO_CHOICES)}. They write into the run folder "
    "(TensorBoard event files; MLflow to mlruns/ unless MLFLOW_TRACKING_URI is set).",
)
THREADS = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads for torch [default: OMP_NUM_THREADS if set, else 1 for small models and every core for "
    "large ones, from the work per step; the choice is recorded in metrics.json].",
)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE = click.option(
    "--compile",
    type=click.Choice(COMPILE_MODES),
    is_flag=False,
    flag_value="default",
    default=None,
    help="Compile the model with torch.compile, optionally naming its mode (`--compile reduce-overhead`: CUDA "
    "graphs); faster steps on a GPU after a one-off compile of tens of seconds; needs a C++ compiler on the "
    "CPU. Same numbers up to float rounding; not saved in config.json.",
)
VERBOSE = click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")

#### Hyperparameters (defaults differ per command, hence factories) ####


def epochs(default: int) -> Callable:
    return click.option(
        "--epochs", type=click.IntRange(min=1), default=default, show_default=True, help="Training epochs."
    )


def batch_size(default: int) -> Callable:
    return click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=default,
        show_default=True,
        help="Batch size per process (global batch = this × processes × --grad-accum).",
    )


def lr(default: float) -> Callable:
    return click.option(
        "--lr",
        type=click.FloatRange(min=0, min_open=True),
        default=default,
        show_default=True,
        help="Peak learning rate.",
    )


def optimizer(default: str) -> Callable:
    return click.option(
        "--optimizer",
        type=click.Choice(["sgd", "adam", "adamw"]),
        default=default,
        show_default=True,
        help="SGD uses --momentum; AdamW decouples --weight-decay.",
    )


SCHEDULE = click.option(
    "--schedule",
    type=click.Choice(["constant", "cosine", "step", "linear"]),
    default="constant",
    show_default=True,
    help="Learning-rate schedule after --warmup (step: ×0.1 at 50% and 75% of training).",
)
WARMUP = click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Linear warmup length in epochs (fractions allowed).",
)
MOMENTUM = click.option(
    "--momentum", type=click.FloatRange(0, 1), default=0.9, show_default=True, help="SGD momentum."
)
WEIGHT_DECAY = click.option(
    "--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Weight decay."
)
GRAD_ACCUM = click.option(
    "--grad-accum",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Gradient accumulation steps.",
)
CLIP = click.option(
    "--clip",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Clip the global gradient norm to this value.",
)


def stack(*decorators: Callable) -> Callable:
    """Apply several click decorators as one (first listed = first in --help)."""

    def apply(f: Callable) -> Callable:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def train_options(
    *, epochs_default: int, lr_default: float, batch_default: int, optimizer_default: str = "adam"
):
    """The options every training command shares, in one decorator."""
    return stack(
        epochs(epochs_default),
        batch_size(batch_default),
        lr(lr_default),
        optimizer(optimizer_default),
        MOMENTUM,
        WEIGHT_DECAY,
        SCHEDULE,
        WARMUP,
        GRAD_ACCUM,
        CLIP,
        SEED,
        PRECISION,
        CPU,
        THREADS,
        COMPILE,
        REPORT_TO,
    )


#### Parsing helpers for list-valued options ####


def parse_list(value: str, convert: Callable[[str], Any], what: str) -> list:
    """'0,0.01,0.1' → [0.0, 0.01, 0.1]; a bad item becomes one clear error naming the option."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise DlaError(f"{what}: expected a comma-separated list, got {value!r}")
    try:
        return [convert(v) for v in items]
    except ValueError:
        raise DlaError(f"{what}: cannot read {value!r} as a list of {convert.__name__}") from None


def choice_list(value: str, choices: Sequence[str], what: str) -> list[str]:
    items = parse_list(value, str, what)
    bad = [v for v in items if v not in choices]
    if bad:
        raise DlaError(f"{what}: unknown {', '.join(bad)} (choose from {', '.join(choices)})")
    return items


#### Entry point ####


def setup_logging(verbose: int) -> None:
    """Warnings by default (the progress bar and the command's summary say the rest), per-epoch lines with -v,
    debug with -vv. Under several processes only the main one logs below errors: one voice, not N copies."""
    from dla_core.seeding import is_main_process

    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if not is_main_process():
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dla_core").setLevel(level)


def _os_error_message(e: OSError) -> str:
    from urllib.error import URLError

    if isinstance(e, URLError):  # urllib's (a subclass of OSError): torchvision downloads, hub fetches
        reason = getattr(e, "reason", e)
        return f"download failed ({reason}); check the network, or place the files under --data-dir yourself"
    where = f": {e.filename}" if getattr(e, "filename", None) else ""
    return f"{e.strerror or e}{where}"


def entry_point(group: click.Group) -> Callable[[], None]:
    """Wrap a click group as a console script: user mistakes and OS errors become ``Error: …``, not tracebacks.

    Under torchrun / accelerate launch only the main process prints (the others' stdout goes nowhere and their
    copy of a shared error is not repeated); every process exits with the same status.
    """

    @functools.wraps(group)
    def main() -> None:
        from dla_core.seeding import is_main_process

        main_process = is_main_process()
        if not main_process:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)

        def fail(message: str, code: int) -> NoReturn:
            if main_process:
                click.echo(message, err=True)
            raise SystemExit(code)

        try:
            rc = group.main(standalone_mode=False)
            if isinstance(rc, int) and rc:  # a command that ended with ctx.exit(N)
                raise SystemExit(rc)
        except click.exceptions.Abort:
            fail("Aborted.", 130)
        except click.ClickException as e:
            if main_process:
                e.show()
            raise SystemExit(e.exit_code) from None
        except click.exceptions.Exit as e:
            raise SystemExit(e.exit_code) from None
        except OSError as e:  # user paths: missing, read-only file system, permissions, disk full; no network
            fail(f"Error: {_os_error_message(e)}", 1)
        except KeyboardInterrupt:
            fail("Interrupted.", 130)

    return main
