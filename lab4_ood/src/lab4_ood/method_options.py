"""The click side of the method table (methods.py): options, ``--grid-…`` options, ``--method`` help and the
checks of a command's choice of methods. No torch: ``lab4 --help`` reads only this and methods.py."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from dla_core import cli
from dla_core.errors import DlaError
from lab4_ood import methods

RUN = click.Path(exists=True, file_okay=False, path_type=Path)


def needy() -> dict[str, str]:
    """The detectors that need an option naming a run folder of one model (recon: --autoencoder), with its flag:
    left out of `lab4 benchmark --methods all`, and refused with several models."""
    return {
        name: next(o.cli_flag for o in spec.options if o.needed)
        for name, spec in methods.detectors().items()
        if any(o.needed for o in spec.options)
    }


def _param_type(o: methods.Option) -> click.ParamType:
    if o.choices:
        return click.Choice(list(o.choices))
    if o.type is Path:
        return RUN
    if o.type is int:
        return click.IntRange(min=o.min, max=o.max)
    if o.type is float:
        return cli.Finite(o.min, o.max, min_open=o.min_open)
    return click.STRING


def _whole_numbers(o: methods.Option) -> Callable:
    """A click callback: comma-separated whole numbers within the option's bounds (an int option's grid)."""

    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
        values = tuple(cli.parse_list(value, int, o.cli_grid_flag))
        low = o.min if o.min is not None else -float("inf")
        if any(v < low or (o.max is not None and v > o.max) for v in values):
            raise DlaError(f"{o.cli_grid_flag}: every value must be a whole number ≥ {low:g}, got {value!r}")
        return values

    return parse


def click_options(specs: Iterable[methods.Detector | methods.Attack], grids: bool = False) -> Callable:
    """One click option per option of ``specs`` (each once), its help prefixed with the methods that take it;
    with ``grids``, also ``--grid`` and a ``--grid-…`` option per searched option."""
    specs = list(specs)
    options = methods.options_of(specs)
    decorators = []
    if grids:
        searched = [s.name for s in specs if getattr(s, "searched", ())]
        decorators.append(click.option("--grid", is_flag=True, help="Search on held-out data first (the ID "
            "validation slice vs the OOD sets' training splits, never the test sets) each selected "
            f"{', '.join(searched)} over its --grid-* values (refitted on the ID training split for each value "
            "where it fits); odin over --grid-T × --grid-eps together."))  # fmt: skip
    for o in options.values():
        who = ", ".join(methods.users(o, specs))
        default = methods.default(o, specs)
        own = [f"{s.name} {s.defaults[o.name]}" for s in specs if o.name in getattr(s, "defaults", {})]
        note = f" [default: {o.default}; {', '.join(own)}]" if own else ""
        decorators.append(click.option(o.cli_flag, o.name, type=_param_type(o), default=default,
                                       show_default=default is not None, metavar=o.metavar,
                                       help=f"{who}: {o.help}{note}"))  # fmt: skip
    for o in (o for o in options.values() if grids and o.grid):
        who = ", ".join(methods.users(o, specs))
        text = ",".join(f"{v:g}" for v in o.grid)
        kind = (
            {"callback": _whole_numbers(o)}
            if o.type is int
            else {"type": cli.FiniteList(o.min, o.max, o.min_open)}
        )
        decorators.append(click.option(o.cli_grid_flag, o.grid_field, default=text, show_default=True,
                                       help=f"{who} --grid: values of {o.cli_flag}, comma-separated.", **kind))  # fmt: skip
    return cli.stack(*decorators)


def summaries_help(specs: Iterable[methods.Detector | methods.Attack], lead: str) -> str:
    """A ``--method`` help: ``lead``, then every method and its one-line summary, one a line."""
    rows = [(s.name, s.summary + (" [fits]" if getattr(s, "fits", False) else "")) for s in specs]
    width = max(len(name) for name, _ in rows)
    return lead + "\n\n\b\n" + "\n".join(f"{name:<{width}}  {summary}" for name, summary in rows)


def detector_choice(value: str, what: str, values: dict[str, Any]) -> tuple[str, ...]:
    """Comma-separated declared detectors, each with the options it needs (refused before any work)."""
    chosen = tuple(cli.choice_list(value, tuple(methods.detectors()), what))
    for name in chosen:
        if refusal := methods.missing(methods.detectors()[name], values):
            raise DlaError(refusal)
    return chosen


def attack_list(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A click callback for ``lab4 attack --method``: declared attacks separated by commas, each once."""
    names = [v.strip() for v in value.split(",")]
    table = methods.attacks()
    for name in names:
        if name not in table:
            raise click.BadParameter(f"{name!r} is not one of {', '.join(map(repr, table))}.", ctx, param)
    if len(set(names)) < len(names):
        raise click.BadParameter(f"each attack once, got {value!r}", ctx, param)
    return ",".join(names)


def check_radii(names: Iterable[str], radii: Iterable[float], what: str, one_norm: bool = True) -> None:
    """L∞ radii lie in [0, 1]; with ``one_norm`` the attacks share a norm (the worst case per image needs one)."""
    names, table = list(names), methods.attacks()
    l2 = [m for m in names if table[m].norm == "l2"]
    linf = [m for m in names if table[m].norm != "l2"]
    if one_norm and l2 and linf:
        raise DlaError(f"--method mixes L2 attacks ({', '.join(l2)}) with L∞ attacks ({', '.join(linf)}): the "
                       "worst case per image needs one norm; run them separately")  # fmt: skip
    if linf and any(e > 1 for e in radii):
        raise DlaError(
            f"{what}: every ε must lie in [0, 1] (pixel units), got {','.join(f'{e:g}' for e in radii)}"
        )


def l2_names() -> str:
    return ", ".join(name for name, a in methods.attacks().items() if a.norm == "l2")


def import_all(names: Iterable[str], table: dict) -> None:
    """Import the implementations of ``names`` now, before any work: a plug-in whose code is broken stops the
    command with one Error line and nothing on disk."""
    for name in names:
        methods.implementation(table[name])
