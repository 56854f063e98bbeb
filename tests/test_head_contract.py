"""The head contract serving plugin authors: library-owned masked losses, per-output loss weights,
head options that cannot be mistaken for encoder or task keywords, and optional methods that are
truly optional (a head without ``evaluate`` trains from files, saves and reports its loss).

The heads are in ``plugin_fixtures/contract_heads.py``, registered as an installed plugin through
a throwaway ``*.dist-info`` in the real entry-point group.
"""

from __future__ import annotations

import importlib
import json
import math

import keras
import numpy as np
import pytest
from helpers import assert_mentions

import distilbert_heads
from distilbert_heads import (
    DistillationTarget,
    HeadOptionsError,
    create_distilbert_with_head,
    create_distilbert_with_heads,
)
from distilbert_heads.heads.sentiment import SentimentHead
from distilbert_heads.plugins.head import HeadContractError, distillation_targets_of
from distilbert_heads.plugins.registry import get_registry, reset_registry
from distilbert_heads.testing import TINY_ENCODER, sample_inputs
from distilbert_heads.training.evaluation import evaluate
from distilbert_heads.training.loop import train

B, L = 4, 8


@pytest.fixture
def contract_plugin(fake_site):
    """``plugin_fixtures.contract_heads`` as the installed distribution ``contract-heads`` 1.0."""
    fake_site.dist("contract-heads", "1.0", {"contract": "plugin_fixtures.contract_heads"}, group="distilbert_heads")
    importlib.invalidate_caches()
    reset_registry()
    yield
    reset_registry()


def tiny(task_type, **kwargs):
    return create_distilbert_with_head(task_type=task_type, distilbert_variant="tiny", **kwargs, **TINY_ENCODER)


def two_output_labels(seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 3, size=(B, L))
    tokens[:, 0] = -100  # [CLS] carries no label
    return {"a": rng.integers(0, 2, size=B), "b": tokens}


def weights_of(model, layer):
    return [np.array(w) for w in model.heads["two_outputs"].__getattribute__(layer).get_weights()]


# -- masked losses belong to the library -------------------------------------------------------
@pytest.mark.parametrize("name", ["MaskedSparseCategoricalCrossentropy", "MaskedSparseCategoricalAccuracy"])
def test_masked_loss_and_metric_are_public_and_keep_their_0_1_registered_names(name, tmp_path):
    from distilbert_heads import losses

    cls = getattr(losses, name)
    assert getattr(distilbert_heads, name) is cls
    assert keras.saving.get_registered_name(cls) == f"distilbert_heads>{name}"
    assert distilbert_heads.IGNORE_INDEX == losses.IGNORE_INDEX == -100
    # compiled with it explicitly (not the head defaults): the compile config names the class, and reloads
    model = tiny("ner", num_classes=3)
    loss = losses.MaskedSparseCategoricalCrossentropy(label_smoothing=0.1)
    model.compile(optimizer="adam", loss=loss, metrics=[losses.MaskedSparseCategoricalAccuracy(name="acc")])
    labels = np.where(sample_inputs(B, L)["attention_mask"] == 1, 1, -100)
    before = model.evaluate(sample_inputs(B, L), labels, verbose=0, return_dict=True)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    after = again.evaluate(sample_inputs(B, L), labels, verbose=0, return_dict=True)
    assert after == pytest.approx(before, rel=1e-5)


# -- per-output loss weights ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "compile_weights"),
    [
        ({"weight_a": 0.0}, None),  # the head's default_loss_weights
        ({}, {"two_outputs": {"a": 0.0}}),  # given to compile, nested
        ({"weight_a": 1.0}, {"two_outputs/a": 0.0}),  # compile's wins over the head's, flat
    ],
    ids=["head-default", "compile-nested", "compile-overrides-head"],
)
def test_a_zero_weight_leaves_that_outputs_branch_untrained(contract_plugin, options, compile_weights):
    model = tiny("two_outputs", head_options=options)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss_weights=compile_weights)
    a_before, b_before = weights_of(model, "dense_a"), weights_of(model, "dense_b")
    model.fit(sample_inputs(B, L), two_output_labels(), epochs=2, verbose=0)
    for before, after in zip(a_before, weights_of(model, "dense_a")):
        np.testing.assert_array_equal(before, after)
    assert any(not np.allclose(b, a) for b, a in zip(b_before, weights_of(model, "dense_b")))


