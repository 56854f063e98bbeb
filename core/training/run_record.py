"""How a model was made: the training record `train` saves inside the ``.keras`` file.

The record is plain JSON data (it lives in the model's config, `DistilBertTaskModel.training_record`):
the library, Keras and Python versions and the Keras backend, when the model was saved (UTC), the
settings `train` ran with (every argument, paths as given, defaults resolved: the schedule and
learning rate actually used), each data file's path, size and SHA-256, the final metrics and the
split they were measured on, and, for a run from the
command line with ``--config``, the run file with the keys it set and those flags overrode.
``distilbert-heads info MODEL.keras`` shows it.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import keras

import distilbert_heads

RECORD_FORMAT = 1
_CHUNK = 1 << 20


def plain(value: Any) -> Any:
    """``value`` as JSON data: paths as text, numpy scalars as numbers; an object JSON cannot hold (a tokenizer,
    a callback) as ``<its class>``, so the record says it was given rather than leaving it out."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        return value.item()
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def describe_file(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "name", "bytes", "sha256"}`` of a data file, read in chunks (files of any size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return {
        "path": os.fspath(path),
        "name": os.path.basename(os.fspath(path)),
        "bytes": os.path.getsize(path),
        "sha256": digest.hexdigest(),
    }


# Record entries about how a model was made that stay true after it trains further (see `training_record`).
LINEAGE_KEYS = ("student",)


def training_record(
    settings: Mapping[str, Any],
    data: Mapping[str, Mapping[str, Any]],
    run: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    metrics_split: str | None = None,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The record saved with a trained model: versions, date, ``settings``, the data files' hashes and ``run``.

    ``previous`` is the record the model had before this run: what it says about the model's making that
    outlives one run (`LINEAGE_KEYS`: the teacher a student was cut from) is carried over.

    Args:
        settings: `train`'s arguments as it ran (see `plain` for what becomes of objects).
        data: role (``"train"``, ``"eval"``) -> `describe_file` of that file, taken before training read it.
        run: how the run was asked for (the command line's run file), stored as given.
        metrics: the final metrics `train` reported (name -> value), measured on ``metrics_split``
            (``"eval"`` or ``"train"``); the model card of a Hugging Face export shows them.
    """
    return {
        "format": RECORD_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "distilbert_heads": distilbert_heads.__version__,
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "python": platform.python_version(),
        },
        "settings": plain(settings),
        "data": {role: dict(described) for role, described in data.items()},
        "run": plain(run) if run is not None else None,
        "metrics": None if metrics is None else {"split": metrics_split, "values": plain(metrics)},
        **{key: previous[key] for key in LINEAGE_KEYS if isinstance(previous, Mapping) and key in previous},
    }
