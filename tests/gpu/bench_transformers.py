"""The transformers side of scripts/gpu-check.sh's benchmark: Qwen3ForCausalLM
in bf16 on the GPU with its default attention, timed through `generate`.

    python3 tests/gpu/bench_transformers.py --model DIR --out RESULT.json \
        [--lengths 128,512,2048] [--decode-steps 256] [--repeats 5] \
        [--throughput 256 [--throughput-input-len 562] [--throughput-output-len 562] \
         [--random-range-ratio 0.822] [--seed 0] [--batch-size 64]] \
        [--concurrency 1,16,64,256 [--input-len 128] [--output-len 128]] \
        [--torch-device cuda|cpu]

TTFT of an N-token prompt: `generate(max_new_tokens=1)` (prefill and one
greedy token), median of --repeats after a warm-up. Single-stream decode:
a 128-token prompt generating 1 + S tokens (min_new_tokens keeps it from
stopping early), less the 1-token time, over S: seconds per decoded token,
median of --repeats. The GPU is synchronized around every timed call. The
same random ids as bench_backend are not needed: cost depends on lengths.

Offline throughput (--throughput N): N requests whose prompt and output
lengths are those `folo bench throughput --num-prompts N --input-len I
--output-len O --random-range-ratio R --seed S` draws (draw_lengths below
repeats folo's generator and bounds exactly, and
tests/python/test_bench_throughput_lengths.py checks it against folo's
--json), with random prompt ids. transformers has no continuous batching,
so the requests go in static batches of --batch-size, sorted by output
length (then prompt length) so that a batch's sequences finish together
and few decode steps are spent past a request's length; prompts are left
padded with an attention mask; each batch generates, greedily, as many
tokens as its longest request asks for (min_new_tokens = max_new_tokens).
Output tokens/s counts the tokens the requests asked for (folo's
total_output_tokens) over the wall time of all batches; generated_tokens
adds the ones past each request's length. Measured with the default
dynamic cache and again with cache_implementation="static" (without the
torch.compile transformers would add on CUDA: see throughput()); a variant
that fails is recorded with its error instead.

Concurrency (--concurrency 1,16,64,256): for each B, B sequences of
--input-len prompt tokens in one batched generate: TTFT is a 1-token
generate of the batch (after an unmeasured one), the total a generate of
--output-len tokens, TPOT = (total - TTFT) / (output_len - 1) per
sequence, output tokens/s = B x output_len / total."""

import argparse
import json
import math
import statistics
import sys
import time

import torch
from transformers import Qwen3ForCausalLM


MASK64 = (1 << 64) - 1
# folo's seed streams of the prompt and output lengths (src/bench/dataset.c)
# and its cap on a drawn length, tokens (src/bench/dataset.h).
STREAM_INPUT_LENS, STREAM_OUTPUT_LENS = 2, 3
MAX_LEN = 1 << 24


