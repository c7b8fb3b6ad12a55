"""The engine switches (docs/switches.md) as flags of generate, serve and bench.

Oracles: `folo generate` at temperature 0 gives the same token ids under
every switch and under all four together (the seeds' M1) as with none, on
the tiny model; a bad value is a usage error (exit 2) naming the flag, the
value and what is accepted, for each command that takes the engine flags;
every command's --help documents the switches; naive attention refuses a
request whose score matrix exceeds its budget, naming the length; the CUDA
backend refuses naive attention at creation."""

import json
import os
import subprocess
from pathlib import Path

import pytest

FOLO = os.environ.get("FOLO_BIN", "build/folo")
TINY = Path(os.environ.get("FOLO_TEST_MODEL", "build/test-models/tiny-f32"))

PROMPTS = ["The quick brown fox", "Once upon a time there was",
           "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,",
           "Hello", "The quick brown fox jumps over"]
SWITCHES = [("--batching", "static"), ("--kv", "contiguous"), ("--attention", "naive"),
            ("--no-chunked-prefill",), ("--no-weight-copy",)]


def generate(tmp_path, lines, *flags):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps(line) + "\n" for line in lines))
    proc = subprocess.run([FOLO, "generate", "-m", str(TINY), "--input", str(inp), "--output",
                           str(out), "--kv-memory", "8M", "--device", "cpu",
                           "--max-batched-tokens", "8", "--max-seqs", "3", *flags],
                          capture_output=True, text=True)
    rows = [json.loads(l) for l in out.read_text().splitlines()] if out.exists() else []
    return proc, rows


def token_ids(tmp_path, *flags):
    lines = [{"prompt": p, "max_tokens": 5 + 2 * i, "temperature": 0, "ignore_eos": True}
             for i, p in enumerate(PROMPTS)]
    proc, rows = generate(tmp_path, lines, *flags)
    assert proc.returncode == 0, proc.stderr
    return [r["token_ids"] for r in rows]


@pytest.mark.parametrize("flags", SWITCHES + [sum(SWITCHES, ())])
def test_greedy_tokens_equal_default(tmp_path, flags):
    assert token_ids(tmp_path, *flags) == token_ids(tmp_path)


# The same under --dtype bfloat16, whose bf16 KV cache every attention path
# reads (naive attention included).
@pytest.mark.parametrize("flags", SWITCHES + [sum(SWITCHES, ())])
def test_bf16_greedy_tokens_equal_bf16_default(tmp_path, flags):
    bf16 = ("--dtype", "bfloat16")
    assert token_ids(tmp_path, *bf16, *flags) == token_ids(tmp_path, *bf16)


@pytest.mark.parametrize("cmd", [["generate"], ["serve"], ["bench", "latency"]])
@pytest.mark.parametrize("flag,value,accepted", [
    ("--batching", "dynamic", "continuous or static"),
    ("--kv", "flat", "paged or contiguous"),
    ("--attention", "flash", "online or naive"),
    ("--dtype", "fp8", "auto, float32 or bfloat16"),
])
def test_bad_values_are_usage_errors(cmd, flag, value, accepted):
    proc = subprocess.run([FOLO, *cmd, flag, value], capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"folo {cmd[0]}: invalid value '{value}' for {flag} (expected {accepted})" in proc.stderr


@pytest.mark.parametrize("cmd", ["generate", "serve", "bench"])
def test_help_documents_switches(cmd):
    proc = subprocess.run([FOLO, cmd, "--help"], capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    for flag in ("--batching", "--kv", "--attention", "--no-chunked-prefill", "--no-weight-copy"):
        assert flag in text, f"{cmd} --help lacks {flag}"


def test_naive_attention_refuses_long_sequences(tmp_path):
    # 4096 + 1 tokens need a 4097x4097 score matrix: beyond the 64 MiB budget.
    lines = [{"prompt_token_ids": [11] * 4000, "max_tokens": 97, "temperature": 0}]
    proc, rows = generate(tmp_path, lines, "--attention", "naive", "--kv-memory", "64M")
    assert proc.returncode != 0
    assert "4097 tokens" in proc.stderr and "naive attention budget of 64.0 MiB" in proc.stderr



def test_bf16_refuses_block_sizes_off_its_layout(tmp_path):
    # The bf16 cache holds 16 positions of a block per register.
    lines = [{"prompt_token_ids": [11, 12, 13], "max_tokens": 2, "temperature": 0}]
    proc, _ = generate(tmp_path, lines, "--dtype", "bfloat16", "--block-size", "8")
    assert proc.returncode != 0
    assert "dtype bfloat16 needs a block size that is a multiple of 16" in proc.stderr
    assert "got 8" in proc.stderr
    proc, rows = generate(tmp_path, lines, "--dtype", "bfloat16", "--block-size", "32")
    assert proc.returncode == 0, proc.stderr
    assert len(rows) == 1
