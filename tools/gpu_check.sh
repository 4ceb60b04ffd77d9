#!/usr/bin/env bash
# The GPU check: one command for a machine with an NVIDIA GPU (an H100 or H200) that builds the
# extension, runs the CUDA tests and compute-sanitizer (memcheck, racecheck, synccheck) on small
# cases, the operator and training-step benchmarks and a short training run, and writes the results
# into one folder: summary.md (one page), steps.json, bench_ops.json, bench_train.json,
# train_metrics.jsonl, pytest.xml and log.txt (every step's output). It takes at most 8 minutes:
# each step has its own time limit, and a step is skipped when the time left is too short for it.
#
#   tools/gpu_check.sh [--dry-run] [OUT_DIR]        (OUT_DIR defaults to gpu_check/)
#
# Python packages the machine lacks (pycocotools, for the training run's COCO evaluation) travel as
# wheels in .whl/ at the repository root; they are installed into a private folder first. E.g. for
# Python 3.12:  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12
#   --implementation cp --platform manylinux_2_17_x86_64 -d .whl pycocotools==2.0.11
#
# --dry-run checks every step on the CPU instead: the files each step needs exist, the tests are
# collected, the sanitizer cases run on the CPU, and each tool accepts the step's arguments.
set -uo pipefail

# The short training run (the environment may override the config): switch this to the
# benchmark's config when it exists.
TRAIN_CONFIG=${TRAIN_CONFIG:-configs/compare_r18_synthetic.py}
TRAIN_OPTS=(train.epochs=1 train.batch_size=8 train.log_interval=2 train.num_workers=2 eval.interval=1
            data.params.num_train=64 data.params.num_val=16)
CUDA_TESTS=(tests/test_ops_build.py tests/test_ops_cuda.py tests/test_ops_cuda_kernels.py tests/test_ops_cuda_async.py)
BENCH_OPS_ARGS=(--device cuda --cases assign crowded dw_loss boundary_sample --gts 100 --min-time 0.3)
BENCH_TRAIN_ARGS=(--device cuda --warmup 2 --steps 5)
BUDGET_S=480

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
cd "$(dirname "$0")/.."
OUT_DIR=$(mkdir -p "${1:-gpu_check}" && cd "${1:-gpu_check}" && pwd)
WORK=$(mktemp -d)
PY=${PY:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
SANITIZER=${SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}
LOG=$OUT_DIR/log.txt
STEPS=$OUT_DIR/steps.json
START=$(date +%s)
: >"$LOG"
echo "[]" >"$STEPS"

# step NAME LIMIT_S CMD... : run CMD with a time limit (cut to the time left), log its output and
# append {name, rc, seconds, timed_out, skipped} to steps.json.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET_S - ($(date +%s) - START)))
  local rc=0 skipped=false begin
  begin=$(date +%s.%N)
  printf '\n===== %s (limit %ss)%s: %s\n' "$name" "$limit" "$( ((DRY)) && echo ', dry run')" "$*" >>"$LOG"
  if ((!DRY && left < 20)); then
    skipped=true rc=-1
    echo "skipped: ${left}s of the ${BUDGET_S}s budget left" >>"$LOG"
  else
    ((!DRY && limit > left)) && limit=$left
    # timeout runs a program, not a function of this script: hand the functions and settings to bash.
    local defs
    defs="$(declare -p PY WORK OUT_DIR DRY TRAIN_CONFIG TRAIN_OPTS SANITIZER)
$(declare -f install_wheels train_run sanitize need_files parses)"
    timeout --kill-after=10 "$limit" bash -c "$defs"$'\n''"$@"' step "$@" >>"$LOG" 2>&1
    rc=$?
  fi
  local seconds
  seconds=$("$PY" -c "import time; print(round(time.time() - $begin, 1))")
  "$PY" - "$STEPS" "$name" "$rc" "$seconds" "$skipped" <<'EOF'
import json, sys
path, name, rc, seconds, skipped = sys.argv[1:]
steps = json.load(open(path))
steps.append({"step": name, "rc": int(rc), "seconds": float(seconds), "timed_out": int(rc) in (124, 137),
              "skipped": skipped == "true"})
json.dump(steps, open(path, "w"), indent=1)
EOF
  printf '%-12s rc=%s %ss\n' "$name" "$rc" "$seconds"
}

