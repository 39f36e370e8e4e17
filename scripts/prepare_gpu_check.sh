#!/usr/bin/env bash
# Collects into gpu_deps/ (ignored by git) the headers and static libraries of the Debian -dev
# packages the build needs, for a machine that has torch, CMake, ninja and g++ but not these
# packages (scripts/gpu_check.sh configures with -DMESHTRAIN_DEPS=gpu_deps). Run it here, where
# setup.sh installed them; gpu_deps/ keeps Debian's /usr layout so the packages' CMake files work.
#   GoogleTest, GoogleMock  headers, static libraries, CMake package files
#   nlohmann-json           headers, CMake package files
#   gloo                    headers only (libtorch_cpu carries gloo itself)
#   PCRE2                   pcre2.h and the static libpcre2-8.a: no shared library to find at run time
# Not collected: cairo (the GPU check builds with -DMESHTRAIN_PLOT=OFF) and pkg-config (CMake
# finds PCRE2 by name when pkg-config or its .pc file is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

out=gpu_deps
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)

for p in libgtest-dev libgmock-dev nlohmann-json3-dev libgloo-dev libpcre2-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
    { echo "prepare_gpu_check: $p is not installed (run ./setup.sh first)" >&2; exit 1; }
done

rm -rf "$out"
# Copies the files of package $1 whose paths match the extended regex $2, keeping their paths.
take() {
  dpkg -L "$1" | grep -E "$2" | while read -r f; do
    if [ ! -f "$f" ] || [ -L "$f" ]; then continue; fi
    mkdir -p "$out/$(dirname "${f#/usr/}")"
    cp -p "$f" "$out/${f#/usr/}"
  done
}
take libgtest-dev "^/usr/include/gtest/.*\.h$|^/usr/lib/$arch/(libgtest(_main)?\.a|cmake/GTest/GTest.*\.cmake)$"
take libgmock-dev "^/usr/include/gmock/.*\.h$|^/usr/lib/$arch/(libgmock(_main)?\.a|cmake/GTest/GMock.*\.cmake)$"
take nlohmann-json3-dev "^/usr/include/nlohmann/.*\.hpp$|^/usr/share/cmake/nlohmann_json/.*\.cmake$"
take libgloo-dev "^/usr/include/gloo/.*\.h$"
take libpcre2-dev "^/usr/include/pcre2\.h$|^/usr/lib/$arch/libpcre2-8\.a$"

# Where each package comes from, for the check's summary.
dpkg-query -W -f='${Package} ${Version}\n' libgtest-dev libgmock-dev nlohmann-json3-dev libgloo-dev \
  libpcre2-dev >"$out/VERSIONS"
echo "prepare_gpu_check: $(find "$out" -type f | wc -l) files, $(du -sh "$out" | cut -f1) in $out/"

# The device machine takes the working tree plus carried folders up to 64 MiB.
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
deps_bytes=$(du -sb "$out" | cut -f1)
total_mib=$(( (tree_bytes + deps_bytes) / 1048576 ))
echo "prepare_gpu_check: working tree $((tree_bytes / 1024)) KiB + $out $((deps_bytes / 1024)) KiB = $total_mib MiB of 64"
[ "$total_mib" -lt 64 ] || { echo "prepare_gpu_check: too large to carry" >&2; exit 1; }
