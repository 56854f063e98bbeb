"""Our tokenizer as TensorFlow graph ops: strings in, the same ids and character offsets out.

`GraphTokenizer` reproduces `DistilBertTokenizer.encode` (BERT normalizer, BERT pre-tokenizer,
WordPiece, ``[CLS] a [SEP]`` / ``[CLS] a [SEP] b [SEP]``, longest-first truncation) with ops that
TensorFlow Serving's bundled TensorFlow Text has: core TensorFlow string and ragged ops plus one
TF Text op, ``FastWordpieceTokenizeWithOffsets`` (in TF Text since 2.7; TF Serving links TF Text's
``ops_lib``, which holds it). Targeted: TF Text 2.21, matching TensorFlow 2.21 and
``tensorflow/serving:2.21``.

How normalization stays exact: BERT's normalizer works one character at a time (drop control
characters, whitespace to a space, spaces around CJK ideographs, NFD and drop accents, lowercase;
Hugging Face ``tokenizers`` maps each output character back to the input character it came
from). So at export time every code point (all 1.1 million) is run through the tokenizer's OWN
normalizer and pre-tokenizer, and the result is stored as two tables: a class per code point
(removed, space, word character, isolated: punctuation and CJK) as sorted ranges, and the
normalized text of each code point whose text changes. In the graph a text is decoded into code
points, looked up, grouped into words exactly as the pre-tokenizer groups them, and each word goes
through ``FastWordpieceTokenizer``; a piece's offsets map back through the code points it came
from, so they are character (code point) offsets into the original string, as our pipeline
reports them.

Known difference: canonical reordering of several combining marks on one character (NFD across
characters) is not reproduced; it only matters for a cased-with-strip-accents tokenizer seeing
stacked non-Mn combining marks, which no BERT vocabulary covers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from distilbert_heads.text.tokenizer import MAX_INPUT_CHARS_PER_WORD, UNK, DistilBertTokenizer

__all__ = ["CharacterTable", "GraphTokenizer", "character_table", "import_tf_text", "shift_right"]

REMOVED, SPACE, WORD, ISOLATED, SPECIAL = 0, 1, 2, 3, 4
MAX_CODE_POINT = 0x110000
# A word longer than MAX_INPUT_CHARS_PER_WORD is replaced by this one character, which no vocabulary
# holds, so FastWordpieceTokenizer gives one [UNK] for it, as BERT does for the long word.
_LONG_WORD_STANDIN = "\x00"
SERVING_EXTRA = "serving"


def import_tf_text() -> Any:
    """``tensorflow_text``, or an error naming the extra that installs it."""
    try:
        import tensorflow_text  # optional: only exporting or serving strings needs it
    except ImportError as error:
        raise ImportError(
            f"Exporting a strings-in SavedModel needs TensorFlow Text: pip install 'distilbert-heads[{SERVING_EXTRA}]' "
            f"(tensorflow-text of the installed TensorFlow's minor version, {tf.__version__}). ({error})"
        ) from error
    return tensorflow_text


@dataclass(frozen=True)
class CharacterTable:
    """What the tokenizer's normalizer and pre-tokenizer do with each code point.

    ``range_starts[i]`` is the first code point of a run of code points of class ``range_classes[i]``;
    ``mapped_code_points`` / ``mapped_texts`` the code points whose normalized text is not themselves.
    """

    range_starts: np.ndarray
    range_classes: np.ndarray
    mapped_code_points: np.ndarray
    mapped_texts: list[str]


def character_table(tokenizer: DistilBertTokenizer) -> CharacterTable:
    """The `CharacterTable` of ``tokenizer``'s normalizer and pre-tokenizer (cached per configuration)."""
    backend = tokenizer._tokenizer
    pre_tokenizer = backend.pre_tokenizer
    if pre_tokenizer is None or "BertPreTokenizer" not in str(pre_tokenizer.__getstate__()):
        raise ValueError(
            f"the tokenizer's pre-tokenizer is {pre_tokenizer!r}; the in-graph tokenizer reproduces BERT's "
            "pre-tokenizer (BertPreTokenizer) only. Use a tokenizer built by DistilBertTokenizer.from_vocab."
        )
    normalizer = backend.normalizer
    state = "" if normalizer is None else normalizer.__getstate__().decode()
    return _character_table(state)


