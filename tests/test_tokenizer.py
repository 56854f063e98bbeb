"""The tokenizer against `transformers`' DistilBertTokenizerFast on a vocabulary trained here."""

from __future__ import annotations

import json
import pickle
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from helpers import SPECIAL_TOKENS as SPECIALS
from helpers import assert_mentions

from distilbert_heads.encoder import checkpoints
from distilbert_heads.text.tokenizer import BatchEncoding, DistilBertTokenizer

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


# Inputs the parity tests run on: accents (composed and combining), punctuation, CJK, emoji,
# words over BERT's 100-character limit, control and zero-width characters, empty and blank.
CORPUS = [
    "Hello, World! The café's crème brûlée was naïve.",
    "RÉSUMÉ résumé Resume resumes",
    "東京は日本の首都です。北京欢迎你",
    "I ❤️ pizza 🍕🍕 and 👍🏽 thumbs",
    "",
    "   \t\n ",
    "x" * 150,
    "anti" + "dis" * 40 + "establishment and then more words",
    "don't stop—believing… (really) [maybe] {no}",
    "e\u0301cole Ångström ÆØÅ straße İstanbul Zürich",
    "Zero\u200bwidth and\u00a0nbsp and\x00control\x07chars",
    "한국어 텍스트 and العربية text",
    "3.14159 is π; 1,000,000 $100 €50 #hashtag @user",
    "Mixed CASE Words In Title Case",
    "literal [SEP] and [MASK] and [mask] and [CLS]x tokens",
    "tab\tseparated\tvalues\r\nnew line",
    "The quick brown fox jumps over the lazy dog " * 4,
]
PAIR_SECONDS = [
    "Where is the café?",
    "",
    "北京 and 東京 are capitals",
    "The quick brown fox " * 10,
    "naïve question?",
    "   ",
    "Supercalifragilisticexpialidocious words are running",
    "I ❤️ résumés",
    "one",
    "Crème brûlée, please.",
    "the dog",
    "x" * 120,
    "ÆØÅ",
    "words words words words words words words words",
    "a",
    "[PAD] [UNK]",
    "end.",
]

SETTINGS = {
    "uncased": {"lowercase": True, "strip_accents": None},
    "cased": {"lowercase": False, "strip_accents": None},
    "cased-strip-accents": {"lowercase": False, "strip_accents": True},
    "lowercase-keep-accents": {"lowercase": True, "strip_accents": False},
}


