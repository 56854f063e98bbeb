"""Sentence-pair classification (NLI, paraphrase, duplicates) and similarity scoring.

The input is one packed pair, ``[CLS] a [SEP] b [SEP]``; the encoder's attention already mixes
the two texts, so the head is the same pooled [CLS] classifier as the sentiment head (and the
Hugging Face sequence-classification checkpoints of MNLI, QQP, MRPC or STS-B models load into it).

Similarity mode is regression: one output, trained with MSE on whatever scale the labels use
(STS-B's 0-5, or 0-1 cosine-like targets), and the score is **not** squashed. Keeping it raw is
what Hugging Face regression checkpoints (``num_labels=1``) do, so they load and match here,
and it never caps the range of a label scale the head was not told about.

File rows (JSONL or CSV with a header): ``{"text_a": "...", "text_b": "...", "label": "paraphrase"}``;
the label is a class name, a class index, or a number (a similarity score).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import keras
from pydantic import BaseModel, Field, field_validator

from distilbert_heads.heads._classifier import PooledClassifierHead, PooledClassifierOptions
from distilbert_heads.heads._labels import Label, coerce_label, label_options
from distilbert_heads.plugins.head import HeadOptions
from distilbert_heads.plugins.hookspecs import hookimpl
from distilbert_heads.plugins.input_kinds import PAIR, InputKind
from distilbert_heads.tasks import NLPTaskType

# Class names used when neither num_classes nor labels is given (GLUE conventions).
DEFAULT_LABELS: dict[str, list[str]] = {
    NLPTaskType.NATURAL_LANGUAGE_INFERENCE.value: ["entailment", "neutral", "contradiction"],
    NLPTaskType.PARAPHRASE_DETECTION.value: ["not_paraphrase", "paraphrase"],
    NLPTaskType.DUPLICATE_DETECTION.value: ["not_duplicate", "duplicate"],
    NLPTaskType.TEXT_MATCHING.value: ["no_match", "match"],
}


class PairwiseOptions(PooledClassifierOptions):
    """Options of `PairwiseHead`.

    mode: "classification" or "similarity"; default "similarity" for text_similarity (or when
        num_classes=1), else "classification".
    num_classes / labels: classes; defaults per task type (NLI: entailment, neutral,
        contradiction; paraphrase / duplicate / matching: 2 classes). Similarity has one output.
    dropout_rate: dropout before the classifier (HF ``seq_classif_dropout``, 0.2).
    label_smoothing: smoothing of the classification targets.
    """

    mode: Literal["classification", "similarity"] | None = Field(default=None)


class PairExample(BaseModel):
    """One row: ``text_a``, ``text_b`` and their ``label`` (class name or index, or a similarity score)."""

    text_a: str
    text_b: str
    label: Label

    @field_validator("text_a", "text_b")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the text is empty; every row needs both texts of the pair")
        return value

    @field_validator("label", mode="before")
    @classmethod
    def _label(cls, value: Any) -> Any:
        return coerce_label(value)


@keras.saving.register_keras_serializable(package="distilbert_heads")
class PairwiseHead(PooledClassifierHead):
    """Classification or similarity regression over a packed sentence pair, on [CLS]."""

    task_types: ClassVar[tuple[str, ...]] = (
        NLPTaskType.NATURAL_LANGUAGE_INFERENCE.value,
        NLPTaskType.PARAPHRASE_DETECTION.value,
        NLPTaskType.DUPLICATE_DETECTION.value,
        NLPTaskType.TEXT_SIMILARITY.value,
        NLPTaskType.TEXT_MATCHING.value,
    )
    aliases: ClassVar[tuple[str, ...]] = ("pairwise",)
    description: ClassVar[str] = (
        "Sentence-pair classification (NLI, paraphrase, duplicates) or similarity score over [CLS] a [SEP] b [SEP]"
    )
    options_schema: ClassVar[type[HeadOptions]] = PairwiseOptions
    output_names: ClassVar[tuple[str, ...]] = ("logits",)
    label_format: ClassVar[str] = (
        "logits: classification: integer class ids, shape (batch,); similarity: float scores, shape (batch,)"
    )
    input_kind: ClassVar[InputKind] = PAIR
    example_schema: ClassVar[type[BaseModel]] = PairExample

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        mode = options["mode"]
        if mode is None:
            wants_score = self.task_type == NLPTaskType.TEXT_SIMILARITY.value and options["labels"] is None
            mode = "similarity" if wants_score or options["num_classes"] == 1 else "classification"
        if mode == "similarity":
            if options["labels"] is not None or options["num_classes"] not in (None, 1):
                raise ValueError(
                    f"mode='similarity' predicts one score, but num_classes={options['num_classes']} and "
                    f"labels={options['labels']} were given. Drop them for similarity, or set "
                    "mode='classification' to classify pairs."
                )
            options["num_classes"] = 1
        else:
            if options["num_classes"] == 1:
                raise ValueError(
                    "mode='classification' needs num_classes >= 2 (num_classes=1 is a similarity score); "
                    "set mode='similarity' or give the number of classes."
                )
            if options["labels"] is not None:
                options["num_classes"] = len(options["labels"])
            elif options["num_classes"] is None:
                options["labels"] = DEFAULT_LABELS.get(self.task_type)
                options["num_classes"] = len(options["labels"]) if options["labels"] else 2
        options["mode"] = mode
        return options

    @classmethod
    def options_from_examples(cls, examples: Sequence[BaseModel], task_type: str | None = None) -> dict[str, Any]:
        """``{"labels": [...]}`` for class labels (names in order of first appearance, integers in
        numeric order; see `label_options`); ``{"num_classes": 1}`` (similarity) for numeric labels
        when ``task_type`` is text_similarity."""
        task = str(getattr(task_type, "value", task_type)) if task_type is not None else "pairwise"
        if task == NLPTaskType.TEXT_SIMILARITY.value and all(not isinstance(ex.label, str) for ex in examples):
            return {"num_classes": 1}
        return label_options(
            (example.label for example in examples), task_type=task, regression_task=NLPTaskType.TEXT_SIMILARITY.value
        )

    def evaluate(self, examples: Sequence[BaseModel], predictions: Sequence[Any]) -> dict[str, float]:
        """Classification: ``accuracy`` and ``macro_f1``. Similarity: ``pearson`` and ``spearman``
        (and ``mse``, on the labels' scale)."""
        return super().evaluate(examples, predictions)


@hookimpl
def register_heads(register: Any) -> None:
    register(PairwiseHead)
