"""Helpers of the `folo serve` tests: a server on a free loopback port, raw
HTTP to it, `folo run` / `folo tokenize` oracles and a /metrics reader."""

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

FOLO = os.environ.get("FOLO_BIN", "build/folo")
TINY = Path(os.environ.get("FOLO_TEST_MODEL", "build/test-models/tiny-f32"))
MODEL_NAME = TINY.name
PROMPT = "The quick brown fox"
COMP = "/v1/completions"
CHAT = "/v1/chat/completions"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp_path, *args, env=None):
        self.port = free_port()
        self.log_path = tmp_path / f"serve-{self.port}.log"
        self.log = open(self.log_path, "w")
        self.spawned_at = time.time()
        self.proc = subprocess.Popen(
            [FOLO, "serve", "-m", str(TINY), "--port", str(self.port), "--threads", "2", *args],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.time() + 120
        while True:
            assert self.proc.poll() is None, self.log_text()
            try:
                if self.get("/health")[0] == 200:
                    self.up_at = time.time()
                    break
            except OSError:
                pass
            assert time.time() < deadline, "the server did not come up:\n" + self.log_text()
            time.sleep(0.1)

    def log_text(self):
        self.log.flush()
        return self.log_path.read_text()

    def request(self, method, path, body=None, headers=None):
        status, _, raw = self.request_full(method, path, body, headers)
        return status, raw

    def request_full(self, method, path, body=None, headers=None):
        """(status, headers as a dict, body)"""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        out = resp.status, dict(resp.getheaders()), resp.read()
        conn.close()
        return out

    def get(self, path):
        return self.request("GET", path)

    def metrics(self):
        """{(sample name, frozenset of labels other than model_name): value}"""
        status, raw = self.get("/metrics")
        assert status == 200, raw
        out = {}
        for family in text_string_to_metric_families(raw.decode()):
            for s in family.samples:
                labels = dict(s.labels)
                if s.name.startswith("folo:"):
                    assert labels.pop("model_name") == MODEL_NAME, s
                out[(s.name, frozenset(labels.items()))] = s.value
        return out

    def wait_metrics(self, ready, timeout=60):
        """Scrapes until ready(metrics) holds (outputs are counted just after
        the response that carried them was handed over)."""
        deadline = time.time() + timeout
        while True:
            m = self.metrics()
            if ready(m):
                return m
            assert time.time() < deadline, sorted(m.items())
            time.sleep(0.05)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        self.log.close()
        return rc


def server_fixture(*args, env=None):
    """A module-wide server on the tiny model, started with args, which must
    exit 0 on SIGTERM at the end."""
    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory):
        srv = Server(tmp_path_factory.mktemp("serve"), *args, env=env)
        yield srv
        assert srv.stop() == 0, srv.log_text()
    return fixture


def openai_client(srv, api_key="none"):
    return OpenAI(base_url=f"http://127.0.0.1:{srv.port}/v1", api_key=api_key, max_retries=0)


def metric(m, name, **labels):
    return m[(name, frozenset(labels.items()))]


def folo_run(*args):
    proc = subprocess.run([FOLO, "run", "-m", str(TINY), "--temperature", "0", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("\n")
    return proc.stdout[:-1]


def ids_of(srv, body):
    """The token ids /tokenize gives for body ({"prompt"} or {"messages"})."""
    status, raw = srv.request("POST", "/tokenize", body)
    assert status == 200, raw
    return json.loads(raw)["tokens"]


def n_tokens(text):
    proc = subprocess.run([FOLO, "tokenize", "-m", str(TINY), text], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    return len(json.loads(proc.stdout))


def open_stream(port, max_tokens, prompt=PROMPT):
    """A greedy completion stream once its first chunk has come: (connection,
    response, that chunk's line)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", COMP, body=json.dumps({
        "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "stream": True,
        "temperature": 0}),
        headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type").startswith("text/event-stream")
    line = resp.readline()
    assert line.startswith(b"data: {"), line
    return conn, resp, line
