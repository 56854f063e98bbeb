"""Input kinds: how one example's texts become encoder rows, owned in one place per kind.

A head declares its kind (``input_kind = TEXT``); everything that depends on it goes through
the kind object: what a pipeline call takes (`InputKind.items_from_call`), which row fields an
example is made of (`InputKind.fields`, `InputKind.item_from_row`), how items are packed into
token rows (`InputKind.encode`, `InputKind.model_inputs`), the window stride of long contexts
(`InputKind.stride`), the keywords through which ``decode`` gets the texts
(`InputKind.decode_context`), the command-line flags that build one input (one per field) and
one readable line per input (`InputKind.show`).

Built in: `TEXT` (``[CLS] a [SEP]``), `PAIR` (``[CLS] a [SEP] b [SEP]``) and
`QUESTION_CONTEXT` (a pair whose context is split into overlapping windows). A plugin defines
a new kind by subclassing `InputKind` (the defaults treat an item as one string per field) and
setting ``input_kind = MyKind()`` on its head; nothing in the core changes. A kind whose
`InputKind.model_inputs` returns ``(B, N, L)`` arrays (``rows_per_example = N``) gets hidden
states ``(B, N, L, D)`` in its head (see `distilbert_heads.model.DistilBertTaskModel`).

No Keras here: importing this module stays cheap.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from distilbert_heads.text.tokenizer import MAX_WHOLE_TEXT_CHARS, PREFIX_CHARS_PER_TOKEN, BatchEncoding

__all__ = [
    "BUILTIN_KINDS",
    "PAIR",
    "QUESTION_CONTEXT",
    "TEXT",
    "InputKind",
    "PairKind",
    "QuestionContextKind",
    "TextKind",
    "input_kind_of",
]

_PRE_TOKENS = re.compile(r"\w+|[^\w\s]")


class InputKind:
    """Everything about how one example's texts become encoder rows; one object per kind.

    An *item* is one example's texts as the kind defines them (text: ``str``; pair:
    ``(a, b)``; question_context: ``(question, context)``; a plugin kind: whatever it likes,
    e.g. ``(context, [choice, ...])``). The defaults here treat an item as one string per
    field (a bare string when there is one field, else a tuple in `fields` order), packed as
    ``[CLS] first [SEP] second [SEP]`` (longest text trimmed first); override what differs.
    """

    name: ClassVar[str] = ""
    fields: ClassVar[tuple[str, ...]] = ()
    call_keywords: ClassVar[tuple[str, ...]] = ()
    decode_keywords: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    # What heads of this kind do, in words, for "question=/context= are for <it> heads".
    head_family: ClassVar[str] = ""
    # Encoder rows per example: 1 (rows (B, L)); N > 1: model_inputs gives (B, N, L) arrays (the
    # model is built with N rows per example, any N works when called); None: a variable number of
    # rows (windows) per example, flattened, matched back through encoding.overflow_to_sample.
    rows_per_example: ClassVar[int | None] = 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # -- pipelines and the CLI ---------------------------------------------------------------
    def items_from_call(self, inputs: Any, keywords: Mapping[str, Any]) -> tuple[list[Any], bool]:
        """(items, single) from what a pipeline caller passed; ``keywords`` are the call keywords given."""
        if keywords:
            raise TypeError(f"This head takes {self.description}; pass the inputs as the first argument.")
        if self._is_item(inputs):
            return [self._item(inputs, 0)], True
        items = _as_list(inputs, "inputs", f"{self.description} or a list of them")
        return [self._item(item, index) for index, item in enumerate(items)], False

    def item_from_row(self, row: Mapping[str, Any] | Any, where: str) -> Any:
        """One item from an example row (a pydantic model or a dict) by `fields`.

        Raises ValueError naming ``where``, the missing field or the value that is not text.
        """
        values = _row_values(row, self.fields, where, self.description)
        not_text = [
            f"{field} is {_json_kind(values[field])}" for field in self.fields if not isinstance(values[field], str)
        ]
        if not_text:
            raise ValueError(
                f'{where}: {", ".join(not_text)}, not a string; give the text in quotes (e.g. "5"), and "" for '
                "an empty text."
            )
        parts = tuple(values[field] for field in self.fields)
        return parts[0] if len(parts) == 1 else parts

    def decode_context(self, items: Sequence[Any]) -> dict[str, Any]:
        """The texts handed to ``decode`` as keywords: the items under the one decode keyword, or
        (several keywords) the items' parts, one list per keyword."""
        if len(self.decode_keywords) == 1:
            return {self.decode_keywords[0]: list(items)}
        return {keyword: [item[i] for item in items] for i, keyword in enumerate(self.decode_keywords)}

    def length_key(self, item: Any, max_length: int) -> tuple[int, int]:
        """Approximate length for sorting inputs into batches: (words and punctuation marks, characters)
        in each text's first ``max_length * PREFIX_CHARS_PER_TOKEN`` characters, past which truncation
        keeps nothing more; counted without building a list, so memory stays flat."""
        return _approximate_length(item, max_length * PREFIX_CHARS_PER_TOKEN)

    def show(self, item: Any) -> str:
        """One line for people (demo, CLI)."""
        return item if isinstance(item, str) else " || ".join(map(str, _texts_of(item)))

    # -- packing -----------------------------------------------------------------------------
    def stride(self, max_length: int, requested: int | None = None) -> int:
        """Window overlap in tokens; 0 for kinds that do not window."""
        return 0

    def encode(
        self, tokenizer: Any, items: Sequence[Any], max_length: int, *, stride: int | None = None
    ) -> BatchEncoding:
        """Tokenize and pack ``items`` into encoder rows, truncating each to ``max_length`` tokens."""
        if len(self.fields) == 1:
            return tokenizer.encode(list(items), max_length=max_length, truncation="longest_first")
        if len(self.fields) == 2:
            firsts, seconds = [item[0] for item in items], [item[1] for item in items]
            return tokenizer.encode(firsts, seconds, max_length=max_length, truncation="longest_first")
        raise NotImplementedError(
            f"{type(self).__name__} has {len(self.fields)} fields {self.fields}; the default packing handles one or "
            "two texts per item. Override encode (and model_inputs) to pack this kind."
        )

    def encode_rows(
        self, tokenizer: Any, rows: Sequence[Any], max_length: int, *, stride: int | None = None
    ) -> BatchEncoding:
        """`encode` of the items of validated example rows (`item_from_row`, row ``i`` named
        ``example i``): what a head's ``encode_examples`` packs before adding its labels."""
        items = [self.item_from_row(row, f"example {index}") for index, row in enumerate(rows)]
        return self.encode(tokenizer, items, max_length, stride=stride)

    def model_inputs(self, encoding: BatchEncoding) -> dict[str, np.ndarray]:
        """The arrays the task model takes: ``(rows, L)`` by default; a kind with N rows per example
        returns ``(B, N, L)`` arrays."""
        return encoding.as_model_inputs()

    # -- helpers for the default item rules --------------------------------------------------------
    def _is_item(self, value: Any) -> bool:
        if len(self.fields) == 1:
            return isinstance(value, str)
        if isinstance(value, Mapping):
            return True
        return (
            isinstance(value, tuple) and len(value) == len(self.fields) and all(isinstance(part, str) for part in value)
        )

    def _item(self, value: Any, index: int) -> Any:
        if isinstance(value, Mapping) and all(field in value for field in self.fields):
            value = tuple(value[field] for field in self.fields)
        if len(self.fields) == 1 and isinstance(value, tuple) and len(value) == 1:
            value = value[0]
        if len(self.fields) == 1 and isinstance(value, str):
            return value
        if (
            len(self.fields) > 1
            and isinstance(value, (tuple, list))
            and len(value) == len(self.fields)
            and all(isinstance(part, str) for part in value)
        ):
            return tuple(value)
        raise TypeError(
            f"Input {index} is {reprlib.repr(value)}; this head takes {self.description}: "
            + (
                "a string"
                if len(self.fields) == 1
                else f"a tuple ({', '.join(self.fields)}) of strings (or a dict with {', '.join(self.fields)})"
            )
            + "."
        )


