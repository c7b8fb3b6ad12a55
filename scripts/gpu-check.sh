#!/usr/bin/env bash
# The one call to make on a GPU machine: builds folo with the CUDA backend,
# checks it, and benchmarks it against transformers in the same run.
#
#   scripts/gpu-check.sh --prebuild       here, before: builds build-gpu/ for
#                                         sm_90a with the libraries folo links
#                                         (PCRE2, utf8proc, Jansson, libmicrohttpd,
#                                         libcurl and theirs) copied into
#                                         build-gpu/libs, object files dropped, so
#                                         that it fits the 64 MiB a device call
#                                         carries; carry build-gpu
#   scripts/gpu-check.sh RESULTS_DIR      on the GPU machine: uses a carried
#                                         build-gpu/ when there is one (its glibc
#                                         must be no newer than the machine's;
#                                         Debian 12's 2.36 is), else builds there
#                                         (the machine then needs those -dev
#                                         packages)
#
# Steps, each logged to RESULTS_DIR/<step>.log; a failed step is reported and
# the script goes on to every step that does not depend on it:
#   1. nvidia-smi;
#   2. build (Release, CUDA on, the GPU's own architecture unless
#      FOLO_CUDA_ARCHS says otherwise) in build-gpu/, or the carried one;
#   3. synthetic models made there (weights don't travel): tiny bf16 and
#      Qwen3-0.6B-shaped bf16, and GPTQ 4-bit checkpoints of both by
#      `folo quantize --method rtn` (round-to-nearest needs no LAPACK, which
#      the GPU machine may lack; groups of 32 and 128);
#   4. the gpu-labelled tests (tests/gpu/test_cuda_backend.c), the tiny GPTQ
#      checkpoint's forward among them;
#   5. compute-sanitizer memcheck and racecheck (shared-memory hazards of
#      the attention kernels) on the same test;
#   6. `folo logits --device cuda` against transformers on the GPU
#      (tests/gpu/compare_transformers.py), tiny and 0.6B;
#   7. benchmark on the 0.6B model: folo's backend (tests/gpu/bench_backend.c,
#      bf16 and GPTQ) and `folo logits --chunk 1` end to end, transformers' generate
#      (tests/gpu/bench_transformers.py): TTFT of 128/512/2048-token prompts
#      and single-stream decode tokens/s, each against its floor (decode:
#      weight bytes / 3.35 TB/s; prefill: FLOPs / 800 TFLOP/s);
#   8. the engine end to end on the GPU (`folo bench latency` at 1, 16, 64
#      and 256 sequences; `folo bench throughput` of 256 requests);
#   9. a short table, printed last; results.json holds every number.
#
# The whole run takes about 6-9 minutes on an H100 with 16 cores (device
# calls are capped at 10). To split it over two calls, name steps to leave
# out in FOLO_GPU_SKIP, e.g. FOLO_GPU_SKIP="memcheck compare-0.6b"; the
# build and models are reused when the machine is still warm. Exit status 0
# only when every step that ran passed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=$root/build-gpu

if [ "${1:-}" = "--prebuild" ]; then
  set -e
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFOLO_CUDA=ON -DFOLO_CUDA_ARCHS="${FOLO_CUDA_ARCHS:-90a}" >/dev/null
  cmake --build "$build" -j"$(nproc)" >/dev/null
  rm -rf "$build/libs" && mkdir "$build/libs"
  # every library the binaries load but the C runtime and CUDA's own
  ldd "$build/folo" "$build/tests/test_cuda_backend" "$build/tests/bench_backend" |
    awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u |
    grep -Ev '/(libc|libm|libdl|librt|libpthread|libresolv|libstdc\+\+|libgcc_s|libcublas|libcublasLt|libcudart)\.so' |
    xargs -I{} cp -L {} "$build/libs/"
  # What the GPU run does not use goes, to stay under the carry limit: the
  # objects, make's files, the CPU-only programs.
  find "$build" -name '*.o' -delete
  rm -rf "$build/CMakeFiles" "$build/bench" "$build/libfolo.a"
  find "$build/tests" -maxdepth 1 -type f -name 'test_*' ! -name test_cuda_backend -delete
  echo "build-gpu ready: $(du -sh "$build" | cut -f1); carry it: run with carry [\"build-gpu\"]"
  exit
