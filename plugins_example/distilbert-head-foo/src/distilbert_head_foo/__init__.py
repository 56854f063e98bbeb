"""distilbert-head-foo: multi-label tagging for distilbert-heads (task type ``"foo"``).

Every example may carry any number of labels (topics, content flags, tags): the head puts an
independent sigmoid on each label, trains with binary cross-entropy, and `decode` returns
every label whose probability reaches ``threshold``. The built-in heads pick exactly one
class per example; this one picks zero or more.

Installed, it is found through the ``distilbert_heads`` entry point in ``pyproject.toml``::

    from distilbert_heads import create_distilbert_with_head
    model = create_distilbert_with_head(task_type="foo", labels=["sports", "politics", "tech"])
    model.compile()                                  # BCE + binary accuracy by default
    model.fit(inputs, multi_hot_labels)              # float 0/1, shape (batch, num_labels)
    model.heads["foo"].decode(model.predict(inputs)["foo"])

It uses only the public API of distilbert-heads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import keras
import numpy as np
from keras import ops
from pydantic import BaseModel, Field, field_validator, model_validator

from distilbert_heads import DistillationTarget, HeadOptions, TaskHead, hookimpl
from distilbert_heads.metrics import micro_scores

__version__ = "0.1.0"
__all__ = ["FooExample", "FooHead", "FooOptions", "register_heads"]


class FooOptions(HeadOptions):
    """Options of `FooHead`.

    num_classes: number of labels (``num_labels`` in NLPTaskConfig); inferred from ``labels``.
    labels: label names in index order.
    threshold: a label is predicted when its probability is at least this.
    pooling: ``"cls"`` (the [CLS] vector) or ``"mean"`` (mean of the unpadded tokens).
    dropout_rate: dropout on the pooled vector while training.
    """

    num_classes: int | None = Field(default=None, ge=1)
    labels: list[str] | None = None
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    pooling: Literal["cls", "mean"] = "cls"
    dropout_rate: float = Field(default=0.1, ge=0.0, lt=1.0)

    @model_validator(mode="before")
    @classmethod
    def _count_from_labels(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("labels") and data.get("num_classes") is None:
            data = {**data, "num_classes": len(data["labels"])}
        return data

    @model_validator(mode="after")
    def _labels_and_count(self) -> FooOptions:
        if self.num_classes is None:
            raise ValueError("the foo head needs its labels: pass labels=[...] or num_classes=N")
        if self.labels is not None:
            if not self.labels or len(set(self.labels)) != len(self.labels):
                raise ValueError(f"labels must be distinct, non-empty names; got {self.labels}")
            if self.num_classes != len(self.labels):
                raise ValueError(
                    f"labels has {len(self.labels)} names but num_classes is {self.num_classes}; "
                    "give one name per label or drop num_classes"
                )
        return self


class FooExample(BaseModel):
    """One training row: ``{"text": "...", "labels": ["sports", "tech"]}`` (CSV: ``sports tech``)."""

    text: str = Field(min_length=1)
    labels: list[str] = Field(default_factory=list)

    @field_validator("labels", mode="before")
    @classmethod
    def _split_cell(cls, value: Any) -> Any:
        if isinstance(value, str):  # a CSV cell: labels separated by spaces or commas
            return [part for part in re.split(r"[\s,]+", value) if part]
        return value


class FooHead(TaskHead):
    """Multi-label tagging: ``logits`` (batch, num_labels), one independent sigmoid per label."""

    task_types: ClassVar[tuple[str, ...]] = ("foo",)
    aliases: ClassVar[tuple[str, ...]] = ("multi_label",)
    description: ClassVar[str] = "Multi-label tagging: a sigmoid per label on [CLS] or mean pooling"
    options_schema: ClassVar[type[HeadOptions]] = FooOptions
    output_names: ClassVar[tuple[str, ...]] = ("logits",)
    label_format: ClassVar[str] = "logits: multi-hot float 0/1 targets, shape (batch, num_labels)"
    input_kind: ClassVar[str] = "text"
    example_schema: ClassVar[type[BaseModel]] = FooExample

    def __init__(self, hidden_size: int, task_type: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        self.dropout = keras.layers.Dropout(self.options.dropout_rate, name="dropout")
        self.classifier = keras.layers.Dense(self.options.num_classes, name="classifier")

    @property
    def label_names(self) -> list[str]:
        return list(self.options.labels or [f"LABEL_{i}" for i in range(self.options.num_classes)])

    def build(self, input_shape: Any = None) -> None:
        self.classifier.build((None, self.hidden_size))
        self.built = True

    def call(self, hidden_states: Any, attention_mask: Any, training: bool | None = None) -> dict[str, Any]:
        if self.options.pooling == "cls":
            pooled = hidden_states[:, 0, :]
        else:
            mask = ops.cast(attention_mask, hidden_states.dtype)[:, :, None]
            total = ops.sum(hidden_states * mask, axis=1)
            pooled = total / ops.maximum(ops.sum(mask, axis=1), 1.0)
        pooled = self.dropout(pooled, training=training)
        return {"logits": self.classifier(pooled)}

    def default_losses(self) -> dict[str, Any]:
        return {"logits": keras.losses.BinaryCrossentropy(from_logits=True)}

    def default_metrics(self) -> dict[str, list[Any]]:
        # On logits, "probability >= threshold" is "logit >= log(t / (1 - t))".
        t = self.options.threshold
        return {"logits": [keras.metrics.BinaryAccuracy(threshold=math.log(t / (1.0 - t)), name="binary_accuracy")]}

    def distillation_targets(self) -> dict[str, DistillationTarget]:
        """What a smaller student learns from a teacher with this head (task-specific distillation).

        Each label has its own sigmoid, so a softmax over the labels (``kind="logits"``) would make them
        compete; instead the student matches the teacher's logits with mean squared error (logit matching).
        A single-label head would declare ``{"logits": DistillationTarget(kind="logits", axis=-1)}``.
        """
        return {"logits": DistillationTarget(kind="regression")}

    def decode(self, outputs: Mapping[str, Any], encoding: Any = None) -> list[list[dict[str, Any]]]:
        """Per example, every label with probability >= threshold, most likely first."""
        logits = np.asarray(ops.convert_to_numpy(outputs["logits"]), dtype=np.float64)
        probs = 1.0 / (1.0 + np.exp(-logits))
        names = self.label_names
        results = []
        for row in probs:
            chosen = [i for i in np.argsort(-row, kind="stable") if row[i] >= self.options.threshold]
            results.append([{"label": names[i], "score": float(row[i])} for i in chosen])
        return results

    # -- training and evaluating from files (optional part of the contract) -------------------
    @classmethod
    def options_from_examples(cls, examples: Sequence[BaseModel]) -> dict[str, Any]:
        """The label names, in order of first appearance in the data."""
        names = dict.fromkeys(label for example in examples for label in example.labels)
        return {"labels": list(names)} if names else {}

    def encode_examples(
        self, examples: Sequence[BaseModel], tokenizer: Any, max_length: int
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Tokenized texts and multi-hot label rows."""
        index = {name: i for i, name in enumerate(self.label_names)}
        targets = np.zeros((len(examples), len(index)), dtype="float32")
        for row, example in enumerate(examples):
            for label in example.labels:
                if label not in index:
                    raise ValueError(
                        f"example {row}: label {label!r} is not one of this head's labels {list(index)}; "
                        "build the head with every label (labels=[...]) or fix the data"
                    )
                targets[row, index[label]] = 1.0
        encoding = tokenizer.encode([example.text for example in examples], max_length=max_length)
        return encoding.as_model_inputs(), {"logits": targets}

    def evaluate(self, examples: Sequence[BaseModel], predictions: Sequence[Any]) -> dict[str, float]:
        """Micro precision, recall and F1 over (example, label) pairs, and exact-set accuracy."""
        label_sets = [
            (set(example.labels), {item["label"] for item in predicted})
            for example, predicted in zip(examples, predictions, strict=True)
        ]
        scores = micro_scores(label_sets)
        return {
            "micro_precision": scores["precision"],
            "micro_recall": scores["recall"],
            "micro_f1": scores["f1"],
            "exact_match": sum(gold == chosen for gold, chosen in label_sets) / len(examples) if examples else 0.0,
        }


@hookimpl
def register_heads(register: Any) -> None:
    register(FooHead)
