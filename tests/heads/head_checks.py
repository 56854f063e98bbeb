"""Checks every built-in head passes, written once; each head's module runs them on its own cases.

A case is ``(head class, task type, options, {output name: shape})`` for the checks on random
hidden states, and ``(HF model class, head class, task type, options, HF key prefixes)`` for the
Hugging Face parity checks.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

B, L, D = 2, 7, 16
MASK = np.array([[1] * 7, [1] * 5 + [0] * 2], dtype="int32")
HF_DIM = 32  # hf_reference.make_hf_model's hidden size

CASE_FIELDS = ("cls", "task_type", "options", "shapes")
HF_CASE_FIELDS = ("model_class", "head_cls", "task_type", "options", "prefixes")


def case_ids(cases: list[tuple]) -> list[str]:
    return [f"{cls.__name__}-{task}" for cls, task, _, _ in cases]


def hf_case_ids(cases: list[tuple]) -> list[str]:
    return [f"{case[0]}-{case[2]}" for case in cases]


def hidden(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(B, L, D)).astype("float32")


def numpy_outputs(outputs: dict) -> dict[str, np.ndarray]:
    return {name: ops.convert_to_numpy(value) for name, value in outputs.items()}


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def write_csv(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# -- build ------------------------------------------------------------------------------------
def check_output_names_and_shapes(cls, task_type, options, shapes) -> None:
    head = cls(D, task_type, options)
    outputs = head(hidden(), MASK)
    assert set(outputs) == set(cls.output_names) == set(shapes)
    assert {name: tuple(value.shape) for name, value in outputs.items()} == shapes


def check_builds_weights_before_first_call(cls, task_type, options) -> None:
    head = cls(D, task_type, options)
    head.build((None, None, D))
    assert head.built and head.weights
    assert all(w.path.split("/")[1] in ("pre_classifier", "classifier", "qa_outputs") for w in head.weights)


def check_config_round_trip_gives_identical_outputs(cls, task_type, options) -> None:
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


# -- training ---------------------------------------------------------------------------------
LabelsFor = Callable[[Any, np.ndarray, np.ndarray], dict[str, np.ndarray]]


def check_loss_decreases_when_training(cls, task_type, options, labels_for: LabelsFor, n: int = 32) -> None:
    """Train on random hidden states whose labels, from ``labels_for(head, states, mask)``, are
    a learnable function of them; the loss must fall by a fifth."""
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
    rng = np.random.default_rng(5)
    states = rng.normal(size=(n, L, D)).astype("float32")
    mask = np.ones((n, L), dtype="int32")
    mask[: n // 2, 5:] = 0
    inputs, labels = [states, mask], labels_for(head, states, mask)
    before = model.evaluate(inputs, labels, batch_size=16, verbose=0, return_dict=True)["loss"]
    model.fit(inputs, labels, batch_size=16, epochs=8, verbose=0)
    after = model.evaluate(inputs, labels, batch_size=16, verbose=0, return_dict=True)["loss"]
    assert np.isfinite(after) and after < 0.8 * before, (before, after)


def sequence_labels(head, states: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Labels for a head with one ``logits`` output per sequence (classes or one score)."""
    if head.is_regression:
        return {"logits": states[:, 0, :4].sum(-1).astype("float32")}
    return {"logits": (states[:, 0, : head.num_classes].argmax(-1)).astype("int32")}


# -- Hugging Face parity ----------------------------------------------------------------------
# hf_reference imports torch and transformers, which are optional: imported inside the checks,
# a missing one skips only the parity tests.
def hf_num_labels(head_cls, options) -> int:
    from distilbert_heads.heads.pairwise import PairwiseHead
    from distilbert_heads.heads.qa_span import QASpanHead

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
    from hf_reference import make_hf_model, torch

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
    from hf_reference import hf_forward, random_batch, torch

    model = hf_model_with_lively_head(model_class, hf_num_labels(head_cls, options), prefixes)
    ids, mask = random_batch(model.config.vocab_size, batch=3, length=9)
    with torch.no_grad():
        states = model.distilbert(
            input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()
        ).last_hidden_state.numpy()
    reference = hf_forward(model, ids, mask)
    head = head_cls(HF_DIM, task_type, options)
    head.build((None, None, HF_DIM))
    assert head.load_hf_head_weights(numpy_state_dict(model)) is True
    ours = {name: ops.convert_to_numpy(value) for name, value in head(states, mask, training=False).items()}
    return model, head, mask, reference, ours


def check_hf_head_weights_round_trip(model_class, head_cls, task_type, options, prefixes) -> None:
    from hf_reference import make_hf_model, torch

    model, head, *_ = run_both(model_class, head_cls, task_type, options, prefixes)
    hf_state = numpy_state_dict(model)
    exported = head.hf_head_weights()
    assert set(exported) == {key for key in hf_state if key.split(".")[0] in prefixes}
    for key, value in exported.items():
        assert value.shape == hf_state[key].shape
        np.testing.assert_array_equal(value, hf_state[key])
    # And transformers accepts them back.
    fresh = make_hf_model(model_class, seed=3, num_labels=hf_num_labels(head_cls, options))
    missing, unexpected = fresh.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=False)
    assert not unexpected and not any(key.split(".")[0] in prefixes for key in missing)


def check_checkpoint_without_head_keeps_initialisation(head_cls, task_type, options) -> None:
    from hf_reference import make_hf_model

    encoder_only = make_hf_model("DistilBertModel")
    state = {f"distilbert.{key}": value.numpy() for key, value in encoder_only.state_dict().items()}
    head = head_cls(HF_DIM, task_type, options)
    head.build((None, None, HF_DIM))
    before = [ops.convert_to_numpy(w).copy() for w in head.weights]
    assert head.load_hf_head_weights(state) is False
    for old, weight in zip(before, head.weights):
        np.testing.assert_array_equal(old, ops.convert_to_numpy(weight))