def _training_corpus() -> list[str]:
    words = (
        "the quick brown fox jumps over lazy dog hello world café crème brûlée naïve résumé resume running runner "
        "runs question answer context where capitals words please thumbs pizza and is was are then more one end "
        "école ångström zürich straße istanbul mixed case title values separated new line tab zero width control "
        "chars text hashtag user really maybe stop believing don supercalifragilisticexpialidocious establishment"
    ).split()
    cjk = "東京は日本の首都です北京欢迎你한국어텍스트"
    lines = []
    for i, word in enumerate(words):
        variants = [word, word.capitalize(), word.upper(), _strip_accents(word)]
        lines.append(" ".join(variants) + f" {words[(i * 7) % len(words)]}, {cjk[i % len(cjk)]}! ❤️ 🍕 π €")
    return lines * 3


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory) -> Path:
    """A WordPiece vocab.txt (a few hundred entries, with ## pieces) trained on a small mixed corpus."""
    trainer = tokenizers.BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    trainer.train_from_iterator(
        _training_corpus(), vocab_size=800, min_frequency=1, special_tokens=SPECIALS, show_progress=False
    )
    directory = tmp_path_factory.mktemp("vocab")
    trainer.save_model(str(directory))
    tokens = (directory / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert 300 <= len(tokens) <= 800 and any(t.startswith("##") for t in tokens) and "東" in tokens
    return directory / "vocab.txt"


def reference_tokenizer(vocab_file: Path, tmp_path: Path, lowercase: bool, strip_accents: bool | None):
    """transformers' tokenizer on the same vocabulary, loaded from a directory holding only vocab.txt.

    (transformers 5 silently ignores `DistilBertTokenizerFast(vocab_file=...)`, so the directory route it is;
    the size check guards against the reference falling back to an empty vocabulary.)
    """
    directory = tmp_path / "reference"
    directory.mkdir(exist_ok=True)
    (directory / "vocab.txt").write_bytes(vocab_file.read_bytes())
    reference = transformers.DistilBertTokenizerFast.from_pretrained(
        directory, do_lower_case=lowercase, strip_accents=strip_accents
    )
    assert len(reference) == len(vocab_file.read_text(encoding="utf-8").splitlines())
    return reference


def reference_batch(reference, texts, pairs=None, **kwargs) -> dict:
    encoded = reference(texts, pairs, return_offsets_mapping=True, padding=True, **kwargs)
    rows = len(encoded["input_ids"])
    return {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "offsets": [[tuple(o) for o in row] for row in encoded["offset_mapping"]],
        "sequence_ids": [encoded.sequence_ids(i) for i in range(rows)],
        "word_ids": [encoded.word_ids(i) for i in range(rows)],
        "overflow_to_sample": list(encoded.get("overflow_to_sample_mapping", range(rows))),
    }


def assert_same(ours: BatchEncoding, theirs: dict) -> None:
    assert ours.input_ids.dtype == np.int32 and ours.attention_mask.dtype == np.int32
    assert ours.input_ids.tolist() == theirs["input_ids"]
    assert ours.attention_mask.tolist() == theirs["attention_mask"]
    assert ours.offsets == theirs["offsets"]
    assert ours.sequence_ids == theirs["sequence_ids"]
    assert ours.word_ids == theirs["word_ids"]
    assert ours.overflow_to_sample == theirs["overflow_to_sample"]


def assert_vocabulary_is_used(batch: BatchEncoding, tokenizer: DistilBertTokenizer) -> None:
    """Parity on a batch of [UNK]s would prove nothing: most real tokens must be known."""
    real = batch.input_ids[batch.attention_mask.astype(bool)]
    known = real[(real != tokenizer.unk_token_id) & (real != tokenizer.cls_token_id) & (real != tokenizer.sep_token_id)]
    assert known.size > 0.6 * real.size


# -- parity ------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_single_texts_match_transformers(vocab_file, tmp_path, setting):
    ours = DistilBertTokenizer.from_vocab(vocab_file, **SETTINGS[setting])
    reference = reference_tokenizer(vocab_file, tmp_path, **SETTINGS[setting])
    batch = ours.encode(CORPUS)
    assert_same(batch, reference_batch(reference, CORPUS))
    assert_vocabulary_is_used(batch, ours)


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_pairs_match_transformers(vocab_file, tmp_path, setting):
    ours = DistilBertTokenizer.from_vocab(vocab_file, **SETTINGS[setting])
    reference = reference_tokenizer(vocab_file, tmp_path, **SETTINGS[setting])
    batch = ours.encode(CORPUS, PAIR_SECONDS)
    assert_same(batch, reference_batch(reference, CORPUS, PAIR_SECONDS))
    assert {s for row in batch.sequence_ids for s in row} == {None, 0, 1}


def test_uncased_and_cased_differ_as_bert_does(vocab_file):
    uncased = DistilBertTokenizer.from_vocab(vocab_file)
    cased = DistilBertTokenizer.from_vocab(vocab_file, lowercase=False)
    assert uncased.encode("Crème").tokens[0][1:-1] == ["creme"]
    assert cased.encode("Crème").tokens[0][1:-1] == ["Crème"]
    assert cased.encode("東京").tokens[0][1:-1] == ["東", "京"]  # CJK: one token per character
    assert uncased.encode("x" * 101).tokens[0][1:-1] == ["[UNK]"]  # over max_input_chars_per_word


@pytest.mark.parametrize("max_length", [5, 9, 16])
def test_longest_first_truncation_matches_transformers(vocab_file, tmp_path, max_length):
    ours = DistilBertTokenizer.from_vocab(vocab_file)
    reference = reference_tokenizer(vocab_file, tmp_path, lowercase=True, strip_accents=None)
    kwargs = {"max_length": max_length, "truncation": "longest_first"}
    assert_same(ours.encode(CORPUS, **kwargs), reference_batch(reference, CORPUS, **kwargs))
    pairs = ours.encode(CORPUS, PAIR_SECONDS, **kwargs)
    assert_same(pairs, reference_batch(reference, CORPUS, PAIR_SECONDS, **kwargs))
    assert pairs.input_ids.shape[1] == max_length


def test_only_second_truncation_matches_transformers(vocab_file, tmp_path):
    ours = DistilBertTokenizer.from_vocab(vocab_file, lowercase=False)
    reference = reference_tokenizer(vocab_file, tmp_path, lowercase=False, strip_accents=None)
    questions = ["Where is it?", "Who?", "", "What is the capital of Japan?"]
    contexts = [CORPUS[0] * 3, CORPUS[2] * 5, CORPUS[3], "short"]
    kwargs = {"max_length": 24, "truncation": "only_second"}
    batch = ours.encode(questions, contexts, **kwargs)
    assert_same(batch, reference_batch(reference, questions, contexts, **kwargs))
    # The question is kept whole in every row.
    for row, question in enumerate(questions):
        first = [t for t, s in zip(batch.tokens[row], batch.sequence_ids[row]) if s == 0]
        assert first == ours.encode(question).tokens[0][1:-1]


@pytest.mark.parametrize("stride", [0, 2, 7])
def test_windows_match_transformers(vocab_file, tmp_path, stride):
    ours = DistilBertTokenizer.from_vocab(vocab_file)
    reference = reference_tokenizer(vocab_file, tmp_path, lowercase=True, strip_accents=None)
    questions = ["Where is the café?", "Who runs?", "short one"]
    contexts = [" ".join(CORPUS), CORPUS[-1] * 3, "tiny context"]
    kwargs = {"max_length": 20, "stride": stride}
    batch = ours.encode(questions, contexts, truncation="only_second", return_overflowing=True, **kwargs)
    theirs = reference_batch(
        reference, questions, contexts, truncation="only_second", return_overflowing_tokens=True, **kwargs
    )
    assert_same(batch, theirs)
    assert batch.overflow_to_sample.count(0) > 3 and batch.overflow_to_sample.count(2) == 1
    # Consecutive windows of one input overlap by exactly `stride` context tokens.
    rows = [r for r, sample in enumerate(batch.overflow_to_sample) if sample == 0]
    for previous, current in zip(rows, rows[1:]):
        before = [o for o, s in zip(batch.offsets[previous], batch.sequence_ids[previous]) if s == 1]
        after = [o for o, s in zip(batch.offsets[current], batch.sequence_ids[current]) if s == 1]
        assert (before[len(before) - stride :] if stride else []) == after[:stride]

    singles = ours.encode(CORPUS, return_overflowing=True, **kwargs)
    assert_same(singles, reference_batch(reference, CORPUS, truncation=True, return_overflowing_tokens=True, **kwargs))


# -- offsets -----------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", ["uncased", "cased"])
def test_offsets_point_into_the_original_text(vocab_file, setting):
    tokenizer = DistilBertTokenizer.from_vocab(vocab_file, **SETTINGS[setting])
    texts = ["Crème brûlée à Zürich: naïve café, 東京は日本!", "RÉSUMÉ of Ångström — ÉCOLE straße 🍕 pizza", CORPUS[1]]
    batch = tokenizer.encode(texts, texts[::-1])
    checked = 0
    for row in range(len(batch)):
        for token, (start, end), sequence in zip(batch.tokens[row], batch.offsets[row], batch.sequence_ids[row]):
            if sequence is None:
                assert (start, end) == (0, 0)
                continue
            if token == "[UNK]":
                continue
            piece = (texts if sequence == 0 else texts[::-1])[row][start:end]
            expected = token.removeprefix("##")
            assert (_strip_accents(piece).lower() if setting == "uncased" else piece) == expected
            checked += 1
    assert checked > 40


def test_offsets_are_character_offsets_for_multibyte_text(vocab_file):
    tokenizer = DistilBertTokenizer.from_vocab(vocab_file)
    text = "🍕🍕 naïve 東京"
    batch = tokenizer.encode(text)
    spans = {token: (start, end) for token, (start, end) in zip(batch.tokens[0], batch.offsets[0])}
    assert text[slice(*spans["naive"])] == "naïve"
    assert text[slice(*spans["東"])] == "東"
    assert spans["naive"] == (text.index("naïve"), text.index("naïve") + 5)  # characters, not UTF-8 bytes


# -- batches and edge cases --------------------------------------------------------------------
def test_padding_longest_pads_to_this_batch_only(vocab_file):
    tokenizer = DistilBertTokenizer.from_vocab(vocab_file)
    batch = tokenizer.encode(["hello world", "hello"])
    assert batch.input_ids.shape == (2, 4)
    assert batch.input_ids[1, -1] == tokenizer.pad_token_id and batch.attention_mask[1].tolist() == [1, 1, 1, 0]
    assert batch.offsets[1][-1] == (0, 0) and batch.sequence_ids[1][-1] is None and batch.word_ids[1][-1] is None
    assert tokenizer.encode(["hello"], padding="max_length", max_length=10).input_ids.shape == (1, 10)
    assert tokenizer.encode(["hello", "world"], padding=False).input_ids.shape == (2, 3)
    with pytest.raises(ValueError, match="padding='longest'"):
        tokenizer.encode(["hello world", "hello"], padding=False)
    inputs = batch.as_model_inputs()
    assert set(inputs) == {"input_ids", "attention_mask"} and inputs["input_ids"] is batch.input_ids


def test_empty_and_whitespace_give_cls_sep(vocab_file):
    tokenizer = DistilBertTokenizer.from_vocab(vocab_file)
    batch = tokenizer.encode(["", "  \t\n", "\u200b"])
    cls_sep = [tokenizer.cls_token_id, tokenizer.sep_token_id]
    assert batch.input_ids.tolist() == [cls_sep] * 3
    assert tokenizer.encode("", "").tokens == [["[CLS]", "[SEP]", "[SEP]"]]
    assert tokenizer.encode([]).input_ids.shape == (0, 0)


def test_very_long_text_is_truncated_or_windowed(vocab_file):
    tokenizer = DistilBertTokenizer.from_vocab(vocab_file)
    text = "the quick brown fox " * 400  # 1600 words
    assert tokenizer.encode(text).input_ids.shape == (1, 512)
    windows = tokenizer.encode(text, max_length=128, stride=16, return_overflowing=True)
    # 1600 tokens, 126 per window, each window starting 126 - 16 = 110 tokens after the previous one.
    assert windows.input_ids.shape[1] == 128 and len(windows) == 1 + -(-(1600 - 126) // 110) == 15
    assert set(windows.overflow_to_sample) == {0}
    with pytest.raises(ValueError, match=r"1602 tokens.*max_length=512.*truncation=.*stride"):
        tokenizer.encode(text, truncation=False)
    assert tokenizer.encode("hello", truncation=False).tokens == [["[CLS]", "hello", "[SEP]"]]


def _long_hostile_texts(cut: int) -> list[str]:
    """Texts past the first prefix (``cut`` characters) with something awkward where it falls."""
    mixed = " ".join(CORPUS)
    return [
        (mixed * (3 * cut // len(mixed) + 2)),
        " " * (3 * cut) + "words after a long run of spaces " * 5,
        "\x00\x07" * (2 * cut) + " control characters first, then words " * 3,
        "a " * ((cut - 60) // 2) + "x" * 150 + " tail words" * 20,
        "ab " * ((cut - 2) // 3) + "[SEP] more words" * 40,
        "東京" * (2 * cut),
    ]


@pytest.mark.parametrize("max_length", [8, 12])
def test_long_texts_keep_exactly_the_tokens_of_the_whole_text(vocab_file, tmp_path, max_length):
    """Truncating encodes read only a prefix of a long text; what they keep must be what transformers keeps."""
    from distilbert_heads.text.tokenizer import PREFIX_CHARS_PER_TOKEN

    tokenizer = DistilBertTokenizer.from_vocab(vocab_file, lowercase=False)
    reference = reference_tokenizer(vocab_file, tmp_path, lowercase=False, strip_accents=False)
    texts = _long_hostile_texts(max_length * PREFIX_CHARS_PER_TOKEN)
    assert all(len(text) > max_length * PREFIX_CHARS_PER_TOKEN for text in texts)
    assert_same(
        tokenizer.encode(texts, max_length=max_length),
        reference_batch(reference, texts, truncation=True, max_length=max_length),
    )
    shorts = ["a question", "", *texts[:4]]
    for strategy in ("longest_first", "only_second"):
        firsts = shorts if strategy == "longest_first" else ["a question"] * len(texts)
        assert_same(
            tokenizer.encode(firsts, texts, max_length=max_length, truncation=strategy),
            reference_batch(reference, firsts, texts, truncation=strategy, max_length=max_length),
        )


def test_texts_tokenized_whole_are_bounded_in_characters(vocab_file):
    from distilbert_heads.text.tokenizer import MAX_WHOLE_TEXT_CHARS

    tokenizer = DistilBertTokenizer.from_vocab(vocab_file)
    huge = "word " * (MAX_WHOLE_TEXT_CHARS // 5 + 1)
    for kwargs in ({"return_overflowing": True, "stride": 2}, {"truncation": False}):
        with pytest.raises(ValueError, match=r"texts\[1\] is 1,000,005 characters long.*at most 1,000,000"):
            tokenizer.encode(["fine", huge], max_length=16, **kwargs)


def test_lone_surrogates_become_replacement_characters_one_for_one(vocab_file):
    tokenizer = DistilBertTokenizer.from_vocab(vocab_file)
    text = "caf\ud800e and \udfff world \ud83d\ude00"
    encoding = tokenizer.encode(text)
    assert (
        encoding.tokens
        == tokenizer.encode(
            text.replace("\ud800", "\ufffd")
            .replace("\udfff", "\ufffd")
            .replace("\ud83d", "\ufffd")
            .replace("\ude00", "\ufffd")
        ).tokens
    )
    assert [text[s:e] for s, e in encoding.offsets[0] if e][-2:] == ["and", "world"]
    pair = tokenizer.encode("\ud800 question", "context \udc00")
    assert pair.tokens[0][0] == "[CLS]" and pair.tokens[0].count("[SEP]") == 2


def test_impossible_truncation_is_a_value_error_not_a_crash(vocab_file):
    tokenizer = DistilBertTokenizer.from_vocab(vocab_file)
    long_question, context = "the quick brown fox " * 10, "the lazy dog " * 10
    with pytest.raises(ValueError, match="no room for the second text"):
        tokenizer.encode(long_question, context, max_length=20, truncation="only_second")
    with pytest.raises(ValueError, match="stride=5 must be smaller"):
        tokenizer.encode("who", context, max_length=10, truncation="only_second", stride=5, return_overflowing=True)
    with pytest.raises(ValueError, match="stride=8 must be smaller"):
        tokenizer.encode(context, max_length=10, stride=8, return_overflowing=True)
    # The same stride is fine when nothing needs cutting.
    assert (
        len(tokenizer.encode("who", "dog", max_length=10, truncation="only_second", stride=8, return_overflowing=True))
        == 1
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"texts": "a", "truncation": "only_second"}, "pass pairs"),
        ({"texts": ["a"], "pairs": ["b"], "return_overflowing": True}, "only_second"),
        ({"texts": ["a", "b"], "pairs": ["c"]}, "2 text"),
        ({"texts": ["a", None]}, r"texts\[1\] is NoneType"),
        ({"texts": 3}, "string or a list"),
        ({"texts": "a", "max_length": 2}, "at least 3"),
        ({"texts": "a", "padding": "right"}, "padding must be"),
        ({"texts": "a", "truncation": "only_first"}, "truncation must be"),
        ({"texts": "a", "stride": -1}, "non-negative"),
        ({"texts": "a", "truncation": False, "return_overflowing": True}, "needs truncation"),
    ],
)
def test_bad_arguments_say_what_to_pass(vocab_file, kwargs, message):
    tokenizer = DistilBertTokenizer.from_vocab(vocab_file)
    with pytest.raises(ValueError, match=message):
        tokenizer.encode(**kwargs)


# -- vocabularies and files --------------------------------------------------------------------
def test_decode_joins_pieces_and_skips_special_tokens(vocab_file):
    tokenizer = DistilBertTokenizer.from_vocab(vocab_file)
    ids = tokenizer.encode("Supercalifragilisticexpialidocious café!").input_ids[0]
    assert tokenizer.decode(ids) == "supercalifragilisticexpialidocious cafe!"
    assert tokenizer.decode(ids, skip_special_tokens=False).startswith("[CLS] super")


def test_special_token_ids_come_from_the_vocab(vocab_file):
    tokens = vocab_file.read_text(encoding="utf-8").splitlines()
    shuffled = tokens[5:12] + ["[SEP]", "[UNK]"] + tokens[12:] + ["[CLS]", "[PAD]"]  # no [MASK]
    tokenizer = DistilBertTokenizer.from_vocab(shuffled)
    assert tokenizer.vocab_size == len(shuffled)
    assert (tokenizer.sep_token_id, tokenizer.unk_token_id) == (7, 8)
    assert (tokenizer.cls_token_id, tokenizer.pad_token_id) == (len(shuffled) - 2, len(shuffled) - 1)
    assert tokenizer.mask_token_id is None
    batch = tokenizer.encode(["hello", "hello world"])
    assert batch.input_ids[0].tolist() == [
        tokenizer.cls_token_id,
        shuffled.index("hello"),
        tokenizer.sep_token_id,
        tokenizer.pad_token_id,
    ]


def test_vocabulary_errors_say_what_was_wrong(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*vocab.txt"):
        DistilBertTokenizer.from_vocab(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty"):
        DistilBertTokenizer.from_vocab(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match=r"lacks the special token\(s\) \[CLS\], \[SEP\]"):
        DistilBertTokenizer.from_vocab(["[PAD]", "[UNK]", "hello"])
    with pytest.raises(ValueError, match="appears twice"):
        DistilBertTokenizer.from_vocab(SPECIALS + ["a", "a"])
    with pytest.raises(ValueError, match="expected tokenizer.json or vocab.txt"):
        DistilBertTokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="No tokenizer file"):
        DistilBertTokenizer.from_tokenizer_json(tmp_path / "tokenizer.json")
    word_level = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    word_level.save(str(tmp_path / "word_level.json"))
    with pytest.raises(ValueError) as error:
        DistilBertTokenizer.from_tokenizer_json(tmp_path / "word_level.json")
    assert_mentions(error, "'WordLevel'", "WordPiece")
    word_piece = tokenizers.Tokenizer(tokenizers.models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    word_piece.save(str(tmp_path / "word_piece.json"))
    with pytest.raises(ValueError) as error:
        DistilBertTokenizer.from_tokenizer_json(tmp_path / "word_piece.json")
    assert_mentions(error, "word_piece.json", "[PAD], [CLS], [SEP]")


@pytest.mark.parametrize("setting", ["uncased", "cased", "cased-strip-accents"])
def test_save_loads_in_transformers_with_the_same_ids(vocab_file, tmp_path, setting):
    ours = DistilBertTokenizer.from_vocab(vocab_file, **SETTINGS[setting])
    saved = ours.save(tmp_path / "saved")
    assert {p.name for p in saved.iterdir()} == {"vocab.txt", "tokenizer.json", "tokenizer_config.json"}
    assert (saved / "vocab.txt").read_text(encoding="utf-8") == vocab_file.read_text(encoding="utf-8")
    reloaded_by_hf = transformers.DistilBertTokenizerFast.from_pretrained(saved)
    assert reloaded_by_hf("Crème Zürich")["input_ids"] != ours.encode("plain").input_ids[0].tolist()
    assert_same(ours.encode(CORPUS, PAIR_SECONDS), reference_batch(reloaded_by_hf, CORPUS, PAIR_SECONDS))
    assert_same(DistilBertTokenizer.from_pretrained(saved).encode(CORPUS), reference_batch(reloaded_by_hf, CORPUS))


def test_from_pretrained_reads_vocab_and_config_or_a_transformers_tokenizer_json(vocab_file, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "vocab.txt").write_bytes(vocab_file.read_bytes())
    (plain / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}), encoding="utf-8")
    assert DistilBertTokenizer.from_pretrained(plain).encode("Crème").tokens[0][1] == "Crème"

    reference = reference_tokenizer(vocab_file, tmp_path, lowercase=False, strip_accents=None)
    reference.save_pretrained(tmp_path / "hf")
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    loaded = DistilBertTokenizer.from_pretrained(tmp_path / "hf")
    assert loaded.lowercase is False
    assert_same(loaded.encode(CORPUS, PAIR_SECONDS), reference_batch(reference, CORPUS, PAIR_SECONDS))
    from_json = DistilBertTokenizer.from_tokenizer_json(tmp_path / "hf" / "tokenizer.json")
    assert from_json.encode(CORPUS).input_ids.tolist() == loaded.encode(CORPUS).input_ids.tolist()


def test_from_pretrained_resolves_hub_ids_like_checkpoints(vocab_file, tmp_path, monkeypatch):
    snapshot = DistilBertTokenizer.from_vocab(vocab_file, lowercase=False).save(tmp_path / "snapshot")
    asked = []
    monkeypatch.setattr(checkpoints, "resolve_checkpoint_dir", lambda source: asked.append(source) or snapshot)
    tokenizer = DistilBertTokenizer.from_pretrained("someone/tiny-distilbert")
    assert asked == ["someone/tiny-distilbert"] and tokenizer.lowercase is False


def test_json_string_round_trip(vocab_file):
    for setting in ("uncased", "cased-strip-accents"):
        original = DistilBertTokenizer.from_vocab(vocab_file, **SETTINGS[setting])
        text = original.to_json_string()
        assert json.loads(text)["format"] == "distilbert_heads.text.tokenizer"
        restored = DistilBertTokenizer.from_json_string(text)
        assert (restored.lowercase, restored.strip_accents) == (original.lowercase, original.strip_accents)
        assert (
            restored.encode(CORPUS, PAIR_SECONDS).input_ids.tolist()
            == original.encode(CORPUS, PAIR_SECONDS).input_ids.tolist()
        )
    with pytest.raises(ValueError, match="to_json_string"):
        DistilBertTokenizer.from_json_string(json.dumps({"model": {}}))
    cased = DistilBertTokenizer.from_vocab(vocab_file, lowercase=False)
    unpickled = pickle.loads(pickle.dumps(cased))
    assert unpickled.lowercase is False
    assert unpickled.encode(CORPUS).input_ids.tolist() == cased.encode(CORPUS).input_ids.tolist()


def test_assets_travel_inside_a_keras_file(vocab_file, tmp_path):
    keras = pytest.importorskip("keras")

    @keras.saving.register_keras_serializable(package="test_tokenizer_assets")
    class TokenizerHolder(keras.layers.Layer):
        """The smallest layer that carries a tokenizer the way the task model does."""

        def __init__(self, tokenizer=None, **kwargs):
            super().__init__(**kwargs)
            self.tokenizer = tokenizer

        def call(self, inputs):
            return inputs

        def get_config(self):
            return super().get_config()  # the tokenizer travels as assets, not config

        def save_assets(self, dir_path):
            self.tokenizer.save_assets(dir_path)

        def load_assets(self, dir_path):
            self.tokenizer = DistilBertTokenizer.load_assets(dir_path)

    original = DistilBertTokenizer.from_vocab(vocab_file, lowercase=False)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, TokenizerHolder(original, name="holder")(inputs))
    model.save(tmp_path / "model.keras")

    reloaded = keras.models.load_model(tmp_path / "model.keras").get_layer("holder").tokenizer
    assert isinstance(reloaded, DistilBertTokenizer) and reloaded is not original
    assert reloaded.lowercase is False
    assert_same(reloaded.encode(CORPUS, PAIR_SECONDS), _as_dict(original.encode(CORPUS, PAIR_SECONDS)))
    with pytest.raises(ValueError, match="No tokenizer assets"):
        DistilBertTokenizer.load_assets(tmp_path / "nowhere")


def _as_dict(batch: BatchEncoding) -> dict:
    return {
        "input_ids": batch.input_ids.tolist(),
        "attention_mask": batch.attention_mask.tolist(),
        "offsets": batch.offsets,
        "sequence_ids": batch.sequence_ids,
        "word_ids": batch.word_ids,
        "overflow_to_sample": batch.overflow_to_sample,
    }
