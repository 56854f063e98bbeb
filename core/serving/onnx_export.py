"""Export a task model as an ONNX graph for ONNX Runtime (`export_onnx`).

The graph takes int32 ``input_ids`` and ``attention_mask`` of shape (batch, length),
both axes dynamic, and returns every head output as float32, named ``<head>__<output>`` like the
SavedModel export. Tokenization is not part of the graph: the tokenizer's files go to
``<out>/tokenizer/``.

Converter: tf2onnx on a ``tf.function`` of the model (TensorFlow backend). Keras'
``model.export(format="onnx")`` uses the same tf2onnx on TensorFlow but hands it the model's nested
``{head: {output: tensor}}`` outputs, which tf2onnx 1.17 cannot name (it fails with "'dict' object
has no attribute 'name'"); on JAX it needs jax2onnx and on PyTorch it fixes every dynamic axis to
a size of 1. Calling tf2onnx ourselves gives flat output names, dynamic batch and length, and a
handler for TensorFlow's ``Erfc`` (exact GELU), which tf2onnx 1.17 does not convert.

Every export is checked before it is moved into place: ONNX Runtime runs the graph on a padded
batch and each output must equal Keras' within `TOLERANCE`, or nothing is written.

``quantize="int8"`` then runs ONNX Runtime's dynamic quantization on the checked float32 graph
(`quantize_int8`: int8 weights, activations quantized per call) and checks the int8 graph against
Keras' float32 outputs (each value within `INT8_TOLERANCE` times max(1, |value|)) before the folder
is moved into place.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import keras
import numpy as np

from distilbert_heads import __version__, atomic
from distilbert_heads.model.task_model import DistilBertTaskModel, _stacked_rows, flat_output_key
from distilbert_heads.serving.export import (
    TOKENIZER_DIR,
    ExportError,
    check_export_folder,
    ids_serving_function,
    signature_output_name,
)

__all__ = [
    "INT8_TOLERANCE",
    "MODEL_FILE",
    "QUANTIZE_MODES",
    "TOLERANCE",
    "export_onnx",
    "quantize_int8",
    "unsupported_heads_onnx",
]

MODEL_FILE = "model.onnx"
TOLERANCE = 1e-4  # largest |ONNX Runtime - Keras| allowed on any output when an export is checked
QUANTIZE_MODES = ("int8",)  # `export_onnx(quantize=...)`; None exports float32
# Largest |int8 ONNX - float32 Keras| allowed on an output value when an int8 export is checked, as a fraction
# of that value's size (at least 1): a gross-failure check (a broken graph, NaN, a wrong sign), not an accuracy
# claim; dynamic int8 stays within a few percent (tests/test_onnx_export.py). Per value, not per output: QA
# logits hold -1e9 at masked positions, which would make any per-output scale meaningless.
INT8_TOLERANCE = 0.2
_FLOAT_SCRATCH = ".float32.onnx"  # the checked float32 graph, quantized into MODEL_FILE, then deleted
_INSTALL = "pip install 'distilbert-heads[onnx]'"


def _converters() -> tuple[Any, Any, Any]:
    """tf2onnx, onnx and onnxruntime, or an ExportError naming the extra that installs them."""
    try:
        import onnx  # only here: optional dependencies of the `onnx` extra
        import onnxruntime
        import tf2onnx
    except ImportError as error:
        raise ExportError(
            f"ONNX export needs tf2onnx, onnx and onnxruntime, but {error.name or error} is not installed. "
            f"Install them with: {_INSTALL}"
        ) from error
    return tf2onnx, onnx, onnxruntime


def _quantizer() -> tuple[Any, Any]:
    """``onnxruntime.quantization``'s ``quantize_dynamic`` and ``QuantType``, or an ExportError naming the extra."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic  # only here: optional, the `onnx` extra
    except ImportError as error:
        raise ExportError(
            f"quantize='int8' needs onnxruntime's quantization tools, but {error.name or error} is not "
            f"installed. Install them with: {_INSTALL}"
        ) from error
    return quantize_dynamic, QuantType


def _check_quantize(quantize: str | None) -> None:
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ExportError(
            f"Unknown ONNX quantization {quantize!r}; choose one of {', '.join(map(repr, QUANTIZE_MODES))}, "
            "or None for float32 (on the command line: --quantize int8)."
        )


def _check_not_quantized_in_keras(model: DistilBertTaskModel) -> None:
    """A model whose Keras weights are already int8 is refused: its float32 weights are gone."""
    if model.quantization is not None:
        raise ExportError(
            f"This model's weights are already quantized in Keras ({model.quantization}); the ONNX export "
            "converts float weights. Export the float32 model it was quantized from instead, with "
            "quantize='int8' for an int8 ONNX graph (distilbert-heads export --format onnx --quantize int8)."
        )


