#!/usr/bin/env bash
# 4-bit quality on one table: llama.cpp's Q4_0 and Q4_K_M and folo's GPTQ
# checkpoints, each as KL divergence from the same bf16 model on the same
# text and chunks (docs/perplexity.md, "Against llama.cpp").
#
#   LLAMA_CPP_DIR=/path/to/llama.cpp bench/kl-llamacpp.sh [GPTQ_DIR ...]
#
# LLAMA_CPP_DIR is a llama.cpp checkout built with CMake (llama-quantize and
# llama-perplexity in build/bin). GPTQ_DIR are 4-bit checkpoints of MODEL
# (`folo quantize` output, or round-to-nearest ones from
# tests/python/test_gptq.py), labelled by their directory names. The script
#   1. writes MODEL (default: the synthetic Qwen3-0.6B-shaped bf16 checkpoint
#      of `folo make-model`) as a bf16 GGUF (bench/hf_to_gguf.py, which needs
#      the PyPI `gguf` package: pip install -r bench/requirements.txt) and
#      quantizes that with llama-quantize to each of QUANTS;
#   2. runs llama-perplexity on the bf16 GGUF over TEXT, saving its
#      log-probabilities (--kl-divergence-base), then --kl-divergence for
#      the bf16 GGUF itself (should be ~0) and each quantized one;
#   3. runs `folo perplexity --kl-base MODEL` for MODEL itself (should be 0)
#      and each GPTQ_DIR, with the same --ctx and chunks;
#   4. checks that both engines cut the text into the same tokens (the
#      tokens llama.cpp stored against `folo tokenize`), prints one table and
#      the two bf16 perplexities, and writes them with every figure to
#      bench/results/kl-<UTC time>.{md,json}.
#
# Environment (all optional but LLAMA_CPP_DIR):
#   MODEL        the bf16 base checkpoint (default WORK_DIR/qwen3-0.6b-bf16, made if missing)
#   TEXT         the text (default /usr/share/common-licenses/GPL-3)
#   CTX          tokens per chunk (default 512)
#   CHUNKS       chunks to score (default: every whole chunk of TEXT)
#   QUANTS       llama-quantize types (default "Q4_0 Q4_K_M")
#   THREADS      threads for both engines (default 2)
#   LLAMA_ARGS   extra llama-perplexity flags (default --no-repack: its AMX
#                kernels for repacked Q4_0 crashed on this project's virtual
#                machines, which report AMX; the layout does not change the
#                figures beyond rounding)
#   FOLO_BUILD   folo's build directory (default build)
#   PYTHON       a Python with gguf and numpy (default python3)
#   WORK_DIR     where the model files and logs go (default bench/results/tmp)
set -euo pipefail

die() { echo "kl-llamacpp: $*" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -n "${LLAMA_CPP_DIR:-}" ] || die "set LLAMA_CPP_DIR to a llama.cpp checkout built with CMake"
LLAMA_BIN="$LLAMA_CPP_DIR/build/bin"
for tool in llama-quantize llama-perplexity; do
  [ -x "$LLAMA_BIN/$tool" ] || die "$LLAMA_BIN/$tool is missing (build llama.cpp: see README, Performance)"
done
FOLO_BUILD=$(cd "$ROOT" && realpath -m "${FOLO_BUILD:-build}")
FOLO="$FOLO_BUILD/folo"
[ -x "$FOLO" ] || die "$FOLO is missing (build folo first, or set FOLO_BUILD)"
PYTHON=${PYTHON:-python3}
"$PYTHON" -c "import gguf, numpy" 2>/dev/null ||
  die "$PYTHON lacks the gguf package: pip install -r bench/requirements.txt"
