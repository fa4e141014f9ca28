"""JSONL training records without a server: what an upload accepts (`files.validate_jsonl`) and how
training renders a record into text (`records.render_chat`, `records.render_record`)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from support import CHAT, jsonl

from trainyard.platform import files, records
from trainyard.platform.errors import InvalidRequest


@pytest.mark.parametrize(
    ("records", "problem"),
    [
        (
            [{"messages": [{"role": "user", "content": "hi"}]}],
            "line 1: a conversation needs at least one assistant",
        ),
        ([{"messages": [{"role": "robot", "content": "hi"}]}], "line 1: messages[0]: role must be one of"),
        ([{"messages": []}], "line 1: 'messages' must be a non-empty list"),
        ([CHAT[0], {"text": "plain"}], "line 2 is a text record, but line 1 was a chat record"),
        ([{"prompt": "a", "completion": 3}], "line 1: 'prompt' and 'completion' must both be strings"),
        ([{"input": {}, "preferred_output": []}], "line 1: preference (DPO) records are not supported"),
        ([{"label": 1}], "line 1: a record needs 'messages' (chat)"),
        ([], "holds no records"),
    ],
)
def test_validation_names_the_problem(records: list[dict[str, Any]], problem: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        files.validate_jsonl(io.BytesIO(jsonl(records)), filename="f.jsonl")
    assert problem in exc.value.message


def test_validation_accepts_every_training_format() -> None:
    assert files.validate_jsonl(io.BytesIO(b"\xef\xbb\xbf" + jsonl(CHAT) + b"\n\r\n")) == len(CHAT)
    assert files.validate_jsonl(io.BytesIO(jsonl([{"prompt": "2+2=", "completion": "4"}]))) == 1
    assert files.validate_jsonl(io.BytesIO(jsonl([{"text": "a", "label": "pos"}]))) == 1
    tool_call = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        ]
    }
    assert files.validate_jsonl(io.BytesIO(jsonl([tool_call]))) == 1
    with pytest.raises(InvalidRequest, match="line 1 is not valid UTF-8"):
        files.validate_jsonl(io.BytesIO(b'{"text": "\xff"}\n'))


class _Tokenizer:
    eos_token = "</s>"
    chat_template: str | None = None

    def apply_chat_template(self, messages: list[dict[str, str]], **kwargs: Any) -> str:
        assert kwargs["tokenize"] is False
        return "".join(f"<|{m['role']}|>{m['content']}" for m in messages)


def test_render_chat_uses_the_template_when_there_is_one() -> None:
    record = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "2+2"}]},
            {"role": "assistant", "content": "4"},
        ]
    }
    plain = _Tokenizer()
    assert records.render_chat(record, plain) == "system: be brief\nuser: 2+2\nassistant: 4</s>"
    templated = _Tokenizer()
    templated.chat_template = "{{ messages }}"
    assert records.render_chat(record, templated) == "<|system|>be brief<|user|>2+2<|assistant|>4"
    assert records.render_record({"prompt": "2+2=", "completion": "4"}, plain) == "2+2=4"
    assert records.render_record({"text": "t"}, plain) == "t"
