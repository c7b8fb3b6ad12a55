"""Completions' prompt forms, echo and logprobs, and chat logprobs, through
the openai client. Oracles: a list of prompts (strings or token ids) gives
the choices each prompt gives alone, numbered prompt x n + sample as vLLM
numbers them; token ids give what their text gives; echo puts the prompt
first; logprobs equal transformers' log_softmax of Qwen3ForCausalLM on the
same checkpoint at each greedy step (the tokens are its greedy tokens, their
texts its tokenizer's)."""

import json

import numpy as np
import pytest
import torch

from logits_helpers import hf, oracle, oracle_logits  # noqa: F401 (fixtures)
from server_helpers import MODEL_NAME, folo_run, ids_of, openai_client, server_fixture

PROMPTS = ["The quick brown fox", "Once upon a time"]
N_NEW = 6


server = server_fixture()


@pytest.fixture(scope="module")
def client(server):
    return openai_client(server)


def complete(client, prompt, max_tokens=N_NEW, **kw):
    return client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=max_tokens,
                                     temperature=0, extra_body={"ignore_eos": True}, **kw)


@pytest.fixture(scope="module")
def alone():
    return [folo_run("-n", str(N_NEW), "--ignore-eos", p) for p in PROMPTS]


def test_prompt_forms_give_one_choice_per_prompt_and_sample(server, client, alone):
    ids = [ids_of(server, {"prompt": p}) for p in PROMPTS]
    for prompt in (PROMPTS, ids):
        r = complete(client, prompt, n=2)
        assert [c.index for c in r.choices] == [0, 1, 2, 3]
        assert [c.text for c in r.choices] == [alone[0], alone[0], alone[1], alone[1]]
        assert r.usage.prompt_tokens == len(ids[0]) + len(ids[1])
        assert r.usage.completion_tokens == 4 * N_NEW
    r = complete(client, ids[1])
    assert [c.text for c in r.choices] == [alone[1]]
    chunks = list(complete(client, PROMPTS, stream=True))
    for i in (0, 1):
        assert "".join(c.choices[0].text for c in chunks if c.choices[0].index == i) == alone[i]


def test_echo_puts_the_prompt_first(server, client, alone):
    r = complete(client, PROMPTS, echo=True)
    assert [c.text for c in r.choices] == [p + a for p, a in zip(PROMPTS, alone)]
    r = complete(client, ids_of(server, {"prompt": PROMPTS[0]}), echo=True)
    assert r.choices[0].text == PROMPTS[0] + alone[0]
    chunks = list(complete(client, PROMPTS[0], echo=True, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == PROMPTS[0] + alone[0]


def oracle_steps(oracle, prompt_ids, n_new):
    """The greedy tokens and each step's log_softmax row."""
    ids = list(prompt_ids)
    for _ in range(n_new):
        ids.append(int(oracle_logits(oracle, ids)[-1].argmax()))
    logits = torch.tensor(oracle_logits(oracle, ids[:-1])[len(prompt_ids) - 1:])
    return ids[len(prompt_ids):], torch.log_softmax(logits, dim=-1).numpy()


def check_step(lp, top, token_id, row, n_top):
    assert lp == pytest.approx(row[token_id], abs=2e-3)
    assert sorted(top, reverse=True) == pytest.approx(np.sort(row)[::-1][:n_top], abs=2e-3)


@pytest.mark.parametrize("stream", [False, True])
def test_completion_logprobs_match_transformers(server, client, oracle, hf, stream):
    prompt_ids = ids_of(server, {"prompt": PROMPTS[0]})
    tokens, rows = oracle_steps(oracle, prompt_ids, N_NEW)
    r = complete(client, PROMPTS[0], logprobs=3, stream=stream)
    if stream:
        parts = [c.choices[0].logprobs for c in r if c.choices[0].logprobs]
        lps = {k: sum((getattr(p, k) for p in parts), []) for k in
               ("tokens", "token_logprobs", "top_logprobs", "text_offset")}
    else:
        lps = r.choices[0].logprobs.model_dump()
    assert lps["tokens"] == [hf.decode([t]) for t in tokens]
    assert lps["text_offset"] == list(np.cumsum([0] + [len(t) for t in lps["tokens"]])[:-1])
    for i, token_id in enumerate(tokens):
        # Greedy: the sampled token is the first of the top 3 (texts may
        # coincide, which merges entries).
        top = lps["top_logprobs"][i]
        assert lps["tokens"][i] in top and 1 <= len(top) <= 3
        check_step(lps["token_logprobs"][i], list(top.values()), token_id, rows[i], len(top))


def test_chat_logprobs_match_transformers(server, client, oracle, hf):
    msgs = [{"role": "user", "content": "Hello there"}]
    status, raw = server.request("POST", "/tokenize", {"messages": msgs})
    prompt_ids = json.loads(raw)["tokens"]
    tokens, rows = oracle_steps(oracle, prompt_ids, N_NEW)
    r = client.chat.completions.create(model=MODEL_NAME, messages=msgs, max_tokens=N_NEW,
                                       temperature=0, logprobs=True, top_logprobs=2,
                                       extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == N_NEW
    for entry, token_id, row in zip(content, tokens, rows):
        assert entry.token == hf.decode([token_id])
        assert entry.bytes == list(entry.token.encode())
        assert len(entry.top_logprobs) == 2
        check_step(entry.logprob, [t.logprob for t in entry.top_logprobs], token_id, row, 2)


def stream_choices(client, prompt, **kw):
    return [c.choices[0] for c in complete(client, prompt, stream=True, **kw) if c.choices]


@pytest.mark.parametrize("fires", [False, True])
def test_streamed_logprobs_describe_the_text_they_come_with(client, fires):
    """Text that could begin a stop string is held back; the chunk that
    finally carries it carries its tokens' logprobs too, so each chunk's
    logprob tokens spell its text, and the stream adds up to the whole
    response: the same text, the same tokens, the same logprobs. The stop
    string either never completes (its first character is the one that
    most often ends a token of the text, so text is held back again and
    again) or cuts the text in the middle."""
    n_new = 24
    plain = complete(client, PROMPTS[1], logprobs=1, max_tokens=n_new).choices[0]
    tokens = plain.logprobs.tokens
    assert "".join(tokens) == plain.text  # whole tokens, whole characters
    ends = [t[-1] for t in tokens[:-1] if t]
    held = max(set(ends), key=ends.count)
    stop = plain.text[len(plain.text) // 2:][:3] if fires else held + "\x01"
    whole = complete(client, PROMPTS[1], logprobs=1, max_tokens=n_new, stop=stop).choices[0]
    assert whole.finish_reason == ("stop" if fires else "length")
    assert whole.text == (plain.text[:plain.text.index(stop)] if fires else plain.text)
    chunks = stream_choices(client, PROMPTS[1], logprobs=1, max_tokens=n_new, stop=stop)
    assert "".join(c.text for c in chunks) == whole.text
    merged = {k: sum((getattr(c.logprobs, k) for c in chunks if c.logprobs), [])
              for k in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}
    assert merged == {k: getattr(whole.logprobs, k) for k in merged}
    for c in chunks[:-1]:  # the last may carry tokens cut at the stop
        assert "".join(c.logprobs.tokens if c.logprobs else []) == c.text
    if not fires:
        # Text was held back: some chunk carried more than one token.
        assert max(len(c.logprobs.tokens) for c in chunks if c.logprobs) > 1, ends
