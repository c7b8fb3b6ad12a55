"""GPTQ 4-bit checkpoints (issue 14) against two oracles.

Each case builds a small synthetic Qwen3 in numpy, quantizes its linears by
round-to-nearest into the standard GPTQ layout exactly as GPTQModel and
AutoGPTQ store it (qweight codes packed down the input dimension, qzeros
packed across outputs, f16 scales, g_idx; format "gptq" storing zero - 1,
"gptq_v2" the zero itself), and writes beside it the same model with every
linear dequantized in f32 as an ordinary checkpoint:
  - folo's logits on the 4-bit checkpoint must equal, bit for bit, folo's on
    the dequantized twin (the int4 path computes exactly the twin's f32
    weights and multiplies them in the same order);
  - the twin's logits must match transformers on the same f32 weights
    within the tolerance of test_logits.py, argmax for argmax;
  - with --dtype bfloat16, folo's logits on the 4-bit checkpoint must equal
    those on the twin with its linears rounded to bf16.
Cases cover both formats, symmetric and asymmetric zeros, group sizes 32,
128 and -1, act-order with a permuted g_idx, a quantized and an unquantized
lm_head, and the configuration in config.json (transformers' spelling) or
in quantize_config.json (GPTQModel 7's `method` and `format`).
Malformed checkpoints (bits 3, another method, wrong shapes and dtypes,
missing g_idx, bad groups) must fail with one line naming the field or the
tensor.

Run by ctest (FOLO_BIN set); `pytest -s` prints the measured errors."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from gptq_layout import dequantize, pack
from logits_helpers import (FOLO, compare, folo_logits, load_oracle, oracle_logits,
                            random_qwen3)

TOLERANCE = 1e-4
VOCAB = 1024
CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "vocab_size": VOCAB,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "hidden_act": "silu",
    "attention_bias": False,
    "use_sliding_window": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float32",
}
PROMPT = [int(i) for i in np.random.RandomState(3).randint(0, VOCAB, size=24)]
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
RESULTS = {}


def float_model(seed, tied):
    """name -> f32 array of a random Qwen3 with CONFIG's sizes."""
    return random_qwen3(CONFIG, seed, tied, embed_std=1.0, head_std=0.06)


def quantize(W, group_size, sym, act_order, v1, rng, bits=4):
    """Round-to-nearest GPTQ of W [N, K] at `bits` (4 or 8): codes [N, K],
    true zeros and f16 scales [n_groups, N], g_idx [K]."""
    maxq = (1 << bits) - 1
    N, K = W.shape
    G = K if group_size == -1 else group_size
    n_groups = K // G
    g_idx = np.arange(K, dtype=np.int32) // G
    if act_order:  # groups formed in a permuted column order, as desc_act does
        g_idx = np.empty(K, dtype=np.int32)
        g_idx[rng.permutation(K)] = np.arange(K) // G
    codes = np.zeros((N, K), dtype=np.uint32)
    zeros = np.zeros((n_groups, N), dtype=np.uint32)
    scales = np.zeros((n_groups, N), dtype=np.float16)
    for g in range(n_groups):
        cols = np.nonzero(g_idx == g)[0]
        Wg = W[:, cols]
        if sym:
            scale = 2 * np.abs(Wg).max(axis=1) / maxq
            zero = np.full(N, (maxq + 1) / 2)
        else:
            lo, hi = np.minimum(Wg.min(axis=1), 0), np.maximum(Wg.max(axis=1), 0)
            scale = (hi - lo) / maxq
            zero = np.round(-lo / scale)
        # Format "gptq" cannot store a zero of 0 (it keeps zero - 1 in `bits` bits).
        zero = np.clip(zero, 1 if v1 else 0, maxq)
        scales[g] = scale.astype(np.float16)
        s32 = scales[g].astype(np.float32)
        zeros[g] = zero.astype(np.uint32)
        codes[:, cols] = np.clip(np.round(Wg / s32[:, None]) + zero[:, None], 0, maxq)
    return codes, zeros, scales, g_idx


def write(out, tensors, config, quantize_config=None):
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    if quantize_config is not None:
        (out / "quantize_config.json").write_text(json.dumps(quantize_config, indent=2))
    return out


