"""What every built-in head shares: the hidden-size check, the option and label rules, the masked
(-100) token loss and metric, and that every demo file encodes."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from head_checks import MASK, B, D, L, hidden
from helpers import assert_mentions
from keras import ops

from distilbert_heads.demo.datasets import data_path
from distilbert_heads.heads.ner import NerExample, NerHead
from distilbert_heads.heads.pairwise import PairwiseHead
from distilbert_heads.heads.qa_span import QASpanHead
from distilbert_heads.heads.sentiment import SentimentHead, TextExample
from distilbert_heads.losses import MaskedSparseCategoricalAccuracy, MaskedSparseCategoricalCrossentropy
from distilbert_heads.plugins.head import HeadOptionsError
from distilbert_heads.plugins.input_kinds import BUILTIN_KINDS
from distilbert_heads.training.data_files import read_examples

HEADS = {"sentiment": SentimentHead, "ner": NerHead, "qa": QASpanHead, "pairwise": PairwiseHead}
CLASSIFIERS = [SentimentHead, NerHead, PairwiseHead]


def test_wrong_hidden_size_is_a_clear_error():
    with pytest.raises(ValueError) as info:
        SentimentHead(D, "sentiment_analysis").build((None, None, 32))
    assert_mentions(info, "hidden states", f"(batch, length, {D})")


# -- options and label rules ------------------------------------------------------------------
@pytest.mark.parametrize("cls", list(HEADS.values()))
def test_unknown_option_names_the_head(cls):
    with pytest.raises(HeadOptionsError) as info:
        cls(D, cls.task_types[0], {"use_crf": True})
    assert_mentions(info, cls.__name__, "use_crf")


@pytest.mark.parametrize("cls", CLASSIFIERS)
def test_labels_and_num_classes_must_agree(cls):
    with pytest.raises(HeadOptionsError) as info:
        cls(D, cls.task_types[0], {"labels": ["a", "b"], "num_classes": 3})
    assert_mentions(info, "labels has 2 names", "num_classes is 3")


@pytest.mark.parametrize("cls", CLASSIFIERS)
def test_num_classes_inferred_from_labels(cls):
    head = cls(D, cls.task_types[0], {"labels": ["x", "y", "z", "w"]})
    assert head.options.num_classes == 4
    assert tuple(head(hidden(), MASK)["logits"].shape)[-1] == 4


def test_unknown_label_names_it_and_the_known_labels(demo_tokenizer):
    head = SentimentHead(D, "sentiment", {"labels": ["negative", "positive"]})
    rows = [TextExample(text="a", label="positive"), TextExample(text="b", label="neutral")]
    with pytest.raises(ValueError) as info:
        head.encode_examples(rows, demo_tokenizer, 16)
    assert_mentions(info, "example 1", "unknown label 'neutral'", "['negative', 'positive']")
    with pytest.raises(ValueError) as info:
        head.encode_examples([TextExample(text="a", label=7)], demo_tokenizer, 16)
    assert_mentions(info, "label 7", "neither a class name nor a class index")
    ner = NerHead(D, "ner", {"labels": ["O", "B-PER"]})
    with pytest.raises(ValueError) as info:
        ner.encode_examples([NerExample(tokens=["a", "b"], tags=["B-PER", "B-MISC"])], demo_tokenizer, 16)
    assert_mentions(info, "unknown tag 'B-MISC'", "['O', 'B-PER']")


# -- masked (-100) token loss and metric --------------------------------------------------------
def np_log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def ner_batch(seed: int = 1):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(B, L, 5)).astype("float32") * 3
    labels = rng.integers(0, 5, size=(B, L)).astype("int32")
    labels[:, 0] = -100  # [CLS]
    labels[0, 3] = -100  # a sub-word continuation
    labels[1, 5:] = -100  # padding
    return logits, labels


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_masked_loss_ignores_minus_100(smoothing):
    logits, labels = ner_batch()
    valid = labels != -100
    log_probs = np_log_softmax(logits)
    safe = np.where(valid, labels, 0)
    nll = -np.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]
    per_token = (1 - smoothing) * nll - smoothing * log_probs.mean(axis=-1)
    expected = per_token[valid].mean()

    loss = MaskedSparseCategoricalCrossentropy(label_smoothing=smoothing)
    assert float(ops.convert_to_numpy(loss(labels, logits))) == pytest.approx(expected, rel=1e-5)
    # Whatever the logits at ignored positions, the loss stays the same.
    scrambled = logits.copy()
    scrambled[~valid] = np.random.default_rng(9).normal(size=(int((~valid).sum()), 5)) * 50
    assert float(ops.convert_to_numpy(loss(labels, scrambled))) == pytest.approx(expected, rel=1e-5)
    # A per-example sample weight weights each example's valid tokens.
    weights = np.array([1.0, 3.0], dtype="float32")
    token_weights = np.broadcast_to(weights[:, None], labels.shape)
    weighted = (per_token * token_weights)[valid].sum() / token_weights[valid].sum()
    got = float(ops.convert_to_numpy(loss(labels, logits, sample_weight=weights)))
    assert got == pytest.approx(weighted, rel=1e-5)


def test_masked_loss_matches_torch_cross_entropy():
    torch = pytest.importorskip("torch")
    logits, labels = ner_batch(seed=3)
    reference = torch.nn.functional.cross_entropy(
        torch.tensor(logits).reshape(-1, 5),
        torch.tensor(labels, dtype=torch.long).reshape(-1),
        ignore_index=-100,
        label_smoothing=0.1,
    )
    ours = MaskedSparseCategoricalCrossentropy(label_smoothing=0.1)(labels, logits)
    assert float(ops.convert_to_numpy(ours)) == pytest.approx(float(reference), rel=1e-5)


def test_masked_accuracy_ignores_minus_100():
    logits, labels = ner_batch()
    valid = labels != -100
    expected = (logits.argmax(-1) == labels)[valid].mean()
    metric = MaskedSparseCategoricalAccuracy()
    metric.update_state(labels, logits)
    assert float(ops.convert_to_numpy(metric.result())) == pytest.approx(expected)
    # Make every ignored position "correct" for label 0: the result must not move.
    rigged = logits.copy()
    rigged[~valid] = np.eye(5)[0] * 100
    metric.reset_state()
    metric.update_state(labels, rigged)
    assert float(ops.convert_to_numpy(metric.result())) == pytest.approx(expected)


def test_loss_and_metric_configs_round_trip():
    loss = MaskedSparseCategoricalCrossentropy(label_smoothing=0.3, ignore_index=-1)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(again, MaskedSparseCategoricalCrossentropy)
    assert (again.ignore_index, again.label_smoothing) == (-1, 0.3)
    metric = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(MaskedSparseCategoricalAccuracy(ignore_index=-7))
    )
    assert metric.ignore_index == -7


# -- data -------------------------------------------------------------------------------------
def test_every_demo_file_encodes(demo_tokenizer):
    for task, cls in HEADS.items():
        examples = read_examples(data_path(task, "train"), cls.example_schema)[:32]
        head = cls(D, task, cls.options_from_examples(examples))
        inputs, labels = head.encode_examples(examples, demo_tokenizer, max_length=64)
        assert set(labels) == set(head.output_names)
        for value in labels.values():
            assert len(value) == len(inputs["input_ids"])
        assert cls.input_kind in BUILTIN_KINDS.values()  # built-in heads declare the kind objects
