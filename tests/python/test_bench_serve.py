"""`folo bench serve` end to end on the tiny model: in process, and with --url
against a `folo serve` this test starts.

Oracles: every JSON file validates against docs/bench-schema.json; the
counts follow from the flags (--ignore-eos makes every request generate
exactly its max_tokens, so token totals are exact); the summary figures are
recomputed from the raw records with numpy as vLLM computes them (shared
with test_bench.py); the ShareGPT sampler keeps exactly the conversations
that vLLM's filters keep, counted with the Hugging Face tokenizer; random
prompts' lengths follow --length-dist; --max-concurrency bounds the
requests in flight as the raw records' intervals show; a server that cannot
be reached gives failed records with the error. Malformed datasets and bad
flags are clear errors."""

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest
from tokenizers import Tokenizer

from server_helpers import FOLO, TINY, Server
from test_bench import INPUT_LEN, OUTPUT_LEN, check_summary

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "bench-schema.json").read_text())
TOKENIZER_DIR = Path(os.environ.get("FOLO_TOKENIZER_DIR", "models/qwen3-tokenizer"))
ENGINE = ["-m", str(TINY), "--device", "cpu", "--kv-memory", "16M", "--threads", "2"]
RANDOM = ["--input-len", str(INPUT_LEN), "--output-len", str(OUTPUT_LEN), "--ignore-eos"]
# Requests go nowhere: the workload is made and every request fails fast.
NOWHERE = ["--url", "http://127.0.0.1:1", "--served-model-name", "none"]


def bench_serve(tmp_path, *flags, rc=0):
    out = tmp_path / "serve.json"
    proc = subprocess.run([FOLO, "bench", "serve", "--json", str(out), *flags],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == rc, proc.stderr
    if rc != 0:
        return proc, None
    j = json.loads(out.read_text())
    jsonschema.validate(j, SCHEMA)
    return proc, j


def check_stream_records(records, output_len=OUTPUT_LEN):
    for r in records:
        assert r["ok"] and r["error"] is None
        assert r["first_scheduled_s"] is None  # not seen from a client
        assert r["arrival_s"] < r["first_token_s"] <= r["finish_s"]
        assert r["output_tokens"] == output_len
        assert r["usage_prompt_tokens"] == r["prompt_tokens"]
        # One chunk per token, except tokens whose text the server holds
        # back (an incomplete UTF-8 character), which share a later chunk.
        assert 1 <= len(r["itl_ms"]) + 1 <= r["output_tokens"]
        assert sum(r["itl_ms"]) <= (r["finish_s"] - r["first_token_s"]) * 1e3 + 1e-6


def test_in_process_sweep(tmp_path):
    proc, j = bench_serve(tmp_path, *ENGINE, *RANDOM, "--num-prompts", "6", "--num-warmups",
                          "2", "--request-rates", "40,inf", "--goodput", "ttft:1e6",
                          "--hardware", "h200", "--html", str(tmp_path / "serve.html"))
    assert j["in_process"] and j["dataset_name"] == "random" and j["num_warmups"] == 2
    assert j["hardware"]["name"] == "h200" and j["peak_gflops"] == 989e3
    assert [r["request_rate"] for r in j["results"]] == [40, "inf"]
    for res in j["results"]:
        records = res["requests"]
        assert len(records) == 6 and res["errors"] == {}
        check_stream_records(records)
        check_summary(res["summary"], records, 6, {"ttft": 1e6})
        assert 1 <= res["summary"]["max_concurrent_requests"] <= 6
        assert 0 < res["summary"]["max_output_tokens_per_s"] <= 6 * OUTPUT_LEN
        assert res["mfu"] == pytest.approx(
            res["summary"]["total_token_throughput"] * j["flops_per_token"] / 989e12)
    # At an infinite rate every request is sent before any finishes.
    sent = [r["arrival_s"] for r in j["results"][1]["requests"]]
    assert max(sent) < min(r["finish_s"] for r in j["results"][1]["requests"])
    assert "request-rate sweep" in proc.stdout
    assert "MFU" in proc.stdout and "<svg" in (tmp_path / "serve.html").read_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("bench-serve"), "--device", "cpu", "--kv-memory", "16M")
    yield s
    s.stop()