WORK_DIR=$(cd "$ROOT" && realpath -m "${WORK_DIR:-bench/results/tmp}")
MODEL=$(realpath -m "${MODEL:-$WORK_DIR/qwen3-0.6b-bf16}")
TEXT=$(realpath -m "${TEXT:-/usr/share/common-licenses/GPL-3}")
[ -s "$TEXT" ] || die "TEXT $TEXT is missing or empty"
CTX=${CTX:-512}
QUANTS=${QUANTS:-"Q4_0 Q4_K_M"}
THREADS=${THREADS:-2}
read -r -a LLAMA_ARGS <<< "${LLAMA_ARGS---no-repack}"
GPTQ_DIRS=()
for dir in "$@"; do
  [ -f "$dir/config.json" ] || die "$dir is not a checkpoint directory (no config.json)"
  GPTQ_DIRS+=("$(realpath "$dir")")
done
STAMP=$(date -u +%Y%m%d-%H%M)
RAW="$WORK_DIR/kl-$STAMP"
mkdir -p "$RAW" "$ROOT/bench/results"

if [ ! -f "$MODEL/config.json" ]; then
  echo "== writing the synthetic 0.6B-shaped bf16 checkpoint to $MODEL" >&2
  "$FOLO" make-model --preset qwen3-0.6b --dtype bf16 --out "$MODEL" 2>/dev/null
fi
GGUF="$WORK_DIR/$(basename "$MODEL")-bf16.gguf"
if [ ! -f "$GGUF" ] || [ "$MODEL/model.safetensors" -nt "$GGUF" ]; then
  echo "== exporting $MODEL as GGUF to $GGUF" >&2
  "$PYTHON" "$ROOT/bench/hf_to_gguf.py" "$MODEL" "$GGUF" >/dev/null
fi
for q in $QUANTS; do
  out="${GGUF%-bf16.gguf}-$q.gguf"
  if [ ! -f "$out" ] || [ "$GGUF" -nt "$out" ]; then
    echo "== llama-quantize $q" >&2
    "$LLAMA_BIN/llama-quantize" "$GGUF" "$out" "$q" "$THREADS" > "$RAW/quantize-$q.log" 2>&1 ||
      die "llama-quantize $q failed: see $RAW/quantize-$q.log"
  fi
done

# llama-perplexity: the bf16 base (its PPL, and the log-probabilities the
# KL runs compare with), one sequence of CTX tokens a batch.
CHUNK_ARGS=()
[ -n "${CHUNKS:-}" ] && CHUNK_ARGS=(--chunks "$CHUNKS")
BASE_KLD="$RAW/bf16.kld"
echo "== llama-perplexity bf16 (base) on $TEXT" >&2
"$LLAMA_BIN/llama-perplexity" -m "$GGUF" -f "$TEXT" -c "$CTX" -b "$CTX" -t "$THREADS" \
  "${LLAMA_ARGS[@]}" "${CHUNK_ARGS[@]}" --kl-divergence-base "$BASE_KLD" > "$RAW/llama-base.log" 2>&1 ||
  die "llama-perplexity failed: see $RAW/llama-base.log"
for q in bf16 $QUANTS; do
  model="${GGUF%-bf16.gguf}-$q.gguf"
  echo "== llama-perplexity --kl-divergence $q" >&2
  "$LLAMA_BIN/llama-perplexity" -m "$model" -c "$CTX" -b "$CTX" -t "$THREADS" \
    "${LLAMA_ARGS[@]}" --kl-divergence-base "$BASE_KLD" --kl-divergence > "$RAW/llama-$q.log" 2>&1 ||
    die "llama-perplexity --kl-divergence failed: see $RAW/llama-$q.log"
done

# folo: the same text and chunks; the base against itself, then each GPTQ_DIR.
N_CHUNKS=$("$PYTHON" -c 'import struct,sys; f=open(sys.argv[1],"rb"); f.read(8); print(struct.unpack("<Iii", f.read(12))[2])' "$BASE_KLD")
# The text as both engines read it: without its last newline.
"$PYTHON" -c 'import sys; t = open(sys.argv[1], "rb").read(); sys.stdout.buffer.write(t[:-1] if t.endswith(b"\n") else t)' "$TEXT" |
  "$FOLO" tokenize -m "$MODEL" --file - > "$RAW/folo-tokens.json"
