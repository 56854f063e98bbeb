"""One export API: `distilbert_heads.export(model_or_path, out, format=...)` and ``distilbert-heads export
--format``, dispatching to each format's writer, with errors that name the formats a model can take."""

from __future__ import annotations

import json

import keras
import pytest
from helpers import TINY_ENCODER, assert_mentions

import distilbert_heads
from distilbert_heads import create_distilbert_with_head
from distilbert_heads.cli import main
from distilbert_heads.serving.export import FORMATS, ExportError, unsupported_heads
from distilbert_heads.text.tokenizer import DistilBertTokenizer

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="exports need TensorFlow")


@pytest.fixture(scope="module")
def sentiment_path(tmp_path_factory):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "bad", "film"]
    model = create_distilbert_with_head(
        task_type="sentiment",
        encoder_options={**TINY_ENCODER, "vocab_size": len(vocab)},
        tokenizer=DistilBertTokenizer.from_vocab(vocab),
    )
    path = tmp_path_factory.mktemp("export") / "sentiment.keras"
    model.save(path)
    return path


@pytest.mark.parametrize(
    ("format", "written"),
    [("saved_model_ids", "saved_model.pb"), ("hf", "config.json")],
)
def test_export_is_callable_and_writes_each_format(sentiment_path, tmp_path, format, written):
    out = distilbert_heads.export(sentiment_path, tmp_path / format, format=format)
    assert (out / written).is_file()


def test_the_0_1_module_path_still_imports_its_functions():
    import distilbert_heads.export as old

    assert old is distilbert_heads.export and callable(old) and callable(old.export_saved_model)


def test_unknown_format_names_the_formats(sentiment_path, tmp_path):
    with pytest.raises(ExportError) as error:
        distilbert_heads.export(sentiment_path, tmp_path / "x", format="tflite")
    assert_mentions(error.value, "'tflite'", *FORMATS)


def test_a_head_a_format_cannot_carry_names_the_formats_that_can(tmp_path):
    pytest.importorskip("distilbert_head_foo")
    model = create_distilbert_with_head(task_type="foo", encoder_options=TINY_ENCODER, head_options={"num_classes": 3})
    assert "foo" in unsupported_heads(model, "hf") and not unsupported_heads(model, "saved_model_ids")
    with pytest.raises(ExportError) as error:
        distilbert_heads.export(model, tmp_path / "hf", format="hf")
    assert_mentions(error.value, "foo", "saved_model_ids")
    assert not (tmp_path / "hf").exists()


def test_cli_export_takes_the_format_and_refuses_head_outside_hf(sentiment_path, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["export", "--model", str(sentiment_path), "--format", "hf", "--out", str(out)]) == 0
    assert "Hugging Face" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["architectures"] == ["DistilBertForSequenceClassification"]
    code = main(["export", "--model", str(sentiment_path), "--format", "onnx", "--head", "x", "--out", str(out)])
    assert code == 2 and "--format hf" in capsys.readouterr().err
