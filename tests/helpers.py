"""Tiny encoders, vocabularies and data that several test modules build, each defined once.

Fixtures over these live in ``conftest.py``; import the plain helpers here when a test needs
parameters (``from helpers import tiny_vocab``: ``conftest.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
from tokenizers import pre_tokenizers

from distilbert_heads.demo.datasets import data_path
from distilbert_heads.testing import TINY_ENCODER
from distilbert_heads.text.tokenizer import DistilBertTokenizer
from distilbert_heads.training.loop import train

__all__ = [
    "BOUNDED_ENCODER",
    "BUILTIN_TASKS",
    "LETTERS",
    "KillAtStep",
    "SPECIAL_TOKENS",
    "TINY_ENCODER",
    "TINY_TRAINING",
    "assert_mentions",
    "demo_rows",
    "demo_vocab_tokenizer",
    "tiny_vocab",
    "train_worker",
    "train_worker_command",
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


# -- a training run in a process of its own, killed at a step -------------------------------------------------------
class KillAtStep(keras.callbacks.Callback):
    """Kill this process with SIGKILL (no cleanup can run, as an out-of-memory kill or a pulled plug) right after
    training step ``step`` of the run (counted from 1; 0: never), once that step has finished in every process of a
    data-parallel run."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step, self.steps = int(step), 0

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.steps += 1
        if self.steps == self.step:
            self.model.get_weights()  # waits for the step (and a data-parallel run's all-reduce) to finish everywhere
            os.kill(os.getpid(), signal.SIGKILL)


def train_worker_command(
    task: str | Mapping[str, str],
    train_file: str | None,
    arguments: Mapping[str, Any],
    *,
    kill_at: int = 0,
    report: str | os.PathLike | None = None,
) -> list[str]:
    """The command that runs `train_worker` in a new Python process: ``train(task, train_file, **arguments)`` with
    the demo vocabulary, killed (`KillAtStep`) after step ``kill_at`` when it is not 0; ``report`` as there."""
    spec = {"task": task, "train_file": train_file, "arguments": dict(arguments), "kill_at": kill_at}
    spec["report"] = None if report is None else os.fspath(report)
    code = "import sys; sys.path.insert(0, sys.argv[1]); import helpers; helpers.train_worker(sys.argv[2])"
    return [sys.executable, "-c", code, str(Path(__file__).parent), json.dumps(spec)]


def train_worker(spec: str) -> None:
    """The body of `train_worker_command`'s process (``spec``: its JSON). With a ``report`` path, writes the final
    weights there (npz) and what ``train`` returned (path, distribution, history) to ``<report>.json``."""
    given = json.loads(spec)
    result = train(
        given["task"],
        given["train_file"],
        tokenizer=demo_vocab_tokenizer(),
        callbacks=[KillAtStep(given["kill_at"])],
        **{"verbose": 0, **given["arguments"]},
    )
    if given["report"] is None:
        return
    np.savez(given["report"], *result.model.get_weights())
    record = (getattr(result.model, "training_record", None) or {}).get("settings", {})
    summary = {
        "path": None if result.path is None else str(result.path),
        "distribution": record.get("distribution"),
        "history": result.history,
    }
    Path(f"{given['report']}.json").write_text(json.dumps(summary), encoding="utf-8")
