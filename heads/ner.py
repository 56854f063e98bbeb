"""Token classification: named entities, generic token tags, part-of-speech tags.

Hugging Face ``DistilBertForTokenClassification``'s head: dropout -> ``classifier``
Dense(num_classes) on every position. Training labels use -100 for positions without a label
(special tokens, sub-word continuations, padding); loss and accuracy skip them.

File rows come in two forms (JSONL, or CSV with a header):

* words and their tags: ``{"tokens": ["Ada", "visited", "Paris"], "tags": ["B-PER", "O", "B-LOC"]}``
  (CSV cells: space-separated, ``Ada visited Paris``). The text the model reads is the words
  joined by single spaces. Any tag set works: BIO/IOB2, IOB1, or plain tags (IO, part of speech).
* text and character-span entities: ``{"text": "Ada visited Paris.", "entities": [{"start": 0,
  "end": 3, "label": "PER"}, ...]}`` (CSV: the entities cell holds that JSON list). Spans become
  BIO tags on the tokenizer's words: a word starting inside an entity is ``B-`` (its first word)
  or ``I-``, every other word ``O``.

Training labels go on the first sub-token of each tokenizer word; ``##`` continuations, special
tokens and padding get -100. When the tokenizer splits one file word into several (``U.S.``),
the later ones get the continuation tag (``I-X`` after ``B-X``, else the same tag) when the head
knows it, -100 otherwise.

Evaluation is entity level on character spans: a predicted entity counts only if its type,
start and end all match a gold entity (gold entities of the words form are grouped exactly as
`decode` groups predicted tags).
"""

from __future__ import annotations

import bisect
import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import keras
import numpy as np
from keras import ops
from pydantic import BaseModel, Field, field_validator, model_validator

from distilbert_heads.heads._classifier import ClassificationOptions
from distilbert_heads.heads._common import check_hidden_shape, class_names, encoding_field, softmax_np
from distilbert_heads.heads._hf_weights import dense_weights, hf_label_maps, load_dense_layers
from distilbert_heads.heads._labels import check_predictions
from distilbert_heads.losses import IGNORE_INDEX, MaskedSparseCategoricalAccuracy, MaskedSparseCategoricalCrossentropy
from distilbert_heads.metrics import micro_scores
from distilbert_heads.plugins.head import DistillationTarget, HeadOptions, TaskHead
from distilbert_heads.plugins.hookspecs import hookimpl
from distilbert_heads.plugins.input_kinds import TEXT, InputKind
from distilbert_heads.tasks import NLPTaskType

# CoNLL-2003 BIO tags in the order of the Hugging Face ``conll2003`` dataset.
CONLL_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


class NerOptions(ClassificationOptions):
    """Options of `NerHead`.

    num_classes / labels: tags in index order. With neither given: the 9 CoNLL-2003 BIO tags.
    dropout_rate: dropout before the classifier (HF ``dropout``, 0.1).
    """

    dropout_rate: float = Field(default=0.1, ge=0.0, lt=1.0)


# -- file rows -----------------------------------------------------------------------------------
class EntitySpan(BaseModel):
    """A gold entity: characters ``text[start:end]`` of type ``label`` (e.g. ``PER``, no B-/I-)."""

    start: int = Field(ge=0)
    end: int
    label: str

    @field_validator("label")
    @classmethod
    def _type_only(cls, value: str) -> str:
        value = value.strip()
        if not value or value == "O":
            raise ValueError(f"entity label {value!r} is not an entity type; give the type, such as 'PER'")
        prefix, entity_type = split_tag(value)
        if prefix is not None:
            raise ValueError(
                f"entity label {value!r} has a B-/I- prefix; give the type alone ({entity_type!r}): the tags are made "
                "from the spans"
            )
        return value


