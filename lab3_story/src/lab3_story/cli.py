"""The `lab3` command."""

from __future__ import annotations

import click

from dla_core import cli


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@cli.VERBOSE
def group(verbose: int) -> None:
    """Lab 3: image → BLIP caption → TinyStories story."""
    cli.setup_logging(verbose)


main = cli.entry_point(group)
