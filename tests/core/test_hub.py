"""Hub names against local folders: a missing folder is named as one, not called a bad repo id."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dla_core.errors import DlaError
from dla_core.hub import check_source, looks_local, missing_folder


@pytest.mark.parametrize("name", ["distilbert-base-uncased", "Salesforce/blip-image-captioning-base"])
def test_hub_ids_are_not_folders(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no folder of that name here
    assert not looks_local(name) and not missing_folder(name)
    check_source(name)  # left to the hub client


@pytest.mark.parametrize("name", ["./nope", "/no/such/model", "~/nope-dla", "runs/a/b", "runs\\b"])
def test_paths_that_are_not_there(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert looks_local(name) and missing_folder(name)
    with pytest.raises(DlaError, match=f"^{re.escape(f'the model folder {name} does not exist')}$"):
        check_source(name)


def test_an_existing_folder_is_local_even_in_hub_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "model").mkdir(parents=True)
    assert looks_local("owner/model") and not missing_folder("owner/model")
    check_source("owner/model")
