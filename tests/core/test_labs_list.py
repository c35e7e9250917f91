"""The list of labs has one place, `[tool.dla] labs` in pyproject.toml: nox, the docker files and the run
folders' environment follow it, so a new lab is its folder plus one line."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib

import pytest

from dla_core.runs import environment
from tests.labs import LABS, ROOT


def test_the_list_names_every_lab_folder_and_each_lab_is_its_console_script():
    folders = {p.parent.name for p in ROOT.glob("lab*_*/pyproject.toml")}
    assert set(LABS.values()) == folders
    for name, folder in LABS.items():
        scripts = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]["scripts"]
        assert scripts.get(name) == f"{folder}.cli:main", (name, scripts)


def test_a_new_lab_is_its_folder_and_one_line_in_the_list(tmp_path):
    """Copy the build files, add lab5 to the list: nox gets tests-lab5, the generated docker files a lab5 image."""
    for path in (
        "noxfile.py",
        "pyproject.toml",
        "docker/Dockerfile",
        "docker/docker-bake.hcl",
        "docker/generate.py",
    ):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, tmp_path / path)
    for folder in LABS.values():
        (tmp_path / folder).mkdir()
        shutil.copy2(ROOT / folder / "pyproject.toml", tmp_path / folder / "pyproject.toml")
    (tmp_path / "lab5_demo").mkdir()
    (tmp_path / "lab5_demo" / "pyproject.toml").write_text(
        '[project]\nname = "dla-lab5"\ndescription = "dla lab 5: a demonstration."\n'
    )
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text()
    assert text.count('lab4 = "lab4_ood" }') == 1
    pyproject.write_text(text.replace('lab4 = "lab4_ood" }', 'lab4 = "lab4_ood", lab5 = "lab5_demo" }'))

    gen = subprocess.run([sys.executable, "docker/generate.py"], cwd=tmp_path, capture_output=True, text=True)
    assert gen.returncode == 0, gen.stderr
    dockerfile = (tmp_path / "docker" / "Dockerfile").read_text()
    for line in (
        "FROM torch AS lab5-wheels",
        "COPY lab5_demo /src/lab5_demo",
        "RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels /src/core /src/lab5_demo",
        "FROM runtime AS lab5",
        'ENTRYPOINT ["lab5"]',
        "# ---- lab5: a demonstration ---",
    ):
        assert line in dockerfile, line
    assert dockerfile.startswith((ROOT / "docker" / "Dockerfile").read_text())  # the others stay as they are
    bake = (tmp_path / "docker" / "docker-bake.hcl").read_text()
    assert 'targets = ["lab1", "lab2", "lab3", "lab4", "lab5"]' in bake
    assert (
        'target "lab5" {\n  inherits = ["_lab"]\n  target   = "lab5"\n  tags     = ["${REGISTRY}/lab5:${TAG}"]'
        in bake
    )
    check = subprocess.run(
        [sys.executable, "docker/generate.py", "--check"], cwd=tmp_path, capture_output=True
    )
    assert check.returncode == 0

    nox = shutil.which("nox")
    if nox is None:
        pytest.skip("nox is not on PATH: the docker half passed, the nox half is not checked")
    listed = subprocess.run(
        [nox, "--list", "--noxfile", str(tmp_path / "noxfile.py")], capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    sessions = {line[2:].split(" -> ")[0] for line in listed.stdout.splitlines() if line[:2] in ("* ", "- ")}
    assert {f"tests-{name}" for name in [*LABS, "lab5"]} <= sessions, sessions


def test_environment_records_every_installed_dla_distribution(tmp_path, monkeypatch):
    info = tmp_path / "dla_lab9-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dla-lab9\nVersion: 0.3.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    versions = environment()["versions"]
    assert versions["dla-lab9"] == "0.3.0" and "dla-core" in versions and "torch" in versions