@functools.lru_cache(maxsize=4)
def _character_table(normalizer_state: str) -> CharacterTable:
    from tokenizers import normalizers, pre_tokenizers  # the host side only: exporting, never serving

    def normalize(text: str) -> str:
        return text

    if normalizer_state:
        normalizer = normalizers.BertNormalizer()  # any type: __setstate__ restores the saved one
        normalizer.__setstate__(normalizer_state.encode())
        normalize = normalizer.normalize_str
    split = pre_tokenizers.BertPreTokenizer().pre_tokenize_str
    classes = np.empty(MAX_CODE_POINT, dtype=np.int8)
    mapped_points: list[int] = [-1]  # never looked up: keeps the table non-empty (cased vocabularies change nothing)
    mapped_texts: list[str] = [""]
    for point in range(MAX_CODE_POINT):
        if 0xD800 <= point < 0xE000:  # surrogates: no UTF-8 text holds them
            classes[point] = REMOVED
            continue
        char = chr(point)
        text = normalize(char)
        if not text:
            classes[point] = REMOVED
            continue
        # Between two letters: one piece = a word character, two = whitespace, three = isolated.
        pieces = [piece for piece, _ in split(f"a{text}a")]
        if len(pieces) == 1:
            classes[point], normalized = WORD, text
        elif pieces == ["a", "a"]:
            classes[point], normalized = SPACE, char
        elif len(pieces) == 3:
            classes[point], normalized = ISOLATED, pieces[1]
        else:
            raise ValueError(
                f"code point U+{point:04X} normalizes to {text!r}, which the pre-tokenizer splits into {pieces[1:-1]}; "
                "the in-graph tokenizer cannot reproduce a character that becomes several words."
            )
        if normalized != char and classes[point] != SPACE:
            mapped_points.append(point)
            mapped_texts.append(normalized)
    change = np.flatnonzero(np.diff(classes)) + 1
    starts = np.concatenate([[0], change]).astype(np.int32)
    return CharacterTable(starts, classes[starts].astype(np.int32), np.asarray(mapped_points, np.int64), mapped_texts)


