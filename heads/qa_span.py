"""Extractive question answering: start and end logits over the tokens, best legal span.

Hugging Face ``DistilBertForQuestionAnswering``'s head: dropout -> ``qa_outputs`` Dense(2),
split into start and end logits (B, L). One deliberate difference: positions where
``attention_mask`` is 0 (padding) get a large negative logit (-1e9; -6e4 under float16), so
no softmax, loss or decode ever picks them. On unpadded positions the logits are exactly
Hugging Face's. Long contexts are split into windows (doc stride) by the tokenizer / pipeline;
this head sees one window at a time, and `decode` picks each question's best span across its windows.

File rows (SQuAD style, JSONL): ``{"question": "...", "context": "...", "answers": {"text":
["Paris"], "answer_start": [41]}}``; CSV: columns ``question,context,answer_text,answer_start``.
``answer_start`` is a character index into the context, and the context must read the answer
text there. Every row needs an answer: this head does not predict "no answer" (SQuAD 2.0).
Training uses a row's first answer; evaluation scores against all of them (SQuAD exact match
and token F1).
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import keras
import numpy as np
from keras import ops
from pydantic import BaseModel, Field, model_validator

from distilbert_heads import metrics
from distilbert_heads.heads._common import check_hidden_shape, encoding_field, large_negative
from distilbert_heads.heads._hf_weights import dense_weights, load_dense_layers
from distilbert_heads.heads._labels import check_predictions
from distilbert_heads.losses import MaskedSparseCategoricalAccuracy, MaskedSparseCategoricalCrossentropy
from distilbert_heads.plugins.head import DistillationTarget, HeadOptions, TaskHead
from distilbert_heads.plugins.hookspecs import hookimpl
from distilbert_heads.plugins.input_kinds import QUESTION_CONTEXT, InputKind
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


# -- file rows -----------------------------------------------------------------------------------
class Answers(BaseModel):
    """SQuAD's answers: parallel lists of answer texts and their character starts in the context."""

    text: list[str]
    answer_start: list[int]


