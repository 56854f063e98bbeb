"""`decode` as the pipeline calls it (numpy outputs, the tokenizer's BatchEncoding, the original
inputs), on hand-made logits, and `evaluate` on hand-made predictions."""

from __future__ import annotations

import numpy as np
import pytest

from distilbert_heads.heads.ner import NerExample, NerHead
from distilbert_heads.heads.pairwise import PairExample, PairwiseHead
from distilbert_heads.heads.qa_span import QAExample, QASpanHead
from distilbert_heads.heads.sentiment import SentimentHead, TextExample
from distilbert_heads.tokenizer import DistilBertTokenizer

D = 16
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "zoe",
    "as",
    "##tr",
    "##om",
    "visited",
    "東",
    "京",
    "who",
    "founded",
    "hooli",
    "?",
    ".",
    ",",
    "in",
    "the",
    "movie",
    "was",
    "great",
    "marie",
    "curie",
    "and",
    "a",
    "b",
    "c",
    "d",
    "e",
    "f",
    "g",
    "h",
]


@pytest.fixture(scope="module")
def tokenizer() -> DistilBertTokenizer:
    return DistilBertTokenizer.from_vocab(SPECIALS + WORDS)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# -- sentiment and pairwise ---------------------------------------------------------------------
def test_sentiment_label_score_and_top_k(tokenizer):
    texts = ["the movie was great", "the movie", "great"]
    encoding = tokenizer.encode(texts)
    head = SentimentHead(D, "sentiment", {"labels": ["negative", "neutral", "positive"]})
    logits = np.array([[0.0, 1.0, 3.0], [2.0, 0.5, 0.0], [0.0, 0.0, 0.0]], dtype="float32")
    probs = softmax(logits)
    answers = head.decode({"logits": logits}, encoding, texts=texts)
    assert answers[0] == {"label": "positive", "score": pytest.approx(probs[0, 2])}
    assert answers[1]["label"] == "negative"
    assert answers[2]["score"] == pytest.approx(1 / 3)
    top = head.decode({"logits": logits}, encoding, texts=texts, top_k=2)
    assert [[a["label"] for a in row] for row in top] == [
        ["positive", "neutral"],
        ["negative", "neutral"],
        ["negative", "neutral"],
    ]  # ties keep class order
    assert len(head.decode({"logits": logits}, encoding, texts=texts, top_k=10)[0]) == 3
    regression = SentimentHead(D, "text_regression")
    assert regression.decode({"logits": np.array([[0.5], [-2.0], [4.0]], "float32")}, encoding, texts=texts) == [
        {"score": 0.5},
        {"score": -2.0},
        {"score": 4.0},
    ]


def test_sentiment_one_answer_per_input_with_windows(tokenizer):
    texts = ["a b c d e f g h", "a"]
    encoding = tokenizer.encode(texts, max_length=5, stride=1, return_overflowing=True)
    assert encoding.overflow_to_sample[:3] == [0, 0, 0] and len(encoding) > 2
    logits = np.tile(np.array([[3.0, 0.0]], "float32"), (len(encoding), 1))
    logits[encoding.overflow_to_sample.index(1)] = [0.0, 3.0]
    answers = SentimentHead(D, "sentiment", {"labels": ["x", "y"]}).decode({"logits": logits}, encoding, texts=texts)
    assert [a["label"] for a in answers] == ["x", "y"]


def test_pairwise_labels_and_similarity(tokenizer):
    pairs = [("the movie", "a movie"), ("great", "the movie was great")]
    encoding = tokenizer.encode([a for a, _ in pairs], [b for _, b in pairs])
    nli = PairwiseHead(D, "natural_language_inference")
    logits = np.array([[4.0, 0.0, 0.0], [0.0, 0.0, 4.0]], "float32")
    answers = nli.decode({"logits": logits}, encoding, pairs=pairs)
    assert [a["label"] for a in answers] == ["entailment", "contradiction"]
    assert answers[0]["score"] == pytest.approx(softmax(logits)[0, 0])
    similarity = PairwiseHead(D, "text_similarity")
    assert similarity.decode({"logits": np.array([[4.2], [0.3]], "float32")}, encoding, pairs=pairs) == [
        {"score": pytest.approx(4.2)},
        {"score": pytest.approx(0.3)},
    ]


# -- NER --------------------------------------------------------------------------------------------
def ner_logits(encoding, tag_of_token, labels) -> np.ndarray:
    """Logits whose argmax is ``tag_of_token(row, j)``; scores vary by position so means are checkable."""
    logits = np.zeros((*encoding.input_ids.shape, len(labels)), dtype="float32")
    for row in range(len(encoding)):
        for j in range(encoding.input_ids.shape[1]):
            logits[row, j, labels.index(tag_of_token(row, j))] = 3.0 + 0.1 * j
    return logits


