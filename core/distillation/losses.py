"""Distillation losses with padding masked out, in ``keras.ops`` (TensorFlow, JAX and PyTorch backends).

The formulas are those of the DistilBERT recipe (transformers' research distiller): soft targets are
``KL(softmax(t / T) || softmax(s / T)) * T**2`` averaged over rows ("batchmean" over the selected rows), the
hidden-state loss is ``1 - cos(s, t)`` (``CosineEmbeddingLoss`` with target 1) averaged over real tokens. A
`DistillationTarget` says which rows count: every row (``tokens="none"``), the rows of real tokens
(``"rows"``), or one distribution over the real tokens themselves (``"classes"``: padding gets no
probability in either distribution). Appending padding never changes a loss.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from distilbert_heads.plugins.head import DistillationTarget

# Added to both squared norms, as torch's cosine_embedding_loss does, so an all-zero vector gives cos = 0.
_COSINE_EPSILON = 1e-12
# Logits of padding when a distribution runs over the tokens: exp() of it is exactly 0 in float32.
_NO_PROBABILITY = -1e9


def _row_weights(mask: Any, like: Any) -> Any:
    """``mask`` (the leading axes of ``like``) broadcast to ``like``'s shape, as float32 (shapes may be dynamic)."""
    mask = ops.cast(mask, "float32")
    while len(mask.shape) < len(like.shape):
        mask = ops.expand_dims(mask, -1)
    return mask * ops.ones_like(like, dtype="float32")


def _masked_mean(values: Any, weights: Any) -> Any:
    return ops.sum(values * weights) / ops.maximum(ops.sum(weights), 1.0)


def soft_target_loss(
    teacher: Any, student: Any, temperature: float = 2.0, *, axis: int = -1, weights: Any = None
) -> Any:
    """``KL(softmax(teacher / T) || softmax(student / T)) * T**2`` over ``axis``, averaged over the other positions
    (weighted by ``weights``, 1 for a row that counts and 0 for one that does not, of the rows' shape)."""
    teacher = ops.moveaxis(ops.cast(teacher, "float32"), axis, -1) / temperature
    student = ops.moveaxis(ops.cast(student, "float32"), axis, -1) / temperature
    teacher_log = ops.log_softmax(teacher, axis=-1)
    divergence = ops.sum(ops.exp(teacher_log) * (teacher_log - ops.log_softmax(student, axis=-1)), axis=-1)
    if weights is None:
        weights = ops.ones_like(divergence)
    return _masked_mean(divergence, ops.cast(weights, "float32")) * temperature**2


def target_loss(
    target: DistillationTarget, teacher: Any, student: Any, attention_mask: Any, temperature: float = 2.0
) -> Any:
    """The loss `target` declares between one teacher output and the student's, with padding masked out."""
    teacher, student = ops.cast(teacher, "float32"), ops.cast(student, "float32")
    if target.kind == "regression":
        error = ops.square(student - teacher)
        if target.tokens == "none":
            return ops.mean(error)
        return _masked_mean(error, _row_weights(attention_mask, error))
    if target.tokens == "none":
        return soft_target_loss(teacher, student, temperature, axis=target.axis)
    if target.tokens == "classes":  # one distribution over the token axis: padding gets no probability
        real = ops.cast(attention_mask, "bool")
        teacher = ops.where(real, teacher, _NO_PROBABILITY)
        student = ops.where(real, student, _NO_PROBABILITY)
        return soft_target_loss(teacher, student, temperature, axis=target.axis)
    # "rows": each real token's distribution over `axis` is its own target
    rows = ops.take(ops.moveaxis(teacher, target.axis, -1), 0, axis=-1)
    return soft_target_loss(teacher, student, temperature, axis=target.axis, weights=_row_weights(attention_mask, rows))


def hidden_cosine_loss(teacher: Any, student: Any, attention_mask: Any) -> Any:
    """``1 - cos(student, teacher)`` between hidden-state vectors (last axis), averaged over real tokens."""
    teacher, student = ops.cast(teacher, "float32"), ops.cast(student, "float32")
    dot = ops.sum(teacher * student, axis=-1)
    norms = ops.sqrt(
        (ops.sum(ops.square(teacher), axis=-1) + _COSINE_EPSILON)
        * (ops.sum(ops.square(student), axis=-1) + _COSINE_EPSILON)
    )
    return _masked_mean(1.0 - dot / norms, _row_weights(attention_mask, dot))


class SoftTargetDistillation(keras.distillation.DistillationLoss):
    """One head output's declared `DistillationTarget`, as a Keras ``DistillationLoss``: ``compute_loss`` takes
    that output of the teacher and of the student and the batch's ``attention_mask``."""

    def __init__(self, output: str, target: DistillationTarget, temperature: float = 2.0) -> None:
        self.output, self.target, self.temperature = output, target, float(temperature)

    def compute_loss(self, teacher_outputs: Any, student_outputs: Any, **kwargs: Any) -> Any:
        return target_loss(self.target, teacher_outputs, student_outputs, kwargs["attention_mask"], self.temperature)

    def validate_outputs(self, teacher_outputs: Any, student_outputs: Any) -> None:
        known = zip(teacher_outputs.shape[1:], student_outputs.shape[1:])
        if len(teacher_outputs.shape) != len(student_outputs.shape) or any(
            t is not None and s is not None and t != s for t, s in known
        ):
            raise ValueError(
                f"The teacher's output {self.output!r} has shape {tuple(teacher_outputs.shape)} and the student's "
                f"{tuple(student_outputs.shape)}; soft targets need the same shape (same labels, same vocabulary)."
            )


class HiddenCosineDistillation(keras.distillation.DistillationLoss):
    """The cosine loss between the teacher's and the student's last hidden states, padding masked out."""

    def compute_loss(self, teacher_outputs: Any, student_outputs: Any, **kwargs: Any) -> Any:
        return hidden_cosine_loss(teacher_outputs, student_outputs, kwargs["attention_mask"])

    def validate_outputs(self, teacher_outputs: Any, student_outputs: Any) -> None:
        if teacher_outputs.shape[-1] != student_outputs.shape[-1]:
            raise ValueError(
                f"Hidden states of size {teacher_outputs.shape[-1]} (teacher) and {student_outputs.shape[-1]} "
                "(student) cannot be compared; the distiller projects the student's when the sizes differ."
            )


__all__ = [
    "HiddenCosineDistillation",
    "SoftTargetDistillation",
    "hidden_cosine_loss",
    "soft_target_loss",
    "target_loss",
]
