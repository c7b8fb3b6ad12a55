"""bench/aiperf_agreement.py, the table of bench/compare-aiperf.sh: the
figures it pairs from folo bench serve's and aiperf's files, the spread and
the within-noise rule, the server's histogram means between two /metrics
scrapes, and GNU time's CPU share.

Oracles: values worked out by hand for hand-made files in each tool's
format (aiperf's profile_export_aiperf.json keys as aiperf 0.13 writes
them), and prometheus_client's own parser for the Prometheus text that
folo serve writes."""

import json
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import aiperf_agreement as aa  # noqa: E402


def folo_doc(ttft, itl, tpot, e2el, tok_s, req_s):
    return {"results": [{"summary": {
        "mean_ttft_ms": ttft, "median_ttft_ms": ttft - 1, "p99_ttft_ms": ttft + 5,
        "mean_itl_ms": itl, "mean_tpot_ms": tpot, "mean_e2el_ms": e2el,
        "output_throughput": tok_s, "request_throughput": req_s}}]}


def aiperf_doc(ttft, icl, itl, latency, tok_s, req_s):
    return {"time_to_first_token": {"unit": "ms", "avg": ttft, "p50": ttft - 1, "p99": ttft + 5},
            "inter_chunk_latency": {"unit": "ms", "avg": icl},
            "inter_token_latency": {"unit": "ms", "avg": itl},
            "request_latency": {"unit": "ms", "avg": latency},
            "output_token_throughput": {"unit": "tokens/sec", "avg": tok_s},
            "request_throughput": {"unit": "requests/sec", "avg": req_s}}


def test_figures_pair_the_same_meanings():
    f = aa.folo_figures(folo_doc(6.0, 2.8, 2.9, 93.0, 1400.0, 43.0))
    a = aa.aiperf_figures(aiperf_doc(7.0, 3.1, 3.2, 106.0, 1100.0, 34.0))
    assert f == {"TTFT mean ms": 6.0, "TTFT p50 ms": 5.0, "TTFT p99 ms": 11.0,
                 "ITL (chunk gaps) mean ms": 2.8, "TPOT mean ms (aiperf: ITL)": 2.9,
                 "E2EL mean ms": 93.0, "output tok/s": 1400.0, "req/s": 43.0}
    # aiperf's inter_token_latency is TPOT's meaning, its inter_chunk_latency ITL's.
    assert a["TPOT mean ms (aiperf: ITL)"] == 3.2 and a["ITL (chunk gaps) mean ms"] == 3.1
    assert a["E2EL mean ms"] == 106.0 and a["TTFT p99 ms"] == 12.0


def test_within_noise_is_overlap_of_the_rounds_ranges():
    folo = [aa.folo_figures(folo_doc(t, 2.8, 2.9, 93.0, 1400.0, 43.0)) for t in (6.0, 7.0, 8.0)]
    close = [aa.aiperf_figures(aiperf_doc(t, 2.8, 2.9, 93.0, 1400.0, 43.0))
             for t in (8.5, 9.0, 9.5)]
    rows = {r["figure"]: r for r in aa.compare(folo, close)}
    ttft = rows["TTFT mean ms"]
    assert ttft["folo_mean"] == 7.0 and ttft["folo_spread"] == 2.0
    assert ttft["aiperf_mean"] == 9.0 and ttft["aiperf_spread"] == 1.0
    assert ttft["aiperf_over_folo"] == pytest.approx(9 / 7)
    assert not ttft["agree"]                      # 2.0 apart > (2.0 + 1.0) / 2
    assert rows["req/s"]["agree"] and rows["req/s"]["aiperf_over_folo"] == 1.0
    near = [aa.aiperf_figures(aiperf_doc(t, 2.8, 2.9, 93.0, 1400.0, 43.0))
            for t in (7.5, 8.0, 9.5)]
    assert {r["figure"]: r for r in aa.compare(folo, near)}["TTFT mean ms"]["agree"]
    assert "| TTFT mean ms | 7.00 | 2.00 | 9.00 | 1.00 | 1.286 | no |" in aa.markdown(
        aa.compare(folo, close))