def _check_backend() -> None:
    if keras.backend.backend() != "tensorflow":
        raise ExportError(
            "ONNX export converts the model's TensorFlow graph (tf2onnx) and needs the TensorFlow backend, but "
            f"Keras runs on {keras.backend.backend()!r}. Run it as: KERAS_BACKEND=tensorflow distilbert-heads "
            "export --format onnx ..."
        )


def _rows_per_example(model: DistilBertTaskModel) -> int:
    """Encoder rows per example shared by every head (1, or N for heads that take (batch, N, length))."""
    rows = {name: _stacked_rows(head) for name, head in model.heads.items()}
    if len(set(rows.values())) > 1:
        raise ExportError(
            f"The heads take different numbers of encoder rows per example ({rows}), so no one ONNX input "
            "shape serves them all; export each head from its own model."
        )
    return next(iter(rows.values()))


def _erfc_handler(ctx: Any, node: Any, name: str, args: Any) -> None:
    """TensorFlow's Erfc (exact GELU) as ``1 - Erf(x)``: tf2onnx 1.17 has Erf but no Erfc."""
    from tf2onnx import utils  # only here: tf2onnx calls this, so it is installed

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]])
    one = ctx.make_const(f"{node.name}_one", np.array(1, dtype=dtype))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def _float32(model: DistilBertTaskModel) -> DistilBertTaskModel:
    """The model under the float32 policy: ONNX Runtime's CPU kernels have no bfloat16 matmul."""
    return model.with_dtype("float32")


def _convert(model: DistilBertTaskModel, opset: int | None) -> Any:
    """The model's forward pass as an ONNX ``ModelProto`` (not checked yet)."""
    import tensorflow as tf  # only here: the module imports on every backend, to say which one export needs

    tf2onnx, _, _ = _converters()
    rows = _rows_per_example(model)
    shape = (None, None) if rows == 1 else (None, None, None)  # (batch, rows, length): pipelines feed 1 row
    signature = [
        tf.TensorSpec(shape, tf.int32, name="input_ids"),
        tf.TensorSpec(shape, tf.int32, name="attention_mask"),
    ]

    serve = tf.function(ids_serving_function(model), input_signature=signature)
    try:
        proto, _ = tf2onnx.convert.from_function(
            serve, signature, opset=opset, custom_op_handlers={"Erfc": (_erfc_handler, [])}
        )
    except Exception as error:
        raise ExportError(
            f"tf2onnx could not convert the model (opset={opset}): {type(error).__name__}: {error}. "
            "Try another opset (opset=17), or export with format='saved_model'."
        ) from error
    return proto


def _unconverted_ops(proto: Any) -> list[tuple[str, str]]:
    """``(node name, op type)`` of every node that is still a TensorFlow op with no ONNX definition."""
    import onnx  # only here: optional dependency, installed when a proto exists

    return [(node.name, node.op_type) for node in proto.graph.node if not onnx.defs.has(node.op_type, node.domain)]


def _owner(node_name: str, model: DistilBertTaskModel) -> str | None:
    """The head whose layer scope a converted node's name lies in, or None (the encoder)."""
    parts = node_name.split("/")
    for head in model.heads:
        if any(re.fullmatch(rf"{re.escape(head)}(_\d+)?", part) for part in parts):
            return head
    return None


def _why_not(model: DistilBertTaskModel, unconverted: list[tuple[str, str]]) -> dict[str, str]:
    reasons: dict[str, list[str]] = {}
    for node_name, op_type in unconverted:
        owner = _owner(node_name, model)
        for head in [owner] if owner else list(model.heads):
            reasons.setdefault(head, []).append(f"{op_type} ({node_name})")
    return {
        head: f"tf2onnx has no ONNX conversion for the TensorFlow ops {', '.join(sorted(set(ops)))}"
        for head, ops in reasons.items()
    }


def unsupported_heads_onnx(model: DistilBertTaskModel) -> dict[str, str]:
    """Head name -> why it cannot be exported as ONNX, for every head that cannot; ``{}`` when all can.

    Converts the model in memory to find out (a few seconds for DistilBERT-base).
    """
    try:
        _check_backend()
        _converters()
        proto = _convert(_float32(model), None)
    except ExportError as error:
        return dict.fromkeys(model.heads, str(error))
    return _why_not(model, _unconverted_ops(proto))


