"""The `lab2` command."""

from __future__ import annotations

import click

from dla_core import cli


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@cli.VERBOSE
def group(verbose: int) -> None:
    """Lab 2: DistilBERT sentiment on Rotten Tomatoes: features, fine-tuning, LoRA, evaluation."""
    cli.setup_logging(verbose)


main = cli.entry_point(group)