def module_config(dynamic, prefix, base):
    """The quantization of module prefix under GPTQModel's "dynamic" rules as
    vLLM applies them (the first rule whose regex matches the start of the
    name decides; "-:" leaves the module float): a dict, or None."""
    for key, overrides in dynamic.items():
        if re.match(key[2:] if key[:2] in ("+:", "-:") else key, prefix):
            return None if key.startswith("-:") else dict(base, **overrides)
    return base


def make_pair(root, name, fmt, sym, group_size, act_order, lm_head, in_config_json, seed,
              dynamic=None):
    """Writes root/name-gptq and root/name-dequant; returns both paths."""
    v1 = fmt == "gptq"
    tied = not lm_head
    weights = float_model(seed, tied)
    rng = np.random.default_rng(seed + 1)
    base = {"bits": 4, "group_size": group_size, "desc_act": act_order}
    quant, twin = {}, {}
    for key, value in weights.items():
        prefix = key[:-len(".weight")]
        is_linear = any(prefix.endswith(l) for l in LINEARS) or (lm_head and key == "lm_head.weight")
        module = module_config(dynamic or {}, prefix, base) if is_linear else None
        if module is None:
            quant[key] = twin[key] = value
            continue
        parts = quantize(value, module["group_size"], sym, module["desc_act"], v1, rng,
                         module["bits"])
        for suffix, tensor in pack(*parts, v1, module["bits"]).items():
            quant[f"{prefix}.{suffix}"] = tensor
        twin[key] = dequantize(*parts)
    qc = {"quant_method": "gptq", "bits": 4, "group_size": group_size, "desc_act": act_order,
          "sym": sym, "checkpoint_format": fmt, "lm_head": lm_head, "true_sequential": True,
          "damp_percent": 0.01, "static_groups": False, "pack_dtype": "int32",
          "meta": {"quantizer": ["test_gptq.py"]}}
    if dynamic:
        qc["dynamic"] = dynamic
    config = dict(CONFIG, tie_word_embeddings=tied)
    # GPTQModel 7's quantize_config.json spells the method and format so.
    qc_file = {{"quant_method": "method", "checkpoint_format": "format"}.get(k, k): v
               for k, v in qc.items()}
    gptq_dir = write(root / f"{name}-gptq", quant,
                     dict(config, quantization_config=qc) if in_config_json else config,
                     None if in_config_json else qc_file)
    return gptq_dir, write(root / f"{name}-dequant", twin, config)


CASES = {
    # name: format, sym, group size, act-order, quantized lm_head, config in config.json
    "v1-sym-g128": ("gptq", True, 128, False, False, True),
    "v2-asym-g32-lmhead": ("gptq_v2", False, 32, False, True, False),
    "v1-asym-per-channel": ("gptq", False, -1, False, False, True),
    "v2-sym-g128-actorder": ("gptq_v2", True, 128, True, False, True),
    "v1-asym-g32-actorder-lmhead": ("gptq", False, 32, True, True, False),
    # GPTQModel's per-module rules, in the file's order: an 8-bit head (what
    # `folo quantize --lm-head int8` writes), one float linear, and layer 1's
    # MLP at 8 bits in groups of 64 but its down_proj, which the earlier
    # rule keeps 4-bit (the first match decides)
    "v1-sym-g32-dynamic": ("gptq", True, 32, False, True, True),
}
DYNAMIC = {
    "v1-sym-g32-dynamic": {
        "+:lm_head": {"bits": 8},
        "-:model\\.layers\\.0\\.self_attn\\.o_proj": {},
        "+:model\\.layers\\.1\\.mlp\\.down_proj": {"bits": 4},
        "+:model\\.layers\\.1\\.mlp\\.": {"bits": 8, "group_size": 64, "damp_percent": 0.02},
    },
}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gptq")
    return {name: make_pair(root, name, *case, seed=20 + i, dynamic=DYNAMIC.get(name))
            for i, (name, case) in enumerate(CASES.items())}


@pytest.mark.parametrize("name", CASES)
def test_gptq_logits_equal_dequantized_twin(pairs, name):
    gptq_dir, twin_dir = pairs[name]
    got = folo_logits(gptq_dir, PROMPT)
    twin = folo_logits(twin_dir, PROMPT)
    assert got.shape == (len(PROMPT), VOCAB)
    assert np.array_equal(got, twin), f"{name}: max |diff| {np.abs(got - twin).max()}"


