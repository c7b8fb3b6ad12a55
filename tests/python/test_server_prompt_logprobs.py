"""Prompt logprobs of `folo serve`: completions' `echo` with `logprobs`
(the legacy shape lists the prompt's tokens first, the first with a null
logprob), `max_tokens: 0` with echo (scoring only, as lm-eval-harness asks
for log-likelihoods), and vLLM's `prompt_logprobs` field on both endpoints.

Oracle: transformers' log_softmax of Qwen3ForCausalLM on the same
checkpoint: the logprob of prompt token i is row i - 1 of the prompt's
logits, its top alternatives that row's largest, its rank the number of
tokens at least as likely. The server runs with --max-batched-tokens 16, so
the 30+-token prompts here are computed in chunks (each chunk's rows are
reduced in its own step); a prompt scored twice gives the same answer
although its blocks are then in the prefix cache (a scored prompt takes
nothing from it, and does not even look it up, as in vLLM), and a plain
request afterwards does hit the blocks the scored ones left."""

import json

import numpy as np
import pytest
import torch

from logits_helpers import hf, oracle, oracle_logits  # noqa: F401 (fixtures)
from server_helpers import CHAT, COMP, MODEL_NAME, ids_of, metric, openai_client, server_fixture

CHUNK = 16
PROMPT = "The quick brown fox jumps over the lazy dog, and then " * 3
OTHER = "Once upon a time there was a small engine that served every prompt " * 2
TOL = 2e-3

server = server_fixture("--max-batched-tokens", str(CHUNK))


@pytest.fixture(scope="module")
def client(server):
    return openai_client(server)


def oracle_rows(oracle, ids):
    """log_softmax rows [len(ids) - 1, V]: row i - 1 scores token i."""
    logits = torch.tensor(oracle_logits(oracle, ids)[:-1])
    return torch.log_softmax(logits, dim=-1).numpy()


def complete(server, **body):
    status, raw = server.request("POST", COMP, {"model": MODEL_NAME, "temperature": 0,
                                                "ignore_eos": True, **body})
    assert status == 200, raw
    return json.loads(raw)


def check_prompt_part(lps, ids, rows, hf, n_top):
    """The legacy logprobs' first len(ids) entries score the prompt."""
    n = len(ids)
    assert lps["tokens"][:n] == [hf.decode([t]) for t in ids]
    assert lps["token_logprobs"][0] is None and lps["top_logprobs"][0] is None
    for i in range(1, n):
        row = rows[i - 1]
        assert lps["token_logprobs"][i] == pytest.approx(row[ids[i]], abs=TOL), i
        # The token itself and at most n_top alternatives, by text (texts
        # may coincide, which merges entries).
        top = lps["top_logprobs"][i]
        assert lps["tokens"][i] in top and len(top) <= n_top + 1
        best = np.sort(row)[::-1][:n_top]
        for text, v in top.items():
            assert text == lps["tokens"][i] or np.min(np.abs(best - v)) <= TOL, (i, text, v)


def check_offsets(lps, text):
    """text_offset: where each token's text starts in the choice's text, in
    characters; the tokens' texts make up the text."""
    assert lps["text_offset"] == list(np.cumsum([0] + [len(t) for t in lps["tokens"]])[:-1])
    for tok, at in zip(lps["tokens"], lps["text_offset"]):
        assert text[at:at + len(tok)] == tok
    assert "".join(lps["tokens"]) == text


def rank_bounds(row, token_id):
    """The ranks a token may have when its logprob is known within TOL."""
    lp = row[token_id]
    return int(np.sum(row > lp + TOL)) + 1, int(np.sum(row >= lp - TOL))


