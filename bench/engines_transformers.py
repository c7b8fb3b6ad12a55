"""Hugging Face transformers' `generate`, offline, on the requests of
bench/compare-engines.sh: the seeds' baseline row of its table.

    python3 bench/engines_transformers.py --model DIR --threads 2 \
        --requests c1=folo-c1.json,c4=folo-c4.json [--greedy-ids 785,3974,...] \
        [--greedy-tokens 16] --out transformers.json

For each `cC=FILE`, the requests of folo's `folo bench serve --json` run at
max concurrency C (the same prompt and output token counts, request by
request, in the same order; the prompts are random ids of those lengths,
as a dense forward's cost depends on the lengths only) go through
Qwen3ForCausalLM in bf16 on the CPU with `--threads` torch threads, in
static batches of C consecutive requests: transformers has no continuous
batching, so a batch runs until its longest request is done, and the next
starts after it. Prompts of a batch are left-padded with an attention mask;
each batch generates greedily as many tokens as its longest request asks
for (min_new_tokens = max_new_tokens, as the servers' ignore_eos).

A streamer stamps the end of every decoding step of the one `generate`
call, so per request, from the batch's start: TTFT = the first generated
token, ITL = the gaps between its following tokens, E2EL = its last token
(its own output length; later steps of its batch are not its work), TPOT =
(E2EL - TTFT) / (tokens - 1). The run's duration is the sum of the batches'
wall times. Summaries carry vLLM's names (bench/engines_report.summarize).
A first unmeasured generate warms the model up.

--greedy-ids also writes the greedy continuation (--greedy-tokens) of those
prompt ids, for the agreement check of the engines' first tokens."""

import argparse
import json
import os
import sys
import time

import torch
from transformers import Qwen3ForCausalLM
from transformers.generation.streamers import BaseStreamer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engines_report import summarize  # noqa: E402


class StepClock(BaseStreamer):
    """Records when each decoding step's tokens arrive. generate() first
    puts the prompt, then one tensor of new tokens per step."""

    def __init__(self):
        self.prompt_seen = False
        self.times = []

    def put(self, value):
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self):
        pass


@torch.no_grad()
def run_batch(model, prompts, outs):
    """One static batch: prompts (lists of ids) generating max(outs) tokens.
    Returns (per-request records, wall seconds)."""
    width, steps = max(len(p) for p in prompts), max(outs)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    clock = StepClock()
    start = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps,
                         min_new_tokens=steps, do_sample=False, pad_token_id=0,
                         streamer=clock)
    wall = time.perf_counter() - start
    if out.shape[1] != width + steps or len(clock.times) != steps:
        raise RuntimeError(f"generate made {out.shape[1] - width} tokens "
                           f"({len(clock.times)} steps) where {steps} were asked")
    records = []
    for p, n in zip(prompts, outs):
        t = [1e3 * (x - start) for x in clock.times[:n]]
        records.append({"prompt_tokens": len(p), "output_tokens": n, "ttft_ms": t[0],
                        "e2el_ms": t[-1], "itl_ms": [b - a for a, b in zip(t, t[1:])]})
    return records, wall


def run_requests(model, lengths, concurrency, gen):
    """lengths: [(prompt tokens, output tokens)] -> (records, duration s)."""
    records, duration = [], 0.0
    for start in range(0, len(lengths), concurrency):
        batch = lengths[start:start + concurrency]
        prompts = [torch.randint(0, 151643, (n,), generator=gen).tolist() for n, _ in batch]
        r, wall = run_batch(model, prompts, [o for _, o in batch])
        records += r
        duration += wall
        print(f"  transformers c{concurrency}: {len(records)}/{len(lengths)} requests, "
              f"{duration:.1f} s", file=sys.stderr)
    return records, duration


def serve_lengths(path):
    """(prompt tokens, output tokens) of every request of the first rate of a
    `folo bench serve --json` file."""
    with open(path) as f:
        j = json.load(f)
    reqs = j["results"][0]["requests"]
    bad = [i for i, r in enumerate(reqs) if not r["ok"]]
    if bad:
        raise SystemExit(f"{path}: request {bad[0]} failed in folo's run; its lengths are "
                         "not known")
    return [(r["prompt_tokens"], r["output_tokens"]) for r in reqs]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--requests", required=True,
                    help="comma-separated cC=FILE: folo's bench serve JSON at concurrency C")
    ap.add_argument("--greedy-ids", default="", help="comma-separated prompt ids")
    ap.add_argument("--greedy-tokens", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0, help="seed of the random prompt ids")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    runs = []
    for item in args.requests.split(","):
        name, _, path = item.partition("=")
        if not name.startswith("c") or not name[1:].isdigit() or int(name[1:]) < 1 or not path:
            ap.error(f"--requests: '{item}' is not cC=FILE with C >= 1")
        runs.append((int(name[1:]), path))
    if args.threads < 1:
        ap.error("--threads must be at least 1")

    torch.set_num_threads(args.threads)
    model = Qwen3ForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).eval()
    gen = torch.Generator().manual_seed(args.seed)
    result = {"engine": "transformers", "torch": torch.__version__,
              "transformers": sys.modules["transformers"].__version__,
              "threads": torch.get_num_threads(),
              "attention": model.config._attn_implementation, "concurrency": []}
    run_batch(model, [[1, 2, 3, 4]], [4])
    for concurrency, path in runs:
        records, duration = run_requests(model, serve_lengths(path), concurrency, gen)
        result["concurrency"].append({"max_concurrency": concurrency,
                                      "summary": summarize(records, duration),
                                      "requests": records})
    if args.greedy_ids:
        ids = torch.tensor([[int(x) for x in args.greedy_ids.split(",")]])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=args.greedy_tokens,
                                 min_new_tokens=args.greedy_tokens, do_sample=False,
                                 pad_token_id=0)
        result["greedy_ids"] = out[0, ids.shape[1]:].tolist()
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