class QAExample(BaseModel):
    """One row: ``question``, ``context`` and SQuAD ``answers`` (or CSV ``answer_text``, ``answer_start``)."""

    question: str
    context: str
    answers: Answers

    @model_validator(mode="before")
    @classmethod
    def _csv_columns(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if isinstance(data.get("answers"), str):  # a CSV cell holding SQuAD's JSON
            try:
                data["answers"] = json.loads(data["answers"])
            except json.JSONDecodeError as error:
                raise ValueError(
                    f'answers must be JSON like {{"text": ["Paris"], "answer_start": [41]}} ({error.msg})'
                ) from None
        if "answers" not in data and ("answer_text" in data or "answer_start" in data):
            text, start = data.pop("answer_text", None), data.pop("answer_start", None)
            if text in (None, "") or start in (None, ""):
                raise ValueError("answer_text and answer_start are both needed (the answer and its character start)")
            try:
                start = int(str(start).strip())
            except ValueError:
                raise ValueError(f"answer_start {start!r} is not an integer character index") from None
            data["answers"] = {"text": [text], "answer_start": [start]}
        return data

    @model_validator(mode="after")
    def _answers_in_context(self) -> QAExample:
        if not self.question.strip():
            raise ValueError("question is empty")
        if not self.context.strip():
            raise ValueError("context is empty")
        texts, starts = self.answers.text, self.answers.answer_start
        if len(texts) != len(starts):
            raise ValueError(
                f"answers has {len(texts)} texts but {len(starts)} answer_start values; give one start per text"
            )
        if not texts:
            raise ValueError(
                "answers is empty: this head always extracts a span and does not support unanswerable "
                "(SQuAD 2.0) rows; drop the row or give the answer"
            )
        for i, (text, start) in enumerate(zip(texts, starts)):
            if not text.strip():
                raise ValueError(f"answers.text[{i}] is empty; give the answer as it appears in the context")
            found = self.context[start : start + len(text)] if start >= 0 else ""
            if found != text:
                at = [k for k in range(len(self.context)) if self.context.startswith(text, k)][:3]
                hint = f"it occurs at {at}" if at else "it does not occur in the context at all"
                raise ValueError(
                    f"answers.text[{i}] {text!r} does not match the context at answer_start={start}, which reads "
                    f"{found!r}; answer_start is the 0-based character index of the answer ({hint})"
                )
        return self


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
    input_kind: ClassVar[InputKind] = QUESTION_CONTEXT
    example_schema: ClassVar[type[BaseModel]] = QAExample
    hf_architecture: ClassVar[str | None] = "DistilBertForQuestionAnswering"

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

    def distillation_targets(self) -> dict[str, DistillationTarget]:
        """Soft targets over the token axis for the answer's start and for its end: padding gets no probability."""
        span = DistillationTarget(kind="logits", axis=-1, tokens="classes")
        return {"start_logits": span, "end_logits": span}

    def decode(
        self,
        outputs: Mapping[str, Any],
        encoding: Any = None,
        *,
        questions: Sequence[str] | None = None,
        contexts: Sequence[str] | None = None,
        context_mask: Any = None,
        max_answer_length: int | None = None,
    ) -> list[Any]:
        """Answers for people: with ``contexts`` (and ``questions``, as the pipeline passes them) and the
        tokenizer's ``encoding`` of the pairs, one ``{"answer", "score", "start", "end"}`` per question,
        ``start``/``end`` being character offsets into its context (``answer == context[start:end]``).

        The rows of ``encoding`` may be several windows per question (``overflow_to_sample``); each
        window's best legal span is scored by its probability (softmax of start times softmax of end
        within the window) and the best window wins, so an answer that crosses one window's edge is
        found whole in a window that holds it. Legal: inside the context (``sequence_ids == 1``), not
        on padding, start <= end, at most ``max_answer_length`` tokens (default: the option). No legal
        span anywhere gives ``{"answer": "", "score": 0.0, "start": None, "end": None}``.

        Without ``contexts``, one result per row in token indices (``{"start", "end", "score"}``),
        restricted to ``context_mask`` (B, L) if given (as argument or encoding field); with ``offsets``
        and ``text`` in a dict ``encoding`` it also has ``"answer"``, ``"char_start"`` and ``"char_end"``.
        """
        starts = np.asarray(ops.convert_to_numpy(outputs["start_logits"]), dtype=np.float32)
        ends = np.asarray(ops.convert_to_numpy(outputs["end_logits"]), dtype=np.float32)
        limit = int(max_answer_length or self.options.max_answer_length)
        allowed = (starts > PADDING_THRESHOLD) & (ends > PADDING_THRESHOLD)
        if contexts is not None:
            return self._answers_per_question(starts, ends, allowed, limit, encoding, list(contexts), questions)
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

    def _answers_per_question(
        self,
        starts: np.ndarray,
        ends: np.ndarray,
        allowed: np.ndarray,
        limit: int,
        encoding: Any,
        contexts: list[str],
        questions: Sequence[str] | None,
    ) -> list[dict[str, Any]]:
        offsets = encoding_field(encoding, "offsets")
        sequence_ids = encoding_field(encoding, "sequence_ids")
        if offsets is None or sequence_ids is None:
            raise ValueError(
                "QASpanHead.decode(contexts=...) needs the tokenizer's encoding of the (question, context) pairs "
                "(offsets and sequence_ids): pass the BatchEncoding that DistilBertTokenizer.encode returned."
            )
        if questions is not None and len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts; pass one context per question")
        mask = encoding_field(encoding, "attention_mask")
        samples = encoding_field(encoding, "overflow_to_sample") or list(range(len(starts)))
        if len(samples) != len(starts):
            raise ValueError(
                f"the encoding has {len(samples)} rows but the outputs have {len(starts)}; pass this batch's encoding"
            )
        best: list[tuple[float, int, int] | None] = [None] * len(contexts)
        for row, sample in enumerate(samples):
            sample = int(sample)
            if not 0 <= sample < len(contexts):
                raise ValueError(
                    f"encoding row {row} belongs to question {sample}, but {len(contexts)} contexts were given"
                )
            legal = allowed[row] & np.array([s == 1 for s in sequence_ids[row]], dtype=bool)
            if mask is not None:
                legal &= np.asarray(mask[row]).astype(bool)
            span = best_span(starts[row], ends[row], legal, limit)
            if span is None:
                continue
            start, end, score = span
            if best[sample] is None or score > best[sample][0]:
                best[sample] = (score, int(offsets[row][start][0]), int(offsets[row][end][1]))
        results = []
        for context, found in zip(contexts, best):
            if found is None:
                results.append({"answer": "", "score": 0.0, "start": None, "end": None})
            else:
                score, char_start, char_end = found
                results.append(
                    {"answer": context[char_start:char_end], "score": score, "start": char_start, "end": char_end}
                )
        return results

    # -- training and evaluating from files -----------------------------------------------------
    def encode_examples(
        self, examples: Sequence[BaseModel], tokenizer: Any, max_length: int, stride: int | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``[CLS] question [SEP] context [SEP]`` rows and the first answer's token positions.

        Contexts longer than the window are split into windows that overlap by ``stride`` tokens
        (default: `QuestionContextKind`'s rule, the one pipelines use); only windows that hold the
        whole answer are kept, and a warning says how many were dropped. Labels:
        ``{"start_logits": (N,), "end_logits": (N,)}`` token indices.
        """
        kind = self.input_kind
        items = [kind.item_from_row(example, f"example {index}") for index, example in enumerate(examples)]
        stride = kind.batch_stride(tokenizer, items, max_length, stride)
        encoding = kind.encode(tokenizer, items, max_length, stride=stride)
        kept, start_labels, end_labels, answered = [], [], [], set()
        for row, sample in enumerate(encoding.overflow_to_sample):
            answer = examples[sample].answers
            char_start = answer.answer_start[0]
            char_end = char_start + len(answer.text[0])
            context_tokens = [j for j, s in enumerate(encoding.sequence_ids[row]) if s == 1]
            if not context_tokens:
                continue
            offsets = encoding.offsets[row]
            if offsets[context_tokens[0]][0] > char_start or offsets[context_tokens[-1]][1] < char_end:
                continue  # the answer is not whole in this window
            start = max(j for j in context_tokens if offsets[j][0] <= char_start)
            end = min(j for j in context_tokens if offsets[j][1] >= char_end)
            kept.append(row)
            start_labels.append(start)
            end_labels.append(end)
            answered.add(sample)
        dropped_windows = len(encoding) - len(kept)
        lost = len(examples) - len(answered)
        if not kept:
            raise ValueError(
                f"No example kept its answer within max_length={max_length} tokens: every answer is cut off. "
                "Raise max_length, or shorten the questions and answers."
            )
        if dropped_windows:
            warnings.warn(
                f"QA training data: dropped {dropped_windows} of {len(encoding)} windows (max_length={max_length}, "
                f"stride={stride}) that do not hold their whole answer; {lost} of {len(examples)} examples lost "
                f"entirely because their answer fits no window.",
                stacklevel=2,
            )
        width = int(encoding.attention_mask[kept].sum(axis=1).max())
        inputs = {
            "input_ids": np.ascontiguousarray(encoding.input_ids[kept, :width]),
            "attention_mask": np.ascontiguousarray(encoding.attention_mask[kept, :width]),
        }
        labels = {
            "start_logits": np.array(start_labels, dtype=np.int32),
            "end_logits": np.array(end_labels, dtype=np.int32),
        }
        return inputs, labels

    chance_description: ClassVar[str] = "a random 1-3 word span of the context"

    def chance_predictions(self, examples: Sequence[BaseModel], seed: int = 0) -> list[Any]:
        """What guessing gives: a random 1-3 word span of each context."""
        rng = random.Random(seed)
        guesses = []
        for example in examples:
            words = example.context.split()
            start = rng.randrange(len(words))
            span = " ".join(words[start : start + rng.randint(1, 3)])
            guesses.append({"answer": span.rstrip(".,"), "score": 0.0, "start": 0, "end": 0})
        return guesses

    def evaluate(self, examples: Sequence[BaseModel], predictions: Sequence[Any]) -> dict[str, float]:
        """SQuAD ``exact_match`` and token ``f1`` of each predicted answer against all gold answers."""
        check_predictions(examples, predictions)
        answers = [p.get("answer", "") if isinstance(p, Mapping) else str(p) for p in predictions]
        return metrics.squad_scores(answers, [example.answers.text for example in examples])

    def load_hf_head_weights(self, state_dict: Mapping[str, Any]) -> bool:
        if not any(key.startswith("qa_outputs.") for key in state_dict):
            return False
        if not self.built:
            self.build((None, None, self.hidden_size))
        load_dense_layers([(self.qa_outputs, "qa_outputs")], state_dict, f"QASpanHead (task type {self.task_type})")
        return True

    def hf_head_weights(self) -> dict[str, np.ndarray]:
        return dense_weights(self.qa_outputs, "qa_outputs") if self.built else {}

    def hf_config(self) -> dict[str, Any]:
        return {"qa_dropout": self.options.dropout_rate}


@hookimpl
def register_heads(register: Any) -> None:
    register(QASpanHead)
