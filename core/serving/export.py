"""Export a task model as a TensorFlow SavedModel for serving (`export_saved_model`).

The SavedModel's ``serving_default`` signature takes int32 ``input_ids`` and ``attention_mask``
of shape (batch, length) and returns every head output, named ``<head>__<output>``. Tokenization
is not part of the graph: the tokenizer's files go to ``<out>/tokenizer/``. The folder is
written beside ``out`` and moved into place whole (`distilbert_heads.atomic.atomic_directory`),
so a failed export never leaves a half-written SavedModel.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras

from distilbert_heads import atomic
from distilbert_heads.model.loading import load_task_model
from distilbert_heads.model.task_model import flat_output_key

__all__ = ["ExportError", "check_export_folder", "export_saved_model", "signature_output_name"]

TOKENIZER_DIR = "tokenizer"


class ExportError(ValueError):
    """The model cannot be exported as asked (wrong backend, an occupied output folder)."""


def signature_output_name(flat_key: str) -> str:
    """A SavedModel output name for a ``"<head>/<output>"`` key (``"/"`` is not allowed there)."""
    return flat_key.replace("/", "__")


def check_export_folder(out: str | os.PathLike, overwrite: bool) -> Path:
    """``out`` as a Path, if an export may write there: a new or empty folder, or any folder with ``overwrite``."""
    out = Path(out)
    if out.is_file() or (not overwrite and out.is_dir() and any(out.iterdir())):
        raise ExportError(
            f"{os.fspath(out)!r} exists and is not an empty directory; choose a new output directory"
            + (" (or pass overwrite=True, on the command line --overwrite, to replace it)." if out.is_dir() else ".")
        )
    return out


def export_saved_model(model_or_path: Any, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``model_or_path`` (a `DistilBertTaskModel` or a ``.keras`` path) as a SavedModel folder ``out``.

    ``out`` must be new or an empty folder, unless ``overwrite=True``, which replaces an
    existing folder whole (nothing of the old one is kept). Needs the TensorFlow backend.
    Returns ``out``.
    """
    if keras.backend.backend() != "tensorflow":
        raise ExportError(
            f"export writes a TensorFlow SavedModel and needs the TensorFlow backend, but Keras runs on "
            f"{keras.backend.backend()!r}. Run it as: KERAS_BACKEND=tensorflow distilbert-heads export ..."
        )
    import tensorflow as tf  # only here: the module imports on every backend, to say which one export needs

    model = load_task_model(model_or_path)
    out = check_export_folder(out, overwrite)

    def serve(input_ids: Any, attention_mask: Any) -> dict[str, Any]:
        outputs = model({"input_ids": input_ids, "attention_mask": attention_mask}, training=False)
        return {
            signature_output_name(flat_output_key(head, name)): tensor
            for head, named in outputs.items()
            for name, tensor in named.items()
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=serve,
        input_signature=[
            tf.TensorSpec((None, None), tf.int32, name="input_ids"),
            tf.TensorSpec((None, None), tf.int32, name="attention_mask"),
        ],
    )
    with atomic.atomic_directory(out) as temp:
        archive.write_out(os.fspath(temp), verbose=False)
        if model.tokenizer is not None:
            model.tokenizer.save(temp / TOKENIZER_DIR)
    return out
