"""The dataset's size in tokens, approximated from characters at submit time.

Running the real tokenizer over a large file at submit time would be slower than the decision it
informs; characters over ``chars_per_token`` (plus a per-message overhead for chat) is close enough.
"""

from __future__ import annotations

from trainyard.platform.records import accepted_records, record_text
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
