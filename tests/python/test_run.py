"""`folo run` end to end on the tiny model.

Oracles: the greedy text equals the argmax chain computed from `folo logits`
(decoded by Hugging Face tokenizers); the chat prompt has as many tokens as
transformers' apply_chat_template gives; stop strings cut the greedy text
exactly before their first occurrence; seeds make sampling repeatable."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

FOLO = os.environ.get("FOLO_BIN", "build/folo")
TINY = Path(os.environ.get("FOLO_TEST_MODEL", "build/test-models/tiny-f32"))
TOKENIZER_DIR = os.environ.get("FOLO_TOKENIZER_DIR", "models/qwen3-tokenizer")
VOCAB = 151936
EOS = {151645, 151643}


def run(*args, model=TINY):
    return subprocess.run([FOLO, "run", "-m", str(model), *args], capture_output=True, text=True)


def greedy_chain(prompt_ids, n, tmp_path):
    ids = list(prompt_ids)
    out = []
    for _ in range(n):
        path = tmp_path / "logits.bin"
        proc = subprocess.run([FOLO, "logits", "-m", str(TINY), "--ids", ",".join(map(str, ids)),
                               "--out", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        last = np.fromfile(path, dtype="<f4").reshape(len(ids), VOCAB)[-1]
        token = int(np.argmax(last))
        if token in EOS:
            break
        out.append(token)
        ids.append(token)
    return out


def test_greedy_output_is_the_argmax_chain(tmp_path):
    tok = Tokenizer.from_file(str(Path(TOKENIZER_DIR) / "tokenizer.json"))
    prompt = "The quick brown fox"
    expected = greedy_chain(tok.encode(prompt).ids, 12, tmp_path)
    proc = run("--temperature", "0", "-n", "12", prompt)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == tok.decode(expected) + "\n"
    assert re.search(r"prompt 4 tokens \| output \d+ tokens", proc.stderr), proc.stderr
    assert "TTFT" in proc.stderr and "TPOT" in proc.stderr


def test_chat_prompt_matches_the_official_template():
    hf = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there!"}]
    text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                  enable_thinking=False)
    n = len(hf(text)["input_ids"])
    proc = run("--chat", "--system", "Be brief.", "--no-thinking", "-n", "2", "--seed", "1", "Hi there!")
    assert proc.returncode == 0, proc.stderr
    assert f"prompt {n} tokens" in proc.stderr, proc.stderr


def test_stop_string_cuts_before_its_first_occurrence():
    full = run("--temperature", "0", "-n", "24", "--ignore-eos", "Once upon a time")
    assert full.returncode == 0, full.stderr
    text = full.stdout[:-1]
    assert len(text) > 8, text
    stop = text[len(text) // 2:len(text) // 2 + 3]
    cut = run("--temperature", "0", "-n", "24", "--ignore-eos", "--stop", stop, "Once upon a time")
    assert cut.returncode == 0, cut.stderr
    assert cut.stdout == text[:text.index(stop)] + "\n"
    assert "(stop)" in cut.stderr


def test_seed_makes_sampling_repeatable():
    a = run("--temperature", "1", "--top-k", "0", "--top-p", "1", "--seed", "42", "-n", "24",
            "--ignore-eos", "Hello")
    b = run("--temperature", "1", "--top-k", "0", "--top-p", "1", "--seed", "42", "-n", "24",
            "--ignore-eos", "Hello")
    c = run("--temperature", "1", "--top-k", "0", "--top-p", "1", "--seed", "43", "-n", "24",
            "--ignore-eos", "Hello")
    assert a.returncode == b.returncode == c.returncode == 0
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout


def test_max_tokens_is_respected():
    proc = run("--temperature", "0", "-n", "5", "--ignore-eos", "Hello")
    assert proc.returncode == 0, proc.stderr
    assert "output 5 tokens (length)" in proc.stderr


def test_prompt_longer_than_the_context_is_an_error(tmp_path):
    model = tmp_path / "short-context"
    shutil.copytree(TINY, model)
    config = json.loads((model / "config.json").read_text())
    config["max_position_embeddings"] = 8
    (model / "config.json").write_text(json.dumps(config))
    proc = run("-n", "4", "one two three four five six seven eight nine ten", model=model)
    assert proc.returncode == 1
    assert "context is 8" in proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["--bogus", "hi"], "unknown option"),
    (["-n", "0", "hi"], "-n"),
    (["--temperature", "-1", "hi"], "--temperature"),
    (["--top-p", "2", "hi"], "--top-p"),
    (["--seed", "x", "hi"], "--seed"),
    (["--device", "tpu", "hi"], "--device"),
    ([], "no prompt"),
    (["a", "b"], "one PROMPT"),
    (["--system", "s", "hi"], "--chat"),
])
def test_usage_errors(args, needle):
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "usage: folo run" in proc.stderr or "folo run:" in proc.stderr


def test_help():
    proc = subprocess.run([FOLO, "run", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "usage: folo run" in proc.stdout and "--temperature" in proc.stdout


def test_missing_model_dir_is_an_error(tmp_path):
    proc = run("hi", model=tmp_path / "nope")
    assert proc.returncode == 1
    assert "config.json" in proc.stderr
