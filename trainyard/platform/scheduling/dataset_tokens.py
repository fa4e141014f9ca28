"""The dataset's size in tokens, approximated from characters at submit time.

Running the real tokenizer over a large file at submit time would be slower than the decision it
informs; characters over ``chars_per_token`` (plus a per-message overhead for chat) is close enough.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from trainyard.platform.scheduling.constants import default_constants
from trainyard.platform.scheduling.model_info import EstimateInputError
from trainyard.platform.spec import JobSpec


def count_dataset_tokens(
    data: bytes,
    *,
    chars_per_token: float,
    seq_len: int | None = None,
    chat_overhead_tokens_per_message: float = 4.0,
) -> int:
    """Approximate tokens in a JSONL training file.

    Each example is capped at ``seq_len`` because training truncates there.
    """
    if chars_per_token <= 0:
        raise ValueError("chars_per_token must be positive")
    total = 0.0
    for record in json_objects(data):
        tokens = record_chars(record) / chars_per_token
        messages = record.get("messages")
        if isinstance(messages, list):
            tokens += chat_overhead_tokens_per_message * len(messages)
        if tokens <= 0:
            continue
        tokens = max(tokens, 1.0)
        total += min(tokens, seq_len) if seq_len else tokens
    return round(total)


# The two functions below are how token counting reads a file. They are meant to give way to the
# one JSONL record reader (``trainyard.platform.records``), which refuses the ``input``/``output``
# records that uploads refuse and that these still count.


def json_objects(data: bytes) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file, one a line. Other lines are skipped: validating the file is
    the upload's concern, not the estimate's."""
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def record_chars(record: Mapping[str, Any]) -> int:
    """Characters of text one record trains on: ``{"text"}`` (with or without ``"label"``),
    ``{"prompt", "completion"}``, ``{"input", "output"}``, or chat ``{"messages": [...]}``."""
    messages = record.get("messages")
    if isinstance(messages, list):
        chars = 0
        for message in messages:
            if isinstance(message, Mapping):
                chars += _content_chars(message.get("content"))
        return chars
    chars = 0
    for key in ("text", "prompt", "completion", "input", "output"):
        chars += _content_chars(record.get(key))
    return chars


def _content_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):  # multi-part content: [{"type": "text", "text": ...}]
        return sum(_content_chars(part.get("text")) for part in value if isinstance(part, Mapping))
    return 0


def resolve_dataset_tokens(
    spec: JobSpec,
    data: bytes | None = None,
    *,
    chars_per_token: float | None = None,
    chat_overhead_tokens_per_message: float | None = None,
) -> int:
    """Tokens per epoch: counted from the training file's bytes, else spec.dataset_tokens.

    Raises EstimateInputError(param="dataset_tokens") when neither is available.
    """
    if data:
        constants = default_constants()
        tokens = count_dataset_tokens(
            data,
            chars_per_token=chars_per_token or constants.chars_per_token,
            seq_len=spec.hyperparameters.seq_len,
            chat_overhead_tokens_per_message=(
                chat_overhead_tokens_per_message
                if chat_overhead_tokens_per_message is not None
                else constants.chat_overhead_tokens_per_message
            ),
        )
        if tokens > 0:
            return tokens
    if spec.dataset_tokens is not None:
        return spec.dataset_tokens
    if spec.hyperparameters.max_steps is not None:
        # A max_steps run's length does not depend on the file's size.
        return 0
    raise EstimateInputError(
        f"cannot tell the size of training file {spec.training_file!r}: it could not be read or holds "
        "no text; set dataset_tokens on the job to estimate it",
        param="dataset_tokens",
    )
