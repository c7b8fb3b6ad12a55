#!/usr/bin/env bash
# folo bench serve against NVIDIA's aiperf on the same `folo serve` and the
# same fixed workload, the client off the server's cores (docs/bench.md,
# "Agreement with aiperf"; issue 12, "How it is checked").
#
#   bench/compare-aiperf.sh
#
# The script
#   1. writes the tiny synthetic model (or takes MODEL) and installs aiperf
#      from PyPI into a venv under CACHE_DIR;
#   2. starts one `folo serve --threads SERVER_THREADS` pinned to
#      SERVER_CPUS (taskset), on a free loopback port;
#   3. runs ROUNDS rounds, each: `folo bench serve --url` and `aiperf
#      profile` pinned to CLIENT_CPUS, folo's client first in odd rounds and
#      aiperf first in even ones, each NUM_PROMPTS streaming completions of
#      exactly INPUT_LEN prompt and OUTPUT_LEN output tokens (ignore_eos) at
#      concurrency CONCURRENCY after NUM_WARMUPS warm-ups, aiperf counting
#      tokens from the server's usage; `uptime` recorded before each run;
#      around each run it reads the server's /metrics (the engine's own
#      TTFT, ITL and E2E histograms) and times the client's CPU use (GNU
#      time, where /usr/bin/time exists);
#   4. prints both tools' TTFT, ITL, TPOT, E2EL and throughputs side by side
#      with each one's spread over the rounds, the server's view of each
#      tool's runs and the clients' CPU use (bench/aiperf_agreement.py),
#      and writes bench/results/aiperf-<UTC time>.{md,json}.
#
# Environment (all optional):
#   MODEL           checkpoint to serve (default: the tiny model, written to WORK_DIR)
#   ROUNDS          rounds (default 3)
#   NUM_PROMPTS     requests per run (default 40)
#   NUM_WARMUPS     warm-up requests per run (default 4)
#   CONCURRENCY     requests in flight (default 4): each tool sends the next
#                   request when one finishes
#   REQUEST_RATE    instead, requests/s with Poisson arrivals and no cap on
#                   those in flight (each tool draws its own arrival times)
#   INPUT_LEN, OUTPUT_LEN  tokens per request (default 64, 32)
#   SERVER_CPUS     CPUs of the server (default 0)
#   CLIENT_CPUS     CPUs of the clients (default 1)
#   SERVER_THREADS  folo serve --threads (default 1)
#   VERSION_OF_AIPERF  aiperf release (default 0.13.0)
#   POLL_METRICS    1: let aiperf poll the server's /metrics while it
#                   measures, as it does by default (default 0: --no-server-metrics;
#                   folo bench serve polls nothing, and on a one-core server
#                   each poll takes CPU from the engine)
# (No AIPERF_* names: aiperf reads every AIPERF_* variable as a setting.)
#   FOLO_BUILD      folo's build directory (default build)
#   CACHE_DIR       where aiperf's venv goes (default ~/.cache/folo/bench)
#   WORK_DIR        where the model and raw runs go (default bench/results/tmp)
set -euo pipefail

die() { echo "compare-aiperf: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FOLO_BUILD=$(cd "$ROOT" && realpath -m "${FOLO_BUILD:-build}")
FOLO="$FOLO_BUILD/folo"
[ -x "$FOLO" ] || die "$FOLO is missing (build folo first, or set FOLO_BUILD)"
command -v taskset > /dev/null || die "taskset is missing (Debian: util-linux)"
ROUNDS=${ROUNDS:-3}
NUM_PROMPTS=${NUM_PROMPTS:-40}
NUM_WARMUPS=${NUM_WARMUPS:-4}
CONCURRENCY=${CONCURRENCY:-4}
REQUEST_RATE=${REQUEST_RATE:-}
if [ -n "$REQUEST_RATE" ]; then
  FOLO_LOAD=(--request-rate "$REQUEST_RATE")
  AIPERF_LOAD=(--request-rate "$REQUEST_RATE" --arrival-pattern poisson)
  LOAD_DESC="Poisson arrivals at $REQUEST_RATE requests/s"
else
  FOLO_LOAD=(--max-concurrency "$CONCURRENCY")
  AIPERF_LOAD=(--concurrency "$CONCURRENCY")
  LOAD_DESC="concurrency $CONCURRENCY"
fi
INPUT_LEN=${INPUT_LEN:-64}
OUTPUT_LEN=${OUTPUT_LEN:-32}
SERVER_CPUS=${SERVER_CPUS:-0}
CLIENT_CPUS=${CLIENT_CPUS:-1}
SERVER_THREADS=${SERVER_THREADS:-1}
VERSION_OF_AIPERF=${VERSION_OF_AIPERF:-0.13.0}
POLL_METRICS=${POLL_METRICS:-0}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/folo/bench}
WORK_DIR=$(cd "$ROOT" && realpath -m "${WORK_DIR:-bench/results/tmp}")
NAME=folo-model

STAMP=$(date -u +%Y%m%d-%H%M)
RUN="$WORK_DIR/aiperf-$STAMP"
OUT="$ROOT/bench/results/aiperf-$STAMP"
mkdir -p "$RUN" "$CACHE_DIR" "$ROOT/bench/results"

