"""int8 inference (issue 15): ``model.quantize("int8")`` / ``with_dtype("int8")`` on the encoder and
every head, the encoder's own int8 matmul path (`layers.int8_dense_2d`), the ``.keras`` round trip in
a fresh process, the refusals, and the ``dtype="int8"`` choice of the pipeline and ``predict --dtype``.

Agreement bounds. Quantizing each weight column and each activation row to 127 levels by its
absolute maximum gives each matmul a relative error of at most about 1/127 per operand, and far less
on average (the errors of many products cancel). On the models below (hidden 64, two layers, random
weights) the largest head-output difference measured was 0.0205 of the float32 outputs' largest
magnitude (TensorFlow, JAX and torch backends, every head); `RELATIVE_BOUND` allows 3x that. Labels
must agree wherever float32's top-two margin exceeds twice the bound (no rounding that small can
flip them) and on at least `MIN_LABEL_AGREEMENT` of all rows: random weights give near-ties, and
the lowest agreement measured was 97.7% (97 masked-LM classes per token); sentence heads agreed
on every row.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from helpers import assert_mentions
from keras import ops

from distilbert_heads import create_distilbert_with_head
from distilbert_heads.encoder import layers
from distilbert_heads.testing import reload_all_in_subprocess

RELATIVE_BOUND = 0.06
MIN_LABEL_AGREEMENT = 0.95
MASK_FILL = 1e6

SMALL_ENCODER = {
    "vocab_size": 97,
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": 64,
}

# (task type, head options): every built-in head and the example plugin's.
HEADS = [
    ("sentiment", {"num_classes": 3}),
    ("ner", {"num_classes": 5}),
    ("qa", {}),
    ("pairwise", {"num_classes": 3}),
    ("mlm", {}),
    pytest.param("foo", {"num_classes": 3}, id="plugin-foo"),
]


def _model(task_type: str, options: dict, seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    return create_distilbert_with_head(
        task_type=task_type, distilbert_variant="tiny", head_options=options, **SMALL_ENCODER
    )


def _inputs(batch: int = 8, length: int = 16, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, SMALL_ENCODER["vocab_size"], size=(batch, length)).astype("int32")
    mask = np.ones((batch, length), dtype="int32")
    mask[1, length // 2 :] = 0  # a padded row
    return {"input_ids": np.where(mask == 1, ids, 0).astype("int32"), "attention_mask": mask}


def _numpy(outputs) -> dict[str, np.ndarray]:
    return {
        f"{head}/{name}": np.asarray(ops.convert_to_numpy(value), dtype=np.float32)
        for head, values in outputs.items()
        for name, value in values.items()
    }


@dataclass(frozen=True)
class Int8Run:
    """One head's model in float32 and after ``with_dtype("int8")``, and the int8 file reloaded in a fresh process."""

    model: Any
    quantized: Any
    reference: dict[str, np.ndarray]
    output: dict[str, np.ndarray]
    reloaded: dict[str, np.ndarray]
    summary: dict[str, Any]


@pytest.fixture(scope="module")
def int8_runs(tmp_path_factory) -> dict[str, Int8Run]:
    """Every head of HEADS quantized and saved; all the files reloaded in ONE fresh process (a process start per
    head cost more than the rest of the checks)."""
    folder = tmp_path_factory.mktemp("int8")
    inputs = _inputs()
    built = {}
    for task_type, options in (getattr(param, "values", param) for param in HEADS):
        if task_type == "foo" and importlib.util.find_spec("distilbert_head_foo") is None:
            continue
        model = _model(task_type, options)
        quantized = model.with_dtype("int8")
        quantized.save(folder / f"{task_type}.keras")
        built[task_type] = (model, quantized)
    reloads = reload_all_in_subprocess([folder / f"{task_type}.keras" for task_type in built], inputs)
    return {
        task_type: Int8Run(
            model=model,
            quantized=quantized,
            reference=_numpy(model(inputs, training=False)),
            output=_numpy(quantized(inputs, training=False)),
            reloaded=reloaded,
            summary=summary,
        )
        for (task_type, (model, quantized)), (reloaded, summary) in zip(built.items(), reloads)
    }


