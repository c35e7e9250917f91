"""Walk every command of a lab's click group and feed nan, inf and -inf to each of its float options.

The commands and options come from the group itself (``click.Group.commands``, recursively), never from a hand
list, so a new command or option is walked the day it is added. Each case runs in-process through the lab's
console-script entry point (``dla_core.cli.entry_point``), as a user's shell would, inside ``tmp_path`` as the
working directory; every other required option or argument gets a harmless value and ``--out`` a folder under
``tmp_path``. Expected of each case: exit status 2 (click's usage error), exactly one line on stderr, starting
``Error: Invalid value for '<option>': nan is not a finite number; expected`` (then the option's range: the one
type's message), no traceback, nothing on stdout, and nothing new under ``tmp_path``. The commands' bodies
are stood in for during the walk: a value that gets past parsing is reported at once ("the command ran"), rather
than training on nan or starting a server.

Each part's tests (tests/core, tests/lab1 … tests/lab4) call ``walk_script`` for the lab installed in its
session and check how many float options the walk found, so a walk that finds nothing fails too.
"""

from __future__ import annotations

import contextlib
import io
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from unittest import mock

import click

from dla_core import cli

NON_FINITE = ("nan", "inf", "-inf")


def commands(
    group: click.Group, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """(the words that name the command, the command) for every command under ``group``, sub-groups included."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


def _looks_like_numbers(default: object) -> bool:
    """A float default, or a comma-separated default with a fraction in it ('0,0.01,0.1'): a float option even
    if someone dropped its type."""
    if isinstance(default, float):
        return True
    if not isinstance(default, str) or not any(c in default for c in ".eE"):
        return False
    try:
        [float(v) for v in default.split(",")]
    except ValueError:
        return False
    return True


def is_float_option(param: click.Parameter) -> bool:
    """Single floats (click's FLOAT, FloatRange, cli.Finite), float lists (cli.FiniteList), and options whose
    default is a float or a list of them, whatever their type says."""
    if not isinstance(param, click.Option) or param.is_flag or param.count:
        return False
    if isinstance(param.type, (click.types.FloatParamType, cli.FiniteList)):
        return True
    return not callable(param.default) and _looks_like_numbers(param.default)


def _harmless(param: click.Parameter, tmp: Path) -> list[str]:
    """Values that pass ``param``'s own type: existing folders / files under ``tmp`` for paths that must exist."""
    t = param.type
    if param.name == "out":
        value = str(tmp / "out")
    elif isinstance(t, click.Path):
        value = str(tmp / "given" / "file.txt") if t.exists and not t.dir_okay else str(tmp / "given")
    elif isinstance(t, click.Choice):
        value = str(t.choices[0])
    elif hasattr(t, "example"):  # a type that names a value that parses (--model's)
        value = t.example
    elif isinstance(t, click.IntRange):
        low = 1 if t.min is None else t.min + (1 if t.min_open else 0)
        value = str(low)
    elif isinstance(t, (click.types.IntParamType, click.types.FloatParamType)):
        value = "1"
    else:
        value = "x"
    values = [value] * max(param.nargs, 1)  # nargs=-1: one
    return [param.opts[0], *values] if isinstance(param, click.Option) else values


def _required(command: click.Command, skip: click.Parameter, tmp: Path) -> list[str]:
    """The command's required options and arguments, and --out whenever it has one."""
    argv: list[str] = []
    for param in command.params:
        if param is not skip and (param.required or param.name == "out"):
            argv += _harmless(param, tmp)
    return argv


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _ran(**options: object) -> None:
    """Stands in for a command's body: reaching it means the bad value got through."""
    click.echo("the command ran", err=True)


def _invoke(script: Callable[[], None], prog: str, argv: list[str]) -> tuple[object, str, str]:
    """Run a console script in-process: (exit status, or 'traceback'; stdout; stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code: object = 0
    with (
        mock.patch.object(sys, "argv", [prog, *argv]),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            script()
        except SystemExit as e:
            code = e.code
        except Exception:  # what a user would see as a traceback
            code = "traceback"
            err.write(traceback.format_exc())
    return code, out.getvalue(), err.getvalue()


@dataclass
class Walk:
    """What the walk found and what went wrong."""

    options: list[str] = field(default_factory=list)  # 'train --lr', one per float option walked
    failures: list[str] = field(default_factory=list)

    def check(self, minimum: int) -> None:
        assert not self.failures, "\n\n".join(self.failures)
        assert len(self.options) >= minimum, f"only {len(self.options)} float options found: {self.options}"


def walk(script: Callable[[], None], group: click.Group, prog: str, tmp: Path) -> Walk:
    """Feed every float option of every command of ``group`` each of NON_FINITE through ``script``."""
    result = Walk()
    given = tmp / "given"
    given.mkdir(parents=True, exist_ok=True)
    (given / "file.txt").write_text("")
    for param in filter(is_float_option, group.params):
        result.failures.append(f"{prog} {param.opts[0]}: a float option on the group itself is not walked")
    with contextlib.chdir(tmp):  # anything written relative to the working directory lands in tmp too
        for path, command in commands(group):
            for param in command.params:
                if not is_float_option(param):
                    continue
                option = next((o for o in param.opts if o.startswith("--")), param.opts[0])
                result.options.append(f"{' '.join(path)} {option}")
                for bad in NON_FINITE:
                    # the other options first: click reads them in command-line order, so --out's own check
                    # (and anything else it does) comes before the bad number, the worst case
                    argv = [*path, *_required(command, param, tmp), f"{option}={bad}"]
                    before = _files(tmp)
                    with mock.patch.object(command, "callback", _ran):
                        code, out, err = _invoke(script, prog, argv)
                    lines = err.strip().splitlines()
                    case = f"{prog} {' '.join(argv)}"
                    if code != 2 or len(lines) != 1 or "Traceback" in err or out:
                        result.failures.append(f"{case}: exit {code}, stdout {out!r}, stderr:\n{err}")
                    elif not lines[0].startswith(f"Error: Invalid value for '{option}': {bad} is not a finite "
                                                 "number; expected "):  # fmt: skip
                        result.failures.append(f"{case}: {lines[0]!r} is not the one finite-number error")
                    created = _files(tmp) - before
                    if created:
                        result.failures.append(f"{case}: created {sorted(map(str, created))}")
    return result


def walk_script(name: str, tmp: Path) -> Walk:
    """Walk the installed console script ``name`` (lab1 …): the group is the one its entry point wraps."""
    (entry,) = entry_points(group="console_scripts", name=name)
    script = entry.load()
    return walk(script, script.__wrapped__, name, tmp)
