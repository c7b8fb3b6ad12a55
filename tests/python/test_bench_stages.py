"""`folo bench stages` (docs/stages.md) end to end on the tiny model.

One run of every stage, M7 on a GPTQ 4-bit checkpoint of the tiny model
built here with test_gptq.py's numpy quantizer, and both side tables, with
a small workload; the checks read its JSON and its HTML:
  - the file validates against docs/bench-schema.json;
  - the stages are cumulative: each stage's recorded engine options differ
    from the previous stage's in exactly the switch it adds;
  - the workload is what the flags ask for (the shared system prompt at the
    head of round(ratio x n) prompts, send times from 0 ascending), and
    every stage's summary counts exactly its tokens;
  - every stage's greedy outputs equal those of `folo generate` running
    each request alone (--max-seqs 1), M7's those of `folo generate` on the
    GPTQ checkpoint: so M1-M6 are identical, and each stage did the work;
  - M1's contiguous reservations hold more KV blocks per stored token than
    M3's paged blocks (lower utilization over all steps);
  - the prefix cache serves nothing before M6, and part of the shared
    system prompt from M6 on (never more than the prompt's whole blocks);
  - the side tables: a row per chunk size, decode gaps measured during the
    long prefill (one per decoding request when the prompt is prefilled
    whole), and `bench prefix`'s table with its hit rates;
  - --stages runs a subset, the first as the baseline of the speed-ups;
  - a ShareGPT workload's prompts are the conversations' first turns as
    Hugging Face's tokenizer encodes them;
  - bad flags and values are usage errors naming the flag; a --gptq
    directory that is not a GPTQ checkpoint is refused by name."""

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

FOLO = os.environ.get("FOLO_BIN", "build/folo")
TINY = Path(os.environ.get("FOLO_TEST_MODEL", "build/test-models/tiny-f32"))
SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "bench-schema.json").read_text())

N, SHARED_LEN, BLOCK = 8, 32, 16
# A token budget below two prompts: admissions spread over steps, so a
# later shared prompt always finds the first one's prefix blocks cached.
COMMON = ["-m", str(TINY), "--device", "cpu", "--threads", "1", "--kv-memory", "16M",
          "--hardware", "h100", "--num-prompts", str(N), "--input-len", "16", "--output-len",
          "24", "--random-range-ratio", "0.5", "--shared-prefix-len", str(SHARED_LEN),
          "--shared-prefix-ratio", "0.5", "--request-rate", "20", "--max-batched-tokens", "64",
          "--seed", "3"]
SIDE = ["--chunk-sizes", "32,64,whole", "--chunk-prompt-len", "160", "--prefix-hit-ratios",
        "0,50,95", "--prefix-prompt-len", "64", "--prefix-num-prompts", "2"]
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
# What each stage switches on, over the one before it.
ADDS = {"M2": {"batching": ("static", "continuous")}, "M3": {"kv": ("contiguous", "paged")},
        "M4": {"attention": ("naive", "online")}, "M5": {"chunked_prefill": (False, True)},
        "M6": {"prefix_cache": (False, True)}}