@pytest.mark.parametrize(("task_type", "options"), HEADS)
def test_int8_model_agrees_with_float32_and_reloads_identically(int8_runs, task_type, options):
    if task_type == "foo":
        pytest.importorskip("distilbert_head_foo", reason="pip install ./plugins_example/distilbert-head-foo")
    run = int8_runs[task_type]
    assert run.quantized is not run.model and run.model.quantization is None and run.quantized.quantization == "int8"
    kernels = {v.path.split("/")[-1]: str(v.dtype) for v in run.quantized.weights if "kernel" in v.path}
    assert "int8" in set(kernels.values()), kernels

    for key, expected in run.reference.items():
        actual = run.output[key]
        assert np.isfinite(actual).all(), key
        real = np.abs(expected) < MASK_FILL  # QA heads fill padded positions with a huge negative score
        assert (actual[~real] <= -MASK_FILL).all(), f"{key}: a masked position is no longer masked"
        scale = np.abs(expected[real]).max()
        error = np.abs(actual - expected)[real].max()
        assert error <= RELATIVE_BOUND * scale, f"{key}: max abs diff {error} vs float32 magnitude {scale}"
        if expected.shape[-1] > 1 and real.all():
            labels, float_labels = actual.argmax(-1), expected.argmax(-1)
            top2 = np.sort(expected, axis=-1)[..., -2:]
            decisive = (top2[..., 1] - top2[..., 0]) > 2 * RELATIVE_BOUND * scale
            np.testing.assert_array_equal(labels[decisive], float_labels[decisive], err_msg=key)
            assert (labels == float_labels).mean() >= MIN_LABEL_AGREEMENT, f"{key}: labels agree too rarely"

    assert run.summary["class"] == "DistilBertTaskModel"
    assert set(run.reloaded) == set(run.output)
    for key, value in run.output.items():
        np.testing.assert_array_equal(run.reloaded[key], value, err_msg=f"{key} changed in a fresh-process reload")


def _compiled_runners() -> dict[str, object]:
    """How the encoder's int8 path can run on this backend: eagerly, and in each compiled form it meets.

    On TensorFlow a graph (oneDNN's integer GEMM between XLA-fused quantize and dequantize, when
    oneDNN is there) and a function XLA compiles whole (plain ops); on JAX under ``jax.jit``."""
    import keras

    runners = {"eager": lambda fn, *args: fn(*args)}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        runners["graph"] = lambda fn, *args: tf.function(fn)(*args)
        runners["xla"] = lambda fn, *args: tf.function(fn, jit_compile=True)(*args)
    elif keras.backend.backend() == "jax":
        import jax

        runners["jit"] = lambda fn, *args: jax.jit(fn)(*args)
    return runners


# Token matrices that stress the quantizer: an all-zero row (scale from epsilon alone), a row of one
# huge value among tiny ones, exact halves at the rounding boundary, and ordinary noise.
HOSTILE_TOKENS = {
    "noise": np.random.default_rng(0).standard_normal((10, 32)),
    "zero_and_spike_rows": np.stack([np.zeros(32), np.r_[1e4, np.full(31, 1e-3)], np.linspace(-3, 3, 32)]),
    "rounding_halves": np.tile(np.r_[127.0, (np.arange(31) - 15) + 0.5], (4, 1)),
}


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("tokens_name", sorted(HOSTILE_TOKENS))
def test_encoder_int8_path_matches_keras_own_int8_call(tokens_name, use_bias):
    """`int8_dense_2d` (the encoder's fast path) computes what Keras' quantized Dense computes, however it runs."""
    import keras

    keras.utils.set_random_seed(3)
    dense = keras.layers.Dense(48, use_bias=use_bias, bias_initializer="random_normal")
    dense.build((None, 32))
    dense.quantize("int8")
    tokens = HOSTILE_TOKENS[tokens_name].astype("float32")
    theirs = ops.convert_to_numpy(dense(tokens))
    scale = max(1.0, float(np.abs(theirs).max()))
    gelu = layers.activation_fn("gelu")
    for how, run in _compiled_runners().items():
        ours = ops.convert_to_numpy(run(lambda x: layers.int8_dense_2d(dense, x), ops.convert_to_tensor(tokens)))
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * scale, err_msg=f"{how}, {tokens_name}")
        # The activation applied inside the int8 path (fused into the dequantize on TensorFlow).
        ours = ops.convert_to_numpy(run(lambda x: layers.int8_dense_2d(dense, x, gelu), ops.convert_to_tensor(tokens)))
        np.testing.assert_allclose(
            ours, ops.convert_to_numpy(gelu(theirs)), rtol=1e-5, atol=1e-5 * scale, err_msg=f"gelu, {how}"
        )
    for how, run in _compiled_runners().items():
        left, right = (
            ops.convert_to_tensor(np.full((3, 4), 127, "int8")),
            ops.convert_to_tensor(np.full((4, 2), -127, "int8")),
        )
        product = ops.convert_to_numpy(run(layers.int8_matmul, left, right))
        assert product.dtype == np.int32 and (product == -127 * 127 * 4).all(), how  # no int8 overflow


