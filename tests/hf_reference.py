"""Reference checkpoints made with `transformers` on random-init configs, for parity tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

torch = __import__("pytest").importorskip("torch")
transformers = __import__("pytest").importorskip("transformers")


def make_hf_model(model_class: str = "DistilBertModel", seed: int = 0, **config: Any):
    """A random-init `transformers` DistilBERT in eval mode."""
    torch.manual_seed(seed)
    defaults = dict(vocab_size=97, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)
    hf_config = transformers.DistilBertConfig(**{**defaults, **config})
    return getattr(transformers, model_class)(hf_config).eval()


def save_hf_model(model, directory: Path, safe_serialization: bool = True) -> Path:
    model.save_pretrained(directory, safe_serialization=safe_serialization)
    return directory


def hf_forward(model, input_ids: np.ndarray, attention_mask: np.ndarray, output_hidden_states: bool = False):
    with torch.no_grad():
        return model(
            input_ids=torch.from_numpy(input_ids).long(),
            attention_mask=torch.from_numpy(attention_mask).long(),
            output_hidden_states=output_hidden_states,
        )


def random_batch(vocab_size: int, batch: int = 3, length: int = 11, padding: str = "right", seed: int = 1):
    """Ids and a mask with rows of different lengths, padded on the given side; one row is full."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab_size, size=(batch, length)).astype("int32")
    mask = np.zeros((batch, length), dtype="int32")
    for row in range(batch):
        keep = length - (row * 3) % length
        if padding == "right":
            mask[row, :keep] = 1
        else:
            mask[row, length - keep :] = 1
    ids[mask == 0] = 0
    return ids, mask
