#!/usr/bin/env bash
# Configures and builds folo (optimized) into build/; prints the binary path.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
echo "$PWD/build/folo"
