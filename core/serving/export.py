"""Exporting a task model: `export` (``distilbert_heads.export``) writes any format, and the ids-in SavedModel.

`export(model_or_path, out, format=...)` is the one entry point (the CLI's ``export --format`` calls it):

- ``"saved_model"``: strings in, answers out, tokenizing and decoding in the graph
  (`distilbert_heads.serving.saved_model`; built-in heads; needs ``distilbert-heads[serving]``);
- ``"saved_model_ids"``: token ids in, every head's raw outputs out (`export_saved_model`, below; any head);
- ``"onnx"``: the same ids-in graph for ONNX Runtime (`distilbert_heads.serving.onnx_export`;
  ``distilbert-heads[onnx]``);
- ``"hf"``: a Hugging Face task checkpoint folder (`distilbert_heads.serving.hf_checkpoint`; heads with a
  Hugging Face equivalent).

The ids-in SavedModel's ``serving_default`` signature takes int32 ``input_ids`` and ``attention_mask``
of shape (batch, length) and returns every head output, named ``<head>__<output>``. Tokenization
is not part of the graph: the tokenizer's files go to ``<out>/tokenizer/``. The folder is
written beside ``out`` and moved into place whole (`distilbert_heads.atomic.atomic_directory`),
so a failed export never leaves a half-written SavedModel.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import keras

from distilbert_heads import atomic
from distilbert_heads.model.loading import load_task_model
from distilbert_heads.model.task_model import flat_output_key

__all__ = [
    "FORMATS",
    "ExportError",
    "check_export_folder",
    "export",
    "export_saved_model",
    "ids_serving_function",
    "signature_output_name",
    "unsupported_heads",
]

TOKENIZER_DIR = "tokenizer"


class ExportError(ValueError):
    """The model cannot be exported as asked (wrong backend, an occupied output folder)."""


def signature_output_name(flat_key: str) -> str:
    """A SavedModel output name for a ``"<head>/<output>"`` key (``"/"`` is not allowed there)."""
    return flat_key.replace("/", "__")


def require_tensorflow_backend() -> None:
    """Raise `ExportError` unless Keras runs on TensorFlow, which a SavedModel needs."""
    if keras.backend.backend() != "tensorflow":
        raise ExportError(
            f"export writes a TensorFlow SavedModel and needs the TensorFlow backend, but Keras runs on "
            f"{keras.backend.backend()!r}. Run it as: KERAS_BACKEND=tensorflow distilbert-heads export ..."
        )


def check_export_folder(out: str | os.PathLike, overwrite: bool) -> Path:
    """``out`` as a Path, if an export may write there: a new or empty folder, or any folder with ``overwrite``."""
    out = Path(out)
    if out.is_file() or (not overwrite and out.is_dir() and any(out.iterdir())):
        raise ExportError(
            f"{os.fspath(out)!r} exists and is not an empty directory; choose a new output directory"
            + (" (or pass overwrite=True, on the command line --overwrite, to replace it)." if out.is_dir() else ".")
        )
    return out


def ids_serving_function(model: Any) -> Callable[[Any, Any], dict[str, Any]]:
    """The ids-in graphs' forward pass: ``serve(input_ids, attention_mask)`` -> ``{"<head>__<output>": tensor}``.

    The one place the ids-in SavedModel and the ONNX graph (and its check against Keras) name their outputs.
    """

    def serve(input_ids: Any, attention_mask: Any) -> dict[str, Any]:
        outputs = model({"input_ids": input_ids, "attention_mask": attention_mask}, training=False)
        return {
            signature_output_name(flat_output_key(head, name)): tensor
            for head, named in outputs.items()
            for name, tensor in named.items()
        }

    return serve


def export_saved_model(model_or_path: Any, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``model_or_path`` (a `DistilBertTaskModel` or a ``.keras`` path) as a SavedModel folder ``out``.

    ``out`` must be new or an empty folder, unless ``overwrite=True``, which replaces an
    existing folder whole (nothing of the old one is kept). Needs the TensorFlow backend.
    Returns ``out``.
    """
    require_tensorflow_backend()
    import tensorflow as tf  # only here: the module imports on every backend, to say which one export needs

    model = load_task_model(model_or_path)
    out = check_export_folder(out, overwrite)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=ids_serving_function(model),
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


# format -> (module, export function, function naming the heads it cannot export, what it writes)
FORMATS: dict[str, tuple[str, str, str | None, str]] = {
    "saved_model": (
        "distilbert_heads.serving.saved_model",
        "export_saved_model_text",
        "unsupported_heads_saved_model_text",
        "a TensorFlow SavedModel: strings in, answers out",
    ),
    "saved_model_ids": (
        "distilbert_heads.serving.export",
        "export_saved_model",
        None,
        "a TensorFlow SavedModel: token ids in, head outputs out",
    ),
    "onnx": (
        "distilbert_heads.serving.onnx_export",
        "export_onnx",
        "unsupported_heads_onnx",
        "model.onnx: token ids in, head outputs out",
    ),
    "hf": (
        "distilbert_heads.serving.hf_checkpoint",
        "export_hf",
        "unsupported_heads_hf",
        "a Hugging Face task checkpoint folder",
    ),
}
# Checking ONNX support converts the whole model; the other checks only look at the heads.
_CHEAP_CHECKS = ("saved_model", "saved_model_ids", "hf")


def export(model_or_path: Any, out: str | os.PathLike, format: str = "saved_model", **options: Any) -> Path:
    """Write ``model_or_path`` (a `DistilBertTaskModel` or a ``.keras`` path) to ``out`` in ``format``.

    ``format`` is one of `FORMATS` (see the module docstring). ``options`` go to that format's function:
    ``overwrite=True`` for every format (replace an existing folder whole), ``head=`` for ``"hf"`` (one head of
    a multi-head model), ``max_length=`` for ``"saved_model"``, ``opset=`` and ``quantize="int8"`` for ``"onnx"``.
    A head the format cannot carry is an `ExportError` that names it and the formats this model can be exported in.
    """
    if format not in FORMATS:
        raise ExportError(f"Unknown export format {format!r}; choose one of {', '.join(FORMATS)}.")
    module_name, function_name, _, _ = FORMATS[format]
    model = load_task_model(model_or_path)
    function = getattr(importlib.import_module(module_name), function_name)
    try:
        return Path(function(model, out, **options))
    except ExportError as error:
        if "formats" in str(error):
            raise
        usable = [name for name in _CHEAP_CHECKS if name != format and not unsupported_heads(model, name)]
        raise ExportError(
            f"{error} Formats this model can be exported in: {', '.join(usable) or 'none of ' + ', '.join(FORMATS)}"
            + ("" if format == "onnx" else " (and perhaps onnx, which is checked by converting)")
            + "."
        ) from None


def unsupported_heads(model: Any, format: str) -> dict[str, str]:
    """Head name -> why ``format`` cannot export it (empty when it can export every head)."""
    if format not in FORMATS:
        raise ExportError(f"Unknown export format {format!r}; choose one of {', '.join(FORMATS)}.")
    module_name, _, check, _ = FORMATS[format]
    if check is None:
        return {}
    return dict(getattr(importlib.import_module(module_name), check)(model))


class _CallableModule(ModuleType):
    """This module, callable: ``distilbert_heads.export(model, out, format=...)`` is `export`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
