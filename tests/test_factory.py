"""The factory and the task model: both call forms, several heads, training with the heads' defaults,
input validation, and Hugging Face parity of `pretrained=` task checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest

from distilbert_heads import (
    DistilBertTaskModel,
    HeadOptionsError,
    NLPTaskConfig,
    NLPTaskType,
    create_distilbert_with_head,
    create_distilbert_with_heads,
)
from distilbert_heads.plugins.registry import UnknownTaskTypeError
from distilbert_heads.testing import TINY_ENCODER, sample_inputs

B, L = 4, 8


def numpy_outputs(model, inputs):
    return {h: {k: keras.ops.convert_to_numpy(v) for k, v in d.items()} for h, d in model(inputs).items()}


# -- the two call forms ------------------------------------------------------------------------
def test_task_type_form_with_head_options_and_encoder_overrides():
    model = create_distilbert_with_head(task_type="sentiment", distilbert_variant="tiny", num_classes=3, **TINY_ENCODER)
    assert isinstance(model, DistilBertTaskModel)
    assert model.encoder.config.hidden_size == 16 and model.encoder.config.vocab_size == 100
    assert list(model.heads) == ["sentiment"]
    head = model.heads["sentiment"]
    assert head.task_type == "sentiment_analysis" and head.options.num_classes == 3
    outputs = numpy_outputs(model, sample_inputs(B, L))
    assert list(outputs) == ["sentiment"] and outputs["sentiment"]["logits"].shape == (B, 3)


def test_seed_readme_form_with_task_config():
    model = create_distilbert_with_head(
        distilbert_variant="base",
        task_config=NLPTaskConfig(name="review", task_type=NLPTaskType.SENTIMENT_ANALYSIS, num_classes=3),
        pretrained=False,
        **TINY_ENCODER,  # base's shape with tiny sizes, so the test stays fast
    )
    assert list(model.heads) == ["review"]
    assert model.encoder.config.num_layers == 1  # override beats the variant
    assert numpy_outputs(model, sample_inputs(B, L))["review"]["logits"].shape == (B, 3)


def test_task_config_as_dict_with_num_labels_alias_and_extra_head_option():
    model = create_distilbert_with_head(
        task_config={"task_type": "ner", "num_labels": 5, "dropout_rate": 0.3},
        distilbert_variant="tiny",
        **TINY_ENCODER,
    )
    head = model.heads["ner"]
    assert head.options.num_classes == 5 and head.options.dropout_rate == 0.3
    assert numpy_outputs(model, sample_inputs(B, L))["ner"]["logits"].shape == (B, L, 5)


def test_task_config_merges_with_keyword_head_options_and_name():
    model = create_distilbert_with_head(
        task_config=NLPTaskConfig(task_type="sentiment", labels=["neg", "neu", "pos"]),
        name="stance",
        label_smoothing=0.1,
        distilbert_variant="tiny",
        **TINY_ENCODER,
    )
    head = model.heads["stance"]
    assert head.options.labels == ["neg", "neu", "pos"] and head.options.num_classes == 3
    assert head.options.label_smoothing == 0.1


def test_default_head_name_is_the_task_type_as_given():
    by_alias = create_distilbert_with_head(task_type="qa", distilbert_variant="tiny", **TINY_ENCODER)
    by_member = create_distilbert_with_head(
        task_type=NLPTaskType.QUESTION_ANSWERING, distilbert_variant="tiny", **TINY_ENCODER
    )
    named = create_distilbert_with_head(task_type="qa", name="squad", distilbert_variant="tiny", **TINY_ENCODER)
    assert list(by_alias.heads) == ["qa"]
    assert list(by_member.heads) == ["question_answering"]
    assert list(named.heads) == ["squad"]
    assert type(by_alias.heads["qa"]) is type(by_member.heads["question_answering"])
    assert set(numpy_outputs(named, sample_inputs(B, L))["squad"]) == {"start_logits", "end_logits"}


def test_head_options_mapping_reaches_the_head_when_the_name_is_also_an_encoder_field():
    model = create_distilbert_with_head(
        task_type="sentiment", distilbert_variant="tiny", head_options={"dropout_rate": 0.05}, **TINY_ENCODER
    )
    assert model.heads["sentiment"].options.dropout_rate == 0.05
    assert model.encoder.config.dropout_rate == 0.1


def test_unknown_head_option_is_an_error_naming_the_head():
    with pytest.raises(HeadOptionsError, match="SentimentHead.*use_crf"):
        create_distilbert_with_head(task_type="sentiment", distilbert_variant="tiny", use_crf=True, **TINY_ENCODER)


def test_unknown_task_type_lists_what_is_installed():
    with pytest.raises(UnknownTaskTypeError, match="no_such_task") as info:
        create_distilbert_with_head(task_type="no_such_task", distilbert_variant="tiny", **TINY_ENCODER)
    assert "sentiment_analysis" in str(info.value)


def test_disagreeing_task_type_and_task_config_is_an_error():
    with pytest.raises(ValueError, match="disagrees"):
        create_distilbert_with_head(task_type="ner", task_config=NLPTaskConfig(task_type="sentiment"))


def test_missing_task_is_an_error():
    with pytest.raises(TypeError, match="needs a task"):
        create_distilbert_with_head(distilbert_variant="tiny")


def test_non_encoder_keyword_for_several_heads_is_an_error():
    with pytest.raises(TypeError, match="num_classes.*not DistilBERT encoder options"):
        create_distilbert_with_heads([{"task_type": "sentiment"}], distilbert_variant="tiny", num_classes=3)


def test_duplicate_head_names_are_an_error():
    with pytest.raises(ValueError, match="'sentiment'.*unique"):
        create_distilbert_with_heads(
            [{"task_type": "sentiment"}, {"task_type": "sentiment", "num_classes": 4}],
            distilbert_variant="tiny",
            **TINY_ENCODER,
        )


# -- several heads --------------------------------------------------------------------------
def multi_head_model(**weights):
    return create_distilbert_with_heads(
        [
            NLPTaskConfig(
                name="sentiment", task_type="sentiment", num_classes=3, loss_weight=weights.get("sentiment", 1.0)
            ),
            NLPTaskConfig(name="tags", task_type="ner", num_classes=5, loss_weight=weights.get("tags", 1.0)),
            NLPTaskConfig(name="qa", task_type="qa", loss_weight=weights.get("qa", 1.0)),
        ],
        distilbert_variant="tiny",
        **TINY_ENCODER,
    )


def multi_head_labels(inputs, seed=0):
    rng = np.random.default_rng(seed)
    tags = rng.integers(0, 5, size=inputs["input_ids"].shape)
    tags[inputs["attention_mask"] == 0] = -100
    lengths = inputs["attention_mask"].sum(axis=1)
    start = rng.integers(0, lengths)
    end = np.minimum(start + 1, lengths - 1)
    return {
        "sentiment": {"logits": rng.integers(0, 3, size=len(lengths))},
        "tags": {"logits": tags},
        "qa": {"start_logits": start, "end_logits": end},
    }


def test_several_heads_share_one_encoder_and_key_outputs_by_head_name():
    model = multi_head_model()
    outputs = numpy_outputs(model, sample_inputs(B, L))
    assert list(outputs) == ["sentiment", "tags", "qa"]
    assert outputs["sentiment"]["logits"].shape == (B, 3)
    assert outputs["tags"]["logits"].shape == (B, L, 5)
    assert outputs["qa"]["start_logits"].shape == (B, L)
    assert model.flat_output_keys == ["sentiment/logits", "tags/logits", "qa/start_logits", "qa/end_logits"]
    # one encoder: its weights are counted once
    encoder_weights = {id(v) for v in model.encoder.weights}
    assert len(encoder_weights) == len(model.encoder.weights)
    assert all(id(v) in {id(w) for w in model.weights} for v in model.encoder.weights)


def test_loss_weights_weight_each_heads_losses():
    model = multi_head_model(sentiment=2.0, tags=0.5, qa=0.25)
    model.compile(optimizer="adam")
    inputs = sample_inputs(B, L)
    logs = model.evaluate(inputs, multi_head_labels(inputs), batch_size=B, verbose=0, return_dict=True)
    expected = (
        2.0 * logs["sentiment/logits_loss"]
        + 0.5 * logs["tags/logits_loss"]
        + 0.25 * (logs["qa/start_logits_loss"] + logs["qa/end_logits_loss"])
    )
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    assert "sentiment/logits_accuracy" in logs and "tags/logits_accuracy" in logs


def test_labels_may_be_nested_or_flat():
    model = multi_head_model()
    model.compile(optimizer="adam")
    inputs = sample_inputs(B, L)
    nested = multi_head_labels(inputs)
    flat = {f"{h}/{k}": v for h, d in nested.items() for k, v in d.items()}
    a = model.evaluate(inputs, nested, batch_size=B, verbose=0, return_dict=True)
    b = model.evaluate(inputs, flat, batch_size=B, verbose=0, return_dict=True)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)


def test_single_array_labels_for_a_multi_output_model_explain_the_expected_keys():
    model = multi_head_model()
    model.compile(optimizer="adam")
    inputs = sample_inputs(B, L)
    with pytest.raises(ValueError, match="qa/start_logits"):
        model.fit(inputs, np.zeros((B,)), verbose=0)


def test_user_losses_may_be_keyed_by_head():
    model = create_distilbert_with_head(task_type="sentiment", distilbert_variant="tiny", num_classes=3, **TINY_ENCODER)
    model.compile(optimizer="adam", loss={"sentiment": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    logs = model.evaluate(sample_inputs(B, L), np.array([0, 1, 2, 1]), verbose=0, return_dict=True)
    assert np.isfinite(logs["loss"])
    with pytest.raises(ValueError, match="not an output of this model"):
        model.compile(optimizer="adam", loss={"nope": "mse"})


# -- fit with each built-in head's defaults and documented label format -------------------
def builtin_labels(kind, inputs, rng):
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    n = len(ids)
    if kind in ("sentiment", "nli"):
        return rng.integers(0, 3, size=n)
    if kind in ("regression", "similarity"):
        return rng.normal(size=n).astype("float32")
    if kind == "ner":
        tags = rng.integers(0, 9, size=ids.shape)
        tags[mask == 0] = -100  # padding carries no label
        return tags
    if kind == "qa":
        lengths = mask.sum(axis=1)
        start = rng.integers(0, lengths)
        return {"start_logits": start, "end_logits": np.minimum(start + 2, lengths - 1)}
    raise AssertionError(kind)


BUILTIN_CASES = {
    "sentiment": ("sentiment", {"num_classes": 3}),
    "regression": ("text_regression", {}),
    "ner": ("ner", {}),
    "qa": ("qa", {}),
    "nli": ("natural_language_inference", {}),
    "similarity": ("text_similarity", {}),
}


def fit_once(kind, jit_compile="auto", epochs=2):
    task_type, options = BUILTIN_CASES[kind]
    model = create_distilbert_with_head(task_type=task_type, distilbert_variant="tiny", **options, **TINY_ENCODER)
    head = next(iter(model.heads.values()))
    inputs = sample_inputs(8, L, seed=3)
    labels = builtin_labels(kind, inputs, np.random.default_rng(0))
    before = [keras.ops.convert_to_numpy(v).copy() for v in head.trainable_variables]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=jit_compile)
    history = model.fit(inputs, labels, batch_size=4, epochs=epochs, verbose=0).history
    after = [keras.ops.convert_to_numpy(v) for v in head.trainable_variables]
    return history, before, after


@pytest.mark.parametrize("kind", sorted(BUILTIN_CASES))
def test_fit_with_default_losses_for_each_builtin_head(kind):
    history, before, after = fit_once(kind)
    assert all(np.isfinite(history["loss"])), history
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "fit did not change the head's weights"
    if kind in ("sentiment", "ner", "nli"):
        assert any(key.endswith("accuracy") for key in history)


@pytest.mark.parametrize("kind", ["sentiment", "qa"])
def test_fit_with_jit_compile(kind):
    history, _, _ = fit_once(kind, jit_compile=True, epochs=1)
    assert all(np.isfinite(history["loss"]))


FIT_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests_dir!r})
    import numpy as np
    import test_factory as t
    import keras
    assert keras.backend.backend() == {backend!r}, keras.backend.backend()
    for kind in sorted(t.BUILTIN_CASES):
        history, before, after = t.fit_once(kind, jit_compile={jit!r}, epochs=1)
        assert np.isfinite(history["loss"]).all(), (kind, history)
        assert any(not np.array_equal(a, b) for a, b in zip(before, after)), kind
        print(kind, "ok")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("backend,jit", [("jax", True), ("torch", False), ("tensorflow", True)])
def test_fit_every_builtin_head_under_each_backend(backend, jit):
    if backend == keras.backend.backend() and not jit:
        pytest.skip("covered in this process")
    pytest.importorskip(backend if backend != "tensorflow" else "tensorflow")
    script = FIT_SCRIPT.format(tests_dir=os.path.dirname(__file__), backend=backend, jit=jit)
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count(" ok") == len(BUILTIN_CASES)


# -- input validation ---------------------------------------------------------------------
def test_predict_and_call_validate_concrete_inputs():
    model = create_distilbert_with_head(task_type="sentiment", distilbert_variant="tiny", **TINY_ENCODER)
    bad = sample_inputs(B, L)
    bad["input_ids"][0, 0] = 100  # == vocab_size
    with pytest.raises(ValueError, match="vocab_size"):
        model.predict(bad, verbose=0)
    with pytest.raises(ValueError, match="vocab_size"):
        model(bad)
    wrong_mask = sample_inputs(B, L)
    wrong_mask["attention_mask"] = wrong_mask["attention_mask"][:, :-1]
    with pytest.raises(ValueError, match="attention_mask"):
        model.predict(wrong_mask, verbose=0)
    too_long = sample_inputs(1, 65)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(too_long)


# -- pretrained: Hugging Face task checkpoints ------------------------------------------------
def hf_checkpoint(tmp_path, model_class, **config):
    from hf_reference import make_hf_model, save_hf_model

    hf = make_hf_model(model_class, **config)
    return hf, save_hf_model(hf, tmp_path / model_class)


def hf_batch():
    from hf_reference import random_batch

    return random_batch(97, batch=3, length=11)


def test_pretrained_sequence_classification_matches_transformers(tmp_path):
    from hf_reference import hf_forward

    hf, directory = hf_checkpoint(tmp_path, "DistilBertForSequenceClassification", num_labels=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every head weight is in the checkpoint: no warning
        model = create_distilbert_with_head(task_type="sentiment", pretrained=directory)
    assert model.heads["sentiment"].options.num_classes == 3  # taken from the checkpoint
    ids, mask = hf_batch()
    ours = numpy_outputs(model, {"input_ids": ids, "attention_mask": mask})["sentiment"]["logits"]
    theirs = hf_forward(hf, ids, mask).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_pretrained_token_classification_matches_transformers(tmp_path):
    from hf_reference import hf_forward

    tags = ["O", "B-X", "I-X", "B-Y", "I-Y"]
    hf, directory = hf_checkpoint(
        tmp_path,
        "DistilBertForTokenClassification",
        id2label=dict(enumerate(tags)),
        label2id={tag: i for i, tag in enumerate(tags)},
    )
    model = create_distilbert_with_head(task_type="ner", pretrained=str(directory))
    assert model.heads["ner"].options.labels == tags  # class count and names come from the checkpoint
    ids, mask = hf_batch()
    ours = numpy_outputs(model, {"input_ids": ids, "attention_mask": mask})["ner"]["logits"]
    theirs = hf_forward(hf, ids, mask).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_pretrained_question_answering_matches_transformers(tmp_path):
    from hf_reference import hf_forward

    hf, directory = hf_checkpoint(tmp_path, "DistilBertForQuestionAnswering")
    model = create_distilbert_with_head(task_type="qa", pretrained=directory)
    ids, mask = hf_batch()
    ours = numpy_outputs(model, {"input_ids": ids, "attention_mask": mask})["qa"]
    reference = hf_forward(hf, ids, mask)
    # transformers does not mask padding in the QA logits; compare where there is text
    valid = mask.astype(bool)
    np.testing.assert_allclose(ours["start_logits"][valid], reference.start_logits.numpy()[valid], atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours["end_logits"][valid], reference.end_logits.numpy()[valid], atol=1e-5, rtol=0)


def test_checkpoint_without_head_weights_initialises_the_head_and_says_so_once(tmp_path):
    from hf_reference import hf_forward

    hf, directory = hf_checkpoint(tmp_path, "DistilBertModel")
    with pytest.warns(UserWarning) as caught:
        model = create_distilbert_with_head(task_type="sentiment", pretrained=directory, num_classes=2)
    messages = [str(w.message) for w in caught if "no weights for head" in str(w.message)]
    assert len(messages) == 1 and "'sentiment'" in messages[0] and "SentimentHead" in messages[0]
    ids, mask = hf_batch()
    hidden = model.encoder({"input_ids": ids, "attention_mask": mask})["last_hidden_state"]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(hidden), hf_forward(hf, ids, mask).last_hidden_state.numpy(), atol=1e-5
    )
