#!/usr/bin/env bash
# Builds folo and runs every test, from a fresh clone:
#   1. installs the build dependencies and the test oracles (.venv);
#   2. optimized build, the whole suite (C unit tests and the differential
#      tests against Hugging Face tokenizers and transformers);
#   3. AddressSanitizer + UndefinedBehaviorSanitizer build, the suite less the
#      slow 0.6B-shaped model tests;
#   4. the safetensors header fuzzer for a bounded time (FOLO_FUZZ_SECONDS, default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup.sh --test
jobs=$(nproc)

echo "== optimized build and tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs" >/dev/null
(cd build && ctest --output-on-failure -LE gpu)

echo "== sanitizer build (ASan + UBSan) and tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFOLO_SANITIZE=ON -DFOLO_CUDA=OFF >/dev/null
cmake --build build-asan -j"$jobs" >/dev/null
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -LE slow)

echo "== fuzzing the safetensors header parser"
scripts/fuzz.sh "${FOLO_FUZZ_SECONDS:-60}"

echo "== all tests passed in $(( $(date +%s) - start )) s"
