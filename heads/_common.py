"""Small helpers the built-in heads share: shape checks, class names, softmax, rows per sample.

The heads' other shared parts have modules of their own: `_classifier` (the pooled [CLS]
classifier), `_labels` (label rules of file rows), `_hf_weights` (Hugging Face Linear <-> Keras
Dense), and `distilbert_heads.losses` (the -100-masked loss and accuracy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from distilbert_heads.plugins.head import TaskHead


def large_negative(dtype: Any) -> float:
    """A finite logit that loses every softmax, representable in ``dtype`` (float16 included)."""
    return -6.0e4 if keras.backend.standardize_dtype(dtype) == "float16" else -1.0e9


def check_hidden_shape(head: TaskHead, input_shape: Sequence[int | None] | None) -> None:
    """Fail early and clearly if the hidden states are not (B, L, hidden_size)."""
    if input_shape is None:
        return
    shape = tuple(input_shape)
    if len(shape) != 3 or (shape[-1] is not None and shape[-1] != head.hidden_size):
        raise ValueError(
            f"{type(head).__name__} '{head.name}' expects hidden states shaped (batch, length, {head.hidden_size}) "
            f"but got {shape}. Pass the encoder's last_hidden_state and build the head with "
            "hidden_size equal to the encoder's hidden size."
        )


def class_names(labels: Sequence[str] | None, num_classes: int) -> list[str]:
    """The given names, or Hugging Face's ``LABEL_i`` defaults."""
    return list(labels) if labels else [f"LABEL_{i}" for i in range(num_classes)]


def encoding_field(encoding: Any, name: str) -> Any:
    """``encoding[name]`` for a dict-like encoding, ``encoding.name`` otherwise; None if absent."""
    if encoding is None:
        return None
    if isinstance(encoding, Mapping):
        return encoding.get(name)
    return getattr(encoding, name, None)


def softmax_np(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def first_row_per_sample(encoding: Any, rows: int) -> list[int]:
    """Row indices holding each input's first window (all rows when there are no windows)."""
    samples = encoding_field(encoding, "overflow_to_sample")
    if not samples or len(samples) != rows:
        return list(range(rows))
    first: dict[int, int] = {}
    for row, sample in enumerate(samples):
        first.setdefault(int(sample), row)
    return [first[sample] for sample in sorted(first)]