def test_ner_merges_sub_words_with_char_spans_on_multibyte_text(tokenizer):
    text = "Zoë Åström visited 東京"
    encoding = tokenizer.encode([text])
    assert encoding.tokens[0] == ["[CLS]", "zoe", "as", "##tr", "##om", "visited", "東", "京", "[SEP]"]
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    # The ## pieces are predicted O and B-LOC on purpose: a word's tag is its first sub-token's.
    tags = ["O", "B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC", "I-LOC", "B-PER"]
    logits = ner_logits(encoding, lambda row, j: tags[j], labels)
    entities = NerHead(D, "ner", {"labels": labels}).decode({"logits": logits}, encoding, texts=[text])[0]
    assert [(e["entity"], e["start"], e["end"], e["word"]) for e in entities] == [
        ("PER", 0, 10, "Zoë Åström"),
        ("LOC", 19, 21, "東京"),
    ]
    for entity in entities:
        assert entity["word"] == text[entity["start"] : entity["end"]]
    probs = softmax(logits[0]).max(-1)
    assert entities[0]["score"] == pytest.approx(np.mean([probs[1], probs[2]]))  # first sub-token of each word
    assert set(entities[0]) == {"entity", "score", "start", "end", "word"}


def test_ner_one_list_per_text_and_empty_text(tokenizer):
    texts = ["Zoë visited 東京", "", "visited"]
    encoding = tokenizer.encode(texts)
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]

    def tag(row, j):
        token = encoding.tokens[row][j]
        return {"zoe": "B-PER", "東": "B-LOC", "京": "I-LOC"}.get(token, "O")

    answers = NerHead(D, "ner", {"labels": labels}).decode(
        {"logits": ner_logits(encoding, tag, labels)}, encoding, texts=texts
    )
    assert [[(e["entity"], e["word"]) for e in row] for row in answers] == [[("PER", "Zoë"), ("LOC", "東京")], [], []]


def test_ner_windows_of_a_long_text_are_stitched(tokenizer):
    text = "a b Zoë Åström c d e f 東京 g h"
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    by_token = {"zoe": "B-PER", "as": "I-PER", "東": "B-LOC", "京": "I-LOC"}
    head = NerHead(D, "ner", {"labels": labels})
    whole = tokenizer.encode([text])
    windows = tokenizer.encode([text], max_length=6, stride=2, return_overflowing=True)
    assert len(windows) > 3

    def decode(encoding):
        logits = ner_logits(encoding, lambda r, j: by_token.get(encoding.tokens[r][j], "O"), labels)
        return head.decode({"logits": logits}, encoding, texts=[text])[0]

    expected = [("PER", "Zoë Åström"), ("LOC", "東京")]
    assert [(e["entity"], e["word"]) for e in decode(whole)] == expected
    assert [(e["entity"], e["word"]) for e in decode(windows)] == expected  # the PER entity crosses a window edge


def test_ner_without_texts_keeps_per_token_tags():
    logits = np.zeros((2, 3, 9), "float32")
    answers = NerHead(D, "ner").decode({"logits": logits})
    assert len(answers) == 2 and answers[0]["tags"] == ["O", "O", "O"]


# -- QA ---------------------------------------------------------------------------------------------
LONG_CONTEXT = "a b c d e f g h a b c d marie curie founded hooli in a b c d e f"


def qa_logits(encoding, context, answer_start, answer_end):
    """Logits high at the answer's first and last context token, wherever a window holds them."""
    n, width = encoding.input_ids.shape
    start = np.zeros((n, width), "float32")
    end = np.zeros((n, width), "float32")
    for row in range(n):
        for j, (s, e) in enumerate(encoding.offsets[row]):
            if encoding.sequence_ids[row][j] != 1:
                continue
            if s == answer_start:
                start[row, j] = 8.0
            if e == answer_end:
                end[row, j] = 8.0
    return start, end


