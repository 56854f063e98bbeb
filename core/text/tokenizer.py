"""Text to ``input_ids``: BERT WordPiece tokenization on Hugging Face ``tokenizers`` (Rust).

``DistilBertTokenizer`` wraps a ``tokenizers.Tokenizer`` set up exactly as ``transformers``'
``DistilBertTokenizerFast`` sets up its own (``BertNormalizer``, ``BertPreTokenizer``, WordPiece with
``##`` pieces, ``[CLS] a [SEP]`` / ``[CLS] a [SEP] b [SEP]``), so the ids are the same for the same
vocabulary. On top it adds what the rest of the package needs: batches padded only as far as the
longest row, truncation that keeps the question whole (QA), stride windows mapped back to their
inputs, character offsets into the original text, and a file format that travels inside a ``.keras``
file as Keras assets.

Edge cases, by design:
- an empty or whitespace-only text gives ``[CLS] [SEP]`` (and ``[CLS] [SEP] [SEP]`` for an empty pair);
- a text longer than ``max_length`` is truncated, or cut into windows with ``return_overflowing=True``;
  only ``truncation=False`` turns it into an error;
- a word longer than 100 characters becomes one ``[UNK]``, as in BERT;
- a lone surrogate (e.g. ``"\\ud800"``, which no UTF-8 text holds) becomes U+FFFD, one character for
  one, so character offsets still point into the text as given;
- memory stays bounded for huge texts: when truncating (no windows), only a prefix of a text is
  tokenized, long enough that the tokens kept are exactly those of the whole text (see
  `DistilBertTokenizer._bounded_prefix`); texts that are windowed or must not be truncated are
  refused beyond `MAX_WHOLE_TEXT_CHARS` characters with an error saying so.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from distilbert_heads import atomic
from distilbert_heads.encoder import checkpoints
from distilbert_heads.encoder.config import ALLOW_LARGE_ENV, SIZE_LIMITS, large_models_allowed

VOCAB_NAME = "vocab.txt"
TOKENIZER_JSON_NAME = "tokenizer.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
REQUIRED_SPECIAL_TOKENS = (PAD, UNK, CLS, SEP)
MAX_INPUT_CHARS_PER_WORD = 100  # BERT's limit: a longer word is one [UNK]
DEFAULT_MODEL_MAX_LENGTH = 512
# Truncating encodes read a first prefix of max_length * this many characters (and grow it only
# if that prefix holds too few tokens), so a 50 MB text costs what its kept tokens cost.
PREFIX_CHARS_PER_TOKEN = 100
# Texts tokenized whole (split into windows, or with truncation=False) may be at most this long.
MAX_WHOLE_TEXT_CHARS = 1_000_000
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

JSON_FORMAT = "distilbert_heads.text.tokenizer"
JSON_FORMAT_VERSION = 1

Truncation = Literal["longest_first", "only_second"] | bool
Padding = Literal["longest", "max_length"] | bool


@dataclass
class BatchEncoding:
    """A tokenized batch: one row per input, or per window when windows were asked for.

    ``input_ids`` and ``attention_mask`` are int32 arrays of shape (N, L). Per row,
    ``offsets`` holds (start, end) character offsets into the row's own text (the first text,
    or the second for tokens of the pair's second sequence); special tokens and padding get
    (0, 0). ``sequence_ids`` is None for special tokens and padding, else 0 (first text) or
    1 (second text); ``word_ids`` numbers the words of each sequence (None for special tokens
    and padding). ``overflow_to_sample[row]`` is the index of the input the row came from.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    offsets: list[list[tuple[int, int]]] = field(default_factory=list)
    sequence_ids: list[list[int | None]] = field(default_factory=list)
    word_ids: list[list[int | None]] = field(default_factory=list)
    overflow_to_sample: list[int] = field(default_factory=list)
    tokens: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def as_model_inputs(self) -> dict[str, np.ndarray]:
        """The arrays the encoder takes: ``{"input_ids", "attention_mask"}``."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


class DistilBertTokenizer:
    """BERT WordPiece tokenizer for DistilBERT, with the same ids as ``transformers``.

    Build one with ``from_vocab``, ``from_tokenizer_json``, ``from_pretrained`` (a directory or a
    hub id) or ``from_json_string``; call ``encode`` on texts or text pairs.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        lowercase: bool | None = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
    ) -> None:
        """Wrap a WordPiece ``tokenizers.Tokenizer``; prefer the ``from_*`` constructors.

        ``lowercase``/``strip_accents``/``tokenize_chinese_chars`` describe the tokenizer's
        ``BertNormalizer`` (``lowercase=None`` when it has a different normalizer); they are what
        ``save`` writes to ``tokenizer_config.json``.
        """
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        _check_vocab(vocab, source="the tokenizer")
        self._tokenizer = tokenizer
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._lock = threading.Lock()  # truncation is set on the shared Rust object per call
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self._special_ids = {token: vocab[token] for token in (PAD, UNK, CLS, SEP, MASK) if token in vocab}
        # As in transformers, "[SEP]" typed in a text is the special token, matched before normalization.
        self._tokenizer.add_special_tokens(
            [AddedToken(token, special=True, normalized=False) for token in self._special_ids]
        )
        # Always the DistilBERT layout, whatever post-processor a loaded tokenizer.json carried.
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{CLS}:0 $A:0 {SEP}:0",
            pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
            special_tokens=[(CLS, self.cls_token_id), (SEP, self.sep_token_id)],
        )
        if self._tokenizer.decoder is None:
            self._tokenizer.decoder = decoders.WordPiece(prefix="##")

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_vocab(
        cls,
        vocab_file_or_list: str | os.PathLike | Sequence[str] | Mapping[str, int],
        lowercase: bool = True,
        strip_accents: bool | None = None,
        *,
        tokenize_chinese_chars: bool = True,
    ) -> DistilBertTokenizer:
        """A tokenizer over a WordPiece vocabulary: a ``vocab.txt`` path, a token list or a token->id map.

        ``lowercase=True, strip_accents=None`` is BERT uncased (lowercase and strip accents);
        ``lowercase=False`` is BERT cased (neither). ``strip_accents=None`` follows ``lowercase``.
        """
        if isinstance(vocab_file_or_list, (str, os.PathLike)):
            vocab = read_vocab_file(vocab_file_or_list)
            source = f"vocab file {os.fspath(vocab_file_or_list)!r}"
        elif isinstance(vocab_file_or_list, Mapping):
            vocab = {str(token): int(index) for token, index in vocab_file_or_list.items()}
            source = "the vocabulary mapping"
        else:
            vocab = _vocab_from_list(list(vocab_file_or_list))
            source = "the vocabulary list"
        _check_vocab(vocab, source=source)
        tokenizer = Tokenizer(
            WordPiece(
                vocab, unk_token=UNK, continuing_subword_prefix="##", max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD
            )
        )
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=tokenize_chinese_chars,
            strip_accents=strip_accents,
            lowercase=lowercase,
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##")
        return cls(
            tokenizer, lowercase=lowercase, strip_accents=strip_accents, tokenize_chinese_chars=tokenize_chinese_chars
        )

    @classmethod
    def train_from_texts(
        cls,
        texts: Iterable[str],
        vocab_size: int = 1000,
        lowercase: bool = True,
        *,
        min_frequency: int = 1,
        whole_words: bool = False,
    ) -> DistilBertTokenizer:
        """A new WordPiece vocabulary learnt from ``texts`` (for training a model from scratch).

        Uses the ``tokenizers`` WordPiece trainer after the same BERT normalization and
        pre-tokenization that encoding applies, so every learnt piece is reachable. The special
        tokens come first (``[PAD]`` = 0, ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``), then every
        character seen (as a word start and as a ``##`` piece, so unseen words split into
        characters instead of becoming ``[UNK]``), then merged pieces up to ``vocab_size``.
        The result may be smaller than ``vocab_size`` when the texts hold fewer pieces.

        ``whole_words=True`` learns a vocabulary of whole words instead: the words seen at least
        ``min_frequency`` times, most frequent first, up to ``vocab_size``; any other word becomes
        one ``[UNK]``. On small data this keeps a small model from learning names by their
        spelling: paired with token dropout in training it learns to read the context around an
        unknown word, which is what generalises to names it never saw.
        """
        from tokenizers import trainers

        if isinstance(texts, str):
            raise ValueError("train_from_texts takes a list (or iterable) of texts, not a single string.")
        special = [PAD, UNK, CLS, SEP, MASK]
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size <= len(special):
            raise ValueError(
                f"vocab_size must be an integer above {len(special)} (the special tokens plus word pieces), "
                f"got {vocab_size!r}."
            )
        texts = [text for text in texts if isinstance(text, str) and text.strip()]
        if not texts:
            raise ValueError("train_from_texts needs at least one non-empty text to learn a vocabulary from.")
        tokenizer = Tokenizer(
            WordPiece(unk_token=UNK, continuing_subword_prefix="##", max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD)
        )
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        if whole_words:
            counts: dict[str, int] = {}
            for text in texts:
                for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(text)):
                    counts[word] = counts.get(word, 0) + 1
            # Most frequent first; ties keep their order of first appearance (dicts keep insertion order).
            ranked = sorted(
                (w for w, n in counts.items() if n >= min_frequency and w not in special), key=lambda w: -counts[w]
            )
            return cls.from_vocab(special + ranked[: vocab_size - len(special)], lowercase=lowercase)
        # Every character as a ``##`` piece too, so any word made of seen characters is encodable.
        alphabet = sorted(
            {char for text in texts for char in tokenizer.normalizer.normalize_str(text) if not char.isspace()}
        )
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=special,
            initial_alphabet=alphabet,
            continuing_subword_prefix="##",
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        learnt = tokenizer.get_vocab(with_added_tokens=True)
        tokens = [token for token, _ in sorted(learnt.items(), key=lambda item: item[1])]
        known = set(tokens)
        tokens += [f"##{char}" for char in alphabet if f"##{char}" not in known]
        return cls.from_vocab(tokens, lowercase=lowercase)

    @classmethod
    def from_tokenizer_json(cls, path: str | os.PathLike) -> DistilBertTokenizer:
        """A tokenizer from a ``tokenizers`` ``tokenizer.json`` file holding a WordPiece model."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(
                f"No tokenizer file at {os.fspath(path)!r}. Pass the path of a tokenizer.json written by "
                "`tokenizers` or `transformers` (or use from_vocab('vocab.txt') for a plain vocabulary)."
            )
        return cls._from_json_text(checkpoints.read_text_file(path, "a tokenizer.json"), source=os.fspath(path))

    @classmethod
    def from_pretrained(cls, dir_or_hub_id: str | os.PathLike) -> DistilBertTokenizer:
        """A tokenizer from a checkpoint directory or a hub id (resolved as checkpoints are).

        Reads ``tokenizer.json`` when present, else ``vocab.txt``. ``do_lower_case``,
        ``strip_accents`` and ``tokenize_chinese_chars`` in ``tokenizer_config.json`` set the
        normalizer, as ``transformers`` does (missing from both files: BERT uncased).
        """
        directory = checkpoints.resolve_checkpoint_dir(dir_or_hub_id)
        return cls._from_directory(directory, source=os.fspath(dir_or_hub_id))

    @classmethod
    def _from_directory(cls, directory: Path, source: str) -> DistilBertTokenizer:
        settings = _read_tokenizer_config(directory / TOKENIZER_CONFIG_NAME)
        if (directory / TOKENIZER_JSON_NAME).is_file():
            tokenizer = cls.from_tokenizer_json(directory / TOKENIZER_JSON_NAME)
            if settings:
                tokenizer._set_normalizer(
                    lowercase=settings.get("do_lower_case", tokenizer.lowercase),
                    strip_accents=settings.get("strip_accents", tokenizer.strip_accents),
                    tokenize_chinese_chars=settings.get("tokenize_chinese_chars", tokenizer.tokenize_chinese_chars),
                )
            return tokenizer
        if (directory / VOCAB_NAME).is_file():
            return cls.from_vocab(
                directory / VOCAB_NAME,
                lowercase=settings.get("do_lower_case", True),
                strip_accents=settings.get("strip_accents"),
                tokenize_chinese_chars=settings.get("tokenize_chinese_chars", True),
            )
        present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
        raise ValueError(
            f"No tokenizer in {source!r} (directory {os.fspath(directory)!r} holds {present or 'nothing'}): expected "
            f"{TOKENIZER_JSON_NAME} or {VOCAB_NAME}. Pass the directory of a checkpoint saved with its tokenizer, "
            "or build one with DistilBertTokenizer.from_vocab('path/to/vocab.txt')."
        )

    @classmethod
    def _from_json_text(cls, text: str, source: str, settings: Mapping[str, Any] | None = None) -> DistilBertTokenizer:
        try:
            spec = json.loads(text)
            tokenizer = Tokenizer.from_str(text)
        except Exception as error:  # the Rust side raises plain Exception
            raise ValueError(f"Could not read the tokenizer from {source}: {error}") from error
        model_type = (spec.get("model") or {}).get("type")
        if model_type != "WordPiece":
            raise ValueError(
                f"The tokenizer in {source} has a {model_type!r} model; DistilBERT needs a WordPiece model. "
                "Pass a BERT/DistilBERT tokenizer.json or a vocab.txt."
            )
        _check_vocab(tokenizer.get_vocab(with_added_tokens=True), source=source)
        return cls(
            tokenizer, **(settings if settings is not None else _bert_normalizer_settings(spec.get("normalizer")))
        )

    def _set_normalizer(
        self, *, lowercase: bool | None, strip_accents: bool | None, tokenize_chinese_chars: bool
    ) -> None:
        if lowercase is None:  # a custom normalizer: leave it as it is
            return
        self._tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=tokenize_chinese_chars,
            strip_accents=strip_accents,
            lowercase=lowercase,
        )
        self.lowercase, self.strip_accents, self.tokenize_chinese_chars = (
            lowercase,
            strip_accents,
            tokenize_chinese_chars,
        )

    # -- properties --------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of tokens, added tokens included (the encoder's ``vocab_size`` must be at least this)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_token_id(self) -> int:
        return self._special_ids[PAD]

    @property
    def unk_token_id(self) -> int:
        return self._special_ids[UNK]

    @property
    def cls_token_id(self) -> int:
        return self._special_ids[CLS]

    @property
    def sep_token_id(self) -> int:
        return self._special_ids[SEP]

    @property
    def mask_token_id(self) -> int | None:
        """The id of ``[MASK]``, or None when the vocabulary has none (it is optional)."""
        return self._special_ids.get(MASK)

    @property
    def backend_tokenizer(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (do not set truncation or padding on it)."""
        return self._tokenizer

    def get_vocab(self) -> dict[str, int]:
        """Token -> id."""
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tokenizer.id_to_token(int(token_id))

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = True) -> str:
        """Ids back to text (``##`` pieces joined; lowercased/accent-stripped text stays so).

        Raises:
            ValueError: ``ids`` is not one sequence of integers in ``[0, vocab_size)`` (the
                tokenizer would silently drop an unknown id, and overflow on a negative one).
        """
        array = np.asarray(ids) if not isinstance(ids, np.ndarray) else ids
        if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
            raise ValueError(
                f"decode takes one sequence of integer token ids, got an array of shape {array.shape} and dtype "
                f"{array.dtype}; decode a batch row by row: [tokenizer.decode(row) for row in ids]."
            )
        if array.size and (array.min() < 0 or array.max() >= self.vocab_size):
            bad = array.min() if array.min() < 0 else array.max()
            raise ValueError(
                f"decode got id {bad} at position {int(np.argmax(array == bad))}, outside [0, {self.vocab_size}) "
                f"where this tokenizer's vocab_size={self.vocab_size}; decode ids made with this tokenizer."
            )
        return self._tokenizer.decode(array.tolist(), skip_special_tokens=skip_special_tokens)

    def __getstate__(self) -> dict[str, str]:
        # The lock cannot be pickled (multiprocessing data loaders pickle the tokenizer): go through JSON.
        return {"json": self.to_json_string()}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__dict__.update(type(self).from_json_string(state["json"]).__dict__)

    def __repr__(self) -> str:
        return (
            f"DistilBertTokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase}, "
            f"strip_accents={self.strip_accents})"
        )

    # -- encoding ----------------------------------------------------------------------------
    def encode(
        self,
        texts: str | Sequence[str],
        pairs: str | Sequence[str] | None = None,
        max_length: int = DEFAULT_MODEL_MAX_LENGTH,
        truncation: Truncation = "longest_first",
        padding: Padding = "longest",
        stride: int = 0,
        return_overflowing: bool = False,
    ) -> BatchEncoding:
        """Tokenize texts (``[CLS] a [SEP]``) or text pairs (``[CLS] a [SEP] b [SEP]``) into a batch.

        truncation: ``"longest_first"`` (or True) trims the longer sequence token by token;
        ``"only_second"`` trims only the second sequence (the context in QA); False raises a
        ValueError for an input longer than ``max_length``.
        padding: ``"longest"`` (or True) pads to the longest row of this batch, ``"max_length"``
        to ``max_length``; False pads nothing and needs rows of one length.
        return_overflowing: keep what truncation cut as further rows (windows), each overlapping
        the previous one by ``stride`` tokens; ``overflow_to_sample`` maps rows to inputs. For
        pairs it needs ``truncation="only_second"``: the question repeats in every window.
        """
        firsts, seconds = _as_batch(texts, pairs)
        strategy = _check_options(
            max_length, truncation, padding, stride, return_overflowing, is_pair=seconds is not None
        )
        if strategy is not None and not return_overflowing:
            firsts = [self._bounded_prefix(text, max_length) for text in firsts]
            seconds = None if seconds is None else [self._bounded_prefix(text, max_length) for text in seconds]
        else:
            _check_whole_text_lengths(firsts, seconds, windowed=return_overflowing)
        inputs: list[Any] = firsts if seconds is None else list(zip(firsts, seconds))
        specials = 2 if seconds is None else 3

        with self._lock:
            self._tokenizer.no_truncation()
            encodings = self._tokenizer.encode_batch(inputs) if inputs else []
            too_long = [i for i, encoding in enumerate(encodings) if len(encoding.ids) > max_length]
            if too_long and strategy is None:
                first = too_long[0]
                raise ValueError(
                    f"Input {first} is {len(encodings[first].ids)} tokens long (with special tokens), more than "
                    f"max_length={max_length}, and truncation=False ({len(too_long)} input(s) too long in all). "
                    "Pass truncation='longest_first' (or 'only_second' for question/context pairs) to cut it, "
                    "or return_overflowing=True with a stride to split it into overlapping windows."
                )
            for i in too_long:
                _check_room(encodings[i], i, max_length, strategy, stride if return_overflowing else 0, specials)
            if too_long:
                try:
                    self._tokenizer.enable_truncation(
                        max_length, stride=stride if return_overflowing else 0, strategy=strategy
                    )
                    truncated = self._tokenizer.encode_batch([inputs[i] for i in too_long])
                finally:
                    self._tokenizer.no_truncation()
                for i, encoding in zip(too_long, truncated):
                    encodings[i] = encoding

        rows, sample_of_row = [], []
        for sample, encoding in enumerate(encodings):
            windows = [encoding, *encoding.overflowing] if return_overflowing else [encoding]
            rows.extend(windows)
            sample_of_row.extend([sample] * len(windows))
        return self._pad(rows, sample_of_row, padding, max_length)

    __call__ = encode

    def _bounded_prefix(self, text: str, max_length: int) -> str:
        """A prefix of ``text`` whose first ``max_length`` tokens are the whole text's, found in bounded memory.

        Cutting a text changes at most the pre-tokenized words the cut falls in (each at most
        `MAX_INPUT_CHARS_PER_WORD` word pieces, or one ``[UNK]`` when longer), so a prefix
        holding ``max_length`` + that margin tokens keeps exactly the tokens truncation keeps,
        for single texts and for ``longest_first`` / ``only_second`` pairs alike. The prefix
        starts at ``max_length * PREFIX_CHARS_PER_TOKEN`` characters and grows fourfold while it
        holds fewer tokens (only texts that are mostly spaces or control characters need that).
        """
        budget = max_length * PREFIX_CHARS_PER_TOKEN
        needed = max_length + MAX_INPUT_CHARS_PER_WORD + 8  # 8: a cut inside a typed special token like [SEP]
        while budget < len(text):
            prefix = text[:budget]
            if len(self._tokenizer.encode(prefix, add_special_tokens=False).ids) >= needed:
                return prefix
            budget *= 4
        return text

    def _pad(self, rows: list[Any], sample_of_row: list[int], padding: Padding, max_length: int) -> BatchEncoding:
        lengths = [len(row.ids) for row in rows]
        if padding == "max_length":
            width = max_length
        elif padding is False:
            if len(set(lengths)) > 1:
                raise ValueError(
                    f"padding=False needs rows of one length, got lengths from {min(lengths)} to {max(lengths)}. "
                    "Pass padding='longest' to pad to the longest row of the batch (or 'max_length')."
                )
            width = lengths[0] if lengths else 0
        else:
            width = max(lengths, default=0)
        input_ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int32)
        attention_mask = np.zeros((len(rows), width), dtype=np.int32)
        batch = BatchEncoding(input_ids, attention_mask, overflow_to_sample=sample_of_row)
        for r, (row, length) in enumerate(zip(rows, lengths)):
            input_ids[r, :length] = row.ids
            attention_mask[r, :length] = 1
            pad = width - length
            batch.offsets.append([tuple(o) for o in row.offsets] + [(0, 0)] * pad)
            batch.sequence_ids.append(list(row.sequence_ids) + [None] * pad)
            batch.word_ids.append(list(row.word_ids) + [None] * pad)
            batch.tokens.append(list(row.tokens) + [PAD] * pad)
        return batch

    # -- files -------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``vocab.txt``, ``tokenizer.json`` and ``tokenizer_config.json`` into ``directory``.

        ``transformers.DistilBertTokenizerFast.from_pretrained(directory)`` loads the result. The
        folder is swapped in whole (`atomic.atomic_directory`; other files in it are kept), so a
        failed save leaves the previous files as they were.
        """
        directory = Path(directory)
        with atomic.atomic_directory(directory, keep_other_entries=True) as temp:
            self._write_files(temp)
        return directory

    def _write_files(self, directory: Path) -> None:
        """The three tokenizer files, written straight into ``directory`` (the caller makes it atomic)."""
        (directory / VOCAB_NAME).write_text(
            "".join(f"{token}\n" for token in self._vocab_in_id_order()), encoding="utf-8"
        )
        (directory / TOKENIZER_JSON_NAME).write_text(self._tokenizer.to_str(), encoding="utf-8")
        config: dict[str, Any] = {
            "tokenizer_class": "DistilBertTokenizer",
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "strip_accents": self.strip_accents,
            "model_max_length": DEFAULT_MODEL_MAX_LENGTH,
            "unk_token": UNK,
            "sep_token": SEP,
            "pad_token": PAD,
            "cls_token": CLS,
            "mask_token": MASK,
        }
        if self.lowercase is not None:
            config["do_lower_case"] = self.lowercase
        (directory / TOKENIZER_CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def _vocab_in_id_order(self) -> list[str]:
        """The tokens by id, for ``vocab.txt`` (whose line number is the id); an error if ids skip or repeat."""
        vocab = self.get_vocab()
        by_id: dict[int, list[str]] = {}
        for token, index in vocab.items():
            by_id.setdefault(index, []).append(token)
        top = max(by_id)
        missing = [index for index in range(top + 1) if index not in by_id]
        shared = {index: sorted(tokens) for index, tokens in by_id.items() if len(tokens) > 1}
        if missing or shared:
            problems = []
            if missing:
                shown = ", ".join(str(index) for index in missing[:10]) + (", ..." if len(missing) > 10 else "")
                problems.append(f"no token has id {shown} ({len(missing)} of the ids 0..{top} missing)")
            if shared:
                index, tokens = next(iter(sorted(shared.items())))
                problems.append(f"{len(shared)} id(s) belong to several tokens (id {index}: {tokens})")
            raise ValueError(
                f"Cannot save this tokenizer: {VOCAB_NAME} gives each token the id of its line, so ids must run "
                f"0..N-1 with one token each, but {'; '.join(problems)}. Fix the vocabulary it was built from (a "
                "tokenizer.json's model.vocab, or the token->id mapping): give each missing id a placeholder "
                "token (BERT uses '[unused<N>]') and each token its own id, keeping the other ids so the model's "
                "embeddings still match. Nothing was written."
            )
        return [by_id[index][0] for index in range(top + 1)]

    def _settings(self) -> dict[str, Any]:
        return {
            "lowercase": self.lowercase,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
        }

    def to_json_string(self) -> str:
        """One JSON document: the ``tokenizers`` JSON plus our settings (see ``from_json_string``)."""
        return json.dumps(
            {
                "format": JSON_FORMAT,
                "format_version": JSON_FORMAT_VERSION,
                "settings": self._settings(),
                "tokenizer": json.loads(self._tokenizer.to_str()),
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json_string(cls, text: str) -> DistilBertTokenizer:
        """The tokenizer ``to_json_string`` wrote."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"Not a tokenizer JSON string ({error}); pass what to_json_string() returned.") from error
        if not isinstance(document, dict) or document.get("format") != JSON_FORMAT:
            raise ValueError(
                f"Not a {JSON_FORMAT} JSON string (its 'format' is "
                f"{document.get('format') if isinstance(document, dict) else None!r}); pass what "
                "DistilBertTokenizer.to_json_string() returned, or use from_tokenizer_json() for a plain "
                "tokenizer.json."
            )
        if document.get("format_version", 0) > JSON_FORMAT_VERSION:
            raise ValueError(
                f"This tokenizer was written in format version {document['format_version']}, newer than this "
                f"distilbert_heads reads ({JSON_FORMAT_VERSION}). Upgrade distilbert-heads."
            )
        settings = document.get("settings") or {}
        return cls._from_json_text(
            json.dumps(document["tokenizer"]),
            source="the tokenizer JSON string",
            settings={
                "lowercase": settings.get("lowercase", True),
                "strip_accents": settings.get("strip_accents"),
                "tokenize_chinese_chars": settings.get("tokenize_chinese_chars", True),
            },
        )

    def save_assets(self, dir_path: str | os.PathLike) -> None:
        """Keras ``save_assets`` hook: write the tokenizer's files into ``dir_path`` (as ``save`` does).

        ``dir_path`` is Keras' own scratch folder inside a save that is already atomic, so the
        files go straight in.
        """
        directory = Path(dir_path)
        directory.mkdir(parents=True, exist_ok=True)
        self._write_files(directory)

    @classmethod
    def load_assets(cls, dir_path: str | os.PathLike) -> DistilBertTokenizer:
        """Keras ``load_assets`` counterpart: the tokenizer ``save_assets`` wrote into ``dir_path``.

        A class method returning a new tokenizer; a layer's own ``load_assets(dir_path)`` calls it
        and keeps the result.
        """
        directory = Path(dir_path)
        if not (directory / TOKENIZER_JSON_NAME).is_file() and not (directory / VOCAB_NAME).is_file():
            raise ValueError(
                f"No tokenizer assets in {os.fspath(directory)!r}: expected {TOKENIZER_JSON_NAME} written by "
                "DistilBertTokenizer.save_assets(). Was the model saved without a tokenizer?"
            )
        return cls._from_directory(directory, source=os.fspath(directory))


