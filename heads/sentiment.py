"""Sequence classification (sentiment, topics, intents, ...) and sequence regression.

The head is Hugging Face's ``DistilBertForSequenceClassification`` head, weight for weight:
``hidden_states[:, 0]`` -> ``pre_classifier`` Dense(D) -> ReLU -> dropout -> ``classifier``
Dense(num_classes), so its checkpoints load here and give the same logits.

File rows (JSONL or CSV with a header): ``{"text": "Great film!", "label": "positive"}``. The
label is a class name, a class index (0, 1, ...) or, for regression, a number; CSV cells that
are numbers are read as numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import keras
from pydantic import BaseModel, field_validator

from distilbert_heads.heads._classifier import PooledClassifierHead, PooledClassifierOptions
from distilbert_heads.heads._labels import Label, coerce_label, label_options
from distilbert_heads.plugins.head import HeadOptions
from distilbert_heads.plugins.hookspecs import hookimpl
from distilbert_heads.plugins.input_kinds import TEXT, InputKind
from distilbert_heads.tasks import NLPTaskType

# Task types whose labels are a number, not a class: without num_classes/labels they default to 1.
REGRESSION_TASK_TYPES = frozenset(
    {
        NLPTaskType.TEXT_REGRESSION.value,
        NLPTaskType.READABILITY_SCORING.value,
        NLPTaskType.QUALITY_SCORING.value,
    }
)


class SentimentOptions(PooledClassifierOptions):
    """Options of `SentimentHead`.

    num_classes: classes (default 2; 1 for the regression task types); 1 means regression.
    labels: class names in index order; num_classes is inferred from them when not given.
    dropout_rate: dropout before the classifier (HF ``seq_classif_dropout``, 0.2).
    label_smoothing: smoothing of the sparse cross-entropy targets (classification only).
    """


class TextExample(BaseModel):
    """One row: ``text`` and its ``label`` (class name, class index, or a number for regression)."""

    text: str
    label: Label

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty; every row needs the text to classify")
        return value

    @field_validator("label", mode="before")
    @classmethod
    def _label(cls, value: Any) -> Any:
        return coerce_label(value)


@keras.saving.register_keras_serializable(package="distilbert_heads")
class SentimentHead(PooledClassifierHead):
    """Sequence classification on [CLS] (``num_classes >= 2``) or regression (``num_classes == 1``)."""

    task_types: ClassVar[tuple[str, ...]] = (
        NLPTaskType.SENTIMENT_ANALYSIS.value,
        NLPTaskType.TEXT_CLASSIFICATION.value,
        NLPTaskType.EMOTION_DETECTION.value,
        NLPTaskType.INTENT_CLASSIFICATION.value,
        NLPTaskType.TOPIC_CLASSIFICATION.value,
        NLPTaskType.SPAM_DETECTION.value,
        NLPTaskType.TEXT_REGRESSION.value,
        NLPTaskType.READABILITY_SCORING.value,
        NLPTaskType.QUALITY_SCORING.value,
    )
    aliases: ClassVar[tuple[str, ...]] = ("sentiment",)
    description: ClassVar[str] = (
        "Sequence classification or regression on [CLS] (Hugging Face DistilBertForSequenceClassification layout)"
    )
    options_schema: ClassVar[type[HeadOptions]] = SentimentOptions
    output_names: ClassVar[tuple[str, ...]] = ("logits",)
    label_format: ClassVar[str] = (
        "logits: integer class ids, shape (batch,); with num_classes=1 (regression) float targets, shape (batch,)"
    )
    input_kind: ClassVar[InputKind] = TEXT
    example_schema: ClassVar[type[BaseModel]] = TextExample

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if options["num_classes"] is None:
            if options["labels"] is not None:
                options["num_classes"] = len(options["labels"])
            else:
                options["num_classes"] = 1 if self.task_type in REGRESSION_TASK_TYPES else 2
        return options

    @classmethod
    def options_from_examples(cls, examples: Sequence[BaseModel], task_type: str | None = None) -> dict[str, Any]:
        """``{"num_classes": 1}`` for the regression task types, else ``{"labels": [...]}`` (names in
        order of first appearance; integer classes in numeric order; see `label_options`)."""
        task = str(getattr(task_type, "value", task_type)) if task_type is not None else "sentiment"
        if task in REGRESSION_TASK_TYPES:
            return {"num_classes": 1}
        return label_options((example.label for example in examples), task_type=task, regression_task="text_regression")


@hookimpl
def register_heads(register: Any) -> None:
    register(SentimentHead)