fi
if [ $# -ne 1 ]; then
  echo "usage: scripts/gpu-check.sh RESULTS_DIR | --prebuild" >&2
  exit 2
fi
mkdir -p "$1" && results=$(cd "$1" && pwd)
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
build_ok=0
if [ -x "$build/folo" ] && [ -d "$build/libs" ]; then
  # Carried from `--prebuild`: its CTest files name the source and build
  # folders where it was made, so that path is linked to this checkout.
  use_prebuilt() {
    local made_in
    made_in=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt")
    if [ -n "$made_in" ] && [ "$made_in" != "$root" ]; then
      mkdir -p "$(dirname "$made_in")" && ln -sfn "$root" "$made_in" || return 1
    fi
    grep -q test_cuda_backend "$build/tests/CTestTestfile.cmake" &&
      ldd "$build/folo" && "$build/folo" --version
  }
  # cuBLAS is the machine's: its CUDA toolkit, or the wheel PyTorch uses.
  cublas=$(find /usr/local/cuda/ /usr/local/cuda-13*/ /opt /usr/lib -name 'libcublas.so.13' 2>/dev/null | head -n 1)
  export LD_LIBRARY_PATH=$build/libs${cublas:+:$(dirname "$cublas")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  step build use_prebuilt && build_ok=1
else
  configure_and_build() {
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFOLO_CUDA=ON \
      "-DFOLO_CUDA_ARCHS=$arch" &&
      cmake --build "$build" -j"$jobs"
  }
  step build configure_and_build && build_ok=1
  if [ $build_ok = 1 ] && ! grep -q "folo: CUDA backend ON" "$results/build.log"; then
    echo "-- build: the CUDA backend was not configured (see build.log)"
    build_ok=0
  fi
fi

# ---- 3. models -----------------------------------------------------------------------
tiny=$models/tiny-bf16
big=$models/qwen3-0.6b-bf16
models_ok=0
make_models() {
  "$build/folo" make-model --preset tiny --dtype bf16 --seed 7 --out "$tiny" &&
    "$build/folo" make-model --preset qwen3-0.6b --dtype bf16 --seed 0 --out "$big"
}
tiny_gptq=$models/tiny-gptq
big_gptq=$models/qwen3-0.6b-gptq
gptq_ok=0
make_gptq_models() {
  "$build/folo" quantize -m "$tiny" --out "$tiny_gptq" --method rtn --group-size 32 &&
    "$build/folo" quantize -m "$big" --out "$big_gptq" --method rtn
}
if [ $build_ok = 1 ]; then
  step models make_models && models_ok=1
else
  skip models "no build"
fi
if [ $models_ok = 1 ]; then
  step models-gptq make_gptq_models && gptq_ok=1
else
  skip models-gptq "no models"
fi

# ---- 4-5. tests --------------------------------------------------------------------------
test_env=(FOLO_TEST_MODEL="$build/test-models/tiny-f32" FOLO_TOKENIZER_DIR="$root/models/qwen3-tokenizer")
[ $gptq_ok = 1 ] && export FOLO_TEST_GPTQ_MODEL=$tiny_gptq
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
    step racecheck env "${test_env[@]}" timeout 300 compute-sanitizer --tool racecheck \
      --error-exitcode 3 "$build/tests/test_cuda_backend"
    tail -n 3 "$results/racecheck.log"
  else
    skip memcheck "compute-sanitizer not on PATH"
    skip racecheck "compute-sanitizer not on PATH"
  fi
else
  skip gpu-tests "no build"
  skip memcheck "no build"
  skip racecheck "no build"
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
  if [ $gptq_ok = 1 ]; then
    step bench-folo-gptq bash -c "'$build/tests/bench_backend' '$big_gptq' cuda 128,512,2048 256 5 >'$results/bench_folo_gptq.json'"
  else
    skip bench-folo-gptq "no GPTQ model"
  fi
  step bench-folo-cli cli_decode
  # Start-up as a user meets it: a process that loads the model, plans
  # memory (the default --gpu-memory-utilization), captures the decode
  # graphs and generates one token.
  startup() {
    echo '{"prompt": "Hello", "max_tokens": 1}' |
      "$build/folo" generate -m "$big" --device cuda -i - -o /dev/null &&
      python3 -c "import time, sys; print('startup_s %.2f' % (time.time() - float(sys.argv[1])))" "$1"
  }
  step startup startup "$(date +%s.%N)"
  # The engine end to end (scheduler, paged KV, sampling) on the GPU: TPOT
  # at 1-256 running sequences, and offline throughput of 256 requests with
  # input and output lengths uniform in 100-1024 (the nano-vllm workload).
  step engine-latency "$build/folo" bench latency -m "$big" --device cuda --input-len 128 \
    --output-len 128 --batch-sizes 1,16,64,256 --iters 2 --max-batched-tokens 8192 \
    --kv-memory 16G --json "$results/engine_latency.json"
  step engine-latency-eager "$build/folo" bench latency -m "$big" --device cuda --input-len 128 \
    --output-len 128 --batch-sizes 1,16,64,256 --iters 2 --max-batched-tokens 8192 \
    --kv-memory 16G --enforce-eager --json "$results/engine_latency_eager.json"
  step engine-throughput "$build/folo" bench throughput -m "$big" --device cuda --num-prompts 256 \
    --input-len 562 --output-len 562 --random-range-ratio 0.822 --seed 0 \
    --max-batched-tokens 8192 --kv-memory 60G \
    --json "$results/engine_throughput.json"
  # The same workloads through transformers: TTFT, batch-1 decode, TPOT at
  # 1-256 sequences, and the 256-request workload (dynamic cache;
  # FOLO_HF_CACHES=dynamic,static adds the static cache, minutes more).
  step bench-transformers timeout "${FOLO_HF_TIMEOUT:-600}" python3 tests/gpu/bench_transformers.py --model "$big" \
    --out "$results/bench_transformers.json" --lengths 128,512,2048 --decode-steps 256 --repeats 5 \
    --concurrency 1,16,64,256 --input-len 128 --output-len 128 \
    --throughput 256 --throughput-input-len 562 --throughput-output-len 562 \
    --random-range-ratio 0.822 --seed 0 --batch-size 64 --throughput-caches "${FOLO_HF_CACHES:-dynamic}"
else
  skip bench-folo "no models"
  skip bench-folo-cli "no models"
  skip bench-transformers "no models"
  skip engine-latency "no models"
  skip engine-latency-eager "no models"
  skip engine-throughput "no models"
fi
grep -h "startup_s\|captured\|memory plan" "$results/startup.log" 2>/dev/null
for log in engine-latency engine-latency-eager engine-throughput; do
  [ -f "$results/$log.log" ] && { echo "== $log"; grep -v '^\s*$' "$results/$log.log" | grep -v '\r' | tail -n 14; }
done

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
for name in ("compare_tiny.json", "compare_0.6b.json", "bench_folo.json", "bench_folo_gptq.json",
             "bench_transformers.json",
             "engine_latency.json", "engine_latency_eager.json", "engine_throughput.json"):
    out[name[:-5]] = load(name)

def summaries(x):
    """x without the per-request records (those stay in their own file)."""
    if isinstance(x, dict):
        return {k: summaries(v) for k, v in x.items() if k != "requests"}
    return [summaries(v) for v in x] if isinstance(x, list) else x
for name in ("engine_latency", "engine_latency_eager", "engine_throughput"):
    out[name] = summaries(out[name])

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
    fe = folo.get("decode_eager")
    rows.append(("  the same, --enforce-eager", fe and fe["tokens_per_s"], None, 1.0 / decode_floor_s,
                 "tok/s"))
    rows.append(("decode via folo logits --chunk 1", cli, None, 1.0 / decode_floor_s, "tok/s"))
    # GPTQ: the seven linears read 4 bits (+ a scale and zero per 128) a
    # weight instead of 16; the head stays bf16 (tied to the embedding).
    gptq = out["bench_folo_gptq"] or {}
    gd = gptq.get("decode")
    gptq_floor_s = (L * layer_params * (0.5 + 8.0 / 128) + 2 * V * H) / PEAK_BYTES_S
    rows.append(("decode batch 1, GPTQ 4-bit (tokens/s)", gd and gd["tokens_per_s"], None,
                 1.0 / gptq_floor_s, "tok/s"))
    rows.append(("TTFT 512 tokens, GPTQ 4-bit (ms)", by_len(gptq, 512), by_len(hf, 512),
                 1e3 * prefill_floor_s(512), "ms"))
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
lat, eager = out["engine_latency"], out["engine_latency_eager"]
if lat:
    by_bs = lambda d: {r["batch_size"]: r for r in d["results"]} if d else {}
    g, e = by_bs(lat), by_bs(eager)
    print(f"\n  engine, {lat['input_len']} + {lat['output_len']} tokens   {'TPOT ms':>9} {'eager':>9} {'tok/s':>9}")
    for bs in sorted(g):
        t = g[bs]["summary"]["mean_tpot_ms"]
        te = e[bs]["summary"]["mean_tpot_ms"] if bs in e else None
        print(f"  {bs:>4} sequences{'':<18} {fmt(t):>9} {fmt(te):>9} {fmt(g[bs]['summary']['output_throughput']):>9}")
hf = out["bench_transformers"] or {}
hf_conc = {c["batch_size"]: c for c in hf.get("concurrency", []) if "batch_size" in c}
if lat and hf_conc:
    print("  transformers TPOT ms at the same sizes: " +
          ", ".join(f"{b}: {fmt(c.get('tpot_ms'))}" for b, c in sorted(hf_conc.items())))
thr = out["engine_throughput"]
if thr:
    s = thr["summary"]
    line = (f"  throughput, {thr['num_prompts']} requests: folo {s['output_throughput']:.0f} "
            f"output tokens/s ({s['completed']} completed)")
    for name, run in (hf.get("throughput") or {}).items():
        if isinstance(run, dict) and "output_tokens_per_s" in run:
            line += f"; transformers ({name} cache) {run['output_tokens_per_s']:.0f}"
            line += f", folo/transformers {s['output_throughput'] / run['output_tokens_per_s']:.1f}x"
    print(line)
EOF
! grep -q FAILED "$steps_file"
