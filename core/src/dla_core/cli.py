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

import dataclasses
import functools
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from dla_core.errors import DlaError
from dla_core.trackers import REPORT_TO_CHOICES

#### Numbers: every float option is finite, single values and lists alike ####


class Finite(click.FloatRange):
    """A finite float, optionally bounded: click's FloatRange without ``nan`` and ``±inf`` (which FloatRange lets
    through where a side is open-ended, and ``nan`` always). Every float option of every lab has this type (or
    FiniteList), so a bad number stops at parsing: ``Error: Invalid value for '--lr': nan is not a finite number;
    expected a number > 0`` and click's usage status 2, before anything is created."""

    def bounds(self) -> str:
        """'> 0', '≤ 1', 'in (0, 2]', or '' when unbounded."""
        low, high = self.min, self.max
        if low is None and high is None:
            return ""
        if high is None:
            return f"{'>' if self.min_open else '≥'} {low:g}"
        if low is None:
            return f"{'<' if self.max_open else '≤'} {high:g}"
        return f"in {'(' if self.min_open else '['}{low:g}, {high:g}{')' if self.max_open else ']'}"

    def expected(self) -> str:
        return f"a number {self.bounds()}" if self.bounds() else "a finite number"

    def number(self, value: Any, expected: str | None = None) -> float:
        """``value`` as a float within the bounds; a ValueError says what is wrong and what was expected."""
        expected = expected or self.expected()
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a number; expected {expected}") from None
        if not math.isfinite(x):
            raise ValueError(f"{str(value).strip()} is not a finite number; expected {expected}")
        low, high = self.min, self.max
        if (low is not None and (x <= low if self.min_open else x < low)) or (
            high is not None and (x >= high if self.max_open else x > high)
        ):
            raise ValueError(f"{x:g} is out of range; expected {expected}")
        return x

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return self.number(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


class FiniteList(click.ParamType):
    """Comma-separated finite floats, each within the same bounds as ``Finite``'s ('0,0.01,0.1' → a tuple)."""

    name = "float list"

    def __init__(
        self,
        min: float | None = None,
        max: float | None = None,
        min_open: bool = False,
        max_open: bool = False,
    ) -> None:
        self.item = Finite(min, max, min_open=min_open, max_open=max_open)

    def expected(self) -> str:
        bounds = self.item.bounds()
        return "comma-separated finite numbers" + (f", each {bounds}" if bounds else "")

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[float, ...]:
        items = (
            list(value) if isinstance(value, (tuple, list)) else [v.strip() for v in str(value).split(",")]
        )
        if not items or any(v == "" for v in items):
            self.fail(f"{value!r} is not a list; expected {self.expected()}", param, ctx)
        try:
            return tuple(self.item.number(v, self.expected()) for v in items)
        except ValueError as e:
            self.fail(str(e), param, ctx)


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
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "cuda-graph")
COMPILE = click.option(
    "--compile",
    type=click.Choice(COMPILE_MODES),
    is_flag=False,
    flag_value="default",
    default=None,
    help="Compile the model with torch.compile, optionally naming its mode (`--compile reduce-overhead`: CUDA "
    "graphs); faster steps on a GPU after a one-off compile of tens of seconds; needs a C++ compiler on the "
    "CPU. `--compile cuda-graph`: no compiler, the training forward/backward captured once with CUDA graphs and "
    "replayed (one CUDA GPU, one process). Same numbers up to float rounding; not saved in config.json.",
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
        type=Finite(min=0, min_open=True),
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
    type=Finite(min=0),
    default=0.0,
    show_default=True,
    help="Linear warmup length in epochs (fractions allowed).",
)
MOMENTUM = click.option("--momentum", type=Finite(0, 1), default=0.9, show_default=True, help="SGD momentum.")
WEIGHT_DECAY = click.option(
    "--weight-decay", type=Finite(min=0), default=0.0, show_default=True, help="Weight decay."
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
    type=Finite(min=0, min_open=True),
    default=None,
    help="Clip the global gradient norm to this value.",
)

PATIENCE = click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=None,
    help="Stop early once the validation loss has not improved on its best for this many epochs (the last "
    "epoch's weights are kept; metrics.json says stopped_early).  [default: every epoch]",
)