class TextKind(InputKind):
    """One text per example, packed ``[CLS] text [SEP]`` and truncated to ``max_length``."""

    name = "text"
    fields = ("text",)
    decode_keywords = ("texts",)
    description = "one text"
    head_family = "text"

    def items_from_call(self, inputs: Any, keywords: Mapping[str, Any]) -> tuple[list[str], bool]:
        if keywords:
            raise TypeError(f"This head takes {self.description}; pass a string or a list of strings.")
        if isinstance(inputs, str):
            return [inputs], True
        items = _as_list(inputs, "texts", "a string or a list of strings")
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise TypeError(
                    f"Input {index} is {type(item).__name__} ({reprlib.repr(item)}); this head takes strings. "
                    "Pass a string or a list of strings (convert missing values to '')."
                )
        return items, False

    def show(self, item: Any) -> str:
        return str(item)


class PairKind(InputKind):
    """Two texts per example, packed ``[CLS] a [SEP] b [SEP]``; the longer text is trimmed first."""

    name = "pair"
    fields = ("text_a", "text_b")
    decode_keywords = ("pairs",)
    description = "a pair of texts"
    head_family = "text pair"

    def items_from_call(self, inputs: Any, keywords: Mapping[str, Any]) -> tuple[list[tuple[str, str]], bool]:
        if keywords:
            raise TypeError(f"This head takes {self.description}; pass a tuple (text_a, text_b) or a list of them.")
        if self._is_item(inputs):
            return [self._item(inputs, 0)], True
        if isinstance(inputs, str):
            raise TypeError(
                f"Got one string ({_preview(inputs)}); this head takes text pairs: pass a tuple (text_a, text_b), "
                "or a list of them."
            )
        if isinstance(inputs, tuple) and inputs and all(isinstance(part, str) for part in inputs):
            raise TypeError(
                f"Got a tuple of {len(inputs)} strings; a pair is exactly two, (text_a, text_b). Pass a list of "
                "tuples for several pairs."
            )
        items = _as_list(inputs, "pairs", "a tuple (text_a, text_b) or a list of them")
        return [self._item(item, index) for index, item in enumerate(items)], False

    def _item(self, value: Any, index: int) -> tuple[str, str]:
        if isinstance(value, Mapping) and "text_a" in value and "text_b" in value:
            value = (value["text_a"], value["text_b"])
        if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(part, str) for part in value):
            return (value[0], value[1])
        raise TypeError(
            f"Input {index} is {reprlib.repr(value)}; this head takes text pairs: a tuple (text_a, text_b) of two "
            "strings (or a dict with 'text_a' and 'text_b')."
        )

    def show(self, item: Any) -> str:
        return f"{item[0]} || {item[1]}"