def _metadata(model: DistilBertTaskModel, source_dtype: str, quantize: str | None) -> dict[str, str]:
    heads = {
        name: {
            "task_type": head.task_type,
            "outputs": [signature_output_name(flat_output_key(name, output)) for output in model.output_keys[name]],
        }
        for name, head in model.heads.items()
    }
    return {
        "distilbert_heads.version": __version__,
        "distilbert_heads.heads": json.dumps(heads),
        "distilbert_heads.max_length": str(model.max_length),
        "distilbert_heads.trained_dtype_policy": source_dtype,
        "distilbert_heads.quantization": quantize or "none",
    }


def _name_dynamic_axes(proto: Any, rows: int) -> None:
    """Name the inputs' dynamic axes batch and sequence, and the outputs' first batch (tf2onnx: unk__N)."""
    input_axes = ["batch", "sequence"] if rows == 1 else ["batch", "rows", "sequence"]
    for value in proto.graph.input:
        for dim, axis_name in zip(value.type.tensor_type.shape.dim, input_axes):
            dim.dim_param = axis_name
    for value in proto.graph.output:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"


def _check_against_keras(model: DistilBertTaskModel, path: Path, rows: int, quantized: bool = False) -> None:
    """ONNX Runtime's outputs on a padded batch equal Keras' within `TOLERANCE`, or ExportError.

    ``quantized``: the graph is int8, so each value may differ by `INT8_TOLERANCE` times max(1, |value|).
    """
    _, _, onnxruntime = _converters()
    shape = (2, 9) if rows == 1 else (2, rows, 9)
    generator = np.random.default_rng(0)
    input_ids = generator.integers(1, model.encoder.config.vocab_size, size=shape, dtype=np.int32)
    attention_mask = np.ones(shape, dtype=np.int32)
    attention_mask[1, ..., 5:] = 0  # a padded row, so masking is checked too
    feed = {"input_ids": input_ids, "attention_mask": attention_mask}
    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    got = dict(zip([output.name for output in session.get_outputs()], session.run(None, feed)))
    expected = {
        name: keras.ops.convert_to_numpy(tensor)
        for name, tensor in ids_serving_function(model)(input_ids, attention_mask).items()
    }
    if set(got) != set(expected):
        raise ExportError(f"The ONNX graph's outputs are {sorted(got)}, expected {sorted(expected)}.")
    for name, value in expected.items():
        difference, allowed = _worst_difference(got[name], value, quantized)
        if not difference <= allowed:
            fix = (
                "Export in float32 (no quantize), or run int8 in Keras (model.quantize('int8'))"
                if quantized
                else "Export with format='saved_model' instead"
            )
            raise ExportError(
                f"ONNX Runtime's {name!r}{' (int8)' if quantized else ''} differs from Keras' (shape "
                f"{got[name].shape} vs {value.shape}, largest difference {difference:.3g} > {allowed:.3g}); nothing "
                f"was written. {fix}, and report this with the model's heads and the tf2onnx and onnxruntime versions."
            )


def _worst_difference(got: np.ndarray, expected: np.ndarray, quantized: bool) -> tuple[float, float]:
    """``(|got - expected|, allowed)`` at the value most over its allowance (a NaN first); NaN on a shape mismatch."""
    if got.shape != expected.shape:
        return float("nan"), 0.0
    if expected.size == 0:
        return 0.0, TOLERANCE
    expected64 = expected.astype(np.float64)
    differences = np.abs(got.astype(np.float64) - expected64)
    allowed = np.broadcast_to(
        INT8_TOLERANCE * np.maximum(1.0, np.abs(expected64)) if quantized else TOLERANCE, differences.shape
    )
    worst = np.unravel_index(np.argmax(differences - allowed), differences.shape)
    return float(differences[worst]), float(allowed[worst])


