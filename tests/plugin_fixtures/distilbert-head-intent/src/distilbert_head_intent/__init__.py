"""Joint intent classification and slot filling (task type "intent_slots"), written from the guide.

Rows: {"text": "fly to paris", "intent": "book_flight", "slots": ["O", "O", "B-city"]}, one BIO
slot tag per whitespace-separated word. Answers: {"intent", "score", "slots"}.
"""

import bisect
import re
from typing import Any, ClassVar

import keras
import numpy as np
from pydantic import BaseModel, Field

from distilbert_heads import HeadOptions, TaskHead, hookimpl, losses, metrics


class IntentOptions(HeadOptions):
    intents: list[str] = ["LABEL_0", "LABEL_1"]
    slots: list[str] = ["O"]
    dropout_rate: float = Field(default=0.1, ge=0.0, lt=1.0)
    intent_weight: float = Field(default=1.0, ge=0.0)
    slot_weight: float = Field(default=1.0, ge=0.0)


class IntentExample(BaseModel):
    text: str
    intent: str
    slots: list[str]


def word_starts(text: str) -> list[int]:
    return [match.start() for match in re.finditer(r"\S+", text)]


class IntentSlotsHead(TaskHead):
    task_types: ClassVar[tuple[str, ...]] = ("intent_slots",)
    options_schema: ClassVar[type[HeadOptions]] = IntentOptions
    output_names: ClassVar[tuple[str, ...]] = ("intent", "slots")
    example_schema: ClassVar[type[BaseModel]] = IntentExample

    def __init__(self, hidden_size: int, task_type: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        self.dropout = keras.layers.Dropout(self.options.dropout_rate)
        self.intent_classifier = keras.layers.Dense(len(self.options.intents), name="intent_classifier")
        self.slot_classifier = keras.layers.Dense(len(self.options.slots), name="slot_classifier")

    def build(self, input_shape: Any = None) -> None:
        self.intent_classifier.build((None, self.hidden_size))
        self.slot_classifier.build((None, None, self.hidden_size))
        self.built = True

    def call(self, hidden_states: Any, attention_mask: Any, training: bool | None = None) -> dict[str, Any]:
        hidden_states = self.dropout(hidden_states, training=training)
        return {"intent": self.intent_classifier(hidden_states[:, 0, :]), "slots": self.slot_classifier(hidden_states)}

    def default_losses(self) -> dict[str, Any]:
        return {
            "intent": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "slots": losses.MaskedSparseCategoricalCrossentropy(),
        }

    def default_metrics(self) -> dict[str, list[Any]]:
        return {
            "intent": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            "slots": [losses.MaskedSparseCategoricalAccuracy()],
        }

    def default_loss_weights(self) -> dict[str, float]:
        return {"intent": self.options.intent_weight, "slots": self.options.slot_weight}

    @classmethod
    def options_from_examples(cls, examples: list[IntentExample]) -> dict[str, Any]:
        slots = dict.fromkeys(["O", *(tag for example in examples for tag in example.slots)])
        return {"intents": list(dict.fromkeys(ex.intent for ex in examples)), "slots": list(slots)}

    def first_tokens(self, encoding: Any, row: int, text: str) -> dict[int, int]:
        """Word index -> position of its first token, for the words the encoding kept."""
        starts, first = word_starts(text), {}
        for position, (start, end) in enumerate(encoding.offsets[row]):
            if end > start:
                first.setdefault(bisect.bisect_right(starts, start) - 1, position)
        return first

    def encode_examples(self, examples: list[IntentExample], tokenizer: Any, max_length: int) -> tuple[dict, dict]:
        encoding = tokenizer.encode([ex.text for ex in examples], max_length=max_length)
        slots = np.full(encoding.input_ids.shape, losses.IGNORE_INDEX, dtype="int32")
        for row, ex in enumerate(examples):
            if len(ex.slots) != len(word_starts(ex.text)):
                raise ValueError(f"example {row}: {len(ex.slots)} slot tags for {len(word_starts(ex.text))} words")
            for word, position in self.first_tokens(encoding, row, ex.text).items():
                slots[row, position] = self.options.slots.index(ex.slots[word])
        intents = np.array([self.options.intents.index(ex.intent) for ex in examples], dtype="int32")
        return encoding.as_model_inputs(), {"intent": intents, "slots": slots}

    def decode(self, outputs: Any, encoding: Any = None, *, texts: list[str] | None = None) -> list[dict]:
        intent_logits = np.asarray(outputs["intent"], dtype="float32")
        probs = np.exp(intent_logits - intent_logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        slot_ids = np.asarray(outputs["slots"]).argmax(-1)
        answers = []
        for row, text in enumerate(texts or [""] * len(probs)):
            tags = ["O"] * len(word_starts(text))
            for word, position in self.first_tokens(encoding, row, text).items():
                tags[word] = self.options.slots[int(slot_ids[row, position])]
            best = int(probs[row].argmax())
            answers.append({"intent": self.options.intents[best], "score": float(probs[row, best]), "slots": tags})
        return answers

    def evaluate(self, examples: list[IntentExample], predictions: list[dict]) -> dict[str, float]:
        gold, guess = [ex.slots for ex in examples], [p["slots"] for p in predictions]
        return {
            "slot_f1": metrics.entity_scores(gold, guess)["f1"],
            "intent_accuracy": metrics.accuracy([ex.intent for ex in examples], [p["intent"] for p in predictions]),
        }


@hookimpl
def register_heads(register: Any) -> None:
    register(IntentSlotsHead)
