"""``export_onnx``: ONNX Runtime gives Keras' outputs at any batch and length; a bad export writes nothing."""

from __future__ import annotations

import json
import sys
from typing import Any

import keras
import numpy as np
import pytest
from helpers import TINY_ENCODER, assert_mentions, tiny_vocab

from distilbert_heads import TaskHead, cli, create_distilbert_with_head
from distilbert_heads.model.task_model import DistilBertTaskModel
from distilbert_heads.serving import onnx_export
from distilbert_heads.serving.export import ExportError
from distilbert_heads.serving.onnx_export import MODEL_FILE, QUANTIZE_MODES, export_onnx, unsupported_heads_onnx
from distilbert_heads.testing import sample_inputs
from distilbert_heads.text.tokenizer import DistilBertTokenizer

onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra: pip install 'distilbert-heads[onnx]'")
pytest.importorskip("tf2onnx", reason="the onnx extra: pip install 'distilbert-heads[onnx]'")
onnx = pytest.importorskip("onnx", reason="the onnx extra: pip install 'distilbert-heads[onnx]'")
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="ONNX export converts TF graphs")

# Every built-in head (classification, regression, token tags, QA span, pairs) and the example plugin.
HEADS = {
    "sentiment": {},
    "text_regression": {},
    "ner": {"labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]},
    "qa": {},
    "pairwise": {},
    "foo": {"labels": ["sports", "politics", "tech"]},
}
SHAPES = [(1, 5), (3, 17)]  # two batch sizes and lengths through one graph: both axes are dynamic


def tiny(task: str, **options: Any) -> DistilBertTaskModel:
    if task == "foo":
        pytest.importorskip("distilbert_head_foo", reason="the example plugin is not installed")
    tokenizer = DistilBertTokenizer.from_vocab(tiny_vocab(letters=True))
    return create_distilbert_with_head(task, encoder_options=TINY_ENCODER, tokenizer=tokenizer, **options)


def run_onnx(folder, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = onnxruntime.InferenceSession(str(folder / MODEL_FILE), providers=["CPUExecutionProvider"])
    return dict(zip([output.name for output in session.get_outputs()], session.run(None, inputs)))


def keras_outputs(model: DistilBertTaskModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        f"{head}__{name}": keras.ops.convert_to_numpy(value)
        for head, named in model(inputs, training=False).items()
        for name, value in named.items()
    }


@pytest.mark.parametrize("task", list(HEADS))
def test_every_head_gives_the_keras_outputs_at_any_batch_and_length(task, tmp_path):
    model = tiny(task, **HEADS[task])
    out = export_onnx(model, tmp_path / "onnx")

    session = onnxruntime.InferenceSession(str(out / MODEL_FILE), providers=["CPUExecutionProvider"])
    assert {i.name: i.shape for i in session.get_inputs()} == {
        "input_ids": ["batch", "sequence"],
        "attention_mask": ["batch", "sequence"],
    }
    for batch, length in SHAPES:
        inputs = sample_inputs(batch, length, seed=batch)
        got, expected = run_onnx(out, inputs), keras_outputs(model, inputs)
        assert sorted(got) == sorted(f"{h}__{o}" for h, names in model.output_keys.items() for o in names)
        for name, value in expected.items():
            assert got[name].shape == value.shape
            np.testing.assert_allclose(got[name], value, atol=1e-4, rtol=0, err_msg=f"{name} at {batch}x{length}")
    assert DistilBertTokenizer.from_pretrained(out / "tokenizer").get_vocab() == model.tokenizer.get_vocab()
    metadata = {prop.key: prop.value for prop in onnx.load(str(out / MODEL_FILE)).metadata_props}
    assert json.loads(metadata["distilbert_heads.heads"])[task]["task_type"] == model.heads[task].task_type


@pytest.mark.parametrize("dtype", ["bfloat16", "mixed_bfloat16"])
def test_low_precision_models_export_in_float32(dtype, tmp_path):
    model = tiny("sentiment").with_dtype(dtype)
    out = export_onnx(model, tmp_path / "onnx")

    inputs = sample_inputs(3, 11)
    got = run_onnx(out, inputs)["sentiment__logits"]
    assert got.dtype == np.float32
    # The float32 model with the same (exactly cast) weights is what the graph computes.
    expected = keras_outputs(model.with_dtype("float32"), inputs)["sentiment__logits"]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    metadata = {prop.key: prop.value for prop in onnx.load(str(out / MODEL_FILE)).metadata_props}
    assert metadata["distilbert_heads.trained_dtype_policy"] == dtype


def _occupied(path):
    path.mkdir()
    (path / "old.txt").write_text("a previous export", encoding="utf-8")
    return ["overwrite=True", str(path)]


def _a_file(path):
    path.write_text("not a folder", encoding="utf-8")
    return [str(path), "new output directory"]


@pytest.mark.parametrize("make_target", [_occupied, _a_file], ids=["occupied-folder", "file-in-the-way"])
def test_an_occupied_target_is_refused_and_kept(make_target, tmp_path):
    target = tmp_path / "onnx"
    facts = make_target(target)
    before = sorted(p.name for p in target.iterdir()) if target.is_dir() else target.read_text(encoding="utf-8")
    with pytest.raises(ExportError) as error:
        export_onnx(tiny("sentiment"), target)
    assert_mentions(error, *facts)
    after = sorted(p.name for p in target.iterdir()) if target.is_dir() else target.read_text(encoding="utf-8")
    assert after == before


def test_overwrite_replaces_the_folder_whole(tmp_path):
    target = tmp_path / "onnx"
    _occupied(target)
    export_onnx(tiny("sentiment"), target, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == [MODEL_FILE, "tokenizer"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]  # no temporary or old folder left


@pytest.mark.parametrize("module", ["tf2onnx", "onnx", "onnxruntime"])
def test_a_missing_converter_names_the_extra(module, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ExportError) as error:
        export_onnx(tiny("sentiment"), tmp_path / "onnx")
    assert_mentions(error, module, "distilbert-heads[onnx]")
    assert not (tmp_path / "onnx").exists()


def test_other_backends_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ExportError) as error:
        export_onnx(tiny("sentiment"), tmp_path / "onnx")
    assert_mentions(error, "TensorFlow backend", "KERAS_BACKEND=tensorflow", "'jax'")


class ErfinvHead(TaskHead):
    """A head whose call uses Erfinv, a TensorFlow op tf2onnx cannot convert."""

    task_types = ("erfinv_probe",)
    output_names = ("score",)

    def __init__(self, hidden_size: int, task_type: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        self.dense = keras.layers.Dense(1, name="dense")

    def call(self, hidden_states: Any, attention_mask: Any, training: bool | None = None) -> dict[str, Any]:
        return {"score": self.dense(keras.ops.erfinv(0.5 * keras.ops.tanh(hidden_states[:, 0, :])))}

    def default_losses(self) -> dict[str, Any]:
        return {"score": keras.losses.MeanSquaredError()}


def test_a_head_with_an_op_onnx_lacks_is_named_and_nothing_is_written(tmp_path):
    base = tiny("sentiment")
    probe = ErfinvHead(TINY_ENCODER["hidden_size"], "erfinv_probe", name="probe")
    model = DistilBertTaskModel(base.encoder, [base.heads["sentiment"], probe])

    assert set(unsupported_heads_onnx(model)) == {"probe"}
    assert_mentions(unsupported_heads_onnx(model)["probe"], "Erfinv")
    with pytest.raises(ExportError) as error:
        export_onnx(model, tmp_path / "onnx")
    assert_mentions(error, "'probe'", "Erfinv", "format='saved_model'")
    assert not (tmp_path / "onnx").exists()


def test_every_built_in_head_is_supported():
    for task, options in HEADS.items():
        assert unsupported_heads_onnx(tiny(task, **options)) == {}


def test_a_graph_that_disagrees_with_keras_is_not_written(tmp_path, monkeypatch):
    def erfc_as_erf(ctx, node, name, args):  # a wrong conversion: the check against Keras must catch it
        node.type = "Erf"

    monkeypatch.setattr(onnx_export, "_erfc_handler", erfc_as_erf)
    with pytest.raises(ExportError) as error:
        export_onnx(tiny("sentiment"), tmp_path / "onnx")
    assert_mentions(error, "sentiment__logits", "differs from Keras", "nothing was written")
    assert not (tmp_path / "onnx").exists()
    assert list(tmp_path.iterdir()) == []


# -- quantize="int8" ------------------------------------------------------------------------------------
# Bound on |int8 ONNX - float32 Keras| per value: atol + rtol * |value|. Each quantized matmul rounds its
# int8 weights by up to max|w|/254 and its uint8 activations by up to range/510, about 0.6% of the product's
# scale; the tiny model chains 6 (one encoder layer) plus the head's 1-2, so a few percent of logits of size
# 1-3, well under 0.05 (measured: 0.026 at most over every head). Masked QA positions (-1e9) are kept exactly.
INT8_ATOL, INT8_RTOL = 0.05, 0.02


def metadata_of(path) -> dict[str, str]:
    return {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}


@pytest.mark.parametrize("task", list(HEADS))
def test_int8_export_agrees_with_the_float32_keras_model_for_every_head(task, tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny(task, **HEADS[task])
    out = export_onnx(model, tmp_path / "onnx", quantize="int8")

    assert sorted(p.name for p in out.iterdir()) == [MODEL_FILE, "tokenizer"]  # no float32 scratch file left
    proto = onnx.load(str(out / MODEL_FILE))
    weights = {initializer.name: initializer for initializer in proto.graph.initializer}
    ops = [node.op_type for node in proto.graph.node]
    assert "MatMulInteger" in ops
    assert not [n.name for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] in weights]  # all quantized
    embeddings = [weights[n.input[0]] for n in proto.graph.node if n.op_type == "Gather" and n.input[0] in weights]
    assert embeddings and {e.data_type for e in embeddings} == {onnx.TensorProto.FLOAT}  # lookups stay float32
    compared_answers = 0
    for batch, length in SHAPES:
        inputs = sample_inputs(batch, length, seed=batch)
        got, expected = run_onnx(out, inputs), keras_outputs(model, inputs)
        assert sorted(got) == sorted(expected)
        for name, value in expected.items():
            where = f"{name} at {batch}x{length}"
            np.testing.assert_allclose(got[name], value, atol=INT8_ATOL, rtol=INT8_RTOL, err_msg=where)
            if value.shape[-1] > 1:  # scores over labels (or QA positions): the same answer unless near-tied
                top2 = np.sort(value, axis=-1)[..., -2:]
                clear = top2[..., 1] - top2[..., 0] > 2 * (INT8_ATOL + INT8_RTOL * np.abs(top2[..., 1]))
                np.testing.assert_array_equal(got[name].argmax(-1)[clear], value.argmax(-1)[clear], err_msg=where)
                compared_answers += int(clear.sum())
    assert compared_answers or task == "text_regression"  # the label comparison was not vacuous
    metadata = metadata_of(out / MODEL_FILE)
    assert metadata["distilbert_heads.quantization"] == "int8"
    assert json.loads(metadata["distilbert_heads.heads"])[task]["task_type"] == model.heads[task].task_type
    assert metadata["distilbert_heads.max_length"] == str(model.max_length)
    assert DistilBertTokenizer.from_pretrained(out / "tokenizer").get_vocab() == model.tokenizer.get_vocab()


def test_int8_file_is_much_smaller_than_the_float32_file(tmp_path):
    # Wider than the tiny config so the matmul weights (stored 4x smaller) dominate the file, as in DistilBERT.
    encoder = {**TINY_ENCODER, "hidden_size": 64, "intermediate_size": 256, "num_layers": 2, "num_heads": 4}
    tokenizer = DistilBertTokenizer.from_vocab(tiny_vocab(letters=True))
    model = create_distilbert_with_head("sentiment", encoder_options=encoder, tokenizer=tokenizer)
    float_size = (export_onnx(model, tmp_path / "float32") / MODEL_FILE).stat().st_size
    int8_size = (export_onnx(model, tmp_path / "int8", quantize="int8") / MODEL_FILE).stat().st_size
    # ~90% of the parameters are matmul weights: about 0.3x; 0.5x leaves room for the quantization nodes.
    assert int8_size < 0.5 * float_size, (int8_size, float_size)
    assert metadata_of(tmp_path / "float32" / MODEL_FILE)["distilbert_heads.quantization"] == "none"


KERAS_INT8_FACTS = ["already quantized", "int8", "float32 model", "quantize='int8'"]
# case -> (model, quantize=, facts the error states)
REFUSED = {
    "keras-int8-to-int8": (lambda: tiny("sentiment").with_dtype("int8"), "int8", KERAS_INT8_FACTS),
    "keras-int8-to-float32": (lambda: tiny("sentiment").with_dtype("int8"), None, KERAS_INT8_FACTS),
    "int4": (lambda: tiny("sentiment"), "int4", ["'int4'", "'int8'", "--quantize int8"]),
    "upper-case": (lambda: tiny("sentiment"), "INT8", ["'INT8'", "'int8'"]),
    "a-number": (lambda: tiny("sentiment"), 8, ["8", "'int8'"]),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_int8_export_says_why_and_writes_nothing(case, tmp_path):
    make_model, quantize, facts = REFUSED[case]
    with pytest.raises(ExportError) as error:
        export_onnx(make_model(), tmp_path / "onnx", quantize=quantize)
    assert_mentions(error, *facts)
    assert list(tmp_path.iterdir()) == []


def test_missing_quantization_tools_name_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)  # makes the import raise ImportError
    with pytest.raises(ExportError) as error:
        export_onnx(tiny("sentiment"), tmp_path / "onnx", quantize="int8")
    assert_mentions(error, "onnxruntime.quantization", "distilbert-heads[onnx]", "quantize='int8'")
    assert list(tmp_path.iterdir()) == []


def test_an_int8_graph_outside_the_check_bound_is_not_written(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "INT8_TOLERANCE", 0.0)  # any quantization error now fails the check
    with pytest.raises(ExportError) as error:
        export_onnx(tiny("sentiment"), tmp_path / "onnx", quantize="int8")
    assert_mentions(error, "'sentiment__logits' (int8)", "differs from Keras", "nothing was written", "float32")
    assert list(tmp_path.iterdir()) == []


def test_the_cli_writes_an_int8_onnx_file_and_refuses_it_for_other_formats(tmp_path, capsys):
    model = tiny("ner", **HEADS["ner"])
    model.save(tmp_path / "ner.keras")
    out = tmp_path / "onnx-int8"
    argv = ["export", "--model", str(tmp_path / "ner.keras"), "--format", "onnx", "--out", str(out)]
    assert cli.main([*argv, "--quantize", "int8"]) == 0, capsys.readouterr().err
    assert str(out) in capsys.readouterr().out
    assert metadata_of(out / MODEL_FILE)["distilbert_heads.quantization"] == "int8"
    inputs = sample_inputs(2, 7)
    np.testing.assert_allclose(
        run_onnx(out, inputs)["ner__logits"],
        keras_outputs(model, inputs)["ner__logits"],
        atol=INT8_ATOL,
        rtol=INT8_RTOL,
    )

    hf = ["export", "--model", str(tmp_path / "ner.keras"), "--format", "hf", "--out", str(tmp_path / "hf")]
    assert cli.main([*hf, "--quantize", "int8"]) == 2
    assert_mentions(capsys.readouterr().err, "--quantize", "--format onnx", "--format hf")
    assert cli.main([*argv, "--overwrite", "--quantize", "int4"]) == 2
    assert_mentions(capsys.readouterr().err, "int4", *QUANTIZE_MODES)
    assert not (tmp_path / "hf").exists()