class GraphTokenizer(tf.Module):
    """In-graph `DistilBertTokenizer.encode` for one tokenizer: same ids, same character offsets."""

    def __init__(self, tokenizer: DistilBertTokenizer, max_length: int) -> None:
        super().__init__(name="graph_tokenizer")
        tf_text = import_tf_text()
        table = character_table(tokenizer)
        vocab = tokenizer._tokenizer.get_vocab(with_added_tokens=True)
        tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
        if [vocab[token] for token in tokens] != list(range(len(tokens))):
            raise ValueError("the vocabulary's ids are not 0..n-1; the in-graph tokenizer needs a dense vocabulary")
        if any(token.startswith(_LONG_WORD_STANDIN) or token == "##" + _LONG_WORD_STANDIN for token in tokens):
            raise ValueError("the vocabulary holds a token starting with U+0000, which the in-graph tokenizer reserves")
        self.max_length = int(max_length)
        self.cls_id = int(tokenizer.cls_token_id)
        self.sep_id = int(tokenizer.sep_token_id)
        self.pad_id = int(tokenizer.pad_token_id)
        self._specials = [token for token in tokenizer._special_ids]
        self._range_starts = tf.constant(table.range_starts, tf.int32)
        self._range_classes = tf.constant(table.range_classes, tf.int32)
        self._mapped = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(table.mapped_code_points, tf.int64), tf.constant(table.mapped_texts, tf.string)
            ),
            default_value="",
        )
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=tokens,
            suffix_indicator="##",
            max_bytes_per_word=4 * 3 * MAX_INPUT_CHARS_PER_WORD,  # 100 characters, each at most 3 after lowercasing
            token_out_type=tf.int32,
            unknown_token=UNK,
            no_pretokenization=True,
            support_detokenization=False,
        )

    # -- one text per row: word pieces with character offsets ------------------------------------
    def pieces(self, texts: tf.Tensor) -> tuple[tf.RaggedTensor, ...]:
        """Ids, start and end character offsets, and word numbers (unique in the batch) of the word
        pieces of each text (no special tokens); all int32, one row per text."""
        points = tf.strings.unicode_decode(texts, "UTF-8", errors="replace", replacement_char=0xFFFD)
        flat = points.flat_values
        positions = tf.ragged.range(points.row_lengths()).flat_values
        classes = tf.gather(self._range_classes, tf.searchsorted(self._range_starts, flat, side="right") - 1)
        ends = positions + 1
        mapped = self._mapped.lookup(tf.cast(flat, tf.int64))
        own = tf.strings.unicode_encode(tf.expand_dims(flat, 1), "UTF-8")
        texts_of_points = tf.where(tf.strings.length(mapped) > 0, mapped, own)
        # Special tokens typed in the text ("[SEP]") are matched on the raw text first, as added tokens are.
        row_ids = points.value_rowids()
        count = tf.size(flat)

        def ahead(values: tf.Tensor, shift: int, pad: Any) -> tf.Tensor:  # values[i + shift], ``pad`` past the end
            return tf.concat([values, tf.fill([shift], tf.cast(pad, values.dtype))], 0)[shift : shift + count]

        for special in self._specials:
            code = [ord(c) for c in special]
            match = tf.ones_like(flat, tf.bool)
            for shift, value in enumerate(code):
                match &= (ahead(flat, shift, -1) == value) & (ahead(row_ids, shift, -1) == row_ids)
            covered = tf.zeros_like(match)
            for shift in range(1, len(code)):  # values[i - shift]
                covered |= tf.concat([tf.fill([shift], False), match], 0)[:count]
            classes = tf.where(match, SPECIAL, tf.where(covered, SPACE, classes))
            texts_of_points = tf.where(match, special, texts_of_points)
            ends = tf.where(match, positions + len(code), ends)
        keep = classes != REMOVED
        classes, texts_of_points = classes[keep], texts_of_points[keep]
        starts, ends, row_ids = positions[keep], ends[keep], row_ids[keep]
        # A unit (a word for WordPiece) starts at an isolated character or at a word character after a non-word one.
        previous_class = shift_right(classes, SPACE)
        new_row = row_ids != shift_right(row_ids, -1)
        starts_unit = (
            (classes == ISOLATED) | (classes == SPECIAL) | ((classes == WORD) & ((previous_class != WORD) | new_row))
        )
        in_unit = classes != SPACE
        unit_ids = tf.cumsum(tf.cast(starts_unit, tf.int64)) - 1
        unit_ids, texts_of_points = unit_ids[in_unit], texts_of_points[in_unit]
        starts, ends, row_ids = starts[in_unit], ends[in_unit], row_ids[in_unit]
        num_units = tf.reduce_sum(tf.cast(starts_unit, tf.int64))
        unit_texts = tf.strings.reduce_join(
            tf.RaggedTensor.from_value_rowids(texts_of_points, unit_ids, nrows=num_units), axis=1
        )
        unit_rows = tf.math.unsorted_segment_max(row_ids, unit_ids, num_units)
        # Each normalized character: its byte start inside its unit, and the original characters it came from.
        unit_chars = tf.strings.unicode_split_with_offsets(unit_texts, "UTF-8")[1]  # byte starts per unit
        char_lengths = tf.strings.length(texts_of_points, unit="UTF8_CHAR")
        char_starts = tf.repeat(starts, char_lengths)
        char_ends = tf.repeat(ends, char_lengths)
        too_long = unit_chars.row_lengths() > MAX_INPUT_CHARS_PER_WORD
        ids, byte_starts, byte_ends = self._wordpiece.tokenize_with_offsets(
            tf.where(too_long, _LONG_WORD_STANDIN, unit_texts)
        )
        # Piece -> normalized characters, searched in one sorted array: unit number * big + byte position.
        scale = tf.constant(1 << 32, tf.int64)
        char_keys = tf.cast(unit_chars.value_rowids(), tf.int64) * scale + unit_chars.flat_values
        piece_units = tf.cast(ids.value_rowids(), tf.int64)
        first = tf.searchsorted(char_keys, piece_units * scale + byte_starts.flat_values, side="left")
        last = tf.searchsorted(char_keys, piece_units * scale + byte_ends.flat_values, side="left") - 1
        # The long-word stand-in's [UNK] spans its whole word.
        long_piece = tf.gather(too_long, piece_units)
        first = tf.where(long_piece, tf.zeros_like(first), first)
        last = tf.where(long_piece, tf.zeros_like(last), last)
        unit_spans_start = tf.math.unsorted_segment_min(starts, unit_ids, num_units)
        unit_spans_end = tf.math.unsorted_segment_max(ends, unit_ids, num_units)
        piece_start = tf.where(long_piece, tf.gather(unit_spans_start, piece_units), tf.gather(char_starts, first))
        piece_end = tf.where(long_piece, tf.gather(unit_spans_end, piece_units), tf.gather(char_ends, last))
        piece_rows = tf.gather(unit_rows, piece_units)
        nrows = tf.shape(texts, out_type=tf.int64)[0]
        ragged = functools.partial(tf.RaggedTensor.from_value_rowids, value_rowids=piece_rows, nrows=nrows)
        return (
            ragged(ids.flat_values),
            ragged(tf.cast(piece_start, tf.int32)),
            ragged(tf.cast(piece_end, tf.int32)),
            ragged(tf.cast(piece_units, tf.int32)),
        )

    # -- rows the encoder takes ------------------------------------------------------------------
    def encode(self, texts: tf.Tensor, pairs: tf.Tensor | None = None, *, keep_first: bool = False) -> dict[str, Any]:
        """Rows as `DistilBertTokenizer.encode` makes them, padded to the batch's longest row.

        ``pairs=None``: ``[CLS] a [SEP]``, ``a`` cut to ``max_length - 2`` pieces. With pairs,
        ``[CLS] a [SEP] b [SEP]`` truncated longest-first (Hugging Face's rule), or, with
        ``keep_first=True`` (question + context), ``a`` whole and ``b`` cut to what is left: the
        first window of `QuestionContextKind`. Returns int32 ``input_ids``, ``attention_mask``,
        ``start``/``end`` (character offsets into the row's own text, 0 for special tokens and
        padding), ``sequence_ids`` (-1 special/padding, 0, 1), ``word_ids`` (-1 special/padding; a
        word's number, unique in the batch) and ``fits`` (False where the first
        text leaves no room for the second).
        """
        first = self.pieces(texts)
        lengths = first[0].row_lengths()
        fits = tf.ones_like(lengths, tf.bool)
        if pairs is None:
            parts = [_truncate(first, tf.minimum(lengths, self.max_length - 2))]
        else:
            second = self.pieces(pairs)
            room = tf.constant(self.max_length - 3, lengths.dtype)
            other = second[0].row_lengths()
            if keep_first:
                keep_a, keep_b = lengths, tf.maximum(tf.minimum(other, room - lengths), 0)
                fits = room - lengths >= 1
            else:
                keep_a, keep_b = _longest_first(lengths, other, room)
            second = (*second[:3], second[3] + (1 << 30))  # word numbers of the second text: distinct from the first's
            parts = [_truncate(first, keep_a), _truncate(second, keep_b)]
        batch = tf.shape(texts, out_type=tf.int64)[0]

        def special(token_id: int) -> tuple[tf.RaggedTensor, ...]:
            column = tf.RaggedTensor.from_tensor(tf.zeros([batch, 1], tf.int32))
            return (column + token_id, column, column, column - 1)

        rows = [special(self.cls_id)]
        sequence_ids = [special(-1)[0]]
        for index, part in enumerate(parts):
            rows += [part, special(self.sep_id)]
            sequence_ids += [tf.ones_like(part[0]) * index, special(-1)[0]]
        ids, starts, ends, words = (tf.concat([row[k] for row in rows], axis=1) for k in range(4))
        sequence = tf.concat(sequence_ids, axis=1)
        return {
            "input_ids": ids.to_tensor(default_value=self.pad_id),
            "attention_mask": tf.ones_like(ids).to_tensor(),
            "start": starts.to_tensor(),
            "end": ends.to_tensor(),
            "sequence_ids": sequence.to_tensor(default_value=-1),
            "word_ids": words.to_tensor(default_value=-1),
            "fits": fits,
        }


