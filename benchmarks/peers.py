"""The contenders: our encoder and its peers, each built on the same weights, each optional.

A peer that is not installed (or fails to build) is returned as a `Skipped` with the reason,
and the report shows that note instead of a number.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Skipped:
    reason: str


def tf_function(fn: Callable[[Any], Any], jit_compile: bool) -> Callable[[Any], Any]:
    """``fn`` traced once per input signature; with XLA when ``jit_compile``."""
    import tensorflow as tf

    return tf.function(fn, jit_compile=jit_compile, reduce_retracing=True)


def to_tf(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    import tensorflow as tf

    return {key: tf.constant(value) for key, value in batch.items()}


# -- transformers (PyTorch) ---------------------------------------------------------------------
def hf_model(checkpoint: Path, cls_name: str = "DistilBertModel") -> Any:
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError as error:
        return Skipped(f"transformers/torch not installed ({error})")
    model = getattr(transformers, cls_name).from_pretrained(checkpoint)
    return model.eval()


def hf_bf16_weights(model: Any) -> Any:
    """A copy of the transformers model with its weights in bfloat16 (``model.to(torch.bfloat16)``)."""
    import copy

    import torch

    return copy.deepcopy(model).to(torch.bfloat16).eval()


def hf_encoder_runner(model: Any, batch: dict[str, np.ndarray], autocast: bool = False) -> Callable[[], Any]:
    """One forward pass to float32 numpy; ``autocast``: under ``torch.autocast("cpu", dtype=torch.bfloat16)``."""
    import contextlib

    import torch

    ids = torch.from_numpy(batch["input_ids"].astype(np.int64))
    mask = torch.from_numpy(batch["attention_mask"].astype(np.int64))

    def run() -> Any:
        mixed = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with torch.inference_mode(), mixed:
            return model(input_ids=ids, attention_mask=mask).last_hidden_state.float().numpy()

    return run


# -- keras-hub ------------------------------------------------------------------------------------
def keras_hub_backbone(classifier_checkpoint: Path, dtype: str | None = None) -> Any:
    """keras-hub's DistilBertBackbone, loaded from a transformers task checkpoint directory."""
    try:
        import keras_hub
    except ImportError as error:
        return Skipped(f"keras-hub not installed ({error})")
    try:
        return keras_hub.models.DistilBertBackbone.from_preset(str(classifier_checkpoint), dtype=dtype)
    except Exception as error:  # noqa: BLE001  (an unreadable checkpoint must not stop the other contenders)
        return Skipped(f"keras-hub could not load the checkpoint: {type(error).__name__}: {error}")


def keras_hub_inputs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"token_ids": batch["input_ids"], "padding_mask": batch["attention_mask"]}


# -- ONNX Runtime ---------------------------------------------------------------------------------
def onnx_session(hf: Any, workdir: Path, threads: int | None = None) -> Any:
    """Export the transformers model to ONNX (dynamic batch and length) and open an ORT session."""
    try:
        import onnxruntime  # noqa: F401  (checked here so a missing one skips this peer with its reason)
        import torch
    except ImportError as error:
        return Skipped(f"onnxruntime/torch not installed ({error})")
    path = workdir / "distilbert.onnx"
    if not path.exists():
        ids = torch.ones((2, 16), dtype=torch.int64)
        try:
            torch.onnx.export(
                hf,
                (ids, torch.ones_like(ids)),
                str(path),
                input_names=["input_ids", "attention_mask"],
                output_names=["last_hidden_state"],
                dynamic_axes={
                    name: {0: "batch", 1: "length"} for name in ("input_ids", "attention_mask", "last_hidden_state")
                },
                opset_version=17,
                dynamo=False,
            )
        except Exception as error:  # noqa: BLE001  (any export failure skips this peer with its reason)
            return Skipped(f"torch.onnx.export failed: {type(error).__name__}: {str(error)[:300]}")
    return ort_session(path, threads)


def ort_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session on ``path``: all graph optimizations, one thread per core, no spinning."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    # Spinning worker threads would steal CPU from the next contender in the interleaved loop.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_runner(session: Any, batch: dict[str, np.ndarray]) -> Callable[[], Any]:
    """One run to numpy; ids in the dtype the graph declares (int64 for torch's export, int32 for ours)."""
    declared = {node.name: node.type for node in session.get_inputs()}
    feed = {
        key: batch[key].astype(np.int32 if declared.get(key) == "tensor(int32)" else np.int64)
        for key in ("input_ids", "attention_mask")
    }
    return lambda: session.run(None, feed)[0]


def ort_bf16_support() -> Skipped | None:
    """None if ONNX Runtime's CPU execution provider runs a bfloat16 MatMul, else why not (asked of ORT itself).

    ORT's CPU EP has no bfloat16 GEMM on x86 (its one bf16 option, ``mlas.enable_gemm_fastmath_arm64_bfloat16``,
    is for ARM64), so the benchmark shows "no CPU bf16 mode" for it; this probe keeps that claim true per machine.
    """
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError as error:
        return Skipped(f"onnxruntime/onnx not installed ({error})")
    tensor = [helper.make_tensor_value_info(name, TensorProto.BFLOAT16, [4, 4]) for name in ("a", "b", "c")]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "bf16", tensor[:2], tensor[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001  (the error is the answer)
        return Skipped(f"no CPU bf16 mode: the CPU execution provider has no bfloat16 MatMul ({str(error)[:160]})")
    return None


# -- our own ONNX export, on ONNX Runtime -----------------------------------------------------------
def our_onnx_session(encoder_dir: Path, workdir: Path) -> Any:
    """Our sentiment model on ``encoder_dir``, exported with ``distilbert_heads.export(format="onnx")``, in ORT.

    The export is float32 (bf16 models export in float32) and carries the head: its output is the
    head's logits, so it is timed with the encoder plus a 768 x 2 head on the first token. It runs in
    a child process: tf2onnx's conversion of the base model peaked above 13 GB beside the other
    contenders' models, and the memory is returned when the child exits.
    """
    try:
        import onnxruntime  # noqa: F401  (checked here so a missing one skips this contender with its reason)
        import tf2onnx  # noqa: F401
    except ImportError as error:
        return Skipped(f"onnxruntime/tf2onnx not installed ({error})")
    out = workdir / "ours-onnx"
    if not (out / "model.onnx").exists():
        script = (
            "import sys; from distilbert_heads import create_distilbert_with_head, export; "
            "export(create_distilbert_with_head(task_type='sentiment', pretrained=sys.argv[1]), sys.argv[2], "
            "format='onnx', overwrite=True)"
        )
        env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        command = [sys.executable, "-c", script, str(encoder_dir), str(out)]
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent
        )
        if done.returncode != 0:
            return Skipped(f"export(format='onnx') failed (exit {done.returncode}): {done.stderr[-300:]}")
    return ort_session(out / "model.onnx")
