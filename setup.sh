#!/usr/bin/env bash
# Installs what is missing (Debian packages, the Python venv with the torch wheel), then
# configures and builds meshtrain in build/: the binary, or with --tests also the tests and
# benchmarks. Safe to run again: each step is skipped when done.
# The venv lives outside the clone (MESHTRAIN_VENV) so fresh clones reuse it.
set -euo pipefail
cd "$(dirname "$0")"

targets=(--target meshtrain)
case "${1:-}" in
  "") ;;
  --tests) targets=() ;;
  *) echo "usage: ./setup.sh [--tests]" >&2; exit 2 ;;
esac

venv="${MESHTRAIN_VENV:-$HOME/.cache/meshtrain/venv}"
build="${MESHTRAIN_BUILD:-build}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages=(g++ cmake ninja-build ccache git libgtest-dev libgmock-dev nlohmann-json3-dev libgloo-dev libpcre2-dev
              pkg-config libcairo2-dev fonts-dejavu-core python3 python3-venv python3-pip)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The venv is rebuilt only when requirements.txt changes.
stamp="$venv/.meshtrain-requirements"
if [ ! -f "$stamp" ] || ! cmp -s requirements.txt "$stamp"; then
  echo "setup: creating $venv (torch wheel, transformers)"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r requirements.txt
  cp requirements.txt "$stamp"
fi

torch_dir=$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/meshtrain/ccache}"
# Hits across clones in other folders, and with the precompiled torch header.
export CCACHE_BASEDIR="$PWD"
export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTORCH_DIR="$torch_dir" \
    -DMESHTRAIN_PYTHON="$venv/bin/python" >/dev/null
fi
cmake --build "$build" "${targets[@]}"
