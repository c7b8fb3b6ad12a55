"""`folo perplexity` (issue 14) against transformers and numpy on the tiny
synthetic model.

The oracle tokenizes the same text with Hugging Face `tokenizers` (its last
newline dropped, as folo and llama-perplexity read a file), cuts it into the
same chunks, runs each chunk through transformers' Qwen3ForCausalLM (f32,
eager), and scores the same positions: in a chunk of CTX tokens the logits
at positions CTX/2 .. CTX-2 against the tokens that follow them. From those
f32 logits, in float64 numpy:
  - the perplexity and its error (llama.cpp's estimate) must equal folo's to
    f32 tolerance, after every chunk and at the end;
  - against a base model (a perturbed copy of the model, another seed, the
    model itself, the float twin of a GPTQ checkpoint), the KL divergence
    (mean, error, percentiles, max), top-1 agreement, Δp (of the text's next
    token, as llama.cpp defines it) and both perplexities must equal folo's;
  - the model against itself gives KL 0 and 100 % agreement exactly.
A GPTQ checkpoint (round-to-nearest, packed by test_gptq.py's helpers) runs
through `perplexity` and `--kl-base` and matches the oracle on its
dequantized twin. Bad input exits 2 naming the flag, file or length; a base
whose vocabulary or tokenizer differs exits 1 naming the difference.

Run by ctest (FOLO_BIN, FOLO_TEST_MODEL set); `pytest -s` prints the figures."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

from logits_helpers import FOLO, load_oracle, make_model
from test_gptq import quantize_checkpoint

CTX = 64
CHUNKS = 5
FIRST = CTX // 2
SCORED = CTX - 1 - FIRST
TEXT_FILE = Path(__file__).resolve().parents[2] / "README.md"
RTOL = 1e-4  # f32 logits against transformers (test_logits.py's tolerance)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppl")
    env = os.environ.get("FOLO_TEST_MODEL")
    tiny = Path(env) if env else make_model(root / "tiny", "tiny", "f32")
    perturbed = root / "perturbed"
    shutil.copytree(tiny, perturbed)
    tensors = load_file(str(perturbed / "model.safetensors"))
    rng = np.random.default_rng(5)
    for name, value in tensors.items():
        if value.ndim == 2:
            tensors[name] = value + rng.normal(0, value.std(), value.shape).astype(np.float32)
    save_file(tensors, str(perturbed / "model.safetensors"))
    quantize_checkpoint(tiny, root / "gptq", group_size=32, twin=root / "gptq-twin")
    return {"tiny": tiny, "perturbed": perturbed,
            "other-seed": make_model(root / "other-seed", "tiny", "f32", seed=99),
            "gptq": root / "gptq", "gptq-twin": root / "gptq-twin"}


@pytest.fixture(scope="module")
def ids(models):
    text = TEXT_FILE.read_text(encoding="utf-8")
    text = text[:-1] if text.endswith("\n") else text
    ids = Tokenizer.from_file(str(models["tiny"] / "tokenizer.json")).encode(text).ids
    assert len(ids) >= CTX * CHUNKS
    return ids


def folo_perplexity(model, tmp_path, *args, base=None):
    """(figures from --json, stdout, stderr) of a successful run."""
    out = tmp_path / "ppl.json"
    cmd = [FOLO, "perplexity", "-m", str(model), "--file", str(TEXT_FILE), "--ctx", str(CTX),
           "--chunks", str(CHUNKS), "--json", str(out), *args]
    if base:
        cmd += ["--kl-base", str(base)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc.stdout, proc.stderr


def oracle_log_probs(model_dir, ids):
    """float64 log-softmax [CHUNKS * SCORED, V] of the scored rows, and their targets."""
    model = load_oracle(model_dir, torch.float32)
    chunks = torch.tensor(ids[:CHUNKS * CTX]).reshape(CHUNKS, CTX)
    with torch.no_grad():
        logits = model(chunks).logits[:, FIRST:CTX - 1].double()
    targets = chunks[:, FIRST + 1:].reshape(-1).numpy()
    return torch.log_softmax(logits, dim=-1).reshape(CHUNKS * SCORED, -1).numpy(), targets


def mean_err(x):
    """llama.cpp's mean and its error: sqrt((E[x^2] - E[x]^2) / (n - 1))."""
    m = x.mean()
    return m, np.sqrt(max((x * x).mean() - m * m, 0) / (x.size - 1))


