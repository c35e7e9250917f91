#!/usr/bin/env bash
# Issue 27's GPU measurements in one go, for a session lent one H100/H200 for ~15 minutes (about 8 of them
# for this script): bash bench/gpu_session.sh [--dry-run]     (from the repository root, or anywhere)
#
# On the GPU machine: the repository copied over, no network, nothing installed. Our packages come from their
# src/ folders through PYTHONPATH; torch (and for lab2 transformers + accelerate) must already be there: the
# first log says what is missing. Each benchmark runs under `timeout`, cut to what is left of the whole
# budget (TOTAL seconds, default 480), so the script ends in time even when one part hangs. Logs go to
# $OUT/<name>.log, every RESULT line to $OUT/results.txt (OUT defaults to ./gpu-out).
#
#   1. GPU tests of the captured step and the fused optimizers (same numbers as eager), if pytest is there;
#   2. kernels per step and GPU busy share, lab1's CNN and MLP: the seeds' step vs the engine eager,
#      `--compile reduce-overhead` and `--compile cuda-graph` (bench/bench_kernels.py, bf16);
#   3. lab1's CNN images/s vs the seeds' DataLoader loop, fp32 with 2 workers and bf16 with 8 workers, ours in
#      bf16 eager, cuda-graph and reduce-overhead (bench/bench_lab1.py);
#   4. lab2 vs the HF Trainer in bf16 on a random-init DistilBERT config (no weights needed).
#
# PYTHON (default python) runs everything, PYTHON_LAB2 the lab2 part if it needs another interpreter.
# --dry-run: tiny sizes on whatever machine this is (a CPU one included), eager only: checks the script, the
# imports and the RESULT lines, not the numbers.
set -u
cd "$(dirname "$0")/.." || exit 1
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python}
command -v "$PY" >/dev/null || PY=python3
PY2=${PYTHON_LAB2:-$PY} # lab2's interpreter (one for all on the GPU machine; here, tests-lab2's venv)
export PYTHONPATH=core/src:lab1_resnet/src:lab2_distilbert/src${PYTHONPATH:+:$PYTHONPATH}
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
TOTAL=${TOTAL:-480}
START=$SECONDS
: >"$OUT/results.txt"

# run NAME LIMIT CMD...: one part, logged, under min(LIMIT, what is left of TOTAL); a failure or a timeout is
# recorded in results.txt and the script goes on
run() {
    local name=$1 limit=$2
    shift 2
    local left=$((TOTAL - (SECONDS - START)))
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 20 ]; then
        echo "RESULT $name: skipped (${left}s of the budget left)" | tee -a "$OUT/results.txt"
        return
    fi
    echo "== $name: $* (timeout ${limit}s) $(date -u +%H:%M:%S)" | tee "$OUT/$name.log"
    local t0=$SECONDS
    timeout -k 10 "$limit" "$@" 2>&1 | grep -v '^USDT:' | tee -a "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/$name.log"
    if grep -q '^RESULT ' "$OUT/$name.log"; then
        grep '^RESULT ' "$OUT/$name.log" >>"$OUT/results.txt"
    else
        local last
        last=$(grep -v '^== ' "$OUT/$name.log" | grep -v '^\s*$' | tail -1)
        echo "RESULT $name: exit $rc$([ "$rc" = 124 ] && echo ', timed out'): $last" >>"$OUT/results.txt"
    fi
}

{
    date -u
    git log -1 --format='commit %h %s' 2>/dev/null || echo "commit: not a git checkout"
    nvidia-smi -L 2>&1 || echo "no nvidia-smi"
    echo "cores: $(nproc --all)"
    "$PY" - <<'EOF'
import importlib, platform, sys
print("python", sys.version.split()[0], platform.platform())
for name in ("torch", "transformers", "accelerate", "tokenizers", "safetensors", "numpy", "pandas", "torchvision",
             "PIL", "click", "pytest"):
    try:
        print(f"  {name:12s} {getattr(importlib.import_module(name), '__version__', '?')}")
    except Exception as e:
        print(f"  {name:12s} MISSING ({type(e).__name__}: {e})")
import torch
print("cuda", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
EOF
} 2>&1 | tee "$OUT/machine.log"

has_pytest() { "$PY" -c "import pytest" 2>/dev/null; }

if [ "$DRY" = 1 ]; then
    has_pytest && run gpu-tests 120 "$PY" -m pytest -q -p no:cacheprovider tests/core/test_step_kernels.py
    run kernels 300 "$PY" bench/bench_kernels.py --models mlp --steps 2 --compile none
    run lab1 300 "$PY" bench/bench_lab1.py --size 128 --epochs 1 --ref-precision no --workers 0 --compile none
    run lab2 300 "$PY2" bench/bench_lab2.py --layers 1 --n 64 --batch-size 16 --repeats 1
else
    has_pytest && run gpu-tests 90 "$PY" -m pytest -q -p no:cacheprovider tests/core/test_gpu.py \
        -k "cuda_graph or fused or compile_on_the_gpu or same_seed or padded"
    run kernels 130 "$PY" bench/bench_kernels.py --models cnn,mlp --steps 20 --precision bf16 \
        --compile none,cuda-graph,reduce-overhead
    run lab1 200 "$PY" bench/bench_lab1.py --size 25000 --epochs 3 --precision bf16 --ref-precision no,bf16 \
        --workers 2,8 --compile none,cuda-graph,reduce-overhead
    run lab2 120 "$PY2" bench/bench_lab2.py --device cuda --precision bf16 --layers 6 --n 1024 --repeats 2
fi
echo "== results ($OUT/results.txt), $((SECONDS - START)) s of ${TOTAL}"
cat "$OUT/results.txt"
