"""`folo bench throughput --random-range-ratio`: each request's lengths drawn
as vLLM's random dataset bounds them, and the transformers peer's repeat of
the draw (tests/gpu/bench_transformers.py), on the tiny model on the CPU.

Oracles: vLLM's bounds, math.floor(len * (1 - r)) and math.ceil(len * (1 +
r)) computed here in Python from the same text of r; the per-request
records of folo's --json (every request generates exactly its drawn output
length, ignore_eos) against those bounds and against the summary's totals;
bench_transformers.draw_lengths, a separate implementation of folo's
generator, against the lengths folo used; and the peer's own JSON against
folo's totals for the same flags."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from test_bench import FOLO, TINY, bench

ROOT = Path(__file__).parents[2]


def load_peer():
    spec = importlib.util.spec_from_file_location(
        "bench_transformers", ROOT / "tests" / "gpu" / "bench_transformers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def throughput(tmp_path, *flags):
    """folo bench throughput's stdout and --json (checked against the
    schema); flags override test_bench's lengths."""
    return bench(tmp_path, "throughput", *flags)


def lengths(j):
    return ([r["prompt_tokens"] for r in j["requests"]],
            [r["output_tokens"] for r in j["requests"]])


def vllm_bounds(length, ratio_text):
    r = float(ratio_text)
    return [max(math.floor(length * (1 - r)), 1), math.ceil(length * (1 + r))]


def test_lengths_vary_within_bounds_and_totals_match(tmp_path):
    proc, j = throughput(tmp_path, "--num-prompts", "24", "--input-len", "40", "--output-len",
                         "20", "--random-range-ratio", "0.5", "--seed", "3")
    ins, outs = lengths(j)
    assert j["random_range_ratio"] == 0.5
    assert j["input_len_range"] == [20, 60] and j["output_len_range"] == [10, 30]
    assert all(20 <= n <= 60 for n in ins) and all(10 <= n <= 30 for n in outs)
    assert len(set(ins)) > 8 and len(set(outs)) > 8
    s = j["summary"]
    assert s["completed"] == 24
    assert s["total_input_tokens"] == sum(ins) and s["total_output_tokens"] == sum(outs)
    assert s["output_throughput"] == pytest.approx(sum(outs) / s["duration"])
    assert f"{sum(ins)} prompt + {sum(outs)} output" in proc.stdout
    assert "20-60 prompt + 10-30 output tokens" in proc.stdout


@pytest.mark.parametrize("input_len, output_len, ratio", [
    (562, 5, "0.822"), (100, 3, "0.1"), (3, 100, "0.9"), (7, 7, "0.3")])
def test_bounds_are_vllms(tmp_path, input_len, output_len, ratio):
    # 562 and 0.822: the nano-vllm workload's prompts, 100-1024; 100 and
    # 0.1: 100 * 1.1 is 110.00000000000001 in doubles, so vLLM's ceil is 111.
    _, j = throughput(tmp_path, "--num-prompts", "3", "--input-len", str(input_len),
                      "--output-len", str(output_len), "--random-range-ratio", ratio)
    assert j["input_len_range"] == vllm_bounds(input_len, ratio)
    assert j["output_len_range"] == vllm_bounds(output_len, ratio)
    ins, outs = lengths(j)
    assert all(j["input_len_range"][0] <= n <= j["input_len_range"][1] for n in ins)
    assert all(j["output_len_range"][0] <= n <= j["output_len_range"][1] for n in outs)


def test_seeded_and_repeated_by_the_peer(tmp_path):
    flags = ["--num-prompts", "12", "--input-len", "30", "--output-len", "10",
             "--random-range-ratio", "0.6"]
    draws = [lengths(throughput(tmp_path, *flags, "--seed", seed)[1]) for seed in ("5", "5", "6")]
    assert draws[0] == draws[1] != draws[2]
    peer = load_peer()
    assert list(peer.draw_lengths(12, 30, 10, 0.6, 5)) == list(draws[0])
    assert list(peer.draw_lengths(12, 30, 10, 0.6, 6)) == list(draws[2])
    assert peer.length_bounds(562, 0.822) == (100, 1024)


def test_peer_measures_the_same_workload(tmp_path):
    """bench_transformers.py on the CPU: its throughput run asks for the
    tokens folo's does, and each concurrency gets its figures."""
    flags = {"num": "10", "in": "24", "out": "12", "ratio": "0.5", "seed": "2"}
    _, j = throughput(tmp_path, "--num-prompts", flags["num"], "--input-len", flags["in"],
                      "--output-len", flags["out"], "--random-range-ratio", flags["ratio"],
                      "--seed", flags["seed"])
    out = tmp_path / "peer.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "gpu" / "bench_transformers.py"), "--model",
         str(TINY), "--out", str(out), "--torch-device", "cpu", "--lengths", "8",
         "--decode-steps", "2", "--repeats", "1", "--throughput", flags["num"],
         "--throughput-input-len", flags["in"], "--throughput-output-len", flags["out"],
         "--random-range-ratio", flags["ratio"], "--seed", flags["seed"], "--batch-size", "4",
         "--concurrency", "1,3", "--input-len", "8", "--output-len", "4"],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    peer = json.loads(out.read_text())
    t = peer["throughput"]
    assert t["input_len_range"] == j["input_len_range"]
    for name in ("dynamic", "static"):
        run = t[name]
        if "error" in run:  # a variant transformers cannot run is recorded, not fatal
            assert run["error"] and name == "static"
            continue
        assert run["total_input_tokens"] == j["summary"]["total_input_tokens"]
        assert run["total_output_tokens"] == j["summary"]["total_output_tokens"]
        assert run["n_batches"] == 3 and run["batch_size"] == 4
        assert run["generated_tokens"] >= run["total_output_tokens"]
        assert run["output_tokens_per_s"] == pytest.approx(
            run["total_output_tokens"] / run["wall_s"])
    assert [c["batch_size"] for c in peer["concurrency"]] == [1, 3]
    for c in peer["concurrency"]:
        assert c["ttft_ms"] > 0 and c["total_s"] > 0
        assert c["tpot_ms"] == pytest.approx((1e3 * c["total_s"] - c["ttft_ms"]) / 3)
        assert c["output_tokens_per_s"] == pytest.approx(c["batch_size"] * 4 / c["total_s"])


@pytest.mark.parametrize("args", [
    ["throughput", "--random-range-ratio", "1"], ["throughput", "--random-range-ratio", "-0.1"],
    ["throughput", "--random-range-ratio", "half"], ["latency", "--random-range-ratio", "0.5"],
])
def test_usage_errors(args):
    proc = subprocess.run([FOLO, "bench", *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("folo bench: ") and "--random-range-ratio" in proc.stderr


@pytest.mark.parametrize("args", [["--random-range-ratio", "1"], ["--concurrency", "1,0"]])
def test_peer_usage_errors(args):
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "gpu" / "bench_transformers.py"),
                           "--model", str(TINY), "--out", "/dev/null", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "error:" in proc.stderr, proc.stderr
