#!/usr/bin/env bash
# The runs of this folder (AMD EPYC Zen4, 2 cores, 2 threads): a 512-token
# prompt, then 128 tokens generated at batch 1, every engine once per round,
# two alternating rounds, as ../gptq-speed-20261205/run.sh; folo with
# --dtype bfloat16 (its 4-bit linears on vdpbf16ps), and the 4-bit model
# with a 4-bit head also in float32 (the CPU default). The machine's other
# job (a folo quantize) was stopped (SIGSTOP) for the duration.
#   M_BF16     folo make-model --preset qwen3-0.6b --dtype bf16
#   M_GPTQ     folo quantize -m M_BF16 --method rtn            (bf16 head)
#   M_HEAD     folo quantize -m M_BF16 --method rtn --lm-head  (4-bit head)
#   M_HEAD8    folo quantize -m M_BF16 --method rtn --lm-head int8
#   G_BF16     M_BF16 as GGUF (bench/hf_to_gguf.py), G_Q40 its llama-quantize Q4_0
#   FOLO, LLAMA_BIN  folo's binary, llama.cpp's build/bin
set -u
OUT=${OUT:-/tmp/gptq-speed}
mkdir -p "$OUT"
RUNS="folo:folo-head-bf16:$M_HEAD:bfloat16
llama:llama-q40:$G_Q40:
folo:folo-bf16-bf16:$M_BF16:bfloat16
folo:folo-gptq-bf16:$M_GPTQ:bfloat16
llama:llama-bf16:$G_BF16:
folo:folo-head-f32:$M_HEAD:float32
folo:folo-head8-bf16:$M_HEAD8:bfloat16"
for round in 1 2; do
  while IFS=: read -r engine name model dtype; do
    echo "$name-$round $(uptime | sed 's/.*average: //')" >> "$OUT/loads.txt"
    if [ "$engine" = folo ]; then
      "$FOLO" bench latency -m "$model" --dtype "$dtype" --device cpu --threads 2 \
        --input-len 512 --output-len 129 --batch-sizes 1 --iters 1 --warmup 1 \
        --json "$OUT/$name-$round.json" > "$OUT/$name-$round.txt" 2>&1
    else
      "$LLAMA_BIN/llama-batched-bench" -m "$model" -t 2 -tb 2 -c 1024 -npp 512 -ntg 128 \
        -npl 1 --output-format jsonl > "$OUT/$name-$round.jsonl" 2> "$OUT/$name-$round.err"
    fi
  done <<< "$RUNS"
done
