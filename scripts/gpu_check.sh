#!/usr/bin/env bash
# The GPU check: on a machine with one NVIDIA GPU, python3 with torch (CUDA), transformers,
# CMake, ninja and g++, but none of the Debian -dev packages (gpu_deps/ from
# scripts/prepare_gpu_check.sh carries them), run from the repository root:
#   1. versions, nvidia-smi
#   2. configure build-gpu/ against that python's torch, -DMESHTRAIN_DEPS=gpu_deps
#   3. build meshtrain and test_cuda (when tests/cuda/ exists)
#   4. ctest -L cuda
#   5. bench/gpu_throughput.py: meshtrain against HF on a 1B-shaped model
# and write $OUT/summary.md, build.log (its tail), ctest.log, bench.log, bench.md, bench.json.
# Every phase has a time limit and all of them fit in GPU_CHECK_BUDGET_S (default 480 s).
# GPU_CHECK_BUILD names the build folder (default build-gpu), GPU_CHECK_CMAKE_ARGS adds
# configure flags (after the script's own, so they override them).
#
#   scripts/gpu_check.sh [--venv] [--no-deps] [--cpu-smoke]
#     --venv       use $MESHTRAIN_VENV (default ~/.cache/meshtrain/venv) instead of python3
#     --no-deps    configure with the system's packages, not gpu_deps/
#     --cpu-smoke  where there is no GPU, run the benchmark's CPU smoke test instead of skipping it
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
root=$PWD

python=python3
use_deps=1
deps_flag=()
cpu_smoke=0
for arg in "$@"; do
  case "$arg" in
    --venv) python="${MESHTRAIN_VENV:-$HOME/.cache/meshtrain/venv}/bin/python" ;;
    --no-deps) use_deps=0 ;;
    --cpu-smoke) cpu_smoke=1 ;;
    *) echo "usage: scripts/gpu_check.sh [--venv] [--no-deps] [--cpu-smoke]" >&2; exit 2 ;;
  esac
done

out="${OUT:-/tmp/gpu_check}"
build="${GPU_CHECK_BUILD:-build-gpu}"
budget="${GPU_CHECK_BUDGET_S:-480}"
mkdir -p "$out"
summary="$out/summary.md"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
t0=$(date +%s)
export PYTHONUNBUFFERED=1

# Seconds left for phase limits: the budget minus what has run minus $1 kept for later phases.
left() { echo $(( budget - ($(date +%s) - t0) - ${1:-0} )); }
limit() {  # cap, reserve -> the smaller of cap and what is left after the reserve
  local l; l=$(left "$2")
  [ "$l" -lt "$1" ] && echo "$l" || echo "$1"
}
phases=()  # "name|status|seconds"
skipped=()
run_phase() {  # name, limit seconds, log file, command...
  local name=$1 lim=$2 log=$3; shift 3
  if [ "$lim" -lt 10 ]; then
    phases+=("$name|skipped: no time left|0"); skipped+=("$name (no time left)")
    echo "== $name: skipped, no time left" | tee -a "$log"
    return 124
  fi
  echo "== $name (limit ${lim} s) at $(date -u +%H:%M:%S)" | tee -a "$log"
  local s; s=$(date +%s)
  timeout --kill-after=10 "$lim" "$@" >>"$log" 2>&1
  local rc=$?
  local took=$(( $(date +%s) - s ))
  local status="ok"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="timed out after ${lim} s"
  elif [ $rc -ne 0 ]; then status="failed (exit $rc)"; fi
  phases+=("$name|$status|$took")
  echo "== $name: $status, ${took} s" | tee -a "$log"
  return $rc
}

# ----------------------------------------------------------------------------- 1. versions
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git status --porcelain 2>/dev/null | grep -q . && echo ' (with local changes)')"
  echo "g++: $(g++ --version 2>/dev/null | head -1)"
  echo "cmake: $(cmake --version 2>/dev/null | head -1)"
  echo "ninja: $(ninja --version 2>/dev/null || echo missing)"
  echo "nvcc: $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo missing)"
  echo "python: $python ($("$python" -c 'import sys; print(sys.version.split()[0])' 2>&1))"
  "$python" -c '
import torch, transformers
print("torch:", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "devices", torch.cuda.device_count())
print("transformers:", transformers.__version__)' 2>&1
  if command -v nvidia-smi >/dev/null; then
    echo "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit \
      --format=csv,noheader 2>&1 | head -1)"
  else
    echo "nvidia-smi: not found"
  fi
} >"$work/versions.txt" 2>&1
cat "$work/versions.txt"

torch_dir=$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)
have_gpu=0
"$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && have_gpu=1

# ----------------------------------------------------------------------------- 2-3. build
build_log="$work/build.log"
: >"$build_log"
built=0
if [ -z "$torch_dir" ]; then
  phases+=("configure|failed: $python cannot import torch|0")
