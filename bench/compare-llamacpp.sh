#!/usr/bin/env bash
# folo against llama.cpp on this machine, same weights, same thread count,
# alternating engines (docs/performance.md, "Against llama.cpp").
#
#   LLAMA_CPP_DIR=/path/to/llama.cpp bench/compare-llamacpp.sh
#
# LLAMA_CPP_DIR is a llama.cpp checkout built with CMake (its binaries in
# build/bin; README "Performance" says how to build one). The script
#   1. writes the synthetic Qwen3-0.6B-shaped bf16 checkpoint with
#      `folo make-model` and the same weights as GGUF (bench/hf_to_gguf.py,
#      needs the PyPI `gguf` package: pip install -r bench/requirements.txt);
#   2. measures the machine's ceilings (build/bench/cpu_roofline);
#   3. runs REPS rounds, each: pp512 and tg128 at batch 1 (folo bench latency
#      / llama-bench), then aggregate decode with 1, 4, 16, 64 concurrent
#      sequences of 128 prompt + 64 generated tokens (folo bench latency /
#      llama-batched-bench), folo first in odd rounds and llama.cpp first in
#      even ones, with `uptime` recorded before each run;
#   4. prints one table of medians: both engines, folo ÷ llama.cpp, and each
#      as a fraction of its bound, and writes it with the raw runs to
#      bench/results/llamacpp-<UTC time>.{md,json}.
#
# Environment (all optional but LLAMA_CPP_DIR):
#   FOLO_BUILD   folo's build directory (default build)
#   FOLO_FLAGS   extra flags for every folo run, e.g. "--dtype bfloat16" (bf16
#                activations and KV cache, as llama.cpp computes on bf16 weights)
#   THREADS      threads for both engines (default 2)
#   REPS         rounds (default 3)
#   BATCHES      concurrent sequences of the batched rows (default "1 4 16 64")
#   PYTHON       a Python with gguf and numpy (default python3)
#   WORK_DIR     where the model files go (default bench/results/tmp)
set -euo pipefail

die() { echo "compare-llamacpp: $*" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -n "${LLAMA_CPP_DIR:-}" ] || die "set LLAMA_CPP_DIR to a llama.cpp checkout built with CMake"
LLAMA_BIN="$LLAMA_CPP_DIR/build/bin"
for tool in llama-bench llama-batched-bench; do
  [ -x "$LLAMA_BIN/$tool" ] || die "$LLAMA_BIN/$tool is missing (build it: see README, Performance)"
done
FOLO_BUILD=$(cd "$ROOT" && realpath -m "${FOLO_BUILD:-build}")
FOLO="$FOLO_BUILD/folo"
ROOFLINE="$FOLO_BUILD/bench/cpu_roofline"
[ -x "$FOLO" ] || die "$FOLO is missing (build folo first, or set FOLO_BUILD)"
[ -x "$ROOFLINE" ] || die "$ROOFLINE is missing (it is built with folo on x86-64)"
THREADS=${THREADS:-2}
read -r -a FOLO_EXTRA <<< "${FOLO_FLAGS:-}"
REPS=${REPS:-3}
BATCHES=${BATCHES:-"1 4 16 64"}
PYTHON=${PYTHON:-python3}
WORK_DIR=$(cd "$ROOT" && realpath -m "${WORK_DIR:-bench/results/tmp}")
"$PYTHON" -c "import gguf, numpy" 2>/dev/null ||
  die "$PYTHON lacks the gguf package: pip install -r bench/requirements.txt"

PP=512 TG=128 B_PP=128 B_TG=64
MAX_B=0
for b in $BATCHES; do [ "$b" -gt "$MAX_B" ] && MAX_B=$b; done
BATCH_LIST=$(echo $BATCHES | tr ' ' ',')
STAMP=$(date -u +%Y%m%d-%H%M)
RAW="$WORK_DIR/raw-$STAMP"
MODEL="$WORK_DIR/qwen3-0.6b-bf16"
GGUF="$WORK_DIR/qwen3-0.6b-bf16.gguf"
mkdir -p "$RAW" "$ROOT/bench/results"

if [ ! -f "$MODEL/model.safetensors" ]; then
  echo "== writing the synthetic 0.6B-shaped bf16 checkpoint to $MODEL" >&2
  "$FOLO" make-model --preset qwen3-0.6b --dtype bf16 --out "$MODEL" 2>/dev/null
fi
if [ ! -f "$GGUF" ] || [ "$MODEL/model.safetensors" -nt "$GGUF" ]; then
  echo "== exporting it as GGUF to $GGUF" >&2
  "$PYTHON" "$ROOT/bench/hf_to_gguf.py" "$MODEL" "$GGUF" >/dev/null
fi

load() { uptime | sed 's/.*load average: //'; }