@pytest.mark.parametrize(
    ("head_weight", "options", "compile_weights", "expected"),
    [
        (1.0, {}, None, (1.0, 1.0)),
        (1.0, {"weight_a": 2.0, "weight_b": 0.5}, None, (2.0, 0.5)),
        (3.0, {"weight_a": 2.0}, None, (6.0, 3.0)),  # times NLPTaskConfig's loss_weight
        (3.0, {"weight_a": 2.0}, {"b": 0.25}, (6.0, 0.75)),  # compile's for b, the head's for a
        (0.5, {}, 4.0, (2.0, 2.0)),  # one value for every output
    ],
)
def test_loss_weights_scale_each_outputs_loss(
    contract_plugin, tmp_path, head_weight, options, compile_weights, expected
):
    model = create_distilbert_with_heads(
        [{"task_type": "two_outputs", "loss_weight": head_weight, "options": options}],
        distilbert_variant="tiny",
        **TINY_ENCODER,
    )
    model.compile(optimizer="adam", loss_weights=compile_weights)
    logs = model.evaluate(sample_inputs(B, L), two_output_labels(), verbose=0, return_dict=True)
    want = expected[0] * logs["two_outputs/a_loss"] + expected[1] * logs["two_outputs/b_loss"]
    assert logs["loss"] == pytest.approx(want, rel=1e-5)
    # reloading compiles with the same weights (not multiplied by the head's loss_weight again)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert again.evaluate(sample_inputs(B, L), two_output_labels(), verbose=0, return_dict=True)["loss"] == (
        pytest.approx(logs["loss"], rel=1e-5)
    )


@pytest.mark.parametrize(
    ("where", "bad"),
    [("compile", bad) for bad in (-1.0, math.nan, math.inf, "heavy", True)]
    + [("head", bad) for bad in (-1.0, "heavy", True)],  # NaN, inf options fail at build: not JSON
)
def test_a_bad_loss_weight_names_the_output_and_head(contract_plugin, bad, where):
    model = tiny("two_outputs", head_options={"weight_b": bad} if where == "head" else {})
    with pytest.raises(ValueError, match=r"'two_outputs/b'.*TwoOutputHead.*finite number >= 0") as info:
        model.compile(optimizer="adam", loss_weights={"two_outputs/b": bad} if where == "compile" else None)
    assert repr(bad) in str(info.value)


def test_loss_weights_for_an_unknown_output_are_an_error(contract_plugin):
    model = tiny("two_outputs")
    with pytest.raises(ValueError, match=r"'two_outputs/c'.*not an output.*two_outputs/a"):
        model.compile(optimizer="adam", loss_weights={"two_outputs": {"c": 1.0}})


