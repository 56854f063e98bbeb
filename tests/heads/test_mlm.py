"""The masked-LM head: the tie to the word embeddings, Hugging Face parity both ways, training from
plain text with dynamic masking, and fill-mask answers equal to transformers' pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import TINY_TRAINING, assert_mentions, tiny_vocab
from hf_reference import hf_forward, make_hf_model, random_batch, save_hf_model

import distilbert_heads
from distilbert_heads import create_distilbert_with_head
from distilbert_heads.cli import main
from distilbert_heads.heads.mlm import MaskedLMHead
from distilbert_heads.losses import IGNORE_INDEX
from distilbert_heads.plugins.head import DistillationTarget, distillation_targets_of
from distilbert_heads.plugins.registry import get_head
from distilbert_heads.text.tokenizer import DistilBertTokenizer
from distilbert_heads.training import train
from distilbert_heads.training.data_files import DataFileError, read_examples
from distilbert_heads.training.evaluation import loss_on_file
from distilbert_heads.training.streaming import ExampleEncoder, TrainingStream

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WORDS = ["paris", "is", "the", "capital", "of", "france", "cat", "sat", "on", "mat", "dog", "log", "."]
HF_VOCAB = 97  # hf_reference's tiny config; the vocabulary below fills it exactly
SENTENCES = ["the cat sat on the mat", "the dog sat on the log", "a bird sang in the tree", "the sun is hot"]


def tiny_tokenizer_words() -> list[str]:
    vocab = tiny_vocab(WORDS, letters=True, letter_pieces=True)
    filler = [f"w{i}" for i in range(HF_VOCAB - len(vocab))]
    return tiny_vocab([*WORDS, *filler], letters=True, letter_pieces=True)


@pytest.fixture(scope="module")
def tokenizer() -> DistilBertTokenizer:
    return DistilBertTokenizer.from_vocab(tiny_tokenizer_words())


def lively(model, *parameters: str, seed: int = 7) -> None:
    """Random values for head parameters that start at constants, so parity tests see every weight."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in parameters:
            parameter = model.get_parameter(name)
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5 + (name.endswith("weight")))


def tiny_bert_mlm(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=HF_VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=2,
    )
    model = transformers.BertForMaskedLM(config).eval()
    lively(model, "cls.predictions.bias", "cls.predictions.transform.LayerNorm.weight")
    return model


def tiny_distilbert_mlm(seed: int = 0):
    model = make_hf_model("DistilBertForMaskedLM", seed=seed)
    lively(model, "vocab_projector.bias", "vocab_layer_norm.weight", "vocab_layer_norm.bias")
    return model


HF_MODELS = {"DistilBertForMaskedLM": tiny_distilbert_mlm, "BertForMaskedLM": tiny_bert_mlm}


@pytest.fixture(scope="module")
def distil_dir(tmp_path_factory, tokenizer) -> Path:
    directory = save_hf_model(tiny_distilbert_mlm(), tmp_path_factory.mktemp("distil_mlm"))
    tokenizer.save(directory)
    return directory


def ours(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model({"input_ids": ids, "attention_mask": mask})["mlm"]["logits"]))


# -- registration and contract ------------------------------------------------------------------------
def test_served_as_masked_language_modeling_and_mlm_and_declares_token_row_distillation():
    record = get_head("mlm")
    assert record.head_class is MaskedLMHead and record.builtin
    assert get_head("masked_language_modeling").head_class is MaskedLMHead
    model = create_distilbert_with_head("mlm", **TINY_TRAINING, vocab_size=40)
    assert distillation_targets_of(model.heads["mlm"]) == {
        "logits": DistillationTarget(kind="logits", axis=-1, tokens="rows")
    }
    ids = np.array([[2, 7, 9, 3, 0]], dtype="int32")
    logits = ours(model, ids, (ids != 0).astype("int32"))
    assert logits.shape == (1, 5, 40)


def test_the_heads_command_lists_it(capsys):
    assert main(["heads"]) == 0
    listing = capsys.readouterr().out
    assert "masked_language_modeling" in listing and "mlm" in listing


