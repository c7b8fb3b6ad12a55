"""Every bad input of `folo serve` as a table: the status and the OpenAI
error document ({"error": {message, type, param, code}}) for malformed JSON,
invalid UTF-8, wrong types, out-of-range values, prompts longer than the
context, unknown routes and models, wrong methods, a missing or wrong API
key (401), bodies over the limit (413); and junk on the socket does not
bring the server down. (503 of --max-queue needs a queue: test_server_limits.)
The server runs with --api-key, so each row sends the key unless it is
about the key."""

import http.client
import json
import socket

import pytest

from server_helpers import CHAT, COMP, server_fixture

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
# A prompt over the tiny model's 40960-token context (" hi" is one token).
OVER_LONG = "hi" + " hi" * 41000


server = server_fixture("--api-key", KEY)


OK_MSGS = [{"role": "user", "content": "hi"}]

BAD = [
    ("POST", COMP, b"{", 400, None),
    ("POST", COMP, b'{"prompt": "\xff\xfe"}', 400, None),
    ("POST", CHAT, b'{"messages": [{"role": "user", "content": "\xc3("}]}', 400, None),
    # A syntax error whose message quotes invalid UTF-8 (found by fuzz_openai).
    ("POST", COMP, b'{"ets\\ud\xd6\xa4\xcf\x8a', 400, None),
    ("POST", "/detokenize", b'{"ets\\ud\xd6\xa4\xcf\x8a', 400, None),
    ("POST", COMP, {"prompt": OVER_LONG, "max_tokens": 1}, 400, None),
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
    # max_tokens 0 scores the prompt: only with echo (test_server_prompt_logprobs).
    ("POST", COMP, {"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ("POST", COMP, {"prompt": "hi", "max_tokens": -1, "echo": True}, 400, "max_tokens"),
    ("POST", CHAT, {"messages": OK_MSGS, "max_tokens": 0}, 400, "max_tokens"),
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
    ("POST", COMP, {"prompt": "hi", "logprobs": 21}, 400, "logprobs"),
    ("POST", COMP, {"prompt": "hi", "logprobs": True}, 400, "logprobs"),
    ("POST", COMP, {"prompt": "hi", "prompt_logprobs": -1}, 400, "prompt_logprobs"),
    ("POST", COMP, {"prompt": "hi", "prompt_logprobs": 21}, 400, "prompt_logprobs"),
    ("POST", COMP, {"prompt": "hi", "prompt_logprobs": 1.5}, 400, "prompt_logprobs"),
    ("POST", COMP, {"prompt": "hi", "prompt_logprobs": "1"}, 400, "prompt_logprobs"),
    ("POST", COMP, {"prompt": "hi", "prompt_logprobs": True}, 400, "prompt_logprobs"),
    ("POST", COMP, {"prompt": "hi", "prompt_logprobs": 1, "stream": True}, 400,
     "prompt_logprobs"),
    ("POST", CHAT, {"messages": OK_MSGS, "prompt_logprobs": 25}, 400, "prompt_logprobs"),
    ("POST", CHAT, {"messages": OK_MSGS, "prompt_logprobs": 2, "stream": True}, 400,
     "prompt_logprobs"),
    ("POST", COMP, {"prompt": "hi", "echo": "yes"}, 400, "echo"),
    ("POST", COMP, {"prompt": []}, 400, "prompt"),
    ("POST", COMP, {"prompt": [[]]}, 400, "prompt"),
    ("POST", COMP, {"prompt": ["a", 1]}, 400, "prompt"),
    ("POST", COMP, {"prompt": [[1], "a"]}, 400, "prompt"),
    ("POST", COMP, {"prompt": [1, -1]}, 400, "prompt"),
    ("POST", COMP, {"prompt": [10 ** 9]}, 400, "prompt"),
    ("POST", COMP, {"prompt": [[1], [2, 1.5]]}, 400, "prompt"),
    ("POST", COMP, {"prompt": ["a", ""]}, 400, "prompt"),
    ("POST", COMP, {"prompt": ["a"] * 129}, 400, "prompt"),
    ("POST", COMP, {"prompt": ["a"] * 100, "n": 11}, 400, "n"),
    ("POST", COMP, {"prompt": ["a", OVER_LONG], "max_tokens": 1}, 400, None),
    ("POST", CHAT, {"messages": OK_MSGS, "logprobs": 1}, 400, "logprobs"),
    ("POST", CHAT, {"messages": OK_MSGS, "top_logprobs": 2}, 400, "top_logprobs"),
    ("POST", CHAT, {"messages": OK_MSGS, "logprobs": True, "top_logprobs": 21}, 400,
     "top_logprobs"),
    ("POST", CHAT, {"messages": OK_MSGS, "echo": True}, 400, "echo"),
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
# Rows sent without the key, or with a wrong one.
UNAUTHORIZED = [
    ("POST", COMP, {"prompt": "hi"}, 401, None, {}),
    ("POST", CHAT, {"messages": OK_MSGS}, 401, None, {"Authorization": "Bearer wrong"}),
    ("GET", "/v1/models", None, 401, None, {"Authorization": KEY}),
]


@pytest.mark.parametrize("method,path,body,status,param,headers",
                         [(*row, AUTH) for row in BAD] + UNAUTHORIZED)
def test_bad_requests(server, method, path, body, status, param, headers):
    code, raw = server.request(method, path, body, headers)
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
                                              "frobnicate": {"x": [1]}}, AUTH)
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
    code, raw = server.request("POST", COMP, b'{"prompt": "\\ud800", "max_tokens": 1}', AUTH)
    assert code in (200, 400), raw
    assert server.get("/health")[0] == 200
