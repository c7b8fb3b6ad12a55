#!/usr/bin/env bash
# GPTQ 4-bit vs bf16 (folo) vs llama.cpp Q4_0 and bf16: prompt of 512 tokens, then 128
# generated at batch 1, 2 threads each, alternating, REPS rounds.
set -u
FOLO=/work/main/build/folo
LB=/work/llama.cpp/build/bin/llama-batched-bench
BF16=/root/.cache/folo/models/qwen3-0.6b-synthetic
GPTQ=/tmp/m/m06-gptq
RTN=/tmp/m/m06-rtn
Q40=/tmp/ppl/kl/qwen3-0.6b-synthetic-Q4_0.gguf
LBF16=/tmp/ppl/kl/qwen3-0.6b-synthetic-bf16.gguf
OUT=/tmp/m/speed
mkdir -p $OUT
folo_run() { # name model
  echo "$1 $(uptime | sed 's/.*average: //')" >> $OUT/loads.txt
  $FOLO bench latency -m "$2" --device cpu --threads 2 --input-len 512 --output-len 129 --batch-sizes 1 \
    --iters 1 --warmup 1 --json $OUT/$1.json > $OUT/$1.txt 2>&1
}
llama_run() { # name gguf
  echo "$1 $(uptime | sed 's/.*average: //')" >> $OUT/loads.txt
  $LB -m "$2" -t 2 -tb 2 -c 1024 -npp 512 -ntg 128 -npl 1 --no-repack --output-format jsonl \
    > $OUT/$1.jsonl 2> $OUT/$1.err
}
for r in 1 2; do
  folo_run folo-gptq-$r $GPTQ
  llama_run llama-q40-$r $Q40
  folo_run folo-bf16-$r $BF16
  llama_run llama-bf16-$r $LBF16
  folo_run folo-rtn-$r $RTN
done