def test_projector_is_the_embedding_variable_trained_once():
    model = create_distilbert_with_head("mlm", **TINY_TRAINING, vocab_size=40)
    head, embedding = model.heads["mlm"], model.encoder.embeddings.word_embeddings.embeddings
    assert head.word_embeddings is embedding
    assert all(weight is not embedding for weight in head.weights)  # the encoder owns it, not the head
    assert sum(variable is embedding for variable in model.trainable_variables) == 1
    ids = np.array([[2, 7, 9, 3]], dtype="int32")
    mask = np.ones_like(ids)
    embedding.assign(np.zeros(embedding.shape, dtype="float32"))
    bias = keras.ops.convert_to_numpy(head.vocab_projector_bias)
    np.testing.assert_allclose(ours(model, ids, mask), np.broadcast_to(bias, (1, 4, 40)), atol=1e-6)


def test_a_head_outside_a_model_says_it_needs_the_encoder():
    head = MaskedLMHead(hidden_size=16, task_type="masked_language_modeling", name="mlm")
    with pytest.raises(ValueError) as error:
        head(np.zeros((1, 3, 16), "float32"), np.ones((1, 3), "int32"))
    assert_mentions(error, "word embeddings", "create_distilbert_with_head('mlm'")


# -- Hugging Face checkpoints ---------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", sorted(HF_MODELS))
@pytest.mark.parametrize("padding", ["right", "left"])
def test_checkpoint_logits_equal_transformers(tmp_path, model_class, padding):
    reference = HF_MODELS[model_class]()
    save_hf_model(reference, tmp_path)
    model = create_distilbert_with_head("mlm", pretrained=str(tmp_path))
    ids, mask = random_batch(HF_VOCAB, batch=3, length=11, padding=padding)
    keep = mask.astype(bool)
    expected = hf_forward(reference, ids, mask).logits.numpy()
    np.testing.assert_allclose(ours(model, ids, mask)[keep], expected[keep], atol=1e-5, rtol=0)


