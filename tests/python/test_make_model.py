"""`folo make-model` against the reference: transformers must load what it
writes (single file, sharded, untied; f32 and bf16) with every weight taken
from the files, and the config values must be the preset's. Same seed, same
bytes; another seed, other weights. Usage errors exit 2."""

import filecmp
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, GenerationConfig, Qwen3ForCausalLM

FOLO = os.environ.get("FOLO_BIN", "build/folo")
TOKENIZER_DIR = Path(os.environ.get("FOLO_TOKENIZER_DIR", "models/qwen3-tokenizer"))

TINY = dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=151936,
            max_position_embeddings=40960, rms_norm_eps=1e-6)


def make(out, *flags):
    args = [FOLO, "make-model", "--preset", "tiny", "--out", str(out), *flags]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return Path(out)


def tensors(model_dir):
    """name -> tensor over every safetensors file of a checkpoint."""
    out = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("make_model")
    return {
        "f32": make(root / "f32", "--dtype", "f32", "--seed", "3"),
        "bf16": make(root / "bf16", "--dtype", "bf16", "--seed", "3"),
        "sharded": make(root / "sharded", "--dtype", "f32", "--seed", "3", "--shards", "3"),
        "untied": make(root / "untied", "--dtype", "f32", "--seed", "3", "--untied"),
    }


@pytest.mark.parametrize("kind", ["f32", "bf16", "sharded", "untied"])
def test_transformers_loads_it(models, kind):
    d = models[kind]
    cfg = AutoConfig.from_pretrained(d)
    assert cfg.model_type == "qwen3"
    assert cfg.architectures == ["Qwen3ForCausalLM"]
    for key, value in TINY.items():
        assert getattr(cfg, key) == value, key
    assert cfg.rope_parameters["rope_theta"] == 1e6
    assert cfg.tie_word_embeddings == (kind != "untied")
    assert cfg.bos_token_id == 151643 and cfg.eos_token_id == 151645
    assert not cfg.attention_bias and not cfg.use_sliding_window

    model, info = Qwen3ForCausalLM.from_pretrained(d, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    stored = tensors(d)
    state = model.state_dict()
    for name, ref in stored.items():
        assert torch.equal(state[name].to(ref.dtype), ref), name
    if kind == "untied":
        assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    else:
        assert "lm_head.weight" not in stored
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, 151936) and torch.isfinite(logits).all()


def test_config_files(models):
    d = models["bf16"]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["torch_dtype"] == "bfloat16"
    for key in ["attention_dropout", "hidden_act", "initializer_range", "use_cache",
                "sliding_window", "max_window_layers", "rope_scaling", "rope_theta"]:
        assert key in cfg, key
    gen = GenerationConfig.from_pretrained(d)
    assert gen.do_sample and gen.top_k == 20
    assert gen.temperature == pytest.approx(0.6) and gen.top_p == pytest.approx(0.95)
    assert gen.eos_token_id == [151645, 151643] and gen.bos_token_id == 151643
    assert gen.pad_token_id == 151643
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        assert filecmp.cmp(d / name, TOKENIZER_DIR / name, shallow=False)


def test_sharded_index(models):
    d = models["sharded"]
    index = json.loads((d / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in d.glob("model-*.safetensors"))
    assert shards == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert sorted(set(index["weight_map"].values())) == shards
    stored = tensors(d)
    assert set(index["weight_map"]) == set(stored)
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in stored.values())
    assert not (d / "model.safetensors").exists()


def test_weights_do_not_depend_on_layout(models):
    single, sharded, untied = (tensors(models[k]) for k in ("f32", "sharded", "untied"))
    assert set(single) == set(sharded) == set(untied) - {"lm_head.weight"}
    for name, t in single.items():
        assert torch.equal(t, sharded[name]) and torch.equal(t, untied[name]), name
    # bf16 holds the f32 values rounded to nearest even.
    bf16 = tensors(models["bf16"])
    for name, t in single.items():
        assert torch.equal(t.to(torch.bfloat16).view(torch.int16), bf16[name].view(torch.int16)), name


def test_weight_statistics(models):
    w = tensors(models["f32"])
    embed = w["model.embed_tokens.weight"].double()
    assert abs(embed.mean()) < 1e-3 and abs(embed.std() - 0.02) < 1e-3
    norms = torch.cat([t for n, t in w.items() if n.endswith("norm.weight")]).double()
    assert abs(norms.mean() - 1.0) < 0.02 and abs(norms.std() - 0.1) < 0.02


def test_same_seed_same_bytes(tmp_path, models):
    again = make(tmp_path / "again", "--dtype", "f32", "--seed", "3")
    for f in sorted(models["f32"].iterdir()):
        assert filecmp.cmp(f, again / f.name, shallow=False), f.name
    other = make(tmp_path / "other", "--dtype", "f32", "--seed", "4")
    assert filecmp.cmp(models["f32"] / "config.json", other / "config.json", shallow=False)
    assert not filecmp.cmp(models["f32"] / "model.safetensors", other / "model.safetensors",
                           shallow=False)


def test_help_and_usage_errors(tmp_path):
    proc = subprocess.run([FOLO, "make-model", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: folo make-model" in proc.stdout
    for args in (["--bogus"], ["--preset", "tiny"], ["--preset", "huge", "--out", "x"],
                 ["--preset", "tiny", "--out", "x", "--dtype", "f64"],
                 ["--preset", "tiny", "--out", "x", "--shards", "0"],
                 ["--preset", "tiny", "--out", "x", "--seed", "abc"], ["--preset"]):
        proc = subprocess.run([FOLO, "make-model", *args], capture_output=True, text=True,
                              cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("folo make-model: ") and "usage:" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_runtime_errors(tmp_path):
    proc = subprocess.run([FOLO, "make-model", "--preset", "tiny", "--out", str(tmp_path / "m"),
                           "--shards", "1000"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "--shards 1000" in proc.stderr
    proc = subprocess.run([FOLO, "make-model", "--preset", "tiny", "--out", str(tmp_path / "m"),
                           "--tokenizer", str(tmp_path / "none")], capture_output=True, text=True)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("folo make-model: ") and "tokenizer.json" in last
