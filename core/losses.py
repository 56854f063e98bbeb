"""Losses and metrics for token-level (and any sparse) labels that mark "no label here" with -100.

Heads that label some positions only (token tags with padding and sub-word continuations,
answer spans, slots) use `MaskedSparseCategoricalCrossentropy` and `MaskedSparseCategoricalAccuracy`
with labels set to `IGNORE_INDEX` where there is nothing to learn. Both are registered Keras objects
(``distilbert_heads>MaskedSparseCategoricalCrossentropy`` and ``...Accuracy``), so a model compiled
with them saves and reloads, and `.keras` files saved by 0.1 (which defined them in
``distilbert_heads.heads._common``) still load. Written with `keras.ops` only: they run under the
TensorFlow, JAX and PyTorch backends and inside ``jit_compile=True`` train steps.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = [
    "IGNORE_INDEX",
    "MaskedSparseCategoricalAccuracy",
    "MaskedSparseCategoricalCrossentropy",
    "sparse_crossentropy_from_logits",
]

IGNORE_INDEX = -100  # the label value Hugging Face (and we) use for "no loss here"


def sparse_crossentropy_from_logits(labels: Any, logits: Any, label_smoothing: float = 0.0) -> Any:
    """Per-position cross-entropy of integer ``labels`` (shape S) against ``logits`` (S + (C,)).

    With ``label_smoothing`` = e the target distribution is ``(1 - e) * one_hot + e / C``,
    the same as Keras' `CategoricalCrossentropy` and torch's ``CrossEntropyLoss``. Labels must
    already be valid class ids (mask ignored positions before calling).
    """
    log_probs = ops.log_softmax(logits, axis=-1)
    num_classes = ops.shape(logits)[-1]
    one_hot = ops.one_hot(labels, num_classes, dtype=log_probs.dtype)
    nll = -ops.sum(one_hot * log_probs, axis=-1)
    if not label_smoothing:
        return nll
    uniform = -ops.mean(log_probs, axis=-1)
    return (1.0 - label_smoothing) * nll + label_smoothing * uniform


def _valid_and_safe_labels(y_true: Any, ignore_index: int | None) -> tuple[Any, Any]:
    labels = ops.cast(y_true, "int32")
    if ignore_index is None:
        return labels, ops.ones_like(labels, dtype="bool")
    valid = ops.not_equal(labels, ignore_index)
    return ops.where(valid, labels, ops.zeros_like(labels)), valid


def _match_rank(labels: Any, logits: Any) -> Any:
    """Accept labels shaped like the logits without the class axis, or with a trailing 1."""
    if len(labels.shape) == len(logits.shape):
        labels = ops.squeeze(labels, axis=-1)
    return labels


@keras.saving.register_keras_serializable(package="distilbert_heads")
class MaskedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Sparse cross-entropy from logits that skips positions labelled ``ignore_index`` (-100).

    The reduced loss is the mean over the positions that are not ignored, across the whole
    batch (as torch's ``CrossEntropyLoss(ignore_index=-100)``), so padding and sub-word
    continuations neither add loss nor dilute it. ``sample_weight`` may be per example (B,)
    or per position; the mean is then weighted. ``ignore_index=None`` ignores nothing.
    """

    def __init__(
        self,
        ignore_index: int | None = IGNORE_INDEX,
        label_smoothing: float = 0.0,
        from_logits: bool = True,
        reduction: str = "sum_over_batch_size",
        name: str = "masked_sparse_categorical_crossentropy",
        dtype: Any = None,
    ) -> None:
        if not from_logits:
            raise ValueError(
                "MaskedSparseCategoricalCrossentropy works on logits only (from_logits=True); "
                "the heads output logits, so drop from_logits=False."
            )
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = True

    def _weighted(self, y_true: Any, y_pred: Any, sample_weight: Any) -> tuple[Any, Any]:
        logits = ops.cast(ops.convert_to_tensor(y_pred), self.dtype)
        labels = _match_rank(ops.convert_to_tensor(y_true), logits)
        safe_labels, valid = _valid_and_safe_labels(labels, self.ignore_index)
        losses = sparse_crossentropy_from_logits(safe_labels, logits, self.label_smoothing)
        weights = ops.cast(valid, self.dtype)
        weights = _times_sample_weight(weights, sample_weight)
        return losses * weights, weights

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-position losses, zero where the label is ``ignore_index``."""
        losses, _ = self._weighted(y_true, y_pred, None)
        return losses

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        with keras.name_scope(self.name):
            losses, weights = self._weighted(y_true, y_pred, sample_weight)
            if self.reduction in (None, "none"):
                return losses
            total = ops.sum(losses)
            if self.reduction == "sum":
                return total
            return ops.divide_no_nan(total, ops.sum(weights))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(ignore_index=self.ignore_index, label_smoothing=self.label_smoothing, from_logits=True)
        return config


def _times_sample_weight(weights: Any, sample_weight: Any) -> Any:
    """``weights`` times a per-example or per-position ``sample_weight`` (broadcast over trailing axes)."""
    if sample_weight is None:
        return weights
    sample_weight = ops.cast(ops.convert_to_tensor(sample_weight), weights.dtype)
    while len(sample_weight.shape) < len(weights.shape):
        sample_weight = ops.expand_dims(sample_weight, -1)
    return weights * sample_weight


@keras.saving.register_keras_serializable(package="distilbert_heads")
class MaskedSparseCategoricalAccuracy(keras.metrics.Metric):
    """Accuracy of ``argmax(logits)`` over the positions whose label is not ``ignore_index``."""

    def __init__(self, ignore_index: int | None = IGNORE_INDEX, name: str = "accuracy", dtype: Any = None) -> None:
        super().__init__(name=name, dtype=dtype)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct", dtype=self.dtype)
        self.count = self.add_variable(shape=(), initializer="zeros", name="count", dtype=self.dtype)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        logits = ops.convert_to_tensor(y_pred)
        labels = _match_rank(ops.convert_to_tensor(y_true), logits)
        safe_labels, valid = _valid_and_safe_labels(labels, self.ignore_index)
        predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
        weights = ops.cast(valid, self.dtype)
        weights = _times_sample_weight(weights, sample_weight)
        hits = ops.cast(ops.equal(predicted, safe_labels), self.dtype) * weights
        self.correct.assign(self.correct + ops.sum(hits))
        self.count.assign(self.count + ops.sum(weights))

    def result(self) -> Any:
        return ops.divide_no_nan(self.correct, self.count)

    def reset_state(self) -> None:
        self.correct.assign(ops.zeros((), dtype=self.dtype))
        self.count.assign(ops.zeros((), dtype=self.dtype))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "ignore_index": self.ignore_index}
