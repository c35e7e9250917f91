"""Every training command of a lab offers core's whole set of training options, less those it declares left out.

A training command is one whose options come from ``dla_core.cli.train_options`` (it leaves its mark on the
command's function, with the names it left out); a command that takes ``--epochs`` without it keeps a copy of
core's options and is reported. The commands are found by walking the lab's click group, so a new command, a new
lab or a new core option is checked without editing a list. Each lab's ``test_training_options.py`` runs this.
"""

from __future__ import annotations

from collections.abc import Iterator

import click

from dla_core import cli


def core_training_options() -> set[str]:
    """The parameter names ``train_options`` gives a command that leaves nothing out."""
    probe = click.command()(
        cli.train_options(epochs_default=1, lr_default=1.0, batch_default=1)(lambda **_: None)
    )
    return {p.name for p in probe.params if p.name is not None}


def walk(command: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
    """Every command under ``command`` (itself included), with its command line ("lab1 study")."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, f"{path} {name}")


def training_commands(group: click.Group, name: str) -> list[str]:
    """The training commands of the lab ``group`` (script ``name``), after checking each of them; an
    ``AssertionError`` names a command that lacks a core option or copies them."""
    full = core_training_options()
    found = []
    for path, command in walk(group, name):
        names = {p.name for p in command.params}
        left_out = getattr(command.callback, cli.TRAIN_OPTIONS_LEFT_OUT, None)
        if left_out is None:
            assert "epochs" not in names, (
                f"`{path}` takes --epochs but not through dla_core.cli.train_options"
            )
            continue
        missing = sorted(full - left_out - names)
        assert not missing, (
            f"`{path}` lacks core's training options {missing} (it leaves out {sorted(left_out)})"
        )
        found.append(path)
    return found
