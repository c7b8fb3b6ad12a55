"""Shared by test_logits.py and test_logits_slow.py: run `folo logits`, run
the transformers oracle on the same checkpoint, measure how far apart they
are, and record the figures.

The oracle is Qwen3ForCausalLM in PyTorch on the CPU with eager attention.
For a bf16 checkpoint, the like-for-like oracle loads the bf16 weights upcast
to float32 (folo multiplies bf16 weights with f32 activations, the same
math); native bf16 transformers rounds every activation to bf16 and is
reported for reference only."""

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from transformers import Qwen3ForCausalLM

FOLO = os.environ.get("FOLO_BIN", "build/folo")
VOCAB = 151936


def make_model(out, preset, dtype, seed=7, extra=()):
    args = [FOLO, "make-model", "--preset", preset, "--dtype", dtype, "--seed", str(seed),
            "--out", str(out), *extra]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return Path(out)


def random_qwen3(config, seed, tied, embed_std, head_std):
    """name -> f32 array of a random Qwen3 with config's sizes: linears
    N(0, 1.5²/K), embedding N(0, embed_std²), an untied head N(0, head_std²),
    norm weights 1 + 0.1·N(0, 1)."""
    rng = np.random.default_rng(seed)
    c = config
    V, H, I, D = c["vocab_size"], c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q_dim, kv_dim = c["num_attention_heads"] * D, c["num_key_value_heads"] * D
    shapes = {"self_attn.q_proj": (q_dim, H), "self_attn.k_proj": (kv_dim, H),
              "self_attn.v_proj": (kv_dim, H), "self_attn.o_proj": (H, q_dim),
              "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H), "mlp.down_proj": (H, I)}
    w = {"model.embed_tokens.weight": rng.normal(0, embed_std, (V, H)),
         "model.norm.weight": 1 + 0.1 * rng.normal(size=H)}
    if not tied:
        w["lm_head.weight"] = rng.normal(0, head_std, (V, H))
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        for name in ["input_layernorm", "post_attention_layernorm"]:
            w[p + name + ".weight"] = 1 + 0.1 * rng.normal(size=H)
        for name in ["self_attn.q_norm", "self_attn.k_norm"]:
            w[p + name + ".weight"] = 1 + 0.1 * rng.normal(size=D)
        for name, shape in shapes.items():
            w[p + name + ".weight"] = rng.normal(0, 1.5 / np.sqrt(shape[1]), shape)
    return {k: v.astype(np.float32) for k, v in w.items()}


def folo_logits(model_dir, ids, chunk=None, threads=None, dtype=None, env=None,
                no_weight_copy=False):
    """Logits [len(ids), V] from `folo logits` (env: extra environment variables)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "logits.f32"
        args = [FOLO, "logits", "-m", str(model_dir), "--ids", ",".join(map(str, ids)),
                "--out", str(out)]
        if chunk:
            args += ["--chunk", str(chunk)]
        if threads:
            args += ["--threads", str(threads)]
        if dtype:
            args += ["--dtype", dtype]
        if no_weight_copy:
            args += ["--no-weight-copy"]
        proc = subprocess.run(args, capture_output=True, text=True,
                              env={**os.environ, **(env or {})})
        assert proc.returncode == 0, proc.stderr
        data = np.fromfile(out, dtype="<f4")
    assert data.size % len(ids) == 0
    return data.reshape(len(ids), -1)


def load_oracle(model_dir, dtype):
    model = Qwen3ForCausalLM.from_pretrained(str(model_dir), dtype=dtype, attn_implementation="eager")
    model.eval()
    return model


BF16_ATTENTION_TILE = 32  # keys per tile of folo's online softmax (FOLO_CPU_ATTN_TILE)


def bf16_oracle_logits(model_dir, ids):
    """Logits [len(ids), V] of transformers in f32 computing what `--dtype
    bfloat16` computes: every nn.Linear's input rounded to bf16 (weights and
    sums untouched), and attention as bf16_tiled_attention (the eager
    attention replaced for the call)."""
    import transformers.models.qwen3.modeling_qwen3 as qwen3
    model = load_oracle(model_dir, torch.float32)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_pre_hook(lambda _m, args: (args[0].bfloat16().float(),))
    eager = qwen3.eager_attention_forward
    qwen3.eager_attention_forward = bf16_tiled_attention
    try:
        return oracle_logits(model, ids)
    finally:
        qwen3.eager_attention_forward = eager


def bf16_tiled_attention(module, query, key, value, attention_mask, scaling, dropout=0.0,
                         **kwargs):
    """The attention of `--dtype bfloat16`, in f32 torch: queries, keys and
    values rounded to bf16; the online softmax over tiles of
    BF16_ATTENTION_TILE keys (running max, its rescaling, the denominator
    summed unrounded); each tile's probabilities rounded to bf16 before they
    multiply the values, as FlashAttention does. Same signature and result
    layout as transformers' eager_attention_forward."""
    import transformers.models.qwen3.modeling_qwen3 as qwen3
    q = query.bfloat16().float()
    k = qwen3.repeat_kv(key, module.num_key_value_groups).bfloat16().float()
    v = qwen3.repeat_kv(value, module.num_key_value_groups).bfloat16().float()
    scores = torch.matmul(q, k.transpose(2, 3)) * scaling  # [B, H, T, S]
    n_q, n_k = scores.shape[-2:]
    if attention_mask is None:  # causal, the queries being the last n_q positions
        visible = torch.ones(n_q, n_k, dtype=torch.bool).tril(n_k - n_q)
    else:
        visible = attention_mask[..., :n_k] > torch.finfo(attention_mask.dtype).min / 2
    scores = scores.masked_fill(~visible, float("-inf"))
    out = torch.zeros_like(q)
    run_max = torch.full(scores.shape[:-1] + (1,), float("-inf"))
    denom = torch.zeros_like(run_max)
    for p0 in range(0, n_k, BF16_ATTENTION_TILE):
        s = scores[..., p0:p0 + BF16_ATTENTION_TILE]
        tile_max = s.amax(-1, keepdim=True)
        seen = tile_max > float("-inf")  # a query skips the tiles past its position
        new_max = torch.where(seen, torch.maximum(run_max, tile_max), run_max)
        rescale = torch.where(seen, torch.exp(run_max - new_max), torch.ones_like(run_max))
        p = torch.exp(s - new_max).nan_to_num(0.0)
        denom = denom * rescale + p.sum(-1, keepdim=True)
        out = out * rescale + torch.matmul(p.bfloat16().float(),
                                           v[..., p0:p0 + BF16_ATTENTION_TILE, :])
        run_max = new_max
    return (out / denom).transpose(1, 2).contiguous(), None