def in_flight_max(records):
    events = sorted([(r["arrival_s"], 1) for r in records] + [(r["finish_s"], -1) for r in records])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_url_max_concurrency(tmp_path, server):
    _, j = bench_serve(tmp_path, "--url", f"http://127.0.0.1:{server.port}/", *RANDOM,
                       "--num-prompts", "6", "--max-concurrency", "2", "--request-rate", "100",
                       "--burstiness", "0.5")
    assert not j["in_process"] and j["max_concurrency"] == 2
    assert "hardware" not in j and "mfu" not in j["results"][0]
    assert j["served_model_name"] == TINY.name  # the first id of GET /v1/models
    assert j["url"] == f"http://127.0.0.1:{server.port}/v1/completions"
    res = j["results"][0]
    check_stream_records(res["requests"])
    check_summary(res["summary"], res["requests"], 6)
    assert in_flight_max(res["requests"]) <= 2


def test_sweep_never_resends_a_prompt(tmp_path, server):
    """Warm-ups and each rate get prompts of their own: sent again, a
    prompt would be served by the server's prefix cache and the later
    rates measured with their prefills already done."""
    key = ("folo:prefix_cache_hits_total", frozenset())
    queries = ("folo:prefix_cache_queries_total", frozenset())
    before = server.metrics()
    input_len = 40  # two whole 16-token blocks the cache could serve
    _, j = bench_serve(tmp_path, "--url", f"http://127.0.0.1:{server.port}", "--input-len",
                       str(input_len), "--output-len", "2", "--ignore-eos", "--num-prompts", "3",
                       "--num-warmups", "2", "--request-rates", "50,inf", "--seed", "4242")
    assert [r["summary"]["completed"] for r in j["results"]] == [3, 3]
    after = server.wait_metrics(lambda m: m[queries] >= before[queries] + 8 * input_len)
    assert after[queries] - before[queries] == 8 * input_len
    assert after[key] == before[key]


def hf_len(tok, text):
    return len(tok.encode(text).ids)


def write_sharegpt(path, pairs):
    convs = [{"id": str(i), "conversations": [{"from": "human", "value": p},
                                              {"from": "gpt", "value": c}]}
             for i, (p, c) in enumerate(pairs)]
    convs.append({"id": "one-turn", "conversations": [{"from": "human", "value": "alone"}]})
    path.write_text(json.dumps(convs))


def test_sharegpt_sampling(tmp_path, server):
    tok = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    pairs = [(" ".join(words[: 4 + i]), " ".join(reversed(words[: 4 + i]))) for i in range(6)]
    pairs += [("hi", "a long enough answer here"),                # prompt < 4 tokens
              ("a prompt long enough to keep", "ok"),              # completion < 4 tokens
              ("word " * 1100, "an answer of some length"),       # prompt > 1024 tokens
              ("word " * 1000, "word " * 1100)]                   # together > 2048 tokens
    path = tmp_path / "sharegpt.json"
    write_sharegpt(path, pairs)
    kept = sorted((hf_len(tok, p), hf_len(tok, c)) for p, c in pairs
                  if 4 <= hf_len(tok, p) <= 1024 and hf_len(tok, c) >= 4
                  and hf_len(tok, p) + hf_len(tok, c) <= 2048)
    assert len(kept) == 6
    _, j = bench_serve(tmp_path, "--url", f"http://127.0.0.1:{server.port}", "--dataset-name",
                       "sharegpt", "--dataset-path", str(path), "--num-prompts", str(len(kept)),
                       "--ignore-eos", "--tokenizer", str(TOKENIZER_DIR))
    records = j["results"][0]["requests"]
    assert sorted((r["prompt_tokens"], r["output_tokens"]) for r in records) == kept
    assert all(r["usage_prompt_tokens"] == r["prompt_tokens"] for r in records)
    assert j["results"][0]["summary"]["total_output_tokens"] == sum(c for _, c in kept)
    # One more than the filters keep is an error, not a shorter run.
    proc, _ = bench_serve(tmp_path, *NOWHERE, "--dataset-name", "sharegpt", "--dataset-path",
                          str(path), "--num-prompts", str(len(kept) + 1), rc=1)
    assert "only 6 of its 10 conversations pass the length filters" in proc.stderr


