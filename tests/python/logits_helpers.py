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


def folo_logits(model_dir, ids, chunk=None, threads=None):
    """Logits [len(ids), V] from `folo logits`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "logits.f32"
        args = [FOLO, "logits", "-m", str(model_dir), "--ids", ",".join(map(str, ids)),
                "--out", str(out)]
        if chunk:
            args += ["--chunk", str(chunk)]
        if threads:
            args += ["--threads", str(threads)]
        proc = subprocess.run(args, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        data = np.fromfile(out, dtype="<f4")
    assert data.size % len(ids) == 0
    return data.reshape(len(ids), -1)


def load_oracle(model_dir, dtype):
    model = Qwen3ForCausalLM.from_pretrained(str(model_dir), dtype=dtype, attn_implementation="eager")
    model.eval()
    return model


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