def check_vllm_prompt_logprobs(plps, ids, rows, hf, k):
    """vLLM's shape: null, then {"<id>": {logprob, rank, decoded_token}}
    for the token and its top k (the token among them takes its top rank)."""
    assert len(plps) == len(ids) and plps[0] is None
    for i in range(1, len(ids)):
        entry, row = plps[i], rows[i - 1]
        assert str(ids[i]) in entry and len(entry) in (k, k + 1), (i, entry)
        for t, e in entry.items():
            assert e["logprob"] == pytest.approx(row[int(t)], abs=TOL)
            assert e["decoded_token"] == hf.decode([int(t)])
        apart = len(entry) == k + 1  # the token is not among its top k
        tops = [e for t, e in entry.items() if not (apart and int(t) == ids[i])]
        assert sorted(e["rank"] for e in tops) == list(range(1, k + 1))
        best = np.sort(row)[::-1]
        for e in tops:
            assert e["logprob"] == pytest.approx(best[e["rank"] - 1], abs=TOL)
        if apart:
            lo, hi = rank_bounds(row, ids[i])
            assert lo <= entry[str(ids[i])]["rank"] <= hi, (i, entry, lo, hi)


@pytest.mark.parametrize("max_tokens", [0, 3])
def test_echo_with_logprobs_scores_the_prompt(server, oracle, hf, max_tokens):
    ids = ids_of(server, {"prompt": PROMPT})
    assert len(ids) > 2 * CHUNK
    rows = oracle_rows(oracle, ids)
    r = complete(server, prompt=PROMPT, echo=True, logprobs=2, max_tokens=max_tokens)
    choice = r["choices"][0]
    lps = choice["logprobs"]
    assert len(lps["tokens"]) == len(ids) + max_tokens
    assert choice["text"].startswith(PROMPT)
    check_prompt_part(lps, ids, rows, hf, 2)
    check_offsets(lps, choice["text"])
    # Echo with logprobs also fills vLLM's prompt_logprobs (its top count).
    check_vllm_prompt_logprobs(choice["prompt_logprobs"], ids, rows, hf, 2)
    assert r["usage"]["prompt_tokens"] == len(ids)
    assert r["usage"]["completion_tokens"] == max_tokens
    assert choice["finish_reason"] == "length"
    if max_tokens == 0:
        assert choice["text"] == PROMPT
    else:
        generated = complete(server, prompt=PROMPT, max_tokens=max_tokens, logprobs=2)
        gen = generated["choices"][0]
        assert choice["text"] == PROMPT + gen["text"]
        for key in ("tokens", "token_logprobs", "top_logprobs"):
            assert lps[key][len(ids):] == gen["logprobs"][key]


def test_a_warm_prefix_cache_gives_the_same_scores(server):
    before = server.metrics()
    first = complete(server, prompt=OTHER, echo=True, logprobs=1, max_tokens=0)
    again = complete(server, prompt=OTHER, echo=True, logprobs=1, max_tokens=0)
    assert again["choices"][0]["logprobs"] == first["choices"][0]["logprobs"]
    assert again["choices"][0]["prompt_logprobs"] == first["choices"][0]["prompt_logprobs"]
    scored = server.metrics()
    for name in ("folo:prefix_cache_queries_total", "folo:prefix_cache_hits_total"):
        assert metric(scored, name) == metric(before, name), name
    # The blocks were there to take: a plain request of the same prompt hits them.
    plain = complete(server, prompt=OTHER, max_tokens=1)
    hits = server.wait_metrics(lambda m: metric(m, "folo:prefix_cache_hits_total") >
                               metric(scored, "folo:prefix_cache_hits_total"))
    assert metric(hits, "folo:prefix_cache_hits_total") - \
        metric(scored, "folo:prefix_cache_hits_total") >= CHUNK
    assert plain["usage"]["prompt_tokens"] == len(first["choices"][0]["prompt_logprobs"])


def test_each_choice_of_n_and_of_each_prompt_is_scored(server, oracle, hf):
    prompts = [PROMPT, OTHER]
    r = complete(server, prompt=prompts, n=2, echo=True, logprobs=1, max_tokens=2,
                 prompt_logprobs=3)
    assert [c["index"] for c in r["choices"]] == [0, 1, 2, 3]
    for p, prompt in enumerate(prompts):
        ids = ids_of(server, {"prompt": prompt})
        rows = oracle_rows(oracle, ids)
        pair = r["choices"][2 * p:2 * p + 2]
        assert pair[0]["prompt_logprobs"] == pair[1]["prompt_logprobs"]
        assert pair[0]["logprobs"] == pair[1]["logprobs"]  # greedy
        for c in pair:
            # The field's top count (3) for prompt_logprobs, logprobs' (1)
            # for the legacy lists.
            check_vllm_prompt_logprobs(c["prompt_logprobs"], ids, rows, hf, 3)
            check_prompt_part(c["logprobs"], ids, rows, hf, 1)
            check_offsets(c["logprobs"], c["text"])


