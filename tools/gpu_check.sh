#!/usr/bin/env bash
# The GPU check: one command for a machine with an NVIDIA GPU (an H100 or H200) that records the
# environment, builds the extension for that GPU, runs the CUDA tests and compute-sanitizer
# (memcheck, racecheck, synccheck) on the project's kernels, the operator benchmark (with the
# Ultralytics assigner as a peer when it is installed), the training-step benchmark, and trains the
# patterns80 AdamW pair (FCOS and DW, seed 0). Everything lands directly in OUT_DIR, at most 8 files:
# summary.md (one page, also printed at the end), steps.json, log.txt, env.txt, pytest.xml,
# bench_ops.json, bench_train.json and train_metrics.jsonl. It takes at most BUDGET_S seconds.
#
#   make gpu-wheels                         # here: .whl/ with the wheels the GPU machine lacks
#   tools/gpu_check.sh OUT_DIR              # there, with .whl carried; OUT_DIR is the folder that comes back
#   tools/gpu_check.sh --dry-run OUT_DIR    # the same steps on this CPU at toy sizes (tests/tools/test_gpu_check.py)
#
# Nothing needs to be installed: the tools run in script mode from a plain copy of the repository,
# with the repository and the wheels of .whl/ (pycocotools; ultralytics for the peer) on PYTHONPATH.
set -uo pipefail

BUDGET_S=420          # the whole check; the device allows 600 s a call and about 15 minutes a session
SUMMARY_S=15          # kept for the summary at the end
TRAIN_MIN_S=90        # the training pair gets what the other steps leave, at least this
# Each step's limit in seconds; a step's limit is cut to the time left, and a step is skipped when
# less than 20 s are left.
declare -A LIMIT=([env]=10 [wheels]=15 [build]=100 [cuda_tests]=70 [sanitizers]=45 [bench_ops]=40 [bench_train]=35)
CUDA_TESTS=(tests/dw_ops/test_ops_build.py tests/dw_ops/test_ops_cuda.py tests/dw_ops/test_ops_cuda_kernels.py
            tests/dw_ops/test_ops_cuda_async.py)
