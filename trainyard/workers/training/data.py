"""Training data on a worker: JSONL records read from the store, labels mapped, text tokenised.

Each worker reads and tokenises the data itself: datasets are small next to the model, and
tokenising locally avoids shipping tensors through Ray's object store.
"""

from __future__ import annotations

from typing import Any

import torch

from trainyard.platform.records import RecordError, read_records, render_record


def read_jsonl(uri: str) -> list[dict[str, Any]]:
    """Read JSONL records from ``s3://``, ``file://`` or a local path, by the rules uploads apply:
    a file that an upload would refuse fails the attempt as the user's error, line named."""
    from trainyard.platform.storage import read_uri

    try:
        return list(read_records(read_uri(uri).splitlines()))
    except RecordError as exc:
        raise ValueError(exc.describe(uri)) from None


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._items[i]


def label_mapping(records: list[dict[str, Any]], num_labels: int) -> dict[Any, int]:
    """Map the labels found in the data to class ids.

    Integer labels are class ids already; string labels get ids in sorted order, which every
    worker computes identically from the same file.
    """
    labels = {r.get("label") for r in records}
    if None in labels:
        raise ValueError("every classification record needs a 'label'")
    ints = [x for x in labels if isinstance(x, int) and not isinstance(x, bool)]
    if len(ints) == len(labels):
        bad = sorted(x for x in ints if not 0 <= x < num_labels)
        if bad:
            raise ValueError(f"labels {bad[:5]} are outside 0..{num_labels - 1} (num_labels={num_labels})")
        return {i: i for i in range(num_labels)}
    names = [x for x in labels if isinstance(x, str)]
    if len(names) == len(labels):
        if len(names) > num_labels:
            raise ValueError(f"{len(names)} distinct labels but num_labels={num_labels}")
        return {name: i for i, name in enumerate(sorted(names))}
    raise ValueError("labels must be all integers or all strings")


def tokenize_records(
    records: list[dict[str, Any]],
    tokenizer: Any,
    seq_len: int,
    task: str,
    labels: dict[Any, int] | None = None,
) -> ListDataset:
    texts = [render_record(r, tokenizer) for r in records]
    enc = tokenizer(texts, truncation=True, max_length=seq_len)
    items: list[dict[str, Any]] = []
    for i, ids in enumerate(enc["input_ids"]):
        if not ids:
            continue
        item: dict[str, Any] = {"input_ids": ids, "attention_mask": enc["attention_mask"][i]}
        if task == "sequence_classification":
            assert labels is not None
            item["labels"] = labels[records[i]["label"]]
        items.append(item)
    return ListDataset(items)
