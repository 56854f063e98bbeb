"""From data files to a head's examples and encoder inputs: rows validated by the head's schema,
options the data implies, bad rows named by file and line; the model and tokenizer they are
encoded for."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from distilbert_heads.encoder import checkpoints
from distilbert_heads.model.loading import load_task_model
from distilbert_heads.plugins.head import TaskHead
from distilbert_heads.plugins.input_kinds import input_kind_of
from distilbert_heads.plugins.registry import get_head
from distilbert_heads.text.tokenizer import DistilBertTokenizer
from distilbert_heads.training import data_files
from distilbert_heads.training.settings import DEFAULT_VOCAB_SIZE, TrainingError

# Options that say what the labels are; when head_options gives one, the training file's labels are not
# used to infer them.
LABEL_OPTION_KEYS = ("labels", "num_classes")


# -- reading data ------------------------------------------------------------------------------
def head_record(task: str) -> Any:
    """The registry record serving ``task`` (`UnknownTaskTypeError` lists what is installed)."""
    return get_head(task)


def example_schema(head_class: type[TaskHead], task: str) -> type[BaseModel]:
    """The head's ``example_schema`` (the format of its rows), or a clear error for a head without one."""
    schema = getattr(head_class, "example_schema", None)
    if schema is None:
        raise TrainingError(
            f"The {task!r} head ({head_class.__name__}) declares no example_schema, so it cannot train or evaluate "
            "from files. Train it in Python with model.fit, or ask its plugin's author to add the data contract."
        )
    return schema


def read_task_examples(path: str | os.PathLike, head_class: type[TaskHead], task: str) -> list[BaseModel]:
    """Every row of ``path`` validated by ``head_class.example_schema``."""
    return data_files.read_examples(path, example_schema(head_class, task), task=f"task {task!r}")


def _line_numbers(path: str | os.PathLike) -> list[int]:
    return [number for number, _ in data_files.read_rows(path)]


def _locate_bad_example(
    error: Exception, check: Callable[[int], Any], count: int, path: str | os.PathLike | None
) -> TrainingError:
    """Turn an error about a batch of examples into one that names the file line of the first bad row."""
    if path is None:
        return TrainingError(str(error))
    lines = _line_numbers(path)
    for index in range(count):
        try:
            check(index)
        except (ValueError, KeyError, IndexError, TypeError) as row_error:
            line = lines[index] if index < len(lines) else "?"
            message = strip_example_prefix(str(row_error))
            return TrainingError(f"{Path(path).name} line {line}: {message}")
    return TrainingError(f"{Path(path).name}: {error}")


def strip_example_prefix(message: str) -> str:
    # Heads say "example 0: ..." about the one-row batch we re-ran; the line number replaces it.
    head, sep, rest = message.partition(": ")
    return rest if sep and head.startswith("example ") else message


