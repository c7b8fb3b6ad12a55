#!/usr/bin/env bash
# The one call to make on a GPU machine: builds folo with the CUDA backend,
# checks it, and benchmarks it against transformers in the same run.
#
#   scripts/gpu-check.sh RESULTS_DIR      on the GPU machine
#   scripts/gpu-check.sh --fetch-deps     here, before: downloads the .debs of
#                                         folo's build dependencies (pkgconf,
#                                         PCRE2, utf8proc, Jansson) into
#                                         build-gpu-deps/, to carry along where
#                                         the GPU machine lacks them
#
# Steps, each logged to RESULTS_DIR/<step>.log; a failed step is reported and
# the script goes on to every step that does not depend on it:
#   1. nvidia-smi;
#   2. build (Release, CUDA on, the GPU's own architecture unless
#      FOLO_CUDA_ARCHS says otherwise) in build-gpu/;
#   3. synthetic models made there (weights don't travel): tiny bf16 and
#      Qwen3-0.6B-shaped bf16;
#   4. the gpu-labelled tests (tests/gpu/test_cuda_backend.c);
#   5. compute-sanitizer memcheck on the same test;
#   6. `folo logits --device cuda` against transformers on the GPU
#      (tests/gpu/compare_transformers.py), tiny and 0.6B;
#   7. benchmark on the 0.6B model: folo's backend (tests/gpu/bench_backend.c)
#      and `folo logits --chunk 1` end to end, transformers' generate
#      (tests/gpu/bench_transformers.py): TTFT of 128/512/2048-token prompts
#      and single-stream decode tokens/s, each against its floor (decode:
#      weight bytes / 3.35 TB/s; prefill: FLOPs / 800 TFLOP/s);
#   8. a short table, printed last; results.json holds every number.
#
# The whole run takes about 6-9 minutes on an H100 with 16 cores (device
# calls are capped at 10). To split it over two calls, name steps to leave
# out in FOLO_GPU_SKIP, e.g. FOLO_GPU_SKIP="memcheck compare-0.6b"; the
# build and models are reused when the machine is still warm. Exit status 0
# only when every step that ran passed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
deps_dir=build-gpu-deps

if [ "${1:-}" = "--fetch-deps" ]; then
  mkdir -p "$deps_dir" && cd "$deps_dir" &&
    apt-get download pkgconf pkgconf-bin libpkgconf3 libpcre2-dev libpcre2-8-0 \
      libutf8proc-dev libutf8proc2 libjansson-dev libjansson4 && ls -1 "$root/$deps_dir"
  exit
fi
if [ $# -ne 1 ]; then
  echo "usage: scripts/gpu-check.sh RESULTS_DIR | --fetch-deps" >&2
  exit 2
fi
mkdir -p "$1" && results=$(cd "$1" && pwd)
build=$root/build-gpu
models=$build/gpu-models
steps_file=$results/steps.tsv
: >"$steps_file"
jobs=$(nproc)

# step NAME COMMAND...: runs it with output to NAME.log, records ok/FAILED;
# a step named in $FOLO_GPU_SKIP (space-separated) is recorded as skipped.
step() {
  local name=$1
  shift
  case " ${FOLO_GPU_SKIP:-} " in
    *" $name "*)
      skip "$name" "FOLO_GPU_SKIP"
      return 1
      ;;
  esac
  local start=$SECONDS
  echo "== $name"
  "$@" >"$results/$name.log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then
    printf '%s\tok\t%ds\n' "$name" $((SECONDS - start)) >>"$steps_file"
    return 0
  fi
  printf '%s\tFAILED (exit %d, %s.log)\t%ds\n' "$name" "$rc" "$name" $((SECONDS - start)) >>"$steps_file"
  echo "-- $name failed (exit $rc); the end of $name.log:"
  tail -n 25 "$results/$name.log"
  return "$rc"
}
skip() {
  printf '%s\tskipped (%s)\t-\n' "$1" "$2" >>"$steps_file"
  echo "== $1: skipped ($2)"
}

# ---- 1. the machine -------------------------------------------------------------
step nvidia-smi nvidia-smi
cat "$results/nvidia-smi.log"
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
case "$cap" in
  90) arch=90a ;;
  "") arch="80;89;90a" ;;
  *) arch=$cap ;;
esac
arch=${FOLO_CUDA_ARCHS:-$arch}