def oracle_figures(lp, targets, lp_base=None):
    rows = np.arange(targets.size)
    nll = -lp[rows, targets]
    m, e = mean_err(nll)
    out = {"n_scored": targets.size, "nll_mean": m, "ppl": np.exp(m), "ppl_err": np.exp(m) * e,
           "chunk_ppl": [np.exp(nll[:(c + 1) * SCORED].mean()) for c in range(CHUNKS)]}
    if lp_base is None:
        return out
    nll_b = -lp_base[rows, targets]
    mb, eb = mean_err(nll_b)
    cov = ((nll * nll_b).mean() - m * mb) / (nll.size - 1)
    ln_ratio_err = np.sqrt(e * e + eb * eb - 2 * cov)
    kl = (np.exp(lp_base) * (lp_base - lp)).sum(axis=1)
    same = (lp.argmax(axis=1) == lp_base.argmax(axis=1)).mean()
    dp = np.exp(-nll) - np.exp(-nll_b)
    dp_mean, dp_err = mean_err(dp)
    mse, mse_err = mean_err(dp * dp)
    kl_mean, kl_err = mean_err(kl)
    out.update({
        "ppl_base": np.exp(mb), "ppl_base_err": np.exp(mb) * eb,
        "ppl_ratio": np.exp(m - mb), "ppl_ratio_err": np.exp(m - mb) * ln_ratio_err,
        "kl_mean": kl_mean, "kl_err": kl_err, "kl_median": np.median(kl),
        "kl_p90": np.percentile(kl, 90), "kl_p95": np.percentile(kl, 95),
        "kl_p99": np.percentile(kl, 99), "kl_p99_9": np.percentile(kl, 99.9), "kl_max": kl.max(),
        "same_top_pct": 100 * same,
        "same_top_err_pct": 100 * np.sqrt(same * (1 - same) / (nll.size - 1)),
        "delta_p_mean_pct": 100 * dp_mean, "delta_p_err_pct": 100 * dp_err,
        "delta_p_rms_pct": 100 * np.sqrt(mse),
        "delta_p_rms_err_pct": 100 * 0.5 / np.sqrt(mse) * mse_err,
    })
    return out


def check_figures(got, want, kl_rtol=RTOL):
    print()
    for key, value in want.items():
        print(f"  {key}: folo {got[key]}, oracle {value}")
        if key == "n_scored":
            assert got[key] == value
        elif key == "same_top_pct":
            assert got[key] == pytest.approx(value, abs=1e-9), key
        else:
            rtol = kl_rtol if key.startswith(("kl_", "delta_p_")) or "_err" in key else RTOL
            assert np.allclose(got[key], value, rtol=rtol, atol=1e-12), key


def test_perplexity_matches_transformers(models, ids, tmp_path):
    got, stdout, stderr = folo_perplexity(models["tiny"], tmp_path, "--batch", "2")
    want = oracle_figures(*oracle_log_probs(models["tiny"], ids))
    check_figures(got, want)
    assert (got["ctx"], got["n_chunks"], got["first_scored_position"], got["scored_per_chunk"]) \
        == (CTX, CHUNKS, FIRST, SCORED)
    assert got["n_text_tokens"] == len(ids)
    assert got["kl_base"] is None and "kl_mean" not in got
    assert stdout == f"Final estimate: PPL = {got['ppl']:.4f} +/- {got['ppl_err']:.5f}\n"
    progress = [l for l in stderr.splitlines() if l.startswith("perplexity: [")]
    assert [l.split()[1] for l in progress] == [f"[{c}/{CHUNKS}]" for c in range(1, CHUNKS + 1)]


def test_batching_does_not_change_the_figures(models, tmp_path):
    one, _, _ = folo_perplexity(models["tiny"], tmp_path, "--batch", "1")
    all_at_once, _, _ = folo_perplexity(models["tiny"], tmp_path, "--batch", str(CHUNKS))
    assert one["ppl"] == all_at_once["ppl"] and one["chunk_ppl"] == all_at_once["chunk_ppl"]
    assert (one["batch"], all_at_once["batch"]) == (1, CHUNKS)


@pytest.mark.parametrize("model", ["perturbed", "other-seed"])
def test_kl_divergence_matches_numpy(models, ids, tmp_path, model):
    got, stdout, _ = folo_perplexity(models[model], tmp_path, base=models["tiny"])
    lp, targets = oracle_log_probs(models[model], ids)
    lp_base, _ = oracle_log_probs(models["tiny"], ids)
    want = oracle_figures(lp, targets, lp_base)
    # A KL is a small difference of f32 logits: its relative error grows as
    # the logits' error over its square root.
    check_figures(got, want, kl_rtol=2e-3)
    assert got["kl_base"] == str(models["tiny"])
    assert f"Mean KLD             : {got['kl_mean']:12.6f}" in stdout
    assert f"Same top p           : {got['same_top_pct']:12.3f}" in stdout
    if model == "perturbed":  # a real but partial disagreement
        assert 0 < got["kl_mean"] < 1 and 0 < got["same_top_pct"] < 100


def test_kl_against_itself_is_zero(models, tmp_path):
    got, _, _ = folo_perplexity(models["tiny"], tmp_path, base=models["tiny"])
    assert got["kl_mean"] == 0 and got["kl_max"] == 0
    assert got["same_top_pct"] == 100
    assert got["delta_p_mean_pct"] == 0 and got["delta_p_rms_pct"] == 0
    assert got["ppl"] == got["ppl_base"] and got["ppl_ratio"] == 1


