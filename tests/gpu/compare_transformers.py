"""`folo logits --device cuda` against Hugging Face transformers on the GPU.

    python3 tests/gpu/compare_transformers.py --folo BUILD/folo --model DIR \
        --out RESULT.json [--lengths 1,7,64,300] [--device cuda]

For each prompt length, random token ids (fixed seed) go through folo and
through Qwen3ForCausalLM loaded from the same checkpoint, twice: in bf16 as
users run it (`from_pretrained(dir, dtype=torch.bfloat16).cuda()`, which
rounds every activation to bf16) and in f32 with the weights upcast (a
reference closer to the exact function, since folo keeps its residual stream
and accumulations in f32). Reported per reference: the max and mean over
positions of ‖folo − ref‖ / ‖ref‖, the fraction of positions whose
argmax agree, and how many of those that differ are not near-ties (a
near-tie: the reference's logit of folo's pick is within the row's largest
|folo − ref| of the reference's top logit, so the measured error alone
explains the flip; random weights make such ties common). Exit status 1
when the f32-reference error passes --tol (default 2e-2) or any argmax
differs outside a near-tie; the numbers are written
to --out as JSON either way. Runs on the GPU machine's python3 (torch and
transformers, no network)."""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import Qwen3ForCausalLM


def folo_logits(folo, model_dir, ids, device, vocab):
    with tempfile.NamedTemporaryFile(suffix=".bin") as out:
        cmd = [folo, "logits", "-m", model_dir, "--device", device, "--ids",
               ",".join(str(i) for i in ids), "--out", out.name]
        subprocess.run(cmd, check=True)
        return np.fromfile(out.name, dtype="<f4").reshape(len(ids), vocab)


@torch.no_grad()
def reference_logits(model, ids, torch_device):
    x = torch.tensor([ids], dtype=torch.long, device=torch_device)
    return model(input_ids=x).logits[0].float().cpu().numpy()


def compare(got, ref):
    rel = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
    rel[~np.isfinite(got).all(axis=1)] = np.inf
    pick = got.argmax(axis=1)
    same = pick == ref.argmax(axis=1)
    rows = np.arange(len(ref))
    gap = ref.max(axis=1) - ref[rows, pick]
    tie = gap <= np.abs(got - ref).max(axis=1)
    return {"max_rel_l2": float(rel.max()), "mean_rel_l2": float(rel.mean()),
            "argmax_agree": float(same.mean()), "argmax_differ_not_tie": int((~same & ~tie).sum())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folo", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lengths", default="1,7,64,300")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tol", type=float, default=2e-2)
    ap.add_argument("--torch-device", default="cuda", help="where transformers runs")
    args = ap.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]

    with open(os.path.join(args.model, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    rng = np.random.RandomState(0)
    prompts = [[int(i) for i in rng.randint(0, 151643, size=n)] for n in lengths]
    got = [folo_logits(args.folo, args.model, ids, args.device, vocab) for ids in prompts]

    results = {"model": args.model, "device": args.device, "tolerance": args.tol, "lengths": {}}
    for name, dtype in (("transformers_bf16", torch.bfloat16), ("transformers_f32", torch.float32)):
        model = Qwen3ForCausalLM.from_pretrained(args.model, dtype=dtype).to(args.torch_device).eval()
        for n, ids, logits in zip(lengths, prompts, got):
            ref = reference_logits(model, ids, args.torch_device)
            results["lengths"].setdefault(str(n), {})[name] = compare(logits, ref)
        del model

    ok = True
    for n, refs in results["lengths"].items():
        for name, r in refs.items():
            print(f"  {n:>5} tokens vs {name:<18} max rel L2 {r['max_rel_l2']:.3g}  "
                  f"mean {r['mean_rel_l2']:.3g}  argmax agree {100 * r['argmax_agree']:.1f}% "
                  f"({r['argmax_differ_not_tie']} differ outside near-ties)")
        f32 = refs["transformers_f32"]
        ok &= f32["max_rel_l2"] <= args.tol and f32["argmax_differ_not_tie"] == 0
    results["passed"] = bool(ok)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print("compare_transformers:", "passed" if ok else "FAILED", f"(tolerance {args.tol:g} vs f32)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
