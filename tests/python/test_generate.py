"""`folo generate` end to end on the tiny model.

Oracles: every request batched together gives, at temperature 0, exactly
the text `folo run --temperature 0` gives for it alone (plain prompts and
chat messages alike; on the CPU, whose logits do not depend on batching); output lines follow the input order and carry the
documented fields; n > 1 yields that many samples; a malformed line is an
error naming its line number, and nothing is written for it."""

import json
import os
import subprocess
from pathlib import Path

import pytest

FOLO = os.environ.get("FOLO_BIN", "build/folo")
TINY = Path(os.environ.get("FOLO_TEST_MODEL", "build/test-models/tiny-f32"))

PROMPTS = [
    "The quick brown fox",
    "Once upon a time",
    "The quick brown fox jumps over the lazy dog, and then",
    "1, 2, 3,",
    "Hello",
]
FIELDS = {"index", "prompt_tokens", "cached_tokens", "text", "token_ids", "output_tokens",
          "finish_reason", "ttft_ms", "tpot_ms", "e2e_ms"}


def generate(tmp_path, lines, *flags):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(line if isinstance(line, str) else json.dumps(line) + "\n"
                           for line in lines))
    proc = subprocess.run([FOLO, "generate", "-m", str(TINY), "--input", str(inp), "--output",
                           str(out), "--kv-memory", "8M", "--device", "cpu", *flags],
                          capture_output=True, text=True)
    rows = [json.loads(l) for l in out.read_text().splitlines()] if out.exists() else []
    return proc, rows


def run_alone(prompt, n, *flags):
    proc = subprocess.run([FOLO, "run", "-m", str(TINY), "--device", "cpu", "--temperature", "0",
                           "-n", str(n), *flags, prompt], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout[:-1]  # folo run ends the stream with a newline


@pytest.mark.parametrize("flags", [(), ("--max-batched-tokens", "5", "--block-size", "4"),
                                   ("--no-prefix-cache", "--max-seqs", "2")])
def test_greedy_batch_equals_run_alone(tmp_path, flags):
    lines = [{"prompt": p, "max_tokens": 6 + i, "temperature": 0, "id": f"r{i}"}
             for i, p in enumerate(PROMPTS)]
    lines.append({"messages": [{"role": "user", "content": "Hi there!"}], "max_tokens": 7,
                  "temperature": 0})
    proc, rows = generate(tmp_path, lines, *flags)
    assert proc.returncode == 0, proc.stderr
    assert [r["index"] for r in rows] == list(range(len(lines)))
    for i, (line, row) in enumerate(zip(lines, rows)):
        assert FIELDS <= set(row), row
        assert row["output_tokens"] == len(row["token_ids"]) <= line["max_tokens"]
        assert row["finish_reason"] in ("stop", "length")
        assert row["e2e_ms"] >= row["ttft_ms"] > 0
        if "prompt" in line:
            assert row["id"] == line["id"]
            assert row["text"] == run_alone(line["prompt"], line["max_tokens"])
        else:
            assert row["text"] == run_alone("Hi there!", line["max_tokens"], "--chat")
    assert "prefix cache hit rate" in proc.stderr and "tokens/s" in proc.stderr


def test_samples_and_sampling_fields(tmp_path):
    lines = [{"prompt": "Once upon a time", "max_tokens": 5, "n": 3, "temperature": 1.0,
              "top_k": 50, "seed": 4, "stop": ["zzz"], "ignore_eos": True},
             {"prompt_token_ids": [9707, 11, 1879], "max_tokens": 3, "temperature": 0,
              "logprobs": 2}]
    proc, rows = generate(tmp_path, lines)
    assert proc.returncode == 0, proc.stderr
    assert len(rows[0]["samples"]) == 3
    assert all(s["output_tokens"] == 5 for s in rows[0]["samples"])
    assert rows[1]["prompt_tokens"] == 3 and "samples" not in rows[1]
    lps = rows[1]["logprobs"]
    assert [lp["token"] for lp in lps] == rows[1]["token_ids"]
    # Greedy: the chosen token is the most likely one.
    assert all(len(lp["top"]) == 2 and lp["top"][0] == [lp["token"], lp["logprob"]] for lp in lps)
    again = generate(tmp_path, lines)[1]
    # The same seed repeats the same samples.
    assert [s["token_ids"] for s in again[0]["samples"]] == \
        [s["token_ids"] for s in rows[0]["samples"]]


@pytest.mark.parametrize("bad", ['{"prompt": 3}\n', '{"prompt": "x", "max_token": 3}\n',
                                 '{"prompt": "x", "temperature": -1}\n', 'not json\n',
                                 '{"messages": "hi"}\n', '{"prompt": "x", "messages": []}\n'])
def test_malformed_line_is_an_error_naming_it(tmp_path, bad):
    proc, rows = generate(tmp_path, ['{"prompt": "fine", "max_tokens": 2}\n', bad])
    assert proc.returncode == 1
    assert "line 2" in proc.stderr, proc.stderr
    assert rows == []


def test_request_that_cannot_fit_is_refused(tmp_path):
    proc, _ = generate(tmp_path, [{"prompt": "x", "max_tokens": 4000}], "--kv-memory", "1M")
    assert proc.returncode == 1
    assert "line 1" in proc.stderr and "KV blocks" in proc.stderr, proc.stderr