def test_save_pretrained_loads_in_transformers_with_equal_logits(tmp_path, distil_dir, tokenizer):
    model = create_distilbert_with_head("mlm", pretrained=str(distil_dir), tokenizer=tokenizer)
    # A trained-looking head: weights away from the checkpoint's, so the comparison sees ours.
    head = model.heads["mlm"]
    head.vocab_projector_bias.assign(np.linspace(-1, 1, HF_VOCAB).astype("float32"))
    out = model.save_pretrained(tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["DistilBertForMaskedLM"]
    assert "fill-mask" in (out / "README.md").read_text()
    reloaded = transformers.DistilBertForMaskedLM.from_pretrained(out).eval()
    assert (
        reloaded.vocab_projector.weight.data_ptr() == reloaded.distilbert.embeddings.word_embeddings.weight.data_ptr()
    )
    ids, mask = random_batch(HF_VOCAB, batch=3, length=11)
    keep = mask.astype(bool)
    expected = hf_forward(reloaded, ids, mask).logits.numpy()
    np.testing.assert_allclose(ours(model, ids, mask)[keep], expected[keep], atol=1e-5, rtol=0)


def test_untied_or_truncated_checkpoint_heads_are_refused(tmp_path):
    state = {key: value.detach().numpy() for key, value in tiny_distilbert_mlm().state_dict().items() if "vocab" in key}
    model = create_distilbert_with_head(
        "mlm", **{**TINY_TRAINING, "hidden_size": 32, "num_heads": 4}, vocab_size=HF_VOCAB
    )
    untied = {**state, "vocab_projector.weight": np.ones((HF_VOCAB, 32), "float32")}
    with pytest.raises(ValueError) as error:
        model.heads["mlm"].load_hf_head_weights(untied)
    assert_mentions(error, "vocab_projector.weight", "tie_word_embeddings=False")
    truncated = {key: value for key, value in state.items() if key != "vocab_projector.bias"}
    with pytest.raises(ValueError) as error:
        model.heads["mlm"].load_hf_head_weights(truncated)
    assert_mentions(error, "vocab_projector.bias", "truncated")
    assert model.heads["mlm"].load_hf_head_weights({"classifier.weight": np.zeros((2, 32))}) is False


# -- fill-mask --------------------------------------------------------------------------------------------
FILL_MASK_INPUTS = [
    "paris is the [MASK] of france .",
    "the [MASK] sat on the [MASK] .",
    "[MASK]",
]


def test_fill_mask_equals_transformers_pipeline(distil_dir, tokenizer):
    model = create_distilbert_with_head("mlm", pretrained=str(distil_dir), tokenizer=tokenizer)
    pipe = distilbert_heads.pipeline(model)
    reference = transformers.pipeline(
        "fill-mask",
        model=transformers.DistilBertForMaskedLM.from_pretrained(distil_dir).eval(),
        tokenizer=transformers.DistilBertTokenizerFast.from_pretrained(distil_dir),
    )

    def same(answer, expected) -> None:
        if expected and isinstance(expected[0], list):  # several masks: a list per mask
            assert len(answer) == len(expected)
            for one, other in zip(answer, expected):
                same(one, other)
            return
        assert [a["token"] for a in answer] == [e["token"] for e in expected]
        assert [a["token_str"] for a in answer] == [e["token_str"] for e in expected]
        assert [a["sequence"] for a in answer] == [e["sequence"] for e in expected]
        np.testing.assert_allclose([a["score"] for a in answer], [e["score"] for e in expected], atol=1e-5)

    for text in FILL_MASK_INPUTS:
        for top_k in (1, 5):
            same(pipe(text, top_k=top_k), reference(text, top_k=top_k))
    batch = pipe(FILL_MASK_INPUTS, top_k=3)
    for answer, text in zip(batch, FILL_MASK_INPUTS):
        same(answer, reference(text, top_k=3))


@pytest.mark.parametrize(
    "inputs",
    ["paris is the capital of france .", "", "paris is the [mask] of france .", ["the [MASK] sat .", "no mask"]],
    ids=["no-mask", "empty", "lowercase-mask", "one-of-two-lacks-it"],
)
def test_text_without_the_mask_token_is_refused_saying_to_put_it(distil_dir, tokenizer, inputs):
    pipe = distilbert_heads.pipeline(
        create_distilbert_with_head("mlm", pretrained=str(distil_dir), tokenizer=tokenizer)
    )
    with pytest.raises(ValueError) as error:
        pipe(inputs)
    assert_mentions(error, "[MASK]", "mask token")


# -- training from plain text -----------------------------------------------------------------------------
def write_corpus(directory: Path, repeats: int) -> Path:
    path = directory / f"corpus{repeats}.txt"
    path.write_text("\n\n".join(SENTENCES * repeats) + "\n\n   \n", encoding="utf-8")
    return path


def test_txt_files_give_one_text_row_per_non_blank_line_with_line_numbers(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"\xef\xbb\xbffirst line\r\n\n   \nsecond  line \n\tthird\n")
    examples = read_examples(path, MaskedLMHead.example_schema)
    assert [example.text for example in examples] == ["first line", "second  line ", "\tthird"]
    path.write_bytes(b"ok\n\xff\xfe broken\n")
    with pytest.raises(DataFileError) as error:
        read_examples(path, MaskedLMHead.example_schema)
    assert_mentions(error, "corpus.txt line 2", "UTF-8")
    sentiment = get_head("sentiment").head_class.example_schema
    with pytest.raises(DataFileError) as error:
        read_examples(path, sentiment, "task 'sentiment_analysis'")
    assert_mentions(error, "corpus.txt", "label", ".jsonl", ".csv")


def test_masks_differ_between_epochs_and_repeat_with_the_seed(tmp_path, tokenizer):
    model = create_distilbert_with_head("mlm", **TINY_TRAINING, vocab_size=HF_VOCAB)
    head = model.heads["mlm"]
    corpus = write_corpus(tmp_path, 4)

    def batches(seed: int, epoch: int) -> list:
        encoder = ExampleEncoder(head, tokenizer, 32, corpus)
        stream = TrainingStream(
            corpus, head.example_schema, "mlm", encoder, head_name="mlm", batch_size=4, seed=seed, shuffle_buffer=1
        )
        return list(stream.batches(epoch))

    first, again, later = batches(0, 0), batches(0, 0), batches(0, 1)
    for (x, y), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x["input_ids"], x2["input_ids"])
        np.testing.assert_array_equal(y["mlm"]["logits"], y2["mlm"]["logits"])
    labels = [y["mlm"]["logits"] for _, y in first]
    assert any((label != IGNORE_INDEX).any() for label in labels)
    assert any(
        not np.array_equal(y["mlm"]["logits"], y_later["mlm"]["logits"]) for (_, y), (_, y_later) in zip(first, later)
    )
    for x, y in first:  # the labels are the original ids of the chosen tokens, never specials or padding
        chosen = y["mlm"]["logits"] != IGNORE_INDEX
        assert not (chosen & (x["attention_mask"] == 0)).any()
        assert not np.isin(y["mlm"]["logits"][chosen], [0, 1, 2, 3, 4]).any()