class SplitMix64:
    """folo_bench_rng (src/bench/random.c), bit for bit."""

    def __init__(self, seed, stream):
        self.state = (seed ^ (stream * 0xd1b54a32d192ed03)) & MASK64
        self.next()

    def next(self):
        self.state = (self.state + 0x9e3779b97f4a7c15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & MASK64
        return z ^ (z >> 31)

    def below(self, n):
        """Uniform in [0, n), rejecting the top partial range as folo does."""
        limit = MASK64 - MASK64 % n
        while True:
            x = self.next()
            if x < limit:
                return x % n


def length_bounds(length, ratio):
    """folo_bench_length_bounds: vLLM's floor/ceil bounds, low end >= 1."""
    lo = min(max(math.floor(length * (1 - ratio)), 1), MAX_LEN)
    return lo, min(max(math.ceil(length * (1 + ratio)), lo), MAX_LEN)


def draw_lengths(n, input_len, output_len, ratio, seed):
    """The prompt and output lengths of folo_bench_random_lengths: two lists."""
    if ratio == 0:
        return [input_len] * n, [output_len] * n
    lists = []
    for stream, length in ((STREAM_INPUT_LENS, input_len), (STREAM_OUTPUT_LENS, output_len)):
        rng, (lo, hi) = SplitMix64(seed, stream), length_bounds(length, ratio)
        lists.append([lo + rng.below(hi - lo + 1) for _ in range(n)])
    return lists


def synchronize(ids):
    if ids.is_cuda:
        torch.cuda.synchronize()


@torch.no_grad()
def timed_generate(model, ids, new_tokens, mask=None, **kwargs):
    synchronize(ids)
    start = time.perf_counter()
    out = model.generate(input_ids=ids,
                         attention_mask=torch.ones_like(ids) if mask is None else mask,
                         max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                         pad_token_id=0, **kwargs)
    synchronize(ids)
    elapsed = time.perf_counter() - start
    if out.shape != (ids.shape[0], ids.shape[1] + new_tokens):
        raise RuntimeError(f"generate returned {tuple(out.shape)} for {tuple(ids.shape)} "
                           f"and {new_tokens} new tokens")
    return elapsed


def throughput(model, prompt_ids, outs, batch_size, device, cache_implementation):
    """The offline workload in static batches (see the module's docstring):
    request i is prompt_ids[i] (a 1-D tensor) asking for outs[i] tokens."""
    ins = [len(p) for p in prompt_ids]
    order = sorted(range(len(ins)), key=lambda i: (outs[i], ins[i]))
    # disable_compile: on CUDA transformers would torch.compile the forward
    # for a static cache, again for each batch's shapes, and the compile
    # time would be most of what is measured.
    kwargs = ({"cache_implementation": cache_implementation, "disable_compile": True}
              if cache_implementation else {})
    elapsed, generated = 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width, steps = max(ins[i] for i in batch), max(outs[i] for i in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(batch):
            ids[row, width - ins[i]:] = prompt_ids[i]
            mask[row, width - ins[i]:] = 1
        # Copies to the device stay out of the time, as folo's prompts
        # are in memory before its clock starts.
        ids, mask = ids.to(device), mask.to(device)
        elapsed += timed_generate(model, ids, steps, mask, **kwargs)
        generated += len(batch) * steps
    return {"wall_s": elapsed, "batch_size": batch_size,
            "n_batches": math.ceil(len(order) / batch_size),
            "total_input_tokens": sum(ins), "total_output_tokens": sum(outs),
            "generated_tokens": generated, "output_tokens_per_s": sum(outs) / elapsed,
            "total_tokens_per_s": (sum(ins) + sum(outs)) / elapsed}


def concurrency(model, batch, args, prompt):
    ids = prompt(args.input_len, batch)
    timed_generate(model, ids, 1)
    ttft = timed_generate(model, ids, 1)
    total = timed_generate(model, ids, args.output_len)
    return {"batch_size": batch, "input_len": args.input_len, "output_len": args.output_len,
            "ttft_ms": 1e3 * ttft, "tpot_ms": 1e3 * (total - ttft) / (args.output_len - 1),
            "total_s": total, "output_tokens_per_s": batch * args.output_len / total}


def int_list(text):
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of "
                                         "positive integers")
    return values


def range_ratio(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number in [0, 1)")
    return value


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lengths", default="128,512,2048")
    ap.add_argument("--decode-steps", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--torch-device", default="cuda")
    ap.add_argument("--throughput", type=int, default=0, metavar="N",
                    help="offline throughput of N requests (0: not measured)")
    ap.add_argument("--throughput-input-len", type=int, default=562,
                    help="nominal prompt tokens of --throughput (folo's --input-len)")
    ap.add_argument("--throughput-output-len", type=int, default=562,
                    help="nominal output tokens of --throughput (folo's --output-len)")
    ap.add_argument("--random-range-ratio", type=range_ratio, default=0.822,
                    help="--throughput lengths uniform in len * [1 - R, 1 + R] as folo draws "
                         "them (default 0.822: with 562, the nano-vllm workload's 100-1024)")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the --throughput lengths (folo's --seed) and prompt ids")
    ap.add_argument("--throughput-caches", default="dynamic,static",
                    help="--throughput's cache variants, of dynamic and static (default both)")
    ap.add_argument("--batch-size", type=int, default=64,
                    help="--throughput requests per generate call")
    ap.add_argument("--concurrency", type=int_list, default=[], metavar="LIST",
                    help="TTFT, TPOT and tokens/s at each batch size, e.g. 1,16,64,256")
    ap.add_argument("--input-len", type=int, default=128, help="--concurrency prompt tokens")
    ap.add_argument("--output-len", type=int, default=128,
                    help="--concurrency output tokens (at least 2)")
    args = ap.parse_args()
    caches = args.throughput_caches.split(",")
    if not caches or any(c not in ("dynamic", "static") for c in caches):
        ap.error("--throughput-caches takes dynamic, static or both, comma-separated")
    for name, low in (("throughput", 0), ("throughput_input_len", 1),
                      ("throughput_output_len", 1), ("seed", 0), ("batch_size", 1),
                      ("input_len", 1), ("output_len", 2)):
        if getattr(args, name) < low:
            ap.error(f"--{name.replace('_', '-')} must be at least {low}")

    model = Qwen3ForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16)
    model = model.to(args.torch_device).eval()
    gen = torch.Generator().manual_seed(1)

    def prompt(n, batch=1):
        return torch.randint(0, 151643, (batch, n), generator=gen).to(args.torch_device)

    result = {"engine": "transformers", "attention": model.config._attn_implementation,
              "torch": torch.__version__, "prefill": []}

    def save():
        """Writes what is measured so far: a run cut off by a time limit
        still leaves its earlier figures."""
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
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
    save()

    result["concurrency"] = []
    for batch in args.concurrency:
        c = concurrency(model, batch, args, prompt)
        result["concurrency"].append(c)
        print(f"  transformers concurrency {batch:>4}: TTFT {c['ttft_ms']:.2f} ms, "
              f"TPOT {c['tpot_ms']:.3f} ms, {c['output_tokens_per_s']:.1f} output tokens/s")
        save()
    if args.throughput:
        ins, outs = draw_lengths(args.throughput, args.throughput_input_len,
                                 args.throughput_output_len, args.random_range_ratio, args.seed)
        ids_gen = torch.Generator().manual_seed(args.seed)
        prompt_ids = [torch.randint(0, 151643, (n,), generator=ids_gen) for n in ins]
        result["throughput"] = {
            "num_prompts": args.throughput, "input_len": args.throughput_input_len,
            "output_len": args.throughput_output_len,
            "random_range_ratio": args.random_range_ratio, "seed": args.seed,
            "input_len_range": length_bounds(args.throughput_input_len, args.random_range_ratio),
            "output_len_range": length_bounds(args.throughput_output_len,
                                              args.random_range_ratio)}
        for name in caches:
            cache = "static" if name == "static" else None
            try:
                run = throughput(model, prompt_ids, outs, args.batch_size, args.torch_device,
                                 cache)
            except Exception as e:  # noqa: BLE001 -- any failure of a variant is its result
                run = {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
                if args.torch_device.startswith("cuda"):
                    torch.cuda.empty_cache()
                print(f"  transformers throughput ({name} cache): failed: {run['error']}")
            else:
                print(f"  transformers throughput ({name} cache): "
                      f"{run['output_tokens_per_s']:.1f} output tokens/s, {run['wall_s']:.2f} s")
            result["throughput"][name] = run
            save()

    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