class QuestionContextKind(InputKind):
    """A question and the passage holding its answer: ``[CLS] question [SEP] context window [SEP]``.

    Contexts are never truncated but split into windows of ``max_length`` tokens that overlap
    by a stride (the question repeats in every window; ``encoding.overflow_to_sample`` maps
    windows to questions). The one stride rule, for training and pipelines alike
    (`QuestionContextKind.stride` and `QuestionContextKind.encode`):

    - asked for: the stride given, at most ``max_length // 2`` (a window must move forward by
      at least half its size, or long contexts explode into windows);
    - by default: ``max_length // 4`` (96 tokens of overlap at ``max_length=384``), lowered to
      half the room the longest question of the batch leaves for context, so a long question
      never makes the default stride too large to window with.
    """

    name = "question_context"
    fields = ("question", "context")
    call_keywords = ("question", "context")
    decode_keywords = ("questions", "contexts")
    description = "a question and the passage holding its answer"
    head_family = "question answering"
    rows_per_example = None

    def items_from_call(self, inputs: Any, keywords: Mapping[str, Any]) -> tuple[list[tuple[str, str]], bool]:
        question, context = keywords.get("question"), keywords.get("context")
        if inputs is not None:
            if question is not None or context is not None:
                raise TypeError("Pass either question=/context= or the inputs as the first argument, not both.")
            if isinstance(inputs, str):
                raise TypeError(
                    f"Got one string ({_preview(inputs)}); question answering needs a question and a context: "
                    "pipe(question='...', context='...') or pipe({'question': ..., 'context': ...})."
                )
            if isinstance(inputs, Mapping):
                return [self._item(inputs, 0)], True
            items = _as_list(inputs, "inputs", "a dict {'question', 'context'} or a list of them")
            return [self._item(item, index) for index, item in enumerate(items)], False
        if question is None or context is None:
            raise TypeError(
                "A question answering pipeline needs a question and a context: pipe(question='...', context='...'), "
                "or lists of equal length, or pipe({'question': ..., 'context': ...})."
            )
        if isinstance(question, str) and isinstance(context, str):
            return [(question, context)], True
        if isinstance(question, str) or isinstance(context, str):
            raise TypeError(
                "question and context must both be strings or both be lists of equal length; got one string and one "
                f"{type(context if isinstance(question, str) else question).__name__}."
            )
        questions = _as_list(question, "question", "a string or a list of strings")
        contexts = _as_list(context, "context", "a string or a list of strings")
        if len(questions) != len(contexts):
            raise ValueError(
                f"Got {len(questions)} questions and {len(contexts)} contexts; pass one context per question."
            )
        items = [{"question": q, "context": c} for q, c in zip(questions, contexts)]
        return [self._item(item, index) for index, item in enumerate(items)], False

    def _item(self, value: Any, index: int) -> tuple[str, str]:
        if (
            isinstance(value, Mapping)
            and isinstance(value.get("question"), str)
            and isinstance(value.get("context"), str)
        ):
            return (value["question"], value["context"])
        raise TypeError(
            f"Input {index} is {reprlib.repr(value)}; question answering takes dicts "
            "{'question': str, 'context': str} (or question=..., context=... keywords)."
        )

    def length_key(self, item: Any, max_length: int) -> tuple[int, int]:
        # Contexts are windowed, never cut: everything up to the whole-text limit counts.
        return _approximate_length(item, MAX_WHOLE_TEXT_CHARS + 1)

    def show(self, item: Any) -> str:
        return f"Q: {item[0]}"

    def stride(self, max_length: int, requested: int | None = None) -> int:
        if requested is None:
            return max_length // 4
        if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)) or requested < 0:
            raise ValueError(
                f"stride must be a non-negative integer (tokens of overlap between windows), got {requested!r}."
            )
        return min(int(requested), max_length // 2)

    def encode(
        self, tokenizer: Any, items: Sequence[Any], max_length: int, *, stride: int | None = None
    ) -> BatchEncoding:
        questions, contexts = [q for q, _ in items], [c for _, c in items]
        return tokenizer.encode(
            questions,
            contexts,
            max_length=max_length,
            truncation="only_second",
            stride=self.batch_stride(tokenizer, items, max_length, stride),
            return_overflowing=True,
        )

    def batch_stride(self, tokenizer: Any, items: Sequence[Any], max_length: int, requested: int | None = None) -> int:
        """The stride `encode` uses for these items: `stride`'s, and by default no more than half the
        room the longest question leaves for context."""
        stride = self.stride(max_length, requested)
        if requested is not None or not items:
            return stride
        questions = [question for question, _ in items]
        longest_question = max(len(row) - 2 for row in tokenizer.encode(questions, max_length=max_length).tokens)
        return max(0, min(stride, (max_length - 3 - longest_question) // 2))


TEXT = TextKind()
PAIR = PairKind()
QUESTION_CONTEXT = QuestionContextKind()
BUILTIN_KINDS: dict[str, InputKind] = {kind.name: kind for kind in (TEXT, PAIR, QUESTION_CONTEXT)}


def input_kind_of(head_or_class: Any) -> InputKind:
    """The head's `InputKind` object.

    A 0.1-style string ``input_kind`` (``"text"``, ``"pair"``, ``"question_context"``) resolves to
    the built-in kind of that name; a head without one takes text. Anything else is an error
    naming the head and the built-in kinds.
    """
    kind = getattr(head_or_class, "input_kind", TEXT)
    if isinstance(kind, InputKind):
        return kind
    if isinstance(kind, type) and issubclass(kind, InputKind):
        return kind()
    if isinstance(kind, str) and kind in BUILTIN_KINDS:
        return BUILTIN_KINDS[kind]
    cls = head_or_class if isinstance(head_or_class, type) else type(head_or_class)
    head_name = getattr(head_or_class, "name", None) if not isinstance(head_or_class, type) else None
    named = f"{cls.__module__}.{cls.__qualname__}" + (f" (head {head_name!r})" if isinstance(head_name, str) else "")
    raise ValueError(
        f"{named} has input_kind={kind!r}, which is not an input kind: the built-in kinds are "
        f"{', '.join(map(repr, BUILTIN_KINDS))} (distilbert_heads.input_kinds.TEXT, PAIR, QUESTION_CONTEXT). "
        "Set input_kind to one of them, or to an instance of your own distilbert_heads.input_kinds.InputKind subclass."
    )


# -- helpers ------------------------------------------------------------------------------------
def _as_list(value: Any, name: str, expected: str) -> list[Any]:
    if value is None or isinstance(value, (bytes, Mapping)) or not isinstance(value, (Sequence, np.ndarray, Iterator)):
        raise TypeError(f"{name} must be {expected}, not {type(value).__name__}.")
    return list(value)


def _preview(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _texts_of(item: Any) -> Iterator[str]:
    """Every string in an item (a string, or tuples/lists of strings, nested)."""
    if isinstance(item, str):
        yield item
    elif isinstance(item, (tuple, list)):
        for part in item:
            yield from _texts_of(part)


def _approximate_length(item: Any, limit: int) -> tuple[int, int]:
    """(words and punctuation marks, characters) in each text's first ``limit`` characters: BERT's
    pre-tokenizer split, before word pieces; counted without building a list, so memory stays flat."""
    parts = [part[:limit] for part in _texts_of(item)]
    return sum(sum(1 for _ in _PRE_TOKENS.finditer(part)) for part in parts), sum(len(part) for part in parts)


def _row_values(row: Any, fields: Sequence[str], where: str, description: str) -> dict[str, Any]:
    """The ``fields`` of a row (a dict or a pydantic model); a missing one is a ValueError naming ``where``."""
    if isinstance(row, Mapping):
        present = list(row)
        absent = [field for field in fields if field not in row]
        values = {field: row[field] for field in fields if field in row}
    else:
        present = [name for name in getattr(type(row), "model_fields", {}) if getattr(row, name, None) is not None]
        absent = [field for field in fields if not hasattr(row, field)]
        values = {field: getattr(row, field) for field in fields if hasattr(row, field)}
    if absent:
        raise ValueError(
            f"{where}: no column(s) {', '.join(absent)} (the row has {', '.join(map(str, present)) or 'no columns'}); "
            f"this model reads rows with {', '.join(fields)} ({description})."
        )
    return values


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return "a list" if isinstance(value, list) else "an object"
