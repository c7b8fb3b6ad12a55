"""Asks a running server for the greedy continuation of prompt ids, as token
ids, for bench/compare-engines.sh's agreement check.

    python3 bench/engines_greedy.py --kind vllm|llama.cpp --url URL [--model NAME] \
        --ids 785,3974,... --tokens 16 --out greedy-E.json

vLLM: POST /v1/completions with the ids as the prompt, temperature 0 and
return_token_ids (the choice's token_ids). llama.cpp's llama-server: its
own POST /completion with return_tokens (the response's tokens), as its
OpenAI route returns text only. Both with ignore_eos, so exactly --tokens
tokens come back. Writes {"ids": [...]}."""

import argparse
import json
import sys
import urllib.request


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.load(resp)


def greedy_ids(kind, url, model, ids, tokens):
    if kind == "vllm":
        doc = post(url + "/v1/completions",
                   {"model": model, "prompt": ids, "max_tokens": tokens, "temperature": 0,
                    "ignore_eos": True, "return_token_ids": True})
        return doc["choices"][0]["token_ids"]
    doc = post(url + "/completion",
               {"prompt": ids, "n_predict": tokens, "temperature": 0, "ignore_eos": True,
                "return_tokens": True, "cache_prompt": False})
    return doc["tokens"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=("vllm", "llama.cpp"), required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default="")
    ap.add_argument("--ids", required=True)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ids = [int(x) for x in args.ids.split(",")]
    try:
        out = greedy_ids(args.kind, args.url.rstrip("/"), args.model, ids, args.tokens)
    except (OSError, KeyError, IndexError, ValueError) as e:
        sys.exit(f"engines_greedy: {args.kind} at {args.url}: {type(e).__name__}: {e}")
    if len(out) != args.tokens or not all(isinstance(t, int) for t in out):
        sys.exit(f"engines_greedy: {args.kind} returned {out!r}, not {args.tokens} token ids")
    with open(args.out, "w") as f:
        json.dump({"ids": out}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
