"""The foo head's own tests: the distilbert-heads plugin kit plus what is special about this head."""

import keras
import numpy as np
import pytest

from distilbert_head_foo import FooHead
from distilbert_heads import HeadOptionsError
from distilbert_heads.testing import check_head_builds, check_head_roundtrip, check_head_trains, check_plugin


def test_registry_finds_the_foo_head():
    from distilbert_heads.registry import get_head

    record = get_head("foo")
    assert record.head_class is FooHead
    assert (record.distribution, record.version) == ("distilbert-head-foo", "0.1.0")


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_builds_and_trains(pooling):
    check_head_builds("foo", num_classes=3, pooling=pooling)
    # Multi-hot labels, the documented format: several labels may be on at once.
    multi_hot = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], dtype="float32")
    check_head_trains("foo", multi_hot, num_classes=3, pooling=pooling)


@pytest.mark.slow
def test_full_plugin_check_including_fresh_process_reload():
    check_plugin("foo", labels=["sports", "politics", "tech"], threshold=0.4)


@pytest.mark.slow
def test_mean_pooling_survives_reload():
    check_head_roundtrip("foo", num_classes=2, pooling="mean")


def test_decode_returns_every_label_above_threshold():
    head = FooHead(hidden_size=8, task_type="foo", options={"labels": ["a", "b", "c"], "threshold": 0.5})
    logits = np.array([[2.0, -1.0, 0.5], [-3.0, -2.0, -1.0]], dtype="float32")
    decoded = head.decode({"logits": logits})
    assert [[item["label"] for item in row] for row in decoded] == [["a", "c"], []]
    assert decoded[0][0]["score"] == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_mean_pooling_ignores_padding():
    head = FooHead(hidden_size=4, task_type="foo", options={"num_classes": 2, "pooling": "mean"})
    hidden = np.random.default_rng(0).normal(size=(1, 5, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0]], dtype="int32")
    changed = hidden.copy()
    changed[:, 3:] = 100.0  # padded positions must not matter
    first = keras.ops.convert_to_numpy(head(hidden, mask)["logits"])
    second = keras.ops.convert_to_numpy(head(changed, mask)["logits"])
    np.testing.assert_allclose(first, second, rtol=1e-6)


def test_options_are_validated_with_the_heads_name():
    with pytest.raises(HeadOptionsError, match="FooHead.*needs its labels"):
        FooHead(hidden_size=8, task_type="foo", options={})
    with pytest.raises(HeadOptionsError, match="FooHead.*threshold"):
        FooHead(hidden_size=8, task_type="foo", options={"num_classes": 2, "threshold": 1.5})
    with pytest.raises(HeadOptionsError, match="FooHead.*use_crf"):
        FooHead(hidden_size=8, task_type="foo", options={"num_classes": 2, "use_crf": True})


def test_training_rows_become_inputs_and_multi_hot_labels():
    from distilbert_head_foo import FooExample

    rows = [FooExample(text="a b", labels=["tech", "sports"]), FooExample(text="c", labels="politics tech")]
    assert FooHead.options_from_examples(rows) == {"labels": ["tech", "sports", "politics"]}
    head = FooHead(hidden_size=8, task_type="foo", options={"labels": ["sports", "politics", "tech"]})

    from distilbert_heads.tokenizer import DistilBertTokenizer

    tokenizer = DistilBertTokenizer.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"])
    inputs, labels = head.encode_examples(rows, tokenizer, max_length=16)
    np.testing.assert_array_equal(inputs["input_ids"], [[2, 5, 6, 3], [2, 7, 3, 0]])
    np.testing.assert_array_equal(inputs["attention_mask"], [[1, 1, 1, 1], [1, 1, 1, 0]])
    np.testing.assert_array_equal(labels["logits"], [[1, 0, 1], [0, 1, 1]])
    with pytest.raises(ValueError, match="'music' is not one of"):
        head.encode_examples([FooExample(text="a", labels=["music"])], tokenizer, max_length=16)


def test_evaluate_scores_label_sets():
    from distilbert_head_foo import FooExample

    head = FooHead(hidden_size=8, task_type="foo", options={"labels": ["a", "b", "c"]})
    gold = [FooExample(text="x", labels=["a", "b"]), FooExample(text="y", labels=[])]
    predicted = [[{"label": "a", "score": 0.9}], [{"label": "c", "score": 0.7}]]
    scores = head.evaluate(gold, predicted)
    assert scores["micro_precision"] == pytest.approx(0.5)
    assert scores["micro_recall"] == pytest.approx(0.5)
    assert scores["micro_f1"] == pytest.approx(0.5)
    assert scores["exact_match"] == 0.0