FOLO_RUNS=("bf16:$MODEL")
for dir in "${GPTQ_DIRS[@]}"; do FOLO_RUNS+=("$(basename "$dir"):$dir"); done
for run in "${FOLO_RUNS[@]}"; do
  label=${run%%:*} dir=${run#*:}
  echo "== folo perplexity $label --kl-base $(basename "$MODEL")" >&2
  "$FOLO" perplexity -m "$dir" --kl-base "$MODEL" --file "$TEXT" --ctx "$CTX" \
    --chunks "$N_CHUNKS" --threads "$THREADS" --device cpu --json "$RAW/folo-$label.json" \
    > "$RAW/folo-$label.log" 2>&1 || die "folo perplexity failed: see $RAW/folo-$label.log"
done

LLAMA_COMMIT=$(git -C "$LLAMA_CPP_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
PYTHONPATH="$ROOT/bench" "$PYTHON" - "$RAW" "$ROOT/bench/results/kl-$STAMP" "$MODEL" "$TEXT" "$CTX" "$THREADS" \
  "$LLAMA_COMMIT" "$QUANTS" "${FOLO_RUNS[@]}" <<'EOF'
import json, re, struct, sys

import results_report

raw, out, model, text, ctx, threads, llama_commit, quants = sys.argv[1:9]
folo_runs = [r.split(":", 1) for r in sys.argv[9:]]
ctx, threads, quants = int(ctx), int(threads), quants.split()

# The tokens llama.cpp scored, from its base file: "_logits_", n_ctx (u32),
# n_vocab, n_chunk (i32), then n_ctx * n_chunk int32 tokens.
with open(f"{raw}/bf16.kld", "rb") as f:
    assert f.read(8) == b"_logits_", "not a llama-perplexity log-probability file"
    n_ctx, n_vocab, n_chunk = struct.unpack("<Iii", f.read(12))
    llama_tokens = list(struct.unpack(f"<{n_ctx * n_chunk}i", f.read(4 * n_ctx * n_chunk)))
with open(f"{raw}/folo-tokens.json") as f:
    folo_tokens = json.load(f)
n_same = next((i for i, (a, b) in enumerate(zip(llama_tokens, folo_tokens)) if a != b),
              len(llama_tokens))
if n_same < len(llama_tokens):
    sys.exit(f"kl-llamacpp: the engines tokenize {text} differently from token {n_same} "
             f"(llama.cpp {llama_tokens[n_same]}, folo {folo_tokens[n_same]})")

num = r"(-?[0-9.]+(?:e[-+]?[0-9]+)?|nan|inf)"

def grab(log, label, n=1):
    m = re.search(re.escape(label) + r"\s*:?\s*" + r"\s*(?:±|\+/-)?\s*".join([num] * n), log)
    if not m:
        sys.exit(f"kl-llamacpp: '{label}' not found in a llama-perplexity log")
    return [float(v) for v in m.groups()] if n > 1 else float(m.group(1))

with open(f"{raw}/llama-base.log") as f:
    base_log = f.read()
llama_ppl, llama_ppl_err = grab(base_log, "Final estimate: PPL =", 2)

rows = []
for q in ["bf16"] + quants:
    with open(f"{raw}/llama-{q}.log") as f:
        log = f.read()
    ppl, ppl_err = grab(log, "Mean PPL(Q)", 2)
    ratio, ratio_err = grab(log, "Mean PPL(Q)/PPL(base)", 2)
    kl, kl_err = grab(log, "Mean    KLD:", 2)
    top, top_err = grab(log, "Same top p:", 2)
    rows.append({"engine": "llama.cpp", "model": q, "ppl": ppl, "ppl_err": ppl_err,
                 "ppl_ratio": ratio, "ppl_ratio_err": ratio_err, "kl_mean": kl, "kl_err": kl_err,
                 "kl_median": grab(log, "Median  KLD:"), "kl_p99": grab(log, "99.0%   KLD:"),
                 "kl_max": grab(log, "Maximum KLD:"), "same_top_pct": top,
                 "same_top_err_pct": top_err, "delta_p_mean_pct": grab(log, "Mean    Δp:"),
                 "delta_p_rms_pct": grab(log, "RMS Δp    :")})
folo_raw = {}
for label, _ in folo_runs:
    with open(f"{raw}/folo-{label}.json") as f:
        j = folo_raw[label] = json.load(f)
    if (j["ctx"], j["n_chunks"]) != (n_ctx, n_chunk):
        sys.exit(f"kl-llamacpp: folo scored {j['n_chunks']} chunks of {j['ctx']}, "
                 f"llama.cpp {n_chunk} of {n_ctx}")
    rows.append({"engine": "folo", "model": label, "dir": j["model"],
                 **{k: j[k] for k in ("ppl", "ppl_err", "ppl_ratio", "ppl_ratio_err", "kl_mean",
                                      "kl_err", "kl_median", "kl_p99", "kl_max", "same_top_pct",
                                      "same_top_err_pct", "delta_p_mean_pct",
                                      "delta_p_rms_pct")}})

folo_ppl = folo_raw["bf16"]["ppl_base"]
folo_self, llama_self = folo_raw["bf16"], rows[0]
lines = [
    "| engine | model | PPL | PPL / PPL(bf16) | mean KL | median KL | 99% KL | max KL "
    "| same top % | mean Δp % | RMS Δp % |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for r in rows:
    lines.append(
        f"| {r['engine']} | {r['model']} | {r['ppl']:.2f} | {r['ppl_ratio']:.5f} "
        f"| {r['kl_mean']:.6f} ± {r['kl_err']:.6f} | {r['kl_median']:.6f} | {r['kl_p99']:.6f} "
        f"| {r['kl_max']:.6f} | {r['same_top_pct']:.2f} ± {r['same_top_err_pct']:.2f} "
        f"| {r['delta_p_mean_pct']:.3g} | {r['delta_p_rms_pct']:.3g} |")
cpu, date = results_report.cpu_name(), results_report.utc_now()
rel = abs(folo_ppl - llama_ppl) / llama_ppl
head = [
    f"4-bit quality against bf16: folo vs llama.cpp ({llama_commit}), {date}, {cpu}, "
    f"{threads} threads.",
    f"Base model {model} (bf16); text {text}: {n_chunk} chunks of {n_ctx} tokens, the last "
    f"{n_ctx - 1 - n_ctx // 2} predictions of each scored ({n_chunk * (n_ctx - 1 - n_ctx // 2)} "
    f"in all); both engines' tokens identical ({len(llama_tokens)} compared).",
    f"bf16 perplexity: folo {folo_ppl:.4f}, llama-perplexity {llama_ppl:.4f} ± {llama_ppl_err:.4f} "
    f"(relative difference {rel:.2e}).",
    f"bf16 against itself: folo mean KL {folo_self['kl_mean']:.3g}, max {folo_self['kl_max']:.3g}, "
    f"same top {folo_self['same_top_pct']:.2f} %; llama.cpp mean KL {llama_self['kl_mean']:.3g}, "
    f"max {llama_self['kl_max']:.3g}, same top {llama_self['same_top_pct']:.2f} %.",
    "KL = KL(P_bf16 || P_model) per scored position, nats; same top = the argmaxes agree; "
    "Δp = P_model - P_bf16 of the text's next token (llama.cpp prints it to 0.001 %). "
    "llama.cpp stores the base's log-probabilities in 16 bits and drops those below e^-16; "
    "folo sums every term in double.",
]
results_report.write(out, head, lines, {
    "date": date, "cpu": cpu, "threads": threads, "llama_cpp_commit": llama_commit,
    "model": model, "text": text, "ctx": n_ctx, "n_chunks": n_chunk,
    "n_tokens_compared": len(llama_tokens), "folo_bf16_ppl": folo_ppl,
    "llama_cpp_bf16_ppl": llama_ppl, "llama_cpp_bf16_ppl_err": llama_ppl_err,
    "rows": rows, "folo_raw": folo_raw})
EOF
