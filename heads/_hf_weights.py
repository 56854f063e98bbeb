"""Hugging Face Linear weights <-> Keras Dense layers, for heads' task checkpoints in and out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops


# -- Hugging Face head weights -------------------------------------------------------------
def to_numpy(value: Any) -> np.ndarray:
    """A state-dict value (numpy array or torch tensor) as a float32 numpy array."""
    if hasattr(value, "detach"):  # torch tensor, possibly requiring grad
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def read_dense(
    dense: keras.layers.Dense, state_dict: Mapping[str, Any], prefix: str, head_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Torch ``nn.Linear`` weights ``{prefix}.weight`` (out, in) / ``.bias`` as a checked Keras
    (kernel, bias) pair for ``dense``; nothing is assigned yet, so callers can check every layer first."""
    missing = [f"{prefix}.{part}" for part in ("weight", "bias") if f"{prefix}.{part}" not in state_dict]
    if missing:
        raise ValueError(
            f"{head_name}: the checkpoint has some of this head's weights but not {', '.join(missing)}; "
            "it looks truncated or from another architecture. Use a complete Hugging Face task "
            "checkpoint, or load only the encoder and train the head from scratch."
        )
    not_float = [
        f"{prefix}.{part} ({np.asarray(state_dict[f'{prefix}.{part}']).dtype})"
        for part in ("weight", "bias")
        if not hasattr(state_dict[f"{prefix}.{part}"], "detach")
        and np.asarray(state_dict[f"{prefix}.{part}"]).dtype.kind != "f"
    ]
    if not_float:
        raise ValueError(
            f"{head_name}: the checkpoint stores {', '.join(not_float)} as non-floating-point values; weights are "
            "floats, so the checkpoint is corrupt. Use the original checkpoint."
        )
    kernel = to_numpy(state_dict[f"{prefix}.weight"]).T
    bias = to_numpy(state_dict[f"{prefix}.bias"])
    expected = tuple(dense.kernel.shape)
    if kernel.shape != expected or bias.shape != (expected[1],):
        raise ValueError(
            f"{head_name}: checkpoint weight {prefix}.weight has shape {kernel.T.shape} (out, in) and {prefix}.bias "
            f"has shape {bias.shape}, but this head expects {(expected[1], expected[0])} and {(expected[1],)}. "
            "The output size is the number of classes: build the head with num_classes (or labels) matching the "
            "checkpoint, and a hidden size equal to the encoder's."
        )
    return kernel, bias


def load_dense_layers(
    pairs: Sequence[tuple[keras.layers.Dense, str]], state_dict: Mapping[str, Any], head_name: str
) -> None:
    """Check all ``(dense, hf_prefix)`` pairs against ``state_dict``, then assign them."""
    arrays = [read_dense(dense, state_dict, prefix, head_name) for dense, prefix in pairs]
    for (dense, _), (kernel, bias) in zip(pairs, arrays):
        dense.kernel.assign(kernel)
        dense.bias.assign(bias)


def dense_weights(dense: keras.layers.Dense, prefix: str) -> dict[str, np.ndarray]:
    """``dense`` under Hugging Face names and torch layout (weight is (out, in))."""
    return {
        f"{prefix}.weight": np.ascontiguousarray(ops.convert_to_numpy(dense.kernel).T),
        f"{prefix}.bias": np.asarray(ops.convert_to_numpy(dense.bias)),
    }


def hf_label_maps(names: Sequence[str]) -> dict[str, Any]:
    """``config.json``'s ``id2label`` (keys are strings, as JSON needs) and ``label2id`` for class ``names``."""
    return {
        "id2label": {str(index): name for index, name in enumerate(names)},
        "label2id": {name: index for index, name in enumerate(names)},
    }
