"""GET /metrics of `folo serve`, read with prometheus_client's parser and
checked against the requests sent: token counters equal the usage the
responses reported, histogram counts equal the requests and tokens, the
phase histograms add up (queue + prefill = TTFT, the ITL gaps = decode
time), the step-size histogram sums to the tokens the engine had to compute
(prompt tokens not served by the prefix cache, plus one decode per output
token after the first), and the gauges return to idle."""

import json
import os
import re
import resource
from pathlib import Path

import pytest

from server_helpers import MODEL_NAME, metric, openai_client, server_fixture

# Greedy requests with known lengths: three completions (one sent twice so
# its second run hits the prefix cache; 40+ tokens fill whole blocks) and a
# chat that ends at a stop string or its length.
LONG = "In the beginning the engine computed every token of every prompt " * 3
REQUESTS = [("The quick brown fox", 5), (LONG, 7), (LONG, 9), ("Another one", 1)]

LATENCY = ["time_to_first_token_seconds", "e2e_request_latency_seconds",
           "request_queue_time_seconds", "request_prefill_time_seconds",
           "request_decode_time_seconds"]
PER_TOKEN = ["inter_token_latency_seconds", "request_time_per_output_token_seconds"]
COUNTS = ["request_prompt_tokens", "request_generation_tokens", "iteration_tokens_total"]


server = server_fixture()


def buckets(m, name):
    """[(le, cumulative count)] of one histogram, in order."""
    out = [(float(dict(labels)["le"]), v) for (n, labels), v in m.items()
           if n == f"folo:{name}_bucket"]
    return sorted(out)


def test_metrics_match_the_requests_sent(server):
    idle = server.metrics()
    for name in ("num_requests_running", "num_requests_waiting"):
        assert metric(idle, f"folo:{name}") == 0
    assert metric(idle, "folo:kv_cache_usage_perc") == 0
    assert metric(idle, "folo:prompt_tokens_total") == 0
    for name in LATENCY + PER_TOKEN + COUNTS:
        assert metric(idle, f"folo:{name}_count") == 0, name
        # vLLM's buckets start at 1 ms and 10 ms; these go down to 0.5 ms.
        if name in LATENCY + PER_TOKEN:
            assert buckets(idle, name)[0][0] == 0.0005

    client = openai_client(server)
    usages = []
    for prompt, n in REQUESTS:
        r = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=n,
                                      temperature=0, extra_body={"ignore_eos": True})
        assert r.choices[0].finish_reason == "length"
        usages.append((r.usage.prompt_tokens, r.usage.completion_tokens))
    chat = client.chat.completions.create(model=MODEL_NAME, max_tokens=6, temperature=0,
                                          messages=[{"role": "user", "content": "Hi"}])
    usages.append((chat.usage.prompt_tokens, chat.usage.completion_tokens))
    chat_reason = chat.choices[0].finish_reason
    n_req = len(usages)

    m = server.wait_metrics(
        lambda m: metric(m, "folo:e2e_request_latency_seconds_count") == n_req and
        metric(m, "folo:num_requests_running") == 0)

    prompt = sum(p for p, _ in usages)
    gen = sum(g for _, g in usages)
    assert metric(m, "folo:prompt_tokens_total") == prompt
    assert metric(m, "folo:generation_tokens_total") == gen
    assert metric(m, "folo:request_success_total", finished_reason="length") == \
        len(REQUESTS) + (chat_reason == "length")
    assert metric(m, "folo:request_success_total", finished_reason="stop") == \
        (chat_reason == "stop")
    assert metric(m, "folo:request_success_total", finished_reason="abort") == 0
    assert metric(m, "folo:num_preemptions_total") == 0

    # Every prompt token is looked up; LONG's second run finds its whole
    # blocks cached.
    assert metric(m, "folo:prefix_cache_queries_total") == prompt
    hits = metric(m, "folo:prefix_cache_hits_total")
    assert hits >= (usages[1][0] // 16) * 16 > 0

    for name in LATENCY:
        assert metric(m, f"folo:{name}_count") == n_req, name
    assert metric(m, "folo:request_prompt_tokens_count") == n_req
    assert metric(m, "folo:request_prompt_tokens_sum") == prompt
    assert metric(m, "folo:request_generation_tokens_sum") == gen
    assert metric(m, "folo:inter_token_latency_seconds_count") == gen - n_req
    assert metric(m, "folo:request_time_per_output_token_seconds_count") == \
        sum(g > 1 for _, g in usages)
    # The step sizes add up to the tokens computed: uncached prompt tokens,
    # then one decode for each output token after the first.
    assert metric(m, "folo:iteration_tokens_total_sum") == prompt - hits + gen - n_req

    def total(name):
        return metric(m, f"folo:{name}_sum")
    assert total("request_queue_time_seconds") + total("request_prefill_time_seconds") == \
        pytest.approx(total("time_to_first_token_seconds"), abs=1e-6)
    assert total("inter_token_latency_seconds") == \
        pytest.approx(total("request_decode_time_seconds"), abs=1e-6)
    assert total("time_to_first_token_seconds") + total("request_decode_time_seconds") <= \
        total("e2e_request_latency_seconds") + 1e-6

    for name in LATENCY + PER_TOKEN + COUNTS:
        b = buckets(m, name)
        assert b[-1] == (float("inf"), metric(m, f"folo:{name}_count")), name
        assert all(x[1] <= y[1] for x, y in zip(b, b[1:])), name
    # A known value lands in its bucket: the 1-token request is the only one
    # of at most 2 generation tokens.
    assert dict(buckets(m, "request_generation_tokens"))[2.0] == 1

    assert metric(m, "folo:num_requests_running") == 0
    assert metric(m, "folo:num_requests_waiting") == 0
    assert metric(m, "folo:kv_cache_usage_perc") == 0


def test_process_metrics_describe_the_server(server):
    m = server.metrics()
    with open(f"/proc/{server.proc.pid}/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    assert metric(m, "process_resident_memory_bytes") == pytest.approx(rss, rel=0.2)
    assert metric(m, "process_virtual_memory_bytes") >= metric(m, "process_resident_memory_bytes")
    # The listening socket and a connection at least.
    assert metric(m, "process_open_fds") >= 2
    assert metric(m, "process_max_fds") == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert server.spawned_at - 1 <= metric(m, "process_start_time_seconds") <= server.up_at + 1


def test_the_grafana_dashboard_reads_metrics_the_server_has(server):
    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana-folo.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"(?:folo:|process_)[a-z0-9_]+", e)}
    # The GPU gauges need NVML: test_server_gpu_metrics.py checks their panels.
    names = {n for n in names if not n.startswith("folo:gpu_")}
    served = {name for name, _ in server.metrics()}
    assert names and names <= served, names - served
