"""Two `lab1 train` commands given one --out at once: exactly one trains, the other is refused and writes nothing.

One launcher process trains once to warm up (imports, first calls), then forks the two commands of each round and lets them go at the
same instant (they meet at ``RunDir.create`` within milliseconds, where the race used to be): ten rounds cost one
start-up. Each child runs the console script's entry point with its own argv, stdout and stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

ROUNDS = 10
# Two runs that differ in every file they write: the learning rate (config.json, metrics.json's history) and the
# width (the parameters in metrics.json, the model config in model.safetensors' metadata).
VARIANTS = (("0.001", "8"), ("0.003", "12"))
PARAMETERS = (754, 1222)  # of the two MLPs: stem 64·w + w, one block 2·(w² + w), head 10·w + 10

LAUNCHER = """
import json, os, sys
from lab1_resnet.cli import main

base, rounds, variants = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])

def train(lr, width, out):
    sys.argv = ["lab1", "train", "--dataset", "digits", "--depth", "1", "--width", width, "--epochs", "2",
                "--lr", lr, "--out", out]
    main()

train(*variants[0], os.path.join(base, "warm-up"))  # every import and first-use cost, once, before the forks
results = []
for n in range(rounds):
    out = os.path.join(base, f"r{n}", "run")
    go_r, go_w = os.pipe()
    pids = []
    for i, (lr, width) in enumerate(variants):
        pid = os.fork()
        if pid == 0:
            os.close(go_w)
            for fd, name in ((1, "out"), (2, "err")):
                os.dup2(os.open(os.path.join(base, f"r{n}", f"{i}.{name}"), os.O_WRONLY | os.O_CREAT, 0o644), fd)
            os.read(go_r, 1)  # both start here at once
            code = 0
            try:
                train(lr, width, out)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                import traceback; traceback.print_exc(); code = 99
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
        pids.append(pid)
    os.close(go_r)
    os.write(go_w, b"go")
    os.close(go_w)
    results.append([[pid, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])] for pid in pids])
print(json.dumps(results))
"""


@pytest.mark.slow
def test_two_commands_into_one_out_one_trains_the_other_is_refused(tmp_path):
    for n in range(ROUNDS):
        (tmp_path / f"r{n}").mkdir()
    args = [str(tmp_path), str(ROUNDS), json.dumps(VARIANTS)]
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    failures = []
    for n, pairs in enumerate(json.loads(done.stdout.splitlines()[-1])):
        failures += _check_round(tmp_path / f"r{n}", pairs)
    assert not failures, f"{len(failures)} problems in {ROUNDS} rounds:\n" + "\n".join(failures)


def _check_round(where: Path, pairs: list[list[int]]) -> list[str]:
    """What went wrong in one round (nothing: one trained, the other was refused, the folder is the winner's)."""
    out = where / "run"
    codes = [code for _, code in pairs]
    err = [(where / f"{i}.err").read_text() for i in range(len(pairs))]
    if sorted(codes) != [0, 1]:
        return [f"{where.name}: exit codes {codes}, stderr {err}"]
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    problems = []
    expected = f"Error: {out} is in use by process {pairs[winner][0]}\n"
    if err[loser] != expected:
        problems.append(f"{where.name}: the refused command said {err[loser]!r}, not {expected!r}")
    lr, width = VARIANTS[winner]
    config = json.loads((out / "config.json").read_text())["config"]
    metrics = json.loads((out / "metrics.json").read_text())
    with safe_open(out / "model.safetensors", "pt") as f:
        model_width = json.loads(f.metadata()["model_config"])["width"]
    seen = {
        "config lr": config["train"]["lr"],
        "config width": config["width"],
        "history lr": {h["lr"] for h in metrics["history"]},
        "model width": model_width,
        "parameters": metrics["parameters"],
        "finished": metrics.get("finished"),
    }
    want = {
        "config lr": float(lr),
        "config width": int(width),
        "history lr": {float(lr)},
        "model width": int(width),
        "parameters": PARAMETERS[winner],
        "finished": True,
    }
    if seen != want:
        problems.append(f"{where.name}: the folder mixes runs: {seen} (the winner's: {want})")
    return problems
