"""`folo logits` against Hugging Face transformers on the tiny synthetic
checkpoint (f32, bf16, f16, untied): every position's logits within 1e-4
relative L2, every argmax equal, the same 32-token greedy continuation;
chunked feeding equals the one-shot run; bad usage exits 2 and runtime
errors exit 1 with one `folo logits:` line.

Run by ctest (FOLO_BIN, FOLO_TEST_MODEL, FOLO_BUILD_DIR set); `pytest -s`
shows the measured errors, also written to $FOLO_BUILD_DIR/logits_errors_tiny.json."""

import os
import subprocess

import numpy as np
import pytest
import torch

from logits_helpers import (FOLO, VOCAB, bf16_oracle_logits, compare, folo_greedy, folo_logits,
                            load_oracle, make_model, oracle_greedy, oracle_logits,
                            relative_errors, write_results)

TOLERANCE = 1e-4
PROMPT = [int(i) for i in np.random.RandomState(1).randint(0, 151643, size=40)]
RESULTS = {}


@pytest.fixture(scope="module", autouse=True)
def record_results():
    yield
    write_results("logits_errors_tiny.json", RESULTS)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("logits")
    f32 = os.environ.get("FOLO_TEST_MODEL")
    return {
        "f32": f32 if f32 else make_model(root / "f32", "tiny", "f32"),
        "bf16": make_model(root / "bf16", "tiny", "bf16"),
        "f16": make_model(root / "f16", "tiny", "f16"),
        "untied": make_model(root / "untied", "tiny", "f32", seed=11, extra=["--untied"]),
    }


def check_close(name, got, ref):
    rel, same_argmax = compare(name, got, ref, RESULTS)
    assert rel.max() <= TOLERANCE, f"{name}: positions over tolerance: {np.nonzero(rel > TOLERANCE)[0]}"
    assert same_argmax.all(), f"{name}: argmax differs at {np.nonzero(~same_argmax)[0]}"


def test_f32_matches_transformers(models):
    got = folo_logits(models["f32"], PROMPT)
    assert got.shape == (len(PROMPT), VOCAB)
    check_close("tiny f32", got, oracle_logits(load_oracle(models["f32"], torch.float32), PROMPT))


def test_bf16_matches_transformers(models):
    got = folo_logits(models["bf16"], PROMPT)
    check_close("tiny bf16 vs transformers f32 (bf16 weights upcast)", got,
                oracle_logits(load_oracle(models["bf16"], torch.float32), PROMPT))
    # Native bf16 transformers rounds activations to bf16: reported, not held
    # to the tolerance.
    compare("tiny bf16 vs transformers native bf16", got,
            oracle_logits(load_oracle(models["bf16"], torch.bfloat16), PROMPT), RESULTS)


# --dtype bfloat16 rounds every matmul input, the K and V it caches and the
# queries that meet them to bf16. Its oracle is transformers in f32 with the same roundings
# (bf16_oracle_logits).
# Until the first rounding flip (an activation a last f32 bit away from a
# bf16 midpoint, rounded the other way) the two agree to f32 precision;
# from there on that position's K and V differ by a bf16 step, which on the
# tiny model moves later logits by ~1e-3, as much as the rounding itself
# does (against the unrounded model). So: every position within
# BF16_TOLERANCE, and the positions before the first flip within the f32
# tolerance, where the unrounded model is nowhere near.
BF16_TOLERANCE = 5e-3


# "default" multiplies the copy of the bf16 weights, as row panels on a CPU
# with AVX512-BF16 (matmul_bf16_panels); "in-place" the weights as stored.
@pytest.mark.parametrize("isa", ["default", "in-place", "portable"])
def test_bf16_activations_match_rounded_transformers(models, isa):
    env = {"FOLO_CPU_ISA": "portable"} if isa == "portable" else None
    got = folo_logits(models["bf16"], PROMPT, dtype="bfloat16", env=env,
                      no_weight_copy=isa == "in-place")
    rounded = bf16_oracle_logits(models["bf16"], PROMPT)
    rel, same_argmax = compare(f"tiny bf16 --dtype bfloat16 ({isa} kernels) vs transformers "
                               "f32 with bf16 Linear inputs and QKV", got, rounded, RESULTS)
    unrounded = relative_errors(got, oracle_logits(load_oracle(models["bf16"], torch.float32),
                                                   PROMPT))
    print(f"  against the unrounded f32 model: max rel L2 {unrounded.max():.3e}")
    assert rel.max() <= BF16_TOLERANCE, f"positions over tolerance: {np.nonzero(rel > BF16_TOLERANCE)[0]}"
    assert same_argmax.all(), f"argmax differs at {np.nonzero(~same_argmax)[0]}"
    exact = rel <= TOLERANCE / 10
    print(f"  within {TOLERANCE / 10:g}: {exact.sum()} of {len(rel)} positions")
    assert exact.sum() >= len(rel) // 8, f"too few positions agree exactly: {rel}"
    assert unrounded.min() > TOLERANCE, "the activations were not rounded"


