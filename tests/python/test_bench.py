"""`folo bench latency` and `folo bench throughput` end to end on the tiny model.

Oracles: the JSON carries vLLM's summary keys; the counts follow from the
flags (every request generates exactly --output-len tokens); each raw
record is consistent with itself (TTFT <= E2EL, its ITL gaps sum to the
time from first to last token); and every summary figure is recomputed
here from the raw per-request records with numpy, as vLLM computes it
(np.mean, np.median, np.std, np.percentile). Bad flag values are usage
errors (exit 2)."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

FOLO = os.environ.get("FOLO_BIN", "build/folo")
TINY = Path(os.environ.get("FOLO_TEST_MODEL", "build/test-models/tiny-f32"))

INPUT_LEN, OUTPUT_LEN = 16, 8
COMMON = ["-m", str(TINY), "--device", "cpu", "--kv-memory", "16M", "--input-len",
          str(INPUT_LEN), "--output-len", str(OUTPUT_LEN)]
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
    return proc, json.loads(out.read_text())


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
    assert "output tokens/s" in proc.stdout


@pytest.mark.parametrize("args", [
    ["latency", "--batch-sizes", "1,,2"], ["latency", "--iters", "0"],
    ["throughput", "--num-prompts", "-1"], ["throughput", "--goodput", "ttft"],
    ["throughput", "--bandwidth-gbs", "0"], ["sideways"], [],
])
def test_usage_errors(args):
    proc = subprocess.run([FOLO, "bench", *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
