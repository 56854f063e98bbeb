"""Our encoder against `transformers.DistilBertModel`: same weights, same numbers (float32)."""

from __future__ import annotations

import numpy as np
import pytest
from hf_reference import hf_forward, make_hf_model, random_batch, save_hf_model
from keras import ops

from distilbert_heads import DistilBERT

TOLERANCE = 1e-5

CONFIGS = {
    "learned-gelu": {},
    "sinusoidal": {"sinusoidal_pos_embds": True},
    "odd-sizes-relu": {"dim": 30, "n_heads": 5, "hidden_dim": 19, "activation": "relu", "vocab_size": 131},
    "three-layers-gelu-new": {"n_layers": 3, "dim": 24, "n_heads": 2, "hidden_dim": 50, "activation": "gelu_new"},
    "single-head": {"n_heads": 1, "dim": 8, "hidden_dim": 16, "n_layers": 1},
}


def assert_close_on_real_tokens(ours: np.ndarray, theirs: np.ndarray, mask: np.ndarray) -> None:
    keep = mask.astype(bool)
    difference = np.abs(np.asarray(ours)[keep] - np.asarray(theirs)[keep]).max()
    assert difference <= TOLERANCE, f"max abs difference {difference:.3g} on unpadded positions"


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("padding", ["right", "left"])
def test_matches_transformers(tmp_path, name, padding):
    reference = make_hf_model(**CONFIGS[name])
    encoder = DistilBERT.from_pretrained(save_hf_model(reference, tmp_path))
    ids, mask = random_batch(reference.config.vocab_size, padding=padding)

    ours = encoder({"input_ids": ids, "attention_mask": mask}, output_hidden_states=True)
    theirs = hf_forward(reference, ids, mask, output_hidden_states=True)

    assert not encoder.load_report.missing and not encoder.load_report.unused
    assert_close_on_real_tokens(ops.convert_to_numpy(ours["last_hidden_state"]), theirs.last_hidden_state.numpy(), mask)
    assert len(ours["hidden_states"]) == reference.config.n_layers + 1 == len(theirs.hidden_states)
    for layer, (mine, reference_states) in enumerate(zip(ours["hidden_states"], theirs.hidden_states)):
        assert_close_on_real_tokens(ops.convert_to_numpy(mine), reference_states.numpy(), mask), layer


@pytest.mark.parametrize("name", ["learned-gelu", "sinusoidal", "odd-sizes-relu"])
def test_save_pretrained_loads_in_transformers(tmp_path, name):
    transformers = pytest.importorskip("transformers")
    reference = make_hf_model(**CONFIGS[name])
    encoder = DistilBERT.from_pretrained(save_hf_model(reference, tmp_path / "in"))
    # Change every weight so the round trip cannot pass by reloading the original file.
    for variable in encoder.trainable_weights:
        variable.assign(variable + 0.01)
    encoder.save_pretrained(tmp_path / "out")

    reloaded, info = transformers.DistilBertModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, mask = random_batch(reference.config.vocab_size, padding="right", seed=7)
    ours = encoder({"input_ids": ids, "attention_mask": mask})["last_hidden_state"]
    theirs = hf_forward(reloaded.eval(), ids, mask).last_hidden_state.numpy()
    assert_close_on_real_tokens(ops.convert_to_numpy(ours), theirs, mask)


def test_loads_pytorch_bin_with_legacy_layer_norm_names(tmp_path):
    import torch

    reference = make_hf_model()
    reference.config.save_pretrained(tmp_path)
    legacy = {
        key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): value
        for key, value in reference.state_dict().items()
    }
    assert any(key.endswith(".gamma") for key in legacy)
    torch.save(legacy, tmp_path / "pytorch_model.bin")

    encoder = DistilBERT.from_pretrained(tmp_path)
    assert not encoder.load_report.missing
    ids, mask = random_batch(reference.config.vocab_size)
    assert_close_on_real_tokens(
        ops.convert_to_numpy(encoder({"input_ids": ids, "attention_mask": mask})["last_hidden_state"]),
        hf_forward(reference, ids, mask).last_hidden_state.numpy(),
        mask,
    )


@pytest.mark.parametrize(
    "model_class",
    [
        "DistilBertForMaskedLM",
        "DistilBertForSequenceClassification",
        "DistilBertForTokenClassification",
        "DistilBertForQuestionAnswering",
    ],
)
def test_task_checkpoints_give_their_encoder(tmp_path, model_class):
    reference = make_hf_model(model_class)
    encoder = DistilBERT.from_pretrained(save_hf_model(reference, tmp_path))
    assert not encoder.load_report.missing
    assert encoder.load_report.unused, "head weights should be reported as unused by the bare encoder"
    assert all(not key.startswith("distilbert.") for key in encoder.load_report.unused)
    ids, mask = random_batch(reference.config.vocab_size)
    assert_close_on_real_tokens(
        ops.convert_to_numpy(encoder({"input_ids": ids, "attention_mask": mask})["last_hidden_state"]),
        hf_forward(reference.distilbert, ids, mask).last_hidden_state.numpy(),
        mask,
    )