@pytest.mark.parametrize("max_tokens", [0, 4])
def test_streamed_echo_logprobs_equal_the_whole_response(server, max_tokens):
    body = {"prompt": PROMPT, "echo": True, "logprobs": 2, "max_tokens": max_tokens}
    whole = complete(server, **body)["choices"][0]
    status, raw = server.request("POST", COMP, {"model": MODEL_NAME, "temperature": 0,
                                                "ignore_eos": True, "stream": True,
                                                "stream_options": {"include_usage": True},
                                                **body})
    assert status == 200, raw
    chunks = [json.loads(line[6:]) for line in raw.decode().split("\n\n")
              if line.startswith("data: {")]
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    assert "".join(c["text"] for c in choices) == whole["text"]
    # The prompt's scores lead the first chunk, beside the echoed prompt.
    assert choices[0]["text"].startswith(PROMPT)
    assert choices[0]["logprobs"]["token_logprobs"][0] is None
    merged = {k: sum((c["logprobs"][k] for c in choices if c["logprobs"]), [])
              for k in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}
    assert merged == {k: whole["logprobs"][k] for k in merged}
    assert chunks[-1]["usage"]["completion_tokens"] == max_tokens


def test_chat_prompt_logprobs(server, client, oracle, hf):
    msgs = [{"role": "user", "content": PROMPT}]
    ids = ids_of(server, {"messages": msgs})
    rows = oracle_rows(oracle, ids)
    for k in (0, 2):
        r = client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_tokens=2,
                                           temperature=0, n=2,
                                           extra_body={"prompt_logprobs": k})
        plps = r.model_extra["prompt_logprobs"]
        check_vllm_prompt_logprobs(plps, ids, rows, hf, k)
        if k == 0:  # the token alone
            assert all(len(e) == 1 for e in plps[1:])
        assert r.choices[0].logprobs is None


def test_no_prompt_logprobs_unless_asked(server):
    r = complete(server, prompt=PROMPT, max_tokens=2, logprobs=1)
    assert "prompt_logprobs" not in r["choices"][0]
    r = complete(server, prompt=PROMPT, max_tokens=2, echo=True)
    assert "prompt_logprobs" not in r["choices"][0] and r["choices"][0]["logprobs"] is None
    status, raw = server.request("POST", CHAT, {"messages": [{"role": "user", "content": "hi"}],
                                                "max_tokens": 1})
    assert status == 200 and "prompt_logprobs" not in json.loads(raw)


@pytest.mark.parametrize("path", [COMP, CHAT])
def test_a_stream_accepts_prompt_logprobs_0_and_leaves_them_out(server, path):
    # vLLM's rule: K > 0 is refused with stream (test_server_errors), 0 is
    # accepted and no chunk carries the member.
    body = ({"prompt": PROMPT} if path == COMP else
            {"messages": [{"role": "user", "content": PROMPT}]})
    body.update(model=MODEL_NAME, max_tokens=3, temperature=0, ignore_eos=True,
                prompt_logprobs=0)
    status, raw = server.request("POST", path, {**body, "stream": True})
    assert status == 200, raw
    chunks = [json.loads(line[6:]) for line in raw.decode().split("\n\n")
              if line.startswith("data: {")]
    assert chunks and not any("prompt_logprobs" in json.dumps(c) for c in chunks)
    pieces = [c["choices"][0]["text"] if path == COMP
              else c["choices"][0]["delta"].get("content") or "" for c in chunks]
    status, whole = server.request("POST", path, body)
    whole = json.loads(whole)["choices"][0]
    assert "".join(pieces) == (whole["text"] if path == COMP else whole["message"]["content"])