class NerExample(BaseModel):
    """One row: ``tokens`` + ``tags`` (one tag per word), or ``text`` + ``entities`` (character spans).

    After validation ``text`` is always set (the words joined by single spaces for the first
    form): it is what a pipeline should be given to predict this row.
    """

    tokens: list[str] | None = None
    tags: list[str] | None = None
    text: str | None = None
    entities: list[EntitySpan] | None = None

    @field_validator("tokens", "tags", mode="before")
    @classmethod
    def _split_cell(cls, value: Any) -> Any:
        if isinstance(value, str):  # a CSV cell: words separated by spaces
            return value.split() or None
        return value

    @field_validator("entities", mode="before")
    @classmethod
    def _parse_cell(cls, value: Any) -> Any:
        if isinstance(value, str):  # a CSV cell holding the JSON list
            if not value.strip():
                return None
            try:
                return json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f'entities must be a JSON list like [{{"start": 0, "end": 3, "label": "PER"}}] ({error.msg})'
                ) from None
        return value

    @field_validator("text", mode="before")
    @classmethod
    def _empty_cell(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _one_form(self) -> NerExample:
        has_words = self.tokens is not None or self.tags is not None
        has_spans = self.entities is not None
        if has_words:
            if self.tokens is None or self.tags is None:
                missing = "tags" if self.tags is None else "tokens"
                raise ValueError(f"{missing} is missing: rows with tokens need tags too, one tag per token")
            if has_spans:
                raise ValueError("give either tokens + tags or text + entities, not both")
            if len(self.tokens) != len(self.tags):
                raise ValueError(
                    f"tokens has {len(self.tokens)} words but tags has {len(self.tags)}; give exactly one tag per word"
                )
            if not self.tokens:
                raise ValueError("tokens is empty; every row needs at least one word")
            for i, token in enumerate(self.tokens):
                if not token or token != token.strip() or len(token.split()) != 1:
                    raise ValueError(f"tokens[{i}] is {token!r}; a word must be non-empty and without spaces")
            for i, tag in enumerate(self.tags):
                if not tag or len(tag.split()) != 1:
                    raise ValueError(f"tags[{i}] is {tag!r}; a tag must be non-empty and without spaces")
            joined = " ".join(self.tokens)
            if self.text is not None and self.text != joined:
                raise ValueError("text must be the tokens joined by single spaces (or be left out) in rows with tokens")
            self.text = joined
            return self
        if self.text is None:
            raise ValueError(
                "a row needs tokens + tags (one BIO tag per word) or text + entities (character spans); found neither"
            )
        if not self.text.strip():
            raise ValueError("text is empty; every row needs the text to tag")
        entities = sorted(self.entities or [], key=lambda e: (e.start, e.end))
        for entity in entities:
            if not entity.start < entity.end <= len(self.text):
                raise ValueError(
                    f"entity {entity.label} has start={entity.start}, end={entity.end}, but the text has "
                    f"{len(self.text)} characters; spans need 0 <= start < end <= {len(self.text)} (end exclusive)"
                )
        for before, after in zip(entities, entities[1:]):
            if after.start < before.end:
                raise ValueError(
                    f"entities {before.label} [{before.start}, {before.end}) and {after.label} [{after.start}, "
                    f"{after.end}) overlap; nested or overlapping entities cannot be tagged with BIO"
                )
        self.entities = entities
        return self

    def word_spans(self) -> list[tuple[int, int]]:
        """Character spans of the words in ``text`` (words form only)."""
        spans, position = [], 0
        for token in self.tokens or []:
            spans.append((position, position + len(token)))
            position += len(token) + 1
        return spans

    def gold_entities(self) -> set[tuple[str, int, int]]:
        """``(type, start, end)`` character spans of the gold entities."""
        if self.entities is not None:
            return {(e.label, e.start, e.end) for e in self.entities}
        spans = self.word_spans()
        grouped = group_entities(self.tags, [1.0] * len(spans), spans, self.text, list(range(len(spans))))
        return {(e["entity"], e["start"], e["end"]) for e in grouped}


def continuation_tag(tag: str) -> str:
    """The tag of a later piece of a word tagged ``tag``: ``I-X`` inside an entity, else the same tag."""
    prefix, entity_type = split_tag(tag)
    return f"I-{entity_type}" if prefix is not None else tag


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
    input_kind: ClassVar[InputKind] = TEXT
    example_schema: ClassVar[type[BaseModel]] = NerExample
    hf_architecture: ClassVar[str | None] = "DistilBertForTokenClassification"

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

    def distillation_targets(self) -> dict[str, DistillationTarget]:
        """Soft targets over the tags at every real token (padding masked out)."""
        return {"logits": DistillationTarget(kind="logits", axis=-1, tokens="rows")}

    def default_metrics(self) -> dict[str, list[Any]]:
        return {"logits": [MaskedSparseCategoricalAccuracy(ignore_index=-100, name="accuracy")]}

    def decode(
        self, outputs: Mapping[str, Any], encoding: Any = None, *, texts: Sequence[str] | None = None
    ) -> list[Any]:
        """Entities for people: with ``texts`` (the pipeline's inputs) and the tokenizer's ``encoding``
        (a `BatchEncoding`, or a dict with ``offsets``, ``word_ids``, ``attention_mask`` and optionally
        ``overflow_to_sample``), one list per text of ``{"entity", "score", "start", "end", "word"}``
        with character spans into the text and ``word == text[start:end]``.

        Sub-words are merged into their word (the word's tag is its first sub-token's) and BIO/IOB2
        tags grouped as `group_entities` says. Windows of one long text (``overflow_to_sample``) are
        stitched: a token seen in two windows keeps the first window's prediction.

        Without ``texts`` there are no characters to point at: each row gets its per-token
        ``{"tags", "scores"}`` for its unpadded tokens, plus ``"entities"`` when ``encoding`` is a
        dict that carries ``offsets`` and ``text`` (the row strings).
        """
        logits = np.asarray(ops.convert_to_numpy(outputs["logits"]), dtype=np.float32)
        probs = softmax_np(logits)
        ids = probs.argmax(axis=-1)
        best = probs.max(axis=-1)
        names = self.class_names
        if texts is not None:
            return self._entities_per_text(ids, best, encoding, list(texts))
        mask = encoding_field(encoding, "attention_mask")
        offsets = encoding_field(encoding, "offsets")
        row_texts = encoding_field(encoding, "text")
        word_ids = encoding_field(encoding, "word_ids")
        results = []
        for b in range(logits.shape[0]):
            length = int(np.asarray(mask[b]).sum()) if mask is not None else logits.shape[1]
            tags = [names[int(i)] for i in ids[b, :length]]
            scores = [float(s) for s in best[b, :length]]
            result: dict[str, Any] = {"tags": tags, "scores": scores}
            if offsets is not None and row_texts is not None:
                result["entities"] = group_entities(
                    tags,
                    scores,
                    offsets[b][:length],
                    row_texts[b],
                    None if word_ids is None else list(word_ids[b])[:length],
                )
            results.append(result)
        return results

    def _entities_per_text(
        self, ids: np.ndarray, best: np.ndarray, encoding: Any, texts: list[str]
    ) -> list[list[dict[str, Any]]]:
        offsets = encoding_field(encoding, "offsets")
        word_ids = encoding_field(encoding, "word_ids")
        if offsets is None or word_ids is None:
            raise ValueError(
                "NerHead.decode(texts=...) needs the tokenizer's encoding of those texts (offsets and word_ids) to "
                "find the entities' characters: pass the BatchEncoding that DistilBertTokenizer.encode returned."
            )
        mask = encoding_field(encoding, "attention_mask")
        samples = encoding_field(encoding, "overflow_to_sample") or list(range(len(ids)))
        if len(samples) != len(ids):
            raise ValueError(
                f"the encoding has {len(samples)} rows but the outputs have {len(ids)}; pass this batch's encoding"
            )
        names = self.class_names
        # Per text: its tokens (first window wins), keyed by (word, start, end) to drop window overlaps.
        tokens: list[dict[tuple[int, int, int], tuple[str, float]]] = [{} for _ in texts]
        for row, sample in enumerate(samples):
            if not 0 <= int(sample) < len(texts):
                raise ValueError(f"encoding row {row} belongs to input {sample}, but {len(texts)} texts were given")
            seen = tokens[int(sample)]
            for j, word in enumerate(word_ids[row]):
                if word is None or (mask is not None and not mask[row][j]):
                    continue
                key = (int(word), int(offsets[row][j][0]), int(offsets[row][j][1]))
                seen.setdefault(key, (names[int(ids[row, j])], float(best[row, j])))
        results = []
        for text, seen in zip(texts, tokens):
            keys = sorted(seen, key=lambda key: (key[1], key[2], key[0]))
            results.append(
                group_entities(
                    [seen[k][0] for k in keys],
                    [seen[k][1] for k in keys],
                    [(k[1], k[2]) for k in keys],
                    text,
                    [k[0] for k in keys],
                )
            )
        return results

    # -- training and evaluating from files -----------------------------------------------------
    @classmethod
    def options_from_examples(cls, examples: Sequence[BaseModel]) -> dict[str, Any]:
        """``{"labels": [...]}``: ``"O"`` first, then the tags in order of first appearance (spans
        give ``B-X``, ``I-X``); an ``I-X`` is added after the rest for every ``B-X`` that lacks one."""
        tags: dict[str, None] = {"O": None}
        for example in examples:
            if example.tags is not None:
                tags.update(dict.fromkeys(example.tags))
            for entity in example.entities or []:
                tags.update(dict.fromkeys((f"B-{entity.label}", f"I-{entity.label}")))
        for tag in list(tags):
            prefix, entity_type = split_tag(tag)
            if prefix == "B":
                tags.setdefault(f"I-{entity_type}", None)
        return {"labels": list(tags)}

    def encode_examples(
        self, examples: Sequence[BaseModel], tokenizer: Any, max_length: int
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Token ids of each row's ``text`` (truncated to ``max_length``) and ``{"logits": (N, L) tag ids}``,
        -100 on special tokens, padding and ``##`` continuations (see the module docstring)."""
        encoding = self.input_kind.encode_rows(tokenizer, examples, max_length)
        index = {name: i for i, name in enumerate(self.class_names)}
        labels = np.full(encoding.input_ids.shape, IGNORE_INDEX, dtype=np.int32)
        misaligned = 0
        for row, example in enumerate(examples):
            units = _tag_units(example)
            starts = [unit[0] for unit in units]
            word_starts: set[int] = set()
            previous_word, previous_unit = None, None
            for j, word in enumerate(encoding.word_ids[row]):
                if word is None or word == previous_word:
                    continue
                previous_word = word
                char = int(encoding.offsets[row][j][0])
                word_starts.add(char)
                u = bisect.bisect_right(starts, char) - 1
                unit = u if u >= 0 and char < units[u][1] else None
                if unit is None:
                    tag, required = "O", True
                elif unit == previous_unit:
                    tag, required = units[unit][3], False
                else:
                    tag, required = units[unit][2], True
                previous_unit = unit
                if tag in index:
                    labels[row, j] = index[tag]
                elif required:
                    raise _unknown_tag(row, tag, list(index))
            if example.entities is not None:
                last = max((int(o[1]) for o in encoding.offsets[row]), default=0)
                misaligned += sum(1 for e in example.entities if e.start < last and e.start not in word_starts)
        if misaligned:
            warnings.warn(
                f"{misaligned} entit{'y' if misaligned == 1 else 'ies'} start inside a word of the tokenizer, so they "
                "cannot be tagged exactly; check that the entities' start offsets fall on word boundaries.",
                stacklevel=2,
            )
        return self.input_kind.model_inputs(encoding), {"logits": labels}

    chance_description: ClassVar[str] = "predicting nothing"

    def chance_predictions(self, examples: Sequence[BaseModel], seed: int = 0) -> list[Any]:
        """What guessing gives: no entities in any row."""
        return [[] for _ in examples]

    def evaluate(self, examples: Sequence[BaseModel], predictions: Sequence[Any]) -> dict[str, float]:
        """Entity-level micro ``precision``, ``recall`` and ``f1`` on character spans: a predicted
        entity counts when its type, start and end equal a gold entity's."""
        check_predictions(examples, predictions)
        # A gold tag the head cannot predict would only lower recall, silently: refuse it as training does.
        known = set(self.class_names)
        for row, example in enumerate(examples):
            unknown = next((unit[2] for unit in _tag_units(example) if unit[2] not in known), None)
            if unknown is not None:
                raise _unknown_tag(row, unknown, self.class_names)

        def spans(predicted: Any) -> set[tuple[str, int, int]]:
            if isinstance(predicted, Mapping):
                predicted = predicted.get("entities", [])
            return {(e["entity"], int(e["start"]), int(e["end"])) for e in predicted}

        return micro_scores((example.gold_entities(), spans(p)) for example, p in zip(examples, predictions))

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

    def hf_config(self) -> dict[str, Any]:
        # DistilBertForTokenClassification's dropout is the encoder's `dropout` field: nothing of its own.
        return hf_label_maps(self.class_names)


def _unknown_tag(row: int, tag: str, known: list[str]) -> ValueError:
    return ValueError(
        f"example {row}: unknown tag {tag!r}; this head knows the tags {known}. Fix the row, or build the head "
        "with labels=[...] that include it (the trainer takes them from the training file when you give none)."
    )


def _tag_units(example: NerExample) -> list[tuple[int, int, str, str]]:
    """Sorted ``(start, end, tag of its first word, tag of later words)`` character units of a row:
    its words (words form) or its entities (spans form; characters outside them are ``O``)."""
    if example.entities is not None:
        return [(e.start, e.end, f"B-{e.label}", f"I-{e.label}") for e in example.entities]
    return [(start, end, tag, continuation_tag(tag)) for (start, end), tag in zip(example.word_spans(), example.tags)]


@hookimpl
def register_heads(register: Any) -> None:
    register(NerHead)