def oracle_logits(model, ids):
    """Logits [len(ids), V] in float32 from transformers."""
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def relative_errors(got, ref):
    """Per-position relative L2 error ||got - ref|| / ||ref||."""
    got = got.astype(np.float64)
    ref = ref.astype(np.float64)
    return np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)


def folo_greedy(model_dir, prompt, n_new):
    """Greedy continuation: argmax of the last row, appended, n_new times."""
    ids = list(prompt)
    for _ in range(n_new):
        ids.append(int(folo_logits(model_dir, ids)[-1].argmax()))
    return ids[len(prompt):]


def oracle_greedy(model, prompt, n_new):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n_new):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def compare(name, got, ref, results):
    """Prints and records the errors of got against ref; returns them."""
    rel = relative_errors(got, ref)
    same_argmax = got.argmax(axis=1) == ref.argmax(axis=1)
    entry = {
        "positions": int(rel.size),
        "max_rel_l2": float(rel.max()),
        "mean_rel_l2": float(rel.mean()),
        "argmax_agree": float(same_argmax.mean()),
    }
    results[name] = entry
    print(f"\n{name}: max rel L2 {entry['max_rel_l2']:.3e}, mean {entry['mean_rel_l2']:.3e}, "
          f"argmax agreement {entry['argmax_agree']:.3f} over {entry['positions']} positions")
    return rel, same_argmax


def write_results(file_name, results):
    """Writes the figures to $FOLO_BUILD_DIR/<file_name> when that is set."""
    build_dir = os.environ.get("FOLO_BUILD_DIR")
    if build_dir and results:
        path = Path(build_dir) / file_name
        path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        print(f"\nerrors written to {path}")


# The tiny test checkpoint's oracles, as module-wide fixtures for the tests
# that import them: transformers' model (float32) and its tokenizer.
TINY = Path(os.environ.get("FOLO_TEST_MODEL", "build/test-models/tiny-f32"))


@pytest.fixture(scope="module")
def oracle():
    return load_oracle(TINY, torch.float32)


@pytest.fixture(scope="module")
def hf():
    return transformers.AutoTokenizer.from_pretrained(str(TINY))
