"""The trackers ``--report-to`` can name: one table, and the check that their packages are installed.

``cli.REPORT_TO`` takes its choices from here, ``config.Runtime.check`` refuses a missing package before a command
creates or loads anything, and ``engine.make_accelerator`` starts the trackers. No torch here: the check runs
at start-up.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from dla_core.errors import DlaError

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


def tracker_available(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def check_trackers(report_to: Sequence[str]) -> list[str]:
    """The trackers to start ('all' as Accelerate reads it); an unknown name or a missing package is a one-line
    error naming what to install."""
    trackers = [t for t in dict.fromkeys(report_to) if t != "none"]
    for name in trackers:
        if name == "all":
            continue
        if name not in TRACKER_PACKAGES:
            raise DlaError(
                f"unknown tracker {name!r} (choose from {', '.join(TRACKER_PACKAGES)}, all or none)"
            )
        package = TRACKER_PACKAGES[name]
        if not tracker_available(package):
            how = f"dla-core[{name}]" if name in TRACKER_EXTRAS else package
            raise DlaError(f"--report-to {name} needs the {package!r} package: pip install {how}")
    return trackers