echo "== ceilings: cpu_roofline --threads $THREADS" >&2
echo "$(load)" > "$RAW/roofline.load"
"$ROOFLINE" --threads "$THREADS" --mib 1024 --repeat 3 | tail -1 > "$RAW/roofline.json"

folo_runs() {  # round
  local r=$1
  echo "$(load)" > "$RAW/folo-pp-$r.load"
  "$FOLO" bench latency -m "$MODEL" --threads "$THREADS" ${FOLO_EXTRA[@]+"${FOLO_EXTRA[@]}"} --input-len $PP --output-len 1 \
    --batch-sizes 1 --iters 1 --warmup 1 --json "$RAW/folo-pp-$r.json" >/dev/null 2>&1
  echo "$(load)" > "$RAW/folo-tg-$r.load"
  "$FOLO" bench latency -m "$MODEL" --threads "$THREADS" ${FOLO_EXTRA[@]+"${FOLO_EXTRA[@]}"} --input-len 1 --output-len $((TG + 1)) \
    --batch-sizes 1 --iters 1 --warmup 1 --json "$RAW/folo-tg-$r.json" >/dev/null 2>&1
  # The whole batch's prompts in one step, as llama-batched-bench does, so
  # every decode step that follows carries all the sequences.
  echo "$(load)" > "$RAW/folo-batched-$r.load"
  "$FOLO" bench latency -m "$MODEL" --threads "$THREADS" ${FOLO_EXTRA[@]+"${FOLO_EXTRA[@]}"} --input-len $B_PP \
    --output-len $((B_TG + 1)) --batch-sizes "$BATCH_LIST" --iters 1 --warmup 0 \
    --max-batched-tokens $((MAX_B * B_PP)) --json "$RAW/folo-batched-$r.json" >/dev/null 2>&1
}

llama_runs() {  # round
  local r=$1
  echo "$(load)" > "$RAW/llama-pptg-$r.load"
  "$LLAMA_BIN/llama-bench" -m "$GGUF" -t "$THREADS" -p $PP -n $TG -r 1 -o json \
    > "$RAW/llama-pptg-$r.json" 2>/dev/null
  echo "$(load)" > "$RAW/llama-batched-$r.load"
  "$LLAMA_BIN/llama-batched-bench" -m "$GGUF" -t "$THREADS" -tb "$THREADS" \
    -c $((MAX_B * (B_PP + B_TG))) -b 2048 -ub 512 -npp $B_PP -ntg $B_TG -npl "$BATCH_LIST" \
    --output-format jsonl > "$RAW/llama-batched-$r.jsonl" 2>/dev/null
}

for r in $(seq 1 "$REPS"); do
  echo "== round $r of $REPS (load $(load))" >&2
  if [ $((r % 2)) -eq 1 ]; then folo_runs "$r"; llama_runs "$r"
  else llama_runs "$r"; folo_runs "$r"; fi
done