def max_steps_option(help: str) -> Callable:
    """--max-steps N, a smoke run's cap: a training command's own (``MAX_STEPS``) or reproduce's, which passes it on."""
    return click.option("--max-steps", type=click.IntRange(min=1), default=None, help=help)


MAX_STEPS = max_steps_option(
    "Smoke run: at most N optimizer steps per epoch, N epochs and N batches per evaluation (validation, "
    "test). Checks that a setup runs end to end at full size in minutes; the numbers are not results."
)


def stack(*decorators: Callable) -> Callable:
    """Apply several click decorators as one (first listed = first in --help)."""

    def apply(f: Callable) -> Callable:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


# the attribute train_options leaves on a command's function: the option names it left out (tests find every
# training command of every lab by it and check that it offers all the others)
TRAIN_OPTIONS_LEFT_OUT = "dla_train_options_left_out"


def defaults_from(config: type) -> Callable:
    """Give a command's options the defaults of the dataclass ``config``: every option named like one of its
    fields takes that field's default, so a default is declared once, in the config. Stack it above the options
    (just below ``@group.command()``); the options themselves leave ``default`` out."""
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}

    def apply(f: Callable) -> Callable:
        for param in getattr(f, "__click_params__", ()):
            if param.name in defaults:
                param.default = defaults[param.name]
        return f

    return apply


def train_options(
    *,
    epochs_default: int,
    lr_default: float | None = None,
    batch_default: int,
    optimizer_default: str = "adam",
    exclude: Iterable[str] = (),
) -> Callable:
    """The options every training command shares, in one decorator. ``exclude`` names (as parameters: "seed",
    "lr") those a command replaces with its own, e.g. ``lab1 study``'s --seeds for --seed; every other one is
    offered, so an option added here reaches every training command."""
    left_out = frozenset(exclude)
    if lr_default is None and "lr" not in left_out:
        raise ValueError("train_options: give lr_default, or leave out lr")
    options = {
        "epochs": epochs(epochs_default),
        "batch_size": batch_size(batch_default),
        "lr": lr(lr_default) if lr_default is not None else None,
        "optimizer": optimizer(optimizer_default),
        "momentum": MOMENTUM,
        "weight_decay": WEIGHT_DECAY,
        "schedule": SCHEDULE,
        "warmup": WARMUP,
        "grad_accum": GRAD_ACCUM,
        "clip": CLIP,
        "patience": PATIENCE,
        "max_steps": MAX_STEPS,
        "seed": SEED,
        "precision": PRECISION,
        "cpu": CPU,
        "threads": THREADS,
        "compile": COMPILE,
        "report_to": REPORT_TO,
    }
    unknown = sorted(left_out - options.keys())
    if unknown:
        raise ValueError(f"train_options: no option {', '.join(unknown)} to leave out")
    offered = stack(*(option for name, option in options.items() if name not in left_out))

    def apply(f: Callable) -> Callable:
        f = offered(f)
        setattr(f, TRAIN_OPTIONS_LEFT_OUT, left_out)
        return f

    return apply


#### Parsing helpers for list-valued options ####


def parse_list(value: str, convert: Callable[[str], Any], what: str) -> list:
    """'2,10,20' → [2, 10, 20]; a bad item becomes one clear error naming the option. Numbers with a
    fraction are an option's type instead: FiniteList (it refuses nan and ±inf)."""
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


