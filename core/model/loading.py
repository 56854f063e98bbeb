"""`.keras` files in: a task model loaded only through the registry's installed heads, with weights
checked and, when they do not fit, the plugin release that saved them named.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from distilbert_heads.encoder.checkpoints import CheckpointError, WeightsDoNotFitError, load_keras_model
from distilbert_heads.encoder.distilbert import (
    DistilBERT,
)
from distilbert_heads.model.task_model import DistilBertTaskModel, _SavedHead
from distilbert_heads.plugins.registry import (
    get_registry,
    release_change,
)


def _head_changes(path: Path) -> str:
    """For each head of the ``.keras`` file at ``path`` now provided by another plugin version than when it
    was saved, a sentence saying so and what to install; empty when none changed."""

    try:
        with zipfile.ZipFile(path) as archive:
            heads = json.loads(archive.read("config.json"))["config"]["heads"]
        saved = [_SavedHead.model_validate(item) for item in heads]
    except Exception:  # the config loaded a moment ago; if it cannot be re-read there is nothing to add
        return ""
    changes = []
    for head in saved:
        try:
            record = get_registry().get_head(head.task_type)
        except LookupError:
            continue
        prov = head.provenance
        changes.append(release_change(head.name, prov.distribution, prov.version, record, layers_differ=True))
    return " ".join(change for change in changes if change)


def load_task_model(model_or_path: Any, dtype: str | None = None) -> DistilBertTaskModel:
    """A `DistilBertTaskModel` as given, or loaded from a ``.keras`` path, with errors that say what to pass;
    with ``dtype``, under that dtype policy (see `DistilBertTaskModel.with_dtype`)."""
    model = _load_task_model(model_or_path)
    return model if dtype is None else model.with_dtype(dtype)


def _load_task_model(model_or_path: Any) -> DistilBertTaskModel:
    if isinstance(model_or_path, DistilBertTaskModel):
        return model_or_path
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise TypeError(
            f"Expected a DistilBertTaskModel or the path of a .keras file, got {type(model_or_path).__name__}."
        )
    path = Path(model_or_path)
    try:
        model = load_keras_model(path)
    except WeightsDoNotFitError as error:
        changes = _head_changes(path)  # a plugin upgraded since the save explains it better than an edit
        if not changes:
            raise
        raise WeightsDoNotFitError(error.path, error.detail, changes) from error
    if not isinstance(model, DistilBertTaskModel):
        raise CheckpointError(
            f"{os.fspath(path)!r} holds a {type(model).__name__}, not a distilbert_heads DistilBertTaskModel; "
            "expected a task model made with create_distilbert_with_head(...)"
            + (
                " (this file holds only an encoder: put a head on it with create_distilbert_with_head(..., "
                f"pretrained={os.fspath(path)!r}))."
                if isinstance(model, DistilBERT)
                else "."
            )
        )
    bad_weight = first_non_finite_weight(model)
    if bad_weight is not None:
        name, bad = bad_weight
        raise CheckpointError(
            f"{os.fspath(path)!r} holds {bad:,} NaN or infinite value(s) in weight {name!r}; the file is "
            "corrupt or was saved after training diverged. Use an earlier save, or retrain (e.g. with a lower "
            "learning rate)."
        )
    return model


def first_non_finite_weight(model: keras.Model) -> tuple[str, int] | None:
    """(path, how many values) of the first float weight holding NaN or infinity, or None if all are finite."""
    for variable in model.weights:
        if not keras.backend.is_float_dtype(variable.dtype):
            continue
        with warnings.catch_warnings():
            # TensorFlow's and torch's variables warn under numpy 2 that their __array__ takes no copy keyword.
            warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
            values = np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)
        if not np.isfinite(values).all():
            return variable.path, int(values.size - np.count_nonzero(np.isfinite(values)))
    return None
