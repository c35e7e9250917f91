"""Hub names and local folders: tell a missing local model folder apart from a bad Hugging Face repo id.

``from_pretrained("./nope")`` answers "Repo id must be in the form 'repo_name' or 'namespace/repo_name'", which
sends the user looking for a typo in a hub name when the folder they meant is simply not there. The labs call
``check_source`` (or ``missing_folder``) before loading, so that mistake reads as what it is.

No torch or transformers here: cheap to import.
"""

from __future__ import annotations

from pathlib import Path

from dla_core.errors import DlaError


def looks_local(name: str) -> bool:
    """True when ``name`` can only be a folder: a hub id is ``name`` or ``owner/name`` (one slash, no leading
    ``/``, ``.`` or ``~``), so anything else is a path, and so is an existing folder."""
    return (
        Path(name).exists()
        or name.startswith(("/", ".", "~"))
        or name.count("/") > 1
        or "\\" in name
        or Path(name).is_absolute()
    )


def missing_folder(name: str) -> bool:
    """``name`` can only mean a local folder, and there is none."""
    return looks_local(name) and not Path(name).expanduser().exists()


def check_source(name: str) -> None:
    """Refuse a local model folder that is not there, before the hub client calls it a bad repo id."""
    if missing_folder(name):
        raise DlaError(f"the model folder {name} does not exist")
