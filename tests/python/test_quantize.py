"""`folo quantize` (issue 14, item 2) against independent oracles.

A small random Qwen3 with the real tokenizer (so calibration text
tokenizes as it would for Qwen3-0.6B) is quantized by folo, and:
  - codes: an independent GPTQ in numpy (float64, written from the GPTQ
    paper and the reference implementation's description, sharing nothing
    with folo's C but the inputs) given the very calibration inputs folo
    used (its hidden --dump-inputs flag writes them) picks the same codes,
    zeros, scales and g_idx;
  - those inputs are the ones transformers computes on the calibration
    windows through the model with the already-quantized linears (the
    "true sequential" order), checked with forward hooks;
  - the algorithm beats rounding: for every linear of every layer,
    ||WX - ŴX||² / ||WX||² on transformers' activations, Ŵ read back from
    the written files, is lower for GPTQ than for round-to-nearest on the
    same groups, and folo's printed figures agree; end to end, the KL
    divergence of next-token distributions against the float model on
    held-out text is lower too;
  - the checkpoint loads: folo's logits on it equal transformers running
    the dequantized weights within f32 tolerance (as test_gptq.py), across
    sym/asym, act-order on/off, group sizes 32/128/-1, formats gptq and
    gptq_v2, tied and untied heads; the float tensors are copied byte for
    byte and the configuration is GPTQModel's;
  - --lm-head [int8]: the head [V, H] is quantized like the other linears,
    at 4 bits or 8 (codes
    against the numpy GPTQ on its inputs, the final norm's output, which
    are transformers' through the quantized layers; its error below
    RTN's), written untied with the embedding unchanged, and runs as
    transformers does on its dequantized weights; RTN needs no calibration;
  - bad flags and bad inputs fail with a message naming what was wrong.

Run by ctest (FOLO_BIN set); `pytest -s` prints the measured figures."""

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

from gptq_layout import dequantize, unpack
from logits_helpers import (FOLO, compare, folo_logits, load_oracle, oracle_logits,
                            random_qwen3)

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = Path(os.environ.get("FOLO_TOKENIZER_DIR", ROOT / "models/qwen3-tokenizer"))
VOCAB = 151936
CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "vocab_size": VOCAB,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "hidden_act": "silu",
    "attention_bias": False,
    "use_sliding_window": False,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "torch_dtype": "float32",
}
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
SHORT = ["q", "k", "v", "o", "gate", "up", "down"]
TAP_OF = {"q": "qkv", "k": "qkv", "v": "qkv", "o": "o", "gate": "gate_up", "up": "gate_up",
          "down": "down"}
N_SAMPLES, SEQ_LEN = 16, 64
TOLERANCE = 1e-4
# Codes that an independent float64 GPTQ may pick differently: a weight
# whose w/scale lies within rounding noise (~1e-13 relative) of a .5 tie
# can round either way in two implementations that sum in different
# orders, and GPTQ's error feedback then moves the rest of that row a
# little. Such ties are so rare that none shows on these models (hundreds
# of thousands of codes); the bound leaves room for one such row per
# linear, no more.
MAX_CODE_MISMATCH = 2e-3
RESULTS = {}


# ---- the model and the text ----------------------------------------------------

def float_model(seed, tied):
    """name -> f32 array of a random Qwen3 with CONFIG's sizes. Embeddings
    small enough that the tied head's logits stay in the range of a trained
    model's (std about 0.6), where KL divergence measures small errors."""
    return random_qwen3(CONFIG, seed, tied, embed_std=0.05, head_std=0.1)


def write_model(out, weights, tied, config=CONFIG):
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(dict(config, tie_word_embeddings=tied), indent=2))
    (out / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        (out / name).write_bytes((TOKENIZER_DIR / name).read_bytes())
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("quantize")


@pytest.fixture(scope="module")
def source(root):
    return write_model(root / "float", float_model(5, tied=True), tied=True)


# Texts that never change (Debian's base-files installs them everywhere):
# the codes are compared bit for bit with an independent GPTQ, and a text
# that moved with every edit of the docs (as the docs themselves did) could
# land a scale on an f16 rounding tie that the two sides' f32 sums break
# differently.
CALIB_TEXT = Path("/usr/share/common-licenses/GPL-3")
HELD_OUT_TEXT = Path("/usr/share/common-licenses/Apache-2.0")


@pytest.fixture(scope="module")
def calib(root):
    """Calibration text: the GPL-3; held-out text: the Apache License 2.0."""
    path = root / "calib.txt"
    path.write_text(CALIB_TEXT.read_text())
    return path


def held_out_windows(n, length):
    ids = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json")).encode(
        HELD_OUT_TEXT.read_text()).ids
    return [ids[i * length:(i + 1) * length] for i in range(n)]