LLAMA_COMMIT=$(git -C "$LLAMA_CPP_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
PYTHONPATH="$ROOT/bench" "$PYTHON" - "$RAW" "$MODEL" "$ROOT/bench/results/llamacpp-$STAMP" "$REPS" "$THREADS" \
  "$LLAMA_COMMIT" "$BATCHES" "${FOLO_FLAGS:-}" <<'EOF'
import json, os, statistics, sys

import results_report

raw, model, out, reps, threads, llama_commit, batches, folo_flags = sys.argv[1:]
reps, threads, batches = int(reps), int(threads), [int(b) for b in batches.split()]
PP, TG, B_PP, B_TG = 512, 128, 128, 64

def jload(path):
    with open(path) as f:
        return json.load(f)

def load_of(name):
    with open(os.path.join(raw, name + ".load")) as f:
        return f.read().strip()

cfg = jload(os.path.join(model, "config.json"))
roof = jload(os.path.join(raw, "roofline.json"))
bw = roof["read_gbs"][1] * 1e9
peak = max(v[1] for k, v in roof.items() if k.startswith("peak_gflops_")) * 1e9

runs = {"folo": {}, "llama.cpp": {}}  # row -> [values]
loads = []

def add(engine, row, value):
    runs[engine].setdefault(row, []).append(value)

weight_bytes = None
for r in range(1, reps + 1):
    pp = jload(f"{raw}/folo-pp-{r}.json")["results"][0]
    add("folo", "pp512", PP / pp["prefill_s"])
    tg = jload(f"{raw}/folo-tg-{r}.json")
    weight_bytes = tg["decode_weight_bytes"]
    tg = tg["results"][0]
    add("folo", "tg128", tg["decode_steps"] / tg["decode_s"])
    for res in jload(f"{raw}/folo-batched-{r}.json")["results"]:
        if res["decode_steps"] != B_TG:
            sys.exit(f"compare-llamacpp: folo batch {res['batch_size']} ran "
                     f"{res['decode_steps']} pure decode steps, expected {B_TG}")
        add("folo", f"decode x{res['batch_size']}",
            res["batch_size"] * res["decode_steps"] / res["decode_s"])
    for t in jload(f"{raw}/llama-pptg-{r}.json"):
        row = "pp512" if t["n_gen"] == 0 else "tg128"
        add("llama.cpp", row, t["avg_ts"])
    with open(f"{raw}/llama-batched-{r}.jsonl") as f:
        for line in f:
            if line.startswith("{"):
                t = json.loads(line)
                add("llama.cpp", f"decode x{t['pl']}", t["speed_tg"])
    loads += [load_of(n) for n in (f"folo-pp-{r}", f"folo-tg-{r}", f"folo-batched-{r}",
                                  f"llama-pptg-{r}", f"llama-batched-{r}")]

# Bounds. A decode token multiplies by every weight once (2 FLOPs per bf16
# parameter, lm_head included); a step reads the weights once for all its
# sequences. A prefill token skips the lm_head but attends to the tokens
# before it: 4·D FLOPs per (query head, key) for Q·K and P·V.
H, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
D = cfg.get("head_dim", H // cfg["num_attention_heads"])
params = weight_bytes / 2
decode_flops = 2 * params
prefill_flops = 2 * (params - V * H) + L * cfg["num_attention_heads"] * 2 * D * (PP + 1)
bounds = {"pp512": peak / prefill_flops, "tg128": bw / weight_bytes}
for b in batches:
    bounds[f"decode x{b}"] = min(b * bw / weight_bytes, peak / decode_flops)
rows = ["pp512", "tg128"] + [f"decode x{b}" for b in batches]
kind = {"pp512": "FLOP", "tg128": "bandwidth"}

med = {e: {row: statistics.median(v) for row, v in runs[e].items()} for e in runs}
lines = [
    f"| {'test':<11} | {'folo tok/s':>10} | {'llama.cpp tok/s':>15} | {'folo / llama.cpp':>16} "
    f"| {'bound tok/s':>11} | {'folo / bound':>12} | {'llama.cpp / bound':>17} |",
    "|" + "|".join("-" * w for w in (13, 12, 17, 18, 13, 14, 19)) + "|",
]
table = []
for row in rows:
    f, l = med["folo"].get(row), med["llama.cpp"].get(row)
    if f is None or l is None:
        continue
    b = bounds[row]
    bound_kind = kind.get(row) or ("FLOP" if b == peak / decode_flops else "bandwidth")
    table.append({"test": row, "folo_tok_s": f, "llama_cpp_tok_s": l, "ratio": f / l,
                  "bound_tok_s": b, "bound": bound_kind, "folo_of_bound": f / b,
                  "llama_cpp_of_bound": l / b,
                  "folo_runs": runs["folo"][row], "llama_cpp_runs": runs["llama.cpp"][row]})
    lines.append(f"| {row:<11} | {f:>10.1f} | {l:>15.1f} | {f / l:>15.2f}x | {b:>11.1f} "
                 f"| {100 * f / b:>11.0f}% | {100 * l / b:>16.0f}% |")

cpu, date = results_report.cpu_name(), results_report.utc_now()
head = [
    f"folo vs llama.cpp ({llama_commit}), {date}, {cpu}, {threads} threads, "
    f"synthetic Qwen3-0.6B-shaped bf16 weights; medians of {reps} alternating rounds; "
    f"folo flags: {folo_flags or '(none)'}.",
    f"Ceilings (cpu_roofline, {threads} threads): read {bw / 1e9:.1f} GB/s, "
    f"peak {peak / 1e9:.0f} GFLOP/s; decode reads {weight_bytes / 1e9:.2f} GB of weights "
    f"per step; a prefill token costs {prefill_flops / 1e9:.2f} GFLOP at {PP} tokens.",
    f"Load average before each run: {', '.join(sorted(set(l.split(',')[0] for l in loads), key=float))} (1-min).",
    "Rows: pp512 = prompt of 512 tokens, tg128 = 128 generated tokens, batch 1; "
    f"decode xN = aggregate decode tokens/s of N sequences ({B_PP} prompt + {B_TG} generated each).",
    "Bounds: pp512 FLOP ceiling; tg128 read bandwidth; decode xN the lower of N x bandwidth "
    "bound and the FLOP ceiling.",
]
results_report.write(out, head, lines, {
    "date": date, "cpu": cpu, "threads": threads, "reps": reps, "folo_flags": folo_flags,
    "llama_cpp_commit": llama_commit, "loads": loads, "roofline": roof,
    "weight_bytes": weight_bytes, "prefill_flops_per_token": prefill_flops,
    "decode_flops_per_token": decode_flops, "rows": table})
EOF