@pytest.mark.parametrize("text, message", [
    ("[{\"conversations\": [", "not valid JSON (line 1"),
    ("{\"conversations\": []}", "expected a JSON array of conversations"),
    ("[{\"id\": 1}]", "entry 0 has no \"conversations\" array"),
    ("[{\"conversations\": [{\"value\": \"a b c d\"}, {\"value\": 5}]}]",
     "entry 0: turn 1 is not an object with a string \"value\""),
    ("[{\"conversations\": [\"a\", \"b\"]}]", "entry 0: turn 0 is not an object"),
])
def test_malformed_sharegpt(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    proc, _ = bench_serve(tmp_path, *NOWHERE, "--dataset-name", "sharegpt", "--dataset-path",
                          str(path), "--num-prompts", "1", rc=1)
    assert message in proc.stderr and str(path) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_dataset(tmp_path):
    proc, _ = bench_serve(tmp_path, *NOWHERE, "--dataset-name", "sharegpt", "--dataset-path",
                          str(tmp_path / "absent.json"), rc=1)
    assert "absent.json" in proc.stderr


@pytest.mark.parametrize("flags, check", [
    (["--input-len", "40", "--random-range-ratio", "0.5"],
     lambda lens: min(lens) >= 20 and max(lens) <= 60 and len(set(lens)) > 5),
    (["--input-len", "40", "--length-dist", "poisson"],
     lambda lens: len(set(lens)) > 5 and 30 < sum(lens) / len(lens) < 50),
    (["--input-len", "40"], lambda lens: set(lens) == {40}),
])
def test_random_lengths_and_failures(tmp_path, flags, check):
    _, j = bench_serve(tmp_path, *NOWHERE, "--num-prompts", "40", "--seed", "3", *flags)
    res = j["results"][0]
    assert res["summary"]["completed"] == 0 and res["summary"]["failed"] == 40
    assert sum(res["errors"].values()) == 40
    assert all(r["error"] == next(iter(res["errors"])) for r in res["requests"])
    assert check([r["prompt_tokens"] for r in res["requests"]])


def test_random_prompts_are_exact_and_seeded(tmp_path, server):
    """The server's own usage count agrees with the prompt length asked for."""
    lens = []
    for seed in ("1", "1", "2"):
        _, j = bench_serve(tmp_path, "--url", f"http://127.0.0.1:{server.port}", "--input-len",
                           "50", "--random-range-ratio", "0.9", "--output-len", "1",
                           "--num-prompts", "5", "--seed", seed)
        records = j["results"][0]["requests"]
        assert all(r["usage_prompt_tokens"] == r["prompt_tokens"] for r in records)
        lens.append([r["prompt_tokens"] for r in records])
    assert lens[0] == lens[1] != lens[2]


@pytest.mark.parametrize("args", [
    ["--request-rate", "0"], ["--request-rates", "1,,2"], ["--request-rates", "fast"],
    ["--burstiness", "0"], ["--max-concurrency", "0"], ["--dataset-name", "mmlu"],
    ["--dataset-name", "sharegpt"], ["--dataset-path", "x.json"], ["--length-dist", "zipf"],
    ["--random-range-ratio", "1"], ["--endpoint", "v1/completions"], ["--num-warmups", "-1"],
    ["--url", "http://127.0.0.1:1", "--hardware", "h100"],
    ["extra"],
])
def test_usage_errors(args):
    proc = subprocess.run([FOLO, "bench", "serve", *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("folo bench serve: ")


def test_server_errors_are_failed_records(tmp_path, server):
    """A request the server rejects is a failed record carrying the HTTP
    status and the server's message, not an error of the run."""
    _, j = bench_serve(tmp_path, "--url", f"http://127.0.0.1:{server.port}",
                       "--served-model-name", "no-such-model", "--num-prompts", "3",
                       "--input-len", "8", "--output-len", "2")
    res = j["results"][0]
    assert res["summary"]["completed"] == 0 and res["summary"]["failed"] == 3
    (message, count), = res["errors"].items()
    assert count == 3 and message.startswith("HTTP 4") and "no-such-model" in message


def test_unreachable_models_list(tmp_path):
    proc, _ = bench_serve(tmp_path, "--url", "http://127.0.0.1:1", "--num-prompts", "1", rc=1)
    assert "GET http://127.0.0.1:1/v1/models:" in proc.stderr
