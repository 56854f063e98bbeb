"""The pairwise (text pair classification and similarity) head: build, data, decode, HF parity."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from head_checks import (
    CASE_FIELDS,
    HF_CASE_FIELDS,
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
    run_both,
    sequence_labels,
    softmax,
    write_csv,
)
from helpers import assert_mentions, demo_rows

from distilbert_heads.demo.datasets import data_path
from distilbert_heads.heads.pairwise import PairExample, PairwiseHead
from distilbert_heads.plugins.head import HeadOptionsError
from distilbert_heads.training.data_files import DataFileError, read_examples

CASES = [
    (PairwiseHead, "natural_language_inference", {}, {"logits": (B, 3)}),
    (PairwiseHead, "text_similarity", {}, {"logits": (B, 1)}),
]
HF_CASES = [
    (
        "DistilBertForSequenceClassification",
        PairwiseHead,
        "natural_language_inference",
        {},
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


def test_pairwise_modes_follow_task_type_and_options():
    nli = PairwiseHead(D, "natural_language_inference")
    assert (nli.options.mode, nli.class_names) == ("classification", ["entailment", "neutral", "contradiction"])
    assert PairwiseHead(D, "paraphrase_detection").options.num_classes == 2
    similarity = PairwiseHead(D, "text_similarity")
    assert (similarity.options.mode, similarity.options.num_classes) == ("similarity", 1)
    assert isinstance(similarity.default_losses()["logits"], keras.losses.MeanSquaredError)
    assert PairwiseHead(D, "duplicate_detection", {"num_classes": 1}).options.mode == "similarity"
    with pytest.raises(HeadOptionsError) as info:
        PairwiseHead(D, "text_similarity", {"mode": "similarity", "num_classes": 3})
    assert_mentions(info, "mode='similarity'", "predicts one score")
    with pytest.raises(HeadOptionsError, match="needs num_classes >= 2"):
        PairwiseHead(D, "natural_language_inference", {"mode": "classification", "num_classes": 1})
    with pytest.raises(HeadOptionsError, match="mode"):
        PairwiseHead(D, "natural_language_inference", {"mode": "ranking"})


# -- data -------------------------------------------------------------------------------------
def test_schema_accepts_demo_file():
    examples = read_examples(data_path("pairwise", "train"), PairwiseHead.example_schema, "pairwise")
    assert len(examples) == 480
    assert isinstance(examples[0], PairExample)


def test_csv_rows_equal_jsonl_rows(tmp_path):
    rows = demo_rows("pairwise", 20)
    path = write_csv(
        tmp_path / "p.csv", ["text_a", "text_b", "label"], [[r["text_a"], r["text_b"], r["label"]] for r in rows]
    )
    assert read_examples(path, PairExample) == [PairExample(**r) for r in rows]


def test_bad_csv_rows_name_the_line(tmp_path):
    path = write_csv(tmp_path / "bad.csv", ["text_a", "text_b", "label"], [["a", "", "same"]])
    with pytest.raises(DataFileError) as info:
        read_examples(path, PairExample)
    assert_mentions(info, "line 2", "text_b", "the text is empty")


def test_options_from_examples():
    pairs = read_examples(data_path("pairwise", "train"), PairExample)
    assert sorted(PairwiseHead.options_from_examples(pairs)["labels"]) == ["different", "paraphrase"]
    similar = [PairExample(text_a="a", text_b="b", label=v) for v in (0, 5, 3)]
    assert PairwiseHead.options_from_examples(similar, task_type="text_similarity") == {"num_classes": 1}
    assert PairwiseHead(
        D, "text_similarity", PairwiseHead.options_from_examples(similar, "text_similarity")
    ).is_regression


def test_pair_encoding(demo_tokenizer):
    pairs = read_examples(data_path("pairwise", "train"), PairExample)[:4]
    head = PairwiseHead(D, "paraphrase_detection", {"labels": ["different", "paraphrase"]})
    inputs, labels = head.encode_examples(pairs, demo_tokenizer, max_length=64)
    sep = demo_tokenizer.sep_token_id
    assert [int((row == sep).sum()) for row in inputs["input_ids"]] == [2] * 4  # [CLS] a [SEP] b [SEP]
    assert labels["logits"].tolist() == [["different", "paraphrase"].index(p.label) for p in pairs]


# -- decode and evaluate ----------------------------------------------------------------------
def test_pairwise_decode():
    nli = PairwiseHead(D, "natural_language_inference")
    decoded = nli.decode({"logits": np.array([[0.0, 0.0, 4.0]], dtype="float32")})
    assert decoded[0]["label"] == "contradiction" and decoded[0]["score"] > 0.9
    similarity = PairwiseHead(D, "text_similarity")
    assert similarity.decode({"logits": np.array([[3.5]], dtype="float32")}) == [{"score": 3.5}]


def test_pairwise_labels_and_similarity(handmade_tokenizer):
    pairs = [("the movie", "a movie"), ("great", "the movie was great")]
    encoding = handmade_tokenizer.encode([a for a, _ in pairs], [b for _, b in pairs])
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


def test_similarity_and_classification_evaluate_numbers():
    pairs = [PairExample(text_a="a", text_b="b", label=v) for v in (0.0, 5.0, 2.5)]
    similarity = PairwiseHead(D, "text_similarity").evaluate(pairs, [{"score": 1.0}, {"score": 4.0}, {"score": 0.5}])
    assert similarity["spearman"] == pytest.approx(0.5)
    nli = PairwiseHead(D, "paraphrase_detection", {"labels": ["different", "paraphrase"]})
    pairs = [PairExample(text_a="a", text_b="b", label=v) for v in ("paraphrase", "different")]
    assert nli.evaluate(pairs, [{"label": "paraphrase", "score": 1.0}] * 2)["accuracy"] == 0.5


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
