"""POST /tokenize and /detokenize of `folo serve`, as vLLM has them. Oracle:
Hugging Face transformers' tokenizer of the served model (encode for a
prompt, apply_chat_template for messages, decode for ids)."""

import json

import pytest

from server_helpers import MODEL_NAME, TINY, server_fixture

TEXTS = ["The quick brown fox", "héllo wörld 你好 🙂", "<|im_start|>user\nhi<|im_end|>",
         "  spaces\tand\nnewlines  "]
MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]


server = server_fixture()


@pytest.fixture(scope="module")
def hf():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(TINY))


def post(server, path, body):
    status, raw = server.request("POST", path, body)
    assert status == 200, raw
    return json.loads(raw)


def max_model_len():
    return json.loads((TINY / "config.json").read_text())["max_position_embeddings"]


@pytest.mark.parametrize("text", TEXTS)
def test_tokenize_a_prompt(server, hf, text):
    doc = post(server, "/tokenize", {"model": MODEL_NAME, "prompt": text})
    ids = hf.encode(text, add_special_tokens=True)
    assert doc == {"count": len(ids), "max_model_len": max_model_len(), "tokens": ids,
                   "token_strs": None}
    assert post(server, "/detokenize", {"tokens": ids}) == {"prompt": hf.decode(ids)}


@pytest.mark.parametrize("add_gen,thinking", [(None, None), (True, False), (False, None)])
def test_tokenize_messages(server, hf, add_gen, thinking):
    body, kwargs = {"messages": MSGS}, {"add_generation_prompt": True}
    if add_gen is not None:
        body["add_generation_prompt"] = kwargs["add_generation_prompt"] = add_gen
    if thinking is not None:
        body["chat_template_kwargs"] = {"enable_thinking": thinking}
        kwargs["enable_thinking"] = thinking
    ids = hf.encode(hf.apply_chat_template(MSGS, tokenize=False, **kwargs),
                    add_special_tokens=False)
    doc = post(server, "/tokenize", body)
    assert doc["tokens"] == ids and doc["count"] == len(ids)


@pytest.mark.parametrize("path,body,status,param", [
    ("/tokenize", {}, 400, "prompt"),
    ("/tokenize", {"prompt": 3}, 400, "prompt"),
    ("/tokenize", {"prompt": "x", "add_special_tokens": "yes"}, 400, "add_special_tokens"),
    ("/tokenize", {"messages": {}}, 400, "messages"),
    ("/tokenize", {"messages": [{"role": 1}]}, 400, None),
    ("/tokenize", {"prompt": "x", "model": "other"}, 404, "model"),
    ("/detokenize", {}, 400, "tokens"),
    ("/detokenize", {"tokens": "1 2"}, 400, "tokens"),
    ("/detokenize", {"tokens": [1, -1]}, 400, "tokens"),
    ("/detokenize", {"tokens": [10 ** 9]}, 400, "tokens"),
    ("/detokenize", {"tokens": [1.5]}, 400, "tokens"),
])
def test_bad_tokenize_requests(server, path, body, status, param):
    code, raw = server.request("POST", path, body)
    assert code == status, raw
    err = json.loads(raw)["error"]
    assert err["code"] == status and err["param"] == param and err["message"]