need_files() {  # the files a step reads, for the dry run
  local f missing=0
  for f in "$@"; do [[ -e $f ]] || { echo "missing: $f"; missing=1; }; done
  return $missing
}

parses() {  # parses MODULE ARGS...: the tool's own parser accepts the step's arguments
  local module=$1
  shift
  "$PY" -c "import sys; from tools import $module; $module.parse_args(sys.argv[1:]); print('arguments ok')" "$@"
}

install_wheels() {
  compgen -G ".whl/*.whl" >/dev/null || { echo "no .whl/ folder: nothing to install"; return 0; }
  ((DRY)) && { ls .whl/*.whl; return 0; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl
}

train_run() {
  "$PY" tools/train.py "$TRAIN_CONFIG" --work-dir "$WORK/train" data.root="$WORK/synthetic" "${TRAIN_OPTS[@]}"
  local rc=$?
  cp "$WORK/train/metrics.jsonl" "$OUT_DIR/train_metrics.jsonl" 2>/dev/null
  return $rc
}

sanitize() {  # sanitize TOOL
  "$SANITIZER" --tool "$1" --error-exitcode 1 "$PY" tests/sanitizer_cases.py
}

if ((DRY)); then  # the limits here are for a slow shared CPU; the time budget applies on the GPU only
  step wheels 60 install_wheels
  step build 60 need_files setup.py csrc/ops.cpp csrc/cuda/bag_cuda.cu csrc/cuda/sample_cuda.cu csrc/cuda/weights_cuda.cu
  step cuda_tests 300 "$PY" -m pytest -q --collect-only "${CUDA_TESTS[@]}"
  step memcheck 300 "$PY" tests/sanitizer_cases.py --device cpu
  step racecheck 60 need_files tests/sanitizer_cases.py
  step synccheck 60 need_files tests/sanitizer_cases.py
  step bench_ops 300 parses bench_ops "${BENCH_OPS_ARGS[@]}" --json "$OUT_DIR/bench_ops.json"
  step bench_train 300 parses bench_train "${BENCH_TRAIN_ARGS[@]}" --json "$OUT_DIR/bench_train.json"
  step train 300 "$PY" -c "import sys; from dwdet.config import load_config; load_config(sys.argv[1], sys.argv[2:]); print('config ok')" \
    "$TRAIN_CONFIG" data.root="$WORK/synthetic" "${TRAIN_OPTS[@]}"
else
  step wheels 10 install_wheels
  [[ -d $WORK/site ]] && export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
  step build 90 "$PY" setup.py build_ext --inplace
  step cuda_tests 110 "$PY" -m pytest -q -rfEs "${CUDA_TESTS[@]}" --junitxml="$OUT_DIR/pytest.xml"
  step memcheck 30 sanitize memcheck
  step racecheck 30 sanitize racecheck
  step synccheck 30 sanitize synccheck
  step bench_ops 70 "$PY" tools/bench_ops.py "${BENCH_OPS_ARGS[@]}" --json "$OUT_DIR/bench_ops.json"
  step bench_train 40 "$PY" tools/bench_train.py "${BENCH_TRAIN_ARGS[@]}" --json "$OUT_DIR/bench_train.json"
  step train 40 train_run
fi

"$PY" tools/gpu_check_summary.py "$OUT_DIR" $( ((DRY)) && echo --dry-run) >"$OUT_DIR/summary.md" || echo "summary failed"
rm -rf "$WORK"
echo "results in $OUT_DIR (summary.md; $(($(date +%s) - START))s)"
"$PY" -c "import json, sys; sys.exit(any(s['rc'] != 0 for s in json.load(open(sys.argv[1]))))" "$STEPS"