METRICS = """# HELP folo:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE folo:time_to_first_token_seconds histogram
folo:time_to_first_token_seconds_bucket{{model_name="m",le="0.001"}} 0
folo:time_to_first_token_seconds_bucket{{model_name="m",le="+Inf"}} {n}
folo:time_to_first_token_seconds_sum{{model_name="m"}} {ttft}
folo:time_to_first_token_seconds_count{{model_name="m"}} {n}
# HELP folo:inter_token_latency_seconds Histogram of inter-token latency in seconds.
# TYPE folo:inter_token_latency_seconds histogram
folo:inter_token_latency_seconds_bucket{{model_name="m",le="+Inf"}} {gaps}
folo:inter_token_latency_seconds_sum{{model_name="m"}} {itl}
folo:inter_token_latency_seconds_count{{model_name="m"}} {gaps}
# HELP folo:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE folo:e2e_request_latency_seconds histogram
folo:e2e_request_latency_seconds_bucket{{model_name="m",le="+Inf"}} {n}
folo:e2e_request_latency_seconds_sum{{model_name="m"}} {e2e}
folo:e2e_request_latency_seconds_count{{model_name="m"}} {n}
"""


def test_server_means_between_two_scrapes():
    before = METRICS.format(n=4, ttft=0.04, gaps=124, itl=0.31, e2e=0.40)
    after = METRICS.format(n=44, ttft=0.28, gaps=1364, itl=3.41, e2e=4.40)
    means = aa.server_means(before, after)
    assert means["TTFT mean ms"] == pytest.approx(6.0)       # 0.24 s over 40 requests
    assert means["ITL mean ms"] == pytest.approx(2.5)        # 3.10 s over 1240 gaps
    assert means["E2EL mean ms"] == pytest.approx(100.0)
    assert aa.server_means(before, before)["TTFT mean ms"] is None
    # The summed values agree with prometheus_client's parse of the same text.
    parsed = {s.name: s.value for family in text_string_to_metric_families(after)
              for s in family.samples if not s.name.endswith("_bucket")}
    values = aa.prometheus_values(after)
    for name, value in parsed.items():
        assert values[name] == pytest.approx(value)


def test_cpu_share_of_gnu_time_output():
    assert aa.cpu_share("1.50 0.50 4.00") == 0.5
    # GNU time prints "Command exited with non-zero status N" before its line.
    assert aa.cpu_share("Command exited with non-zero status 1\n0.20 0.00 2.00") == 0.1
    assert aa.cpu_share("0.00 0.00 0.00") is None


def test_a_run_directory_becomes_the_table(tmp_path, capsys):
    (tmp_path / "settings.json").write_text(json.dumps({
        "date": "2026-12-05 18:31 UTC", "rounds": 1, "num_prompts": 40, "num_warmups": 4,
        "load": "concurrency 4", "input_len": 64, "output_len": 32, "server_cpus": "0",
        "client_cpus": "1", "server": "folo serve -m tiny-f32 --threads 1",
        "aiperf_version": "0.13.0"}))
    (tmp_path / "folo-1.json").write_text(json.dumps(folo_doc(6.0, 2.8, 2.9, 93.0, 1400.0, 43.0)))
    (tmp_path / "aiperf-1").mkdir()
    (tmp_path / "aiperf-1" / "profile_export_aiperf.json").write_text(
        json.dumps(aiperf_doc(6.0, 2.8, 2.9, 93.0, 1400.0, 43.0)))
    for tool in ("folo", "aiperf"):
        (tmp_path / f"{tool}-1.load").write_text("0.42, 0.30, 0.20")
        (tmp_path / f"{tool}-1.metrics-before").write_text(
            METRICS.format(n=0, ttft=0, gaps=0, itl=0, e2e=0))
        (tmp_path / f"{tool}-1.metrics-after").write_text(
            METRICS.format(n=40, ttft=0.2, gaps=1240, itl=3.1, e2e=4.0))
        (tmp_path / f"{tool}-1.cpu").write_text("0.10 0.10 2.00")
    aa.main(["aiperf_agreement.py", str(tmp_path), str(tmp_path / "out")])
    doc = json.loads((tmp_path / "out.json").read_text())
    assert all(r["agree"] for r in doc["rows"])
    assert doc["server_view"]["aiperf"][0]["TTFT mean ms"] == pytest.approx(5.0)
    text = capsys.readouterr().out
    assert "| server TTFT mean ms (per round) | 5.00 | 5.00 |" in text
    assert "| client CPU time / wall time (per round) | 10% | 10% |" in text
    assert text == (tmp_path / "out.md").read_text()