def _int8_dense_layers(count: int, use_bias: bool, seed: int) -> list:
    import keras

    keras.utils.set_random_seed(seed)
    dense = [keras.layers.Dense(48, use_bias=use_bias, bias_initializer="random_normal") for _ in range(count)]
    for each in dense:
        each.build((None, 32))
        each.quantize("int8")
    return dense


@pytest.mark.parametrize("write", ["set_weights", "load_own_variables", "assign_in_a_graph"])
def test_int8_path_follows_weights_written_after_the_first_call(write):
    """The int8 path keeps a value derived from each kernel (TensorFlow's shift correction): a function
    compiled before new weights are written must, called again, use them as Keras' own call does."""
    import keras

    dense = _int8_dense_layers(3, use_bias=True, seed=5)
    others = _int8_dense_layers(3, use_bias=True, seed=6)
    tokens = ops.convert_to_tensor(HOSTILE_TOKENS["noise"].astype("float32"))

    gelu = layers.activation_fn("gelu")
    calls = {
        "plain": lambda x: tuple(layers.int8_dense_2d(each, x) for each in dense),
        "gelu": lambda x: tuple(layers.int8_dense_2d(each, x, gelu) for each in dense),
    }
    runs = {f"{name} eager": fn for name, fn in calls.items()}
    if keras.backend.backend() == "tensorflow":  # compiled once and kept, as a served model's function is
        import tensorflow as tf

        for name, fn in calls.items():
            runs[f"{name} graph"] = tf.function(fn)
            runs[f"{name} xla"] = tf.function(fn, jit_compile=True)
    before = {how: [ops.convert_to_numpy(y) for y in run(tokens)] for how, run in runs.items()}
    for mine, other in zip(dense, others, strict=True):
        if write == "set_weights":
            mine.set_weights(other.get_weights())
        elif write == "load_own_variables":
            store = {}
            other.save_own_variables(store)
            mine.load_own_variables(store)
        elif keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.function(lambda mine=mine, other=other: mine._kernel.assign(other._kernel.value))()
            mine.kernel_scale.assign(other.kernel_scale.value)
            mine.bias.assign(other.bias.value)
        else:
            mine.set_weights(other.get_weights())
    theirs = [ops.convert_to_numpy(each(tokens)) for each in others]
    for how, run in runs.items():
        outputs = run(tokens)
        for index, output in enumerate(outputs):
            expected = ops.convert_to_numpy(gelu(theirs[index])) if how.startswith("gelu") else theirs[index]
            assert not np.allclose(before[how][index], expected), "the new weights must change the output"
            scale = max(1.0, float(np.abs(expected).max()))
            np.testing.assert_allclose(
                ops.convert_to_numpy(output), expected, rtol=1e-5, atol=1e-5 * scale, err_msg=f"{how} {index}"
            )


def test_encoder_int8_path_is_used_at_inference_and_not_in_training(monkeypatch):
    model = _model("sentiment", {"num_classes": 2}).with_dtype("int8")
    calls = []
    original = layers.int8_dense_2d
    monkeypatch.setattr(layers, "int8_dense_2d", lambda *a: calls.append(1) or original(*a))
    inputs = _inputs(batch=2, length=4)
    model(inputs, training=False)
    per_layer = 6  # q, k, v, out, lin1, lin2
    assert len(calls) == per_layer * SMALL_ENCODER["num_layers"]
    calls.clear()
    model(inputs, training=True)
    assert calls == []  # Keras' own call, which carries a gradient


@pytest.mark.parametrize(
    ("make", "facts"),
    [
        (lambda m: m.with_dtype("int8").quantize("int8"), ("already quantized", "int8", "float32 model")),
        (lambda m: m.with_dtype("mixed_bfloat16").quantize("int8"), ("float32", "mixed_bfloat16", "with_dtype")),
        (lambda m: m.with_dtype("int8").with_dtype("bfloat16"), ("quantized to int8", "bfloat16", "float32 model")),
        (lambda m: m.quantize("int8", filters="q_lin"), ("filters", "whole model")),
        (lambda m: m.quantize("int4"), ("int4", "'int8'")),
        (
            lambda m: type(m).from_config({**m.get_config(), "quantization": "int4"}),
            ("quantization", "'int4'", "'int8'", "edited"),
        ),
        (
            lambda m: create_distilbert_with_head(task_type="sentiment", dtype="int8", **SMALL_ENCODER),
            ("int8", "inference mode", "with_dtype('int8')", "predict --dtype int8"),
        ),
    ],
    ids=["twice", "not-float32", "int8-to-bfloat16", "partial", "int4", "edited-config", "factory"],
)
def test_quantizing_what_cannot_work_is_refused(make, facts):
    model = _model("sentiment", {"num_classes": 2})
    with pytest.raises(ValueError) as error:
        make(model)
    assert_mentions(error.value, *facts)


