"""The sentiment (sequence classification and regression) head: build, data, decode, HF parity."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from head_checks import (
    CASE_FIELDS,
    HF_CASE_FIELDS,
    HF_DIM,
    MASK,
    B,
    D,
    case_ids,
    check_builds_weights_before_first_call,
    check_checkpoint_without_head_keeps_initialisation,
    check_config_round_trip_gives_identical_outputs,
    check_hf_head_weights_round_trip,
    check_loss_decreases_when_training,
    check_output_names_and_shapes,
    hf_case_ids,
    hidden,
    numpy_outputs,
    numpy_state_dict,
    run_both,
    sequence_labels,
    softmax,
    write_csv,
)
from helpers import assert_mentions, demo_rows
from keras import ops

from distilbert_heads.demo.datasets import data_path
from distilbert_heads.heads.sentiment import SentimentHead, TextExample
from distilbert_heads.plugins.head import HeadOptionsError
from distilbert_heads.training.data_files import DataFileError, read_examples

CASES = [
    (SentimentHead, "sentiment_analysis", {}, {"logits": (B, 2)}),
    (SentimentHead, "text_regression", {}, {"logits": (B, 1)}),
    (SentimentHead, "topic_classification", {"num_classes": 4, "label_smoothing": 0.1}, {"logits": (B, 4)}),
]
HF_CASES = [
    (
        "DistilBertForSequenceClassification",
        SentimentHead,
        "sentiment_analysis",
        {"num_classes": 3},
        ("pre_classifier", "classifier"),
    ),
    (
        "DistilBertForSequenceClassification",
        SentimentHead,
        "text_regression",
        {"num_classes": 1},
        ("pre_classifier", "classifier"),
    ),
]
each_case = pytest.mark.parametrize(CASE_FIELDS, CASES, ids=case_ids(CASES))
each_hf_case = pytest.mark.parametrize(HF_CASE_FIELDS, HF_CASES, ids=hf_case_ids(HF_CASES))


# -- build ------------------------------------------------------------------------------------
@each_case
def test_output_names_and_shapes(cls, task_type, options, shapes):
    check_output_names_and_shapes(cls, task_type, options, shapes)


@each_case
def test_builds_weights_before_first_call(cls, task_type, options, shapes):
    check_builds_weights_before_first_call(cls, task_type, options)


@each_case
def test_config_round_trip_gives_identical_outputs(cls, task_type, options, shapes):
    check_config_round_trip_gives_identical_outputs(cls, task_type, options)


@each_case
def test_loss_decreases_when_training(cls, task_type, options, shapes):
    check_loss_decreases_when_training(cls, task_type, options, sequence_labels)


def test_option_values_are_validated():
    with pytest.raises(HeadOptionsError, match="dropout_rate"):
        SentimentHead(D, "sentiment_analysis", {"dropout_rate": 1.5})


def test_sentiment_regression():
    head = SentimentHead(D, "sentiment_analysis", {"num_classes": 1})
    outputs = numpy_outputs(head(hidden(), MASK))
    assert outputs["logits"].shape == (B, 1)
    assert isinstance(head.default_losses()["logits"], keras.losses.MeanSquaredError)
    decoded = head.decode(outputs)
    assert decoded == [{"score": pytest.approx(float(v))} for v in outputs["logits"][:, 0]]
    assert SentimentHead(D, "readability_scoring").options.num_classes == 1
    with pytest.raises(HeadOptionsError, match="label_smoothing"):
        SentimentHead(D, "sentiment_analysis", {"num_classes": 1, "label_smoothing": 0.1})


def test_sentiment_label_smoothing_matches_dense_smoothing():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(4, 3)).astype("float32") * 2
    labels = np.array([0, 2, 1, 2], dtype="int32")
    head = SentimentHead(D, "sentiment_analysis", {"num_classes": 3, "label_smoothing": 0.1})
    ours = head.default_losses()["logits"](labels, logits)
    dense = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(np.eye(3)[labels], logits)
    assert float(ops.convert_to_numpy(ours)) == pytest.approx(float(ops.convert_to_numpy(dense)), rel=1e-5)


# -- data -------------------------------------------------------------------------------------
def test_schema_accepts_demo_file():
    examples = read_examples(data_path("sentiment", "train"), SentimentHead.example_schema, "sentiment")
    assert len(examples) == 480
    assert isinstance(examples[0], TextExample)


def test_csv_rows_equal_jsonl_rows(tmp_path):
    rows = demo_rows("sentiment", 20)
    path = write_csv(tmp_path / "s.csv", ["text", "label"], [[r["text"], r["label"]] for r in rows])
    assert read_examples(path, TextExample) == [TextExample(**r) for r in rows]


def test_numeric_labels_in_csv(tmp_path):
    path = write_csv(
        tmp_path / "r.csv", ["text", "label"], [["meh", "0.25"], ["fine", "3"], ["ok", " 2 "], ["x", "pos"]]
    )
    assert [e.label for e in read_examples(path, TextExample)] == [0.25, 3, 2, "pos"]


@pytest.mark.parametrize(
    ("rows", "facts"),
    [
        ([["good", "pos"], ["bad", ""]], ["line 3", "label is empty"]),
        ([["  ", "pos"]], ["line 2", "text is empty"]),
    ],
)
def test_bad_csv_rows_name_the_line(tmp_path, rows, facts):
    path = write_csv(tmp_path / "bad.csv", ["text", "label"], rows)
    with pytest.raises(DataFileError) as info:
        read_examples(path, TextExample)
    assert_mentions(info, *facts)


def test_bad_jsonl_rows_name_the_line(tmp_path):
    (tmp_path / "s.jsonl").write_text('{"text": "a", "label": true}\n')
    with pytest.raises(DataFileError) as info:
        read_examples(tmp_path / "s.jsonl", TextExample)
    assert_mentions(info, "line 1", "label is the boolean True")


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


def test_sentiment_encode_shapes_and_labels(demo_tokenizer):
    tokenizer = demo_tokenizer
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


def test_regression_encoding(demo_tokenizer):
    head = SentimentHead(D, "text_regression")
    examples = [TextExample(text="a", label=0.5), TextExample(text="b", label=3)]
    _, labels = head.encode_examples(examples, demo_tokenizer, 16)
    assert labels["logits"].dtype == np.float32 and labels["logits"].tolist() == [0.5, 3.0]
    with pytest.raises(ValueError, match="label 'pos' is not a number"):
        head.encode_examples([TextExample(text="a", label="pos")], demo_tokenizer, 16)


# -- decode and evaluate ----------------------------------------------------------------------
def test_sentiment_decode_labels_and_top_k():
    head = SentimentHead(D, "sentiment_analysis", {"labels": ["neg", "neu", "pos"]})
    logits = np.array([[0.0, 1.0, 3.0], [2.0, 0.0, 0.0]], dtype="float32")
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    decoded = head.decode({"logits": logits})
    assert [d["label"] for d in decoded] == ["pos", "neg"]
    assert decoded[0]["score"] == pytest.approx(probs[0, 2])
    top = head.decode({"logits": logits}, top_k=2)[0]
    assert [d["label"] for d in top] == ["pos", "neu"]
    assert [d["score"] for d in top] == pytest.approx([probs[0, 2], probs[0, 1]])


def test_sentiment_label_score_and_top_k(handmade_tokenizer):
    texts = ["the movie was great", "the movie", "great"]
    encoding = handmade_tokenizer.encode(texts)
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


def test_sentiment_one_answer_per_input_with_windows(handmade_tokenizer):
    texts = ["a b c d e f g h", "a"]
    encoding = handmade_tokenizer.encode(texts, max_length=5, stride=1, return_overflowing=True)
    assert encoding.overflow_to_sample[:3] == [0, 0, 0] and len(encoding) > 2
    logits = np.tile(np.array([[3.0, 0.0]], "float32"), (len(encoding), 1))
    logits[encoding.overflow_to_sample.index(1)] = [0.0, 3.0]
    answers = SentimentHead(D, "sentiment", {"labels": ["x", "y"]}).decode({"logits": logits}, encoding, texts=texts)
    assert [a["label"] for a in answers] == ["x", "y"]


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
    with pytest.raises(ValueError) as info:
        head.evaluate(examples, predictions[:3])
    assert_mentions(info, "4 examples", "3 predictions")


def test_regression_evaluate_numbers():
    examples = [TextExample(text="t", label=v) for v in (1.0, 2.0, 3.0, 4.0)]
    predictions = [{"score": v} for v in (1.5, 2.0, 2.5, 5.0)]
    scores = SentimentHead(D, "text_regression").evaluate(examples, predictions)
    assert scores["mse"] == pytest.approx((0.25 + 0 + 0.25 + 1) / 4)
    assert scores["spearman"] == pytest.approx(1.0)
    assert scores["pearson"] == pytest.approx(np.corrcoef([1, 2, 3, 4], [1.5, 2, 2.5, 5])[0, 1])


# -- Hugging Face parity ----------------------------------------------------------------------
@each_hf_case
def test_logits_match_transformers(model_class, head_cls, task_type, options, prefixes):
    _, _, _, reference, ours = run_both(model_class, head_cls, task_type, options, prefixes)
    expected = reference.logits.numpy()
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(ours["logits"], expected, atol=1e-5, rtol=0)


@each_hf_case
def test_hf_head_weights_round_trip(model_class, head_cls, task_type, options, prefixes):
    check_hf_head_weights_round_trip(model_class, head_cls, task_type, options, prefixes)


@each_hf_case
def test_checkpoint_without_head_keeps_initialisation(model_class, head_cls, task_type, options, prefixes):
    check_checkpoint_without_head_keeps_initialisation(head_cls, task_type, options)


def test_class_count_mismatch_is_a_clear_error_and_changes_nothing():
    from hf_reference import make_hf_model  # optional torch: skips only this test when missing

    model = make_hf_model("DistilBertForSequenceClassification", num_labels=3)
    head = SentimentHead(HF_DIM, "sentiment_analysis")  # 2 classes
    head.build((None, None, HF_DIM))
    before = [ops.convert_to_numpy(w).copy() for w in head.weights]
    with pytest.raises(ValueError) as info:
        head.load_hf_head_weights(numpy_state_dict(model))
    assert_mentions(info, "classifier.weight", f"(3, {HF_DIM})", f"(2, {HF_DIM})", "num_classes")
    for old, weight in zip(before, head.weights):  # pre_classifier fitted, but nothing was assigned
        np.testing.assert_array_equal(old, ops.convert_to_numpy(weight))