if [ -z "${MODEL:-}" ]; then
  MODEL="$WORK_DIR/tiny-f32"
  [ -f "$MODEL/model.safetensors" ] ||
    "$FOLO" make-model --preset tiny --dtype f32 --seed 7 --out "$MODEL" 2>/dev/null
fi
MODEL=$(realpath "$MODEL")

VENV="$CACHE_DIR/venv-aiperf-$VERSION_OF_AIPERF"
if [ ! -x "$VENV/bin/aiperf" ]; then
  say "installing aiperf==$VERSION_OF_AIPERF into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "aiperf==$VERSION_OF_AIPERF" || die "pip could not install aiperf==$VERSION_OF_AIPERF"
fi

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SERVER=(taskset -c "$SERVER_CPUS" "$FOLO" serve -m "$MODEL" --host 127.0.0.1 --port "$PORT"
        --served-model-name "$NAME" --threads "$SERVER_THREADS" --kv-memory 256M)
say "starting ${SERVER[*]}"
"${SERVER[@]}" > "$RUN/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$PORT/health" > /dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "folo serve exited: $(tail -n 2 "$RUN/server.log")"
  sleep 0.2
done

load() { uptime | sed 's/.*load average: //'; }

# The server's own view of each run: its /metrics before and after
# (engine-side TTFT, ITL and E2E histograms, which no client's timing
# touches), and the client's CPU time over its wall time (GNU time).
TIMER=()
if [ -x /usr/bin/time ]; then
  TIMER=(/usr/bin/time -f "%U %S %e")
else
  echo "compare-aiperf: no /usr/bin/time (Debian: time): the clients' CPU time is not measured" >&2
fi
measured() {  # name command...: runs the client, timed, with /metrics around it
  local name=$1
  shift
  load > "$RUN/$name.load"
  curl -sf "http://127.0.0.1:$PORT/metrics" > "$RUN/$name.metrics-before"
  if [ ${#TIMER[@]} -gt 0 ]; then
    "${TIMER[@]}" -o "$RUN/$name.cpu" taskset -c "$CLIENT_CPUS" "$@" > "$RUN/$name.txt" 2>&1
  else
    taskset -c "$CLIENT_CPUS" "$@" > "$RUN/$name.txt" 2>&1
  fi
  local rc=$?
  curl -sf "http://127.0.0.1:$PORT/metrics" > "$RUN/$name.metrics-after"
  return $rc
}

folo_run() {  # round
  measured "folo-$1" "$FOLO" bench serve --url "http://127.0.0.1:$PORT" \
    --served-model-name "$NAME" --tokenizer "$MODEL" --input-len "$INPUT_LEN" \
    --output-len "$OUTPUT_LEN" --ignore-eos "${FOLO_LOAD[@]}" \
    --num-prompts "$NUM_PROMPTS" --num-warmups "$NUM_WARMUPS" --seed "$1" \
    --json "$RUN/folo-$1.json" ||
    die "folo bench serve failed: $(tail -n 2 "$RUN/folo-$1.txt")"
}

AIPERF_EXTRA=()
[ "$POLL_METRICS" = 1 ] || AIPERF_EXTRA=(--no-server-metrics)

aiperf_run() {  # round
  measured "aiperf-$1" "$VENV/bin/aiperf" profile "${AIPERF_EXTRA[@]}" -m "$NAME" \
    --url "http://127.0.0.1:$PORT" \
    --endpoint-type completions --streaming --tokenizer "$MODEL" \
    --prompt-input-tokens-mean "$INPUT_LEN" --prompt-input-tokens-stddev 0 \
    --prompt-output-tokens-mean "$OUTPUT_LEN" --prompt-output-tokens-stddev 0 \
    --extra-inputs ignore_eos:true "${AIPERF_LOAD[@]}" \
    --request-count "$NUM_PROMPTS" --warmup-request-count "$NUM_WARMUPS" \
    --use-server-token-count --ui-type none --random-seed "$1" \
    --artifact-dir "$RUN/aiperf-$1" ||
    die "aiperf failed: $(tail -n 2 "$RUN/aiperf-$1.txt")"
}

for r in $(seq 1 "$ROUNDS"); do
  say "round $r of $ROUNDS (load $(load))"
  if [ $((r % 2)) -eq 1 ]; then folo_run "$r"; aiperf_run "$r"
  else aiperf_run "$r"; folo_run "$r"; fi
done

cat > "$RUN/settings.json" <<EOF
{"date": "$(date -u '+%Y-%m-%d %H:%M UTC')", "rounds": $ROUNDS, "num_prompts": $NUM_PROMPTS,
 "num_warmups": $NUM_WARMUPS, "load": "$LOAD_DESC", "input_len": $INPUT_LEN,
 "output_len": $OUTPUT_LEN, "server_cpus": "$SERVER_CPUS", "client_cpus": "$CLIENT_CPUS",
 "server": "folo serve -m $(basename "$MODEL") --threads $SERVER_THREADS",
 "aiperf_server_metrics": $POLL_METRICS,
 "aiperf_version": "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("aiperf"))')",
 "run_dir": "$RUN"}
EOF
python3 "$ROOT/bench/aiperf_agreement.py" "$RUN" "$OUT"
