"""Heads for tests/test_head_contract.py, registered through a throwaway dist-info (see that file).

* ``two_outputs``: a sentence output ``a`` (B, 2) and a token output ``b`` (B, L, 3), each from its
  own Dense layer, with per-output loss weights taken from its options.
* ``loss_only``: a text classifier that trains from files but has no ``evaluate``.
* ``clashing``: options named like an encoder field, a task-level field and NLPTaskConfig fields.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from pydantic import BaseModel, Field

from distilbert_heads import HeadOptions, TaskHead, hookimpl, losses


class TwoOutputOptions(HeadOptions):
    weight_a: Any = None  # unchecked here, so tests can hand the model bad weights
    weight_b: Any = None


class TwoOutputHead(TaskHead):
    task_types = ("two_outputs",)
    options_schema = TwoOutputOptions
    output_names = ("a", "b")

    def __init__(self, hidden_size: int, task_type: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        self.dense_a = keras.layers.Dense(2, name="dense_a")
        self.dense_b = keras.layers.Dense(3, name="dense_b")

    def call(self, hidden_states: Any, attention_mask: Any, training: bool | None = None) -> dict[str, Any]:
        return {"a": self.dense_a(hidden_states[:, 0, :]), "b": self.dense_b(hidden_states)}

    def default_losses(self) -> dict[str, Any]:
        return {
            "a": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "b": losses.MaskedSparseCategoricalCrossentropy(),
        }

    def default_loss_weights(self) -> dict[str, float]:
        weights = {"a": self.options.weight_a, "b": self.options.weight_b}
        return {key: value for key, value in weights.items() if value is not None}


class LossOnlyExample(BaseModel):
    text: str
    label: int


class LossOnlyHead(TaskHead):
    """Trains from files (example_schema + encode_examples) but implements neither evaluate nor decode."""

    task_types = ("loss_only",)
    output_names = ("logits",)
    example_schema = LossOnlyExample

    def __init__(self, hidden_size: int, task_type: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        self.dense = keras.layers.Dense(2, name="dense")

    def call(self, hidden_states: Any, attention_mask: Any, training: bool | None = None) -> dict[str, Any]:
        return {"logits": self.dense(hidden_states[:, 0, :])}

    def default_losses(self) -> dict[str, Any]:
        return {"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}

    def encode_examples(self, examples: Any, tokenizer: Any, max_length: int) -> tuple[dict, dict]:
        encoding = tokenizer.encode([example.text for example in examples], max_length=max_length)
        return encoding.as_model_inputs(), {"logits": np.array([example.label for example in examples], "int32")}


class ClashingOptions(HeadOptions):
    dropout_rate: float = 0.0  # a DistilBertConfig field
    max_length: int = 8  # a task-level NLPTaskConfig field
    temperature: float = Field(default=1.0, ge=0.0)  # NLPTaskConfig's is > 0
    labels: list[dict[str, str]] = []  # NLPTaskConfig's is a list of names


class ClashingHead(TaskHead):
    task_types = ("clashing",)
    options_schema = ClashingOptions
    output_names = ("logits",)

    def __init__(self, hidden_size: int, task_type: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        self.dense = keras.layers.Dense(1, name="dense")

    def call(self, hidden_states: Any, attention_mask: Any, training: bool | None = None) -> dict[str, Any]:
        return {"logits": self.dense(hidden_states[:, 0, :])}

    def default_losses(self) -> dict[str, Any]:
        return {"logits": keras.losses.MeanSquaredError()}


@hookimpl
def register_heads(register: Any) -> None:
    for head in (TwoOutputHead, LossOnlyHead, ClashingHead):
        register(head)