def test_gptq_checkpoint_against_its_float_base(models, ids, tmp_path):
    got, _, _ = folo_perplexity(models["gptq"], tmp_path, base=models["tiny"])
    lp, targets = oracle_log_probs(models["gptq-twin"], ids)
    lp_base, _ = oracle_log_probs(models["tiny"], ids)
    check_figures(got, oracle_figures(lp, targets, lp_base), kl_rtol=2e-3)
    assert got["kl_mean"] > 0
    # As the base, too.
    swapped, _, _ = folo_perplexity(models["tiny"], tmp_path, base=models["gptq"])
    assert swapped["ppl"] == got["ppl_base"] and swapped["ppl_base"] == got["ppl"]


# ---- errors ------------------------------------------------------------------

def folo_fails(args, code):
    proc = subprocess.run([FOLO, "perplexity", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    return proc.stderr


F = ["--file", str(TEXT_FILE)]


@pytest.mark.parametrize("args,needle", [
    (["--ctx", "64"], "--file is required"),
    ([*F, "--ctx", "2"], "invalid value '2' for --ctx"),
    ([*F, "--ctx", "1"], "invalid value '1' for --ctx"),
    ([*F, "--batch", "0"], "invalid value '0' for --batch"),
    ([*F, "--chunks", "x"], "invalid value 'x' for --chunks"),
    ([*F, "--threads", "0"], "invalid value '0' for --threads"),
    ([*F, "--device", "tpu"], "invalid value 'tpu' for --device"),
    ([*F, "--bogus"], "unknown option '--bogus'"),
    ([*F, "--ctx"], "option '--ctx' needs a value"),
    ([*F, "extra"], "unexpected argument 'extra'"),
])
def test_usage_errors(models, args, needle):
    stderr = folo_fails(["-m", models["tiny"], *args], 2)
    assert needle in stderr, stderr


def test_input_errors(models, tmp_path):
    m = ["-m", models["tiny"]]
    missing = tmp_path / "missing.txt"
    assert f"--file: {missing}: cannot open" in folo_fails([*m, "--file", missing], 2)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert f"--file {empty} is empty" in folo_fails([*m, "--file", empty], 2)
    short = tmp_path / "short.txt"
    short.write_text("Hello world, this is short.\n")
    n = len(Tokenizer.from_file(str(models["tiny"] / "tokenizer.json"))
            .encode("Hello world, this is short.").ids)
    line = folo_fails([*m, "--file", short, "--ctx", "64"], 2)
    assert f"has {n} tokens; one chunk of --ctx 64 needs at least 64" in line, line
    bad_utf8 = tmp_path / "bad.txt"
    bad_utf8.write_bytes(b"abc \xff def")
    assert f"--file {bad_utf8}" in folo_fails([*m, "--file", bad_utf8, "--ctx", "3"], 2)
    line = folo_fails([*m, "--file", TEXT_FILE, "--ctx", "50000"], 2)
    assert "--ctx 50000 is larger than the context" in line and "max_position_embeddings 40960" in line
    line = folo_fails([*m, "--file", TEXT_FILE, "--ctx", str(CTX), "--chunks", "1", "--json",
                       tmp_path / "no-dir" / "x.json"], 2)
    assert f"--json {tmp_path / 'no-dir' / 'x.json'}: No such file" in line, line


def test_base_must_share_vocabulary_and_tokenizer(models, tmp_path):
    wider = tmp_path / "wider"
    shutil.copytree(models["tiny"], wider)
    tensors = load_file(str(wider / "model.safetensors"))
    embed = tensors["model.embed_tokens.weight"]
    tensors["model.embed_tokens.weight"] = np.concatenate([embed, embed[:64]])
    save_file(tensors, str(wider / "model.safetensors"))
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps(dict(config, vocab_size=embed.shape[0] + 64)))
    args = ["--file", TEXT_FILE, "--ctx", CTX, "--chunks", 1]
    line = folo_fails(["-m", models["tiny"], "--kl-base", wider, *args], 1)
    assert f"vocab_size 151936 (-m {models['tiny']}) vs 152000 (--kl-base {wider})" in line, line

    other_tok = tmp_path / "other-tokenizer"
    shutil.copytree(models["tiny"], other_tok)
    tok = json.loads((other_tok / "tokenizer.json").read_text())
    tok["model"]["merges"] = tok["model"]["merges"][1000:]
    (other_tok / "tokenizer.json").write_text(json.dumps(tok))
    line = folo_fails(["-m", models["tiny"], "--kl-base", other_tok, *args], 1)
    assert "tokenizers differ on the text: token" in line and str(other_tok) in line, line

    line = folo_fails(["-m", models["tiny"], "--kl-base", tmp_path / "nowhere", *args], 1)
    assert f"--kl-base {tmp_path / 'nowhere'}" in line, line
