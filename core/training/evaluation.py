"""Scoring a model on examples with its head's own metrics (or its loss), the metric early stopping
watches, and what guessing would score."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from distilbert_heads.plugins.head import TaskHead
from distilbert_heads.text.pipeline import pipeline
from distilbert_heads.text.tokenizer import DistilBertTokenizer
from distilbert_heads.training import data_files
from distilbert_heads.training.examples import (
    _locate_bad_example,
    example_items,
    example_schema,
    load_model,
    model_tokenizer,
)
from distilbert_heads.training.settings import TrainingError

# Which of a head's metrics early stopping watches, first match wins; otherwise the first one it returns.
PRIMARY_METRICS = ("f1", "entity_f1", "exact_match", "accuracy", "macro_f1", "micro_f1", "pearson", "spearman")


LOWER_IS_BETTER = frozenset({"mse", "mae", "rmse", "loss"})


# A final score within this of what guessing gets counts as chance level (the scores are fractions in [0, 1]).
CHANCE_MARGIN = 0.02


# Held-out batches are prepared (`TaskHead.prepare_batch`: the masked-LM head masks them) from this fixed seed and
# the batch's index, never the run's: every scoring of a file, in any epoch or run, sees the same batches.
EVAL_PREPARATION_SEED = 1_000_003


# -- predicting and scoring examples -----------------------------------------------------------------
def predict_examples(
    model: Any,
    examples: Sequence[BaseModel],
    *,
    head: str | None = None,
    tokenizer: DistilBertTokenizer | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
) -> list[Any]:
    """The head's decoded answers for the examples' inputs (through `distilbert_heads.pipeline`)."""
    head_name, task_head = model.select_head(head)
    pipe = pipeline(
        model,
        tokenizer=model_tokenizer(model, tokenizer),
        head=head_name,
        batch_size=batch_size,
        max_length=max_length,
        show_progress=False,
    )
    return pipe.predict_items(example_items(task_head, examples))


def score_examples(
    model: Any,
    examples: Sequence[BaseModel],
    *,
    head: str | None = None,
    tokenizer: DistilBertTokenizer | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    path: str | os.PathLike | None = None,
) -> dict[str, float]:
    """The head's metrics (its `evaluate`) of the model's answers on ``examples``."""
    _, task_head = model.select_head(head)
    predictions = predict_examples(
        model, examples, head=head, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length
    )
    return score_predictions(task_head, examples, predictions, path=path)


def score_predictions(
    task_head: TaskHead,
    examples: Sequence[BaseModel],
    predictions: Sequence[Any],
    *,
    path: str | os.PathLike | None = None,
) -> dict[str, float]:
    """The head's metrics (its `evaluate`) of ``predictions``; a failing row is reported by its line in ``path``."""
    try:
        scores = task_head.evaluate(examples, predictions)
    except (ValueError, KeyError, IndexError) as error:
        raise _locate_bad_example(
            error, lambda i: task_head.evaluate([examples[i]], [predictions[i]]), len(examples), path
        ) from None
    return {key: float(value) for key, value in scores.items()}


def evaluate(
    model_or_path: Any,
    eval_file: str | os.PathLike,
    *,
    batch_size: int = 32,
    max_length: int | None = None,
    head: str | None = None,
    tokenizer: DistilBertTokenizer | None = None,
    show_progress: bool | None = None,
    on_bad_row: data_files.BadRowHandler | None = None,
) -> dict[str, float]:
    """Metrics of a model (or a ``.keras`` path) on a JSONL/CSV file in its head's row format.

    Classification: accuracy and macro-F1; NER: entity precision/recall/F1; QA: exact match
    and token F1; pairs: accuracy (or Pearson/Spearman for similarity), as the head defines.
    A head without ``evaluate`` gets ``{"loss": ...}``, its compiled loss on the file's rows.

    The file is read, encoded and run in chunks (`PREDICT_CHUNK_ROWS`), with a progress bar on
    stderr (rows per second and time left; default: when stderr is a terminal). The examples
    and their answers are kept for the head's metrics, their encodings are not.
    """
    model = load_model(model_or_path)
    head_name, task_head = model.select_head(head)
    if not head_scores_answers(task_head):
        if not model.compiled:
            model.compile()
        return loss_on_file(
            model,
            eval_file,
            head=head_name,
            tokenizer=model_tokenizer(model, tokenizer),
            batch_size=batch_size,
            max_length=max_length or model.max_length,
            on_bad_row=on_bad_row,
        )
    examples, predictions = predict_file(
        model,
        eval_file,
        head=head_name,
        tokenizer=tokenizer,
        batch_size=batch_size,
        max_length=max_length,
        show_progress=show_progress,
        on_bad_row=on_bad_row,
    )
    return score_predictions(task_head, examples, predictions, path=eval_file)