def gptq_checkpoint(out):
    """The tiny model with every layer's linears quantized to 4 bits
    (round to nearest, groups of 32, format gptq), tokenizer and all."""
    from test_gptq import pack, quantize  # imports torch: only for the tests that need it
    out.mkdir()
    tensors = load_file(str(TINY / "model.safetensors"))
    rng = np.random.default_rng(0)
    quant = {}
    for key, value in tensors.items():
        prefix = key[:-len(".weight")]
        if not any(prefix.endswith(l) for l in LINEARS):
            quant[key] = value
            continue
        parts = quantize(value.astype(np.float32), 32, True, False, True, rng)
        for suffix, tensor in pack(*parts, True).items():
            quant[f"{prefix}.{suffix}"] = np.ascontiguousarray(tensor)
    save_file(quant, str(out / "model.safetensors"))
    config = json.loads((TINY / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 32,
                                     "desc_act": False, "sym": True,
                                     "checkpoint_format": "gptq"}
    (out / "config.json").write_text(json.dumps(config))
    for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        if (TINY / name).exists():
            shutil.copy(TINY / name, out / name)
    return out


def stages(tmp_path, *flags):
    out = tmp_path / "stages.json"
    proc = subprocess.run([FOLO, "bench", "stages", *COMMON, "--json", str(out), *flags],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    j = json.loads(out.read_text())
    jsonschema.validate(j, SCHEMA)
    return proc, j


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stages")
    gptq = gptq_checkpoint(tmp / "tiny-gptq")
    html = tmp / "stages.html"
    proc, j = stages(tmp, "--gptq", str(gptq), "--html", str(html), *SIDE)
    return {"proc": proc, "json": j, "gptq": gptq, "html": html.read_text(), "tmp": tmp}


def alone(tmp, model, workload):
    """Each request's greedy output from `folo generate`, one at a time."""
    inp, out = tmp / "in.jsonl", tmp / "out.jsonl"
    inp.write_text("".join(json.dumps({"prompt_token_ids": w["prompt_token_ids"],
                                       "max_tokens": w["max_tokens"], "temperature": 0,
                                       "ignore_eos": True}) + "\n" for w in workload))
    proc = subprocess.run([FOLO, "generate", "-m", str(model), "--input", str(inp), "--output",
                           str(out), "--device", "cpu", "--threads", "1", "--kv-memory", "16M",
                           "--max-seqs", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line)["token_ids"] for line in out.read_text().splitlines()]


def test_stages_are_cumulative(run):
    j = run["json"]
    assert j["stages"] == ["M1", "M2", "M3", "M4", "M5", "M6", "M7"]
    assert [r["stage"] for r in j["results"]] == j["stages"]
    m1 = j["results"][0]["engine_options"]
    assert (m1["batching"], m1["kv"], m1["attention"], m1["chunked_prefill"],
            m1["prefix_cache"], m1["gptq"]) == ("static", "contiguous", "naive", False, False,
                                                False)
    for prev, cur in zip(j["results"], j["results"][1:]):
        a, b = prev["engine_options"], cur["engine_options"]
        changed = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
        if cur["stage"] == "M7":
            assert changed == {"model": (str(TINY), str(run["gptq"])), "gptq": (False, True)}
        else:
            assert changed == ADDS[cur["stage"]], cur["stage"]


def test_workload_and_counts(run):
    j = run["json"]
    w = j["workload"]
    assert len(w) == N and j["shared_prefix_requests"] == round(0.5 * N)
    shared = [x["prompt_token_ids"] for x in w if x["shared_prefix"]]
    assert len(shared) == j["shared_prefix_requests"]
    assert all(p[:SHARED_LEN] == shared[0][:SHARED_LEN] for p in shared)
    own = [x["prompt_token_ids"] for x in w if not x["shared_prefix"]]
    assert all(p[:SHARED_LEN] != shared[0][:SHARED_LEN] for p in own)
    for x in w:  # --input-len 16 and --output-len 24, each within +-50%
        assert 8 <= len(x["prompt_token_ids"]) - SHARED_LEN * x["shared_prefix"] <= 24
        assert 12 <= x["max_tokens"] <= 36
    sends = [x["send_at_s"] for x in w]
    assert sends[0] == 0 and sends == sorted(sends) and sends[-1] > 0
    for r in j["results"]:
        s = r["summary"]
        assert s["completed"] == N and s["failed"] == 0
        assert s["total_input_tokens"] == sum(len(x["prompt_token_ids"]) for x in w)
        assert s["total_output_tokens"] == sum(x["max_tokens"] for x in w)
        assert s["output_throughput"] == pytest.approx(s["total_output_tokens"] / s["duration"])
        assert [len(o) for o in r["output_token_ids"]] == [x["max_tokens"] for x in w]
        # Each request arrives when it was due, never after it is scheduled.
        for rec, x in zip(r["requests"], w):
            assert rec["arrival_s"] <= rec["first_scheduled_s"] <= rec["first_token_s"]
        first = r["requests"][0]["arrival_s"]
        for rec, x in zip(r["requests"], w):
            assert rec["arrival_s"] - first == pytest.approx(x["send_at_s"], abs=1e-6)
        base = j["results"][0]["summary"]
        assert r["speedup_output_throughput"] == pytest.approx(
            s["output_throughput"] / base["output_throughput"])
        assert r["speedup_e2el"] == pytest.approx(base["mean_e2el_ms"] / s["mean_e2el_ms"])
        assert 0 < r["cpu_utilization"] and r["threads"] == 1
        m = r["memory"]
        assert m["peak_bytes"] == m["weight_bytes"] + m["kv_peak_used_bytes"] + \
            m["activation_bytes"]
        assert m["kv_pool_bytes"] == 16 << 20 and m["activation_bytes"] > 0
    assert j["results"][6]["memory"]["weight_bytes"] < j["results"][5]["memory"]["weight_bytes"]


def test_outputs_equal_each_request_alone(run):
    j = run["json"]
    expected = alone(run["tmp"], TINY, j["workload"])
    for r in j["results"][:6]:
        assert r["output_token_ids"] == expected, r["stage"]
        assert r["outputs_match_reference"] in (None, True)
    assert j["outputs_identical"]
    m7 = j["results"][6]
    assert m7["output_token_ids"] == alone(run["tmp"], run["gptq"], j["workload"])
    agree = sum(a == b for e, o in zip(expected, m7["output_token_ids"]) for a, b in zip(e, o))
    assert m7["output_token_agreement"] == pytest.approx(agree / sum(map(len, expected)))
    assert "greedy outputs identical" in run["proc"].stdout


def test_contiguous_kv_holds_more_blocks_per_token(run):
    r = {x["stage"]: x for x in run["json"]["results"]}
    for x in r.values():
        assert x["kv_tokens_stored_at_peak"] <= x["kv_blocks_held_at_peak"] * BLOCK
        assert x["kv_utilization_peak"] == pytest.approx(
            x["kv_tokens_stored_at_peak"] / (x["kv_blocks_held_at_peak"] * BLOCK))
    # Over all steps, not at the fullest one: arrivals follow the clock, so
    # which step is fullest (and how full its last blocks are) depends on
    # the machine's speed; the mean is a property of the reservations.
    assert r["M1"]["kv_utilization_mean"] < r["M3"]["kv_utilization_mean"]
    assert r["M1"]["preemptions"] == 0  # a reservation never grows


def test_prefix_hits_from_m6_on(run):
    j = run["json"]
    most = (j["shared_prefix_requests"] - 1) * (SHARED_LEN // BLOCK * BLOCK)
    for r in j["results"]:
        if r["stage"] in ("M6", "M7"):
            assert 0 < r["prefix_hit_tokens"] <= most
            assert r["prefix_queried_tokens"] >= r["summary"]["total_input_tokens"]
            assert r["prefix_hit_rate"] == pytest.approx(
                r["prefix_hit_tokens"] / r["prefix_queried_tokens"])
        else:
            assert r["prefix_hit_tokens"] == r["prefix_queried_tokens"] == 0
            assert r["prefix_hit_rate"] == 0


def test_side_tables(run):
    j = run["json"]
    chunk = j["chunk_table"]
    assert chunk["prompt_len"] == 160 and chunk["decode_requests"] == 4
    assert [r["chunk_size"] for r in chunk["results"]] == [32, 64, "whole"]
    for r in chunk["results"]:
        assert r["prompt_ttft_ms"] > 0 and r["prefill_tokens_per_s"] > 0
        assert r["decode_itl_during_prefill_max_ms"] >= r["decode_itl_during_prefill_mean_ms"] > 0
        assert r["chunked_prefill"] == (r["chunk_size"] != "whole")
    # Whole, the prompt takes one step, and each decoding request one gap;
    # in chunks of 32 (28 after the 4 decodes) it takes ceil(160 / 28) = 6.
    whole = chunk["results"][2]
    assert whole["decode_gaps_during_prefill"] == 4
    assert chunk["results"][0]["decode_gaps_during_prefill"] == 4 * 6
    assert chunk["results"][0]["seeds_decode_ms"] is None and whole["seeds_decode_ms"] == 500
    prefix = j["prefix_table"]
    assert prefix["mode"] == "prefix" and prefix["input_len"] == 64
    assert [r["target_hit_ratio"] for r in prefix["results"]] == [0, 0.5, 0.95]
    assert [r["prefix_hit_tokens"] for r in prefix["results"]] == [0, 2 * 32, 2 * 48]
    assert prefix["seeds_ttft_gain"]["80"] == 5
    out = run["proc"].stdout
    assert "chunk size vs decode latency" in out and "prefix hit rate vs TTFT" in out


def test_tables_and_html(run):
    out = run["proc"].stdout
    for stage in ("M1", "M6", "M7"):
        assert re.search(rf"^{stage} ", out, re.M)
    assert "(100)" in out and "(2K)" in out  # the seeds' M1 TTFT and tokens/s
    assert "TTFT bands" in out
    html = run["html"]
    charts = [ET.fromstring(s) for s in re.findall(r"<svg.*?</svg>", html, re.S)]
    # bars of throughput, latency and KV utilization per stage; TTFT and
    # ITL histograms and CDFs
    assert len(charts) == 7
    ns = "{http://www.w3.org/2000/svg}"
    assert len(charts[0].findall(f"{ns}rect")) == 1 + 2 * 7 + 2  # frame, bars, legend
    assert len(charts[4].findall(f"{ns}polyline")) == 7
    assert "Chunk size vs decode latency" in html and "Prefix hit rate vs TTFT" in html
    assert "stage M7" in html


def test_subset_and_compare(tmp_path, run):
    _, j = stages(tmp_path, "--stages", "m6,M1,M4", "--side-tables", "none",
                  "--request-rate", "inf")
    assert j["stages"] == ["M1", "M4", "M6"] and j["baseline_stage"] == "M1"
    assert j["chunk_table"] is None and j["prefix_table"] is None
    assert j["request_rate"] == "inf"
    assert all(w["send_at_s"] == 0 for w in j["workload"])
    assert [r["output_token_ids"] for r in j["results"]] == \
        [j["results"][0]["output_token_ids"]] * 3
    m4 = j["results"][1]["engine_options"]
    assert (m4["batching"], m4["kv"], m4["attention"], m4["chunked_prefill"]) == (
        "continuous", "paged", "online", False)
    # compare lines the stages up by name with the full run's
    full = tmp_path / "full.json"
    full.write_text(json.dumps(run["json"]))
    proc = subprocess.run([FOLO, "bench", "compare", str(full), str(tmp_path / "stages.json")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "stage M4" in proc.stdout


def test_sharegpt_workload(tmp_path):
    """ShareGPT prompts are the first turns, tokenized as Hugging Face's
    tokenizer does (--output-len replaces the second turns' lengths); the
    system prompt goes in front of the shared ones."""
    tok = Tokenizer.from_file(str(TINY / "tokenizer.json"))
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    pairs = [(" ".join(words[: 4 + i % 6]), " ".join(reversed(words[: 5 + i % 5])))
             for i in range(6)]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps([{"conversations": [{"from": "human", "value": p},
                                                   {"from": "gpt", "value": c}]}
                                for p, c in pairs]))
    expected = sorted((tok.encode(p).ids, 24) for p, _ in pairs)
    _, j = stages(tmp_path, "--dataset-name", "sharegpt", "--dataset-path", str(path),
                  "--num-prompts", "6", "--stages", "M6", "--side-tables", "none")
    w = j["workload"]
    got = sorted((x["prompt_token_ids"][SHARED_LEN if x["shared_prefix"] else 0:],
                  x["max_tokens"]) for x in w)
    assert got == expected
    assert j["dataset_name"] == "sharegpt" and j["dataset_path"] == str(path)


@pytest.mark.parametrize("args, flag", [
    (["--stages", "M8"], "--stages"), (["--stages", "M1,,M2"], "--stages"),
    (["--stages", "M7"], "--gptq"), (["--gptq", "x", "--stages", "M1"], "--gptq"),
    (["--batching", "static"], "--batching"), (["--no-prefix-cache"], "--no-prefix-cache"),
    (["--attention", "naive"], "--attention"), (["--kv", "paged"], "--kv"),
    (["--no-chunked-prefill"], "--no-chunked-prefill"),
    (["--shared-prefix-ratio", "1.5"], "--shared-prefix-ratio"),
    (["--shared-prefix-len", "0"], "--shared-prefix-len"),
    (["--request-rate", "0"], "--request-rate"), (["--side-tables", "some"], "--side-tables"),
    (["--chunk-sizes", "8"], "--chunk-sizes"), (["--chunk-sizes", "64,,whole"], "--chunk-sizes"),
    (["--prefix-hit-ratios", "101"], "--prefix-hit-ratios"),
    (["--dataset-name", "sharegpt"], "--dataset-path"),
    (["--dataset-name", "alpaca"], "--dataset-name"),
    (["--random-range-ratio", "1"], "--random-range-ratio"),
    (["--num-prompts", "0"], "--num-prompts"), (["--slo", "fast"], "--slo"),
    (["extra"], "extra"),
])
def test_usage_errors(args, flag):
    proc = subprocess.run([FOLO, "bench", "stages", *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert flag in proc.stderr


def test_gptq_must_be_gptq(tmp_path):
    proc = subprocess.run([FOLO, "bench", "stages", *COMMON, "--gptq", str(TINY), "--stages",
                           "M6,M7", "--side-tables", "none"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"{TINY}: not a GPTQ checkpoint" in proc.stderr


def test_help():
    proc = subprocess.run([FOLO, "bench", "stages", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for flag in ("--gptq", "--stages", "--shared-prefix-ratio", "--request-rate",
                 "--side-tables", "10-20 minutes"):
        assert flag in proc.stdout
