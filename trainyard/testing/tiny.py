"""The tiny model and datasets, under the name tests and benchmarks import them by; they live in
`trainyard.cli.tiny_model` because `trainyard demo` ships them."""

from __future__ import annotations

from trainyard.cli.tiny_model import make_dataset, make_tiny_model_dir, make_tokenizer

__all__ = ["make_dataset", "make_tiny_model_dir", "make_tokenizer"]
