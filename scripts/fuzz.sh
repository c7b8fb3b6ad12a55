#!/usr/bin/env bash
# Fuzzes every libFuzzer target for a bounded time in all.
#
#   scripts/fuzz.sh [SECONDS]     (default 60, split evenly between the targets)
#
# Targets: fuzz_safetensors (the safetensors header parser) and fuzz_openai
# (the server's request parsing and reasoning parser). Configures a clang
# build in build-fuzz/ (FOLO_FUZZ=ON), builds only the fuzz targets, and runs
# each on a scratch copy of its fuzz/corpus/NAME directory (new inputs stay
# out of the repository). Exits non-zero on a crash, leak, sanitizer report
# or timeout; the input that triggered it is left in build-fuzz/artifacts/.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS]" >&2
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-fuzz"
cc="${CC:-$(command -v clang || command -v clang-14 || true)}"
if [ -z "$cc" ]; then
  echo "scripts/fuzz.sh: clang is required" >&2
  exit 1
fi

# name  corpus  dictionary  max input bytes
targets=(
  "safetensors safetensors safetensors.dict 4096"
  "openai openai openai.dict 8192"
)
share=$(( seconds / ${#targets[@]} ))
[ "$share" -ge 1 ] || share=1

cmake -S "$root" -B "$build" -DFOLO_FUZZ=ON -DFOLO_CUDA=OFF -DCMAKE_C_COMPILER="$cc" \
      -DCMAKE_BUILD_TYPE=Debug >/dev/null
for t in "${targets[@]}"; do
  read -r name _ _ _ <<<"$t"
  cmake --build "$build" --target "fuzz_$name" -j2
done
mkdir -p "$build/artifacts"

for t in "${targets[@]}"; do
  read -r name corpus dict max_len <<<"$t"
  work="$build/corpus/$corpus"
  log="$build/fuzz_$name.log"
  mkdir -p "$work"
  cp -n "$root"/fuzz/corpus/"$corpus"/* "$work"/
  echo "fuzzing fuzz_$name for ${share}s (log: $log)"
  status=0
  "$build/fuzz/fuzz_$name" "$work" \
    -dict="$root/fuzz/$dict" \
    -max_total_time="$share" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$build/artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log"
    echo "scripts/fuzz.sh: fuzz_$name failed (exit $status); the input is in $build/artifacts/" >&2
    exit "$status"
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' "$log"
done