def test_f16_matches_transformers(models):
    got = folo_logits(models["f16"], PROMPT)
    check_close("tiny f16 vs transformers f32 (f16 weights upcast)", got,
                oracle_logits(load_oracle(models["f16"], torch.float32), PROMPT))


def test_untied_matches_transformers(models):
    got = folo_logits(models["untied"], PROMPT)
    check_close("tiny f32 untied", got, oracle_logits(load_oracle(models["untied"], torch.float32), PROMPT))


@pytest.mark.parametrize("chunk", [1, 7, 16])
def test_chunked_equals_one_shot(models, chunk):
    one_shot = folo_logits(models["f32"], PROMPT)
    chunked = folo_logits(models["f32"], PROMPT, chunk=chunk)
    diff = np.abs(chunked - one_shot).max()
    print(f"\nchunk {chunk}: max |diff| vs one-shot {diff:.3e}")
    assert diff <= 1e-6 * np.abs(one_shot).max()


@pytest.mark.parametrize("chunk", [1, 7])
def test_bf16_activations_chunked_equals_one_shot(models, chunk):
    """matmul_bf16 is batch-invariant too: bit for bit, however the ids are fed."""
    one_shot = folo_logits(models["bf16"], PROMPT, dtype="bfloat16")
    chunked = folo_logits(models["bf16"], PROMPT, chunk=chunk, dtype="bfloat16")
    assert np.array_equal(chunked, one_shot)


# A random model with tied embeddings tends to repeat a token; the untied one
# wanders, which makes its continuation the sharper test.
@pytest.mark.parametrize("kind", ["f32", "bf16", "untied"])
def test_greedy_continuation(models, kind):
    prompt = PROMPT[:12]
    got = folo_greedy(models[kind], prompt, 32)
    want = oracle_greedy(load_oracle(models[kind], torch.float32), prompt, 32)
    print(f"\n{kind} greedy: {got}")
    assert got == want


def run_folo(*args):
    return subprocess.run([FOLO, "logits", *args], capture_output=True, text=True)


def test_usage_errors(tmp_path):
    out = str(tmp_path / "x.f32")
    assert run_folo("--help").returncode == 0
    for args in (["--ids", "1,2", "--out", out, "--bogus"],
                 ["--ids", "1,x", "--out", out],
                 ["--ids", "1,,2", "--out", out],
                 ["--ids", "1,2"],
                 ["--out", out],
                 ["--ids", "1", "--out", out, "--chunk", "0"],
                 ["--ids", "1", "--out", out, "--threads", "-3"],
                 ["--ids", "1", "--out", out, "--dtype", "fp8"]):
        proc = run_folo(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("folo logits: "), proc.stderr


def test_runtime_errors(models, tmp_path):
    out = str(tmp_path / "x.f32")
    cases = [
        (["-m", str(models["f32"]), "--ids", f"1,{VOCAB}", "--out", out], "vocabulary"),
        (["-m", str(models["f32"]), "--ids", "-1", "--out", out], "vocabulary"),
        (["-m", str(models["f32"]), "--ids", ",".join(["1"] * 40961), "--out", out],
         "max_position_embeddings"),
        (["-m", str(tmp_path / "missing"), "--ids", "1", "--out", out], ""),
        (["-m", str(models["f32"]), "--ids", "1", "--out", str(tmp_path / "no" / "dir.f32")], "dir.f32"),
        (["-m", str(models["f32"]), "--ids", "1", "--out", out, "--device", "cuda", "--dtype",
          "float32"], "dtype float32"),
    ]
    for args, needle in cases:
        proc = run_folo(*args)
        assert proc.returncode == 1, (args[:2], proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("folo logits: "), proc.stderr
        assert needle in lines[0]
