"""A tiny GPT-2 and small JSONL datasets, made on the spot: `trainyard demo` trains one, the
examples (`examples/make_data.py`) and the tests use them too. It ships in the wheel for the demo.

Nothing here touches a model hub: the tokenizer is trained on generated sentences and the model
is built from a config with random weights. Everything is deterministic for a given seed, so a
test that trains for twenty steps sees the same data every time.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

Task = Literal["causal_lm", "sequence_classification"]

PAD = "<pad>"
UNK = "<unk>"
EOS = "<|endoftext|>"

_SUBJECTS = ["the cat", "a dog", "the bird", "my friend", "the robot", "a farmer", "the train", "our team"]
_VERBS = ["sees", "likes", "finds", "moves", "builds", "paints", "carries", "follows"]
_OBJECTS = ["the ball", "a house", "the river", "some bread", "the map", "a tree", "the signal", "a box"]
_PLACES = ["in the yard", "at noon", "near the station", "on the hill", "by the sea", "after rain"]
_GOOD = ["great", "lovely", "wonderful", "happy", "bright", "excellent"]
_BAD = ["awful", "terrible", "sad", "gloomy", "broken", "dreadful"]


def _sentence(rng: random.Random) -> str:
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_PLACES)}"


def _labelled(rng: random.Random) -> tuple[str, int]:
    label = rng.randrange(2)
    mood = rng.choice(_GOOD if label == 1 else _BAD)
    return f"{_sentence(rng)} and it is {mood}", label


def _all_words() -> list[str]:
    # Every word the generators can emit, so the word-level tokenizer never needs <unk> on our data.
    parts = [*_SUBJECTS, *_VERBS, *_OBJECTS, *_PLACES, *_GOOD, *_BAD, "and it is"]
    return sorted({w for p in parts for w in p.split()})


def make_dataset(path: str | Path, n: int, task: Task = "causal_lm", *, seed: int = 0) -> Path:
    """Write ``n`` JSONL records: ``{"text"}`` for causal LM, ``{"text", "label"}`` for classification."""
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = random.Random(f"{task}:{seed}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for _ in range(n):
            if task == "causal_lm":
                # Two sentences per record gives the model some longer context to learn from.
                record: dict[str, object] = {"text": f"{_sentence(rng)} . {_sentence(rng)} ."}
            elif task == "sequence_classification":
                text, label = _labelled(rng)
                record = {"text": text, "label": label}
            else:
                raise ValueError(f"unknown task {task!r}")
            f.write(json.dumps(record) + "\n")
    return out


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer trained on the generators' vocabulary, with pad/eos/unk tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=[PAD, UNK, EOS], min_frequency=1)
    rng = random.Random(0)
    corpus = [" ".join(_all_words()), " . "] + [_labelled(rng)[0] for _ in range(200)]
    tok.train_from_iterator(corpus, trainer=trainer)
    # Append EOS to each sequence so causal-LM samples end the way generation should stop.
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, unk_token=UNK, eos_token=EOS, bos_token=EOS
    )


def make_tiny_model_dir(
    path: str | Path,
    task: Task = "causal_lm",
    *,
    num_labels: int = 2,
    n_embd: int = 32,
    n_layer: int = 2,
    n_head: int = 2,
    n_positions: int = 128,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised tiny GPT-2 and its tokenizer into ``path`` with ``save_pretrained``.

    The directory loads with ``AutoModelForCausalLM`` / ``AutoModelForSequenceClassification`` and
    ``AutoTokenizer``, like any model directory from a hub or a bucket.
    """
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, PreTrainedModel

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model: PreTrainedModel
    if task == "causal_lm":
        model = GPT2LMHeadModel(config)
    elif task == "sequence_classification":
        config.num_labels = num_labels
        model = GPT2ForSequenceClassification(config)
    else:
        raise ValueError(f"unknown task {task!r}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
