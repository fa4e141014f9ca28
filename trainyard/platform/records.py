"""The JSONL record reader: which records a training file may hold, and the text each one gives.

Accepted records, one JSON object a line, all of one format in a file:

* text: ``{"text": ...}``, optionally with a ``"label"`` (sequence classification);
* completion: ``{"prompt": ..., "completion": ...}``;
* chat: ``{"messages": [{"role", "content"}, ...]}`` with at least one assistant turn; content is
  a string or a list of text parts, and may be null on an assistant turn that calls a tool.

Uploads, training and token counting all read files through here, so a file the upload refuses
is one training would refuse and an estimate would not count.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from trainyard.platform.text import dotted, find_bad_text

CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
CHAT, COMPLETION, TEXT = "chat", "completion", "text"
_BOM = b"\xef\xbb\xbf"


class RecordError(ValueError):
    """A line that is not an accepted record (`line` is its 1-based number), or a file without
    records (`line` None). `str()` is the problem alone; `describe(name)` places it in the file."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line

    def describe(self, name: str) -> str:
        where = name if self.line is None else f"{name}: line {self.line}"
        sep = " " if self.problem.startswith(("is ", "holds ")) else ": "
        return f"{where}{sep}{self.problem}"


def content_text(content: Any, where: str = "content") -> str:
    """The text of a message's content: a string, or a list of text parts (OpenAI's content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise RecordError(f"{where}: only text content parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise RecordError(f"{where}: content must be a string or a list of text parts")


def _check_chat(record: Mapping[str, Any]) -> None:
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise RecordError("'messages' must be a non-empty list")
    has_assistant = False
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RecordError(f"{where} must be an object")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise RecordError(f"{where}: role must be one of {', '.join(sorted(CHAT_ROLES))}, got {role!r}")
        content = message.get("content")
        if content is None:
            # OpenAI allows a null content only on an assistant message that calls a tool.
            if not (role == "assistant" and (message.get("tool_calls") or message.get("function_call"))):
                raise RecordError(f"{where}: content is missing")
        else:
            content_text(content, where)
        has_assistant = has_assistant or role == "assistant"
    if not has_assistant:
        # Training learns the assistant's turns; a conversation without one teaches nothing.
        raise RecordError("a conversation needs at least one assistant message")


def record_format(record: Any) -> str:
    """Which format a decoded record is in: `CHAT`, `COMPLETION` or `TEXT`.

    Raises RecordError (a ValueError) naming the problem when it is none of them.
    """
    if not isinstance(record, dict):
        raise RecordError(f"each line must be a JSON object, got {type(record).__name__}")
    if "messages" in record:
        _check_chat(record)
        return CHAT
    if "prompt" in record or "completion" in record:
        if not isinstance(record.get("prompt"), str) or not isinstance(record.get("completion"), str):
            raise RecordError("'prompt' and 'completion' must both be strings")
        return COMPLETION
    if "text" in record:
        if not isinstance(record["text"], str):
            raise RecordError("'text' must be a string")
        return TEXT
    if "preferred_output" in record or "non_preferred_output" in record:
        raise RecordError("preference (DPO) records are not supported; use chat 'messages'")
    raise RecordError("a record needs 'messages' (chat), 'prompt' and 'completion', or 'text'")


def _decode(raw: bytes, lineno: int) -> tuple[dict[str, Any], str] | None:
    """The record on one line and its format; None for a blank line."""
    line = raw.removeprefix(_BOM) if lineno == 1 else raw
    if not line.strip():
        return None
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError("is not valid UTF-8") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"is not valid JSON ({exc.msg} at column {exc.colno})") from None
    bad = find_bad_text(record)
    if bad:
        raise RecordError(f"{dotted(bad[0]) or 'the record'} {bad[1]}")
    return record, record_format(record)


def read_records(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """Every record of a JSONL file, checked line by line; blank lines are skipped.

    Raises RecordError naming the first bad line, or when the file holds no record. All records
    must share one format, since a file that mixes them is almost always a mistake.
    """
    first: tuple[str, int] | None = None
    for lineno, raw in enumerate(lines, start=1):
        try:
            decoded = _decode(raw, lineno)
            if decoded is None:
                continue
            record, kind = decoded
            if first is None:
                first = (kind, lineno)
            elif kind != first[0]:
                raise RecordError(f"is a {kind} record, but line {first[1]} was a {first[0]} record")
        except RecordError as exc:
            raise RecordError(exc.problem, lineno) from None
        yield record
    if first is None:
        raise RecordError("holds no records")


def accepted_records(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The accepted records of a file nobody has checked yet, skipping every other line: what an
    estimate reads at submit time, where refusing the file is not its business."""
    for lineno, raw in enumerate(lines, start=1):
        try:
            decoded = _decode(raw, lineno)
        except RecordError:
            continue
        if decoded is not None:
            yield decoded[0]


def record_text(record: Mapping[str, Any]) -> str:
    """The text an accepted record holds, as token counts count it: a chat's message contents,
    a prompt and its completion, or the text, each joined without separators."""
    if "messages" in record:
        return "".join(content_text(m.get("content") or "") for m in record["messages"])
    if "prompt" in record:
        return f"{record['prompt']}{record['completion']}"
    return str(record["text"])


def render_chat(record: Mapping[str, Any], tokenizer: Any) -> str:
    """One chat record as training text: the tokenizer's chat template when it has one, else a
    plain "role: content" transcript ended by the EOS token."""
    # Content parts become plain text; tool calls and the like stay for templates that render them.
    messages = [{**m, "content": content_text(m.get("content") or "")} for m in record["messages"]]
    if getattr(tokenizer, "chat_template", None):
        kwargs: dict[str, Any] = {"tokenize": False}
        if record.get("tools"):
            kwargs["tools"] = record["tools"]
        return str(tokenizer.apply_chat_template(messages, **kwargs))
    eos = getattr(tokenizer, "eos_token", None) or ""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + eos


def render_record(record: Mapping[str, Any], tokenizer: Any) -> str:
    """The text an accepted record trains on: chat rendered, prompt and completion joined, text kept."""
    if "messages" in record:
        return render_chat(record, tokenizer)
    return record_text(record)
