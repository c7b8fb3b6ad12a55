"""The transformers side of scripts/gpu-check.sh's benchmark: Qwen3ForCausalLM
in bf16 on the GPU with its default attention, timed through `generate`.

    python3 tests/gpu/bench_transformers.py --model DIR --out RESULT.json \
        [--lengths 128,512,2048] [--decode-steps 256] [--repeats 5]

TTFT of an N-token prompt: `generate(max_new_tokens=1)` (prefill and one
greedy token), median of --repeats after a warm-up. Single-stream decode:
a 128-token prompt generating 1 + S tokens (min_new_tokens keeps it from
stopping early), less the 1-token time, over S: seconds per decoded token,
median of --repeats. The GPU is synchronized around every timed call. The
same random ids as bench_backend are not needed: cost depends on lengths."""

import argparse
import json
import statistics
import sys
import time

import torch
from transformers import Qwen3ForCausalLM


def synchronize(ids):
    if ids.is_cuda:
        torch.cuda.synchronize()


@torch.no_grad()
def timed_generate(model, ids, new_tokens):
    synchronize(ids)
    start = time.perf_counter()
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                   min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    synchronize(ids)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lengths", default="128,512,2048")
    ap.add_argument("--decode-steps", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--torch-device", default="cuda")
    args = ap.parse_args()

    model = Qwen3ForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16)
    model = model.to(args.torch_device).eval()
    gen = torch.Generator().manual_seed(1)

    def prompt(n):
        return torch.randint(0, 151643, (1, n), generator=gen).to(args.torch_device)

    result = {"engine": "transformers", "attention": model.config._attn_implementation,
              "torch": torch.__version__, "prefill": []}
    for n in (int(x) for x in args.lengths.split(",")):
        ids = prompt(n)
        timed_generate(model, ids, 1)
        times = [timed_generate(model, ids, 1) for _ in range(args.repeats)]
        result["prefill"].append({"tokens": n, "median_ms": 1e3 * statistics.median(times),
                                  "min_ms": 1e3 * min(times)})
        print(f"  transformers TTFT {n:>5} tokens: {result['prefill'][-1]['median_ms']:.2f} ms")

    ids, steps = prompt(128), args.decode_steps
    timed_generate(model, ids, steps + 1)
    per_token = []
    for _ in range(max(1, args.repeats // 2)):
        one = timed_generate(model, ids, 1)
        full = timed_generate(model, ids, steps + 1)
        per_token.append((full - one) / steps)
    med = statistics.median(per_token)
    result["decode"] = {"context": 128, "steps": steps, "median_ms": 1e3 * med,
                        "tokens_per_s": 1.0 / med}
    print(f"  transformers decode: {1.0 / med:.1f} tokens/s")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
