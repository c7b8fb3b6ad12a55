#!/usr/bin/env bash
# Installs what folo needs on a fresh Debian 12 machine, and nothing twice:
#   - build dependencies from Debian (compiler, CMake, PCRE2, utf8proc, Jansson,
#     libmicrohttpd, libcurl, LAPACKE with OpenBLAS as the BLAS and LAPACK);
#   - with --test: the test oracles from PyPI (Hugging Face tokenizers and
#     transformers, PyTorch on the CPU, pytest) in the git-ignored .venv/.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

apt_packages=(build-essential cmake pkg-config libpcre2-dev libutf8proc-dev libjansson-dev
              libmicrohttpd-dev libcurl4-openssl-dev liblapacke-dev libopenblas-dev
              python3 python3-venv)
[ $want_test = 1 ] && apt_packages+=(clang libclang-rt-14-dev)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ $want_test = 1 ]; then
  req=tests/requirements.txt
  stamp=.venv/.requirements.sha256
  sum=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
    echo "setup: creating .venv with the test oracles (tokenizers, transformers, torch)"
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -r "$req"
    echo "$sum" > "$stamp"
  fi
fi
