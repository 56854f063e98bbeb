"""Strings in, answers out: a SavedModel that tokenizes in the graph and decodes the answers too.

`export_saved_model_text(model, out)` writes a SavedModel whose ``serving_default`` takes raw
strings and returns what `distilbert_heads.pipeline` returns, computed by TensorFlow and TensorFlow
Text ops alone, so a serving host (TF Serving, KServe) needs neither this package nor Python.

Inputs (string tensors of shape (batch,)), by the heads' input kind:
- text (sentiment/classification, regression, NER): ``text``;
- pair (pairwise): ``text`` and ``text_pair``;
- question + context (QA): ``question`` and ``context``.

Outputs, named ``<head>__<field>`` (one set per head; all heads of the model must share one input kind):
- classification: ``label`` (string), ``score`` (its probability), ``scores`` (batch, classes)
  in class order; regression / similarity: ``score``, the raw value;
- NER (token heads): per token (special tokens left out, rows padded): ``tags``, ``tag_scores``,
  ``token_start``, ``token_end`` (character offsets, -1 on padding); per entity, grouped as
  `distilbert_heads.heads.ner.group_entities` does: ``entity``, ``entity_score``,
  ``entity_start``, ``entity_end``, ``entity_word`` (padded with "" / 0 / -1) and ``num_entities``;
- QA: ``answer``, ``score``, ``start``, ``end``: the best legal span of the FIRST window only
  (the question whole, the context cut to ``max_length`` tokens, like the pipeline's first
  window); ``answer=""``, ``score=0`` and ``start=end=-1`` when no span is legal or the question
  leaves no room for the context (where the pipeline raises). For a context longer than one
  window the pipeline's answer, the best over all windows, can differ.

Offsets are character (code point) offsets into the strings as sent, as the pipeline reports them.
Plugin heads have no in-graph decoder: exporting a model with one raises `ExportError` naming it
(export it with `export_saved_model`, ids in, raw outputs out, instead).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras

from distilbert_heads import atomic
from distilbert_heads.heads.ner import NerHead, split_tag
from distilbert_heads.heads.pairwise import PairwiseHead
from distilbert_heads.heads.qa_span import PADDING_THRESHOLD, QASpanHead
from distilbert_heads.heads.sentiment import SentimentHead
from distilbert_heads.model.task_model import DistilBertTaskModel, check_max_length
from distilbert_heads.plugins.head import TaskHead
from distilbert_heads.plugins.input_kinds import input_kind_of
from distilbert_heads.serving.export import (
    TOKENIZER_DIR,
    ExportError,
    check_export_folder,
    require_tensorflow_backend,
)

__all__ = ["FORMAT", "INPUT_NAMES", "export_saved_model_text", "unsupported_heads_saved_model_text"]

FORMAT = "saved_model"
# The signature's string inputs per input kind.
INPUT_NAMES = {"text": ("text",), "pair": ("text", "text_pair"), "question_context": ("question", "context")}
_DECODED_HEADS = (SentimentHead, PairwiseHead, NerHead, QASpanHead)
_OTHER_FORMATS = "the ids-in SavedModel (distilbert_heads.serving.export.export_saved_model)"


def unsupported_heads_saved_model_text(model: DistilBertTaskModel) -> dict[str, str]:
    """Head name -> why the strings-in SavedModel cannot hold it (an empty dict: all can)."""
    return {
        name: (
            f"{type(head).__name__} has no in-graph decoder (only the built-in sentiment/classification, "
            "regression, pairwise, NER and QA heads have one)"
        )
        for name, head in model.heads.items()
        if type(head) not in _DECODED_HEADS
    }


def export_saved_model_text(
    model: DistilBertTaskModel,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    max_length: int | None = None,
    max_answer_length: int | None = None,
) -> Path:
    """Write ``model`` as a strings-in, answers-out SavedModel folder ``out`` (see the module docstring).

    ``max_length``: tokens per row, special tokens included (default: the model's); longer
    texts are truncated as the pipeline truncates them. ``max_answer_length``: QA only, the
    longest answer in tokens (default: the head's option). ``out`` must be new or an empty
    folder unless ``overwrite=True``. Needs the TensorFlow backend and TensorFlow Text (the
    ``serving`` extra). Returns ``out``.
    """
    require_tensorflow_backend()
    import tensorflow as tf  # only here: the module imports on every backend, to say which one export needs

    from distilbert_heads.serving.graph_tokenizer import GraphTokenizer  # imports TensorFlow at the top

    unsupported = unsupported_heads_saved_model_text(model)
    if unsupported:
        reasons = "; ".join(f"head {name!r}: {why}" for name, why in unsupported.items())
        raise ExportError(
            f"cannot export a strings-in SavedModel: {reasons}. That head exports as {_OTHER_FORMATS}, "
            "whose clients tokenize and decode themselves."
        )
    kinds = {name: input_kind_of(head).name for name, head in model.heads.items()}
    if len(set(kinds.values())) != 1:
        raise ExportError(
            f"the heads take different inputs ({kinds}); a strings-in SavedModel has one signature. Export a model "
            "per input kind (DistilBertTaskModel with one head each)."
        )
    if model.tokenizer is None:
        raise ExportError(
            "the model has no tokenizer, so the SavedModel cannot tokenize in the graph; set model.tokenizer = "
            "DistilBertTokenizer.from_pretrained(dir) (the one it was trained with) first."
        )
    kind = next(iter(kinds.values()))
    length = model.max_length if max_length is None else check_max_length(max_length, model.encoder.config)
    out = Path(out)
    check_export_folder(out, overwrite)
    tokenizer = GraphTokenizer(model.tokenizer, length)
    decoders = {name: _decoder(head, max_answer_length) for name, head in model.heads.items()}
    names = INPUT_NAMES[kind]

    def serve(*strings: Any) -> dict[str, Any]:
        texts = dict(zip(names, strings))
        if kind == "text":
            rows = tokenizer.encode(texts["text"])
        elif kind == "pair":
            rows = tokenizer.encode(texts["text"], texts["text_pair"])
        else:
            rows = tokenizer.encode(texts["question"], texts["context"], keep_first=True)
        outputs = model({"input_ids": rows["input_ids"], "attention_mask": rows["attention_mask"]}, training=False)
        answers: dict[str, Any] = {}
        for name, decode in decoders.items():
            for field, value in decode(outputs[name], rows, texts).items():
                answers[f"{name}__{field}"] = value
        return answers

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tokenizer)
    archive.add_endpoint(
        name="serve", fn=serve, input_signature=[tf.TensorSpec((None,), tf.string, name=name) for name in names]
    )
    with atomic.atomic_directory(out) as temp:
        archive.write_out(os.fspath(temp), verbose=False)
        model.tokenizer.save(temp / TOKENIZER_DIR)
    return out


# -- in-graph decoders, one per built-in head (each mirrors that head's decode) ----------------------
def _decoder(head: TaskHead, max_answer_length: int | None) -> Any:
    if isinstance(head, QASpanHead):
        limit = int(max_answer_length or head.options.max_answer_length)
        return lambda outputs, rows, texts: _decode_span(outputs, rows, texts["context"], limit)
    if isinstance(head, NerHead):
        return lambda outputs, rows, texts: _decode_entities(outputs, rows, texts["text"], head.class_names)
    if head.is_regression:
        return lambda outputs, rows, texts: {"score": _float32(outputs["logits"])[:, 0]}
    return lambda outputs, rows, texts: _decode_class(outputs, head.class_names)


def _float32(tensor: Any) -> Any:
    import tensorflow as tf  # these run while tracing the TensorFlow graph only

    return tf.cast(tensor, tf.float32)


def _decode_class(outputs: Any, names: list[str]) -> dict[str, Any]:
    import tensorflow as tf  # these run while tracing the TensorFlow graph only

    probabilities = tf.nn.softmax(_float32(outputs["logits"]), axis=-1)
    best = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return {
        "label": tf.gather(tf.constant(names), best),
        "score": tf.reduce_max(probabilities, axis=-1),
        "scores": probabilities,
    }


def _decode_span(outputs: Any, rows: dict[str, Any], contexts: Any, limit: int) -> dict[str, Any]:
    """`QASpanHead.decode` on one window per question: the best legal span and its probability."""
    import tensorflow as tf  # these run while tracing the TensorFlow graph only

    starts, ends = _float32(outputs["start_logits"]), _float32(outputs["end_logits"])
    allowed = (starts > PADDING_THRESHOLD) & (ends > PADDING_THRESHOLD) & (rows["sequence_ids"] == 1)
    allowed &= tf.expand_dims(rows["fits"], 1)
    length = tf.shape(starts)[1]
    position = tf.range(length)
    width = position[None, :] - position[:, None]
    legal = (width >= 0) & (width < limit) & allowed[:, :, None] & allowed[:, None, :]
    pair_scores = tf.cast(starts, tf.float64)[:, :, None] + tf.cast(ends, tf.float64)[:, None, :]
    flat = tf.reshape(tf.where(legal, pair_scores, -float("inf")), [tf.shape(starts)[0], -1])
    best = tf.argmax(flat, axis=-1, output_type=tf.int32)
    start, end = best // length, best % length
    found = tf.reduce_any(allowed, axis=-1) & tf.gather(
        tf.reshape(legal, [tf.shape(starts)[0], -1]), best, batch_dims=1
    )

    def masked_softmax(logits: Any) -> Any:
        shifted = tf.where(allowed, logits - tf.reduce_max(tf.where(allowed, logits, -float("inf")), -1, True), -1e30)
        exp = tf.where(allowed, tf.exp(shifted), 0.0)
        return exp / tf.maximum(tf.reduce_sum(exp, -1, keepdims=True), 1e-30)

    score = tf.gather(masked_softmax(starts), start, batch_dims=1) * tf.gather(masked_softmax(ends), end, batch_dims=1)
    char_start = tf.gather(rows["start"], start, batch_dims=1)
    char_end = tf.gather(rows["end"], end, batch_dims=1)
    answer = tf.strings.substr(contexts, char_start, char_end - char_start, unit="UTF8_CHAR")
    return {
        "answer": tf.where(found, answer, ""),
        "score": tf.where(found, score, 0.0),
        "start": tf.where(found, char_start, -1),
        "end": tf.where(found, char_end, -1),
    }


def _decode_entities(outputs: Any, rows: dict[str, Any], texts: Any, names: list[str]) -> dict[str, Any]:
    """`NerHead.decode`: per-token tags and scores, and BIO entities grouped as `group_entities` does."""
    import tensorflow as tf  # these run while tracing the TensorFlow graph only

    from distilbert_heads.serving.graph_tokenizer import shift_right  # imports TensorFlow at the top

    probabilities = tf.nn.softmax(_float32(outputs["logits"]), axis=-1)
    tag_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    scores = tf.reduce_max(probabilities, axis=-1)
    tokens = rows["sequence_ids"] == 0
    per_token = {
        key: tf.ragged.boolean_mask(value, tokens)
        for key, value in {
            "tag_ids": tag_ids,
            "tag_scores": scores,
            "token_start": rows["start"],
            "token_end": rows["end"],
            "word_ids": rows["word_ids"],
        }.items()
    }
    tags = tf.gather(tf.constant(names), per_token["tag_ids"])
    # Words: a word's tag and score are its first piece's; its end is its last piece's.
    row_of = per_token["tag_ids"].value_rowids()
    word = per_token["word_ids"].flat_values
    first_piece = word != shift_right(word, -1)
    word_index = tf.cumsum(tf.cast(first_piece, tf.int32)) - 1
    num_words = tf.reduce_sum(tf.cast(first_piece, tf.int32))
    word_tag = tf.boolean_mask(per_token["tag_ids"].flat_values, first_piece)
    word_score = tf.boolean_mask(per_token["tag_scores"].flat_values, first_piece)
    word_start = tf.boolean_mask(per_token["token_start"].flat_values, first_piece)
    word_end = tf.math.unsorted_segment_max(per_token["token_end"].flat_values, word_index, num_words)
    word_row = tf.boolean_mask(row_of, first_piece)
    split = [split_tag(name) for name in names]
    types = sorted({entity_type for _, entity_type in split})
    is_outside = tf.gather(tf.constant([name == "O" for name in names]), word_tag)
    is_begin = tf.gather(tf.constant([prefix == "B" for prefix, _ in split]), word_tag)
    type_of = tf.gather(tf.constant([types.index(entity_type) for _, entity_type in split]), word_tag)
    same_row = word_row == shift_right(word_row, -1)
    previous_open = ~shift_right(is_outside, True) & same_row
    previous_type = shift_right(type_of, -1)
    continues = ~is_outside & ~is_begin & previous_open & (previous_type == type_of)
    begins = ~is_outside & ~continues
    entity_of_word = tf.cumsum(tf.cast(begins, tf.int32)) - 1
    num_entities_total = tf.reduce_sum(tf.cast(begins, tf.int32))
    inside = ~is_outside
    member = tf.boolean_mask(entity_of_word, inside)
    entity_start = tf.boolean_mask(word_start, begins)
    entity_end = tf.math.unsorted_segment_max(tf.boolean_mask(word_end, inside), member, num_entities_total)
    entity_score = tf.math.unsorted_segment_mean(tf.boolean_mask(word_score, inside), member, num_entities_total)
    entity_type = tf.gather(tf.constant(types), tf.boolean_mask(type_of, begins))
    entity_row = tf.boolean_mask(word_row, begins)
    batch = tf.shape(texts, out_type=tf.int64)[0]

    def per_row(values: Any, pad: Any) -> Any:
        return tf.RaggedTensor.from_value_rowids(values, entity_row, nrows=batch).to_tensor(default_value=pad)

    starts = per_row(entity_start, -1)
    ends = per_row(entity_end, -1)
    words = tf.strings.substr(
        tf.broadcast_to(tf.expand_dims(texts, 1), tf.shape(starts)),
        tf.maximum(starts, 0),
        tf.maximum(ends - starts, 0),
        unit="UTF8_CHAR",
    )
    return {
        "tags": tags.to_tensor(default_value=""),
        "tag_scores": per_token["tag_scores"].to_tensor(default_value=0.0),
        "token_start": per_token["token_start"].to_tensor(default_value=-1),
        "token_end": per_token["token_end"].to_tensor(default_value=-1),
        "entity": per_row(entity_type, ""),
        "entity_score": per_row(entity_score, 0.0),
        "entity_start": starts,
        "entity_end": ends,
        "entity_word": tf.where(starts >= 0, words, ""),
        "num_entities": tf.cast(
            tf.math.bincount(
                tf.cast(entity_row, tf.int32), minlength=tf.cast(batch, tf.int32), maxlength=tf.cast(batch, tf.int32)
            ),
            tf.int32,
        ),
    }
