"""Differential tests of folo's Qwen3 chat format against transformers.

The reference is `AutoTokenizer.from_pretrained(FOLO_TOKENIZER_DIR)
.apply_chat_template(messages, tokenize=False, ...)`, which renders the
official Jinja template of tokenizer_config.json. Every case (message list,
tools, add_generation_prompt, enable_thinking on/off/absent) is rendered by
`folo template --jsonl` in one process and must be equal byte for byte.
"""

import itertools
import json
import os
import subprocess

import pytest

FOLO_BIN = os.environ.get("FOLO_BIN", "build/folo")
TOKENIZER_DIR = os.environ.get(
    "FOLO_TOKENIZER_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "models", "qwen3-tokenizer"),
)

SYS = {"role": "system", "content": "You are a helpful assistant."}
U1 = {"role": "user", "content": "What is 2+2?"}
U2 = {"role": "user", "content": "And 3+3?\nThink step by step."}
A_PLAIN = {"role": "assistant", "content": "4"}
A_THINK = {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\n4"}
A_THINK_NO_OPEN = {"role": "assistant", "content": "Add them.\n</think>\n\n4"}
A_THINK_MANY_NL = {"role": "assistant", "content": "\n\n<think>\n\n\nhmm\n\n</think>\n\n\n\nFour.\n"}
A_THINK_TWICE = {"role": "assistant", "content": "<think>a</think>b</think>c"}
A_THINK_NESTED = {"role": "assistant", "content": "pre<think>x<think>y\n</think>\nz"}
A_REASONING = {"role": "assistant", "content": "4", "reasoning_content": "\n2 plus 2 is 4.\n"}
A_REASONING_EMPTY = {"role": "assistant", "content": "<think>ignored?</think>4", "reasoning_content": ""}
A_REASONING_NONE = {"role": "assistant", "content": "<think>kept</think>4", "reasoning_content": None}
A_THINKING_ALIAS = {"role": "assistant", "content": "4", "thinking": "alias field"}
A_EMPTY = {"role": "assistant", "content": ""}
TOOL_CALL_STR = {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}
TOOL_CALL_OBJ = {"type": "function", "function": {"name": "get_time",
                                                  "arguments": {"tz": "Europe/Paris", "fmt": 24, "x": 1.5,
                                                                "tiny": 1e-07, "big": 1e16, "neg": -0.0,
                                                                "list": [1, "two", None, True, False],
                                                                "nested": {"é": "ü\n\t\"q\"\\ \u0001"}}}}
TOOL_CALL_FLAT = {"name": "flat_call", "arguments": {"k": "v"}}
A_TOOL = {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL_STR]}
A_TOOL_TEXT = {"role": "assistant", "content": "Let me check.", "tool_calls": [TOOL_CALL_STR, TOOL_CALL_OBJ]}
A_TOOL_THINK = {"role": "assistant", "content": "<think>\nNeed weather.\n</think>\n\n",
                "tool_calls": [TOOL_CALL_OBJ]}
A_TOOL_FLAT = {"role": "assistant", "content": "x", "tool_calls": [TOOL_CALL_FLAT, TOOL_CALL_STR]}
T1 = {"role": "tool", "content": "{\"temp\": 21}"}
T2 = {"role": "tool", "content": "12:00"}
U_TOOL_RESPONSE = {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"}
U_TOOL_PREFIX_ONLY = {"role": "user", "content": "<tool_response> not closed"}
SYS_LATE = {"role": "system", "content": "Late system note."}
U_UNICODE = {"role": "user", "content": "Переведи: 你好世界 👋🏽 — «ok»"}
U_EMPTY = {"role": "user", "content": ""}
U_NULL = {"role": "user", "content": "x"}

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city — «now»",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "Time in a zone", "parameters": {
            "type": "object", "properties": {"tz": {"type": "string", "default": "UTC"},
                                             "fmt": {"type": "integer", "enum": [12, 24]},
                                             "scale": {"type": "number", "minimum": 0.5}}}}},
]

