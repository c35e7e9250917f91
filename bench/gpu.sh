#!/usr/bin/env bash
# The benchmarks on a GPU machine, in one go: bash bench/gpu.sh   (from the repository root)
#
# Our packages need not be installed: PYTHONPATH points at their src/ folders (the benchmarks use no entry point
# and no importlib.metadata lookup of a dla-* distribution; dla_core.runs.environment() skips versions it cannot
# find). Needs torch, transformers, accelerate and their usual companions (numpy, safetensors, tokenizers, pillow,
# pandas for lab2's CSV reader, scikit-learn for lab3's images, torchvision for bench_core's reference, click,
# matplotlib, tqdm): the first log says which are missing.
# Each benchmark runs under `timeout`; its log goes to $OUT/<name>.log, the RESULT lines to $OUT/results.txt.
# SMOKE=1: tiny sizes, to check the script itself on any machine (a CPU one included).
# Timeouts (seconds) can be changed: T_CORE, T_LAB2, T_LAB3, T_LAB4 (and T_LAB1 for the lead's slot).
set -u
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
PY=${PYTHON:-python}
command -v "$PY" >/dev/null || PY=python3
export PYTHONPATH=core/src:lab1_resnet/src:lab2_distilbert/src:lab3_story/src:lab4_ood/src${PYTHONPATH:+:$PYTHONPATH}
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
SMOKE=${SMOKE:-0}
: >"$OUT/results.txt"

# run NAME TIMEOUT ARGS...: one benchmark, logged; a failure or a timeout is recorded and the script goes on
run() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: $* (timeout ${limit}s) $(date -u +%H:%M:%S)" | tee "$OUT/$name.log"
    local t0=$SECONDS
    timeout -k 10 "$limit" "$PY" "$@" 2>&1 | tee -a "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/$name.log"
    if grep -q '^RESULT ' "$OUT/$name.log"; then
        grep '^RESULT ' "$OUT/$name.log" >>"$OUT/results.txt"
    else
        echo "RESULT $name: none (exit $rc$([ "$rc" = 124 ] && echo ', timed out'))" >>"$OUT/results.txt"
    fi
}


{
    date -u
    nvidia-smi -L 2>&1 || echo "no nvidia-smi"
    echo "cores: $(nproc --all)"
    "$PY" - <<'EOF'
import importlib, platform, sys
print("python", sys.version.split()[0], platform.platform())
for name in ("torch", "transformers", "accelerate", "peft", "tokenizers", "safetensors", "numpy", "pandas",
             "sklearn", "torchvision", "PIL", "click", "matplotlib", "tqdm", "datasets"):
    try:
        print(f"  {name:12s} {getattr(importlib.import_module(name), '__version__', '?')}")
    except Exception as e:
        print(f"  {name:12s} MISSING ({type(e).__name__}: {e})")
import torch
print("cuda", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
for pkg in ("dla_core", "lab1_resnet", "lab2_distilbert", "lab3_story", "lab4_ood"):
    try:
        print(f"  {pkg:16s} imports from {importlib.import_module(pkg).__file__}")
    except Exception as e:
        print(f"  {pkg:16s} FAILS ({type(e).__name__}: {e})")
EOF
} 2>&1 | tee "$OUT/machine.log"

if [ "$SMOKE" = 1 ]; then
    run lab1 "${T_LAB1:-300}" bench/bench_lab1.py --size 256 --epochs 2 --workers 0
    run core "${T_CORE:-300}" bench/bench_core.py --n 1024 --repeats 1
    run lab2 "${T_LAB2:-600}" bench/bench_lab2.py --layers 1 --n 64 --batch-size 16 --repeats 1
    run lab3 "${T_LAB3:-300}" bench/bench_lab3.py --n 2 --batch-size 2 --repeats 1
    run lab4 "${T_LAB4:-300}" bench/bench_lab4.py --n 64 --batch-size 64 --repeats 1
else
    run lab1 "${T_LAB1:-240}" bench/bench_lab1.py --size 25000 --epochs 3 --precision bf16 --ref-precision no,bf16 \
        --workers 2,8 --compile none,default,reduce-overhead
    run core "${T_CORE:-90}" bench/bench_core.py --device cuda --repeats 3
    run lab2 "${T_LAB2:-150}" bench/bench_lab2.py --device cuda --precision bf16 --layers 6 --n 2048 --repeats 2
    run lab3 "${T_LAB3:-150}" bench/bench_lab3.py --device cuda --size real --precision fp16 --n 16 --repeats 3
    run lab4 "${T_LAB4:-60}" bench/bench_lab4.py --device cuda --n 2000 --repeats 3
fi
echo "== results ($OUT/results.txt)"
cat "$OUT/results.txt"
