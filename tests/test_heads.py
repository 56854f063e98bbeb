"""Behaviour of the four built-in heads on random hidden states, under the current Keras backend."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from keras import ops

from distilbert_heads.head import HeadOptionsError
from distilbert_heads.heads._common import MaskedSparseCategoricalAccuracy, MaskedSparseCategoricalCrossentropy
from distilbert_heads.heads.ner import CONLL_LABELS, NerHead, group_entities
from distilbert_heads.heads.pairwise import PairwiseHead
from distilbert_heads.heads.qa_span import QASpanHead
from distilbert_heads.heads.sentiment import SentimentHead

B, L, D = 2, 7, 16
MASK = np.array([[1] * 7, [1] * 5 + [0] * 2], dtype="int32")

# (head class, task type, options, {output name: shape})
CASES = [
    (SentimentHead, "sentiment_analysis", {}, {"logits": (B, 2)}),
    (SentimentHead, "text_regression", {}, {"logits": (B, 1)}),
    (NerHead, "named_entity_recognition", {}, {"logits": (B, L, 9)}),
    (QASpanHead, "question_answering", {}, {"start_logits": (B, L), "end_logits": (B, L)}),
    (SentimentHead, "topic_classification", {"num_classes": 4, "label_smoothing": 0.1}, {"logits": (B, 4)}),
    (PairwiseHead, "natural_language_inference", {}, {"logits": (B, 3)}),
    (PairwiseHead, "text_similarity", {}, {"logits": (B, 1)}),
]
IDS = [f"{cls.__name__}-{task}" for cls, task, _, _ in CASES]


def hidden(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(B, L, D)).astype("float32")


def numpy_outputs(outputs: dict) -> dict[str, np.ndarray]:
    return {name: ops.convert_to_numpy(value) for name, value in outputs.items()}


def np_log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# -- outputs ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "task_type", "options", "shapes"), CASES, ids=IDS)
def test_output_names_and_shapes(cls, task_type, options, shapes):
    head = cls(D, task_type, options)
    outputs = head(hidden(), MASK)
    assert set(outputs) == set(cls.output_names) == set(shapes)
    assert {name: tuple(value.shape) for name, value in outputs.items()} == shapes


@pytest.mark.parametrize(("cls", "task_type", "options", "shapes"), CASES, ids=IDS)
def test_builds_weights_before_first_call(cls, task_type, options, shapes):
    head = cls(D, task_type, options)
    head.build((None, None, D))
    assert head.built and head.weights
    assert all(w.path.split("/")[1] in ("pre_classifier", "classifier", "qa_outputs") for w in head.weights)


def test_wrong_hidden_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expects hidden states shaped \(batch, length, 16\)"):
        SentimentHead(D, "sentiment_analysis").build((None, None, 32))


# -- options -----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SentimentHead, NerHead, QASpanHead, PairwiseHead])
def test_unknown_option_names_the_head(cls):
    with pytest.raises(HeadOptionsError, match=cls.__name__) as info:
        cls(D, cls.task_types[0], {"use_crf": True})
    assert "use_crf" in str(info.value)


@pytest.mark.parametrize("cls", [SentimentHead, NerHead, PairwiseHead])
def test_labels_and_num_classes_must_agree(cls):
    with pytest.raises(HeadOptionsError, match="labels has 2 names but num_classes is 3"):
        cls(D, cls.task_types[0], {"labels": ["a", "b"], "num_classes": 3})


@pytest.mark.parametrize("cls", [SentimentHead, NerHead, PairwiseHead])
def test_num_classes_inferred_from_labels(cls):
    head = cls(D, cls.task_types[0], {"labels": ["x", "y", "z", "w"]})
    assert head.options.num_classes == 4
    assert tuple(head(hidden(), MASK)["logits"].shape)[-1] == 4


def test_option_values_are_validated():
    with pytest.raises(HeadOptionsError, match="dropout_rate"):
        SentimentHead(D, "sentiment_analysis", {"dropout_rate": 1.5})
    with pytest.raises(HeadOptionsError, match="duplicate"):
        NerHead(D, "ner", {"labels": ["O", "O"]})
    with pytest.raises(HeadOptionsError, match="max_answer_length"):
        QASpanHead(D, "question_answering", {"max_answer_length": 0})


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


def test_pairwise_modes_follow_task_type_and_options():
    nli = PairwiseHead(D, "natural_language_inference")
    assert (nli.options.mode, nli.class_names) == ("classification", ["entailment", "neutral", "contradiction"])
    assert PairwiseHead(D, "paraphrase_detection").options.num_classes == 2
    similarity = PairwiseHead(D, "text_similarity")
    assert (similarity.options.mode, similarity.options.num_classes) == ("similarity", 1)
    assert isinstance(similarity.default_losses()["logits"], keras.losses.MeanSquaredError)
    assert PairwiseHead(D, "duplicate_detection", {"num_classes": 1}).options.mode == "similarity"
    with pytest.raises(HeadOptionsError, match="mode='similarity' predicts one score"):
        PairwiseHead(D, "text_similarity", {"mode": "similarity", "num_classes": 3})
    with pytest.raises(HeadOptionsError, match="needs num_classes >= 2"):
        PairwiseHead(D, "natural_language_inference", {"mode": "classification", "num_classes": 1})
    with pytest.raises(HeadOptionsError, match="mode"):
        PairwiseHead(D, "natural_language_inference", {"mode": "ranking"})


def test_ner_defaults_to_conll_tags():
    head = NerHead(D, "ner")
    assert head.class_names == CONLL_LABELS
    assert NerHead(D, "ner", {"num_classes": 5}).class_names == [f"LABEL_{i}" for i in range(5)]


# -- losses and metrics ------------------------------------------------------------------------------
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


def test_sentiment_label_smoothing_matches_dense_smoothing():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(4, 3)).astype("float32") * 2
    labels = np.array([0, 2, 1, 2], dtype="int32")
    head = SentimentHead(D, "sentiment_analysis", {"num_classes": 3, "label_smoothing": 0.1})
    ours = head.default_losses()["logits"](labels, logits)
    dense = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(np.eye(3)[labels], logits)
    assert float(ops.convert_to_numpy(ours)) == pytest.approx(float(ops.convert_to_numpy(dense)), rel=1e-5)


def test_loss_and_metric_configs_round_trip():
    loss = MaskedSparseCategoricalCrossentropy(label_smoothing=0.3, ignore_index=-1)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(again, MaskedSparseCategoricalCrossentropy)
    assert (again.ignore_index, again.label_smoothing) == (-1, 0.3)
    metric = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(MaskedSparseCategoricalAccuracy(ignore_index=-7))
    )
    assert metric.ignore_index == -7


# -- QA span --------------------------------------------------------------------------------------
def test_qa_padding_never_wins():
    head = QASpanHead(D, "question_answering")
    head.build((None, None, D))
    kernel = np.zeros((D, 2), dtype="float32")
    kernel[0, 0] = kernel[1, 1] = 1.0  # start logit = hidden[..., 0], end logit = hidden[..., 1]
    head.qa_outputs.set_weights([kernel, np.zeros(2, dtype="float32")])
    states = hidden()
    states[1, 5:, :2] = 1000.0  # padded positions of example 1 would win by far
    outputs = numpy_outputs(head(states, MASK))
    np.testing.assert_allclose(outputs["start_logits"][0], states[0, :, 0], rtol=1e-6)
    np.testing.assert_allclose(outputs["start_logits"][1, :5], states[1, :5, 0], rtol=1e-6)
    assert (outputs["start_logits"][1, 5:] <= -1e8).all() and (outputs["end_logits"][1, 5:] <= -1e8).all()
    span = head.decode(outputs)[1]
    assert 0 <= span["start"] <= span["end"] < 5


def test_qa_decode_picks_best_legal_span():
    neg = -1e9
    # Unconstrained best pair is start=4, end=1 (end before start): illegal.
    start = np.array([[0.0, 1.0, 0.0, 0.0, 10.0, neg]], dtype="float32")
    end = np.array([[0.0, 10.0, 2.0, 0.0, 0.0, neg]], dtype="float32")
    head = QASpanHead(D, "question_answering")
    best = head.decode({"start_logits": start, "end_logits": end})[0]
    assert (best["start"], best["end"]) == (1, 1)

    def softmax(x):
        e = np.exp(x[:5] - x[:5].max())
        return e / e.sum()

    assert best["score"] == pytest.approx(softmax(start[0])[1] * softmax(end[0])[1], rel=1e-5)
    # Outside the context (position 1 is question), the next best legal span is (4, 4).
    context = np.array([[0, 0, 1, 1, 1, 1]])
    assert head.decode({"start_logits": start, "end_logits": end}, context_mask=context)[0]["start"] == 4
    # Length limit: start=0, end=4 is best but 5 tokens long.
    start2 = np.array([[9.0, 0.0, 0.0, 0.0, 0.0, 1.0]], dtype="float32")
    end2 = np.array([[0.0, 1.0, 0.0, 0.0, 9.0, 0.0]], dtype="float32")
    short = QASpanHead(D, "qa", {"max_answer_length": 3}).decode({"start_logits": start2, "end_logits": end2})[0]
    assert (short["start"], short["end"]) == (0, 1)
    assert head.decode({"start_logits": start2, "end_logits": end2})[0]["end"] == 4
    # Answer text from offsets.
    text = "who? Paris is big"
    offsets = [[(0, 0), (0, 4), (5, 10), (11, 13), (14, 17), (0, 0)]]
    answered = head.decode(
        {"start_logits": start, "end_logits": end}, {"offsets": offsets, "text": [text], "context_mask": context}
    )[0]
    assert answered["answer"] == "big" and (answered["char_start"], answered["char_end"]) == (14, 17)
    nothing = head.decode({"start_logits": start, "end_logits": end}, context_mask=np.zeros((1, 6)))[0]
    assert nothing == {"start": None, "end": None, "score": 0.0}


# -- decode --------------------------------------------------------------------------------------
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


def test_ner_decode_groups_bio_entities():
    text = "John Smith lives in New York"
    # [CLS] John Smith lives in New Yo ##rk [SEP] [PAD]
    offsets = [(0, 0), (0, 4), (5, 10), (11, 16), (17, 19), (20, 23), (24, 26), (26, 28), (0, 0), (0, 0)]
    word_ids = [None, 0, 1, 2, 3, 4, 5, 5, None, None]
    tags = ["O", "B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O", "O", "O"]
    head = NerHead(D, "ner")
    logits = np.zeros((1, len(tags), 9), dtype="float32")
    for i, tag in enumerate(tags):
        logits[0, i, CONLL_LABELS.index(tag)] = 5.0 + i * 0.1
    mask = np.array([[1] * 9 + [0]])
    decoded = head.decode(
        {"logits": logits}, {"offsets": [offsets], "text": [text], "word_ids": [word_ids], "attention_mask": mask}
    )[0]
    assert decoded["tags"] == tags[:9]
    probs = np.exp(logits[0]) / np.exp(logits[0]).sum(-1, keepdims=True)
    assert decoded["scores"] == pytest.approx(list(probs.max(-1)[:9]))
    entities = decoded["entities"]
    assert [(e["entity"], e["word"], e["start"], e["end"]) for e in entities] == [
        ("PER", "John Smith", 0, 10),
        ("LOC", "New York", 20, 28),  # the ##rk continuation extends the span, its own tag ignored
    ]
    assert entities[0]["score"] == pytest.approx(probs.max(-1)[1:3].mean())
    assert "entities" not in head.decode({"logits": logits})[0]


def test_group_entities_bio_edge_cases():
    text = "a b c d e"
    offsets = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    scores = [1.0] * 5
    # B-PER B-PER: two entities; I-ORG after PER (IOB1 style) starts a new ORG; O closes.
    got = group_entities(["B-PER", "B-PER", "I-ORG", "I-ORG", "O"], scores, offsets, text)
    assert [(e["entity"], e["word"]) for e in got] == [("PER", "a"), ("PER", "b"), ("ORG", "c d")]
    # IO scheme (no prefixes): consecutive same tags merge.
    got = group_entities(["LOC", "LOC", "O", "PER", "LOC"], scores, offsets, text)
    assert [(e["entity"], e["word"]) for e in got] == [("LOC", "a b"), ("PER", "d"), ("LOC", "e")]


def test_pairwise_decode():
    nli = PairwiseHead(D, "natural_language_inference")
    decoded = nli.decode({"logits": np.array([[0.0, 0.0, 4.0]], dtype="float32")})
    assert decoded[0]["label"] == "contradiction" and decoded[0]["score"] > 0.9
    similarity = PairwiseHead(D, "text_similarity")
    assert similarity.decode({"logits": np.array([[3.5]], dtype="float32")}) == [{"score": 3.5}]


# -- serialization ------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "task_type", "options", "shapes"), CASES, ids=IDS)
def test_config_round_trip_gives_identical_outputs(cls, task_type, options, shapes):
    head = cls(D, task_type, {**options, "dropout_rate": 0.3}, name="my_head")
    expected = numpy_outputs(head(hidden(), MASK))
    config = json.loads(json.dumps(head.get_config()))
    clone = cls.from_config(config)
    clone.build((None, None, D))
    clone.set_weights(head.get_weights())
    assert clone.get_config() == head.get_config()
    assert clone.name == "my_head" and clone.options == head.options
    for name, value in numpy_outputs(clone(hidden(), MASK)).items():
        np.testing.assert_array_equal(value, expected[name])
    # Registered with Keras: deserialization by name needs no custom_objects.
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert type(rebuilt) is cls and rebuilt.options == head.options


# -- training -------------------------------------------------------------------------------------
def toy_problem(head, n: int = 32):
    """Random hidden states and labels that are a learnable function of them."""
    rng = np.random.default_rng(5)
    states = rng.normal(size=(n, L, D)).astype("float32")
    mask = np.ones((n, L), dtype="int32")
    mask[: n // 2, 5:] = 0
    if isinstance(head, QASpanHead):
        start = states[:, :5, 0].argmax(-1).astype("int32")
        labels = {"start_logits": start, "end_logits": np.minimum(start + 1, 4).astype("int32")}
    elif isinstance(head, NerHead):
        tags = states[..., :3].argmax(-1).astype("int32")
        tags[:, 0] = -100
        tags[mask == 0] = -100
        labels = {"logits": tags}
    elif head.is_regression:
        labels = {"logits": states[:, 0, :4].sum(-1).astype("float32")}
    else:
        labels = {"logits": (states[:, 0, : head.num_classes].argmax(-1)).astype("int32")}
    return [states, mask], labels


@pytest.mark.parametrize(("cls", "task_type", "options", "shapes"), CASES, ids=IDS)
def test_loss_decreases_when_training(cls, task_type, options, shapes):
    keras.utils.set_random_seed(0)
    head = cls(D, task_type, options)
    states_in = keras.Input(shape=(L, D), name="hidden_states")
    mask_in = keras.Input(shape=(L,), dtype="int32", name="attention_mask")
    model = keras.Model([states_in, mask_in], head(states_in, mask_in))
    model.compile(
        optimizer=keras.optimizers.Adam(3e-2),
        loss=head.default_losses(),
        metrics=head.default_metrics(),
        # torch.compile is slow to warm up and not what we test; XLA is, on TF and JAX.
        jit_compile=keras.backend.backend() != "torch",
    )
    inputs, labels = toy_problem(head)
    before = model.evaluate(inputs, labels, batch_size=16, verbose=0, return_dict=True)["loss"]
    model.fit(inputs, labels, batch_size=16, epochs=8, verbose=0)
    after = model.evaluate(inputs, labels, batch_size=16, verbose=0, return_dict=True)["loss"]
    assert np.isfinite(after) and after < 0.8 * before, (before, after)