TRAIN_RUNS=(fcos dw)  # configs/lab/{fcos,dw}_r10_patterns80_adamw.py
EVAL_RESERVE_S=45     # after a training stopped by its deadline: evaluating its last checkpoint

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
if [[ $# -ne 1 ]]; then
  echo "usage: tools/gpu_check.sh [--dry-run] OUT_DIR   (on the device: tools/gpu_check.sh \"\$OUT\")" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1" && OUT_DIR=$(cd "$1" && pwd)
cd "$ROOT"
WORK=$(mktemp -d)
CORES=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
PY=${PY:-python3}
SANITIZER=${SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}
# The interpreter's own commands (ninja, for a parallel build) may live beside it, off the PATH.
PATH=$PATH:$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))')
# The tools import dwdet and dw_ops from this checkout, and the carried wheels from $WORK/site.
export PYTHONPATH=$ROOT:$WORK/site${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
LOG=$OUT_DIR/log.txt
START=$(date +%s)
: >"$LOG"
echo "[]" >"$OUT_DIR/steps.json"

fixed=0
for s in "${!LIMIT[@]}"; do fixed=$((fixed + LIMIT[$s])); done
if ((fixed + TRAIN_MIN_S + SUMMARY_S > BUDGET_S)); then
  echo "plan over budget: step limits ${fixed}s + training ${TRAIN_MIN_S}s + summary ${SUMMARY_S}s > ${BUDGET_S}s" >&2
  exit 2
fi
echo "plan: step limits ${fixed}s + training >= ${TRAIN_MIN_S}s + summary ${SUMMARY_S}s <= budget ${BUDGET_S}s" >>"$LOG"

# step NAME CMD... : run CMD with the step's limit (cut to the time left), log its output and append
# {step, rc, seconds, limit, timed_out, skipped} to steps.json.
step() {
  local name=$1 limit=${LIMIT[$1]:-0}
  shift
  local left=$((BUDGET_S - SUMMARY_S - ($(date +%s) - START)))
  ((limit == 0 || limit > left)) && limit=$left  # 0: what is left (the training)
  ((DRY)) && limit=300  # the limits are the GPU machine's; a dry run checks the plan above instead
  local rc=0 skipped=false begin
  begin=$(date +%s.%N)
  printf '\n===== %s (limit %ss)%s: %s\n' "$name" "$limit" "$( ((DRY)) && echo ', dry run')" "$*" >>"$LOG"
  if ((!DRY && left < 20)); then
    skipped=true rc=-1
    echo "skipped: ${left}s of the ${BUDGET_S}s budget left" >>"$LOG"
  else
    # timeout runs a program, not a function of this script: hand the functions and settings to bash.
    local defs
    defs="$(declare -p PY WORK OUT_DIR DRY CORES SANITIZER CUDA_TESTS TRAIN_RUNS EVAL_RESERVE_S BENCH_OPS_ARGS \
      BENCH_TRAIN_ARGS)
STEP_LIMIT=$limit
$(declare -f env_info install_wheels build cuda_tests sanitizers gpu_args_accepted bench_ops bench_train train_pair)"
    timeout --kill-after=10 "$limit" bash -c "$defs"$'\n''"$@"' step "$@" >>"$LOG" 2>&1
    rc=$?
  fi
  local seconds
  seconds=$(awk -v b="$begin" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - b }')
  "$PY" - "$OUT_DIR/steps.json" "$name" "$rc" "$seconds" "$limit" "$skipped" <<'EOF'
import json, sys
path, name, rc, seconds, limit, skipped = sys.argv[1:]
steps = json.load(open(path))
steps.append({"step": name, "rc": int(rc), "seconds": float(seconds), "limit": int(limit),
              "timed_out": int(rc) in (124, 137), "skipped": skipped == "true"})
json.dump(steps, open(path, "w"), indent=1)
EOF
  printf '%-12s rc=%s %ss\n' "$name" "$rc" "$seconds"
}

env_info() {  # env.txt: the machine, the toolchain, the Python packages (build_info is added by the build)
  {
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); cores: $CORES"
    [[ -f .whl/revision.txt ]] && echo "revision: $(cat .whl/revision.txt)"
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 \
      || echo "nvidia-smi: not available"
    echo "nvcc: $(nvcc --version 2>&1 | grep -i release || echo 'not available'); ninja: $(ninja --version 2>&1 \
      || echo 'not on the PATH: the build compiles one file at a time')"
    echo "compute-sanitizer: $("$SANITIZER" --version 2>&1 | grep -i version || echo 'not available')"
    "$PY" -c "import sys, platform, torch, torchvision
print(f'python {platform.python_version()} ({sys.executable}); torch {torch.__version__} (CUDA {torch.version.cuda}); '
      f'torchvision {torchvision.__version__}')
print('GPU:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none visible to torch')"
  } | tee "$OUT_DIR/env.txt"
  ((DRY)) || "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"
}

