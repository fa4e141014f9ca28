"""The dataset's size in tokens, approximated from characters at submit time.

Running the real tokenizer over a large file at submit time would be slower than the decision it
informs; characters over ``chars_per_token`` (plus a per-message overhead for chat) is close enough.
Nor is a large file read whole: the caller reads its first bytes, and the complete lines among them
are counted and scaled up by the file's size.
"""

from __future__ import annotations

from collections.abc import Callable

from trainyard.platform.records import accepted_records, record_text
from trainyard.platform.scheduling.constants import default_constants
from trainyard.platform.scheduling.model_info import EstimateInputError
from trainyard.platform.spec import JobSpec

# Where a plan's token count comes from (plan["dataset_tokens_source"]); a sampled count says how
# much of how large a file it read, e.g. "sampled 8.0 MB of 2.0 GB, extrapolated".
COUNTED = "counted"
GIVEN = "dataset_tokens"
MAX_STEPS = "max_steps"


def count_dataset_tokens(
    data: bytes,
    *,
    chars_per_token: float,
    seq_len: int | None = None,
    chat_overhead_tokens_per_message: float = 4.0,
) -> int:
    """Approximate tokens in a JSONL training file, over the records uploads accept (others are
    skipped: refusing the file is the upload's and the attempt's business, not the estimate's).

    Each example is capped at ``seq_len`` because training truncates there.
    """
    if chars_per_token <= 0:
        raise ValueError("chars_per_token must be positive")
    total = 0.0
    for record in accepted_records(data.splitlines()):
        tokens = len(record_text(record)) / chars_per_token
        messages = record.get("messages")
        if isinstance(messages, list):
            tokens += chat_overhead_tokens_per_message * len(messages)
        if tokens <= 0:
            continue
        tokens = max(tokens, 1.0)
        total += min(tokens, seq_len) if seq_len else tokens
    return round(total)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _sampled_tokens(data: bytes, total_bytes: int, count: Callable[[bytes], int]) -> tuple[int, str]:
    """Tokens of the whole file from its first bytes ``data``: exact when they are the whole file,
    else the complete lines among them counted and scaled by ``total_bytes``."""
    if len(data) >= total_bytes:
        return count(data), COUNTED
    # The last line is cut short by the sample's end; only whole lines decode as records.
    complete = data[: data.rfind(b"\n") + 1]
    if not complete:
        return 0, COUNTED  # one line longer than the sample: nothing to scale from
    tokens = count(complete) * total_bytes / len(complete)
    return round(tokens), f"sampled {_size(len(complete))} of {_size(total_bytes)}, extrapolated"


def dataset_tokens_and_source(
    spec: JobSpec,
    data: bytes | None = None,
    *,
    total_bytes: int | None = None,
    chars_per_token: float | None = None,
    chat_overhead_tokens_per_message: float | None = None,
) -> tuple[int, str]:
    """Tokens per epoch, and where the figure comes from: counted from the training file's bytes
    (``COUNTED``, or "sampled ... extrapolated" when ``data`` is the first part of a file of
    ``total_bytes``), else spec.dataset_tokens (``GIVEN``), else 0 for a max_steps run (``MAX_STEPS``).

    Raises EstimateInputError(param="dataset_tokens") when none is available.
    """
    if data:
        constants = default_constants()

        def count(blob: bytes) -> int:
            return count_dataset_tokens(
                blob,
                chars_per_token=chars_per_token or constants.chars_per_token,
                seq_len=spec.hyperparameters.seq_len,
                chat_overhead_tokens_per_message=(
                    chat_overhead_tokens_per_message
                    if chat_overhead_tokens_per_message is not None
                    else constants.chat_overhead_tokens_per_message
                ),
            )

        tokens, source = _sampled_tokens(data, len(data) if total_bytes is None else total_bytes, count)
        if tokens > 0:
            return tokens, source
    if spec.dataset_tokens is not None:
        return spec.dataset_tokens, GIVEN
    if spec.hyperparameters.max_steps is not None:
        # A max_steps run's length does not depend on the file's size.
        return 0, MAX_STEPS
    raise EstimateInputError(
        f"cannot tell the size of training file {spec.training_file!r}: it could not be read or holds "
        "no text; set dataset_tokens on the job to estimate it",
        param="dataset_tokens",
    )


def resolve_dataset_tokens(
    spec: JobSpec,
    data: bytes | None = None,
    *,
    total_bytes: int | None = None,
    chars_per_token: float | None = None,
    chat_overhead_tokens_per_message: float | None = None,
) -> int:
    """Tokens per epoch, as ``dataset_tokens_and_source`` finds them."""
    return dataset_tokens_and_source(
        spec,
        data,
        total_bytes=total_bytes,
        chars_per_token=chars_per_token,
        chat_overhead_tokens_per_message=chat_overhead_tokens_per_message,
    )[0]
