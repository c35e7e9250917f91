"""The one error style: a user mistake becomes ``Error: <sentence>`` and a non-zero exit, never a traceback."""

from __future__ import annotations

import click


class DlaError(click.ClickException):
    """A problem the user can fix (bad value, missing file, unknown dataset or class).

    click prints it as ``Error: <message>`` and exits with status 1. Library code raises it at the edges
    (loaders, option validation); inside, code trusts its types.
    """


class NonFiniteLossError(DlaError):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""