install_wheels() {  # the carried wheels into $WORK/site (on PYTHONPATH); pycocotools is required
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl \
      || return 1
    ls .whl/*.whl
  fi
  "$PY" -c "import pycocotools; print('pycocotools', pycocotools.__file__)" || {
    echo "pycocotools is missing: run 'make gpu-wheels' here and carry .whl"; return 1; }
  YOLO_OFFLINE=1 YOLO_CONFIG_DIR=$WORK "$PY" -c "import ultralytics; print('ultralytics', ultralytics.__version__, '(the assigner peer)')" 2>/dev/null \
    || echo "ultralytics: not installed (bench_ops --peer skips it)"
}

build() {  # for the visible GPU's arch only, on every core; then build_info() must report CUDA kernels
  if ((DRY)); then
    "$PY" setup.py --name >/dev/null || return 1  # setup.py runs in this interpreter; the .so was carried
  else
    local arch
    arch=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") || return 1
    FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$CORES "$PY" setup.py build_ext --inplace || return 1
  fi
  "$PY" -c "import sys, dw_ops; info = dw_ops.build_info(); print('build_info:', info)
sys.exit(0 if info['with_cuda'] or $DRY else 'dw_ops._C was built without CUDA kernels')" | tee -a "$OUT_DIR/env.txt"
}

cuda_tests() {  # one process per file, side by side: a device-side assert spoils its own process's CUDA context only
  local f name rc=0
  mkdir -p "$WORK/junit"
  for f in "${CUDA_TESTS[@]}"; do
    name=$(basename "$f" .py)
    "$PY" -m pytest -q -rfEs -p no:cacheprovider "$f" --junitxml="$WORK/junit/$name.xml" >"$WORK/junit/$name.log" 2>&1 &
  done
  wait
  for f in "${CUDA_TESTS[@]}"; do
    name=$(basename "$f" .py)
    echo "----- $f"
    cat "$WORK/junit/$name.log"
  done
  # On the GPU every test must run: a failure, a skip (bar the two-GPU test), no test at all, or a
  # CPU-only build (test_extension_has_cuda_kernels) fails the step.
  "$PY" tools/gpu_check_summary.py --merge-junit "$OUT_DIR/pytest.xml" \
    $(for f in "${CUDA_TESTS[@]}"; do echo "$WORK/junit/$(basename "$f" .py).xml"; done) \
    $( ((DRY)) || echo --no-skips ) || rc=1
  return $rc
}

sanitizers() {  # the three tools side by side, on the project's kernels (dw_ops::kernels) only
  local tool rc=0
  for tool in memcheck racecheck synccheck; do
    if ((DRY)); then
      "$PY" tests/dw_ops/sanitizer_cases.py --device cpu >"$WORK/$tool.log" 2>&1 &
    else
      # Without the caching allocator every tensor is its own allocation, so memcheck sees an access
      # past a tensor's end that would otherwise land inside a larger cached block.
      PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$tool" --kernel-name kns=dw_ops --error-exitcode 1 \
        --print-limit 20 "$PY" tests/dw_ops/sanitizer_cases.py >"$WORK/$tool.log" 2>&1 &
    fi
    eval "pid_$tool=$!"
  done
  for tool in memcheck racecheck synccheck; do
    local pid_var="pid_$tool" code=0
    wait "${!pid_var}" || code=$?
    ((code)) && rc=1
    echo "----- sanitizer $tool: exit $code"
    cat "$WORK/$tool.log"
  done
  return $rc
}

# The benchmarks' command lines on the GPU. A dry run checks that the tools accept them (they stop at
# "no GPU is visible", after their imports and argument checks), then runs them on the CPU at toy sizes.
BENCH_OPS_ARGS=(--device cuda --cases assign crowded dw_loss boundary_sample --gts 100 --min-time 0.2 --peer)
BENCH_TRAIN_ARGS=(--device cuda --warmup 3 --steps 20)

gpu_args_accepted() {  # gpu_args_accepted TOOL ARGS...: in a dry run, the GPU command line gets as far as the GPU
  local out
  out=$("$PY" "$@" 2>&1)
  echo "$out" | tail -n 3
  [[ $out == *"--device cuda: no GPU is visible"* ]]
}

bench_ops() {
  if ((DRY)); then
    gpu_args_accepted tools/bench_ops.py "${BENCH_OPS_ARGS[@]}" --json "$WORK/unused.json" || return 1
    "$PY" tools/bench_ops.py --device cpu --cases assign --gts 10 --min-time 0.01 --no-memory --peer --peer-gts 10 \
      --json "$OUT_DIR/bench_ops.json"
  else
    "$PY" tools/bench_ops.py "${BENCH_OPS_ARGS[@]}" --json "$OUT_DIR/bench_ops.json"
  fi
}

bench_train() {
  if ((DRY)); then
    gpu_args_accepted tools/bench_train.py "${BENCH_TRAIN_ARGS[@]}" --json "$WORK/unused.json" || return 1
    "$PY" tools/bench_train.py --device cpu --models fcos dw --backbone resnet18 --height 64 --width 96 --gts 2 \
      --warmup 0 --steps 2 --json "$OUT_DIR/bench_train.json"
  else
    "$PY" tools/bench_train.py "${BENCH_TRAIN_ARGS[@]}" --json "$OUT_DIR/bench_train.json"
  fi
}

train_pair() {  # FCOS and DW side by side on the GPU; a run its deadline stops is evaluated from last.pth
  # no test split: the check evaluates on val, and every second of generation is taken from training
  local begin=$SECONDS run opts=(data.root="$WORK/patterns80" data.params.num_test=0 train.num_workers=4 eval.num_workers=4
                                train.log_interval=50)
  ((DRY)) && opts+=(data.params.num_train=8 data.params.num_val=4 train.epochs=1 train.batch_size=4
                    train.warmup_iters=1 eval.interval=1 eval.batch_size=4 train.num_workers=0 eval.num_workers=0
                    train.log_interval=1)
  "$PY" -c "import sys, time
from dwdet.config import load_config
from lab.synthetic import ensure_synthetic
cfg = load_config(sys.argv[1], sys.argv[2:])
start = time.time()
ensure_synthetic(cfg.data.root, seed=cfg.data.seed, **cfg.data.params.to_dict())
print(f'patterns80 generated in {time.time() - start:.0f} s')" "configs/lab/dw_r10_patterns80_adamw.py" "${opts[@]}" || return 1
  local train_s=$((STEP_LIMIT - (SECONDS - begin) - EVAL_RESERVE_S))
  echo "training deadline: ${train_s}s"
  for run in "${TRAIN_RUNS[@]}"; do
    OMP_NUM_THREADS=2 timeout -s TERM --kill-after=30 "$train_s" "$PY" tools/train.py \
      "configs/lab/${run}_r10_patterns80_adamw.py" --work-dir "$WORK/train_$run" --opts "${opts[@]}" >"$WORK/train_$run.log" 2>&1 &
    eval "pid_$run=$!"
  done
  local rc=0
  for run in "${TRAIN_RUNS[@]}"; do
    local pid_var="pid_$run" code=0
    wait "${!pid_var}" || code=$?
    echo "----- training $run: exit $code"
    tail -n 5 "$WORK/train_$run.log"
    if ! grep -q '"type": "val"' "$WORK/train_$run/metrics.jsonl" 2>/dev/null; then
      # stopped by the deadline (SIGTERM saves last.pth): the AP of the last checkpoint, side by side
      "$PY" tools/test.py "configs/lab/${run}_r10_patterns80_adamw.py" "$WORK/train_$run/last.pth" --opts "${opts[@]}" \
        >"$WORK/test_$run.log" 2>&1 &
      eval "pid_test_$run=$!"
    fi
  done
  for run in "${TRAIN_RUNS[@]}"; do
    local pid_var="pid_test_$run"
    [[ -n ${!pid_var:-} ]] || continue
    wait "${!pid_var}" || rc=1
    echo "----- evaluation of $run's last checkpoint"
    tail -n 3 "$WORK/test_$run.log"
  done
  "$PY" tools/gpu_check_summary.py --merge-train "$OUT_DIR/train_metrics.jsonl" \
    $(for run in "${TRAIN_RUNS[@]}"; do echo "$run=$WORK/train_$run"; done) || rc=1
  return $rc
}

step env env_info
step wheels install_wheels
step build build
step cuda_tests cuda_tests
step sanitizers sanitizers
step bench_ops bench_ops
step bench_train bench_train
step train train_pair

"$PY" tools/gpu_check_summary.py "$OUT_DIR" $( ((DRY)) && echo --dry-run) >"$OUT_DIR/summary.md" || echo "summary failed"
rm -rf "$WORK"
echo "results in $OUT_DIR ($(($(date +%s) - START))s):"
cat "$OUT_DIR/summary.md"
"$PY" -c "import json, sys; sys.exit(any(s['rc'] != 0 for s in json.load(open(sys.argv[1]))))" "$OUT_DIR/steps.json"
