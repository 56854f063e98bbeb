"""A ``.keras`` model over a Ray Dataset: `predict` runs `BatchPredictor` in a pool of actors, one model load each.

::

    import ray
    from distilbert_heads import ray_data

    texts = ray.data.read_json("s3://bucket/reviews/")            # rows with a "text" column (and an "id")
    answers = ray_data.predict(texts, "/shared/sentiment.keras", actors=4)
    answers.write_parquet("s3://bucket/answers/")                  # every input column plus "answer" (JSON)

Each actor builds one `BatchPredictor` (so loads the model once) and answers batches of
``batch_size`` rows handed to it as numpy columns; every input column comes back beside the
answer, so an id column ties answers to inputs whatever order Ray finishes blocks in (or set
``ray.data.DataContext.get_current().execution_options.preserve_order = True``). Answers are
JSON strings (``json.loads`` gives the pipeline's answer): Arrow would turn dicts into struct
columns that give every row every key. The model path is read on the workers: on a cluster it
must be on storage every node sees.

Ray is imported only when `predict` is called; without it the error says what to install.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distilbert_heads.serving.batch import BatchPredictor

__all__ = ["INSTALL_HINT", "predict"]

INSTALL_HINT = 'pip install "distilbert-heads[ray]"'


def predict(
    dataset: Any,
    model_path: str | os.PathLike,
    *,
    head: str | None = None,
    actors: int | tuple[int, int] = 1,
    batch_size: int = 256,
    model_batch_size: int = 32,
    num_cpus: float = 1,
    max_length: int | None = None,
    stride: int | None = None,
    dtype: str | None = None,
    answer_column: str = "answer",
    decode_options: Mapping[str, Any] | None = None,
    predictor: type[BatchPredictor] = BatchPredictor,
    ray_options: Mapping[str, Any] | None = None,
) -> Any:
    """``dataset`` (a ``ray.data.Dataset``) with an answer column added by the model at ``model_path``.

    Lazy, as Ray Datasets are: nothing runs until the result is consumed (``take_all``, ``write_*``,
    ``iter_batches``).

    Args:
        dataset: rows with the columns the head reads (`BatchPredictor.columns`: ``text``; ``text_a``/``text_b``;
            ``question``/``context``; a plugin kind's own) and any others, which are kept.
        model_path: the ``.keras`` file, readable at this path on every node.
        head: which head answers, for a model with several.
        actors: the actor pool: ``n`` actors, or ``(min, max)`` for a pool Ray grows and shrinks; each loads the
            model once.
        batch_size: rows Ray hands an actor per call.
        model_batch_size: inputs per forward pass inside an actor (`pipeline`'s ``batch_size``).
        num_cpus: CPUs Ray reserves per actor.
        max_length, stride, dtype, decode_options: as `BatchPredictor`'s.
        answer_column: the column the answers (JSON strings) go in.
        predictor: the class each actor builds: `BatchPredictor` or a subclass (to add columns, time batches, ...)
            that takes the same arguments.
        ray_options: more keywords for ``Dataset.map_batches``, e.g. ``{"runtime_env": {"env_vars":
            {"TF_NUM_INTRAOP_THREADS": "4"}}}`` (threads per actor on TensorFlow), ``memory``, ``num_gpus``.

    Raises:
        ModuleNotFoundError: Ray Data is not installed (the message gives the pip command).
        FileNotFoundError: ``model_path`` is not a file here (checked before any actor starts).
    """
    ray_data = _ray_data()
    path = Path(model_path).expanduser().resolve()  # workers need not share the driver's working directory
    if not path.is_file():
        raise FileNotFoundError(
            f"No model file at {os.fspath(model_path)!r} (resolved to {str(path)!r}); pass the path of a .keras file "
            "saved with model.save(...) or train(..., out=...), on storage every Ray node can read."
        )
    if isinstance(actors, tuple):
        pool = ray_data.ActorPoolStrategy(min_size=actors[0], max_size=actors[1])
    else:
        pool = ray_data.ActorPoolStrategy(size=actors)
    if not (isinstance(predictor, type) and issubclass(predictor, BatchPredictor)):
        raise TypeError(f"predictor must be BatchPredictor or a subclass of it, got {predictor!r}.")
    return dataset.map_batches(
        predictor,
        fn_constructor_kwargs={
            "model_path": str(path),
            "head": head,
            "batch_size": model_batch_size,
            "max_length": max_length,
            "stride": stride,
            "dtype": dtype,
            "answer_column": answer_column,
            "answer_format": "json",
            "decode_options": dict(decode_options or {}),
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=pool,
        num_cpus=num_cpus,
        udf_modifying_row_count=False,
        **dict(ray_options or {}),
    )


def _ray_data() -> Any:
    # Ray is an optional extra of about 600 MB: imported on first use, with the fix when it is missing.
    try:
        import ray.data
    except ModuleNotFoundError as error:
        missing = "Ray Data is not installed" if error.name == "ray" else f"Ray Data cannot import {error.name!r}"
        raise ModuleNotFoundError(
            f"distilbert_heads.ray_data.predict runs on Ray Data, and {missing}: {INSTALL_HINT}", name=error.name
        ) from error
    return ray.data
