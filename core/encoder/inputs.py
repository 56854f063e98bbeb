"""Checks of encoder inputs on the host, before any compiled step: names, shapes, dtypes, id ranges and
masks, with errors that say what to fix; and the mixin that runs them in predict, fit and evaluate.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Any, ClassVar

import keras
import numpy as np

from distilbert_heads.encoder.config import DistilBertConfig

INPUT_NAMES = ("input_ids", "attention_mask", "position_ids", "token_type_ids")


class HostCheckedData:
    """Mixin for a `keras.Model` fed DistilBERT inputs: every data entry point checks arrays first.

    ``predict``, ``predict_on_batch``, ``fit`` (and its ``validation_data``), ``evaluate``,
    ``train_on_batch`` and ``test_on_batch`` run `validate_model_data` on the host before Keras'
    compiled step, which would otherwise gather garbage for a bad id or fail with a raw backend
    error. Datasets and generators are not read ahead. A model with ``takes_example_rows`` also
    takes ``(batch, rows per example, sequence_length)`` inputs, checked as the rows they hold.
    """

    takes_example_rows: ClassVar[bool] = False

    def _input_config(self) -> DistilBertConfig:
        raise NotImplementedError

    def _check_data(self, x: Any) -> None:
        validate_model_data(x, self._input_config(), example_rows=self.takes_example_rows)

    def predict(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.predict`, after checking array inputs against the encoder config on the host."""
        self._check_data(x)
        return super().predict(x, *args, **kwargs)  # type: ignore[misc]

    def predict_on_batch(self, x: Any) -> Any:
        """`keras.Model.predict_on_batch`, after the same host-side checks as `predict`."""
        self._check_data(x)
        return super().predict_on_batch(x)  # type: ignore[misc]

    def fit(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.fit`, after the same host-side checks on ``x`` and ``validation_data``'s inputs."""
        self._check_data(x)
        validation = kwargs.get("validation_data")
        if validation is not None:
            self._check_data(validation[0] if isinstance(validation, (tuple, list)) else validation)
        return super().fit(x, *args, **kwargs)  # type: ignore[misc]

    def evaluate(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.evaluate`, after the same host-side checks as `predict`."""
        self._check_data(x)
        return super().evaluate(x, *args, **kwargs)  # type: ignore[misc]

    def train_on_batch(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.train_on_batch`, after the same host-side checks as `predict`."""
        self._check_data(x)
        return super().train_on_batch(x, *args, **kwargs)  # type: ignore[misc]

    def test_on_batch(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.test_on_batch`, after the same host-side checks as `predict`."""
        self._check_data(x)
        return super().test_on_batch(x, *args, **kwargs)  # type: ignore[misc]


def as_input_dict(inputs: Any) -> dict[str, Any]:
    """Accept a dict of named inputs, or a bare ``input_ids`` tensor or array."""
    if (
        inputs is None
        or isinstance(inputs, (str, bytes))
        or (isinstance(inputs, Mapping) and "input_ids" in inputs and inputs["input_ids"] is None)
    ):
        got = (
            "None"
            if inputs is None or isinstance(inputs, Mapping)
            else f"a {type(inputs).__name__} ({reprlib.repr(inputs)})"
        )
        raise ValueError(
            f"DistilBERT takes token ids, got {got} for input_ids. Pass {{'input_ids': ids, 'attention_mask': mask}} "
            "with integer (batch, sequence_length) arrays; turn text into ids with the model's tokenizer (or use "
            "distilbert_heads.pipeline for text in, answers out)."
        )
    if isinstance(inputs, Mapping):
        if "input_ids" not in inputs:
            raise ValueError(
                f"DistilBERT inputs must include 'input_ids'; got keys {sorted(inputs)}. "
                "Pass {'input_ids': ids, 'attention_mask': mask}."
            )
        unknown = set(inputs) - set(INPUT_NAMES)
        if unknown:
            raise ValueError(
                f"Unknown DistilBERT inputs {sorted(unknown)}; accepted inputs are {', '.join(INPUT_NAMES)}."
            )
        return {key: value for key, value in inputs.items() if key != "token_type_ids"}
    return {"input_ids": inputs}


def checked_call_inputs(inputs: Any, config: DistilBertConfig, *, example_rows: bool = False) -> Any:
    """``inputs`` after `validate_encoder_inputs`, with bare nested lists of ids made an array.

    What a direct call (``encoder(x)``, ``model(x)``) hands to Keras: Keras takes only tensors
    positionally, so ``[[101, 102]]`` would otherwise fail with its own message. With
    ``example_rows``, rank-3 inputs are checked as the rows they hold (`flatten_example_rows`).
    """
    checked = as_input_dict(inputs)
    validate_encoder_inputs(flatten_example_rows(checked) if example_rows else checked, config)
    if isinstance(inputs, (list, tuple)):
        return _as_array("input_ids", inputs)
    return inputs


def validate_model_data(x: Any, config: DistilBertConfig, *, example_rows: bool = False) -> None:
    """`validate_encoder_inputs` on the data a `HostCheckedData` entry point was given, when it is arrays.

    A dict of arrays or a bare ids array is checked whole, on the host, before Keras' compiled
    step runs. Datasets and generators are not read ahead (that would consume them); their
    batches are checked where a step runs eagerly.
    """
    if x is None or isinstance(x, (Mapping, list, tuple, str, bytes)) or _static_shape(x) is not None:
        inputs = as_input_dict(x)
        validate_encoder_inputs(flatten_example_rows(inputs) if example_rows else inputs, config)


def flatten_example_rows(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Rank-3 inputs ``(batch, rows per example, sequence_length)`` as the ``(batch * rows,
    sequence_length)`` encoder rows they hold, for checking; other inputs as they are.

    Concrete arrays are reshaped (numpy); symbolic ones become a `keras.KerasTensor` of the
    flattened shape and the same dtype, so shape and dtype checks still run while tracing.
    """
    ids = inputs.get("input_ids")
    if isinstance(ids, (list, tuple)):
        ids = _as_array("input_ids", ids)
    ids_shape = _static_shape(ids)
    if ids_shape is None or len(ids_shape) != 3:
        return dict(inputs)
    flat: dict[str, Any] = {}
    for name, value in inputs.items():
        if isinstance(value, (list, tuple)):
            value = _as_array(name, value)
        shape = _static_shape(value)
        if shape is None or len(shape) != 3:
            flat[name] = value
            continue
        batch, rows, length = shape
        array = concrete_array(value)
        if array is not None:
            flat[name] = array.reshape(array.shape[0] * array.shape[1], array.shape[2])
        else:
            flat_rows = batch * rows if batch is not None and rows is not None else None
            flat[name] = keras.KerasTensor((flat_rows, length), dtype=keras.backend.standardize_dtype(value.dtype))
    return flat


def validate_encoder_inputs(inputs: Mapping[str, Any], config: DistilBertConfig) -> None:
    """Raise `ValueError` for inputs the encoder would silently turn into garbage or crash on.

    The one owner of the encoder's input rules; every input path (eager call, ``predict``,
    ``predict_on_batch``, pipelines) goes through it. Shape and dtype checks run whenever they
    are known (also while tracing): ``input_ids`` of rank 2 with at least one row and one
    token, at most ``max_position_embeddings`` long, of an integer dtype; ``attention_mask``
    and ``position_ids`` of the ids' shape. Value checks (ids in ``[0, vocab_size)``, mask
    only 0 and 1, positions below ``max_position_embeddings``) run on concrete arrays only
    (eager calls and the data given to ``predict``), as vectorised numpy, never in a graph.
    """
    ids_value = inputs["input_ids"]
    if isinstance(ids_value, (list, tuple)):
        ids_value = _as_array("input_ids", ids_value)
    ids_shape = _static_shape(ids_value)
    if ids_shape is not None and len(ids_shape) != 2:
        raise ValueError(
            f"input_ids must have shape (batch, sequence_length); got shape {tuple(ids_shape)}. "
            "Add a batch dimension for a single sequence, e.g. ids[None, :]."
        )
    if ids_shape is not None:
        batch, length = ids_shape
        if batch == 0:
            raise ValueError(
                f"input_ids is an empty batch (shape {tuple(ids_shape)}); pass at least one sequence, "
                "or skip the call when there is nothing to encode."
            )
        if length == 0:
            raise ValueError(
                f"input_ids has sequences of length 0 (shape {tuple(ids_shape)}); every sequence needs at least "
                "one token. Tokenize even an empty text with the model's tokenizer: it gives [CLS] [SEP]."
            )
        if length is not None and length > config.max_position_embeddings:
            raise ValueError(
                f"Sequence length {length} exceeds max_position_embeddings={config.max_position_embeddings}. "
                f"Truncate inputs to at most {config.max_position_embeddings} tokens (or split them with a stride)."
            )
    _check_dtype(
        "input_ids",
        ids_value,
        allowed=("int", "uint"),
        fix="Token ids are integers: pass an int32 or int64 array (tokenize text with the model's tokenizer).",
    )
    others = {name: inputs.get(name) for name in ("attention_mask", "position_ids")}
    for name, other in others.items():
        if other is None:
            continue
        if isinstance(other, (list, tuple)):
            other = others[name] = _as_array(name, other)
        other_shape = _static_shape(other)
        if ids_shape is not None and other_shape is not None and not _shapes_compatible(ids_shape, other_shape):
            raise ValueError(
                f"{name} has shape {tuple(other_shape)} but input_ids has shape {tuple(ids_shape)}; "
                f"{name} must have the same (batch, sequence_length) shape as input_ids."
            )
    if others["attention_mask"] is not None:
        _check_dtype(
            "attention_mask",
            others["attention_mask"],
            allowed=("int", "uint", "bool", "float"),
            fix="Pass 1 for tokens to attend to and 0 for padding.",
        )
    if others["position_ids"] is not None:
        _check_dtype(
            "position_ids",
            others["position_ids"],
            allowed=("int", "uint"),
            fix="Positions are integers 0, 1, 2, ...; pass an int32 array or leave position_ids out.",
        )

    ids = concrete_array(ids_value)
    if ids is not None and ids.size:
        _check_range(
            "input_ids",
            ids,
            config.vocab_size,
            "vocab_size",
            "Tokenize with the vocabulary this model was built for, or build the encoder with a larger vocab_size.",
        )
    mask = concrete_array(others["attention_mask"])
    if mask is not None and mask.size:
        _check_binary_mask(mask)
    positions = concrete_array(others["position_ids"])
    if positions is not None and positions.size:
        _check_range(
            "position_ids",
            positions,
            config.max_position_embeddings,
            "max_position_embeddings",
            "Positions count from 0 and must stay below the model's maximum length.",
        )


def _as_array(name: str, value: Any) -> np.ndarray:
    try:
        return np.asarray(value)
    except ValueError as error:  # ragged nested lists
        raise ValueError(
            f"{name} must be a rectangular (batch, sequence_length) array; got nested lists of different lengths "
            f"({error}). Pad the rows to one length (the tokenizer's encode does) and pass a numpy array."
        ) from error


def _dtype_name(value: Any) -> str | None:
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return None
    if isinstance(dtype, np.dtype):
        return dtype.name  # the host-array case, without keras' (slow) general conversion
    try:
        return keras.backend.standardize_dtype(dtype)
    except ValueError:
        return str(dtype)


def _check_dtype(name: str, value: Any, allowed: tuple[str, ...], fix: str) -> None:
    dtype = _dtype_name(value)
    if dtype is None:
        return
    kind = (
        "bool"
        if dtype == "bool"
        else next((k for k in ("uint", "int", "float", "bfloat") if dtype.startswith(k)), dtype)
    )
    kind = "float" if kind == "bfloat" else kind
    if kind not in allowed:
        expected = "an integer, bool or float dtype holding 0 and 1" if "float" in allowed else "an integer dtype"
        raise ValueError(f"{name} has dtype {dtype}; expected {expected} (it is never cast silently). {fix}")


def _check_range(name: str, values: np.ndarray, limit: int, limit_name: str, advice: str) -> None:
    low, high = values.min(), values.max()
    if low < 0 or high >= limit:
        bad = low if low < 0 else high
        where = tuple(int(i) for i in np.argwhere(values == bad)[0])
        raise ValueError(
            f"{name} contains {bad}, outside [0, {limit}) where {limit_name}={limit} (first at index {where}). {advice}"
        )


def _check_binary_mask(mask: np.ndarray) -> None:
    if mask.dtype.kind in "biu" and mask.min() >= 0 and mask.max() <= 1:
        return  # the common case, in two reductions
    bad = (mask != 0) & (mask != 1)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        values = np.unique(mask[bad])[:5].tolist()
        raise ValueError(
            f"attention_mask holds {mask[where].item()!r} at index {where} (values other than 0 and 1: {values}); "
            "the mask "
            "must be 1 for tokens to attend to and 0 for padding, as other values silently change the outputs. "
            "Build it as (input_ids != pad_id).astype('int32') or take it from the tokenizer."
        )


def _static_shape(value: Any) -> tuple[int | None, ...] | None:
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    return tuple(dim if isinstance(dim, int) else None for dim in shape)


def _shapes_compatible(a: tuple[int | None, ...], b: tuple[int | None, ...]) -> bool:
    if len(a) != len(b):
        return False
    return all(x is None or y is None or x == y for x, y in zip(a, b))


def concrete_array(value: Any) -> np.ndarray | None:
    """``value`` as a numpy array if it holds concrete data now, None if symbolic or traced."""
    if value is None or isinstance(value, keras.KerasTensor):
        return None
    if isinstance(value, (np.ndarray, list, tuple, int)):
        return np.asarray(value)
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf  # only on the TensorFlow backend

            if not tf.executing_eagerly() or not hasattr(value, "numpy"):
                return None
            return value.numpy()
        if backend == "jax":
            import jax

            if isinstance(value, jax.core.Tracer):
                return None
            return np.asarray(value)
        if backend == "torch":
            if getattr(value, "device", None) is not None and value.device.type == "meta":
                return None
            return value.detach().cpu().numpy()
    except Exception:  # an exotic tensor type: leave the value checks to the backend
        return None
    return None