# click ≥ 8.2 raises this usage error to show a group's help when it is called with no command (8.1 exits 0)
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def entry_point(group: click.Group) -> Callable[[], None]:
    """Wrap a click group as a console script: user mistakes and OS errors become one line ``Error: …``, not
    tracebacks (a usage error keeps click's status 2, and its message names the option).

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
        except _NO_ARGS_IS_HELP as e:  # `lab1` alone: the help page, as click shows it
            if main_process:
                e.show()
            raise SystemExit(e.exit_code) from None
        except click.ClickException as e:  # usage errors too: one Error line, without click's usage lines
            fail(f"Error: {e.format_message()}", e.exit_code)
        except click.exceptions.Exit as e:
            raise SystemExit(e.exit_code) from None
        except OSError as e:  # user paths: missing, read-only file system, permissions, disk full; no network
            fail(f"Error: {_os_error_message(e)}", 1)
        except KeyboardInterrupt:
            fail("Interrupted.", 130)

    return main


#### `reproduce` and `report`: every lab's whole experiment set and its report ####


def add_reproduce_commands(
    group: click.Group,
    recipe: Any,
    *,
    extra: Sequence[Callable] = (),
    profiles: Sequence[str] = ("quick", "full"),
    lab: str | None = None,
) -> None:
    """Give a lab's group the ``reproduce`` and ``report`` commands of the recipe at ``recipe``
    ('lab1_resnet.reproduce:RECIPE', imported when a command runs, or a ``Recipe``). ``extra``: click options of
    the recipe (their values reach its ``steps`` and ``sections`` as keyword arguments and are saved with the
    folder). ``lab``: the command's name [default: the package's prefix, 'lab1' for 'lab1_resnet…']."""
    lab = lab or str(recipe).split(".")[0].split("_")[0]

    def steps_option(name: str, what: str) -> Callable:
        return click.option(
            name,
            default="",
            metavar="STEP,…",
            help=f"{what} (comma-separated step names; see the plan printed).",
        )

    @group.command("reproduce")
    @click.option(
        "--profile",
        type=click.Choice(list(profiles)),
        default=profiles[0],
        show_default=True,
        help="quick: offline, minutes on a laptop CPU; full: the seeds' real setups (downloads, GPU recommended).",
    )
    @OUT
    @RESUME
    @steps_option("--only", "Run only these steps")
    @steps_option("--skip", "Skip these steps")
    @max_steps_option(
        "Smoke run: every step that trains gets --max-steps N (at most N optimizer steps per epoch, N epochs, "
        "N batches per evaluation), the others a cap of their own; the report says so. Numbers are not results."
    )
    @stack(*extra)
    def reproduce(
        profile: str, out: Path, resume: bool, only: str, skip: str, max_steps: int | None, **options: Any
    ) -> None:
        from dla_core import reproduce as rep

        recipe_ = rep.load_recipe(recipe)
        picked = [s for s in only.split(",") if s.strip()]
        skipped = [s for s in skip.split(",") if s.strip()]
        values = {k: _plain(v) for k, v in options.items()}
        md, page = rep.reproduce(
            recipe_,
            group,
            profile=profile,
            out=out,
            resume=resume,
            only=picked,
            skip=skipped,
            extra=values,
            echo=click.echo,
            max_steps=max_steps,
        )
        click.echo(f"report: {md}\n        {page}")

    reproduce.help = (
        f"Run the whole lab as child run folders under --out, then write report.md and report.html there.\n\n"
        f"Each step is an ordinary `{lab}` command with its own run folder; --resume skips the steps that are "
        f"done and continues a started one.\n\n"
        f"Example: {lab} reproduce --profile quick --out runs/{lab}-report"
    )

    @group.command("report")
    @click.argument(
        "runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
    )
    @click.option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder for report.md / report.html [default: the reproduce folder itself; required for a comparison].",
    )
    def report(runs: tuple[Path, ...], out: Path | None) -> None:
        from dla_core import reproduce as rep
        from dla_core.compare import write_comparison
        from dla_core.runs import RunDir

        if len(runs) == 1 and RunDir.open(runs[0]).saved.get("command") == f"{lab} reproduce":
            md, page = rep.render(rep.load_recipe(recipe), runs[0], out)
        else:
            if out is None:
                raise DlaError("--out: give a folder for the comparison report")
            md, page = write_comparison(runs, out, f"{lab}: comparison of {len(runs)} runs")
        click.echo(f"report: {md}\n        {page}")

    report.help = (
        f"Re-render a reproduce folder's report, or compare run folders of one command.\n\n"
        f"One `{lab} reproduce` folder: its report is written again from its run folders. Several run folders: one "
        f"table per command with the options that differ and the final metrics (mean ± 95% CI over seeds), the curves overlaid.\n\n"
        f"Examples: {lab} report runs/{lab}-report\n\n"
        f"          {lab} report runs/a runs/b runs/c --out runs/compare"
    )


def _plain(value: Any) -> Any:
    """Option values as JSON: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