# -- vocabulary files ----------------------------------------------------------------------------
def read_vocab_file(path: str | os.PathLike) -> dict[str, int]:
    """A ``vocab.txt`` (one token per line, id = line number) as token -> id."""
    path = Path(path)
    if not path.is_file():
        where = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(
            f"Vocabulary file {os.fspath(path)!r} {where}. Pass the path of a WordPiece vocab.txt (one token per "
            "line), a list of tokens, or use DistilBertTokenizer.from_pretrained(directory) for a checkpoint directory."
        )
    text = checkpoints.read_text_file(path, "a WordPiece vocabulary")
    # Lines as Python's text mode reads them (\r\n and \r end lines too), not str.splitlines, which also
    # splits inside tokens at characters such as U+2028 or U+0085.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    limit = SIZE_LIMITS["vocab_size"]
    if len(lines) > limit and not large_models_allowed():
        raise ValueError(
            f"Vocabulary file {os.fspath(path)!r} has {len(lines):,} tokens, above the vocab_size limit of {limit:,} "
            f"(far above any real DistilBERT); is it the right file? If the model is genuinely this large, set "
            f"{ALLOW_LARGE_ENV}=1."
        )
    return _vocab_from_list(lines, source=f"vocab file {os.fspath(path)!r}")


def _vocab_from_list(tokens: list[str], source: str = "the vocabulary list") -> dict[str, int]:
    """Token -> id, id = position (a file's line number minus one), as BERT's ``load_vocab`` reads it."""
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if not isinstance(token, str):
            raise ValueError(
                f"Vocabulary entries must be strings; entry {index} of {source} is {type(token).__name__}."
            )
        if token in vocab:
            raise ValueError(
                f"Token {token!r} appears twice in {source} (ids {vocab[token]} and {index}): its id would be "
                "ambiguous. Remove the duplicate entry."
            )
        vocab[token] = index
    return vocab