# ---- 2. build ---------------------------------------------------------------------
# Build dependencies the image may lack come from carried .debs, unpacked
# into a private root that pkg-config and the loader are pointed at.
cmake_extra=()
if ! pkg-config --exists libpcre2-8 libutf8proc jansson 2>/dev/null && [ -d "$deps_dir" ]; then
  echo "== unpacking build dependencies from $deps_dir"
  sysroot=$root/$deps_dir/root
  for deb in "$deps_dir"/*.deb; do dpkg -x "$deb" "$sysroot"; done
  libdir=$sysroot/usr/lib/x86_64-linux-gnu
  export LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export PKG_CONFIG_PATH=$libdir/pkgconfig:$sysroot/usr/share/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$sysroot
  export PATH=$sysroot/usr/bin:$PATH
  cmake_extra+=("-DPKG_CONFIG_EXECUTABLE=$sysroot/usr/bin/pkgconf")
fi
build_ok=0
configure_and_build() {
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFOLO_CUDA=ON \
    "-DFOLO_CUDA_ARCHS=$arch" "${cmake_extra[@]}" &&
    cmake --build "$build" -j"$jobs"
}
step build configure_and_build && build_ok=1
if [ $build_ok = 1 ] && ! grep -q "folo: CUDA backend ON" "$results/build.log"; then
  echo "-- build: the CUDA backend was not configured (see build.log)"
  build_ok=0
fi

# ---- 3. models -----------------------------------------------------------------------
tiny=$models/tiny-bf16
big=$models/qwen3-0.6b-bf16
models_ok=0
make_models() {
  "$build/folo" make-model --preset tiny --dtype bf16 --seed 7 --out "$tiny" &&
    "$build/folo" make-model --preset qwen3-0.6b --dtype bf16 --seed 0 --out "$big"
}
if [ $build_ok = 1 ]; then
  step models make_models && models_ok=1
else
  skip models "no build"
fi

# ---- 4-5. tests --------------------------------------------------------------------------
test_env=(FOLO_TEST_MODEL="$build/test-models/tiny-f32" FOLO_TOKENIZER_DIR="$root/models/qwen3-tokenizer")
gpu_tests() { # the gpu-labelled tests, verbose for their numbers; a skip is a failure here
  local out rc
  out=$(cd "$build" && ctest -L gpu --verbose --timeout 300 2>&1)
  rc=$?
  echo "$out"
  [ $rc -eq 0 ] && ! grep -q "did not run" <<<"$out"
}
if [ $build_ok = 1 ]; then
  step gpu-tests gpu_tests
  grep -E "rel L2|argmax|passed|failed|CHECK|device:" "$results/gpu-tests.log" | head -n 60
  if command -v compute-sanitizer >/dev/null; then
    step memcheck env "${test_env[@]}" timeout 300 compute-sanitizer --tool memcheck \
      --error-exitcode 3 "$build/tests/test_cuda_backend"
    tail -n 3 "$results/memcheck.log"
  else
    skip memcheck "compute-sanitizer not on PATH"
  fi
else
  skip gpu-tests "no build"
  skip memcheck "no build"
fi

# ---- 6. against transformers ---------------------------------------------------------------
if [ $models_ok = 1 ]; then
  step compare-tiny timeout 300 python3 tests/gpu/compare_transformers.py --folo "$build/folo" --model "$tiny" \
    --out "$results/compare_tiny.json" --lengths 1,7,64,300
  grep -E "rel L2|compare_transformers" "$results/compare-tiny.log"
  step compare-0.6b timeout 300 python3 tests/gpu/compare_transformers.py --folo "$build/folo" --model "$big" \
    --out "$results/compare_0.6b.json" --lengths 1,64,300
  grep -E "rel L2|compare_transformers" "$results/compare-0.6b.log"
else
  skip compare-tiny "no models"
  skip compare-0.6b "no models"
fi

# ---- 7. benchmark ---------------------------------------------------------------------------------
cli_decode() { # end to end through the CLI: 1 + 256 forwards of one token
  local ids
  ids=$(python3 -c "import random; random.seed(2); print(','.join(str(random.randrange(151643)) for _ in range(257)))")
  FOLO_LOG_LEVEL=info "$build/folo" logits -m "$big" --device cuda --chunk 1 --ids "$ids" --out /dev/null
}
if [ $models_ok = 1 ]; then
  step bench-folo bash -c "'$build/tests/bench_backend' '$big' cuda 128,512,2048 256 5 >'$results/bench_folo.json'"
  step bench-folo-cli cli_decode
  step bench-transformers timeout 300 python3 tests/gpu/bench_transformers.py --model "$big" \
    --out "$results/bench_transformers.json" --lengths 128,512,2048 --decode-steps 256 --repeats 5
else
  skip bench-folo "no models"
  skip bench-folo-cli "no models"
  skip bench-transformers "no models"
fi

# ---- 8. the table -----------------------------------------------------------------------------------
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
python3 - "$results" "$big" "${gpu_name:-unknown GPU}" <<'EOF'
import json, os, re, sys

results, model, gpu = sys.argv[1], sys.argv[2], sys.argv[3]
PEAK_BYTES_S, PEAK_FLOP_S = 3.35e12, 800e12

def load(name):
    try:
        with open(os.path.join(results, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

steps = [line.rstrip("\n").split("\t") for line in open(os.path.join(results, "steps.tsv"))]
out = {"gpu": gpu, "steps": {s[0]: s[1] for s in steps}}
for name in ("compare_tiny.json", "compare_0.6b.json", "bench_folo.json", "bench_transformers.json"):
    out[name[:-5]] = load(name)

rows = []
cfg = None
try:
    cfg = json.load(open(os.path.join(model, "config.json")))
except (OSError, ValueError):
    pass
if cfg:
    H, I, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    Hq, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim", H // Hq)
    layer_params = H * (Hq + 2 * Hkv) * D + Hq * D * H + 3 * H * I
    decode_floor_s = 2 * (L * layer_params + V * H) / PEAK_BYTES_S
    def prefill_floor_s(n):
        flops = 2 * n * L * layer_params + 2 * n * n * Hq * D * L + 2 * V * H
        return flops / PEAK_FLOP_S
    folo, hf = out["bench_folo"] or {}, out["bench_transformers"] or {}
    cli = None
    try:
        m = re.search(r"\(([\d.]+) tokens/s\)", open(os.path.join(results, "bench-folo-cli.log")).read())
        cli = float(m.group(1)) if m else None
    except OSError:
        pass
    def by_len(d, n):
        return next((p["median_ms"] for p in d.get("prefill", []) if p["tokens"] == n), None)
    for n in (128, 512, 2048):
        rows.append((f"TTFT {n} tokens (ms)", by_len(folo, n), by_len(hf, n), 1e3 * prefill_floor_s(n), "ms"))
    fd, hd = folo.get("decode"), hf.get("decode")
    rows.append(("decode batch 1 (tokens/s)", fd and fd["tokens_per_s"], hd and hd["tokens_per_s"],
                 1.0 / decode_floor_s, "tok/s"))
    rows.append(("decode via folo logits --chunk 1", cli, None, 1.0 / decode_floor_s, "tok/s"))
    out["floors"] = {"decode_ms": 1e3 * decode_floor_s,
                     "prefill_ms": {n: 1e3 * prefill_floor_s(n) for n in (128, 512, 2048)}}
out["table"] = rows
with open(os.path.join(results, "results.json"), "w") as f:
    json.dump(out, f, indent=2)

def fmt(x):
    return "-" if x is None else f"{x:.4g}"
def frac(x, floor, unit):
    if x is None:
        return "-"
    return f"{(floor / x if unit == 'ms' else x / floor):.2f}"

print("\n==== gpu-check summary (results in %s)" % results)
for s in steps:
    print(f"  {s[0]:<20} {s[1]:<40} {s[2]}")
cmp = [(k, out[k]) for k in ("compare_tiny", "compare_0.6b") if out[k]]
for k, c in cmp:
    worst = max(r["transformers_f32"]["max_rel_l2"] for r in c["lengths"].values())
    worst_bf = max(r["transformers_bf16"]["max_rel_l2"] for r in c["lengths"].values())
    agree = min(r["transformers_f32"]["argmax_agree"] for r in c["lengths"].values())
    print(f"  {k:<20} max rel L2 vs f32 {worst:.3g}, vs bf16 {worst_bf:.3g}, argmax agree >= {100 * agree:.0f}%")
if rows:
    print(f"\n  {'0.6B bf16, ' + gpu:<34.34} {'folo':>9} {'transf.':>9} {'floor':>9} {'folo/fl':>8} {'hf/fl':>8}")
    for name, f, h, floor, unit in rows:
        print(f"  {name:<34} {fmt(f):>9} {fmt(h):>9} {fmt(floor):>9} {frac(f, floor, unit):>8} {frac(h, floor, unit):>8}")
    print("  (x/fl = fraction of the floor reached: floor time / measured time; 1.0 is the speed of light)")
EOF
! grep -q FAILED "$steps_file"
