"""`folo bench latency` and `folo bench throughput` end to end on the tiny model.

Oracles: the JSON carries vLLM's summary keys; the counts follow from the
flags (every request generates exactly --output-len tokens); each raw
record is consistent with itself (TTFT <= E2EL, its ITL gaps sum to the
time from first to last token); the file validates against
docs/bench-schema.json; and every summary figure is recomputed
here from the raw per-request records with numpy, as vLLM computes it
(np.mean, np.median, np.std, np.percentile). Bad flag values are usage
errors (exit 2)."""

import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
import pytest

FOLO = os.environ.get("FOLO_BIN", "build/folo")
TINY = Path(os.environ.get("FOLO_TEST_MODEL", "build/test-models/tiny-f32"))
SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "bench-schema.json").read_text())

INPUT_LEN, OUTPUT_LEN = 16, 8
# A built-in roofline profile: measuring this CPU (test_roofline_profiles
# does it once) would cost every run a fraction of a second.
COMMON = ["-m", str(TINY), "--device", "cpu", "--kv-memory", "16M", "--input-len",
          str(INPUT_LEN), "--output-len", str(OUTPUT_LEN), "--hardware", "h100"]
METRICS = ("ttft", "tpot", "itl", "e2el")
PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p99.9": 99.9}
SUMMARY_KEYS = {"completed", "duration", "total_input_tokens", "total_output_tokens",
                "request_throughput", "request_goodput", "output_throughput",
                "total_token_throughput"} | {
    f"{stat}_{m}_ms" for m in METRICS for stat in ("mean", "median", "std", *PERCENTILES)}