CONVERSATIONS = {
    "single_user": [U1],
    "system_user": [SYS, U1],
    "system_only": [SYS],
    "user_empty_content": [U_EMPTY],
    "unicode": [SYS, U_UNICODE],
    "multi_turn_plain": [SYS, U1, A_PLAIN, U2],
    "multi_turn_ends_with_assistant": [SYS, U1, A_PLAIN, U2, A_PLAIN],
    "think_before_last_query": [U1, A_THINK, U2],
    "think_after_last_query": [U1, A_PLAIN, U2, A_THINK],
    "think_no_open_tag": [U1, A_THINK_NO_OPEN],
    "think_no_open_tag_earlier": [U1, A_THINK_NO_OPEN, U2],
    "think_many_newlines": [U1, A_THINK_MANY_NL],
    "think_twice_closed": [U1, A_THINK_TWICE],
    "think_nested_open": [U1, A_THINK_NESTED],
    "reasoning_field_last": [U1, A_REASONING],
    "reasoning_field_earlier": [U1, A_REASONING, U2],
    "reasoning_field_empty": [U1, A_REASONING_EMPTY],
    "reasoning_field_none": [U1, A_REASONING_NONE],
    "thinking_alias": [U1, A_THINKING_ALIAS],
    "assistant_empty_last": [U1, A_EMPTY],
    "two_assistants_after_query": [U1, A_THINK, A_REASONING],
    "two_assistants_no_reasoning": [U1, A_PLAIN, A_THINK],
    "assistant_first": [A_THINK, U1],
    "no_user_at_all": [SYS, A_THINK, A_PLAIN],
    "tool_call_string_args": [SYS, U1, A_TOOL, T1],
    "tool_call_text_and_two_calls": [U1, A_TOOL_TEXT, T1, T2],
    "tool_call_then_answer": [U1, A_TOOL_TEXT, T1, T2, A_THINK],
    "tool_call_think": [U1, A_TOOL_THINK, T1, A_THINK],
    "tool_call_flat_form": [U1, A_TOOL_FLAT, T1],
    "consecutive_tools_then_user": [U1, A_TOOL, T1, T2, T1, U2],
    "tool_first": [T1, U1],
    "tool_last_single": [U1, A_TOOL, T2],
    "user_tool_response_not_query": [U1, A_THINK, U_TOOL_RESPONSE, A_THINK],
    "user_tool_prefix_is_query": [U1, A_THINK, U_TOOL_PREFIX_ONLY, A_THINK],
    "multi_step_tools": [SYS, U1, A_TOOL_THINK, T1, A_TOOL_TEXT, T1, T2, A_THINK],
    "late_system": [SYS, U1, A_PLAIN, SYS_LATE, U2],
    "late_system_first_not_system": [U1, SYS_LATE, A_THINK],
    "long_history": [SYS] + [U1, A_THINK, U2, A_REASONING] * 3 + [U1],
}

TOOL_CONVERSATIONS = ["single_user", "system_user", "system_only", "tool_call_string_args",
                      "tool_call_then_answer", "multi_step_tools", "tool_first", "late_system"]


def cases():
    out = []
    flags = [(False, None), (True, None), (True, True), (True, False), (False, False)]
    for name, messages in CONVERSATIONS.items():
        for add_gen, thinking in flags:
            out.append((f"{name}/gen={add_gen}/think={thinking}", messages, add_gen, thinking, None))
    for name in TOOL_CONVERSATIONS:
        for add_gen, thinking in [(True, None), (False, False), (True, False)]:
            out.append((f"{name}/tools/gen={add_gen}/think={thinking}", CONVERSATIONS[name],
                        add_gen, thinking, TOOLS))
    out.append(("empty_tools_list", [SYS, U1], True, None, []))
    return out


@pytest.fixture(scope="module")
def hf_tokenizer():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def reference(tok, messages, add_gen, thinking, tools):
    kwargs = {"tokenize": False, "add_generation_prompt": add_gen}
    if thinking is not None:
        kwargs["enable_thinking"] = thinking
    if tools is not None:
        kwargs["tools"] = tools
    return tok.apply_chat_template(messages, **kwargs)