def encode_examples(
    head: TaskHead,
    examples: Sequence[BaseModel],
    tokenizer: DistilBertTokenizer,
    max_length: int,
    path: str | os.PathLike | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The head's `encode_examples`, with a failing row reported by its line in ``path``."""
    try:
        return head.encode_examples(examples, tokenizer, max_length)
    except (ValueError, KeyError, IndexError) as error:
        raise _locate_bad_example(
            error, lambda i: head.encode_examples([examples[i]], tokenizer, max_length), len(examples), path
        ) from None


def infer_options(
    head_class: type[TaskHead],
    examples: Sequence[BaseModel],
    task_type: str,
    *,
    given: Mapping[str, Any] | None = None,
    path: str | os.PathLike | None = None,
    lines: Sequence[tuple[int, Any]] | None = None,
) -> dict[str, Any]:
    """Options the training data implies (label names), passing ``task_type`` to heads that take it.

    When ``given`` (the caller's head options) sets ``labels`` or ``num_classes``, those say what
    the labels are and nothing is inferred. A head's complaint about the labels (one class, a
    fractional label for a classification task, ...) becomes a `TrainingError` naming the line
    of ``path`` when it is about one row (``"example <index>: ..."``).
    """
    if given and any(key in given for key in LABEL_OPTION_KEYS):
        return {}
    method = head_class.options_from_examples
    try:
        accepts_task = "task_type" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        accepts_task = False
    try:
        options = method(examples, task_type=task_type) if accepts_task else method(examples)
    except ValueError as error:
        raise _error_at_example_line(error, path, lines) from None
    return dict(options or {})


def _error_at_example_line(
    error: Exception, path: str | os.PathLike | None, lines: Sequence[tuple[int, Any]] | None = None
) -> TrainingError:
    """``error`` as a `TrainingError`; an ``example <index>:`` prefix becomes the file and line of that row."""
    message = str(error)
    if path is None:
        return TrainingError(message)
    name = Path(path).name
    match = re.match(r"example (\d+): ", message)
    if match:
        numbers = [number for number, _ in lines] if lines is not None else _line_numbers(path)
        index = int(match.group(1))
        line = numbers[index] if index < len(numbers) else "?"
        return TrainingError(f"{name} line {line}: {message[match.end() :]}")
    return TrainingError(f"{name}: {message}")


def numeric_class_note(options: Mapping[str, Any]) -> str | None:
    """A note when the inferred class names are all numbers (they are classes, not scores)."""
    names = options.get("labels") or []
    if not names or not all(re.fullmatch(r"-?\d+", str(name)) for name in names):
        return None
    return (
        f"note: the labels are numbers ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''}); they are read "
        f"as {len(names)} class names, so this trains a classifier. If they are scores to predict instead, train a "
        "regression task type (text_regression, or text_similarity for pairs)."
    )


def example_texts(examples: Sequence[BaseModel]) -> list[str]:
    """Every piece of text in the examples (string fields, and lists of strings joined by spaces).

    Schema-agnostic, so a vocabulary can be learnt for any plugin head's rows.
    """
    texts: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                collect(item)
        elif isinstance(value, (list, tuple)):
            if value and all(isinstance(item, str) for item in value):
                texts.append(" ".join(value))
            else:
                for item in value:
                    collect(item)

    for example in examples:
        collect(example.model_dump())
    return texts


# -- the model and its tokenizer ------------------------------------------------------------------
def load_model(model_or_path: Any) -> Any:
    """`model.load_task_model`, with its problems reported as `TrainingError` for the CLI."""
    try:
        return load_task_model(model_or_path)
    except (OSError, ValueError, TypeError) as error:
        raise TrainingError(str(error)) from error


def model_tokenizer(model: Any, tokenizer: DistilBertTokenizer | None = None) -> DistilBertTokenizer:
    """The tokenizer given, else the one saved inside the model, else a clear error."""
    found = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if found is None:
        raise TrainingError(
            "This model holds no tokenizer, so text cannot be turned into input ids. Train it with "
            "`distilbert-heads train` (which saves the tokenizer inside), or pass tokenizer=... explicitly."
        )
    return found


def build_tokenizer(
    pretrained: str | os.PathLike | None,
    texts: Sequence[str],
    *,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    lowercase: bool = True,
    whole_words: bool = False,
) -> DistilBertTokenizer:
    """The checkpoint's tokenizer when ``pretrained`` names one, else a WordPiece vocab learnt on ``texts``."""
    if pretrained is not None:
        source = os.fspath(pretrained)
        if checkpoints.is_keras_file(source):
            return model_tokenizer(load_model(source))
        return DistilBertTokenizer.from_pretrained(source)
    return DistilBertTokenizer.train_from_texts(
        texts, vocab_size=vocab_size, lowercase=lowercase, whole_words=whole_words
    )


def example_items(head: TaskHead, examples: Sequence[BaseModel]) -> list[Any]:
    """The examples' inputs as the head's input kind defines them (`InputKind.item_from_row`)."""
    kind = input_kind_of(head)
    try:
        return [kind.item_from_row(example, f"example {index}") for index, example in enumerate(examples)]
    except ValueError as error:
        raise TrainingError(
            f"{type(head).__name__} has input_kind {kind.name!r} but its example rows do not hold its inputs "
            f"({error}). Its example_schema must have the fields {', '.join(kind.fields)}."
        ) from None
