"""Behaviour of the encoder that is ours to define: config, inputs, outputs, saving, precision."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from helpers import BOUNDED_ENCODER, assert_mentions
from keras import ops

from distilbert_heads import DistilBERT, DistilBertConfig
from distilbert_heads.encoder import layers
from distilbert_heads.encoder.config import ConfigError

TINY = {**BOUNDED_ENCODER, "num_layers": 2}


def batch(length: int = 6, vocab_size: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab_size, size=(2, length)).astype("int32")
    mask = np.ones((2, length), dtype="int32")
    mask[1, length // 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def numpy_of(value):
    return ops.convert_to_numpy(value)


# -- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "field", "hint"),
    [
        ({"hidden_size": 30, "num_heads": 4}, "hidden_size", "divisible by num_heads"),
        ({"num_layers": 0}, "num_layers", "greater than or equal to 1"),
        ({"dropout_rate": 1.0}, "dropout_rate", "less than 1"),
        ({"attention_dropout_rate": -0.1}, "attention_dropout_rate", "greater than or equal to 0"),
        ({"hidden_act": "tanh"}, "hidden_act", "gelu"),
        ({"pad_token_id": 50}, "pad_token_id", "smaller than vocab_size"),
    ],
)
def test_invalid_config_names_the_field_and_the_fix(overrides, field, hint):
    with pytest.raises(ConfigError) as error:
        DistilBERT(**{**TINY, **overrides})
    assert field in str(error.value) and hint in str(error.value)


def test_unknown_keyword_is_rejected_with_the_valid_names():
    with pytest.raises(ConfigError, match="not a DistilBERT option"):
        DistilBertConfig.build(**TINY, hidden_dropout=0.1)


@pytest.mark.parametrize(
    ("variant", "hidden", "layers", "heads"), [("tiny", 256, 2, 4), ("small", 512, 4, 8), ("base", 768, 6, 12)]
)
def test_variants_follow_the_seed_table(variant, hidden, layers, heads):
    config = DistilBertConfig.for_variant(variant)
    assert (config.hidden_size, config.num_layers, config.num_heads) == (hidden, layers, heads)
    assert config.intermediate_size == 4 * hidden


def test_variant_overrides_and_unknown_variant():
    encoder = DistilBERT.from_variant("tiny", vocab_size=100, num_layers=1)
    assert encoder.config.vocab_size == 100 and encoder.config.num_layers == 1 and encoder.hidden_size == 256
    with pytest.raises(ConfigError, match="expected one of"):
        DistilBERT.from_variant("large")


def test_base_has_the_published_parameter_count():
    # distilbert-base-uncased has 66,362,880 parameters.
    assert DistilBERT.from_variant("base").count_params() == 66_362_880


# -- inputs and outputs -----------------------------------------------------------------------
@pytest.mark.parametrize("seeded", [False, True])
def test_random_init_gives_every_weight_its_own_values(seeded):
    # One initializer shared by several layers would give q, k, v and out (and lin1/lin2,
    # word/position embeddings) the same values; Hugging Face draws each independently.
    if seeded:
        keras.utils.set_random_seed(0)
    encoder = DistilBERT.from_variant("tiny", max_position_embeddings=64)
    matrices = {w.path: np.asarray(w.numpy()).ravel() for w in encoder.weights if len(w.shape) == 2}
    assert len(matrices) == 2 + 6 * encoder.config.num_layers
    paths = list(matrices)
    for i, path in enumerate(paths):
        for other in paths[i + 1 :]:
            same = np.array_equal(matrices[path][:64], matrices[other][:64])
            assert not same, f"{path} and {other} start with the same values"
        values = matrices[path]
        assert 0.015 < values.std() < 0.025, f"{path}: std {values.std():.4f}, expected initializer_range 0.02"


def test_outputs_and_optional_inputs():
    encoder = DistilBERT(**TINY)
    inputs = batch()
    outputs = encoder(inputs)
    assert set(outputs) == {"last_hidden_state", "attention_mask"}
    assert tuple(outputs["last_hidden_state"].shape) == (2, 6, 16)
    np.testing.assert_array_equal(numpy_of(outputs["attention_mask"]), inputs["attention_mask"])

    with_types = encoder({**inputs, "token_type_ids": np.ones_like(inputs["input_ids"])})
    np.testing.assert_array_equal(numpy_of(with_types["last_hidden_state"]), numpy_of(outputs["last_hidden_state"]))

    without_mask = encoder({"input_ids": inputs["input_ids"]})
    all_ones = encoder({"input_ids": inputs["input_ids"], "attention_mask": np.ones_like(inputs["input_ids"])})
    np.testing.assert_allclose(numpy_of(without_mask["last_hidden_state"]), numpy_of(all_ones["last_hidden_state"]))

    default_positions = np.tile(np.arange(6, dtype="int32"), (2, 1))
    explicit = encoder({**inputs, "position_ids": default_positions})
    np.testing.assert_allclose(numpy_of(explicit["last_hidden_state"]), numpy_of(outputs["last_hidden_state"]))
    shifted = encoder({**inputs, "position_ids": default_positions + 3})
    assert not np.allclose(numpy_of(shifted["last_hidden_state"]), numpy_of(outputs["last_hidden_state"]))

    hidden = encoder(inputs, output_hidden_states=True)["hidden_states"]
    assert len(hidden) == 3
    np.testing.assert_allclose(numpy_of(hidden[-1]), numpy_of(outputs["last_hidden_state"]))


def test_row_with_every_token_masked_is_finite():
    encoder = DistilBERT(**TINY)
    inputs = batch()
    inputs["attention_mask"][0] = 0
    assert np.isfinite(numpy_of(encoder(inputs)["last_hidden_state"])).all()


def test_dropout_only_in_training():
    encoder = DistilBERT(**TINY)
    inputs = batch()
    first = numpy_of(encoder(inputs, training=False)["last_hidden_state"])
    np.testing.assert_array_equal(first, numpy_of(encoder(inputs, training=False)["last_hidden_state"]))
    assert not np.allclose(first, numpy_of(encoder(inputs, training=True)["last_hidden_state"]))


@pytest.mark.parametrize("attention_dropout_rate", [0.1, 0.0])  # 0.0 trains through the fused attention
def test_symbolic_inputs_predict_and_fit(attention_dropout_rate):
    encoder = DistilBERT(**TINY, attention_dropout_rate=attention_dropout_rate)
    inputs = {
        "input_ids": keras.Input(shape=(None,), dtype="int32", name="input_ids"),
        "attention_mask": keras.Input(shape=(None,), dtype="int32", name="attention_mask"),
    }
    features = encoder(inputs)["last_hidden_state"]
    logits = keras.layers.Dense(2)(features[:, 0, :])
    model = keras.Model(inputs, logits)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )

    rng = np.random.default_rng(0)
    ids = rng.integers(1, 50, size=(32, 8)).astype("int32")
    labels = (ids[:, 1] > 25).astype("int32")
    data = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    history = model.fit(data, labels, epochs=8, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] * 0.7
    assert model.predict(data, verbose=0).shape == (32, 2)


def test_encoder_predict_gives_the_call_outputs():
    encoder = DistilBERT(**TINY)
    inputs = batch()
    predicted = encoder.predict(inputs, verbose=0)
    np.testing.assert_allclose(
        predicted["last_hidden_state"], numpy_of(encoder(inputs)["last_hidden_state"]), atol=1e-6
    )


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ["call", "predict"])
def test_out_of_range_ids_raise(entry):
    encoder = DistilBERT(**TINY)
    inputs = batch()
    inputs["input_ids"][0, 2] = 50
    run = encoder if entry == "call" else (lambda x: encoder.predict(x, verbose=0))
    with pytest.raises(ValueError) as info:
        run(inputs)
    assert_mentions(info, "input_ids contains 50", "[0, 50)", "vocab_size=50")
    inputs["input_ids"][0, 2] = -1
    with pytest.raises(ValueError, match="input_ids contains -1"):
        run(inputs)


@pytest.mark.parametrize("entry", ["call", "predict"])
def test_too_long_sequences_raise(entry):
    encoder = DistilBERT(**TINY)
    inputs = batch(length=21)
    run = encoder if entry == "call" else (lambda x: encoder.predict(x, verbose=0))
    with pytest.raises(ValueError) as info:
        run(inputs)
    assert_mentions(info, "Sequence length 21", "max_position_embeddings=20")


@pytest.mark.parametrize("entry", ["call", "predict"])
def test_mask_of_another_shape_raises(entry):
    encoder = DistilBERT(**TINY)
    inputs = batch()
    inputs["attention_mask"] = inputs["attention_mask"][:, :4]
    run = encoder if entry == "call" else (lambda x: encoder.predict(x, verbose=0))
    with pytest.raises(ValueError) as info:
        run(inputs)
    assert_mentions(info, "attention_mask has shape (2, 4)", "input_ids has shape (2, 6)")


def test_unknown_input_names_raise():
    with pytest.raises(ValueError, match="Unknown DistilBERT inputs"):
        DistilBERT(**TINY)({"input_ids": np.ones((1, 3), "int32"), "segment_ids": np.ones((1, 3), "int32")})


# -- saving -----------------------------------------------------------------------------------
def test_keras_file_round_trip(tmp_path):
    encoder = DistilBERT(**TINY, sinusoidal_pos_embds=True, hidden_act="relu")
    path = tmp_path / "encoder.keras"
    encoder.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, DistilBERT) and loaded.config == encoder.config
    inputs = batch()
    np.testing.assert_array_equal(
        numpy_of(loaded(inputs)["last_hidden_state"]), numpy_of(encoder(inputs)["last_hidden_state"])
    )


def test_sinusoidal_positions_are_fixed():
    encoder = DistilBERT(**TINY, sinusoidal_pos_embds=True)
    assert not encoder.embeddings.position_embeddings.trainable
    table = numpy_of(encoder.embeddings.position_embeddings.embeddings)
    np.testing.assert_allclose(table[3, 0], np.sin(3.0), rtol=1e-6)
    np.testing.assert_allclose(table[3, 1], np.cos(3.0), rtol=1e-6)


# -- precision --------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_is_finite_and_close(policy):
    reference = DistilBERT(**TINY)
    inputs = batch()
    expected = numpy_of(reference(inputs)["last_hidden_state"])
    mixed = DistilBERT(**TINY, dtype=policy)
    mixed.set_weights(reference.get_weights())
    assert mixed.embeddings.layer_norm.dtype_policy.name == policy
    output = numpy_of(ops.cast(mixed(inputs)["last_hidden_state"], "float32"))
    assert np.isfinite(output).all()
    keep = inputs["attention_mask"].astype(bool)
    cosine = (output * expected).sum(-1) / (np.linalg.norm(output, axis=-1) * np.linalg.norm(expected, axis=-1))
    assert cosine[keep].min() > 0.999, cosine


# -- attention paths --------------------------------------------------------------------------
# Which of the two attention levers are on: fused attention (keras.ops.dot_product_attention) and one
# QKV matmul. The backend picks (`layers.use_fused_attention`, `layers.use_fused_qkv`); every
# combination must compute what the unfused path computes.
ATTENTION_PATHS = {"fused attention": (True, False), "fused qkv": (False, True), "both": (True, True)}


def set_attention_path(monkeypatch, fused_attention: bool, fused_qkv: bool) -> None:
    monkeypatch.setattr(layers, "use_fused_attention", lambda: fused_attention)
    monkeypatch.setattr(layers, "use_fused_qkv", lambda: fused_qkv)


def hidden_of(encoder, inputs, training=False):
    return numpy_of(ops.cast(encoder(inputs, training=training)["last_hidden_state"], "float32"))


@pytest.mark.parametrize("path", list(ATTENTION_PATHS))
@pytest.mark.parametrize(("policy", "tolerance"), [("float32", 1e-5), ("mixed_bfloat16", 0.1), ("mixed_float16", 1e-2)])
def test_fused_attention_paths_equal_the_unfused_path(monkeypatch, path, policy, tolerance):
    """Padding, a row with every token masked, and more padding after the real tokens, in each dtype."""
    encoder = DistilBERT(**{**TINY, "hidden_size": 32, "num_heads": 4}, dtype=policy)
    inputs = batch(length=8)  # row 1: half padding
    inputs["input_ids"] = np.concatenate([inputs["input_ids"], inputs["input_ids"][:1]])
    inputs["attention_mask"] = np.concatenate([inputs["attention_mask"], np.zeros((1, 8), "int32")])  # all masked
    longer = {key: np.pad(value, ((0, 0), (0, 5))) for key, value in inputs.items()}  # 5 more padded tokens
    set_attention_path(monkeypatch, False, False)
    expected = hidden_of(encoder, inputs)
    set_attention_path(monkeypatch, *ATTENTION_PATHS[path])
    output = hidden_of(encoder, inputs)
    padded_more = hidden_of(encoder, longer)[:, :8]
    assert np.isfinite(output).all() and np.isfinite(padded_more).all()
    np.testing.assert_allclose(output, expected, atol=tolerance, rtol=0)
    keep = inputs["attention_mask"].astype(bool)
    np.testing.assert_allclose(padded_more[keep], output[keep], atol=tolerance, rtol=0)


@pytest.mark.parametrize("path", list(ATTENTION_PATHS))
def test_attention_dropout_still_applies_in_training(monkeypatch, path):
    """The fused op has no dropout: training with attention dropout takes the unfused path, without it the fused."""
    set_attention_path(monkeypatch, *ATTENTION_PATHS[path])
    quiet = {**TINY, "dropout_rate": 0.0}
    with_dropout = DistilBERT(**quiet, attention_dropout_rate=0.5)
    inputs = batch()
    inference = hidden_of(with_dropout, inputs)
    first, second = hidden_of(with_dropout, inputs, training=True), hidden_of(with_dropout, inputs, training=True)
    assert not np.allclose(first, inference) and not np.allclose(first, second)
    without_dropout = DistilBERT(**quiet, attention_dropout_rate=0.0)
    np.testing.assert_allclose(
        hidden_of(without_dropout, inputs, training=True), hidden_of(without_dropout, inputs), atol=1e-6
    )


def _quantize_int8(encoder):
    encoder.quantize("int8")


def _lora_on_query(encoder):
    for block in encoder.transformer_layers:
        block.attention.q_lin.enable_lora(rank=2)
        block.attention.q_lin.lora_kernel_b.assign(np.full(block.attention.q_lin.lora_kernel_b.shape, 0.5, "float32"))


@pytest.mark.parametrize("change", [_quantize_int8, _lora_on_query], ids=["int8", "lora"])
def test_quantized_or_lora_projections_are_not_fused_away(monkeypatch, change):
    """q/k/v that are int8 or carry LoRA run through `dense_2d` (their own arithmetic), never the fused matmul."""
    encoder = DistilBERT(**TINY)
    inputs = batch()
    plain = hidden_of(encoder, inputs)
    change(encoder)
    set_attention_path(monkeypatch, False, False)
    expected = hidden_of(encoder, inputs)
    assert not np.allclose(expected, plain, atol=1e-6)  # the change matters, so fusing it away would show
    calls = []
    original = layers.dense_2d
    monkeypatch.setattr(layers, "dense_2d", lambda layer, *a: calls.append(layer.name) or original(layer, *a))
    set_attention_path(monkeypatch, True, True)
    np.testing.assert_allclose(hidden_of(encoder, inputs), expected, atol=1e-5)
    assert calls.count("q_lin") == calls.count("k_lin") == calls.count("v_lin") == TINY["num_layers"]


# -- pretrained -------------------------------------------------------------------------------
def test_no_published_weights_for_tiny_and_small():
    for variant in ("tiny", "small"):
        with pytest.raises(ValueError) as info:
            DistilBERT.from_variant(variant, pretrained=True)
        assert_mentions(info, "No published weights", f"'{variant}'")


def test_unreachable_hub_id_says_what_to_do(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    import importlib

    import huggingface_hub.constants

    importlib.reload(huggingface_hub.constants)
    try:
        with pytest.raises(ValueError) as error:
            DistilBERT.from_variant("base", pretrained=True)
    finally:
        monkeypatch.undo()
        importlib.reload(huggingface_hub.constants)
    message = str(error.value)
    assert "distilbert/distilbert-base-uncased" in message
    assert "hub could not be reached" in message and "local directory" in message


def test_missing_local_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        DistilBERT.from_pretrained(str(tmp_path / "nope"))


def test_vocab_size_override_skips_word_embeddings_with_one_warning(tmp_path):
    source = DistilBERT(**TINY)
    source.save_pretrained(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bigger = DistilBERT.from_pretrained(tmp_path, vocab_size=80)
    vocab_warnings = [w for w in caught if "Word embeddings not loaded" in str(w.message)]
    assert len(vocab_warnings) == 1
    assert bigger.load_report.skipped == ["embeddings.word_embeddings.weight"]
    np.testing.assert_array_equal(
        numpy_of(bigger.transformer_layers[1].ffn.lin2.kernel), numpy_of(source.transformer_layers[1].ffn.lin2.kernel)
    )


def test_from_variant_with_directory_and_keras_file(tmp_path):
    source = DistilBERT.from_variant("tiny", vocab_size=60)
    source.save_pretrained(tmp_path / "ckpt")
    source.save(tmp_path / "enc.keras")
    inputs = batch(vocab_size=60)
    expected = numpy_of(source(inputs)["last_hidden_state"])
    for pretrained in (str(tmp_path / "ckpt"), str(tmp_path / "enc.keras")):
        loaded = DistilBERT.from_variant("tiny", pretrained=pretrained)
        np.testing.assert_allclose(numpy_of(loaded(inputs)["last_hidden_state"]), expected, atol=1e-6)
    with pytest.raises(ValueError, match="not the 'small' variant"):
        DistilBERT.from_variant("small", pretrained=str(tmp_path / "ckpt"))
