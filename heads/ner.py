"""Token classification: named entities, generic token tags, part-of-speech tags.

Hugging Face ``DistilBertForTokenClassification``'s head: dropout -> ``classifier``
Dense(num_classes) on every position. Training labels use -100 for positions without a label
(special tokens, sub-word continuations, padding); loss and accuracy skip them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import keras
import numpy as np
from keras import ops
from pydantic import Field

from distilbert_heads.head import HeadOptions, TaskHead
from distilbert_heads.heads._common import (
    ClassificationOptions,
    MaskedSparseCategoricalAccuracy,
    MaskedSparseCategoricalCrossentropy,
    check_hidden_shape,
    class_names,
    dense_weights,
    encoding_field,
    load_dense_layers,
    softmax_np,
)
from distilbert_heads.hookspecs import hookimpl
from distilbert_heads.tasks import NLPTaskType

# CoNLL-2003 BIO tags in the order of the Hugging Face ``conll2003`` dataset.
CONLL_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


class NerOptions(ClassificationOptions):
    """Options of `NerHead`.

    num_classes / labels: tags in index order. With neither given: the 9 CoNLL-2003 BIO tags.
    dropout_rate: dropout before the classifier (HF ``dropout``, 0.1).
    """

    dropout_rate: float = Field(default=0.1, ge=0.0, lt=1.0)



def split_tag(tag: str) -> tuple[str | None, str]:
    """``"B-PER"`` -> ``("B", "PER")``; a tag without a B-/I- prefix is its own type (IO scheme)."""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BI":
        return tag[0], tag[2:]
    return None, tag


def group_entities(
    tags: Sequence[str],
    scores: Sequence[float],
    offsets: Sequence[Sequence[int]],
    text: str,
    word_ids: Sequence[int | None] | None = None,
) -> list[dict[str, Any]]:
    """Merge per-token BIO / IOB2 tags into entities with character spans.

    A word's tag is its first sub-token's (the one that carries the label in training); later
    sub-tokens of the word only extend the entity's end. ``B-X`` starts an entity, ``I-X``
    continues an open ``X`` entity (or starts one, as IOB1 allows), ``O`` closes. Special tokens
    are those with ``word_ids`` None or, without word ids, an empty offset span such as (0, 0).
    The entity score is the mean of its words' scores.
    """
    entities: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    word_scores: list[float] = []

    def close() -> None:
        nonlocal current
        if current is not None:
            current["score"] = float(np.mean(word_scores))
            current["word"] = text[current["start"] : current["end"]]
            entities.append(current)
        current = None

    previous_word: Any = object()
    for i, tag in enumerate(tags):
        start, end = int(offsets[i][0]), int(offsets[i][1])
        word = word_ids[i] if word_ids is not None else (None if start == end else i)
        if word is None:
            close()
            previous_word = object()
            continue
        if word == previous_word:
            if current is not None:
                current["end"] = max(current["end"], end)
            continue
        previous_word = word
        prefix, entity_type = split_tag(tag)
        if tag == "O":
            close()
        elif prefix == "B" or current is None or current["entity"] != entity_type:
            close()
            current = {"entity": entity_type, "start": start, "end": end}
            word_scores = [float(scores[i])]
        else:
            current["end"] = end
            word_scores.append(float(scores[i]))
    close()
    return entities


@keras.saving.register_keras_serializable(package="distilbert_heads")
class NerHead(TaskHead):
    """Per-token classification, Hugging Face ``DistilBertForTokenClassification`` layout."""

    task_types: ClassVar[tuple[str, ...]] = (
        NLPTaskType.NAMED_ENTITY_RECOGNITION.value,
        NLPTaskType.TOKEN_CLASSIFICATION.value,
        NLPTaskType.PART_OF_SPEECH_TAGGING.value,
    )
    aliases: ClassVar[tuple[str, ...]] = ("ner",)
    description: ClassVar[str] = "Token classification: a tag per token, BIO entities with character spans"
    options_schema: ClassVar[type[HeadOptions]] = NerOptions
    output_names: ClassVar[tuple[str, ...]] = ("logits",)
    label_format: ClassVar[str] = (
        "logits: integer tag ids per token, shape (batch, length); -100 marks positions without a label "
        "(special tokens, sub-word continuations, padding), which loss and metrics ignore"
    )

    def __init__(self, hidden_size: int, task_type: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        resolved = self.options.model_dump()
        if resolved["num_classes"] is None:
            if resolved["labels"] is None:
                resolved["labels"] = list(CONLL_LABELS)
            resolved["num_classes"] = len(resolved["labels"])
        self.options = self.options_schema(**resolved)  # only fills in consistent defaults
        self.dropout = keras.layers.Dropout(self.options.dropout_rate, name="dropout", dtype=self.dtype_policy)
        self.classifier = keras.layers.Dense(self.num_classes, name="classifier", dtype=self.dtype_policy)

    @property
    def num_classes(self) -> int:
        return int(self.options.num_classes)

    @property
    def class_names(self) -> list[str]:
        return class_names(self.options.labels, self.num_classes)

    def build(self, input_shape: Any = None) -> None:
        check_hidden_shape(self, input_shape)
        self.classifier.build((None, None, self.hidden_size))
        self.built = True

    def call(self, hidden_states: Any, attention_mask: Any = None, training: bool | None = None) -> dict[str, Any]:
        hidden_states = self.dropout(hidden_states, training=training)
        return {"logits": self.classifier(hidden_states)}

    def default_losses(self) -> dict[str, Any]:
        return {"logits": MaskedSparseCategoricalCrossentropy(ignore_index=-100)}

    def default_metrics(self) -> dict[str, list[Any]]:
        return {"logits": [MaskedSparseCategoricalAccuracy(ignore_index=-100, name="accuracy")]}

    def decode(self, outputs: Mapping[str, Any], encoding: Any = None) -> list[Any]:
        """Per example ``{"tags", "scores"}`` for its unpadded tokens, plus ``"entities"`` when
        ``encoding`` carries ``offsets`` (per example a list of (start, end) per token) and
        ``text`` (the example strings); ``word_ids`` and ``attention_mask`` are used if present.
        """
        logits = np.asarray(ops.convert_to_numpy(outputs["logits"]), dtype=np.float32)
        probs = softmax_np(logits)
        ids = probs.argmax(axis=-1)
        best = probs.max(axis=-1)
        names = self.class_names
        mask = encoding_field(encoding, "attention_mask")
        offsets = encoding_field(encoding, "offsets")
        texts = encoding_field(encoding, "text")
        word_ids = encoding_field(encoding, "word_ids")
        results = []
        for b in range(logits.shape[0]):
            length = int(np.asarray(mask[b]).sum()) if mask is not None else logits.shape[1]
            tags = [names[int(i)] for i in ids[b, :length]]
            scores = [float(s) for s in best[b, :length]]
            result: dict[str, Any] = {"tags": tags, "scores": scores}
            if offsets is not None and texts is not None:
                result["entities"] = group_entities(
                    tags,
                    scores,
                    offsets[b][:length],
                    texts[b],
                    None if word_ids is None else list(word_ids[b])[:length],
                )
            results.append(result)
        return results

    def load_hf_head_weights(self, state_dict: Mapping[str, Any]) -> bool:
        # A sequence-classification checkpoint also has classifier.*, but over [CLS] after a
        # pre_classifier: those weights are not a token classifier.
        if "classifier.weight" not in state_dict or "pre_classifier.weight" in state_dict:
            return False
        if not self.built:
            self.build((None, None, self.hidden_size))
        load_dense_layers([(self.classifier, "classifier")], state_dict, f"NerHead (task type {self.task_type})")
        return True

    def hf_head_weights(self) -> dict[str, np.ndarray]:
        return dense_weights(self.classifier, "classifier") if self.built else {}


@hookimpl
def register_heads(register: Any) -> None:
    register(NerHead)
