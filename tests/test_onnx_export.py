"""``export_onnx``: ONNX Runtime gives Keras' outputs at any batch and length; a bad export writes nothing."""

from __future__ import annotations

import json
import sys
from typing import Any

import keras
import numpy as np
import pytest
from helpers import TINY_ENCODER, assert_mentions, tiny_vocab

from distilbert_heads import TaskHead, create_distilbert_with_head
from distilbert_heads.model.task_model import DistilBertTaskModel
from distilbert_heads.serving import onnx_export
from distilbert_heads.serving.export import ExportError
from distilbert_heads.serving.onnx_export import MODEL_FILE, export_onnx, unsupported_heads_onnx
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