@pytest.mark.parametrize("name", CASES)
def test_dequantized_twin_matches_transformers(pairs, name):
    _, twin_dir = pairs[name]
    got = folo_logits(twin_dir, PROMPT)
    rel, same_argmax = compare(f"gptq {name} (dequantized, f32)", got,
                               oracle_logits(load_oracle(twin_dir, torch.float32), PROMPT),
                               RESULTS)
    assert rel.max() <= TOLERANCE
    assert same_argmax.all()


@pytest.mark.parametrize("isa", ["portable", "avx2"])
@pytest.mark.parametrize("name", ["v1-asym-g32-actorder-lmhead", "v1-sym-g32-dynamic"])
def test_gptq_equals_twin_with_other_kernels(pairs, isa, name, monkeypatch):
    """The plain C dequantization with the portable and AVX2 float matmuls
    (FOLO_CPU_ISA): the same equality, on act-order and a quantized head,
    and on 8-bit linears."""
    monkeypatch.setenv("FOLO_CPU_ISA", isa)
    gptq_dir, twin_dir = pairs[name]
    assert np.array_equal(folo_logits(gptq_dir, PROMPT), folo_logits(twin_dir, PROMPT))


def bf16_twin(twin_dir, out):
    """The dequantized twin with its quantized linears (the tensors of
    twin_dir that the 4-bit checkpoint lacks) rounded to bf16, to nearest
    even, and stored as BF16; the rest stays f32."""
    from safetensors.torch import save_file as save_torch
    gptq = load_file(str(twin_dir.parent / twin_dir.name.replace("-dequant", "-gptq")
                         / "model.safetensors"))
    tensors = {k: torch.from_numpy(v) for k, v in load_file(str(twin_dir / "model.safetensors")).items()}
    for key in tensors:
        if key not in gptq:
            tensors[key] = tensors[key].to(torch.bfloat16)
    out.mkdir()
    save_torch(tensors, str(out / "model.safetensors"))
    shutil.copy(twin_dir / "config.json", out / "config.json")
    return out


@pytest.mark.parametrize("name", ["v1-sym-g128", "v1-asym-g32-actorder-lmhead",
                                  "v1-sym-g32-dynamic"])
@pytest.mark.parametrize("isa", ["default", "portable"])
def test_gptq_bfloat16_equals_bf16_twin(pairs, name, isa, tmp_path):
    """--dtype bfloat16 rounds each dequantized weight to bf16 and multiplies
    it with the bf16-rounded activations: bit for bit what the twin holding
    those bf16 weights computes, for the prompt in one forward (panels of
    bf16 rows, matmul_bf16) and in chunks of 5 tokens (the bf16 GEMV where
    the ISA has one), with the SIMD and the portable kernels. Both read
    their float weights as stored (--no-weight-copy): a copy would hold the
    bf16 ones as row panels, which matmul_bf16_panels sums in another
    order."""
    env = {"FOLO_CPU_ISA": "portable"} if isa == "portable" else None
    gptq_dir, twin_dir = pairs[name]
    twin16 = bf16_twin(twin_dir, tmp_path / "bf16-twin")
    want = folo_logits(twin16, PROMPT, dtype="bfloat16", env=env, no_weight_copy=True)
    for chunk in (None, 5):
        got = folo_logits(gptq_dir, PROMPT, chunk=chunk, dtype="bfloat16", env=env,
                          no_weight_copy=True)
        assert np.array_equal(got, want), f"{name} chunk {chunk}: max |diff| {np.abs(got - want).max()}"
    # the weights were rounded: the f32 twin's logits differ
    assert not np.array_equal(want, folo_logits(twin_dir, PROMPT, dtype="bfloat16", env=env))


def test_gptq_chunked_equals_one_shot(pairs):
    gptq_dir, _ = pairs["v2-sym-g128-actorder"]
    assert np.array_equal(folo_logits(gptq_dir, PROMPT, chunk=5), folo_logits(gptq_dir, PROMPT))