def bench(tmp_path, mode, *flags):
    out = tmp_path / f"{mode}.json"
    proc = subprocess.run([FOLO, "bench", mode, *COMMON, "--json", str(out), *flags],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    j = json.loads(out.read_text())
    jsonschema.validate(j, SCHEMA)
    return proc, j


def check_records(records):
    for r in records:
        assert r["ok"]
        assert r["prompt_tokens"] == INPUT_LEN and r["output_tokens"] == OUTPUT_LEN
        assert r["arrival_s"] <= r["first_scheduled_s"] <= r["first_token_s"] <= r["finish_s"]
        assert 0 <= r["ttft_ms"] <= r["e2el_ms"]
        assert r["ttft_ms"] == pytest.approx((r["first_token_s"] - r["arrival_s"]) * 1e3)
        assert r["e2el_ms"] == pytest.approx((r["finish_s"] - r["arrival_s"]) * 1e3)
        assert r["tpot_ms"] == pytest.approx(
            (r["finish_s"] - r["first_token_s"]) * 1e3 / (OUTPUT_LEN - 1))
        assert len(r["itl_ms"]) == OUTPUT_LEN - 1 and min(r["itl_ms"]) >= 0


def check_summary(s, records, n_requests, slo=None):
    """Recomputes vLLM's figures from the raw records and compares."""
    assert SUMMARY_KEYS <= set(s)
    assert s["completed"] == n_requests == len(records)
    assert s["total_input_tokens"] == n_requests * INPUT_LEN
    assert s["total_output_tokens"] == n_requests * OUTPUT_LEN
    duration = s["duration"]
    assert duration > 0
    assert s["request_throughput"] == pytest.approx(n_requests / duration)
    assert s["output_throughput"] == pytest.approx(n_requests * OUTPUT_LEN / duration)
    assert s["total_token_throughput"] == pytest.approx(
        n_requests * (INPUT_LEN + OUTPUT_LEN) / duration)
    values = {
        "ttft": [r["ttft_ms"] for r in records],
        "tpot": [r["tpot_ms"] for r in records if r["output_tokens"] > 1],
        "itl": [gap for r in records for gap in r["itl_ms"]],
        "e2el": [r["e2el_ms"] for r in records],
    }
    for m, v in values.items():
        assert s[f"mean_{m}_ms"] == pytest.approx(np.mean(v), rel=1e-9, abs=1e-9)
        assert s[f"median_{m}_ms"] == pytest.approx(np.median(v), rel=1e-9, abs=1e-9)
        assert s[f"std_{m}_ms"] == pytest.approx(np.std(v), rel=1e-6, abs=1e-9)
        for name, p in PERCENTILES.items():
            assert s[f"{name}_{m}_ms"] == pytest.approx(np.percentile(v, p), rel=1e-9, abs=1e-9)
        ordered = [s[f"{name}_{m}_ms"] for name in PERCENTILES]
        assert ordered == sorted(ordered)
    bands = {"instant": 0, "fast": 0, "slow": 0, "stalled": 0}
    for r in records:  # the seeds' TTFT bands
        t = r["ttft_ms"]
        bands["instant" if t < 100 else "fast" if t < 300 else "slow" if t <= 1000
              else "stalled"] += 1
    assert s["ttft_bands"] == bands
    if slo is None:
        assert s["request_goodput"] is None
    else:
        good = sum(all(r[f"{k}_ms"] <= ms for k, ms in slo.items()) for r in records)
        assert s["request_goodput"] == pytest.approx(good / duration)


def test_latency(tmp_path):
    proc, j = bench(tmp_path, "latency", "--batch-sizes", "1,4", "--iters", "2", "--warmup", "1")
    assert j["mode"] == "latency" and j["iters"] == 2
    assert j["decode_weight_bytes"] > 0 and j["decode_floor_ms"] > 0
    assert [r["batch_size"] for r in j["results"]] == [1, 4]
    for res in j["results"]:
        records = res["requests"]
        check_records(records)
        check_summary(res["summary"], records, res["batch_size"] * 2)
        assert res["decode_steps"] == 2 * (OUTPUT_LEN - 1)  # the first token ends the prefill
        assert 0 < res["roofline_fraction"]
    assert "TTFT" in proc.stdout and "roofline" in proc.stdout


def test_throughput(tmp_path):
    slo = {"ttft": 1e6, "tpot": 1e-3}  # every TTFT passes, no TPOT does
    proc, j = bench(tmp_path, "throughput", "--num-prompts", "8", "--goodput", "ttft:1e6",
                    "--goodput", "tpot:0.001")
    assert j["mode"] == "throughput" and j["num_prompts"] == 8
    records = j["requests"]
    check_records(records)
    check_summary(j["summary"], records, 8, slo)
    assert j["summary"]["request_goodput"] == 0
    assert 0 < j["peak_kv_usage"] <= 1
    assert j["kv_blocks_peak_used"] >= 8 * (INPUT_LEN + OUTPUT_LEN - 1) // 16
    assert j["prefill_steps"] >= 1 and j["decode_steps"] >= OUTPUT_LEN - 1
    assert j["prefill_s"] + j["decode_s"] <= j["summary"]["duration"]
    assert set(j["engine_phases_s"]) == {"schedule", "prepare", "forward", "sample", "output"}
    assert "output tokens/s" in proc.stdout and "TTFT bands: instant" in proc.stdout


@pytest.mark.parametrize("preset, ttft_ms", [("chat", 200), ("batch", 1000), ("realtime", 50)])
def test_slo_presets(tmp_path, preset, ttft_ms):
    """--slo NAME is goodput with the seeds' scenario TTFT."""
    _, j = bench(tmp_path, "throughput", "--num-prompts", "4", "--slo", preset)
    check_summary(j["summary"], j["requests"], 4, {"ttft": ttft_ms})


@pytest.mark.parametrize("args", [
    ["throughput", "--slo", "interactive"],
    ["latency", "--batch-sizes", "1,,2"], ["latency", "--iters", "0"],
    ["throughput", "--num-prompts", "-1"], ["throughput", "--goodput", "ttft"],
    ["throughput", "--bandwidth-gbs", "0"], ["prefix", "--prefix-hit-ratios", "101"],
    ["prefix", "--prefix-hit-ratios", "0,,5"], ["memory", "--seq-lens", "1"],
    ["memory", "--seq-lens", "16", "--output-len", "16"], ["sideways"], [],
])
def test_usage_errors(args):
    proc = subprocess.run([FOLO, "bench", *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr


def svgs(html):
    """The report's charts, each parsed as XML (so each is well formed)."""
    return [ET.fromstring(s) for s in re.findall(r"<svg.*?</svg>", html, re.S)]


def test_html_and_compare(tmp_path):
    runs = []
    for name in ("a", "b"):
        html = tmp_path / f"{name}.html"
        _, j = bench(tmp_path, "latency", "--batch-sizes", "1,2", "--iters", "1",
                     "--warmup", "0", "--html", str(html))
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(j))
        runs.append((path, j))
        charts = svgs(html.read_text())
        # throughput and latency against batch size, then for TTFT and for
        # ITL a histogram and the CDFs (one line per batch size)
        assert len(charts) == 6
        ns = "{http://www.w3.org/2000/svg}"
        assert len(charts[3].findall(f"{ns}polyline")) == 2
        assert len(charts[5].findall(f"{ns}polyline")) == 2
    proc = subprocess.run([FOLO, "bench", "compare", *(str(p) for p, _ in runs)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    tables = proc.stdout.split("\n\n")[1:]
    assert [t.splitlines()[0] for t in tables] == ["batch 1", "batch 2"]
    for k, table in enumerate(tables):
        a, b = (j["results"][k]["summary"]["mean_ttft_ms"] for _, j in runs)
        row = next(line for line in table.splitlines() if line.startswith("mean_ttft_ms"))
        assert row.split()[1:] == [f"{a:.3f}", f"{b:.3f}", f"({b / a:.2f}x)"]
    bad = tmp_path / "bad.json"
    bad.write_text("[1,")
    proc = subprocess.run([FOLO, "bench", "compare", str(runs[0][0]), str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "bad.json: not valid JSON" in proc.stderr
    proc = subprocess.run([FOLO, "bench", "compare", str(runs[0][0])], capture_output=True,
                          text=True)
    assert proc.returncode == 2


def test_prefix(tmp_path):
    """The engine's hit rate is exactly the shared prefix rounded down to
    whole 16-token blocks, over every prompt token looked up."""
    n, input_len = 3, 64
    proc, j = bench(tmp_path, "prefix", "--num-prompts", str(n), "--input-len", str(input_len),
                    "--output-len", "2", "--prefix-hit-ratios", "0,50,95")
    assert j["mode"] == "prefix" and j["input_len"] == input_len
    assert [r["target_hit_ratio"] for r in j["results"]] == [0, 0.5, 0.95]
    for res in j["results"]:
        shared = round(res["target_hit_ratio"] * input_len)
        assert res["shared_prefix_tokens"] == shared
        assert res["prefix_queried_tokens"] == n * input_len
        assert res["prefix_hit_tokens"] == n * (shared // 16 * 16)
        assert res["hit_rate"] == pytest.approx(res["prefix_hit_tokens"] / (n * input_len))
        assert res["summary"]["completed"] == n and len(res["requests"]) == n
        assert res["mean_ttft_ratio_to_first"] == pytest.approx(
            j["results"][0]["summary"]["mean_ttft_ms"] / res["summary"]["mean_ttft_ms"])
    assert "hit rate" in proc.stdout


def test_memory(tmp_path):
    """Paged KV holds whole blocks: at the fullest step every sequence has
    computed all but its last two tokens (the last finishes it, and is never
    computed) in ceil((seq - 2) / 16) blocks; a contiguous allocation would
    reserve max_model_len tokens per sequence."""
    out_len = 8
    proc, j = bench(tmp_path, "memory", "--seq-lens", "40,100", "--batch-sizes", "1,3",
                    "--output-len", str(out_len), "--html", str(tmp_path / "m.html"))
    assert j["kv_block_size"] == 16 and j["weight_bytes"] > 0
    assert j["kv_pool_bytes"] == j["kv_blocks_total"] * 16 * j["kv_bytes_per_token"]
    assert [(r["seq_len"], r["batch_size"]) for r in j["results"]] == [
        (40, 1), (40, 3), (100, 1), (100, 3)]
    for r in j["results"]:
        bs, stored = r["batch_size"], r["seq_len"] - 2
        assert r["preemptions"] == 0
        assert r["kv_blocks_held"] == bs * -(-stored // 16)
        assert r["kv_tokens_stored"] == bs * stored
        assert r["kv_bytes_held"] == r["kv_blocks_held"] * 16 * j["kv_bytes_per_token"]
        assert r["kv_utilization"] == pytest.approx(stored / (-(-stored // 16) * 16))
        assert r["contiguous_utilization"] == pytest.approx(stored / j["max_model_len"])
        assert r["contiguous_bytes"] == bs * j["max_model_len"] * j["kv_bytes_per_token"]
        assert r["peak_rss_bytes"] > j["weight_bytes"]
    assert "<table>" in (tmp_path / "m.html").read_text()
    assert "KV util" in proc.stdout


def flops_per_token(config):
    """2 x the parameters the matmuls use: q, k, v, o, gate, up, down, lm_head."""
    h, i = config["hidden_size"], config["intermediate_size"]
    q = config["num_attention_heads"] * config["head_dim"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    layer = h * (2 * q + 2 * kv) + 3 * h * i
    return 2 * (config["num_hidden_layers"] * layer + config["vocab_size"] * h)


def cpu_has(flag):
    return flag in Path("/proc/cpuinfo").read_text().split()


def test_cpu_peak_is_that_of_the_dtype(tmp_path):
    """The measured CPU's peak is that of the instructions the run's
    matmuls use: FMAs (or AMX tiles at half rate) in float32, never
    vdpbf16ps, which bfloat16 uses where the CPU has it."""
    _, j = bench(tmp_path, "throughput", "--num-prompts", "2", "--hardware", "cpu",
                 "--dtype", "float32")
    assert j["hardware"]["peak_kind"] in (
        "f32 FMA (AVX2)", "f32 FMA (AVX-512)", "tdpbf16ps (AMX-BF16) / 2"), j["hardware"]
    if cpu_has("avx512_bf16"):
        _, j = bench(tmp_path, "throughput", "--num-prompts", "2", "--hardware", "cpu",
                     "--dtype", "bfloat16")
        assert j["hardware"]["peak_kind"] in (
            "vdpbf16ps (AVX512-BF16)", "tdpbf16ps (AMX-BF16)"), j["hardware"]


def test_roofline_profiles(tmp_path):
    """A built-in profile's floors and the run's MFU, MBU and seed estimates
    follow from its figures and the model's config; --peak-tflops and
    --bandwidth-gbs override them."""
    config = json.loads((TINY / "config.json").read_text())
    fpt = flops_per_token(config)
    _, j = bench(tmp_path, "throughput", "--num-prompts", "4", "--hardware", "h100",
                 "--devices", "8")
    assert j["hardware"] == {"name": "h100", "peak_kind": "bf16 dense tensor",
                             "bandwidth_gbs": 3350, "peak_gflops": 989e3, "measured": False}
    assert j["flops_per_token"] == fpt
    assert j["decode_floor_ms"] == pytest.approx(j["decode_weight_bytes"] / 3350e9 * 1e3)
    lm_head = 2 * config["vocab_size"] * config["hidden_size"]
    assert j["prefill_floor_ms_per_token"] == pytest.approx((fpt - lm_head) / 989e12 * 1e3)
    s = j["summary"]
    assert j["mfu"] == pytest.approx(s["total_token_throughput"] * fpt / 989e12)
    assert j["mbu"] == pytest.approx(j["decode_floor_ms"] / j["decode_step_ms"])
    assert j["seed_estimate_tokens_per_s"]["a100"] == pytest.approx(8 * 312e12 * j["mfu"] / fpt)
    _, j = bench(tmp_path, "throughput", "--num-prompts", "4", "--hardware", "a100",
                 "--peak-tflops", "100", "--bandwidth-gbs", "50")
    assert j["peak_gflops"] == 100e3 and j["bandwidth_gbs"] == 50
    assert j["decode_floor_ms"] == pytest.approx(j["decode_weight_bytes"] / 50e9 * 1e3)
    _, j = bench(tmp_path, "throughput", "--num-prompts", "2", "--hardware", "cpu")
    assert j["hardware"]["name"] == "cpu" and j["hardware"]["measured"]
    assert j["bandwidth_gbs"] > 0 and j["peak_gflops"] > 0
    proc = subprocess.run([FOLO, "bench", "throughput", *COMMON, "--hardware", "tpu"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "unknown hardware 'tpu'" in proc.stderr