# ---- running folo quantize -----------------------------------------------------

def quantize(src, out, *flags, dump=None, expect=0):
    args = [FOLO, "quantize", "-m", str(src), "--out", str(out), *map(str, flags)]
    if dump:
        args += ["--dump-inputs", str(dump)]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == expect, proc.stderr
    return proc.stderr


HEAD = "lm_head"  # the head's key in the dicts below, beside (layer, short name)


def printed_errors(stderr):
    """{(layer, short name): relative error} from folo's progress lines, and
    HEAD: the head's, when quantized."""
    errors = {}
    for line in stderr.splitlines():
        m = re.search(r"layer (\d+)/\d+ .*‖WX−ŴX‖²/‖WX‖²:(.*)", line)
        if m:
            pairs = m.group(2).split()
            for name, value in zip(pairs[::2], pairs[1::2]):
                errors[(int(m.group(1)) - 1, name)] = float(value)
        m = re.search(r"lm_head \[\d+, \d+\] \(\d-bit\) in .*‖WX−ŴX‖²/‖WX‖²: lm_head (\S+)", line)
        if m:
            errors[HEAD] = float(m.group(1))
    return errors


def read_quantized(tensors, prefix, v1, bits=4):
    """(codes, zeros, scales f16, g_idx, dequantized W) of linear `prefix`."""
    codes, zeros = unpack(tensors[prefix + ".qweight"], tensors[prefix + ".qzeros"], v1, bits)
    scales, g_idx = tensors[prefix + ".scales"], tensors[prefix + ".g_idx"]
    return codes, zeros, scales, g_idx, dequantize(codes, zeros, scales, g_idx)


def read_linears(qdir, head=False):
    """{(layer, short name): read_quantized(...)} of the decoder linears;
    with head, HEAD: the quantized lm_head's too."""
    config = json.loads((qdir / "config.json").read_text())["quantization_config"]
    v1 = config["checkpoint_format"] == "gptq"
    tensors = load_file(str(qdir / "model.safetensors"))
    out = {(layer, short): read_quantized(tensors, f"model.layers.{layer}.{name}", v1)
           for layer in range(CONFIG["num_hidden_layers"]) for name, short in zip(LINEARS, SHORT)}
    if head:
        out[HEAD] = read_quantized(tensors, "lm_head", v1, head_bits(config))
    return out


def head_bits(quantization_config):
    """The head's bits: 8 when --lm-head int8 wrote its "dynamic" rule."""
    return quantization_config.get("dynamic", {}).get("+:lm_head", {}).get(
        "bits", quantization_config["bits"])


def dequantized_twin(qdir, out):
    """qdir's checkpoint with every linear, the head too when quantized,
    dequantized (numpy, f32)."""
    tensors = load_file(str(qdir / "model.safetensors"))
    twin = {k: v for k, v in tensors.items() if k.endswith(".weight")}
    for key, parts in read_linears(qdir, head="lm_head.qweight" in tensors).items():
        name = "lm_head" if key == HEAD else f"model.layers.{key[0]}.{LINEARS[SHORT.index(key[1])]}"
        twin[name + ".weight"] = parts[4]
    config = json.loads((qdir / "config.json").read_text())
    config.pop("quantization_config")
    out.mkdir(parents=True, exist_ok=True)
    save_file(twin, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config))
    return out


# ---- an independent GPTQ ----------------------------------------------------------

def grid(x, sym, min_one, maxq):
    """Per-row scale and zero of x [N, n] (the reference's min/max quantizer,
    codes 0..maxq)."""
    lo = np.minimum(x.min(axis=1), 0.0)
    hi = np.maximum(x.max(axis=1), 0.0)
    if sym:
        hi = np.maximum(-lo, hi)
        lo = np.where(lo < 0, -hi, lo)
    both_zero = (lo == 0) & (hi == 0)
    lo, hi = np.where(both_zero, -1.0, lo), np.where(both_zero, 1.0, hi)
    scale = (hi - lo) / maxq
    zero = np.full_like(scale, (maxq + 1) / 2) if sym else np.rint(-lo / scale)
    if min_one:
        zero = np.maximum(zero, 1.0)
    return scale, zero


def round_codes(w, scale, zero, maxq):
    return np.clip(np.rint(w / scale) + zero, 0, maxq)


