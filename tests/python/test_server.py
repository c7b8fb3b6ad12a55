"""`folo serve` end to end on the tiny model, through the official `openai`
client and raw HTTP.

Oracles: greedy (temperature 0) server output equals `folo run` output for
the same prompt, plain and chat; usage counts equal `folo tokenize`'s count
and the tokens generated; stop strings cut the greedy text before their
first occurrence; streamed chunks concatenate to the whole response; bad
requests get the OpenAI error shape with the right status; a client that
disconnects mid-stream gets its request aborted and the server goes on; the
server exits 0 on SIGTERM, with a stream in flight too."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from openai import OpenAI

FOLO = os.environ.get("FOLO_BIN", "build/folo")
TINY = Path(os.environ.get("FOLO_TEST_MODEL", "build/test-models/tiny-f32"))
MODEL_NAME = TINY.name


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp_path, *args):
        self.port = free_port()
        self.log_path = tmp_path / f"serve-{self.port}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [FOLO, "serve", "-m", str(TINY), "--port", str(self.port), "--threads", "2", *args],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while True:
            assert self.proc.poll() is None, self.log_text()
            try:
                if self.get("/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline, "the server did not come up:\n" + self.log_text()
            time.sleep(0.1)

    def log_text(self):
        self.log.flush()
        return self.log_path.read_text()

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        conn.request(method, path, body=data,
                     headers=headers or {"Content-Type": "application/json"})
        resp = conn.getresponse()
        out = resp.status, resp.read()
        conn.close()
        return out

    def get(self, path):
        return self.request("GET", path)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        self.log.close()
        return rc


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("serve"))
    yield srv
    rc = srv.stop()
    assert rc == 0, srv.log_path.read_text()


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="none", max_retries=0)


def folo_run(*args):
    proc = subprocess.run([FOLO, "run", "-m", str(TINY), "--temperature", "0", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("\n")
    return proc.stdout[:-1]


def n_tokens(text):
    proc = subprocess.run([FOLO, "tokenize", "-m", str(TINY), text], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    return len(json.loads(proc.stdout))


PROMPT = "The quick brown fox"


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


CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
OK_MSGS = [{"role": "user", "content": "hi"}]

BAD = [
    ("POST", COMP, b"{", 400, None),
    ("POST", COMP, b"[1, 2]", 400, None),
    ("POST", COMP, {"max_tokens": 2}, 400, "prompt"),
    ("POST", COMP, {"prompt": 5}, 400, "prompt"),
    ("POST", COMP, {"prompt": ""}, 400, "prompt"),
    ("POST", COMP, {"prompt": "hi", "temperature": "hot"}, 400, "temperature"),
    ("POST", COMP, {"prompt": "hi", "temperature": -1}, 400, "temperature"),
    ("POST", COMP, {"prompt": "hi", "top_p": 0}, 400, "top_p"),
    ("POST", COMP, {"prompt": "hi", "top_p": 1.5}, 400, "top_p"),
    ("POST", COMP, {"prompt": "hi", "top_k": -2}, 400, "top_k"),
    ("POST", COMP, {"prompt": "hi", "min_p": 2}, 400, "min_p"),
    ("POST", COMP, {"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ("POST", COMP, {"prompt": "hi", "max_tokens": 1.5}, 400, "max_tokens"),
    ("POST", COMP, {"prompt": "hi", "max_tokens": 10 ** 6}, 400, None),
    ("POST", COMP, {"prompt": "hi", "n": 0}, 400, "n"),
    ("POST", COMP, {"prompt": "hi", "presence_penalty": 3}, 400, "presence_penalty"),
    ("POST", COMP, {"prompt": "hi", "frequency_penalty": "x"}, 400, "frequency_penalty"),
    ("POST", COMP, {"prompt": "hi", "repetition_penalty": 0}, 400, "repetition_penalty"),
    ("POST", COMP, {"prompt": "hi", "seed": "x"}, 400, "seed"),
    ("POST", COMP, {"prompt": "hi", "stop": 5}, 400, "stop"),
    ("POST", COMP, {"prompt": "hi", "stop": [1]}, 400, "stop"),
    ("POST", COMP, {"prompt": "hi", "stop_token_ids": "x"}, 400, "stop_token_ids"),
    ("POST", COMP, {"prompt": "hi", "ignore_eos": 1}, 400, "ignore_eos"),
    ("POST", COMP, {"prompt": "hi", "stream": "yes"}, 400, "stream"),
    ("POST", COMP, {"prompt": "hi", "stream_options": {"include_usage": True}}, 400,
     "stream_options"),
    ("POST", COMP, {"prompt": "hi", "logprobs": 2}, 400, "logprobs"),
    ("POST", COMP, {"prompt": "hi", "model": "gpt-4"}, 404, "model"),
    ("POST", COMP, {"prompt": "hi", "model": 7}, 400, "model"),
    ("POST", CHAT, {"max_tokens": 2}, 400, "messages"),
    ("POST", CHAT, {"messages": "hi"}, 400, "messages"),
    ("POST", CHAT, {"messages": []}, 400, "messages"),
    ("POST", CHAT, {"messages": [{"role": 5, "content": "x"}]}, 400, None),
    ("POST", CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, 400, None),
    ("POST", CHAT, {"messages": OK_MSGS, "max_completion_tokens": -1}, 400,
     "max_completion_tokens"),
    ("POST", CHAT, {"messages": OK_MSGS, "chat_template_kwargs": []}, 400, "chat_template_kwargs"),
    ("POST", CHAT, {"messages": OK_MSGS, "chat_template_kwargs": {"enable_thinking": "no"}}, 400,
     "enable_thinking"),
    ("GET", COMP, None, 405, None),
    ("DELETE", CHAT, None, 405, None),
    ("POST", "/health", b"", 405, None),
    ("GET", "/nope", None, 404, None),
    ("POST", "/v1/embeddings", {"input": "x"}, 404, None),
]


@pytest.mark.parametrize("method,path,body,status,param", BAD)
def test_bad_requests(server, method, path, body, status, param):
    code, raw = server.request(method, path, body)
    assert code == status, raw
    doc = json.loads(raw)
    err = doc["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    assert err["code"] == status
    assert err["param"] == param


def test_unknown_fields_are_ignored(server):
    code, raw = server.request("POST", COMP, {"prompt": "hi", "max_tokens": 1, "user": "u",
                                              "frobnicate": {"x": [1]}})
    assert code == 200, raw
    assert json.loads(raw)["usage"]["completion_tokens"] == 1


def test_body_over_the_limit_is_413(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", COMP)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(5 << 20))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413
    assert json.loads(resp.read())["error"]["code"] == 413
    conn.close()


def test_garbage_does_not_crash_the_server(server):
    for junk in (b"\x00\xff garbage \r\n\r\n", b"POST /v1/completions HTTP/1.1\r\n"
                 b"Content-Length: 100\r\n\r\n{\"prompt\""):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(junk)
    code, raw = server.request("POST", COMP, b'{"prompt": "\\ud800", "max_tokens": 1}')
    assert code in (200, 400), raw
    assert server.get("/health")[0] == 200


def open_stream(port, max_tokens):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", COMP, body=json.dumps({
        "prompt": PROMPT, "max_tokens": max_tokens, "ignore_eos": True, "stream": True}),
        headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type").startswith("text/event-stream")
    line = resp.readline()
    assert line.startswith(b"data: {"), line
    return conn, resp


def test_client_disconnect_aborts_the_request(server, client):
    conn, _ = open_stream(server.port, 30000)
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


def test_sigterm_with_a_stream_in_flight_exits_0(tmp_path):
    srv = Server(tmp_path)
    conn, resp = open_stream(srv.port, 30000)
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=60) == 0, srv.log_text()
    try:
        rest = resp.read()
    except http.client.IncompleteRead as e:
        rest = e.partial
    conn.close()
    assert b'"finish_reason":"abort"' in rest and rest.endswith(b"data: [DONE]\n\n"), rest[-300:]
    srv.log.close()
