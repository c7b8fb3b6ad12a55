"""`folo serve --reasoning-parser qwen3` through the openai client: a chat's
text splits into reasoning_content and content as vLLM's
Qwen3ReasoningParser splits it (reference below), whole and streamed; with
enable_thinking false it is all content. The tiny model's greedy text
(`folo run --chat`) is the input; the split at </think> itself, tags cut
across tokens included, is tests/c/test_reasoning.c's."""

import pytest

from server_helpers import MODEL_NAME, folo_run, openai_client, server_fixture

MSGS = [{"role": "user", "content": "Hello there"}]


def qwen3_split(text, thinking):
    """(reasoning, content) as vLLM's Qwen3ReasoningParser.extract_reasoning
    gives them, empty parts as None."""
    if not thinking:
        return None, text or None
    before, tag, after = text.partition("<think>")
    text = after if tag else before
    if "</think>" in text:
        reasoning, _, content = text.partition("</think>")
        return reasoning or None, content or None
    return text or None, None


server = server_fixture("--reasoning-parser", "qwen3")


@pytest.fixture(scope="module")
def client(server):
    return openai_client(server)


@pytest.mark.parametrize("thinking", [True, False])
def test_reasoning_is_split_whole_and_streamed(client, thinking):
    kw = dict(model=MODEL_NAME, messages=MSGS, max_tokens=12, temperature=0,
              extra_body={"chat_template_kwargs": {"enable_thinking": thinking}})
    flags = [] if thinking else ["--no-thinking"]
    text = folo_run("--chat", *flags, "-n", "12", "Hello there")
    reasoning, content = qwen3_split(text, thinking)

    message = client.chat.completions.create(**kw).choices[0].message
    assert (message.reasoning_content, message.content) == (reasoning, content)

    chunks = list(client.chat.completions.create(stream=True, **kw))
    deltas = [c.choices[0].delta for c in chunks]
    assert deltas[0].role == "assistant"
    streamed_reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    streamed_content = "".join(d.content or "" for d in deltas)
    assert (streamed_reasoning or None, streamed_content or None) == (reasoning, content)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")

