"""distilbert-head-embed: sentence embeddings trained with in-batch negatives (task type ``"sentence_embedding"``).

A test plugin, and the short example for plugin authors, of a head with its own input kind.
Training rows are paraphrase pairs ``{"text_a": ..., "text_b": ...}``; each is packed as two
encoder rows, (B, 2, L), so a pair always shares its batch. The loss treats every other b in
the batch as a negative for a (InfoNCE). A pipeline call embeds texts, (B, 1, L)::

    embed = distilbert_heads.pipeline("embed.keras")
    embed(["A man plays guitar.", "Someone strums a guitar."])   # two lists of floats
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops
from pydantic import BaseModel, Field

from distilbert_heads import HeadOptions, TaskHead, hookimpl
from distilbert_heads.plugins.input_kinds import InputKind

__version__ = "0.1.0"
__all__ = ["EmbeddingHead", "InBatchContrastiveLoss", "ParaphraseExample", "TextsKind", "register_heads"]


class TextsKind(InputKind):
    """An item is a tuple of texts embedded side by side: (text,) from a pipeline, (a, b) to train."""

    name = "texts"
    fields = ("text_a", "text_b")
    decode_keywords = ("texts",)
    description = "a text or a list of texts (training rows: text_a, text_b paraphrase pairs)"
    rows_per_example = 2

    # item_from_row, show and decode_context: InputKind's defaults ((text_a, text_b) from a row; {"texts": items})
    def items_from_call(self, inputs: Any, keywords: Mapping[str, Any]) -> tuple[list[tuple[str, ...]], bool]:
        single = isinstance(inputs, str) or (isinstance(inputs, tuple) and all(isinstance(t, str) for t in inputs))
        raw = [inputs] if single else list(inputs) if isinstance(inputs, (list, tuple)) else None
        items = [(value,) if isinstance(value, str) else value for value in raw or ()]
        if (
            keywords
            or raw is None
            or not all(isinstance(i, tuple) and i and all(isinstance(t, str) for t in i) for i in items)
        ):
            raise TypeError(f"An embedding pipeline takes {self.description}, got {inputs!r:.80}.")
        if len({len(item) for item in items}) > 1:
            raise ValueError("mix of single texts and pairs in one call; embed them in separate calls.")
        return items, single

    def encode(self, tokenizer: Any, items: Sequence[tuple[str, ...]], max_length: int, *, stride: Any = None) -> Any:
        encoding = tokenizer.encode([text for item in items for text in item], max_length=max_length)
        encoding.overflow_to_sample = [i for i, item in enumerate(items) for _ in item]  # row -> its item
        return encoding

    def model_inputs(self, encoding: Any) -> dict[str, np.ndarray]:
        rows, length = encoding.input_ids.shape
        examples = max(encoding.overflow_to_sample, default=-1) + 1
        return {
            key: value.reshape(examples, rows // max(examples, 1), length)
            for key, value in encoding.as_model_inputs().items()
        }


class ParaphraseExample(BaseModel):
    text_a: str = Field(min_length=1)
    text_b: str = Field(min_length=1)


@keras.saving.register_keras_serializable(package="distilbert_head_embed")
class InBatchContrastiveLoss(keras.losses.Loss):
    """InfoNCE over a batch of (a, b) embeddings (B, 2, E): a_i's positive is b_i, every other b_j a negative."""

    def __init__(self, scale: float = 20.0, name: str = "in_batch_contrastive", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.scale = float(scale)

    def call(self, y_true: Any, y_pred: Any) -> Any:  # y_true is unused: the targets are the diagonal
        logits = ops.matmul(y_pred[:, 0, :], ops.transpose(y_pred[:, 1, :])) * self.scale
        targets = ops.arange(ops.shape(logits)[0])
        return keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale}


class EmbeddingOptions(HeadOptions):
    embedding_size: int = Field(default=32, ge=1)
    scale: float = Field(default=20.0, gt=0.0)  # 1 / temperature of the contrastive softmax


class EmbeddingHead(TaskHead):
    """Mean-pooled, projected, L2-normalised embeddings (B, n, E), one per encoder row of an example."""

    task_types = ("sentence_embedding",)
    aliases = ("embed",)
    description = "Sentence embeddings trained on paraphrase pairs with in-batch negatives"
    options_schema = EmbeddingOptions
    output_names = ("embeddings",)
    label_format = "none: the other pairs in the batch are the negatives"
    input_kind = TextsKind()
    example_schema = ParaphraseExample

    def __init__(self, hidden_size: int, task_type: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        self.projection = keras.layers.Dense(self.options.embedding_size, name="projection")

    def build(self, input_shape: Any = None) -> None:
        self.projection.build((None, self.hidden_size))
        self.built = True

    def call(self, hidden_states: Any, attention_mask: Any, training: bool | None = None) -> dict[str, Any]:
        mask = ops.cast(attention_mask, hidden_states.dtype)[..., None]  # (B, n, L, 1)
        pooled = ops.sum(hidden_states * mask, axis=-2) / ops.maximum(ops.sum(mask, axis=-2), 1.0)
        projected = self.projection(pooled)
        return {"embeddings": projected / ops.sqrt(ops.sum(projected**2, axis=-1, keepdims=True) + 1e-12)}

    def default_losses(self) -> dict[str, Any]:
        return {"embeddings": InBatchContrastiveLoss(self.options.scale)}

    def decode(self, outputs: Mapping[str, Any], encoding: Any = None) -> list[Any]:
        """Per example its embedding as a list of floats; a pair gives a list of two."""
        vectors = np.asarray(ops.convert_to_numpy(outputs["embeddings"]), dtype=np.float64).tolist()
        return [rows[0] if len(rows) == 1 else rows for rows in vectors]

    def encode_examples(
        self, examples: Sequence[ParaphraseExample], tokenizer: Any, max_length: int
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        inputs = self.input_kind.model_inputs(self.input_kind.encode_rows(tokenizer, examples, max_length))
        return inputs, {"embeddings": np.zeros(len(examples), dtype="float32")}  # placeholder targets

    def evaluate(self, examples: Sequence[ParaphraseExample], predictions: Sequence[Any]) -> dict[str, float]:
        """Retrieval accuracy: how often a_i's nearest b among all the examples' b is b_i."""
        a, b = (np.array([pair[side] for pair in predictions]) for side in (0, 1))
        nearest = np.argmax(a @ b.T, axis=1) if len(examples) else np.array([])
        return {"accuracy": float(np.mean(nearest == np.arange(len(examples)))) if len(examples) else 0.0}


@hookimpl
def register_heads(register: Any) -> None:
    register(EmbeddingHead)