def test_int8_of_an_int8_model_is_itself_and_bf16_models_quantize_through_float32():
    model = _model("sentiment", {"num_classes": 2})
    quantized = model.with_dtype("int8")
    assert quantized.with_dtype("int8") is quantized
    from_bf16 = model.with_dtype("mixed_bfloat16").with_dtype("int8")
    assert from_bf16.quantization == "int8" and from_bf16.dtype_policy.name == "float32"


def test_pipeline_and_predict_offer_int8(tmp_path, demo_tokenizer):
    from distilbert_heads import pipeline
    from distilbert_heads.cli import main

    model = create_distilbert_with_head(
        task_type="sentiment",
        distilbert_variant="tiny",
        head_options={"num_classes": 2},
        **{**SMALL_ENCODER, "vocab_size": demo_tokenizer.vocab_size},
    )
    model.tokenizer = demo_tokenizer
    path = tmp_path / "model.keras"
    model.save(path)
    texts = ["a great movie", "the worst film", "fine"]
    float_answers = pipeline(path, show_progress=False)(texts)
    pipe = pipeline(path, dtype="int8", show_progress=False)
    assert pipe.model.quantization == "int8"
    int8_answers = pipe(texts)
    assert [a["label"] for a in int8_answers] == [a["label"] for a in float_answers]

    data = tmp_path / "in.txt"
    data.write_text("\n".join(texts) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", str(path), "--input", str(data), "--dtype", "int8", "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == len(texts)


def test_gpu_benchmark_dry_run_runs_every_code_path_on_the_cpu(tmp_path):
    """``benchmarks/gpu.py`` where no GPU is: says so, exits 0, and still runs ours (JAX, jit + stateless_call;
    the torch backend in a subprocess), transformers eager and compiled, parity and both training steps. It runs
    as on the lent GPU machine, which has no TensorFlow: a ``tensorflow`` that fails to import shadows ours."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch

    root = Path(__file__).resolve().parent.parent
    no_tensorflow = tmp_path / "no_tensorflow" / "tensorflow"
    no_tensorflow.mkdir(parents=True)
    (no_tensorflow / "__init__.py").write_text('raise ImportError("no TensorFlow here, as on the GPU machine")\n')
    out = tmp_path / "out"
    command = [sys.executable, str(root / "benchmarks" / "gpu.py"), "--out", str(out), "--backends", "torch"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(no_tensorflow.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gpu.json").read_text())
    assert report["complete"] and sorted(path.name for path in out.iterdir()) == ["gpu.json", "gpu.md"]
    assert "measured so far: parity 2 shapes" in done.stdout  # written after each step, for a run cut short
    if not torch.cuda.is_available():
        assert "no GPU: nothing measured" in done.stdout
        assert report["dry_run"] and "DRY RUN" in (out / "gpu.md").read_text()
    result = report["result"]
    shapes = ("4x16", "1x16")
    assert set(result["forward"]) == {f"{dtype} {shape}" for dtype in ("float32", "bfloat16") for shape in shapes}
    for rows in result["forward"].values():
        assert {"ours/jax", "transformers"} <= set(rows) and all(row["seq_per_s"] > 0 for row in rows.values())
    assert "transformers+torch.compile" in result["forward"]["bfloat16 4x16"]
    assert set(result["attention_kernel"]) == set(result["forward"])  # which kernel ours compiled to, per row
    assert result["attention_path"] == {"fused_attention": True, "fused_qkv": True}  # the GPU's path, also on the CPU
    assert "Attention kernel" in (out / "gpu.md").read_text()
    assert report["parity_ok"] and max(result["parity"].values()) <= 1e-4
    assert result["train_step"]["ours/jax"]["median_s"] > 0 and result["train_step"]["transformers+autocast"]["n"] == 2
    assert result["ours_other_backends"]["torch"]["rows"], result["ours_other_backends"]
