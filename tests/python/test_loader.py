"""The model loader on malformed checkpoints, seen through `folo logits`.

Each test copies the tiny model into a temporary directory, breaks one thing
(the safetensors bytes, its header, config.json, a shard), and expects exit
code 1 with a single stderr line that names the broken file and the tensor or
field. The good tiny model, sharded and untied, must load and run."""

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

FOLO = os.environ.get("FOLO_BIN", "build/folo")
TINY = Path(os.environ.get("FOLO_TEST_MODEL", "build/test-models/tiny-f32"))
TOKENIZER_DIR = os.environ.get("FOLO_TOKENIZER_DIR", "models/qwen3-tokenizer")
VOCAB = 151936


def logits(model_dir, out):
    return subprocess.run([FOLO, "logits", "-m", str(model_dir), "--ids", "1,2", "--out", str(out)],
                          capture_output=True, text=True)


def expect_error(model_dir, tmp_path, *needles):
    proc = logits(model_dir, tmp_path / "logits.bin")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def read_st(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_st(path, header, data):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + data)


def edit_header(model_dir, edit, file="model.safetensors"):
    path = Path(model_dir) / file
    header, data = read_st(path)
    edit(header)
    write_st(path, header, data)


@pytest.fixture
def broken(tmp_path):
    return copy_model(TINY, tmp_path / "model")


def test_good_model_runs(tmp_path):
    out = tmp_path / "logits.bin"
    proc = logits(TINY, out)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size == 2 * VOCAB * 4


def make(out, *flags):
    proc = subprocess.run([FOLO, "make-model", "--preset", "tiny", "--dtype", "f32", "--seed", "7",
                           "--tokenizer", TOKENIZER_DIR, "--out", str(out), *flags],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


def test_sharded_and_untied_run(tmp_path):
    single = tmp_path / "single.bin"
    assert logits(TINY, single).returncode == 0
    sharded = make(tmp_path / "sharded", "--shards", "3")
    proc = logits(sharded, tmp_path / "sharded.bin")
    assert proc.returncode == 0, proc.stderr
    # The same seed writes the same weights in any layout, so the same logits.
    assert (tmp_path / "sharded.bin").read_bytes() == single.read_bytes()
    untied = make(tmp_path / "untied", "--untied", "--shards", "2")
    proc = logits(untied, tmp_path / "untied.bin")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "untied.bin").stat().st_size == 2 * VOCAB * 4
    assert (tmp_path / "untied.bin").read_bytes() != single.read_bytes()


def test_truncated_file(broken, tmp_path):
    path = broken / "model.safetensors"
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    expect_error(broken, tmp_path, "model.safetensors", "'model.", "outside")


def test_header_length_past_eof(broken, tmp_path):
    path = broken / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[:8] = struct.pack("<Q", len(raw) * 4)
    path.write_bytes(bytes(raw))
    expect_error(broken, tmp_path, "model.safetensors", "header length")


def test_bad_json_header(broken, tmp_path):
    path = broken / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[8 + 1] = ord("@")  # right after the opening brace
    path.write_bytes(bytes(raw))
    expect_error(broken, tmp_path, "model.safetensors", "not valid JSON")


def test_unknown_dtype(broken, tmp_path):
    name = "model.layers.0.self_attn.q_proj.weight"
    edit_header(broken, lambda h: h[name].update(dtype="F64"))
    expect_error(broken, tmp_path, "model.safetensors", name, "F64")


def test_non_float_dtype(broken, tmp_path):
    name = "model.layers.1.self_attn.k_norm.weight"
    edit_header(broken, lambda h: h[name].update(dtype="I32"))
    expect_error(broken, tmp_path, "model.safetensors", name, "I32")


def test_size_mismatch(broken, tmp_path):
    name = "model.norm.weight"
    edit_header(broken, lambda h: h[name].update(shape=[65]))
    expect_error(broken, tmp_path, "model.safetensors", name, "bytes")


def test_overlapping_offsets(broken, tmp_path):
    a, b = "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight"

    def overlap(h):
        h[b]["data_offsets"] = list(h[a]["data_offsets"])

    edit_header(broken, overlap)
    expect_error(broken, tmp_path, "model.safetensors", "overlapping", a, b)


def test_offsets_outside_file(broken, tmp_path):
    name = "model.layers.1.mlp.up_proj.weight"

    def outside(h):
        end = max(v["data_offsets"][1] for k, v in h.items() if k != "__metadata__")
        begin, stop = h[name]["data_offsets"]
        h[name]["data_offsets"] = [end, end + stop - begin]

    edit_header(broken, outside)
    expect_error(broken, tmp_path, "model.safetensors", name, "outside")


