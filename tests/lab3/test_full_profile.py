"""`lab3 reproduce --profile full`: the full recipe end to end with models of the real sizes, offline.

The full profile loads ``Salesforce/blip-image-captioning-base`` and ``roneneldan/TinyStories-33M`` from the hub.
Random-weight models of those architectures (``lab3_story.random_models``, ``size="real"``: BLIP base at 384×384,
GPT-Neo 768×4 with the 50,257-token embedding) are put in a hub cache under those names, so the recipe's own
names resolve offline as after a first online run, through the `lab3` console script. lab3 trains nothing:
nothing is capped, every step runs as a user's would (two photos, five settings).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab3_story import reproduce
from tests.full_size import FULL_SMOKE_TIMEOUT, failure, put_in_hub_cache, run_lab

REPOS = {"captioner": "Salesforce/blip-image-captioning-base", "storyteller": "roneneldan/TinyStories-33M"}


@pytest.fixture(scope="session")
def full_size_hub(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from lab3_story.random_models import save_random_models

    root = tmp_path_factory.mktemp("lab3-full-size")
    models = save_random_models(root / "work", size="real")
    for folder, repo in REPOS.items():
        put_in_hub_cache(root / "hub", repo, models / folder)
    return {"HF_HUB_CACHE": str(root / "hub"), "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
@pytest.mark.timeout(FULL_SMOKE_TIMEOUT)
def test_full_profile_runs_every_step_with_real_size_models(full_size_hub, tmp_path):
    out = tmp_path / "lab3-full"
    r = run_lab("lab3", "reproduce", "--profile", "full", "--out", out, env=full_size_hub)
    assert r.returncode == 0, failure(r)
    names = [name for name, _, _ in reproduce.SETTINGS]
    for name in names:
        saved = json.loads((out / name / "config.json").read_text())["config"]
        assert (saved["caption_model"], saved["story_model"]) == tuple(REPOS.values())
        results = [json.loads(line) for line in (out / name / "results.jsonl").read_text().splitlines()]
        assert [Path(x["source"]).name for x in results] == list(reproduce.PHOTOS), name
        assert all(x.get("caption") is not None and not x.get("error") for x in results), results
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    manifest = json.loads((out / "metrics.json").read_text())["steps"]
    print({name: manifest[name]["seconds"] for name in names})