# -- head options are never mistaken for encoder or task keywords ------------------------------
@pytest.mark.parametrize(
    ("task", "keyword", "value", "other", "fix"),
    [
        ("clashing", "dropout_rate", 0.3, "DistilBertConfig field", "encoder_options={'dropout_rate': 0.3}"),
        ("sentiment", "dropout_rate", 0.3, "DistilBertConfig field", "encoder_options={'dropout_rate': 0.3}"),
        ("clashing", "max_length", 16, "task-level NLPTaskConfig field", "NLPTaskConfig(task_type=..., max_length=16)"),
    ],
)
def test_a_keyword_that_is_a_head_option_and_an_encoder_or_task_field_is_an_error_naming_both(
    contract_plugin, task, keyword, value, other, fix
):
    with pytest.raises(HeadOptionsError) as info:
        tiny(task, **{keyword: value})
    message = str(info.value)
    head_class = "ClashingHead" if task == "clashing" else "SentimentHead"
    for fact in (f"{keyword}={value!r}", head_class, other, f"head_options={{{keyword!r}: {value!r}}}", fix):
        assert fact in message


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ({"head_options": {"dropout_rate": 0.3, "max_length": 16}}, {"dropout_rate": 0.3, "max_length": 16}),
        # NLPTaskConfig would reject these (temperature must be > 0, labels are names): the head decides
        ({"temperature": 0.0, "labels": [{"name": "x"}]}, {"temperature": 0.0, "labels": [{"name": "x"}]}),
        ({"head_options": {"temperature": 0.0}}, {"temperature": 0.0}),
    ],
)
def test_head_options_reach_the_head_alone(contract_plugin, spelling, expected):
    model = tiny("clashing", **spelling)
    assert model.heads["clashing"].options.model_dump(include=set(expected)) == expected
    assert model.encoder.config.dropout_rate == 0.1  # the encoder's default, untouched


def test_head_options_in_a_task_config_dict_skip_nlptaskconfig_typing(contract_plugin):
    model = create_distilbert_with_heads(
        [{"task_type": "clashing", "temperature": 0.0, "labels": [{"name": "x"}]}],
        distilbert_variant="tiny",
        **TINY_ENCODER,
    )
    assert model.heads["clashing"].options.temperature == 0.0


def test_encoder_options_go_to_the_encoder_alone(contract_plugin):
    model = tiny("clashing", encoder_options={"dropout_rate": 0.25}, head_options={"dropout_rate": 0.5})
    assert model.encoder.config.dropout_rate == 0.25 and model.heads["clashing"].options.dropout_rate == 0.5


def test_a_bad_head_option_value_names_the_head_not_nlptaskconfig(contract_plugin):
    with pytest.raises(HeadOptionsError, match=r"ClashingHead.*temperature"):
        tiny("clashing", temperature=-1.0)


# -- optional methods are optional ---------------------------------------------------------------
def write_rows(path, count, seed):
    rng = np.random.default_rng(seed)
    words = ["good", "great", "fine", "bad", "awful", "poor"]
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(count):
            label = int(rng.integers(0, 2))
            text = " ".join(rng.choice(words[:3] if label else words[3:], size=3))
            handle.write(json.dumps({"text": text, "label": label}) + "\n")
    return path


@pytest.mark.parametrize("with_eval", [True, False], ids=["eval-file", "training-rows"])
def test_a_head_without_evaluate_trains_from_files_saves_and_reports_its_loss(contract_plugin, tmp_path, with_eval):
    train_file = write_rows(tmp_path / "train.jsonl", 24, seed=0)
    eval_file = write_rows(tmp_path / "eval.jsonl", 8, seed=1) if with_eval else None
    out = tmp_path / "loss_only.keras"
    result = train(
        "loss_only", train_file, eval_file=eval_file, epochs=3, batch_size=8, out=out, verbose=0, **TINY_ENCODER
    )
    assert set(result.metrics) == {"loss"} and math.isfinite(result.metrics["loss"])
    assert result.metrics_split == ("eval" if with_eval else "train")
    assert result.path == out and out.exists()
    reloaded = keras.models.load_model(out)
    assert type(reloaded.heads["loss_only"]).__name__ == "LossOnlyHead" and reloaded.tokenizer is not None
    if with_eval:
        # early stopping watched the held-out loss: it is in the history, and the reported one is the best epoch's
        assert len(result.history["val_loss"]) == result.epochs_run
        assert result.metrics["loss"] == pytest.approx(min(result.history["val_loss"]))
        assert result.best_epoch == 1 + int(np.argmin(result.history["val_loss"]))
    # scoring the saved file on rows is the same loss (best weights restored, then saved)
    rows = eval_file or train_file
    assert evaluate(out, rows) == {"loss": pytest.approx(result.metrics["loss"], rel=1e-4)}


# -- distillation: which outputs a student learns from a teacher, and how ----------------------------------------
def target(**fields):
    return DistillationTarget(**fields)


