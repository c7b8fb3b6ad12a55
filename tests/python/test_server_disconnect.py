"""32 streams at once, half of them dropped mid-way: every dropped request
ends aborted (request_success{finished_reason="abort"} and the log), the
server ends with nothing running or waiting and the KV cache back at its
idle usage, and the other half complete exactly as the same greedy requests
do alone."""

import json
import socket


from server_helpers import COMP, metric, open_stream, server_fixture

N_STREAMS = 32
SHORT_TOKENS = 20


server = server_fixture()


def read_sse(first, resp):
    """The text and finish reason of a one-choice stream: its first line and
    the rest."""
    text, finish = [], None
    for line in (first + resp.read()).decode().split("\n"):
        if not line or line == "data: [DONE]":
            continue
        choice = json.loads(line.removeprefix("data: "))["choices"][0]
        text.append(choice["text"])
        finish = choice["finish_reason"] or finish
    return "".join(text), finish


def test_dropping_half_of_32_streams(server):
    idle = metric(server.metrics(), "folo:kv_cache_usage_perc")
    prompts = [f"Stream number {i} goes" for i in range(N_STREAMS)]
    streams = []
    for i, prompt in enumerate(prompts):
        dropped = i % 2 == 1
        streams.append((*open_stream(server.port, 30000 if dropped else SHORT_TOKENS, prompt),
                        dropped))
    # Mid-way: every dropped stream has produced tokens and is still going.
    for conn, resp, _, dropped in streams:
        if dropped:
            assert resp.readline() == b"\n"
            assert resp.readline().startswith(b"data: {")
            conn.sock.shutdown(socket.SHUT_RDWR)
            conn.close()
    together = {}
    for i, (conn, resp, first, dropped) in enumerate(streams):
        if not dropped:
            together[i] = read_sse(first, resp)
            conn.close()

    def settled(m):
        return (metric(m, "folo:request_success_total", finished_reason="abort") ==
                metric(m, "folo:request_success_total", finished_reason="length") ==
                N_STREAMS // 2 and metric(m, "folo:num_requests_running") == 0)
    m = server.wait_metrics(settled)
    assert metric(m, "folo:num_requests_waiting") == 0
    assert metric(m, "folo:kv_cache_usage_perc") == idle
    assert metric(m, "folo:request_success_total", finished_reason="stop") == 0
    assert server.log_text().count("went away; aborting") == N_STREAMS // 2

    for i, (text, finish) in together.items():
        status, raw = server.request("POST", COMP, {
            "prompt": prompts[i], "max_tokens": SHORT_TOKENS, "ignore_eos": True,
            "temperature": 0})
        assert status == 200, raw
        alone = json.loads(raw)["choices"][0]
        assert (text, finish) == (alone["text"], "length")