def quantize_int8(float_path: str | os.PathLike, out_path: str | os.PathLike) -> None:
    """Write ONNX Runtime's dynamic int8 quantization of the float32 graph ``float_path`` to ``out_path``.

    Settings, and why:

    - ``op_types_to_quantize=["MatMul"]`` and only the MatMul nodes whose second input is a weight (an
      initializer): the Dense kernels of the encoder and heads, the layers Keras' ``quantize("int8")``
      quantizes. The attention products (Q.K^T, weights.V) multiply two activations and stay float32,
      and so do the embeddings (``Gather`` lookups, no matmul), LayerNorm, softmax and GELU.
    - ``weight_type=QInt8``: symmetric signed int8 weights (zero point 0), the u8s8 GEMM that
      AVX512-VNNI and AMX run natively; activations are uint8, scaled per call from each batch's range.
    - ``per_channel=False``: one scale per weight matrix, the setting the issue's reference
      measurement used (per-token cosine 0.99967 to float32 on DistilBERT-base, 2.7x the best float32
      peer). Per-column scales agreed no better on our tiny test models and are not measured on
      DistilBERT-base.
    - No ``quant_pre_process`` (symbolic shape inference and graph optimization before quantizing):
      ONNX Runtime fuses the graph when a session loads it, and the reference measurement ran
      without it; its "consider pre-processing" log line is filtered out.
    - ``reduce_range=False``: full 8-bit weights. 7-bit weights only avoid the int16 saturation of
      AVX2 CPUs without VNNI; on the CPUs we target (VNNI, AMX) they would just lose precision.

    The graph's metadata (heads, tokenizer length, versions) is kept.
    """
    import onnx  # only here: optional dependency of the `onnx` extra

    quantize_dynamic, quant_type = _quantizer()
    graph = onnx.load(os.fspath(float_path)).graph
    weights = {initializer.name for initializer in graph.initializer}
    weight_matmuls = [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in weights]
    if not weight_matmuls:
        raise ExportError(
            f"{os.fspath(float_path)!r} has no MatMul with a weight to quantize; export it in float32 (no quantize)."
        )
    root = logging.getLogger()
    root.addFilter(_drop_pre_processing_advice)
    try:
        quantize_dynamic(
            os.fspath(float_path),
            os.fspath(out_path),
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=weight_matmuls,
            weight_type=quant_type.QInt8,
            per_channel=False,
            reduce_range=False,
        )
    finally:
        root.removeFilter(_drop_pre_processing_advice)


def _drop_pre_processing_advice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Please consider to run pre-processing")


def export_onnx(
    model: DistilBertTaskModel,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    opset: int | None = None,
    quantize: str | None = None,
) -> Path:
    """Write ``model`` as ``<out>/model.onnx`` (plus ``<out>/tokenizer/``) for ONNX Runtime; returns ``out``.

    Inputs ``input_ids`` and ``attention_mask`` are int32 (batch, length), both axes dynamic;
    outputs are named ``<head>__<output>``. A model under a bfloat16 or mixed policy is exported
    in float32 (its weights cast, which is exact from bfloat16). ``opset``: the ONNX opset
    (tf2onnx's default, 15, when None). ``out`` must be new or an empty folder, unless
    ``overwrite=True`` replaces it whole. Needs the TensorFlow backend and the ``onnx`` extra.
    Before the folder is moved into place, ONNX Runtime's outputs on a padded batch are checked
    against Keras' (within `TOLERANCE`); on any failure nothing is written.

    ``quantize="int8"``: ``model.onnx`` is the float32 graph after ONNX Runtime's dynamic int8
    quantization (`quantize_int8`: int8 weights for every Dense matmul, activations quantized per
    call), about a quarter of the size; it is checked against Keras' float32 outputs (each value
    within `INT8_TOLERANCE` times max(1, |value|)). A model already quantized in Keras is refused: export
    the float32 model it came from. The metadata key ``distilbert_heads.quantization`` says which.
    """
    _check_quantize(quantize)
    _check_backend()
    _, onnx, _ = _converters()
    if quantize is not None:
        _quantizer()
    if not isinstance(model, DistilBertTaskModel):
        raise ExportError(
            f"export_onnx takes a DistilBertTaskModel, got {type(model).__name__}; load a .keras file with "
            "distilbert_heads.model.loading.load_task_model first."
        )
    _check_not_quantized_in_keras(model)
    out = check_export_folder(out, overwrite)
    source_dtype = model.dtype_policy.name
    model = _float32(model)
    proto = _convert(model, opset)
    unsupported = _why_not(model, _unconverted_ops(proto))
    if unsupported:
        described = "; ".join(f"head {head!r}: {why}" for head, why in unsupported.items())
        raise ExportError(
            f"Cannot export as ONNX: {described}. These heads export with format='saved_model' (TensorFlow "
            "Serving); give the head ops tf2onnx converts to export it as ONNX."
        )
    rows = _rows_per_example(model)
    _name_dynamic_axes(proto, rows)
    onnx.helper.set_model_props(proto, _metadata(model, source_dtype, quantize))
    with atomic.atomic_directory(out) as temp:
        if quantize is None:
            onnx.save(proto, os.fspath(temp / MODEL_FILE))
            _check_against_keras(model, temp / MODEL_FILE, rows)
        else:
            onnx.save(proto, os.fspath(temp / _FLOAT_SCRATCH))
            _check_against_keras(model, temp / _FLOAT_SCRATCH, rows)
            quantize_int8(temp / _FLOAT_SCRATCH, temp / MODEL_FILE)
            (temp / _FLOAT_SCRATCH).unlink()
            _check_against_keras(model, temp / MODEL_FILE, rows, quantized=True)
        if model.tokenizer is not None:
            model.tokenizer.save(temp / TOKENIZER_DIR)
    return out