def test_qa_answer_crossing_a_window_edge_is_found_whole(tokenizer):
    question = "who founded hooli ?"
    answer = "marie curie founded hooli"
    char_start = LONG_CONTEXT.index(answer)
    char_end = char_start + len(answer)
    encoding = tokenizer.encode(
        [question], [LONG_CONTEXT], max_length=12, truncation="only_second", stride=2, return_overflowing=True
    )
    ends_by_row = [
        {e for (s, e), q in zip(encoding.offsets[r], encoding.sequence_ids[r]) if q == 1} for r in range(len(encoding))
    ]
    starts_by_row = [
        {s for (s, e), q in zip(encoding.offsets[r], encoding.sequence_ids[r]) if q == 1} for r in range(len(encoding))
    ]
    # Some window holds "marie" but not "curie": the answer crosses its edge.
    assert any(char_start in s and char_end not in e for s, e in zip(starts_by_row, ends_by_row))
    start, end = qa_logits(encoding, LONG_CONTEXT, char_start, char_end)
    # Illegal spans with huge logits: the question and special tokens, padding, end before start.
    for row in range(len(encoding)):
        for j, sequence in enumerate(encoding.sequence_ids[row]):
            if sequence != 1:
                start[row, j] = end[row, j] = 50.0
    head = QASpanHead(D, "qa")
    answers = head.decode(
        {"start_logits": start, "end_logits": end}, encoding, questions=[question], contexts=[LONG_CONTEXT]
    )
    assert answers == [
        {"answer": answer, "score": pytest.approx(answers[0]["score"]), "start": char_start, "end": char_end}
    ]
    assert LONG_CONTEXT[answers[0]["start"] : answers[0]["end"]] == answers[0]["answer"]
    assert 0.0 < answers[0]["score"] <= 1.0


def test_qa_never_picks_illegal_spans(tokenizer):
    question, context = "who ?", "Marie Curie founded Hooli in a b c"
    encoding = tokenizer.encode([question], [context])
    tokens = encoding.tokens[0]
    assert tokens[:4] == ["[CLS]", "who", "?", "[SEP]"]
    position = {token: j for j, token in enumerate(tokens) if encoding.sequence_ids[0][j] == 1}
    head = QASpanHead(D, "qa", {"max_answer_length": 3})

    def decode(starts: dict, ends: dict, head=head):
        start = np.zeros((1, len(tokens)), "float32")
        end = np.zeros((1, len(tokens)), "float32")
        start[0, :4] = end[0, :4] = 40.0  # question and special tokens: never legal
        start[0, -1] = end[0, -1] = 40.0  # the final [SEP]
        for token, value in starts.items():
            start[0, position[token]] = value
        for token, value in ends.items():
            end[0, position[token]] = value
        return head.decode(
            {"start_logits": start, "end_logits": end}, encoding, questions=[question], contexts=[context]
        )[0]

    answer = decode({"founded": 10.0}, {"hooli": 10.0})
    assert (answer["answer"], answer["start"], answer["end"]) == ("founded Hooli", 12, 25)
    # End before start: hooli -> curie scores 60 but is illegal; marie -> curie (35) beats hooli -> hooli (30).
    assert decode({"hooli": 30.0, "marie": 5.0}, {"curie": 30.0})["answer"] == "Marie Curie"
    # Too long: marie -> c (8 tokens) exceeds max_answer_length=3, founded -> hooli (22) wins.
    assert decode({"marie": 20.0, "founded": 10.0}, {"c": 20.0, "hooli": 12.0})["answer"] == "founded Hooli"
    # With a wider limit the long span wins; it is cut from the context, not from lowercased tokens.
    wide = QASpanHead(D, "qa", {"max_answer_length": 30})
    assert (
        decode({"marie": 20.0, "founded": 10.0}, {"c": 20.0, "hooli": 12.0}, head=wide)["answer"]
        == "Marie Curie founded Hooli in a b c"
    )
    assert decode({}, {}, head=wide)["start"] >= 0  # even flat logits give a span inside the context


def test_qa_several_questions_and_no_legal_span(tokenizer):
    questions, contexts = ["who ?", "who ?"], ["Marie Curie founded Hooli", "a b c d e f g h a b c d"]
    encoding = tokenizer.encode(
        questions, contexts, max_length=8, truncation="only_second", stride=1, return_overflowing=True
    )
    start, end = np.zeros(encoding.input_ids.shape, "float32"), np.zeros(encoding.input_ids.shape, "float32")
    rows = [r for r, s in enumerate(encoding.overflow_to_sample) if s == 0]
    for row in rows:
        for j, (s, e) in enumerate(encoding.offsets[row]):
            if encoding.sequence_ids[row][j] == 1 and s == 0:
                start[row, j] = 9.0
            if encoding.sequence_ids[row][j] == 1 and e == 11:
                end[row, j] = 9.0
    answers = QASpanHead(D, "qa").decode(
        {"start_logits": start, "end_logits": end}, encoding, questions=questions, contexts=contexts
    )
    assert answers[0]["answer"] == "Marie Curie" and len(answers) == 2
    padded_out = {"start_logits": np.full_like(start, -1e9), "end_logits": np.full_like(end, -1e9)}
    assert QASpanHead(D, "qa").decode(padded_out, encoding, questions=questions, contexts=contexts)[1] == {
        "answer": "",
        "score": 0.0,
        "start": None,
        "end": None,
    }