def folo_jsonl(docs, tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    proc = subprocess.run([FOLO_BIN, "template", "--jsonl", str(path)], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode("utf-8").split("\n")[:-1]
    assert len(lines) == len(docs)
    return [json.loads(line) for line in lines]


def test_cases_are_many():
    assert len(CONVERSATIONS) >= 30
    assert len(cases()) >= 150


def test_template_matches_transformers(hf_tokenizer, tmp_path):
    all_cases = cases()
    docs = []
    for _, messages, add_gen, thinking, tools in all_cases:
        doc = {"messages": messages, "add_generation_prompt": add_gen}
        if thinking is not None:
            doc["enable_thinking"] = thinking
        if tools is not None:
            doc["tools"] = tools
        docs.append(doc)
    ours = folo_jsonl(docs, tmp_path)
    bad = []
    for (name, messages, add_gen, thinking, tools), got in zip(all_cases, ours):
        want = reference(hf_tokenizer, messages, add_gen, thinking, tools)
        if got != want:
            bad.append((name, got, want))
    assert not bad, f"{len(bad)}/{len(all_cases)} differ; first: {bad[0]}"


def test_thinking_rules_visible_in_output(tmp_path):
    """Guards the cases above against passing vacuously: earlier reasoning is
    dropped, the latest kept, and enable_thinking=false adds an empty block."""
    [early, late, off] = folo_jsonl([
        {"messages": [U1, A_THINK, U2], "add_generation_prompt": True},
        {"messages": [U1, A_PLAIN, U2, A_THINK]},
        {"messages": [U1], "add_generation_prompt": True, "enable_thinking": False},
    ], tmp_path)
    assert "Add them." not in early and early.endswith("<|im_start|>assistant\n")
    assert "<think>\nAdd them.\n</think>\n\n4<|im_end|>\n" in late
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_plain_file_and_flags(hf_tokenizer, tmp_path):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps([SYS, U1, A_THINK, U2]))
    for flags, add_gen, thinking in [([], True, None), (["--no-generation-prompt"], False, None),
                                     (["--no-thinking"], True, False)]:
        proc = subprocess.run([FOLO_BIN, "template", "-m", TOKENIZER_DIR] + flags + [str(path)],
                              capture_output=True)
        assert proc.returncode == 0, proc.stderr
        want = reference(hf_tokenizer, [SYS, U1, A_THINK, U2], add_gen, thinking, None)
        assert proc.stdout.decode() == want
    obj = tmp_path / "request.json"
    obj.write_text(json.dumps({"model": "x", "messages": [U1], "tools": TOOLS}))
    proc = subprocess.run([FOLO_BIN, "template", str(obj)], capture_output=True)
    assert proc.returncode == 0
    assert proc.stdout.decode() == reference(hf_tokenizer, [U1], True, None, TOOLS)


@pytest.mark.parametrize("doc, message", [
    ([], "at least one message"),
    ([{"role": "user", "content": 5}], "messages[0].content must be a string or null"),
    ([U1, {"content": "x"}], "messages[1].role must be a string"),
    ([U1, {"role": "wizard", "content": "x"}], "messages[1]: unknown role 'wizard'"),
    ([U1, {"role": "assistant", "content": "x", "tool_calls": {}}],
     "messages[1].tool_calls must be an array"),
    ([U1, {"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": "{}"}}]}],
     "messages[1].tool_calls[0].function.name must be a string"),
    ([U1, {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": 3}}]}],
     "messages[1].tool_calls[0].function.arguments must be a string or an object"),
    ([U1, {"role": "assistant", "content": "", "tool_calls": ["f"]}],
     "messages[1].tool_calls[0] must be an object"),
    ([U1, {"role": "assistant", "content": "x", "reasoning_content": 1}],
     "messages[1].reasoning_content must be a string or null"),
    ({"messages": [U1], "tools": {}}, "tools must be an array"),
    ({"messages": [U1], "tools": ["x"]}, "tools[0] must be an object"),
    ({"msgs": [U1]}, "no \"messages\""),
    ("not a list", "messages must be an array"),
])
def test_bad_documents_are_errors(doc, message, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    proc = subprocess.run([FOLO_BIN, "template", str(path)], capture_output=True)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.startswith("folo template: ") and err.count("\n") == 1
    assert message in err, err


def test_null_content_renders_empty(tmp_path):
    [text] = folo_jsonl([{"messages": [U1, {"role": "assistant", "content": None,
                                            "tool_calls": [TOOL_CALL_STR]}]}], tmp_path)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>\n"
                         "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
                         "</tool_call><|im_end|>\n")


@pytest.mark.parametrize("args", [
    ["template"],
    ["template", "--bogus", "f"],
    ["template", "a", "b"],
    ["template", "--jsonl", "--no-thinking", "f"],
    ["template", "-m"],
])
def test_usage_errors(args):
    proc = subprocess.run([FOLO_BIN] + args, capture_output=True)
    assert proc.returncode == 2
    assert b"usage: folo template" in proc.stderr


def test_model_check(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    path = tmp_path / "chat.json"
    path.write_text(json.dumps([U1]))
    proc = subprocess.run([FOLO_BIN, "template", "-m", str(tmp_path), str(path)], capture_output=True)
    assert proc.returncode == 1 and b"not the Qwen3 template" in proc.stderr
