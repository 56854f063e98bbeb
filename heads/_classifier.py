"""The pooled [CLS] classifier that both the sentiment and the pairwise heads are."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import keras
import numpy as np
from keras import ops
from pydantic import BaseModel, Field, field_validator, model_validator

from distilbert_heads import metrics
from distilbert_heads.encoder.config import MAX_CLASSES, check_size_limit
from distilbert_heads.heads._common import check_hidden_shape, class_names, first_row_per_sample, softmax_np
from distilbert_heads.heads._hf_weights import dense_weights, hf_label_maps, load_dense_layers
from distilbert_heads.heads._labels import (
    check_predictions,
    class_index,
    predicted_label,
    predicted_score,
    regression_target,
)
from distilbert_heads.losses import MaskedSparseCategoricalCrossentropy
from distilbert_heads.plugins.head import DistillationTarget, HeadOptions, HeadOptionsError, TaskHead
from distilbert_heads.plugins.input_kinds import input_kind_of


# -- the pooled [CLS] classifier ------------------------------------------------------------
class ClassificationOptions(HeadOptions):
    """Options of a classifier over classes with optional names (``num_classes=1``: regression)."""

    num_classes: int | None = Field(default=None, ge=1, description="Classes; 1 means a regression score.")
    labels: list[str] | None = Field(default=None, description="Class names in index order.")

    @field_validator("num_classes")
    @classmethod
    def _bounded(cls, value: int | None) -> int | None:
        return value if value is None else check_size_limit(value, MAX_CLASSES)

    @field_validator("labels")
    @classmethod
    def _bounded_labels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            check_size_limit(len(value), MAX_CLASSES)
        return value

    @model_validator(mode="after")
    def _labels_match(self) -> ClassificationOptions:
        if self.labels is not None:
            if not self.labels:
                raise ValueError("labels is empty; give one name per class or leave labels unset")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError(f"labels has duplicate names: {self.labels}; each class needs its own name")
            if self.num_classes is not None and len(self.labels) != self.num_classes:
                raise ValueError(
                    f"labels has {len(self.labels)} names but num_classes is {self.num_classes}; "
                    "give one name per class or drop num_classes to infer it from labels"
                )
        return self


class PooledClassifierOptions(ClassificationOptions):
    dropout_rate: float = Field(default=0.2, ge=0.0, lt=1.0, description="HF seq_classif_dropout.")
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0, description="Classification only.")


class PooledClassifierHead(TaskHead):
    """Hugging Face ``DistilBertForSequenceClassification``'s head, shared by sentiment and pairwise.

    ``hidden_states[:, 0]`` -> ``pre_classifier`` Dense(D) -> ReLU -> dropout -> ``classifier``
    Dense(num_classes). ``num_classes == 1`` makes it a regression head (MSE loss, raw score).
    Subclasses set the class attributes and `resolve_options`.
    """

    options_schema: ClassVar[type[HeadOptions]] = PooledClassifierOptions
    output_names: ClassVar[tuple[str, ...]] = ("logits",)
    hf_architecture: ClassVar[str | None] = "DistilBertForSequenceClassification"

    def __init__(self, hidden_size: int, task_type: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        try:
            resolved = self.resolve_options(self.options.model_dump())
            self.options = self.options_schema(**resolved)
        except ValueError as error:
            raise HeadOptionsError(f"{type(self).__name__} (task type {self.task_type}): {error}") from error
        if self.num_classes == 1 and self.options.label_smoothing:
            raise HeadOptionsError(
                f"{type(self).__name__} (task type {self.task_type}): label_smoothing={self.options.label_smoothing} "
                "only applies to classification, but num_classes=1 makes this a regression head. "
                "Drop label_smoothing or use num_classes >= 2."
            )
        self.pre_classifier = keras.layers.Dense(
            self.hidden_size, activation="relu", name="pre_classifier", dtype=self.dtype_policy
        )
        self.dropout = keras.layers.Dropout(self.options.dropout_rate, name="dropout", dtype=self.dtype_policy)
        self.classifier = keras.layers.Dense(self.num_classes, name="classifier", dtype=self.dtype_policy)

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Fill in the task-dependent defaults (num_classes, labels); raise ValueError on conflicts."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return int(self.options.num_classes)

    @property
    def is_regression(self) -> bool:
        return self.num_classes == 1

    @property
    def class_names(self) -> list[str]:
        return class_names(self.options.labels, self.num_classes)

    def build(self, input_shape: Any = None) -> None:
        check_hidden_shape(self, input_shape)
        self.pre_classifier.build((None, self.hidden_size))
        self.classifier.build((None, self.hidden_size))
        self.built = True

    def call(self, hidden_states: Any, attention_mask: Any = None, training: bool | None = None) -> dict[str, Any]:
        # Position 0 is [CLS]; the encoder attends over the mask already, so it is unused here.
        pooled = self.pre_classifier(hidden_states[:, 0, :])
        pooled = self.dropout(pooled, training=training)
        return {"logits": self.classifier(pooled)}

    def default_losses(self) -> dict[str, Any]:
        if self.is_regression:
            return {"logits": keras.losses.MeanSquaredError()}
        if self.options.label_smoothing:
            return {
                "logits": MaskedSparseCategoricalCrossentropy(
                    ignore_index=None, label_smoothing=self.options.label_smoothing
                )
            }
        return {"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}

    def default_metrics(self) -> dict[str, list[Any]]:
        if self.is_regression:
            return {"logits": [keras.metrics.MeanAbsoluteError(name="mae")]}
        return {"logits": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}

    def distillation_targets(self) -> dict[str, DistillationTarget]:
        """Soft targets over the classes (one per example); a regression head (one output) matches the
        teacher's score with mean squared error."""
        if self.is_regression:
            return {"logits": DistillationTarget(kind="regression")}
        return {"logits": DistillationTarget(kind="logits", axis=-1)}

    def decode(
        self,
        outputs: Mapping[str, Any],
        encoding: Any = None,
        *,
        top_k: int | None = None,
        texts: Sequence[str] | None = None,
        pairs: Sequence[tuple[str, str]] | None = None,
    ) -> list[Any]:
        """Per input ``{"label", "score"}`` (softmax probability), or the ``top_k`` best as a list.

        Regression heads return ``{"score"}``, the raw predicted value. ``texts`` / ``pairs``
        (what the pipeline passes) are not needed to classify. When ``encoding`` holds several
        windows of one input (``overflow_to_sample``), the input's first window decides.
        """
        if top_k is not None:
            if self.is_regression:
                raise ValueError(
                    f"top_k={top_k!r} ranks class labels, but head {self.name!r} is a regression head (one score per "
                    "input); leave top_k out."
                )
            if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
                raise ValueError(
                    f"top_k must be a positive integer (how many of the {len(self.class_names)} labels to return per "
                    f"input, best first), got {top_k!r}; leave it out for the single best label."
                )
        logits = np.asarray(ops.convert_to_numpy(outputs["logits"]), dtype=np.float32)
        logits = logits.reshape(len(logits), -1)[first_row_per_sample(encoding, len(logits))]
        if self.is_regression:
            return [{"score": float(row[0])} for row in logits]
        probs = softmax_np(logits)
        names = self.class_names
        results: list[Any] = []
        for row in probs:
            order = np.argsort(-row, kind="stable")
            ranked = [{"label": names[i], "score": float(row[i])} for i in order]
            results.append(ranked[: int(top_k)] if top_k is not None else ranked[0])
        return results

    # -- training and evaluating from files ----------------------------------------------------
    def label_targets(self, examples: Sequence[Any]) -> np.ndarray:
        """Class ids (int32) or, for regression, float32 targets; shape (N,)."""
        if self.is_regression:
            return np.array(
                [regression_target(ex.label, f"example {i}") for i, ex in enumerate(examples)], dtype=np.float32
            )
        names = self.class_names
        return np.array([class_index(ex.label, names, f"example {i}") for i, ex in enumerate(examples)], dtype=np.int32)

    def encode_examples(
        self, examples: Sequence[BaseModel], tokenizer: Any, max_length: int
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The examples packed by the head's input kind (token ids padded to the longest example,
        truncated to ``max_length``) and ``{"logits": targets}``."""
        targets = self.label_targets(examples)
        kind = input_kind_of(self)
        return kind.model_inputs(kind.encode_rows(tokenizer, examples, max_length)), {"logits": targets}

    chance_description: ClassVar[str] = "always the most common label"

    def chance_predictions(self, examples: Sequence[BaseModel], seed: int = 0) -> list[Any]:
        """What guessing gives: the most common label for every example."""
        majority, _ = Counter(str(example.label) for example in examples).most_common(1)[0]
        return [{"label": majority, "score": 1.0} for _ in examples]

    def evaluate(self, examples: Sequence[BaseModel], predictions: Sequence[Any]) -> dict[str, float]:
        """Classification: ``accuracy`` and ``macro_f1`` over class names. Regression: ``pearson``,
        ``spearman`` and ``mse``. ``predictions`` are `decode`'s answers, one per example."""
        check_predictions(examples, predictions)
        if self.is_regression:
            gold = [regression_target(ex.label, f"example {i}") for i, ex in enumerate(examples)]
            guess = [predicted_score(p) for p in predictions]
            return {
                "pearson": metrics.pearson(gold, guess),
                "spearman": metrics.spearman(gold, guess),
                "mse": float(np.mean((np.asarray(gold) - np.asarray(guess)) ** 2)) if gold else 0.0,
            }
        names = self.class_names
        gold_names = [names[class_index(ex.label, names, f"example {i}")] for i, ex in enumerate(examples)]
        guessed = [predicted_label(p) for p in predictions]
        guessed = [names[g] if isinstance(g, (int, np.integer)) and 0 <= g < len(names) else str(g) for g in guessed]
        return {"accuracy": metrics.accuracy(gold_names, guessed), "macro_f1": metrics.macro_f1(gold_names, guessed)}

    def load_hf_head_weights(self, state_dict: Mapping[str, Any]) -> bool:
        if not any(key.startswith("pre_classifier.") for key in state_dict):
            return False
        if not self.built:
            self.build((None, None, self.hidden_size))
        head_name = f"{type(self).__name__} (task type {self.task_type})"
        load_dense_layers(
            [(self.pre_classifier, "pre_classifier"), (self.classifier, "classifier")], state_dict, head_name
        )
        return True

    def hf_head_weights(self) -> dict[str, np.ndarray]:
        if not self.built:
            return {}
        return {**dense_weights(self.pre_classifier, "pre_classifier"), **dense_weights(self.classifier, "classifier")}

    def hf_config(self) -> dict[str, Any]:
        """Labels (``LABEL_0`` for a regression score, as `transformers` names it) and, with one output,
        ``problem_type="regression"``, so its pipeline returns the raw score rather than a sigmoid."""
        config = {**hf_label_maps(self.class_names), "seq_classif_dropout": self.options.dropout_rate}
        if self.is_regression:
            config["problem_type"] = "regression"
        return config