def test_missing_tensor(broken, tmp_path):
    name = "model.layers.1.mlp.up_proj.weight"
    edit_header(broken, lambda h: h.pop(name))
    expect_error(broken, tmp_path, "model.safetensors", f"missing tensor '{name}'")


def test_wrong_shape(broken, tmp_path):
    name = "model.layers.0.self_attn.q_norm.weight"
    edit_header(broken, lambda h: h[name].update(shape=[4, 4]))
    expect_error(broken, tmp_path, "model.safetensors", name, "[4, 4]", "[16]")


def test_wrong_shape_against_config(broken, tmp_path):
    config = json.loads((broken / "config.json").read_text())
    config["intermediate_size"] = 96
    (broken / "config.json").write_text(json.dumps(config))
    expect_error(broken, tmp_path, "model.safetensors", "mlp.gate_proj.weight", "[96, 64]")


def test_untied_without_head(tmp_path):
    model = make(tmp_path / "untied", "--untied")
    edit_header(model, lambda h: h.pop("lm_head.weight"))
    expect_error(model, tmp_path, "model.safetensors", "lm_head.weight")


@pytest.mark.parametrize("field,value", [
    ("num_key_value_heads", 3), ("hidden_size", 0), ("rms_norm_eps", -1.0), ("rope_theta", 0),
    ("vocab_size", "big"), ("head_dim", 15), ("torch_dtype", "int4"), ("eos_token_id", [1, None]),
])
def test_bad_config_value(broken, tmp_path, field, value):
    config = json.loads((broken / "config.json").read_text())
    config[field] = value
    (broken / "config.json").write_text(json.dumps(config))
    expect_error(broken, tmp_path, "config.json", field)


def test_missing_config_field(broken, tmp_path):
    config = json.loads((broken / "config.json").read_text())
    del config["num_hidden_layers"]
    (broken / "config.json").write_text(json.dumps(config))
    expect_error(broken, tmp_path, "config.json", "num_hidden_layers")


def test_config_not_json(broken, tmp_path):
    (broken / "config.json").write_text("{\"hidden_size\": 64,")
    expect_error(broken, tmp_path, "config.json", "not valid JSON")


def test_missing_config(broken, tmp_path):
    (broken / "config.json").unlink()
    expect_error(broken, tmp_path, "config.json")


def test_bad_generation_config(broken, tmp_path):
    (broken / "generation_config.json").write_text(json.dumps({"top_p": 2.0}))
    expect_error(broken, tmp_path, "generation_config.json", "top_p")


def test_missing_weights_file(broken, tmp_path):
    (broken / "model.safetensors").unlink()
    expect_error(broken, tmp_path, "model.safetensors", "missing")


def test_missing_shard(tmp_path):
    model = make(tmp_path / "sharded", "--shards", "2")
    (model / "model-00002-of-00002.safetensors").unlink()
    expect_error(model, tmp_path, "model-00002-of-00002.safetensors", "missing")


def test_index_without_tensor(tmp_path):
    model = make(tmp_path / "sharded", "--shards", "2")
    index_path = model / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["weight_map"]["model.norm.weight"]
    index_path.write_text(json.dumps(index))
    expect_error(model, tmp_path, "model.safetensors.index.json", "model.norm.weight")


def test_index_points_at_wrong_shard(tmp_path):
    model = make(tmp_path / "sharded", "--shards", "2")
    index_path = model / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    expect_error(model, tmp_path, "model-00001-of-00002.safetensors", "model.norm.weight")


@pytest.mark.parametrize("tied,shard", [(True, None), (False, "3MB")])
def test_transformers_checkpoint_loads(tmp_path, tied, shard):
    """A checkpoint saved by transformers itself (its own config.json
    spelling, its own safetensors writer, sharded when large) loads as is."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=8, max_position_embeddings=128, rope_theta=1e6,
                         tie_word_embeddings=tied, bos_token_id=151643, eos_token_id=151645)
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    out = tmp_path / "hf"
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(out, **kwargs)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(TOKENIZER_DIR) / name, out / name)
    assert (out / "model.safetensors.index.json").exists() == bool(shard)
    proc = logits(out, tmp_path / "hf.bin")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "hf.bin").stat().st_size == 2 * VOCAB * 4
