#!/usr/bin/env bash
# The main job, from a fresh clone: install the build dependencies, build
# folo, and stream a chat answer from the default model (a synthetic
# Qwen3-0.6B-shaped checkpoint, created on first use; nothing is downloaded).
# Arguments replace the default prompt; `folo run --help` lists the options.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
bin=$(scripts/build.sh)
if [ $# -eq 0 ]; then
  set -- --chat -n 64 "Explain in two sentences why paged KV caches help LLM serving."
fi
exec "$bin" run "$@"
