"""`folo logits` against Hugging Face transformers on a Qwen3-0.6B-shaped
synthetic checkpoint, bf16 and f32 (labelled slow: each makes a 1.2-3 GB
checkpoint in a temporary directory, removed afterwards). A 32-token prompt:
every position within 1e-4 relative L2 and the same argmax, chunked feeding
equal to one shot, and the same 8-token greedy continuation. The bf16
checkpoint is compared with transformers on the upcast weights, and with
native bf16 transformers for reference. Figures go to stdout (`pytest -s`)
and to $FOLO_BUILD_DIR/logits_errors_0.6b.json."""

import gc
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from logits_helpers import (compare, folo_greedy, folo_logits, load_oracle, make_model,
                            oracle_greedy, oracle_logits, write_results)

TOLERANCE = 1e-4
PROMPT = [int(i) for i in np.random.RandomState(2).randint(0, 151643, size=32)]
RESULTS = {}


@pytest.fixture(scope="module", autouse=True)
def record_results():
    yield
    write_results("logits_errors_0.6b.json", RESULTS)


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
def test_qwen3_0_6b_matches_transformers(dtype):
    with tempfile.TemporaryDirectory(prefix="folo-logits-0.6b-") as tmp:
        model_dir = make_model(Path(tmp) / dtype, "qwen3-0.6b", dtype)
        got = folo_logits(model_dir, PROMPT)
        chunked = folo_logits(model_dir, PROMPT, chunk=9)
        folo_tokens = folo_greedy(model_dir, PROMPT, 8)

        oracle = load_oracle(model_dir, torch.float32)
        ref = oracle_logits(oracle, PROMPT)
        want_tokens = oracle_greedy(oracle, PROMPT, 8)
        del oracle
        gc.collect()
        name = f"0.6b {dtype}" + (" vs transformers f32 (bf16 weights upcast)" if dtype == "bf16" else "")
        rel, same_argmax = compare(name, got, ref, RESULTS)
        if dtype == "bf16":
            native = load_oracle(model_dir, torch.bfloat16)
            compare("0.6b bf16 vs transformers native bf16", got, oracle_logits(native, PROMPT), RESULTS)
            del native
            gc.collect()

    assert rel.max() <= TOLERANCE, f"positions over tolerance: {np.nonzero(rel > TOLERANCE)[0]}"
    assert same_argmax.all(), f"argmax differs at {np.nonzero(~same_argmax)[0]}"
    diff = np.abs(chunked - got).max()
    print(f"\n0.6b {dtype} chunk 9: max |diff| vs one-shot {diff:.3e}; greedy {folo_tokens}")
    assert diff <= 1e-6 * np.abs(got).max()
    assert folo_tokens == want_tokens
