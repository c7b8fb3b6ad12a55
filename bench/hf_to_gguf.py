#!/usr/bin/env python3
"""Write a Hugging Face Qwen3 checkpoint as a GGUF file for llama.cpp.

    python3 bench/hf_to_gguf.py MODEL_DIR OUT.gguf

MODEL_DIR is a Qwen3ForCausalLM checkpoint in safetensors (one file or
shards with model.safetensors.index.json), as `folo make-model` writes it.
The output uses llama.cpp's `qwen3` architecture; matrices keep their dtype
(bf16, f16 or f32, no requantization) so both engines run the same bytes,
and the 1-D norm weights are widened to f32 exactly, as llama.cpp's own
converter does. The tokenizer goes in as a GPT-2 style byte-level BPE
(`tokenizer.ggml.*`) with the `qwen2` pre-tokenizer.

Needs the `gguf` package from PyPI (bench/requirements.txt); nothing else
outside the standard library and numpy.
"""
import json
import os
import struct
import sys

try:
    import gguf
    import numpy as np
except ImportError as e:
    sys.exit(f"hf_to_gguf: {e.name} is missing: pip install -r bench/requirements.txt")

# safetensors dtype -> (numpy dtype of the raw elements, GGML type).
DTYPES = {
    "BF16": (np.uint16, gguf.GGMLQuantizationType.BF16),
    "F16": (np.float16, gguf.GGMLQuantizationType.F16),
    "F32": (np.float32, gguf.GGMLQuantizationType.F32),
}

FILE_TYPES = {
    gguf.GGMLQuantizationType.BF16: gguf.LlamaFileType.MOSTLY_BF16,
    gguf.GGMLQuantizationType.F16: gguf.LlamaFileType.MOSTLY_F16,
    gguf.GGMLQuantizationType.F32: gguf.LlamaFileType.ALL_F32,
}

# Per-layer Hugging Face names -> llama.cpp's (gguf-py's MODEL_TENSOR names).
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}

GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def fail(msg):
    sys.exit(f"hf_to_gguf: {msg}")


def load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read {path}: {e}")


def safetensors_files(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        return sorted(set(load_json(index)["weight_map"].values()))
    if os.path.exists(os.path.join(model_dir, "model.safetensors")):
        return ["model.safetensors"]
    fail(f"{model_dir}: no model.safetensors or model.safetensors.index.json")


def read_tensors(model_dir):
    """Yield (name, raw array, GGML type) from the safetensors files, memory-mapped."""
    for fname in safetensors_files(model_dir):
        path = os.path.join(model_dir, fname)
        with open(path, "rb") as f:
            (hlen,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(hlen))
        base = 8 + hlen
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            if meta["dtype"] not in DTYPES:
                fail(f"{path}: tensor {name} has unsupported dtype {meta['dtype']}")
            np_dtype, ggml_type = DTYPES[meta["dtype"]]
            start, end = meta["data_offsets"]
            count = (end - start) // np.dtype(np_dtype).itemsize
            arr = np.memmap(path, dtype=np_dtype, mode="r", offset=base + start, shape=(count,))
            yield name, arr.reshape(meta["shape"]), ggml_type


def to_f32(arr, ggml_type):
    if ggml_type == gguf.GGMLQuantizationType.BF16:
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np.float32)


def gguf_name(hf_name):
    if hf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[hf_name]
    parts = hf_name.split(".", 3)  # model, layers, N, rest
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in LAYER_NAMES:
        return f"blk.{int(parts[2])}.{LAYER_NAMES[parts[3]]}"
    fail(f"tensor {hf_name} has no llama.cpp qwen3 counterpart")


def write_vocab(w, model_dir, vocab_size):
    tok = load_json(os.path.join(model_dir, "tokenizer.json"))
    model = tok.get("model", {})
    if model.get("type") != "BPE":
        fail("tokenizer.json: expected a BPE model")
    by_id = {i: s for s, i in model["vocab"].items()}
    special = {}
    for t in tok.get("added_tokens", []):
        by_id[t["id"]] = t["content"]
        special[t["id"]] = t.get("special", False)
    if max(by_id) >= vocab_size:
        fail(f"tokenizer has id {max(by_id)} beyond the model's vocab_size {vocab_size}")
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # rows of the embedding no token uses
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in special:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if special[i] else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    # Merges, the bos/eos/pad ids and add_bos_token (false for Qwen3) from
    # tokenizer.json and tokenizer_config.json.
    gguf.SpecialVocab(model_dir, load_merges=True).add_to_gguf(w)


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print("usage: python3 bench/hf_to_gguf.py MODEL_DIR OUT.gguf", file=sys.stderr)
        return 2
    model_dir, out = argv[1], argv[2]
    cfg = load_json(os.path.join(model_dir, "config.json"))
    if cfg.get("model_type") != "qwen3":
        fail(f"{model_dir}/config.json: model_type is {cfg.get('model_type')!r}, expected 'qwen3'")
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim", cfg["hidden_size"] // heads)

    w = gguf.GGUFWriter(out, "qwen3")
    w.add_name(os.path.basename(os.path.normpath(model_dir)))
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])

    matrix_type = None
    for name, arr, ggml_type in read_tensors(model_dir):
        if name == "lm_head.weight" and cfg.get("tie_word_embeddings", False):
            continue  # llama.cpp reads token_embd as the output when output.weight is absent
        if arr.ndim == 1:
            w.add_tensor(gguf_name(name), to_f32(arr, ggml_type))
            continue
        matrix_type = matrix_type or ggml_type
        w.add_tensor(gguf_name(name), arr, raw_dtype=ggml_type)
    if matrix_type is None:
        fail(f"{model_dir}: no weight matrices found")
    w.add_file_type(FILE_TYPES[matrix_type])
    write_vocab(w, model_dir, cfg["vocab_size"])

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