# -- evaluate ---------------------------------------------------------------------------------------
def test_classification_evaluate_numbers():
    head = SentimentHead(D, "sentiment", {"labels": ["neg", "pos"]})
    examples = [TextExample(text="t", label=v) for v in ("pos", "pos", "neg", 0)]
    predictions = [
        {"label": "pos", "score": 0.9},
        {"label": "neg", "score": 0.6},
        [{"label": "neg", "score": 0.7}, {"label": "pos", "score": 0.3}],
        {"label": "pos", "score": 0.8},
    ]
    scores = head.evaluate(examples, predictions)
    # pos: tp 1, fp 1, fn 1 -> f1 0.5; neg: tp 1, fp 1, fn 1 -> 0.5
    assert scores == {"accuracy": pytest.approx(0.5), "macro_f1": pytest.approx(0.5)}
    with pytest.raises(ValueError, match="4 examples but 3 predictions"):
        head.evaluate(examples, predictions[:3])


def test_regression_and_similarity_evaluate_numbers():
    examples = [TextExample(text="t", label=v) for v in (1.0, 2.0, 3.0, 4.0)]
    predictions = [{"score": v} for v in (1.5, 2.0, 2.5, 5.0)]
    scores = SentimentHead(D, "text_regression").evaluate(examples, predictions)
    assert scores["mse"] == pytest.approx((0.25 + 0 + 0.25 + 1) / 4)
    assert scores["spearman"] == pytest.approx(1.0)
    assert scores["pearson"] == pytest.approx(np.corrcoef([1, 2, 3, 4], [1.5, 2, 2.5, 5])[0, 1])
    pairs = [PairExample(text_a="a", text_b="b", label=v) for v in (0.0, 5.0, 2.5)]
    similarity = PairwiseHead(D, "text_similarity").evaluate(pairs, [{"score": 1.0}, {"score": 4.0}, {"score": 0.5}])
    assert similarity["spearman"] == pytest.approx(0.5)
    nli = PairwiseHead(D, "paraphrase_detection", {"labels": ["different", "paraphrase"]})
    pairs = [PairExample(text_a="a", text_b="b", label=v) for v in ("paraphrase", "different")]
    assert nli.evaluate(pairs, [{"label": "paraphrase", "score": 1.0}] * 2)["accuracy"] == 0.5


def test_ner_evaluate_is_entity_level_on_char_spans():
    examples = [
        NerExample(
            tokens=["Ada", "Lovelace", "met", "Alan", "in", "Paris"],
            tags=["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC"],
        ),
        NerExample(text="Acme Corp hired Zoë.", entities=[{"start": 0, "end": 9, "label": "ORG"}]),
    ]
    predictions = [
        [
            {"entity": "PER", "start": 0, "end": 12, "word": "Ada Lovelace", "score": 0.9},  # right
            {"entity": "PER", "start": 17, "end": 21, "word": "Alan", "score": 0.9},  # right
            {"entity": "ORG", "start": 25, "end": 30, "word": "Paris", "score": 0.9},
        ],  # wrong type
        [
            {"entity": "ORG", "start": 0, "end": 4, "word": "Acme", "score": 0.9},  # wrong end
            {"entity": "PER", "start": 16, "end": 19, "word": "Zoë", "score": 0.9},
        ],  # not gold
    ]
    scores = NerHead(D, "ner").evaluate(examples, predictions)
    # tp 2, fp 3, fn 2
    assert scores == {"precision": pytest.approx(2 / 5), "recall": pytest.approx(2 / 4), "f1": pytest.approx(4 / 9)}


def test_qa_evaluate_squad_numbers():
    examples = [
        QAExample(
            question="q",
            context="It was Marie Curie.",
            answers={"text": ["Marie Curie", "Curie"], "answer_start": [7, 13]},
        ),
        QAExample(question="q", context="In 1984 it began.", answers={"text": ["1984"], "answer_start": [3]}),
    ]
    predictions = [
        {"answer": "the Curie", "score": 0.5, "start": 0, "end": 1},
        {"answer": "1984 it", "score": 0.4, "start": 3, "end": 10},
    ]
    scores = QASpanHead(D, "qa").evaluate(examples, predictions)
    # "the Curie" normalises to "curie" (exact for the 2nd answer); "1984 it": precision 1/2, recall 1 -> 2/3
    assert scores == {"exact_match": pytest.approx(0.5), "f1": pytest.approx((1.0 + 2 / 3) / 2)}
