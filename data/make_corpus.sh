#!/usr/bin/env bash
# Rebuilds data/corpus.txt, the default training corpus: the plain-text licence documents that
# every Debian system ships in /usr/share/common-licenses, each copied verbatim, in a fixed order.
# Usage: data/make_corpus.sh [LICENSE_DIR]   (output is deterministic for the same input files)
set -euo pipefail

src_dir=${1:-/usr/share/common-licenses}
out="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/corpus.txt"
max_bytes=300000

# Licence texts whose own terms permit verbatim copying. Missing ones are skipped; BSD is left
# out because Debian's file is one licence instance (a copyright notice), not a licence document.
names=(GPL-3 GPL-2 GPL-1 LGPL-3 LGPL-2.1 LGPL-2 GFDL-1.3 GFDL-1.2 Apache-2.0 MPL-2.0 MPL-1.1
       Artistic CC0-1.0)

tmp="$out.tmp"
: >"$tmp"
for name in "${names[@]}"; do
  f="$src_dir/$name"
  [[ -f "$f" && ! -L "$f" ]] || { echo "skip $name (not present)" >&2; continue; }
  size=$(($(stat -c %s "$tmp") + $(stat -c %s "$f") + 2))
  if ((size > max_bytes)); then
    echo "skip $name (corpus would exceed $max_bytes bytes)" >&2
    continue
  fi
  [[ -s "$tmp" ]] && printf '\n\n' >>"$tmp"  # documents are separated by two newlines
  cat "$f" >>"$tmp"
  echo "added $name ($(stat -c %s "$f") bytes)" >&2
done
[[ -s "$tmp" ]] || { rm -f "$tmp"; echo "no licence texts found in $src_dir" >&2; exit 1; }
mv "$tmp" "$out"
echo "wrote $out ($(stat -c %s "$out") bytes)" >&2
