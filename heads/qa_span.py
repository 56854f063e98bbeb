"""Extractive question answering: start and end logits over the tokens, best legal span.

Hugging Face ``DistilBertForQuestionAnswering``'s head: dropout -> ``qa_outputs`` Dense(2),
split into start and end logits (B, L). One deliberate difference: positions where
``attention_mask`` is 0 (padding) get a large negative logit (-1e9; -6e4 under float16), so
no softmax, loss or decode ever picks them. On unpadded positions the logits are exactly
Hugging Face's. Long contexts are split into windows (doc stride) by the tokenizer / pipeline;
this head sees one window at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import keras
import numpy as np
from keras import ops
from pydantic import Field

from distilbert_heads.head import HeadOptions, TaskHead
from distilbert_heads.heads._common import (
    MaskedSparseCategoricalAccuracy,
    MaskedSparseCategoricalCrossentropy,
    check_hidden_shape,
    dense_weights,
    encoding_field,
    large_negative,
    load_dense_layers,
)
from distilbert_heads.hookspecs import hookimpl
from distilbert_heads.tasks import NLPTaskType

# Logits at or below this are masked padding (real logits never get near it).
PADDING_THRESHOLD = -1.0e4


class QASpanOptions(HeadOptions):
    """Options of `QASpanHead`.

    max_answer_length: longest answer decode returns, in tokens (default 30).
    dropout_rate: dropout before ``qa_outputs`` (HF ``qa_dropout``, 0.1).
    """

    max_answer_length: int = Field(default=30, ge=1)
    dropout_rate: float = Field(default=0.1, ge=0.0, lt=1.0)



def _masked_softmax(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    shifted = np.where(allowed, logits - logits[allowed].max(), -np.inf)
    exp = np.exp(shifted)
    return exp / exp.sum()


def best_span(
    start_logits: np.ndarray, end_logits: np.ndarray, allowed: np.ndarray, max_answer_length: int
) -> tuple[int, int, float] | None:
    """The (start, end, probability) maximising start + end logit with start <= end,
    ``end - start + 1 <= max_answer_length`` and both positions ``allowed``; None if no span is legal.

    The probability is softmax(start)[start] * softmax(end)[end], each softmax over allowed positions.
    """
    if not allowed.any():
        return None
    length = start_logits.shape[0]
    rows = np.arange(length)[:, None]
    cols = np.arange(length)[None, :]
    legal = (cols >= rows) & (cols - rows < max_answer_length) & allowed[:, None] & allowed[None, :]
    scores = np.where(legal, start_logits[:, None].astype(np.float64) + end_logits[None, :], -np.inf)
    flat = int(np.argmax(scores))
    start, end = divmod(flat, length)
    if not legal[start, end]:
        return None
    probability = _masked_softmax(start_logits, allowed)[start] * _masked_softmax(end_logits, allowed)[end]
    return start, end, float(probability)


@keras.saving.register_keras_serializable(package="distilbert_heads")
class QASpanHead(TaskHead):
    """Start/end span extraction, Hugging Face ``DistilBertForQuestionAnswering`` layout."""

    task_types: ClassVar[tuple[str, ...]] = (
        NLPTaskType.QUESTION_ANSWERING.value,
        NLPTaskType.SPAN_EXTRACTION.value,
    )
    aliases: ClassVar[tuple[str, ...]] = ("qa",)
    description: ClassVar[str] = "Extractive QA / span extraction: start and end logits, best legal span"
    options_schema: ClassVar[type[HeadOptions]] = QASpanOptions
    output_names: ClassVar[tuple[str, ...]] = ("start_logits", "end_logits")
    label_format: ClassVar[str] = (
        "start_logits / end_logits: the answer's first and last token index, integers of shape (batch,) "
        "each (-100 to skip an example); they must point at unpadded positions"
    )

    def __init__(self, hidden_size: int, task_type: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        self.dropout = keras.layers.Dropout(self.options.dropout_rate, name="dropout", dtype=self.dtype_policy)
        self.qa_outputs = keras.layers.Dense(2, name="qa_outputs", dtype=self.dtype_policy)

    def build(self, input_shape: Any = None) -> None:
        check_hidden_shape(self, input_shape)
        self.qa_outputs.build((None, None, self.hidden_size))
        self.built = True

    def call(self, hidden_states: Any, attention_mask: Any = None, training: bool | None = None) -> dict[str, Any]:
        logits = self.qa_outputs(self.dropout(hidden_states, training=training))
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        if attention_mask is not None:
            keep = ops.cast(attention_mask, "bool")
            floor = ops.cast(large_negative(start_logits.dtype), start_logits.dtype)
            start_logits = ops.where(keep, start_logits, floor)
            end_logits = ops.where(keep, end_logits, floor)
        return {"start_logits": start_logits, "end_logits": end_logits}

    def default_losses(self) -> dict[str, Any]:
        return {
            "start_logits": MaskedSparseCategoricalCrossentropy(ignore_index=-100),
            "end_logits": MaskedSparseCategoricalCrossentropy(ignore_index=-100),
        }

    def default_metrics(self) -> dict[str, list[Any]]:
        return {
            "start_logits": [MaskedSparseCategoricalAccuracy(ignore_index=-100, name="accuracy")],
            "end_logits": [MaskedSparseCategoricalAccuracy(ignore_index=-100, name="accuracy")],
        }

    def decode(
        self,
        outputs: Mapping[str, Any],
        encoding: Any = None,
        *,
        context_mask: Any = None,
        max_answer_length: int | None = None,
    ) -> list[Any]:
        """Per example the best legal span ``{"start", "end", "score"}`` in token indices.

        Legal: start <= end, at most ``max_answer_length`` tokens (default: the option), not on
        padding, and inside ``context_mask`` (B, L) if given (as argument or encoding field), which
        keeps answers out of the question and special tokens. With ``offsets`` and ``text`` in
        ``encoding`` the result also has ``"answer"`` and its ``"char_start"`` / ``"char_end"``.
        No legal span gives start and end None and score 0.0.
        """
        starts = np.asarray(ops.convert_to_numpy(outputs["start_logits"]), dtype=np.float32)
        ends = np.asarray(ops.convert_to_numpy(outputs["end_logits"]), dtype=np.float32)
        limit = int(max_answer_length or self.options.max_answer_length)
        allowed = (starts > PADDING_THRESHOLD) & (ends > PADDING_THRESHOLD)
        if context_mask is None:
            context_mask = encoding_field(encoding, "context_mask")
        for extra in (encoding_field(encoding, "attention_mask"), context_mask):
            if extra is not None:
                allowed &= np.asarray(extra).astype(bool)
        offsets = encoding_field(encoding, "offsets")
        texts = encoding_field(encoding, "text")
        results = []
        for b in range(starts.shape[0]):
            span = best_span(starts[b], ends[b], allowed[b], limit)
            if span is None:
                result: dict[str, Any] = {"start": None, "end": None, "score": 0.0}
                if offsets is not None and texts is not None:
                    result.update(answer="", char_start=None, char_end=None)
            else:
                start, end, score = span
                result = {"start": start, "end": end, "score": score}
                if offsets is not None and texts is not None:
                    char_start, char_end = int(offsets[b][start][0]), int(offsets[b][end][1])
                    result.update(answer=texts[b][char_start:char_end], char_start=char_start, char_end=char_end)
            results.append(result)
        return results

    def load_hf_head_weights(self, state_dict: Mapping[str, Any]) -> bool:
        if not any(key.startswith("qa_outputs.") for key in state_dict):
            return False
        if not self.built:
            self.build((None, None, self.hidden_size))
        load_dense_layers([(self.qa_outputs, "qa_outputs")], state_dict, f"QASpanHead (task type {self.task_type})")
        return True

    def hf_head_weights(self) -> dict[str, np.ndarray]:
        return dense_weights(self.qa_outputs, "qa_outputs") if self.built else {}


@hookimpl
def register_heads(register: Any) -> None:
    register(QASpanHead)
