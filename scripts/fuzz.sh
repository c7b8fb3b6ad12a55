#!/usr/bin/env bash
# Fuzzes the safetensors header parser with libFuzzer for a bounded time.
#
#   scripts/fuzz.sh [SECONDS]     (default 60)
#
# Configures a clang build in build-fuzz/ (FOLO_FUZZ=ON), builds only the
# fuzz target, and runs it on a scratch copy of fuzz/corpus/safetensors (new
# inputs stay out of the repository). Exits non-zero on a crash, leak,
# sanitizer report or timeout; the input that triggered it is left in
# build-fuzz/artifacts/.
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

cmake -S "$root" -B "$build" -DFOLO_FUZZ=ON -DFOLO_CUDA=OFF -DCMAKE_C_COMPILER="$cc" \
      -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$build" --target fuzz_safetensors -j2

corpus="$build/corpus/safetensors"
mkdir -p "$corpus" "$build/artifacts"
cp -n "$root"/fuzz/corpus/safetensors/* "$corpus"/

echo "fuzzing the safetensors parser for ${seconds}s (log: $build/fuzz.log)"
status=0
"$build/fuzz/fuzz_safetensors" "$corpus" \
  -dict="$root/fuzz/safetensors.dict" \
  -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$build/artifacts/" -print_final_stats=1 >"$build/fuzz.log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
  tail -n 60 "$build/fuzz.log"
  echo "scripts/fuzz.sh: the fuzzer failed (exit $status); the input is in $build/artifacts/" >&2
  exit "$status"
fi
grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' "$build/fuzz.log"
