"""Tiny encoders, vocabularies and data that several test modules build, each defined once.

Fixtures over these live in ``conftest.py``; import the plain helpers here when a test needs
parameters (``from helpers import tiny_vocab``: ``conftest.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from tokenizers import pre_tokenizers

from distilbert_heads.demo.datasets import data_path
from distilbert_heads.testing import TINY_ENCODER
from distilbert_heads.text.tokenizer import DistilBertTokenizer

__all__ = [
    "BOUNDED_ENCODER",
    "BUILTIN_TASKS",
    "LETTERS",
    "SPECIAL_TOKENS",
    "TINY_ENCODER",
    "TINY_TRAINING",
    "assert_mentions",
    "demo_rows",
    "demo_vocab_tokenizer",
    "tiny_vocab",
]

# The special tokens of a BERT vocabulary, in the order `transformers` writes them.
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
BUILTIN_TASKS = ("sentiment", "ner", "qa", "pairwise")

# `TINY_ENCODER` without a vocabulary size, for `train()`, which sizes the vocabulary from the data.
TINY_TRAINING: dict[str, Any] = {key: value for key, value in TINY_ENCODER.items() if key != "vocab_size"}

# A tiny encoder whose limits are small round numbers, so tests can step just past them
# (id 50, a sequence of 21 tokens) and assert the numbers in the error.
BOUNDED_ENCODER: dict[str, Any] = {
    "vocab_size": 50,
    "hidden_size": 16,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_size": 24,
    "max_position_embeddings": 20,
}


def assert_mentions(error: Any, *facts: str) -> None:
    """Assert that an error's message states each fact (a name, a number, the fix), in any wording.

    ``error`` is an exception, a `pytest.raises` result or the message itself.
    """
    message = str(getattr(error, "value", error))
    missing = [fact for fact in facts if fact not in message]
    assert not missing, f"{missing} not in {message!r}"


def tiny_vocab(words: Iterable[str] = (), *, letters: bool = False, letter_pieces: bool = False) -> list[str]:
    """`SPECIAL_TOKENS`, then a..z (``letters``), then ##a..##z (``letter_pieces``), then ``words``.

    With both letter sets every lowercase word tokenizes, as whole words or letter by letter.
    """
    pieces = [f"##{letter}" for letter in LETTERS] if letter_pieces else []
    return [*SPECIAL_TOKENS, *(LETTERS if letters else []), *pieces, *words]


def demo_rows(task: str, count: int | None = None, split: str = "train") -> list[dict]:
    """The first ``count`` rows (all when None) of a packaged demo file, as dicts."""
    lines = data_path(task, split).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:count]]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def demo_vocab_tokenizer() -> DistilBertTokenizer:
    """An uncased WordPiece vocabulary over the demo files' words, plus pieces that split some words.

    "McClintock", "Somerville" and "Lovelace" are left out as whole words, so they come out as
    sub-words (mc ##cl ##int ##ock, ...) and tests can check sub-token alignment.
    """
    words: dict[str, None] = {}
    split = pre_tokenizers.BertPreTokenizer()
    for task in BUILTIN_TASKS:
        for row in demo_rows(task):
            for word, _ in split.pre_tokenize_str(" ".join(_strings(row))):
                words[word.lower()] = None
    for whole in ("mcclintock", "somerville", "lovelace"):
        words.pop(whole, None)
    pieces = ["barbara", "mc", "##cl", "##int", "##ock", "some", "##r", "##ville", "love", "##lace", "u", "s"]
    return DistilBertTokenizer.from_vocab(tiny_vocab(dict.fromkeys([*words, *pieces])))