def shift_right(values: tf.Tensor, first: Any) -> tf.Tensor:
    """``values`` moved one place right, ``first`` in front (each element's predecessor); empty stays empty."""
    return tf.concat([tf.fill([1], tf.cast(first, values.dtype)), values], 0)[:-1]


def _truncate(pieces: tuple[tf.RaggedTensor, ...], keep: tf.Tensor) -> tuple[tf.RaggedTensor, ...]:
    """The first ``keep[row]`` pieces of each row."""
    mask = tf.ragged.range(pieces[0].row_lengths()) < tf.expand_dims(tf.cast(keep, tf.int64), 1)
    return tuple(tf.ragged.boolean_mask(part, mask) for part in pieces)


def _longest_first(first: tf.Tensor, second: tf.Tensor, room: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """How many pieces of each text Hugging Face's longest-first truncation keeps within ``room``."""
    small, large = tf.minimum(first, second), tf.maximum(first, second)
    limit_large = tf.where(small > room, small, tf.maximum(small, room - small))
    limit_small = tf.fill(tf.shape(small), tf.constant(np.iinfo(np.int32).max, small.dtype))
    halve = small + limit_large > room
    limit_small = tf.where(halve, room // 2, limit_small)
    limit_large = tf.where(halve, room // 2 + room % 2, limit_large)
    keep_small, keep_large = tf.minimum(small, limit_small), tf.minimum(large, limit_large)
    swap = first > second
    return tf.where(swap, keep_large, keep_small), tf.where(swap, keep_small, keep_large)