def test_training_on_a_text_file_lowers_the_held_out_loss_and_reloads_in_a_fresh_process(tmp_path, tokenizer):
    train_file, eval_file = write_corpus(tmp_path, 16), write_corpus(tmp_path, 2)
    out = tmp_path / "mlm.keras"
    result = train(
        "mlm",
        train_file,
        eval_file=eval_file,
        epochs=4,
        batch_size=16,
        learning_rate=3e-3,
        max_length=32,
        tokenizer=tokenizer,
        out=out,
        verbose=0,
        seed=0,
        patience=0,
        **TINY_TRAINING,
    )
    held_out = result.history["val_loss"]
    assert held_out[-1] < held_out[0] - 0.2, held_out
    assert "val_masked_accuracy" in result.history
    model = keras.models.load_model(out)
    # Held-out scoring masks with a fixed seed: scoring twice gives the same numbers.
    scores = [
        loss_on_file(model, eval_file, head="mlm", tokenizer=model.tokenizer, batch_size=8, max_length=32)
        for _ in range(2)
    ]
    assert scores[0] == scores[1] and set(scores[0]) == {"loss", "masked_accuracy"}

    ids, mask = random_batch(HF_VOCAB, batch=2, length=9)
    script = (
        "import sys, json, numpy as np, keras\n"
        "import distilbert_heads\n"
        "model = keras.models.load_model(sys.argv[1])\n"
        "head = model.heads['mlm']\n"
        "tied = head.word_embeddings is model.encoder.embeddings.word_embeddings.embeddings\n"
        "data = np.load(sys.argv[2])\n"
        "logits = keras.ops.convert_to_numpy(model({'input_ids': data['ids'], 'attention_mask': data['mask']})"
        "['mlm']['logits'])\n"
        "np.save(sys.argv[3], logits)\n"
        "owned = any(w is model.encoder.embeddings.word_embeddings.embeddings for w in head.weights)\n"
        "print(json.dumps({'tied': tied, 'owned_by_head': owned}))\n"
    )
    np.savez(tmp_path / "inputs.npz", ids=ids, mask=mask)
    completed = subprocess.run(
        [sys.executable, "-c", script, str(out), str(tmp_path / "inputs.npz"), str(tmp_path / "logits.npy")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == {"tied": True, "owned_by_head": False}
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), ours(model, ids, mask), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_command_line_trains_from_a_text_file(tmp_path, capsys):
    train_file = write_corpus(tmp_path, 4)
    out = tmp_path / "cli.keras"
    code = main(
        ["train", "--task", "mlm", "--train", str(train_file), "--epochs", "1", "--batch-size", "8"]
        + ["--max-length", "32", "--vocab-size", "120", "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    model = keras.models.load_model(out)
    assert type(model.heads["mlm"]) is MaskedLMHead
