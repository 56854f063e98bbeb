"""Batch inference on any engine: `BatchPredictor` loads a ``.keras`` model once and answers batches of columns.

::

    from distilbert_heads import BatchPredictor

    predict = BatchPredictor("sentiment.keras")
    predict({"id": np.array([7, 8]), "text": np.array(["Great film.", "Dull."])})
    # {"id": ..., "text": ..., "answer": array([{"label": "positive", "score": 0.97}, {...}], dtype=object)}

A batch is a dict of equal-length numpy arrays, the form Ray Data's ``map_batches``, Beam and
Spark's ``predict_batch_udf`` hand a batch over in. The columns read are the head's input kind's
fields (`InputKind.fields`): ``text``; ``text_a``/``text_b`` for pairs; ``question``/``context``
for QA; a plugin kind's own (``question``/``choices`` for multiple choice). Each row becomes an
item through the kind (`InputKind.item_from_row`), the items are answered by the in-process
`Pipeline` (`Pipeline.predict_items`: the same sorting, packing, windows and ``decode``), and the
batch comes back with every column it had plus the answer column, row for row. So answers are
exactly what ``pipeline(path)`` gives for the same inputs; only the grouping of inputs into forward
passes follows the engine's batches, which moves scores by float rounding at most.

``answer_format``: ``"object"`` puts each answer as the pipeline returns it (a dict, a list of
entity dicts, ...) in an object array; ``"json"`` puts it as a JSON string (`display.jsonable`, as
``predict --output`` writes it), which survives Arrow, Parquet and Spark unchanged. Arrow turns a
column of dicts into a struct column whose rows all get every key (NER entities without ``word``
come back with ``word: None``), so the Ray helper (`distilbert_heads.ray_data`) uses JSON.

The predictor pickles as its class and arguments: an engine that ships it to a worker (Ray's actor
constructor, Beam's ``ModelHandler``, a Spark ``make_predict_fn`` closure) loads the model there, once,
and never moves weights. Nothing here imports Ray, Beam or Spark.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from distilbert_heads.display import jsonable

__all__ = ["ANSWER_FORMATS", "BatchPredictor"]

AnswerFormat = Literal["object", "json"]
ANSWER_FORMATS: tuple[str, ...] = ("object", "json")


class BatchPredictor:
    """Answers for batches of columns from one ``.keras`` model loaded once; see the module docs.

    Args:
        model_path: the ``.keras`` file (a path every worker can read: it is loaded where the predictor is built).
        head: which head answers, for a model with several (default: the only head).
        batch_size: inputs (question/context: windows) per forward pass, as `pipeline`'s.
        max_length, stride: as `pipeline`'s (default: the model's and the input kind's).
        dtype: run under this dtype policy instead of the model's own, e.g. ``"bfloat16"``.
        answer_column: the column the answers go in; a batch that already has it is refused.
        answer_format: ``"object"`` (the pipeline's answers) or ``"json"`` (one JSON string per answer).
        decode_options: keywords for the head's ``decode``, e.g. ``{"top_k": 2}``; checked when built.

    Raises:
        TypeError: ``model_path`` is not a path (a model object cannot travel to workers as arguments).
        ValueError: an unknown head, answer format or decode option, or bad pipeline settings.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        head: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        stride: int | None = None,
        dtype: str | None = None,
        answer_column: str = "answer",
        answer_format: AnswerFormat = "object",
        decode_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(model_path, (str, os.PathLike)):
            raise TypeError(
                f"BatchPredictor takes the path of a .keras file, got {type(model_path).__name__}: engines build the "
                "predictor on each worker from its arguments, so save the model (model.save('model.keras')) and pass "
                "the path."
            )
        if answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format must be one of {', '.join(ANSWER_FORMATS)}, got {answer_format!r}.")
        if not isinstance(answer_column, str) or not answer_column:
            raise ValueError(f"answer_column must be a non-empty column name, got {answer_column!r}.")
        options = dict(decode_options or {})
        self._arguments: dict[str, Any] = {
            "model_path": os.fspath(model_path),
            "head": head,
            "batch_size": batch_size,
            "max_length": max_length,
            "stride": stride,
            "dtype": dtype,
            "answer_column": answer_column,
            "answer_format": answer_format,
            "decode_options": options,
        }
        # Keras loads here, where the model does: a driver that only ships the class never imports it.
        from distilbert_heads.text.pipeline import pipeline

        self.pipeline = pipeline(
            model_path,
            head=head,
            batch_size=batch_size,
            max_length=max_length,
            stride=stride,
            dtype=dtype,
            show_progress=False,
        )
        self.pipeline.predict_items([], **options)  # refuses an unknown decode option now, not on the first batch
        self.input_kind = self.pipeline.input_kind
        self.answer_column = answer_column
        self.answer_format: AnswerFormat = answer_format
        self.decode_options = options

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the head reads from each batch (its input kind's fields)."""
        return tuple(self.input_kind.fields)

    def __repr__(self) -> str:
        return (
            f"BatchPredictor({self._arguments['model_path']!r}, head={self.pipeline.head_name!r}, "
            f"columns={self.columns}, answer_column={self.answer_column!r}, answer_format={self.answer_format!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Class and arguments only: unpickling builds a new predictor, which loads the model where it lands.
        return (_rebuild, (type(self), self._arguments))

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """``batch`` with the answer column added, one answer per row, in row order.

        Raises:
            ValueError: a column the head reads is missing, the columns differ in length, the batch already has
                the answer column, or a row's value is not what the input kind takes (naming the row).
        """
        if not isinstance(batch, Mapping):
            raise TypeError(
                f"BatchPredictor takes a batch as a dict of column name -> numpy array, got {type(batch).__name__}; "
                "with Ray Data use map_batches(..., batch_format='numpy')."
            )
        rows = self._row_count(batch)
        if self.answer_column in batch:
            raise ValueError(
                f"The batch already has a column {self.answer_column!r}, where the answers would go; pass "
                "answer_column='<another name>' to BatchPredictor (or drop or rename that column)."
            )
        items = [
            self.input_kind.item_from_row(
                {field: _plain(batch[field][index]) for field in self.columns}, f"row {index} of the batch"
            )
            for index in range(rows)
        ]
        answers = self.pipeline.predict_items(items, **self.decode_options)
        column = np.empty(rows, dtype=object)
        for index, answer in enumerate(answers):
            column[index] = json.dumps(jsonable(answer), ensure_ascii=False) if self.answer_format == "json" else answer
        return {**batch, self.answer_column: column}

    def _row_count(self, batch: Mapping[str, Any]) -> int:
        """How many rows the batch has, after checking it has every column the head reads, all of one length."""
        missing = [field for field in self.columns if field not in batch]
        if missing:
            raise ValueError(
                f"The batch has no column(s) {', '.join(map(repr, missing))} (it has "
                f"{', '.join(map(repr, batch)) or 'no columns'}); head {self.pipeline.head_name!r} reads "
                f"{', '.join(map(repr, self.columns))} ({self.input_kind.description}). Rename the dataset's columns "
                "to these names (with Ray Data: dataset.rename_columns({'old': 'new'}))."
            )
        lengths = {field: len(batch[field]) for field in self.columns}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                "The batch's columns differ in length: "
                + ", ".join(f"{field!r} has {length}" for field, length in lengths.items())
                + "; every column needs one value per row."
            )
        return next(iter(lengths.values()))


def _rebuild(cls: type[BatchPredictor], arguments: dict[str, Any]) -> BatchPredictor:
    return cls(**arguments)


def _plain(value: Any) -> Any:
    """A cell as plain Python: numpy strings and scalars as ``str``/``int``/..., arrays (list cells) as lists."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
