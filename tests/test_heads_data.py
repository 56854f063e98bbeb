"""Training from files: each built-in head's row schema, the options a file implies, and
`encode_examples` (shapes, label ids, NER sub-token alignment, QA token positions and windows)."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
from tokenizers import pre_tokenizers

from distilbert_heads.data import DataFileError, read_examples
from distilbert_heads.demo_data import data_path
from distilbert_heads.heads.ner import NerExample, NerHead
from distilbert_heads.heads.pairwise import PairExample, PairwiseHead
from distilbert_heads.heads.qa_span import QAExample, QASpanHead
from distilbert_heads.heads.sentiment import SentimentHead, TextExample
from distilbert_heads.input_kinds import BUILTIN_KINDS
from distilbert_heads.tokenizer import DistilBertTokenizer

D = 16
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
HEADS = {"sentiment": SentimentHead, "ner": NerHead, "qa": QASpanHead, "pairwise": PairwiseHead}
SCHEMAS = {"sentiment": TextExample, "ner": NerExample, "qa": QAExample, "pairwise": PairExample}


def demo_rows(task: str, limit: int | None = None) -> list[dict]:
    lines = data_path(task, "train").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:limit]]


@pytest.fixture(scope="module")
def tokenizer() -> DistilBertTokenizer:
    """An uncased WordPiece vocabulary over the demo files' words, plus pieces that split some words."""
    words: dict[str, None] = {}
    split = pre_tokenizers.BertPreTokenizer()
    for task in HEADS:
        for line in data_path(task, "train").read_text(encoding="utf-8").splitlines():
            for word, _ in split.pre_tokenize_str(" ".join(str(v) for v in _strings(json.loads(line)))):
                words[word.lower()] = None
    for whole in ("mcclintock", "somerville", "lovelace"):  # forced into sub-words below
        words.pop(whole, None)
    pieces = ["barbara", "mc", "##cl", "##int", "##ock", "some", "##r", "##ville", "love", "##lace", "u", "s"]
    return DistilBertTokenizer.from_vocab(SPECIALS + list(dict.fromkeys([*words, *pieces])))


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def write_csv(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# -- schemas accept the demo files and their CSV equivalents -----------------------------------
@pytest.mark.parametrize("task", list(HEADS))
def test_schema_accepts_demo_file(task):
    examples = read_examples(data_path(task, "train"), HEADS[task].example_schema, task)
    assert len(examples) == 480
    assert isinstance(examples[0], SCHEMAS[task])


def test_csv_rows_equal_jsonl_rows(tmp_path):
    rows = demo_rows("sentiment", 20)
    path = write_csv(tmp_path / "s.csv", ["text", "label"], [[r["text"], r["label"]] for r in rows])
    assert read_examples(path, TextExample) == [TextExample(**r) for r in rows]

    rows = demo_rows("pairwise", 20)
    path = write_csv(
        tmp_path / "p.csv", ["text_a", "text_b", "label"], [[r["text_a"], r["text_b"], r["label"]] for r in rows]
    )
    assert read_examples(path, PairExample) == [PairExample(**r) for r in rows]

    rows = demo_rows("ner", 20)
    path = write_csv(
        tmp_path / "n.csv", ["tokens", "tags"], [[" ".join(r["tokens"]), " ".join(r["tags"])] for r in rows]
    )
    from_csv = read_examples(path, NerExample)
    assert from_csv == [NerExample(**r) for r in rows]
    assert from_csv[0].text == " ".join(rows[0]["tokens"])

    rows = demo_rows("qa", 20)
    path = write_csv(
        tmp_path / "q.csv",
        ["question", "context", "answer_text", "answer_start"],
        [[r["question"], r["context"], r["answers"]["text"][0], r["answers"]["answer_start"][0]] for r in rows],
    )
    assert read_examples(path, QAExample) == [QAExample(**r) for r in rows]


def test_ner_span_rows_from_jsonl_and_csv(tmp_path):
    text = "Ada Lovelace visited Paris, then Acme Corp."
    entities = [
        {"start": 0, "end": 12, "label": "PER"},
        {"start": 21, "end": 26, "label": "LOC"},
        {"start": 33, "end": 42, "label": "ORG"},
    ]
    (tmp_path / "n.jsonl").write_text(json.dumps({"text": text, "entities": entities}) + "\n", encoding="utf-8")
    path = write_csv(tmp_path / "n.csv", ["text", "entities"], [[text, json.dumps(entities)]])
    from_jsonl, from_csv = read_examples(tmp_path / "n.jsonl", NerExample), read_examples(path, NerExample)
    assert from_jsonl == from_csv
    assert from_csv[0].gold_entities() == {("PER", 0, 12), ("LOC", 21, 26), ("ORG", 33, 42)}


def test_numeric_labels_in_csv(tmp_path):
    path = write_csv(
        tmp_path / "r.csv", ["text", "label"], [["meh", "0.25"], ["fine", "3"], ["ok", " 2 "], ["x", "pos"]]
    )
    assert [e.label for e in read_examples(path, TextExample)] == [0.25, 3, 2, "pos"]


@pytest.mark.parametrize(
    ("schema", "header", "rows", "message"),
    [
        (
            NerExample,
            ["tokens", "tags"],
            [["a b", "O O"], ["a b c", "O O"]],
            "line 3: .*tokens has 3 words but tags has 2; give exactly one tag per word",
        ),
        (NerExample, ["tokens", "tags"], [["a b", ""]], "line 2: .*tags is missing"),
        (
            NerExample,
            ["text", "entities"],
            [["Ada", '[{"start": 0, "end": 9, "label": "PER"}]']],
            r"line 2: .*entity PER has start=0, end=9, but the text has 3 characters",
        ),
        (
            NerExample,
            ["text", "entities"],
            [["Ada", '[{"start": 0, "end": 3, "label": "B-PER"}]']],
            "line 2: .*has a B-/I- prefix; give the type alone",
        ),
        (NerExample, ["text", "entities"], [["Ada", "[{oops"]], "line 2: .*entities must be a JSON list"),
        (
            QAExample,
            ["question", "context", "answer_text", "answer_start"],
            [["Who?", "Ada wrote it.", "Ada", "2"]],
            r"line 2: .*'Ada' does not match the context at answer_start=2, which reads 'a w'.*it occurs at \[0\]",
        ),
        (
            QAExample,
            ["question", "context", "answer_text", "answer_start"],
            [["Who?", "Ada wrote it.", "Ada", "x"]],
            "line 2: .*answer_start 'x' is not an integer",
        ),
        (TextExample, ["text", "label"], [["good", "pos"], ["bad", ""]], "line 3: .*label is empty"),
        (TextExample, ["text", "label"], [["  ", "pos"]], "line 2: .*text is empty"),
        (PairExample, ["text_a", "text_b", "label"], [["a", "", "same"]], "line 2: .*text_b: .*the text is empty"),
    ],
)
def test_bad_csv_rows_name_the_line(tmp_path, schema, header, rows, message):
    path = write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(DataFileError, match=message):
        read_examples(path, schema)


def test_bad_jsonl_rows_name_the_line(tmp_path):
    good = {"question": "Who?", "context": "Ada wrote it.", "answers": {"text": ["Ada"], "answer_start": [0]}}
    empty = {**good, "answers": {"text": [], "answer_start": []}}
    (tmp_path / "q.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(empty) + "\n")
    with pytest.raises(DataFileError, match="line 2: .*does not support unanswerable"):
        read_examples(tmp_path / "q.jsonl", QAExample)
    (tmp_path / "n.jsonl").write_text('{"tokens": ["a"], "tags": ["O"]}\n{"words": ["a"]}\n')
    with pytest.raises(DataFileError, match="line 2: .*needs tokens \\+ tags .* or text \\+ entities"):
        read_examples(tmp_path / "n.jsonl", NerExample)
    (tmp_path / "s.jsonl").write_text('{"text": "a", "label": true}\n')
    with pytest.raises(DataFileError, match="line 1: .*label is the boolean True"):
        read_examples(tmp_path / "s.jsonl", TextExample)


# -- options_from_examples --------------------------------------------------------------------
def test_options_from_examples():
    sentiment = read_examples(data_path("sentiment", "train"), TextExample)
    first = sentiment[0].label
    assert SentimentHead.options_from_examples(sentiment) == {
        "labels": [first, ({"positive", "negative"} - {first}).pop()]
    }
    ints = [TextExample(text="t", label=v) for v in (2, 0, 1, 2)]
    assert SentimentHead.options_from_examples(ints) == {"labels": ["0", "1", "2"]}
    scores = [TextExample(text="t", label=v) for v in (1, 0.5, 3)]
    assert SentimentHead.options_from_examples(scores, task_type="text_regression") == {"num_classes": 1}
    assert SentimentHead.options_from_examples(ints, task_type="text_regression") == {"num_classes": 1}

    pairs = read_examples(data_path("pairwise", "train"), PairExample)
    assert sorted(PairwiseHead.options_from_examples(pairs)["labels"]) == ["different", "paraphrase"]
    similar = [PairExample(text_a="a", text_b="b", label=v) for v in (0, 5, 3)]
    assert PairwiseHead.options_from_examples(similar, task_type="text_similarity") == {"num_classes": 1}
    assert PairwiseHead(
        D, "text_similarity", PairwiseHead.options_from_examples(similar, "text_similarity")
    ).is_regression

    ner = [
        NerExample(tokens=["a", "b", "c"], tags=["B-PER", "O", "B-LOC"]),
        NerExample(text="x y", entities=[{"start": 0, "end": 1, "label": "ORG"}]),
    ]
    assert NerHead.options_from_examples(ner) == {"labels": ["O", "B-PER", "B-LOC", "B-ORG", "I-ORG", "I-PER", "I-LOC"]}
    demo = read_examples(data_path("ner", "train"), NerExample)
    labels = NerHead.options_from_examples(demo)["labels"]
    assert labels[0] == "O" and sorted(labels) == sorted(
        ["O", *(f"{p}-{t}" for p in "BI" for t in ("PER", "LOC", "ORG"))]
    )
    assert QASpanHead.options_from_examples(read_examples(data_path("qa", "train"), QAExample)) == {}


# -- encode_examples --------------------------------------------------------------------------
def test_sentiment_encode_shapes_and_labels(tokenizer):
    examples = read_examples(data_path("sentiment", "train"), TextExample)[:8]
    head = SentimentHead(D, "sentiment", {"labels": ["negative", "positive"]})
    inputs, labels = head.encode_examples(examples, tokenizer, max_length=128)
    longest = max(len(tokenizer.encode(e.text).tokens[0]) for e in examples)
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert inputs["input_ids"].dtype == np.int32 and inputs["attention_mask"].dtype == np.int32
    assert inputs["input_ids"].shape == (8, longest) and longest < 128  # padded to the batch, not to max_length
    assert labels["logits"].tolist() == [["negative", "positive"].index(e.label) for e in examples]
    # Integer labels are indices (or names when the classes are numbers); truncation honours max_length.
    rows = [TextExample(text="the meal was great", label=1), TextExample(text="the meal", label=0)]
    inputs, labels = head.encode_examples(rows, tokenizer, max_length=4)
    assert inputs["input_ids"].shape == (2, 4) and labels["logits"].tolist() == [1, 0]
    stars = SentimentHead(D, "sentiment", {"labels": ["1", "2", "3"]})
    assert stars.encode_examples([TextExample(text="a", label=3)], tokenizer, 8)[1]["logits"].tolist() == [2]


def test_unknown_label_names_it_and_the_known_labels(tokenizer):
    head = SentimentHead(D, "sentiment", {"labels": ["negative", "positive"]})
    with pytest.raises(
        ValueError, match=r"example 1: unknown label 'neutral'; this head knows the labels \['negative', 'positive'\]"
    ):
        head.encode_examples(
            [TextExample(text="a", label="positive"), TextExample(text="b", label="neutral")], tokenizer, 16
        )
    with pytest.raises(ValueError, match="label 7 is neither a class name nor a class index"):
        head.encode_examples([TextExample(text="a", label=7)], tokenizer, 16)
    with pytest.raises(ValueError, match=r"unknown tag 'B-MISC'; this head knows the tags \['O', 'B-PER'\]"):
        NerHead(D, "ner", {"labels": ["O", "B-PER"]}).encode_examples(
            [NerExample(tokens=["a", "b"], tags=["B-PER", "B-MISC"])], tokenizer, 16
        )


def test_regression_and_pair_encoding(tokenizer):
    head = SentimentHead(D, "text_regression")
    _, labels = head.encode_examples([TextExample(text="a", label=0.5), TextExample(text="b", label=3)], tokenizer, 16)
    assert labels["logits"].dtype == np.float32 and labels["logits"].tolist() == [0.5, 3.0]
    with pytest.raises(ValueError, match="label 'pos' is not a number"):
        head.encode_examples([TextExample(text="a", label="pos")], tokenizer, 16)

    pairs = read_examples(data_path("pairwise", "train"), PairExample)[:4]
    head = PairwiseHead(D, "paraphrase_detection", {"labels": ["different", "paraphrase"]})
    inputs, labels = head.encode_examples(pairs, tokenizer, max_length=64)
    sep = tokenizer.sep_token_id
    assert [int((row == sep).sum()) for row in inputs["input_ids"]] == [2] * 4  # [CLS] a [SEP] b [SEP]
    assert labels["logits"].tolist() == [["different", "paraphrase"].index(p.label) for p in pairs]


def test_ner_labels_on_first_sub_token_only(tokenizer):
    example = NerExample(
        tokens=["Barbara", "McClintock", "visited", "U.S.", "."], tags=["B-PER", "I-PER", "O", "B-LOC", "O"]
    )
    head = NerHead(D, "ner", {"labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]})
    inputs, labels = head.encode_examples([example, NerExample(tokens=["Paris"], tags=["B-LOC"])], tokenizer, 32)
    tokens = tokenizer.encode([example.text]).tokens[0]
    assert tokens == ["[CLS]", "barbara", "mc", "##cl", "##int", "##ock", "visited", "u", ".", "s", ".", ".", "[SEP]"]
    names = head.class_names
    got = [names[i] if i >= 0 else i for i in labels["logits"][0][: len(tokens)]]
    # Specials and ## continuations get -100; the tokenizer's extra words inside "U.S." continue its entity.
    assert got == [-100, "B-PER", "I-PER", -100, -100, -100, "O", "B-LOC", "I-LOC", "I-LOC", "I-LOC", "O", -100]
    assert labels["logits"].shape == inputs["input_ids"].shape == (2, len(tokens))
    assert (labels["logits"][1][inputs["attention_mask"][1] == 0] == -100).all()  # padding
    # Without I-LOC the extra pieces are skipped (-100), never an error.
    plain = NerHead(D, "ner", {"labels": ["O", "B-PER", "I-PER", "B-LOC"]})
    row = plain.encode_examples([example], tokenizer, 32)[1]["logits"][0]
    assert row[7] == plain.class_names.index("B-LOC") and (row[8:11] == -100).all()


def test_ner_span_rows_label_like_word_rows(tokenizer):
    words = NerExample(
        tokens=["Ada", "Lovelace", "moved", "to", "New", "York", "."],
        tags=["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"],
    )
    spans = NerExample(
        text="Ada Lovelace moved to New York.",
        entities=[{"start": 0, "end": 12, "label": "PER"}, {"start": 22, "end": 30, "label": "LOC"}],
    )
    head = NerHead(D, "ner", NerHead.options_from_examples([words, spans]))
    _, from_words = head.encode_examples([words], tokenizer, 32)
    _, from_spans = head.encode_examples([spans], tokenizer, 32)
    np.testing.assert_array_equal(from_words["logits"], from_spans["logits"])
    assert (
        spans.gold_entities() == {(t, s, e) for t, s, e in words.gold_entities()} == {("PER", 0, 12), ("LOC", 22, 30)}
    )


def test_ner_warns_when_an_entity_starts_inside_a_word(tokenizer):
    example = NerExample(text="Lovelace moved", entities=[{"start": 4, "end": 8, "label": "PER"}])
    head = NerHead(D, "ner", {"labels": ["O", "B-PER", "I-PER"]})
    with pytest.warns(UserWarning, match="1 entity start inside a word"):
        head.encode_examples([example], tokenizer, 16)


def _answer_from_labels(tokenizer, inputs, labels, example, row):
    """The context characters that the token labels of ``row`` point at."""
    encoding = tokenizer.encode([example.question], [example.context])
    ids = [i for i in inputs["input_ids"][row] if i != tokenizer.pad_token_id]
    assert ids == encoding.input_ids[0].tolist()
    start, end = int(labels["start_logits"][row]), int(labels["end_logits"][row])
    assert encoding.sequence_ids[0][start] == encoding.sequence_ids[0][end] == 1
    return example.context[encoding.offsets[0][start][0] : encoding.offsets[0][end][1]]


def test_qa_token_positions_map_back_to_the_answer(tokenizer):
    examples = read_examples(data_path("qa", "train"), QAExample)[:16]
    head = QASpanHead(D, "qa")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # short contexts: nothing is dropped, nothing to warn about
        inputs, labels = head.encode_examples(examples, tokenizer, max_length=96)
    assert inputs["input_ids"].shape[0] == 16 and inputs["input_ids"].shape[1] < 96
    assert labels["start_logits"].dtype == np.int32
    for row, example in enumerate(examples):
        assert _answer_from_labels(tokenizer, inputs, labels, example, row) == example.answers.text[0]


def test_qa_long_contexts_keep_windows_with_the_answer(tokenizer):
    filler = " ".join(["the movie was great"] * 12)
    context = f"{filler} Marie Curie founded Hooli in 1984. {filler}"
    answer = "Marie Curie"
    example = QAExample(
        question="Who founded Hooli?",
        context=context,
        answers={"text": [answer], "answer_start": [context.index(answer)]},
    )
    head = QASpanHead(D, "qa")
    with pytest.warns(
        UserWarning, match=r"dropped \d+ of \d+ windows .*stride=4\) that do not hold their whole answer; 0 of 1"
    ):
        inputs, labels = head.encode_examples([example], tokenizer, max_length=24, stride=4)
    assert 1 <= len(labels["start_logits"]) and inputs["input_ids"].shape[1] <= 24
    windows = tokenizer.encode(
        [example.question], [context], max_length=24, truncation="only_second", stride=4, return_overflowing=True
    )
    kept = [
        r
        for r in range(len(windows))
        if windows.input_ids[r].tolist()[: inputs["input_ids"].shape[1]]
        in [row.tolist() for row in inputs["input_ids"]]
    ]
    for i, row in enumerate(kept):
        start, end = int(labels["start_logits"][i]), int(labels["end_logits"][i])
        assert context[windows.offsets[row][start][0] : windows.offsets[row][end][1]] == answer
    # An answer longer than any window cannot be kept: a clear error, not an empty training set.
    with pytest.raises(ValueError, match="No example kept its answer"):
        long = QAExample(question="What?", context=filler, answers={"text": [filler], "answer_start": [0]})
        head.encode_examples([long], tokenizer, max_length=12, stride=2)


def test_every_demo_file_encodes(tokenizer):
    for task, cls in HEADS.items():
        examples = read_examples(data_path(task, "train"), cls.example_schema)[:32]
        head = cls(D, task, cls.options_from_examples(examples))
        inputs, labels = head.encode_examples(examples, tokenizer, max_length=64)
        assert set(labels) == set(head.output_names)
        for value in labels.values():
            assert len(value) == len(inputs["input_ids"])
        assert cls.input_kind in BUILTIN_KINDS.values()  # built-in heads declare the kind objects
