"""Sessions: tests-core, tests-lab1..4, tests (all of them), lint, demo; opt-in: bench, docker, docker-smoke.

nox -s tests            # every part, each in its own environment with only core + that lab installed
nox -s tests-lab1 -- -k study -x    # arguments after -- go to pytest
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"

PYTHON = "3.11"
LABS = {"lab1": "lab1_resnet", "lab2": "lab2_distilbert", "lab3": "lab3_story", "lab4": "lab4_ood"}
PARTS = {"core": [], **{lab: [folder] for lab, folder in LABS.items()}}
TEST_TOOLS = ["pytest>=8", "pytest-timeout"]


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
        session.install(*TEST_TOOLS)
        session.run("pytest", f"tests/{part}", *session.posargs, env={"DLA_PART": part})


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """Run every part's tests, each in its own environment."""
    for part in PARTS:
        session.notify(f"tests-{part}", posargs=session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check + ruff format --check over the whole tree."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


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
