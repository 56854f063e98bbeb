"""Head weights from Hugging Face task checkpoints give the logits `transformers` gives.

The head input is the Hugging Face encoder's own ``last_hidden_state``, so these checks
isolate the heads (the encoder has its own parity tests).
"""

from __future__ import annotations

import numpy as np
import pytest
from hf_reference import hf_forward, make_hf_model, random_batch, torch
from keras import ops

from distilbert_heads.heads.ner import NerHead
from distilbert_heads.heads.pairwise import PairwiseHead
from distilbert_heads.heads.qa_span import QASpanHead
from distilbert_heads.heads.sentiment import SentimentHead

DIM = 32

# (HF model class, head class, task type, head options, HF head key prefixes)
CASES = [
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
    (
        "DistilBertForSequenceClassification",
        PairwiseHead,
        "natural_language_inference",
        {},
        ("pre_classifier", "classifier"),
    ),
    ("DistilBertForTokenClassification", NerHead, "ner", {"num_classes": 5}, ("classifier",)),
    ("DistilBertForQuestionAnswering", QASpanHead, "question_answering", {}, ("qa_outputs",)),
]
IDS = [f"{case[0]}-{case[2]}" for case in CASES]


def num_labels(head_cls, options) -> int:
    if head_cls is QASpanHead:
        return 2
    if head_cls is PairwiseHead:
        return 3
    return options["num_classes"]


def hf_model_with_lively_head(model_class: str, labels: int, prefixes: tuple[str, ...]):
    """A random-init HF task model whose head weights are large enough that a mistake shows.

    HF initialises heads with std 0.02, which makes logits tiny; a transposed or swapped
    weight would then still pass a 1e-5 tolerance.
    """
    model = make_hf_model(model_class, num_labels=labels)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.split(".")[0] in prefixes:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model


def numpy_state_dict(model) -> dict[str, np.ndarray]:
    return {key: value.detach().numpy().copy() for key, value in model.state_dict().items()}


def run_both(model_class, head_cls, task_type, options, prefixes):
    model = hf_model_with_lively_head(model_class, num_labels(head_cls, options), prefixes)
    ids, mask = random_batch(model.config.vocab_size, batch=3, length=9)
    with torch.no_grad():
        states = model.distilbert(
            input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()
        ).last_hidden_state.numpy()
    reference = hf_forward(model, ids, mask)
    head = head_cls(DIM, task_type, options)
    head.build((None, None, DIM))
    assert head.load_hf_head_weights(numpy_state_dict(model)) is True
    ours = {name: ops.convert_to_numpy(value) for name, value in head(states, mask, training=False).items()}
    return model, head, mask, reference, ours


@pytest.mark.parametrize(("model_class", "head_cls", "task_type", "options", "prefixes"), CASES, ids=IDS)
def test_logits_match_transformers(model_class, head_cls, task_type, options, prefixes):
    _, _, mask, reference, ours = run_both(model_class, head_cls, task_type, options, prefixes)
    keep = mask.astype(bool)
    if head_cls is QASpanHead:
        for name in ("start_logits", "end_logits"):
            expected = getattr(reference, name).numpy()
            np.testing.assert_allclose(ours[name][keep], expected[keep], atol=1e-5, rtol=0)
            assert (ours[name][~keep] <= -1e8).all()  # padding masked, documented difference
        assert np.abs(reference.start_logits.numpy()).max() > 0.1
        return
    expected = reference.logits.numpy()
    assert np.abs(expected).max() > 0.1
    if head_cls is NerHead:
        np.testing.assert_allclose(ours["logits"][keep], expected[keep], atol=1e-5, rtol=0)
    else:
        np.testing.assert_allclose(ours["logits"], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("model_class", "head_cls", "task_type", "options", "prefixes"), CASES, ids=IDS)
def test_hf_head_weights_round_trip(model_class, head_cls, task_type, options, prefixes):
    model, head, *_ = run_both(model_class, head_cls, task_type, options, prefixes)
    hf_state = numpy_state_dict(model)
    exported = head.hf_head_weights()
    assert set(exported) == {key for key in hf_state if key.split(".")[0] in prefixes}
    for key, value in exported.items():
        assert value.shape == hf_state[key].shape
        np.testing.assert_array_equal(value, hf_state[key])
    # And transformers accepts them back.
    fresh = make_hf_model(model_class, seed=3, num_labels=num_labels(head_cls, options))
    missing, unexpected = fresh.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=False)
    assert not unexpected and not any(key.split(".")[0] in prefixes for key in missing)


@pytest.mark.parametrize(("model_class", "head_cls", "task_type", "options", "prefixes"), CASES, ids=IDS)
def test_checkpoint_without_head_keeps_initialisation(model_class, head_cls, task_type, options, prefixes):
    encoder_only = make_hf_model("DistilBertModel")
    state = {f"distilbert.{key}": value.numpy() for key, value in encoder_only.state_dict().items()}
    head = head_cls(DIM, task_type, options)
    head.build((None, None, DIM))
    before = [ops.convert_to_numpy(w).copy() for w in head.weights]
    assert head.load_hf_head_weights(state) is False
    for old, weight in zip(before, head.weights):
        np.testing.assert_array_equal(old, ops.convert_to_numpy(weight))


def test_token_head_ignores_sequence_classification_checkpoint():
    # Both have classifier.*, but the sequence head's classifier sits after a pre_classifier on [CLS].
    model = make_hf_model("DistilBertForSequenceClassification", num_labels=5)
    head = NerHead(DIM, "ner", {"num_classes": 5})
    assert head.load_hf_head_weights(numpy_state_dict(model)) is False


def test_unbuilt_head_builds_and_loads():
    model = hf_model_with_lively_head("DistilBertForTokenClassification", 5, ("classifier",))
    head = NerHead(DIM, "ner", {"num_classes": 5})
    assert head.load_hf_head_weights(numpy_state_dict(model)) is True
    np.testing.assert_array_equal(head.hf_head_weights()["classifier.weight"], model.classifier.weight.detach().numpy())


def test_class_count_mismatch_is_a_clear_error_and_changes_nothing():
    model = make_hf_model("DistilBertForSequenceClassification", num_labels=3)
    head = SentimentHead(DIM, "sentiment_analysis")  # 2 classes
    head.build((None, None, DIM))
    before = [ops.convert_to_numpy(w).copy() for w in head.weights]
    with pytest.raises(ValueError, match=r"classifier.weight has shape \(3, 32\).*expects \(2, 32\).*num_classes"):
        head.load_hf_head_weights(numpy_state_dict(model))
    for old, weight in zip(before, head.weights):  # pre_classifier fitted, but nothing was assigned
        np.testing.assert_array_equal(old, ops.convert_to_numpy(weight))


def test_torch_tensors_are_accepted():
    model = hf_model_with_lively_head("DistilBertForQuestionAnswering", 2, ("qa_outputs",))
    head = QASpanHead(DIM, "qa")
    assert head.load_hf_head_weights(model.state_dict()) is True
    np.testing.assert_array_equal(head.hf_head_weights()["qa_outputs.bias"], model.qa_outputs.bias.detach().numpy())