def oracle_gptq(W, H, group_size, sym, desc_act, damp, min_one, method, bits=4,
                static_groups=False):
    """codes [N, K], zeros, scales (f16) [n_groups, N], g_idx [K]."""
    maxq = (1 << bits) - 1
    W = W.astype(np.float64)
    N, K = W.shape
    G = K if group_size == -1 else group_size
    if method == "rtn":
        scales, zeros, codes = [], [], np.zeros((N, K))
        for g in range(K // G):
            s, z = grid(W[:, g * G:(g + 1) * G], sym, min_one, maxq)
            codes[:, g * G:(g + 1) * G] = round_codes(W[:, g * G:(g + 1) * G], s[:, None],
                                                      z[:, None], maxq)
            scales.append(s)
            zeros.append(z)
        return codes, np.array(zeros), np.array(scales), np.arange(K) // G
    if group_size == -1:
        s, z = grid(W, sym, min_one, maxq)
    H = H.copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    static = static_groups and group_size != -1
    if static:  # every group's grid now, by the original columns
        grids = [grid(W[:, g * G:(g + 1) * G], sym, min_one, maxq) for g in range(K // G)]
    perm = np.argsort(-np.diag(H), kind="stable") if desc_act else np.arange(K)
    W, H = W[:, perm], H[perm][:, perm]
    H[np.diag_indices(K)] += damp * np.mean(np.diag(H))
    L_inv = np.linalg.inv(np.linalg.cholesky(H))
    U = np.linalg.cholesky(L_inv.T @ L_inv).T
    codes = np.zeros((N, K))
    scales, zeros = [], []
    for i1 in range(0, K, 128):
        i2 = min(i1 + 128, K)
        W1, Err1 = W[:, i1:i2].copy(), np.zeros((N, i2 - i1))
        for i in range(i2 - i1):
            col = i1 + i
            if static:
                s, z = grids[perm[col] // G]
            elif group_size != -1 and col % G == 0:
                s, z = grid(W[:, col:col + G], sym, min_one, maxq)
                scales.append(s)
                zeros.append(z)
            w = W1[:, i]
            c = round_codes(w, s, z, maxq)
            err = (w - s * (c - z)) / U[col, col]
            W1[:, i:] -= np.outer(err, U[col, i1 + i:i2])
            codes[:, col], Err1[:, i] = c, err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    if group_size == -1:
        scales, zeros = [s], [z]
    if static:
        scales, zeros = [g[0] for g in grids], [g[1] for g in grids]
    out_codes = np.zeros_like(codes)
    out_codes[:, perm] = codes
    g_idx = np.zeros(K, dtype=np.int64)
    g_idx[perm] = perm // G if static else np.arange(K) // G
    return out_codes, np.array(zeros), np.array(scales), g_idx


def to_f16(scales):
    """The stored scale: the f32 scale rounded to f16 (the reference's precision)."""
    return scales.astype(np.float32).astype(np.float16)


# ---- codes against the oracle ---------------------------------------------------

CASES = {
    # name: flags, method
    "gptq-sym-g32": (["--group-size", 32, "--lm-head"], "gptq"),
    "gptq-asym-g128-actorder": (["--group-size", 128, "--asym", "--desc-act"], "gptq"),
    "gptq-sym-perchannel-actorder-v2": (["--group-size", -1, "--desc-act", "--format",
                                          "gptq_v2", "--lm-head"], "gptq"),
    "gptq-asym-g32-actorder-v2": (["--group-size", 32, "--asym", "--desc-act", "--format",
                                   "gptq_v2", "--damp", 0.05], "gptq"),
    "rtn-sym-g32": (["--group-size", 32, "--method", "rtn", "--lm-head"], "rtn"),
    "gptq-asym-g64-head8": (["--group-size", 64, "--asym", "--lm-head", "int8"], "gptq"),
    "gptq-sym-g32-actorder-static": (["--group-size", 32, "--desc-act", "--static-groups"],
                                     "gptq"),
}


def has_head(name):
    return "--lm-head" in CASES[name][0]


def dump_file(dump, key):
    """The inputs folo dumped for a linear's Hessian: key (layer, short) or HEAD."""
    if key == HEAD:
        return dump / "lm_head.safetensors"
    return dump / f"layer.{key[0]}.{TAP_OF[key[1]]}.safetensors"


def source_weight(weights, key):
    """The float W of a linear (the embedding for a tied head)."""
    if key == HEAD:
        return weights.get("lm_head.weight", weights["model.embed_tokens.weight"])
    return weights[f"model.layers.{key[0]}.{LINEARS[SHORT.index(key[1])]}.weight"]


def case_options(flags):
    flags = list(map(str, flags))
    value = lambda name, default: flags[flags.index(name) + 1] if name in flags else default
    return {"group_size": int(value("--group-size", 128)), "sym": "--asym" not in flags,
            "desc_act": "--desc-act" in flags, "damp": float(value("--damp", 0.01)),
            "min_one": value("--format", "gptq") == "gptq",
            "static_groups": "--static-groups" in flags}


@pytest.fixture(scope="module")
def quantized(root, source, calib):
    """name -> (checkpoint dir, dump dir, stderr), each case quantized once."""
    out = {}
    for name, (flags, _) in CASES.items():
        qdir, dump = root / name, root / f"{name}-dump"
        stderr = quantize(source, qdir, "--calib", calib, "--n-samples", N_SAMPLES, "--seq-len",
                          SEQ_LEN, *flags, dump=dump)
        out[name] = (qdir, dump, stderr)
    return out


@pytest.mark.parametrize("name", CASES)
def test_codes_match_independent_gptq(quantized, source, name):
    qdir, dump, _ = quantized[name]
    flags, method = CASES[name]
    opts = case_options(flags)
    weights = load_file(str(source / "model.safetensors"))
    written = read_linears(qdir, head=has_head(name))
    total = mismatched = 0
    for key, (codes, zeros, scales, g_idx, _) in written.items():
        X = load_file(str(dump_file(dump, key)))["x"].astype(np.float64)
        H = 2.0 / len(X) * (X.T @ X)
        bits = 8 if key == HEAD and "int8" in map(str, flags) else 4
        want_codes, want_zeros, want_scales, want_g_idx = oracle_gptq(
            source_weight(weights, key), H, method=method, bits=bits, **opts)
        label = f"{name} {key}"
        assert np.array_equal(g_idx, want_g_idx), label
        assert np.array_equal(zeros, want_zeros), label
        assert np.array_equal(scales.view(np.uint16), to_f16(want_scales).view(np.uint16)), label
        bad = int((codes != want_codes).sum())
        assert bad <= MAX_CODE_MISMATCH * codes.size, f"{label}: {bad} of {codes.size} codes differ"
        total += codes.size
        mismatched += bad
    RESULTS[f"codes {name}"] = {"codes": total, "mismatched": mismatched}
    print(f"\n{name}: {mismatched} of {total} codes differ from the numpy GPTQ")


def test_act_order_groups_are_permuted(quantized):
    """With act-order, g_idx is a non-monotonic assignment of G columns per group."""
    qdir = quantized["gptq-asym-g32-actorder-v2"][0]
    for (layer, short), (_, _, _, g_idx, _) in read_linears(qdir).items():
        assert np.any(np.diff(g_idx) < 0), (layer, short)
        assert np.all(np.bincount(g_idx) == 32), (layer, short)


def test_static_groups_keep_column_order(quantized):
    """--static-groups with act-order: the grids are the original columns'
    groups, so g_idx is k // G, and the config says static_groups."""
    qdir = quantized["gptq-sym-g32-actorder-static"][0]
    qc = json.loads((qdir / "config.json").read_text())["quantization_config"]
    assert qc["static_groups"] is True and qc["desc_act"] is True
    for (layer, short), (_, _, _, g_idx, _) in read_linears(qdir).items():
        assert np.array_equal(g_idx, np.arange(len(g_idx)) // 32), (layer, short)


# ---- the calibration inputs are transformers' ------------------------------------

def hooked_inputs(model, windows):
    """{(layer, tap): X [rows, K]} at the inputs of q, o, gate and down, and
    HEAD: lm_head's."""
    taps = {"self_attn.q_proj": "qkv", "self_attn.o_proj": "o", "mlp.gate_proj": "gate_up",
            "mlp.down_proj": "down"}
    seen, hooks = {}, []
    modules = [(block.get_submodule(name), (layer, tap))
               for layer, block in enumerate(model.model.layers) for name, tap in taps.items()]
    for module, key in modules + [(model.lm_head, HEAD)]:
        hooks.append(module.register_forward_hook(
            lambda mod, inp, out, key=key: seen.setdefault(key, []).append(
                inp[0][0].detach().double().numpy())))
    with torch.no_grad():
        for ids in windows:
            model(torch.tensor([ids]))
    for h in hooks:
        h.remove()
    return {key: np.concatenate(rows) for key, rows in seen.items()}


@pytest.fixture(scope="module")
def calib_windows(quantized):
    dump = quantized["gptq-sym-g32"][1]
    return load_file(str(dump / "calib_ids.safetensors"))["input_ids"].tolist()


@pytest.fixture(scope="module")
def activations(root, quantized, calib_windows):
    """name -> transformers' inputs of every linear through its dequantized model."""
    out = {}
    for name in ["gptq-sym-g32", "rtn-sym-g32"]:
        twin = dequantized_twin(quantized[name][0], root / f"{name}-twin")
        out[name] = hooked_inputs(load_oracle(twin, torch.float32), calib_windows)
    return out


def test_calibration_inputs_are_transformers(quantized, activations):
    """folo's inputs of each step equal transformers' through the model with
    the earlier steps' linears quantized (true sequential order)."""
    dump = quantized["gptq-sym-g32"][1]
    worst = 0.0
    for key, X in activations["gptq-sym-g32"].items():
        name = "lm_head" if key == HEAD else f"layer.{key[0]}.{key[1]}"
        got = load_file(str(dump / f"{name}.safetensors"))["x"]
        rel = np.linalg.norm(got - X) / np.linalg.norm(X)
        worst = max(worst, rel)
        assert rel < 1e-5, (key, rel)
    assert HEAD in activations["gptq-sym-g32"]
    print(f"\ncalibration inputs vs transformers: max relative L2 {worst:.2e}")


def test_windows_are_slices_of_the_text(calib, calib_windows):
    stream = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json")).encode(
        calib.read_text()).ids
    text = np.array(stream)
    assert len(calib_windows) == N_SAMPLES and all(len(w) == SEQ_LEN for w in calib_windows)
    for w in calib_windows:
        starts = np.nonzero(text[:len(text) - SEQ_LEN + 1] == w[0])[0]
        assert any(np.array_equal(text[s:s + SEQ_LEN], w) for s in starts)
    assert len({tuple(w[:8]) for w in calib_windows}) > N_SAMPLES // 2  # spread, not one place


# ---- GPTQ beats round-to-nearest ---------------------------------------------------

def relative_error(W, W_hat, X):
    """||WX - ŴX||² / ||WX||² over the rows of X, as traces with XᵀX (the
    head's outputs, [rows, 151936], would not fit)."""
    W, D, G = W.astype(np.float64), W - W_hat.astype(np.float64), X.T @ X
    return float(np.sum((D @ G) * D) / np.sum((W @ G) * W))


def test_gptq_layer_error_below_rtn(quantized, source, activations):
    weights = load_file(str(source / "model.safetensors"))
    errors = {}
    for name in ["gptq-sym-g32", "rtn-sym-g32"]:
        qdir, _, stderr = quantized[name]
        printed = printed_errors(stderr)
        assert HEAD in printed, stderr
        for key, parts in read_linears(qdir, head=True).items():
            X = activations[name][HEAD if key == HEAD else (key[0], TAP_OF[key[1]])]
            e = relative_error(source_weight(weights, key), parts[4], X)
            errors[(name, key)] = e
            # folo's own figure, from its Hessian, on its own (equal) inputs
            assert printed[key] == pytest.approx(e, rel=2e-3), (name, key)
    print("\nlayer    linear   GPTQ sym g32  RTN sym g32")
    keys = [(layer, short) for layer in range(CONFIG["num_hidden_layers"]) for short in SHORT]
    for key in keys + [HEAD]:
        g, r = errors[("gptq-sym-g32", key)], errors[("rtn-sym-g32", key)]
        layer, short = key if key != HEAD else ("", HEAD)
        print(f"{layer:5}  {short:7}  {g:12.3e}  {r:12.3e}")
        RESULTS[f"layer {layer} {short}" if key != HEAD else HEAD] = {"gptq": g, "rtn": r}
        assert g < r, (key, g, r)


def kl_divergence(p_logits, q_logits):
    p = torch.log_softmax(torch.from_numpy(p_logits).double(), dim=-1)
    q = torch.log_softmax(torch.from_numpy(q_logits).double(), dim=-1)
    return float((p.exp() * (p - q)).sum(dim=-1).mean())


def test_gptq_kl_below_rtn(root, source, calib):
    """End to end on held-out text, the same groups (sym, g32) for both."""
    windows = held_out_windows(4, 128)
    base = load_oracle(source, torch.float32)
    ref = [oracle_logits(base, w) for w in windows]
    kl = {}
    for method in ["gptq", "rtn"]:
        qdir = root / f"kl-{method}"
        quantize(source, qdir, "--calib", calib, "--n-samples", N_SAMPLES, "--seq-len", SEQ_LEN,
                 "--group-size", 32, "--method", method)
        model = load_oracle(dequantized_twin(qdir, root / f"kl-{method}-twin"), torch.float32)
        kl[method] = np.mean([kl_divergence(r, oracle_logits(model, w))
                              for r, w in zip(ref, windows)])
    RESULTS["kl"] = kl
    print(f"\nKL against the float model, held-out text: GPTQ {kl['gptq']:.4f}, "
          f"RTN {kl['rtn']:.4f}")
    assert kl["gptq"] < kl["rtn"]


# ---- the checkpoint loads ------------------------------------------------------------

PROMPT = [int(i) for i in np.random.RandomState(3).randint(0, VOCAB, size=24)]


@pytest.mark.parametrize("name", CASES)
def test_folo_runs_output_as_transformers_dequantized(root, quantized, name):
    qdir = quantized[name][0]
    twin = dequantized_twin(qdir, root / f"{name}-twin-logits")
    got = folo_logits(qdir, PROMPT)
    rel, same_argmax = compare(f"quantize {name}", got,
                               oracle_logits(load_oracle(twin, torch.float32), PROMPT), RESULTS)
    assert rel.max() <= TOLERANCE
    assert same_argmax.all()
    assert np.array_equal(got, folo_logits(twin, PROMPT))  # bit for bit, as test_gptq.py


def test_checkpoint_files(quantized, source):
    qdir = quantized["gptq-asym-g128-actorder"][0]
    config = json.loads((qdir / "config.json").read_text())
    qc = config.pop("quantization_config")
    assert config == dict(CONFIG, tie_word_embeddings=True)
    assert {k: qc[k] for k in ["quant_method", "bits", "group_size", "desc_act", "sym",
                               "checkpoint_format", "pack_dtype", "lm_head"]} == {
        "quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True, "sym": False,
        "checkpoint_format": "gptq", "pack_dtype": "int32", "lm_head": False}
    assert json.loads((qdir / "quantize_config.json").read_text()) == qc
    for name in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]:
        assert (qdir / name).read_bytes() == (source / name).read_bytes(), name
    got, src = load_file(str(qdir / "model.safetensors")), load_file(str(source / "model.safetensors"))
    floats = [k for k in src if not any(l in k for l in LINEARS)]
    assert len(floats) == 2 + 4 * CONFIG["num_hidden_layers"]  # tied: no lm_head
    for k in floats:
        assert np.array_equal(got[k], src[k]), k
    assert "lm_head.weight" not in got
    assert len(got) == len(floats) + 4 * len(LINEARS) * CONFIG["num_hidden_layers"]


def test_untied_head_without_calibration(root):
    """RTN needs no calibration text; an untied lm_head is copied, not quantized."""
    src = write_model(root / "untied", float_model(9, tied=False), tied=False)
    qdir = root / "untied-rtn"
    stderr = quantize(src, qdir, "--method", "rtn", "--group-size", 64, "--asym")
    assert "‖WX−ŴX‖²" not in stderr and "layer 2/2" in stderr
    got = load_file(str(qdir / "model.safetensors"))
    assert np.array_equal(got["lm_head.weight"], load_file(str(src / "model.safetensors"))[
        "lm_head.weight"])
    twin = dequantized_twin(qdir, root / "untied-rtn-twin")
    rel, same = compare("quantize untied rtn", folo_logits(qdir, PROMPT),
                        oracle_logits(load_oracle(twin, torch.float32), PROMPT), RESULTS)
    assert rel.max() <= TOLERANCE and same.all()


def test_lm_head_checkpoint_files(quantized, source):
    """--lm-head on a tied source: the head is lm_head.{qweight,...} of a
    [V, H] linear, the embedding is the source's bytes, and the config says
    untied and lm_head true."""
    qdir = quantized["gptq-sym-perchannel-actorder-v2"][0]
    config = json.loads((qdir / "config.json").read_text())
    qc = config.pop("quantization_config")
    assert config == dict(CONFIG, tie_word_embeddings=False)
    assert qc["lm_head"] is True and qc["desc_act"] is True and qc["group_size"] == -1
    assert json.loads((qdir / "quantize_config.json").read_text()) == qc
    H = CONFIG["hidden_size"]
    with open(qdir / "model.safetensors", "rb") as f:  # the stored bytes, not a conversion
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert {k: (v["dtype"], v["shape"]) for k, v in header.items() if k.startswith("lm_head")} == {
        "lm_head.qweight": ("I32", [H // 8, VOCAB]), "lm_head.qzeros": ("I32", [1, VOCAB // 8]),
        "lm_head.scales": ("F16", [1, VOCAB]), "lm_head.g_idx": ("I32", [H])}
    got, src = load_file(str(qdir / "model.safetensors")), load_file(str(source / "model.safetensors"))
    embed = "model.embed_tokens.weight"
    assert got[embed].dtype == src[embed].dtype and got[embed].tobytes() == src[embed].tobytes()
    assert "lm_head.weight" not in got
    floats = [k for k in src if not any(l in k for l in LINEARS)]
    assert len(got) == len(floats) + 4 * (len(LINEARS) * CONFIG["num_hidden_layers"] + 1)
    assert np.all(got["lm_head.g_idx"] == 0)  # per channel: one group
    assert not np.array_equal(read_linears(qdir, head=True)[HEAD][4], src[embed])


def test_int8_head_checkpoint_files(quantized):
    """--lm-head int8: the head's words hold 4 codes each, and both config
    files say so with GPTQModel's per-module rule, the 4-bit base kept."""
    qdir = quantized["gptq-asym-g64-head8"][0]
    qc = json.loads((qdir / "config.json").read_text())["quantization_config"]
    assert qc["bits"] == 4 and qc["lm_head"] is True and qc["group_size"] == 64
    assert qc["dynamic"] == {"+:lm_head": {"bits": 8}}
    assert json.loads((qdir / "quantize_config.json").read_text()) == qc
    H = CONFIG["hidden_size"]
    with open(qdir / "model.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert {k: (v["dtype"], v["shape"]) for k, v in header.items() if k.startswith("lm_head")} == {
        "lm_head.qweight": ("I32", [H // 4, VOCAB]), "lm_head.qzeros": ("I32", [H // 64, VOCAB // 4]),
        "lm_head.scales": ("F16", [H // 64, VOCAB]), "lm_head.g_idx": ("I32", [H])}
    codes = read_linears(qdir, head=True)[HEAD][0]
    assert codes.max() > 15 and codes.max() <= 255


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_lm_head_rtn_without_calibration(root, tied):
    """RTN quantizes the head without calibration text, tied or untied
    (whose lm_head.weight is then replaced, not copied); the checkpoint
    runs as transformers does on its dequantized weights, head included."""
    name = "tied" if tied else "untied"
    weights = float_model(11, tied=tied)
    src = write_model(root / f"head-{name}", weights, tied=tied)
    qdir = root / f"head-{name}-rtn"
    stderr = quantize(src, qdir, "--method", "rtn", "--group-size", 64, "--asym", "--lm-head")
    assert "‖WX−ŴX‖²" not in stderr and f"lm_head [{VOCAB}, {CONFIG['hidden_size']}]" in stderr
    assert "14 linears and lm_head" in stderr
    got = load_file(str(qdir / "model.safetensors"))
    assert "lm_head.weight" not in got
    embed = "model.embed_tokens.weight"
    assert got[embed].tobytes() == weights[embed].tobytes()
    head = read_linears(qdir, head=True)[HEAD]
    want = oracle_gptq(source_weight(weights, HEAD), None, 64, False, False, 0.01, True, "rtn")
    assert np.array_equal(head[0], want[0]) and np.array_equal(head[1], want[1])
    assert json.loads((qdir / "config.json").read_text())["tie_word_embeddings"] is False
    twin = dequantized_twin(qdir, root / f"head-{name}-rtn-twin")
    assert np.array_equal(load_file(str(twin / "model.safetensors"))["lm_head.weight"], head[4])
    got_logits = folo_logits(qdir, PROMPT)
    rel, same = compare(f"quantize lm_head rtn {name}", got_logits,
                        oracle_logits(load_oracle(twin, torch.float32), PROMPT), RESULTS)
    assert rel.max() <= TOLERANCE and same.all()
    assert np.array_equal(got_logits, folo_logits(twin, PROMPT))


def test_sharegpt_calibration(root, source):
    """A ShareGPT file: every turn's text, each followed by a blank line."""
    turns = [["What is a paged KV cache?", "Blocks of keys and values, allocated on demand."],
             ["Why quantize weights?", "Fewer bytes a token, so decoding is faster.", "Thanks!"]]
    path = root / "chat.json"
    path.write_text(json.dumps([{"id": str(i), "conversations": [
        {"from": "human" if j % 2 == 0 else "gpt", "value": t} for j, t in enumerate(conv)]}
        for i, conv in enumerate(turns)] * 6))
    dump = root / "sharegpt-dump"
    quantize(source, root / "sharegpt-q", "--calib", path, "--n-samples", 4, "--seq-len", 32,
             "--group-size", 32, dump=dump)
    tok = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    stream = []
    for _ in range(6):
        for conv in turns:
            for t in conv:
                stream += tok.encode(t).ids + tok.encode("\n\n").ids
    text = "," + ",".join(map(str, stream)) + ","
    for w in load_file(str(dump / "calib_ids.safetensors"))["input_ids"].tolist():
        assert "," + ",".join(map(str, w)) + "," in text


# ---- errors ---------------------------------------------------------------------------

def test_same_seed_same_windows_other_seed_others(root, source, calib):
    ids = []
    for seed in [1, 1, 2]:
        dump = root / f"seed-{len(ids)}"
        quantize(source, root / "seed-q", "--method", "rtn", "--calib", calib, "--n-samples", 4,
                 "--seq-len", 16, "--seed", seed, "--group-size", 32, dump=dump)
        ids.append(load_file(str(dump / "calib_ids.safetensors"))["input_ids"])
    assert np.array_equal(ids[0], ids[1]) and not np.array_equal(ids[0], ids[2])


USAGE_ERRORS = {
    "no out": ([], None, "--out is required"),
    "bits 3": (["--bits", 3], "OUT", "--bits 3: only 4-bit"),
    "group size 0": (["--group-size", 0], "OUT", "'0' for --group-size"),
    "group size -2": (["--group-size", -2], "OUT", "'-2' for --group-size"),
    "damp 0": (["--damp", 0], "OUT", "'0' for --damp"),
    "damp 1.5": (["--damp", 1.5], "OUT", "'1.5' for --damp"),
    "method": (["--method", "awq"], "OUT", "'awq' for --method"),
    "format": (["--format", "marlin"], "OUT", "'marlin' for --format"),
    "n-samples": (["--n-samples", 0], "OUT", "'0' for --n-samples"),
    "seq-len": (["--seq-len", "x"], "OUT", "'x' for --seq-len"),
    "gptq without calib": ([], "OUT", "--method gptq needs calibration text: --calib FILE"),
    "desc-act rtn": (["--method", "rtn", "--desc-act"], "OUT", "--desc-act"),
    "static-groups rtn": (["--method", "rtn", "--static-groups"], "OUT", "--static-groups"),
    "unknown flag": (["--mse"], "OUT", "unknown option '--mse'"),
    "lm-head int16": (["--lm-head=int16"], "OUT", "'int16' for --lm-head"),
    "lm-head int3": (["--lm-head", "int3"], "OUT", "unexpected argument 'int3'"),
}


@pytest.mark.parametrize("case", USAGE_ERRORS)
def test_bad_flags_are_usage_errors(root, source, case):
    flags, out, text = USAGE_ERRORS[case]
    args = [FOLO, "quantize", "-m", str(source), *map(str, flags)]
    if out:
        args += ["--out", str(root / "never")]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert text in proc.stderr and "usage: folo quantize" in proc.stderr
    assert not (root / "never").exists()


def run_error(source, out, *flags, env=None):
    proc = subprocess.run([FOLO, "quantize", "-m", str(source), "--out", str(out),
                           *map(str, flags)], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})))
    assert proc.returncode == 1, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("folo quantize:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_bad_inputs_are_errors_naming_the_problem(root, source, calib, quantized):
    out = root / "bad-out"
    rtn = ["--method", "rtn"]
    assert "is already quantized" in run_error(quantized["gptq-sym-g32"][0], out, *rtn)
    line = run_error(source, out, *rtn, "--group-size", 48)
    assert "model.layers.*.self_attn.q_proj" in line and "not a multiple of group_size 48" in line
    assert "is the model directory itself" in run_error(source, source, *rtn)
    missing = root / "missing.txt"
    assert str(missing) in run_error(source, out, "--calib", missing)
    short = root / "short.txt"
    short.write_text("Too short.")
    line = run_error(source, out, "--calib", short, "--seq-len", 64)
    assert str(short) in line and "fewer than one calibration window of --seq-len 64" in line
    bad_utf8 = root / "latin1.txt"
    bad_utf8.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    assert str(bad_utf8) in run_error(source, out, "--calib", bad_utf8, "--seq-len", 8)
    bad_json = root / "bad.json"
    bad_json.write_text('[{"conversations": [{"value": 1}]}]')
    line = run_error(source, out, "--calib", bad_json)
    assert str(bad_json) in line and 'turn 0 is not an object with a string "value"' in line
    line = run_error(source, out, "--calib", calib, "--seq-len", 5000)
    assert "--seq-len 5000 exceeds the model's max_position_embeddings (4096)" in line
    line = run_error(source, out, "--calib", calib, env={"FOLO_LAPACKE_LIBRARY": "libnone.so.9"})
    assert "needs LAPACKE and a BLAS" in line and "libnone.so.9" in line
    assert not (out / "config.json").exists()


def test_lm_head_that_cannot_be_packed_is_refused(root):
    """A vocabulary that is not a multiple of 8 cannot be packed 8 outputs
    to an int32 of qzeros: --lm-head says so before any work; without it
    the model quantizes."""
    config = dict(CONFIG, vocab_size=VOCAB + 4)
    src = write_model(root / "odd-vocab", random_qwen3(config, 13, True, 0.05, 0.1), True, config)
    out = root / "odd-vocab-q"
    line = run_error(src, out, "--method", "rtn", "--lm-head")
    assert f"--lm-head: lm_head: a [{VOCAB + 4}, 128] linear" in line and "multiples of 8" in line
    assert not out.exists()
    quantize(src, out, "--method", "rtn")
