#!/usr/bin/env bash
# Builds the libFuzzer targets of bench/fuzz (clang, ASan, UBSan) in build-fuzz/ and runs each
# for SECONDS (default 120), one after the other, from seeds taken from the repository; prints
# executions, executions/s and findings per target. Crash inputs land in build-fuzz/findings/.
#   bench/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-120}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors checkpoint_index npy llmc_bin config tp_plan)
python=${MESHTRAIN_PYTHON:-$HOME/.cache/meshtrain/venv/bin/python}
torch_dir=$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
build=$root/build-fuzz
cmake -S "$root/bench/fuzz" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DTORCH_DIR="$torch_dir" > /dev/null
cmake --build "$build"

# Seeds: valid files of each kind from the repository, so the fuzzer starts past the first checks.
seeds=$build/seeds
rm -rf "$seeds"
mkdir -p "$seeds"/{safetensors,checkpoint_index,npy,llmc_bin,config,tp_plan} "$build/findings"
cp "$root"/tests/golden/llama/model.safetensors "$seeds/safetensors/"
printf '{"metadata": {"total_size": 40}, "weight_map": {"a": "model-00001-of-00001.safetensors", "b": "model-00001-of-00001.safetensors"}}' \
  > "$seeds/checkpoint_index/index.json"
"$python" - "$seeds" <<'PY'
import sys, numpy as np
d = sys.argv[1]
np.save(f"{d}/npy/u2.npy", np.arange(40, dtype=np.uint16))
np.save(f"{d}/npy/i8.npy", np.arange(12, dtype=np.int64).reshape(3, 4))
header = np.zeros(256, dtype=np.int32); header[0], header[1], header[2] = 20240520, 1, 40
with open(f"{d}/llmc_bin/tokens.bin", "wb") as f:
    f.write(header.tobytes()); f.write(np.arange(40, dtype=np.uint16).tobytes())
PY
for c in "$root"/configs/*/config.json "$root"/tests/golden/*/config.json; do cp "$c" "$seeds/config/$(basename "$(dirname "$c")").json"; done
printf '{"layers.*.self_attn.q_proj": "colwise", "layers.*.self_attn.o_proj": "rowwise", "embed_tokens": "embedding"}' \
  > "$seeds/tp_plan/plan.json"

printf '%-18s %12s %10s %8s\n' target executions exec/s findings
for t in "${targets[@]}"; do
  corpus=$build/corpus/$t
  mkdir -p "$corpus"
  log=$build/fuzz_$t.log
  set +e
  ASAN_OPTIONS=detect_leaks=1 "$build/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$build/findings/$t-" "$corpus" "$seeds/$t" > "$log" 2>&1
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  found=$(ls "$build/findings" | grep -c "^$t-" || true)
  printf '%-18s %12s %10s %8s\n' "$t" "$runs" "$rate" "$found"
done
