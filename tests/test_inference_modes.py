"""The encoder's inference modes: the bf16 policy the benchmarks document, and the fast projection
path (`layers.dense_2d`) keeping Keras' own Dense behaviour where it matters (quantization)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hf_reference import make_hf_model, random_batch, save_hf_model
from keras import ops

from distilbert_heads import DistilBERT


def _per_token_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.mark.parametrize(("policy", "weights"), [("mixed_bfloat16", "float32"), ("bfloat16", "bfloat16")])
def test_bf16_modes_match_float32_per_token(tmp_path, policy, weights):
    directory = save_hf_model(make_hf_model(dim=64, n_heads=4, hidden_dim=128, n_layers=2), tmp_path)
    full = DistilBERT.from_pretrained(directory)
    low = DistilBERT.from_pretrained(directory, dtype=policy)
    ids, mask = random_batch(97, batch=4, length=24)
    mask[0] = 0  # a fully masked row must stay finite in bf16 too
    inputs = {"input_ids": ids, "attention_mask": mask}

    reference = ops.convert_to_numpy(full(inputs)["last_hidden_state"])
    output = low(inputs)["last_hidden_state"]
    assert "bfloat16" in str(output.dtype)
    output = ops.convert_to_numpy(ops.cast(output, "float32"))

    assert np.isfinite(output).all()
    keep = mask.astype(bool)
    cosine = _per_token_cosine(output, reference)[keep]
    assert cosine.min() >= 0.999, cosine.min()
    assert low.compute_dtype == "bfloat16"
    assert {str(w.dtype) for w in low.weights} == {weights}


def test_quantized_projections_run_their_own_call():
    """`dense_2d` reads kernels directly for speed; an int8-quantized Dense must still dequantize."""
    encoder = DistilBERT(
        vocab_size=50, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=48, max_position_embeddings=20
    )
    inputs = {"input_ids": np.array([[1, 5, 7, 9, 11, 3]], dtype="int32"), "attention_mask": np.ones((1, 6), "int32")}
    reference = ops.convert_to_numpy(encoder(inputs)["last_hidden_state"])

    encoder.quantize("int8")
    assert encoder.transformer_layers[0].ffn.lin1.quantization_mode == "int8"
    output = ops.convert_to_numpy(encoder(inputs)["last_hidden_state"])

    assert _per_token_cosine(output, reference).min() > 0.99


def test_task_model_in_bfloat16_keeps_its_policy_through_save_and_load(tmp_path):
    import keras

    from distilbert_heads import create_distilbert_with_head

    model = create_distilbert_with_head(
        task_type="sentiment", distilbert_variant="tiny", vocab_size=60, num_layers=1, dtype="mixed_bfloat16"
    )
    assert model.encoder.dtype_policy.name == "mixed_bfloat16"
    assert model.heads["sentiment"].dtype_policy.name == "mixed_bfloat16"
    inputs = {"input_ids": np.arange(1, 13, dtype="int32").reshape(2, 6), "attention_mask": np.ones((2, 6), "int32")}
    expected = model.predict(inputs, verbose=0)["sentiment"]["logits"]
    model.save(tmp_path / "bf16.keras")
    reloaded = keras.models.load_model(tmp_path / "bf16.keras")
    assert reloaded.encoder.dtype_policy.name == "mixed_bfloat16"
    np.testing.assert_array_equal(reloaded.predict(inputs, verbose=0)["sentiment"]["logits"], expected)


def test_compiling_a_model_with_bfloat16_weights_warns_and_names_the_training_policy():
    from distilbert_heads import create_distilbert_with_head

    options = {"task_type": "sentiment", "distilbert_variant": "tiny", "vocab_size": 60, "num_layers": 1}
    inference_model = create_distilbert_with_head(**options, dtype="bfloat16")
    with pytest.warns(UserWarning, match="dtype='mixed_bfloat16'"):
        inference_model.compile(optimizer="adam")

    training_model = create_distilbert_with_head(**options, dtype="mixed_bfloat16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        training_model.compile(optimizer="adam")


def test_with_dtype_serves_a_trained_float32_model_in_bfloat16(tmp_path):
    from distilbert_heads import create_distilbert_with_head, pipeline
    from distilbert_heads.text.tokenizer import DistilBertTokenizer

    texts = ["a good film", "a bad film", "good food and good music", "bad food"]
    tokenizer = DistilBertTokenizer.train_from_texts(texts * 5, vocab_size=40)
    model = create_distilbert_with_head(
        task_type="sentiment",
        distilbert_variant="tiny",
        vocab_size=tokenizer.vocab_size,
        num_layers=1,
        tokenizer=tokenizer,
    )
    serving = model.with_dtype("bfloat16")

    assert {str(w.dtype) for w in serving.weights} == {"bfloat16"}
    assert {str(w.dtype) for w in model.weights} == {"float32"}, "the original model is left as it was"
    assert serving.tokenizer is model.tokenizer
    assert model.with_dtype("float32") is model
    inputs = {"input_ids": np.arange(1, 13, dtype="int32").reshape(2, 6), "attention_mask": np.ones((2, 6), "int32")}
    reference = model.predict(inputs, verbose=0)["sentiment"]["logits"]
    low = serving.predict(inputs, verbose=0)["sentiment"]["logits"].astype("float32")
    np.testing.assert_allclose(low, reference, atol=0.05)

    model.save(tmp_path / "float32.keras")
    full_answers = pipeline(tmp_path / "float32.keras")(texts)
    low_answers = pipeline(tmp_path / "float32.keras", dtype="bfloat16")(texts)
    for full, fast in zip(full_answers, low_answers, strict=True):
        assert abs(full["score"] - fast["score"]) < 0.02

    with pytest.raises(ValueError, match="Unknown dtype policy 'float8'"):
        model.with_dtype("float8")