DECLARED = {
    "sentiment": (dict(task_type="sentiment"), {"logits": target(kind="logits", axis=-1)}),
    "sentiment regression": (dict(task_type="text_regression"), {"logits": target(kind="regression")}),
    "pairwise": (dict(task_type="natural_language_inference"), {"logits": target(kind="logits", axis=-1)}),
    "pairwise similarity": (dict(task_type="text_similarity"), {"logits": target(kind="regression")}),
    "ner": (dict(task_type="ner"), {"logits": target(kind="logits", axis=-1, tokens="rows")}),
    "qa span": (
        dict(task_type="qa"),
        {"start_logits": target(axis=-1, tokens="classes"), "end_logits": target(axis=-1, tokens="classes")},
    ),
    "foo plugin": (dict(task_type="foo", num_classes=3), {"logits": target(kind="regression")}),
}


@pytest.mark.parametrize("case", DECLARED)
def test_heads_declare_their_distillation_targets_and_they_fit_the_outputs(case):
    kwargs, expected = DECLARED[case]
    if kwargs["task_type"] == "foo":
        pytest.importorskip("distilbert_head_foo", reason="the example plugin is not installed")
    model = tiny(**kwargs)
    ((name, head),) = model.heads.items()
    declared = distillation_targets_of(head, model.head_plugin(name))
    assert declared == expected
    batch, length = 4, 8
    outputs = model(sample_inputs(batch_size=batch, length=length))[name]
    for output, how in declared.items():
        shape = tuple(outputs[output].shape)
        if how.tokens == "rows":  # one distribution per token: (batch, tokens, classes)
            assert shape[:2] == (batch, length) and len(shape) == 3
        elif how.tokens == "classes":  # the distribution runs over the tokens
            assert shape == (batch, length) and shape[how.axis] == length
        else:  # one per example
            assert len(shape) == 2 and shape[0] == batch


def test_every_builtin_head_declares_every_output():
    records = {row.head_class: row.task_type for row in get_registry().list_heads() if row.plugin.startswith("builtin")}
    assert len(records) >= 4
    for task_type in records.values():
        model = tiny(task_type)
        ((name, head),) = model.heads.items()
        assert set(distillation_targets_of(head, model.head_plugin(name))) == set(type(head).output_names), task_type


def test_a_plugin_head_that_declares_nothing_is_told_which_hook_to_implement(contract_plugin):
    model = tiny("loss_only")
    with pytest.raises(HeadContractError) as error:
        distillation_targets_of(model.heads["loss_only"], model.head_plugin("loss_only"))
    assert_mentions(error, "distillation_targets()", "'loss_only'", "LossOnlyHead", "contract", "DistillationTarget")


def _raise(head):
    raise RuntimeError("no teacher today")


HOSTILE_DECLARATIONS = {
    "None": (lambda head: None, ["distillation_targets()", "declares no outputs"]),
    "empty": (lambda head: {}, ["distillation_targets()", "declares no outputs"]),
    "not a dict": (lambda head: [("logits", target())], ["must return a dict", "[('logits'"]),
    "unknown output": (lambda head: {"probs": target()}, ["'probs'", "['logits']"]),
    "not a target": (lambda head: {"logits": "soft"}, ["'soft'", "DistillationTarget"]),
    "raises": (_raise, ["distillation_targets() raised RuntimeError", "no teacher today"]),
}


@pytest.mark.parametrize("case", HOSTILE_DECLARATIONS)
def test_a_bad_distillation_declaration_names_the_head_and_what_is_wrong(case):
    declare, facts = HOSTILE_DECLARATIONS[case]
    head_class = type("BadHead", (SentimentHead,), {"distillation_targets": declare})
    head = head_class(hidden_size=16, task_type="sentiment", name="bad")
    with pytest.raises(HeadContractError) as error:
        distillation_targets_of(head, "some-plugin")
    assert_mentions(error, "'bad'", "BadHead", "some-plugin", *facts)