def _check_vocab(vocab: Mapping[str, int], source: str) -> None:
    if not vocab:
        raise ValueError(
            f"The vocabulary from {source} is empty. Pass a WordPiece vocabulary holding at least "
            f"{', '.join(REQUIRED_SPECIAL_TOKENS)} and the word pieces."
        )
    missing = [token for token in REQUIRED_SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise ValueError(
            f"The vocabulary from {source} lacks the special token(s) {', '.join(missing)}. A DistilBERT vocabulary "
            f"needs {', '.join(REQUIRED_SPECIAL_TOKENS)} (and usually {MASK}); add them (BERT puts them near the top) "
            "or pass the vocab.txt that belongs to the checkpoint."
        )


class _NormalizerSettings(BaseModel):
    """The settings of ``tokenizer_config.json`` that choose the normalizer; other keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    do_lower_case: bool = True
    strip_accents: bool | None = None
    tokenize_chinese_chars: bool = True


def _read_tokenizer_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    config = checkpoints.read_json_file(path, "a tokenizer configuration")
    if not isinstance(config, dict):
        raise ValueError(f"{os.fspath(path)!r} must hold a JSON object, not {type(config).__name__}.")
    try:
        settings = _NormalizerSettings.model_validate(config)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc']))}: {item['msg']} (got {item['input']!r})" for item in error.errors()
        )
        raise ValueError(
            f"{os.fspath(path)} has settings of the wrong type: {problems}. do_lower_case and tokenize_chinese_chars "
            "are true or false, strip_accents true, false or null; fix or delete the file."
        ) from None
    return settings.model_dump(include=settings.model_fields_set)


def _bert_normalizer_settings(spec: Any) -> dict[str, Any]:
    if isinstance(spec, dict) and spec.get("type") == "BertNormalizer":
        return {
            "lowercase": bool(spec.get("lowercase", True)),
            "strip_accents": spec.get("strip_accents"),
            "tokenize_chinese_chars": bool(spec.get("handle_chinese_chars", True)),
        }
    return {"lowercase": None, "strip_accents": None, "tokenize_chinese_chars": True}


# -- argument checks -----------------------------------------------------------------------------
def _as_batch(texts: Any, pairs: Any) -> tuple[list[str], list[str] | None]:
    firsts = _as_text_list(texts, "texts")
    if pairs is None:
        return firsts, None
    seconds = _as_text_list(pairs, "pairs")
    if isinstance(texts, str) != isinstance(pairs, str) or len(firsts) != len(seconds):
        raise ValueError(
            f"texts and pairs must match one to one: got {len(firsts)} text(s) and {len(seconds)} pair text(s). "
            "Pass two lists of the same length (or two strings)."
        )
    return firsts, seconds


def _check_whole_text_lengths(firsts: list[str], seconds: list[str] | None, *, windowed: bool) -> None:
    for name, texts in (("texts", firsts), ("pairs", seconds or [])):
        for index, text in enumerate(texts):
            if len(text) > MAX_WHOLE_TEXT_CHARS:
                how = "split into windows" if windowed else "tokenized whole (truncation=False)"
                raise ValueError(
                    f"{name}[{index}] is {len(text):,} characters long; a text that is {how} may be at most "
                    f"{MAX_WHOLE_TEXT_CHARS:,} characters (distilbert_heads.tokenizer.MAX_WHOLE_TEXT_CHARS), to keep "
                    "memory bounded. Split the text into smaller documents (e.g. by paragraph) first."
                )


def _clean_text(text: str) -> str:
    """``text`` with lone surrogates (not encodable as UTF-8) replaced by U+FFFD, one for one."""
    if text.isascii() or not _LONE_SURROGATE.search(text):
        return text
    return _LONE_SURROGATE.sub("\ufffd", text)


def _as_text_list(value: Any, name: str) -> list[str]:
    if isinstance(value, str):
        return [_clean_text(value)]
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, (Sequence, np.ndarray)):
        raise ValueError(f"{name} must be a string or a list of strings, not {type(value).__name__}.")
    items = list(value)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise ValueError(
                f"{name}[{index}] is {type(item).__name__} ({item!r}); every entry must be a string. "
                "Convert missing values to '' first."
            )
    return [_clean_text(item) for item in items]


def _check_options(
    max_length: Any, truncation: Any, padding: Any, stride: Any, return_overflowing: bool, *, is_pair: bool
) -> str | None:
    """Validate encode's options; return the ``tokenizers`` truncation strategy (None: no truncation)."""
    minimum = 4 if is_pair else 3
    if not isinstance(max_length, (int, np.integer)) or isinstance(max_length, bool) or max_length < minimum:
        raise ValueError(
            f"max_length must be an integer of at least {minimum} (the special tokens plus one token), got "
            f"{max_length!r}."
        )
    if not isinstance(stride, (int, np.integer)) or isinstance(stride, bool) or stride < 0:
        raise ValueError(f"stride must be a non-negative integer (tokens of overlap between windows), got {stride!r}.")
    if padding not in ("longest", "max_length", True, False):
        raise ValueError(f"padding must be 'longest', 'max_length' or False, got {padding!r}.")
    if truncation is True or truncation is False:
        strategy = "longest_first" if truncation else None
    elif isinstance(truncation, str) and truncation in ("longest_first", "only_second"):
        strategy = truncation
    else:
        raise ValueError(f"truncation must be 'longest_first', 'only_second' or False, got {truncation!r}.")
    if strategy == "only_second" and not is_pair:
        raise ValueError(
            "truncation='only_second' trims the second sequence of pairs: pass pairs=..., or use 'longest_first'."
        )
    if return_overflowing and strategy is None:
        raise ValueError(
            "return_overflowing=True splits inputs longer than max_length, which needs truncation; "
            "pass truncation='longest_first' (or 'only_second' for pairs)."
        )
    if return_overflowing and is_pair and strategy != "only_second":
        raise ValueError(
            "Windows over pairs need truncation='only_second': the first text (the question) is kept whole in every "
            "window and the second (the context) is split with the stride."
        )
    return strategy


def _check_room(encoding: Any, index: int, max_length: int, strategy: str | None, stride: int, specials: int) -> None:
    """Refuse, with a readable error, what ``tokenizers`` would reject (or panic on) while truncating."""
    if specials == 3 and strategy == "only_second":
        first_length = sum(1 for s in encoding.sequence_ids if s == 0)
        room = max_length - specials - first_length
        if room < 1:
            raise ValueError(
                f"Pair {index}: the first text is {first_length} tokens long, which leaves no room for the second text "
                f"within max_length={max_length} (3 special tokens). Shorten the first text (the question), raise "
                "max_length, or use truncation='longest_first'."
            )
    elif specials == 3:
        return  # longest_first over pairs: no windows, so no stride to check
    else:
        room = max_length - specials
    if stride >= room:
        raise ValueError(
            f"stride={stride} must be smaller than the {room} tokens of text that fit in a window of input {index} "
            f"(max_length={max_length} minus special tokens{' and the first text' if specials == 3 else ''}). "
            "Lower the stride or raise max_length."
        )