# Examples read, encoded and answered together when a file is scored or predicted.
PREDICT_CHUNK_ROWS = 1024


def example_chunks(
    path: str | os.PathLike,
    task_head: TaskHead,
    *,
    chunk_rows: int = PREDICT_CHUNK_ROWS,
    on_bad_row: data_files.BadRowHandler | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[list[tuple[int, BaseModel]]]:
    """``(line, example)`` chunks of a labelled file, read lazily; ``progress`` gets the bytes read so far."""
    schema = example_schema(type(task_head), task_head.task_type)
    reader = data_files.RowReader(path, fields=list(schema.model_fields), on_bad_row=on_bad_row)
    task = f"task {task_head.task_type!r}"
    chunk: list[tuple[int, BaseModel]] = []
    count = 0
    for item in data_files.iter_examples(path, schema, task, on_bad_row=on_bad_row, reader=reader):
        chunk.append(item)
        if len(chunk) == chunk_rows:
            count += len(chunk)
            yield chunk
            chunk = []
            if progress is not None:
                progress(reader.bytes_read)
    if chunk:
        count += len(chunk)
        yield chunk
    if progress is not None:
        progress(reader.size)
    if not count:
        raise data_files.DataFileError(data_files.no_examples_message(Path(path).name, schema))


def predict_file(
    model: Any,
    path: str | os.PathLike,
    *,
    head: str | None = None,
    tokenizer: DistilBertTokenizer | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    show_progress: bool | None = None,
    on_bad_row: data_files.BadRowHandler | None = None,
) -> tuple[list[BaseModel], list[Any]]:
    """The examples of a labelled file and the model's answers for them, read and run chunk by chunk."""
    head_name, task_head = model.select_head(head)
    pipe = pipeline(
        model,
        tokenizer=model_tokenizer(model, tokenizer),
        head=head_name,
        batch_size=batch_size,
        max_length=max_length,
        show_progress=False,
    )
    examples: list[BaseModel] = []
    predictions: list[Any] = []
    with file_progress(path, "scoring", show_progress) as progress:
        for chunk in example_chunks(path, task_head, on_bad_row=on_bad_row, progress=progress.bytes_read):
            chunk_examples = [example for _, example in chunk]
            predictions.extend(pipe.predict_items(example_items(task_head, chunk_examples)))
            examples.extend(chunk_examples)
            progress.rows(len(chunk))
    return examples, predictions


def loss_on_file(
    model: Any,
    path: str | os.PathLike,
    *,
    head: str,
    tokenizer: DistilBertTokenizer,
    batch_size: int,
    max_length: int,
    on_bad_row: data_files.BadRowHandler | None = None,
) -> dict[str, float]:
    """``{"loss": ...}``: the model's compiled loss on a file's rows, encoded batch by batch."""
    from distilbert_heads.training.streaming import ExampleEncoder, rows_of, trim_batch  # streaming imports Keras

    _, task_head = model.select_head(head)
    encoder = ExampleEncoder(task_head, tokenizer, max_length, path, on_bad_row)
    totals: dict[str, float] = {}
    rows = 0
    for index, chunk in enumerate(example_chunks(path, task_head, chunk_rows=batch_size, on_bad_row=on_bad_row)):
        encoded = encoder(chunk)
        if encoded is None:
            continue
        x, y = prepared_eval_batch(task_head, *trim_batch(*encoded), tokenizer=tokenizer, index=index)
        logs = model.evaluate(x, {head: y}, batch_size=batch_size, verbose=0, return_dict=True)
        count = rows_of(x)
        for key, value in _loss_and_metrics(logs, head).items():
            totals[key] = totals.get(key, 0.0) + value * count
        rows += count
    return {key: total / max(rows, 1) for key, total in (totals or {"loss": 0.0}).items()}


def prepared_eval_batch(
    task_head: TaskHead, x: Any, y: Any, *, tokenizer: DistilBertTokenizer, index: int
) -> tuple[Any, Any]:
    """Held-out batch ``index`` as the head prepares it (`TaskHead.prepare_batch`), from `EVAL_PREPARATION_SEED`."""
    rng = np.random.default_rng([EVAL_PREPARATION_SEED, index])
    return task_head.prepare_batch(x, y, tokenizer=tokenizer, rng=rng)


def _loss_and_metrics(logs: Mapping[str, Any], head_name: str) -> dict[str, float]:
    """``loss`` first (what early stopping watches for these heads), then the head's compiled metrics as Keras names
    them, less the ``<head>/`` prefix of a multi-output model (e.g. the masked-LM head's ``masked_accuracy``)."""
    prefix = f"{head_name}/"
    metrics = {
        key.removeprefix(prefix): float(value)
        for key, value in logs.items()
        if (key.startswith(prefix) or "/" not in key) and not key.endswith("loss")
    }
    return {"loss": float(logs["loss"]), **metrics}


class file_progress:
    """A rich progress bar on stderr over a file's bytes, with rows done, rows per second and time left.

    ``show``: True, False, or None for "when stderr is a terminal". Used as a context manager;
    call `bytes_read` with how far the reading has got and `rows` with rows done.
    """

    def __init__(self, path: str | os.PathLike, verb: str, show: bool | None = None) -> None:
        self.path, self.verb = Path(path), verb
        self.show = sys.stderr.isatty() if show is None else show
        self._bar: Any = None
        self._task: Any = None
        self._rows = 0

    def __enter__(self) -> file_progress:
        if not self.show:
            return self
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn(f"{self.verb} {self.path.name}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[rows]:,} rows"),
            TextColumn("{task.fields[rate]} rows/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._bar.start()
        self._task = self._bar.add_task(self.verb, total=max(self.path.stat().st_size, 1), rows=0, rate="-")
        return self

    def bytes_read(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=count)

    def resume_at(self, count: int) -> None:
        """Start the bar again at ``count`` bytes done (rows taken from an interrupted run): the rate and the
        time left count only the rows answered from here on."""
        if self._bar is not None:
            self._bar.reset(self._task, completed=count)

    def rows(self, count: int) -> None:
        self._rows += count
        if self._bar is not None:
            elapsed = self._bar.tasks[0].elapsed or 0.0
            rate = f"{self._rows / elapsed:,.0f}" if elapsed > 0 else "-"
            self._bar.update(self._task, rows=self._rows, rate=rate)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()


def head_scores_answers(head: TaskHead) -> bool:
    """Whether the head implements `TaskHead.evaluate` (scores decoded answers); without it, `train`
    reports and early-stops on the loss."""
    return type(head).evaluate is not TaskHead.evaluate


def loss_on(
    model: Any,
    head_name: str,
    x: Mapping[str, np.ndarray],
    y: Mapping[str, np.ndarray],
    *,
    batch_size: int,
    tokenizer: DistilBertTokenizer | None = None,
) -> dict[str, float]:
    """``{"loss": ..., <compiled metrics>}``: the model's compiled loss on encoded rows, how heads without
    ``evaluate`` are scored; with ``tokenizer`` the rows are first prepared as one held-out batch
    (`prepared_eval_batch`)."""
    if tokenizer is not None:
        x, y = prepared_eval_batch(model.heads[head_name], dict(x), dict(y), tokenizer=tokenizer, index=0)
    logs = model.evaluate(x, {head_name: y}, batch_size=batch_size, verbose=0, return_dict=True)
    return _loss_and_metrics(logs, head_name)


def scoring_batch_size(training_batch_size: int) -> int:
    """Rows per batch when a run scores held-out data: at least 32, since scoring keeps no gradients and a small
    training batch would make it slow."""
    return max(training_batch_size, 32)


@dataclass
class HeldOutFile:
    """A labelled held-out file scored after each epoch (by `train` and `distill`), for one head of a model.

    `score` gives the head's own metrics of the model's answers (its `evaluate`), or, for a head without
    ``evaluate`` (e.g. masked-LM), ``{"loss": ...}`` and its compiled metrics on the file's rows, each batch
    prepared from `EVAL_PREPARATION_SEED` so every epoch is scored on the same batches. `primary_metric` of
    the result is what early stopping watches.
    """

    path: str | os.PathLike
    head: str
    tokenizer: DistilBertTokenizer
    batch_size: int
    max_length: int
    on_bad_row: data_files.BadRowHandler | None = None

    def predict(self, model: Any) -> tuple[list[BaseModel], list[Any]]:
        """The file's examples and the model's answers for them (`predict_file`, no progress bar)."""
        return predict_file(
            model,
            self.path,
            head=self.head,
            tokenizer=self.tokenizer,
            batch_size=self.batch_size,
            max_length=self.max_length,
            show_progress=False,
            on_bad_row=self.on_bad_row,
        )

    def score(self, model: Any) -> dict[str, float]:
        """The model's held-out metrics on the file (see the class)."""
        _, task_head = model.select_head(self.head)
        if head_scores_answers(task_head):
            return score_predictions(task_head, *self.predict(model), path=self.path)
        return loss_on_file(
            model,
            self.path,
            head=self.head,
            tokenizer=self.tokenizer,
            batch_size=self.batch_size,
            max_length=self.max_length,
            on_bad_row=self.on_bad_row,
        )


def primary_metric(metrics: Mapping[str, float]) -> str:
    """The metric early stopping watches: the first of `PRIMARY_METRICS` present, else the first key."""
    for name in PRIMARY_METRICS:
        if name in metrics:
            return name
    if not metrics:
        raise TrainingError("The head's evaluate() returned no metrics; early stopping needs at least one.")
    return next(iter(metrics))


# -- chance level ------------------------------------------------------------------------------------
def chance_predictions(head: TaskHead, examples: Sequence[BaseModel], seed: int = 0) -> list[Any] | None:
    """What guessing gives, by the head's own optional ``chance_predictions(examples, seed=0)``
    (the built-in heads: the majority class, no entities, a random 1-3 word span of the context);
    None for a head without one."""
    guess = getattr(head, "chance_predictions", None)
    return None if guess is None else guess(examples, seed=seed)


def _same_answer_everywhere(predictions: Sequence[Any]) -> str | None:
    """Says so when every answer is the same class, or no answer found anything."""
    if len(predictions) < 2:
        return None
    labels = {str(p.get("label")) for p in predictions if isinstance(p, Mapping) and "label" in p}
    if len(labels) == 1 and all(isinstance(p, Mapping) and "label" in p for p in predictions):
        return f"every prediction is the class {labels.pop()!r}"
    if all(isinstance(p, list) and not p for p in predictions):
        return "no row got any answer (e.g. no entity found)"
    return None


def chance_level_warning(
    head: TaskHead,
    examples: Sequence[BaseModel],
    predictions: Sequence[Any],
    metrics: Mapping[str, float],
    *,
    split: str = "eval",
    advice: str = "",
) -> str | None:
    """A warning when ``metrics`` (of ``predictions`` on ``examples``) are at or near chance level, else None.

    Chance is what `chance_predictions` scores with the head's own ``evaluate``; "near" is within
    `CHANCE_MARGIN` of it on the watched metric (`primary_metric`), or every prediction being the
    same class. Heads without ``chance_predictions`` (or whose returns None) get no check.
    """
    if not examples or not metrics:
        return None
    monitor = primary_metric(metrics)
    try:
        guesses = chance_predictions(head, examples)
        if guesses is None:
            return None
        chance = head.evaluate(examples, guesses)
    except Exception:  # noqa: BLE001 - a plugin's evaluate may reject guesses any way; the check must not end a finished training
        return None
    if monitor not in chance:
        return None
    value, level = float(metrics[monitor]), float(chance[monitor])
    lower_is_better = monitor in LOWER_IS_BETTER
    if not lower_is_better and level >= 1.0 - CHANCE_MARGIN:
        return None  # e.g. an eval file with one class: guessing is perfect, so the score shows nothing
    near = value >= level - CHANCE_MARGIN if lower_is_better else value <= level + CHANCE_MARGIN
    same = _same_answer_everywhere(predictions)
    if not near and same is None:
        return None
    where = "the eval file" if split == "eval" else "the training rows"
    detail = f"; {same}" if same else ""
    return (
        f"Training ended at chance level (no better than guessing): {monitor} on {where} is {value:.3f}, and "
        f"guessing scores {level:.3f} ({getattr(head, 'chance_description', 'guessing')}){detail}. The model has "
        f"not learnt the task. Try {advice or 'more data or more epochs'}."
    )
