"""distilbert-head-choice: multiple choice for distilbert-heads (task type ``"multiple_choice"``).

A test plugin that defines its own input kind: each example is a question and N candidate
answers, packed as N ``[CLS] question [SEP] choice [SEP]`` rows, so the model's inputs are
(B, N, L) and the head scores each row's [CLS] vector into logits (B, N)::

    pipe = distilbert_heads.pipeline("choice.keras")
    pipe({"question": "Where do fish live?", "choices": ["in water", "in trees"]})
    # {"label": 0, "choice": "in water", "score": 0.93}

Training rows (JSONL): ``{"question": "...", "choices": ["...", "..."], "label": 0}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops
from pydantic import BaseModel, Field, field_validator, model_validator

from distilbert_heads import HeadOptions, TaskHead, hookimpl
from distilbert_heads.plugins.input_kinds import InputKind

__version__ = "0.1.0"
__all__ = ["MultipleChoiceExample", "MultipleChoiceHead", "MultipleChoiceKind", "register_heads"]

Item = tuple[str, tuple[str, ...]]  # (question, choices)


class MultipleChoiceKind(InputKind):
    """A question with ``num_choices`` candidate answers: N encoder rows per example."""

    name = "multiple_choice"
    fields = ("question", "choices")
    decode_keywords = ("questions", "choices")
    description = "a question with its candidate answers, {'question': str, 'choices': [str, ...]}"

    def __init__(self, num_choices: int = 4) -> None:
        self.rows_per_example = int(num_choices)

    # decode_context ({"questions": ..., "choices": ...}), length_key and stride (0): InputKind's defaults
    def items_from_call(self, inputs: Any, keywords: Mapping[str, Any]) -> tuple[list[Item], bool]:
        single = isinstance(inputs, Mapping) or _is_question_tuple(inputs)
        if keywords or not single and not isinstance(inputs, (list, tuple)):
            raise TypeError(
                f"A multiple-choice pipeline takes {self.description} (or a list of them), got {type(inputs).__name__}."
            )
        raw = [inputs] if single else list(inputs)
        items = [self.item_from_row(value, f"input {i}") for i, value in enumerate(raw)]
        return items, single

    def item_from_row(self, row: Any, where: str) -> Item:
        if isinstance(row, BaseModel):
            row = row.model_dump()
        if isinstance(row, Mapping):
            question, choices = row.get("question"), row.get("choices")
        else:
            question, choices = row if isinstance(row, (tuple, list)) and len(row) == 2 else (None, None)
        if not isinstance(question, str) or isinstance(choices, str) or not isinstance(choices, Sequence):
            raise ValueError(f"{where}: expected {self.description}, got {row!r}.")
        if len(choices) < 2 or not all(isinstance(choice, str) for choice in choices):
            raise ValueError(f"{where}: 'choices' must be a list of at least 2 texts, got {choices!r}.")
        return question, tuple(choices)

    def show(self, item: Item) -> str:
        return f"{item[0]} [{' | '.join(item[1])}]"

    def encode(self, tokenizer: Any, items: Sequence[Item], max_length: int, *, stride: int | None = None) -> Any:
        wrong = [i for i, (_, choices) in enumerate(items) if len(choices) != self.rows_per_example]
        if wrong:
            raise ValueError(
                f"item {wrong[0]} has {len(items[wrong[0]][1])} choices; this head was built for "
                f"{self.rows_per_example} (its num_choices option)."
            )
        questions = [q for q, choices in items for _ in choices]
        encoding = tokenizer.encode(questions, [c for _, cs in items for c in cs], max_length=max_length)
        encoding.overflow_to_sample = [i for i in range(len(items)) for _ in range(self.rows_per_example)]
        return encoding

    def model_inputs(self, encoding: Any) -> dict[str, np.ndarray]:
        n, length = self.rows_per_example, encoding.input_ids.shape[1]
        return {key: value.reshape(-1, n, length) for key, value in encoding.as_model_inputs().items()}


def _is_question_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and not isinstance(value[1], str)


class MultipleChoiceExample(BaseModel):
    """One training row: a question, its candidate answers and the index of the right one."""

    question: str = Field(min_length=1)
    choices: list[str] = Field(min_length=2)
    label: int = Field(ge=0)

    @field_validator("choices", mode="before")
    @classmethod
    def _split_cell(cls, value: Any) -> Any:
        return value.split("|") if isinstance(value, str) else value  # a CSV cell: "a|b|c"

    @model_validator(mode="after")
    def _label_is_a_choice(self) -> MultipleChoiceExample:
        if self.label >= len(self.choices):
            raise ValueError(f"label {self.label} is not an index into the {len(self.choices)} choices")
        return self


class MultipleChoiceOptions(HeadOptions):
    num_choices: int = Field(default=4, ge=2)
    head_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)


class MultipleChoiceHead(TaskHead):
    """Multiple choice: the [CLS] vector of each (question, choice) row scored into ``logits`` (B, N)."""

    task_types = ("multiple_choice",)
    aliases = ("choice",)
    description = "Multiple choice: one score per (question, choice) row, softmax over the N choices"
    options_schema = MultipleChoiceOptions
    output_names = ("logits",)
    label_format = "logits: the index of the right choice, int, shape (batch,)"
    input_kind = MultipleChoiceKind()
    example_schema = MultipleChoiceExample

    def __init__(self, hidden_size: int, task_type: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        self.input_kind = MultipleChoiceKind(self.options.num_choices)
        self.dropout = keras.layers.Dropout(self.options.head_dropout, name="dropout")
        self.scorer = keras.layers.Dense(1, name="scorer")

    def build(self, input_shape: Any = None) -> None:
        self.scorer.build((None, self.hidden_size))
        self.built = True

    def call(self, hidden_states: Any, attention_mask: Any, training: bool | None = None) -> dict[str, Any]:
        cls_vectors = self.dropout(hidden_states[:, :, 0, :], training=training)  # (B, N, D)
        return {"logits": ops.squeeze(self.scorer(cls_vectors), axis=-1)}  # (B, N)

    def default_losses(self) -> dict[str, Any]:
        return {"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}

    def default_metrics(self) -> dict[str, list[Any]]:
        return {"logits": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}

    def decode(self, outputs: Mapping[str, Any], encoding: Any = None, choices: Any = None) -> list[dict[str, Any]]:
        """Per example the chosen index, its text (when the pipeline gives the choices) and its probability."""
        logits = np.asarray(ops.convert_to_numpy(outputs["logits"]), dtype=np.float64)
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        answers = []
        for row, p in enumerate(probs):
            best = int(np.argmax(p))
            answer = {"label": best, "score": float(p[best])}
            if choices is not None:
                answer["choice"] = choices[row][best]
            answers.append(answer)
        return answers

    @classmethod
    def options_from_examples(cls, examples: Sequence[MultipleChoiceExample]) -> dict[str, Any]:
        counts = Counter(len(example.choices) for example in examples)
        if len(counts) > 1:
            raise ValueError(f"every example needs the same number of choices; the data has {dict(counts)}")
        return {"num_choices": next(iter(counts))} if counts else {}

    def encode_examples(
        self, examples: Sequence[MultipleChoiceExample], tokenizer: Any, max_length: int
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        inputs = self.input_kind.model_inputs(self.input_kind.encode_rows(tokenizer, examples, max_length))
        return inputs, {"logits": np.array([example.label for example in examples], dtype="int32")}

    def evaluate(self, examples: Sequence[MultipleChoiceExample], predictions: Sequence[Any]) -> dict[str, float]:
        right = [example.label == predicted["label"] for example, predicted in zip(examples, predictions, strict=True)]
        return {"accuracy": sum(right) / len(right) if right else 0.0}

    def chance_predictions(self, examples: Sequence[MultipleChoiceExample], seed: int = 0) -> list[Any]:
        """Always the most frequent right index."""
        majority = Counter(example.label for example in examples).most_common(1)[0][0] if examples else 0
        return [{"label": majority, "score": 1.0} for _ in examples]


@hookimpl
def register_heads(register: Any) -> None:
    register(MultipleChoiceHead)