else
  if [ $use_deps = 1 ]; then
    if [ -d gpu_deps ]; then
      deps_flag=(-DMESHTRAIN_DEPS="$root/gpu_deps")
    else
      echo "gpu_check: no gpu_deps/ (run scripts/prepare_gpu_check.sh and carry it); trying the system's packages" |
        tee -a "$build_log"
    fi
  fi
  # No cairo there: `meshtrain plot` is left out.
  if run_phase configure "$(limit 90 360)" "$build_log" \
      cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTORCH_DIR="$torch_dir" \
        -DMESHTRAIN_PYTHON="$(command -v "$python")" -DMESHTRAIN_PLOT=OFF "${deps_flag[@]}" \
        ${GPU_CHECK_CMAKE_ARGS:-}; then  # word-split on purpose: several flags
    targets=(meshtrain)
    # tests/cuda/*.cpp become test_cuda (tests/CMakeLists.txt makes one binary per folder).
    if ninja -C "$build" -t targets all 2>/dev/null | grep -q '^test_cuda:'; then
      targets+=(test_cuda)
    else
      skipped+=("test_cuda (no tests/cuda/ in this tree)")
    fi
    # The build gets what is left but 150 s, kept for the tests and the benchmark.
    run_phase "build ${targets[*]}" "$(limit 360 150)" "$build_log" \
      cmake --build "$build" --target "${targets[@]}" -- -j "$(nproc)" && built=1
  fi
fi
{ echo "(last 300 lines)"; tail -n 300 "$build_log"; } >"$out/build.log"

# ----------------------------------------------------------------------------- 4. tests
ctest_log="$out/ctest.log"
: >"$ctest_log"
if [ $built = 1 ]; then
  if [ $have_gpu = 0 ]; then
    echo "gpu_check: no GPU visible; the cuda tests run anyway and should skip or fail clearly" | tee -a "$ctest_log"
  fi
  run_phase "ctest -L cuda" "$(limit 120 100)" "$ctest_log" \
    ctest --test-dir "$build" -L cuda --output-on-failure --timeout 100
else
  skipped+=("ctest -L cuda (build failed)")
fi

# ----------------------------------------------------------------------------- 5. benchmark
bench_log="$out/bench.log"
: >"$bench_log"
bench_args=(--meshtrain "$build/meshtrain" --json "$out/bench.json" --markdown "$out/bench.md" --log "$bench_log")
if [ $built = 0 ]; then
  skipped+=("benchmark (build failed)")
elif [ $have_gpu = 0 ] && [ $cpu_smoke = 0 ]; then
  skipped+=("benchmark (no GPU; --cpu-smoke runs its CPU smoke test)")
else
  [ $have_gpu = 0 ] && bench_args+=(--cpu-smoke)
  bench_limit=$(limit 240 10)
  bench_args+=(--meshtrain-timeout $(( bench_limit * 2 / 3 )))
  run_phase benchmark "$bench_limit" "$bench_log" "$python" bench/gpu_throughput.py "${bench_args[@]}"
fi

# ----------------------------------------------------------------------------- summary
{
  echo "# GPU check"
  echo
  echo '```'
  cat "$work/versions.txt"
  echo "torch dir: ${torch_dir:-?}"
  echo "deps: $([ ${#deps_flag[@]} -gt 0 ] && echo "gpu_deps/ ($(tr '\n' ';' <gpu_deps/VERSIONS 2>/dev/null))" || echo "the system's")"
  if [ -x "$build/meshtrain" ]; then
    echo "meshtrain links: $(ldd "$build/meshtrain" 2>/dev/null | awk '/torch|c10|pcre|cairo|nccl|cudart/ {print $1}' | tr '\n' ' ')"
  fi
  echo '```'
  echo
  echo "| phase | status | seconds |"
  echo "| --- | --- | --- |"
  for p in "${phases[@]}"; do echo "| ${p//|/ | } |"; done
  echo
  echo "Total $(( $(date +%s) - t0 )) s of a ${budget} s budget."
  if [ ${#skipped[@]} -gt 0 ]; then
    echo
    list=$(printf '%s; ' "${skipped[@]}")
    echo "Skipped: ${list%; }."
  fi
  echo
  echo "## Tests (ctest -L cuda)"
  echo
  echo '```'
  if [ -s "$ctest_log" ]; then
    grep -E "tests passed|No tests were found|\*\*\*Failed|\*\*\*Timeout|\*\*\*Exception|Not Run|\(Skipped\)|Total Test time|^== " \
      "$ctest_log" | tail -n 40
  else
    echo "not run"
  fi
  echo '```'
  echo
  echo "## Benchmark"
  echo
  if [ -s "$out/bench.md" ]; then cat "$out/bench.md"; else echo "no result (see bench.log)"; fi
  if ! [ -s "$out/bench.md" ] && [ -s "$bench_log" ]; then
    echo; echo '```'; tail -n 20 "$bench_log"; echo '```'
  fi
} >"$summary"
cat "$summary"
# The exit status says whether every phase that ran passed.
for p in "${phases[@]}"; do
  case "$p" in *"|ok|"*) ;; *) exit 1 ;; esac
done
exit 0