def test_quantized_model_stays_near_float(pairs, tmp_path):
    """4-bit weights move the logits, but not far: a check that the codes
    are read as the quantizer meant them. Round-to-nearest on these random
    weights moves the logits by about 0.3-0.4 relative L2; a wrong nibble
    order or zero convention gives unrelated logits, about sqrt(2) away."""
    gptq_dir, _ = pairs["v1-sym-g128"]
    weights = float_model(20, tied=True)
    float_dir = write(tmp_path / "float", weights, dict(CONFIG, tie_word_embeddings=True))
    rel = np.linalg.norm(folo_logits(gptq_dir, PROMPT) - folo_logits(float_dir, PROMPT), axis=1)
    rel /= np.linalg.norm(folo_logits(float_dir, PROMPT), axis=1)
    print(f"\n4-bit RTN vs float logits: max rel L2 {rel.max():.3f}")
    assert rel.max() < 0.6


# ---- malformed checkpoints ---------------------------------------------------

def folo_error(model_dir, device="cpu"):
    out = model_dir / "logits.f32"
    proc = subprocess.run([FOLO, "logits", "-m", str(model_dir), "--ids", "1,2,3", "--out",
                           str(out), "--device", device], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if not l.startswith("folo info:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_cuda_refuses_mixed_layouts_by_name(pairs):
    """The CUDA GPTQ kernels read 4-bit linears only: a checkpoint whose
    rules make some 8-bit or float is refused before any GPU is looked for
    (so here too), naming the linear."""
    gptq_dir, _ = pairs["v1-sym-g32-dynamic"]
    line = folo_error(gptq_dir, device="cuda")
    assert "layer 0's o_proj is not quantized" in line and "--device cpu" in line, line


def edit_config(model_dir, change):
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    change(config["quantization_config"])
    path.write_text(json.dumps(config))


def edit_tensors(model_dir, change):
    path = model_dir / "model.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))


Q = "model.layers.0.self_attn.q_proj"
MALFORMED = {
    "bits 3": (lambda d: edit_config(d, lambda q: q.update(bits=3)), ['"bits" is 3']),
    "awq": (lambda d: edit_config(d, lambda q: q.update(quant_method="awq")),
            ['"quant_method" is "awq"']),
    "marlin format": (lambda d: edit_config(d, lambda q: q.update(checkpoint_format="marlin")),
                      ['"checkpoint_format" is "marlin"']),
    "group size 48": (lambda d: edit_config(d, lambda q: q.update(group_size=48)),
                      ["group_size 48"]),
    "group size 0": (lambda d: edit_config(d, lambda q: q.update(group_size=0)),
                     ['"group_size" is 0']),
    "dynamic bad regex": (lambda d: edit_config(d, lambda q: q.update(dynamic={"+:(": {}})),
                          ['"dynamic" rule "+:("', "not a valid regular expression"]),
    "dynamic unknown field": (lambda d: edit_config(
        d, lambda q: q.update(dynamic={"+:lm_head": {"damp_percent": 0.1, "v2": True}})),
        ['"dynamic" rule "+:lm_head"', '"v2"', "not supported"]),
    "dynamic bits 3": (lambda d: edit_config(d, lambda q: q.update(dynamic={".*q_proj": {"bits": 3}})),
                       ['"dynamic" rule ".*q_proj"', '"bits" is 3']),
    "dynamic not an object": (lambda d: edit_config(d, lambda q: q.update(dynamic=["-:.*"])),
                              ['"dynamic" must be an object']),
    # a "-:" rule makes the linear float: its float weight must be there
    "dynamic excludes a stored linear": (
        lambda d: edit_config(d, lambda q: q.update(dynamic={"-:.*\\.0\\.mlp\\.down": {}})),
        ["missing tensor 'model.layers.0.mlp.down_proj.weight'"]),
    "8-bit rule on 4-bit tensors": (
        lambda d: edit_config(d, lambda q: q.update(dynamic={"+:.*\\.1\\.self_attn\\.q": {"bits": 8}})),
        ["'model.layers.1.self_attn.q_proj.qweight'", "expected [64, 256]"]),
    "missing g_idx": (lambda d: edit_tensors(d, lambda t: t.pop(Q + ".g_idx")),
                      [f"'{Q}.g_idx'", "missing"]),
    "transposed qweight": (lambda d: edit_tensors(
        d, lambda t: t.update({Q + ".qweight": np.ascontiguousarray(t[Q + ".qweight"].T)})),
        [f"'{Q}.qweight'", "shape [256, 32]", "expected [32, 256]"]),
    "f32 qweight": (lambda d: edit_tensors(
        d, lambda t: t.update({Q + ".qweight": t[Q + ".qweight"].astype(np.float32)})),
        [f"'{Q}.qweight'", "dtype F32"]),
    "int32 scales": (lambda d: edit_tensors(
        d, lambda t: t.update({Q + ".scales": t[Q + ".scales"].astype(np.int32)})),
        [f"'{Q}.scales'", "dtype I32"]),
    "g_idx out of range": (lambda d: edit_tensors(
        d, lambda t: t[Q + ".g_idx"].__setitem__(7, 9)), [f"'{Q}.g_idx'", "column 7", "group 9"]),
    "float linears": (lambda d: edit_tensors(d, lambda t: [t.pop(k) for k in list(t)
                                                           if k.startswith(Q + ".")]),
                      [f"'{Q}.qweight'", "missing"]),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_checkpoint_is_refused_by_name(pairs, tmp_path, case):
    gptq_dir, _ = pairs["v1-sym-g128"]
    bad = tmp_path / "bad"
    shutil.copytree(gptq_dir, bad)
    change, expected = MALFORMED[case]
    change(bad)
    line = folo_error(bad)
    for text in expected:
        assert text in line, line


# ---- round-to-nearest GPTQ checkpoints for the benchmarks (docs/gptq.md) ----

def quantize_checkpoint(src, out, group_size=128, lm_head=False, twin=None):
    """Writes OUT, SRC's checkpoint with its linears quantized by this file's
    round-to-nearest packer (format gptq, symmetric), other tensors kept;
    with `twin`, also that directory: the same model with every quantized
    linear dequantized to f32, as an ordinary checkpoint."""
    from safetensors.torch import load_file as load_torch, save_file as save_torch

    src, out = Path(src), Path(out)
    config = json.loads((src / "config.json").read_text())
    tensors = load_torch(str(src / "model.safetensors"))
    if lm_head and "lm_head.weight" not in tensors:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
        config["tie_word_embeddings"] = False
    rng = np.random.default_rng(0)
    result, dequantized = {}, {}
    for key, value in tensors.items():
        prefix = key[:-len(".weight")]
        if not (any(prefix.endswith(l) for l in LINEARS) or (lm_head and prefix == "lm_head")):
            result[key] = dequantized[key] = value
            continue
        parts = quantize(value.float().numpy(), group_size, True, False, True, rng)
        for suffix, tensor in pack(*parts, True).items():
            result[f"{prefix}.{suffix}"] = torch.from_numpy(np.ascontiguousarray(tensor))
        dequantized[key] = torch.from_numpy(dequantize(*parts))
    files = ["generation_config.json", "tokenizer.json", "tokenizer_config.json"]
    for directory, weights, cfg in [
            (out, result, dict(config, quantization_config={
                "quant_method": "gptq", "bits": 4, "group_size": group_size, "desc_act": False,
                "sym": True, "checkpoint_format": "gptq", "lm_head": lm_head})),
            (twin, dequantized, dict(config, torch_dtype="float32"))]:
        if directory is None:
            continue
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_torch({k: v.contiguous() for k, v in weights.items()},
                   str(directory / "model.safetensors"))
        (directory / "config.json").write_text(json.dumps(cfg, indent=2))
        for name in files:
            if (src / name).exists():
                shutil.copy(src / name, directory / name)


def main():
    """python tests/python/test_gptq.py SRC OUT [--group-size G] [--lm-head]:
    writes OUT, SRC's checkpoint with its linears quantized by this file's
    round-to-nearest packer (format gptq, symmetric), other tensors kept."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("src")
    parser.add_argument("out")
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--lm-head", action="store_true", help="quantize lm_head too (untied)")
    args = parser.parse_args()
    quantize_checkpoint(args.src, args.out, args.group_size, args.lm_head)


if __name__ == "__main__":
    main()
