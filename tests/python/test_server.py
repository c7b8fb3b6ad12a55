"""`folo serve` end to end on the tiny model, through the official `openai`
client and raw HTTP.

Oracles: greedy (temperature 0) server output equals `folo run` output for
the same prompt, plain and chat; usage counts equal `folo tokenize`'s count
and the tokens generated; stop strings cut the greedy text before their
first occurrence; streamed chunks concatenate to the whole response; a
client that disconnects mid-stream gets its request aborted and the server
goes on; the server exits 0 on SIGTERM, with a stream in flight too. (Bad
inputs: test_server_errors.py; /metrics: test_server_metrics.py.)"""

import http.client
import json
import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from server_helpers import (MODEL_NAME, PROMPT, Server, folo_run, n_tokens, open_stream,
                            openai_client, server_fixture)

server = server_fixture()


@pytest.fixture(scope="module")
def client(server):
    return openai_client(server)


def test_health_and_models(server, client):
    assert server.get("/health")[0] == 200
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]


def test_completion_equals_folo_run_and_counts_usage(client):
    r = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=12, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert r.object == "text_completion" and r.model == MODEL_NAME and r.id
    assert len(r.choices) == 1 and r.choices[0].index == 0
    assert r.choices[0].text == folo_run("-n", "12", "--ignore-eos", PROMPT)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == n_tokens(PROMPT)
    assert r.usage.completion_tokens == 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12


def test_each_finished_request_is_logged(server, client):
    r = client.completions.create(model=MODEL_NAME, prompt="log me", max_tokens=3,
                                  extra_body={"ignore_eos": True})
    line = (f"finished (length): prompt {r.usage.prompt_tokens} tokens, "
            f"output {r.usage.completion_tokens} tokens, TTFT ")
    deadline = time.time() + 30
    while line not in server.log_text():
        assert time.time() < deadline, server.log_text()
        time.sleep(0.05)
    logged = [l for l in server.log_text().splitlines() if line in l][-1]
    assert re.search(r"serve: request \d+ sample 0 finished .* TTFT [0-9.]+ ms, E2E [0-9.]+ ms$",
                     logged), logged


def test_chat_equals_folo_run_chat(client):
    msgs = [{"role": "user", "content": "Hello there"}]
    r = client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_tokens=10,
                                       temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == folo_run("--chat", "-n", "10", "Hello there")
    assert 0 < r.usage.completion_tokens <= 10
    r2 = client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_completion_tokens=10,
                                        temperature=0,
                                        extra_body={"chat_template_kwargs":
                                                    {"enable_thinking": False}})
    assert r2.choices[0].message.content == folo_run("--chat", "--no-thinking", "-n", "10",
                                                     "Hello there")
    assert r2.usage.prompt_tokens == r.usage.prompt_tokens + n_tokens("<think>\n\n</think>\n\n")


def test_completion_stream_concatenates_to_the_whole(client):
    whole = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=10,
                                      temperature=0)
    chunks = list(client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=10,
                                            temperature=0, stream=True))
    assert all(c.object == "text_completion" and c.id == chunks[0].id for c in chunks)
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks][-1] == whole.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_chat_stream_with_usage(client):
    msgs = [{"role": "user", "content": "Hi"}]
    whole = client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_tokens=8,
                                           temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_tokens=8,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    body = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in body) == \
        whole.choices[0].message.content
    assert body[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_stop_strings(client):
    full = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=12,
                                     temperature=0).choices[0].text
    assert len(full) > 6
    stop = full[3:6]
    cut = full[:full.index(stop)]
    for stops in (stop, ["zzzz-not-there", stop]):
        r = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=12,
                                      temperature=0, stop=stops)
        assert r.choices[0].text == cut
        assert r.choices[0].finish_reason == "stop"


def test_n_samples(client):
    r = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=6, n=2,
                                  temperature=0, extra_body={"ignore_eos": True})
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].text == r.choices[1].text
    assert r.usage.completion_tokens == 12
    chunks = list(client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=6, n=2,
                                            temperature=0, stream=True,
                                            extra_body={"ignore_eos": True}))
    for i in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == i]
        assert "".join(c.text for c in mine) == r.choices[i].text
        assert mine[-1].finish_reason == "length"


def test_concurrent_requests_match_one_at_a_time(client):
    prompts = [f"Request number {i} says" for i in range(6)]

    def complete(prompt, stream):
        kw = dict(model=MODEL_NAME, prompt=prompt, max_tokens=16, temperature=0,
                  extra_body={"ignore_eos": True})
        if not stream:
            return client.completions.create(**kw).choices[0].text
        return "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw))

    alone = [complete(p, False) for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(complete, prompts, [i % 2 == 0 for i in range(len(prompts))]))
    assert together == alone


def test_seeded_sampling_repeats(client):
    kw = dict(model=MODEL_NAME, prompt=PROMPT, max_tokens=8, temperature=1.0, top_p=0.9,
              seed=1234)
    a = client.completions.create(**kw).choices[0].text
    b = client.completions.create(**kw).choices[0].text
    assert a == b


def test_client_disconnect_aborts_the_request(server, client):
    conn, _, _ = open_stream(server.port, 30000)
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    deadline = time.time() + 60
    while "went away; aborting" not in server.log_text():
        assert time.time() < deadline, server.log_text()
        time.sleep(0.1)
    assert server.get("/health")[0] == 200
    r = client.completions.create(model=MODEL_NAME, prompt="after", max_tokens=3,
                                  extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 3


def test_client_disconnect_before_a_whole_response_aborts_it(server, client):
    gone = server.log_text().count("went away; aborting")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        body = json.dumps({"prompt": PROMPT, "max_tokens": 30000, "ignore_eos": True}).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                  b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(0.5)
    deadline = time.time() + 60
    while server.log_text().count("went away; aborting") == gone:
        assert time.time() < deadline, server.log_text()
        time.sleep(0.1)
    r = client.completions.create(model=MODEL_NAME, prompt="after", max_tokens=2,
                                  extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 2


def read_to_end(resp):
    try:
        return resp.read()
    except http.client.IncompleteRead as e:
        return e.partial


def test_sigterm_with_a_stream_in_flight_exits_0(tmp_path):
    srv = Server(tmp_path)
    conn, resp, _ = open_stream(srv.port, 30000)
    # The stream is read while the server shuts down, as a client reads it:
    # left unread, its tokens fill the socket buffers on a slow machine and
    # the server's last writes stall past its drain deadline.
    with ThreadPoolExecutor(1) as pool:
        reader = pool.submit(read_to_end, resp)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=60) == 0, srv.log_text()
        rest = reader.result(timeout=60)
    conn.close()
    assert b'"finish_reason":"abort"' in rest and rest.endswith(b"data: [DONE]\n\n"), rest[-300:]
    srv.log.close()
