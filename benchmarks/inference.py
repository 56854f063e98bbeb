"""Encoder inference, like for like: every path we offer against every peer, in float32 and in bf16.

Ours: the TensorFlow graph (``tf.function``, oneDNN) and XLA (``jit_compile=True``) in this
process; the JAX backend (``jax.jit`` over ``stateless_call``) and the PyTorch backend (eager,
``no_grad``) in a child process each (`benchmarks.backend_worker`), timed in the same round-robin
loop; each in ``float32``, ``bfloat16`` (weights stored in bf16) and ``mixed_bfloat16`` (float32
weights cast per call); and our ONNX export (``export(format="onnx")``, float32) on ONNX Runtime.
Peers: transformers in float32, with bf16 weights and under ``torch.autocast`` bf16; keras-hub in
float32 and with ``dtype="bfloat16"`` (graph and XLA); ONNX Runtime in float32 (its CPU provider
has no bf16 mode; a probe asks it on every run). Beside them a bound: the encoder's matmuls alone
on TensorFlow.

Contender names are ``ours/<path>/<dtype>`` or ``peer/<name>/<dtype>``; a name ending in
``/float32`` is a float32 contender, every other one a bf16 contender.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import backend_worker, peers, timing
from benchmarks.fixtures import Fixtures, token_batch

SHAPES = {"throughput": (32, 128), "latency": (1, 128)}
OUR_DTYPES = ("float32", "bfloat16", "mixed_bfloat16")
OTHER_BACKENDS = {"jax": "jax-jit", "torch": "torch-eager"}
FAMILIES = ("float32", "bf16")
BOUND = "bound/tf-matmuls-only"


def family(name: str) -> str:
    """``float32`` or ``bf16``: the dtype a contender is compared within (the bound is float32 matmuls)."""
    return "float32" if name == BOUND or name.endswith("/float32") else "bf16"


@dataclass
class Contender:
    run: Callable[[], Any]  # one timed call
    output: Callable[[], np.ndarray] | None  # last_hidden_state in float32, None where there is none to compare
    in_process: bool = True  # False: the work runs in a child, so this process's CPU time says nothing


def _local(run: Callable[[], Any]) -> Contender:
    return Contender(run, lambda: np.asarray(run(), dtype=np.float32))


def _ours_tf(encoder: Any, batch: dict[str, np.ndarray], jit_compile: bool) -> Callable[[], Any]:
    tensors = peers.to_tf(batch)
    fn = peers.tf_function(lambda d: encoder(d, training=False)["last_hidden_state"], jit_compile=jit_compile)
    return lambda: fn(tensors).numpy()


def _keras_hub(backbone: Any, batch: dict[str, np.ndarray], jit: bool) -> Callable[[], Any]:
    tensors = peers.to_tf(peers.keras_hub_inputs(batch))
    fn = peers.tf_function(lambda d: backbone(d, training=False), jit_compile=jit)
    return lambda: fn(tensors).numpy()


def build_models(fx: Fixtures, backends: tuple[str, ...] = tuple(OTHER_BACKENDS)) -> tuple[dict[str, Any], dict]:
    """Every contender's model, on the same weights; what could not be built is a `peers.Skipped`."""
    from distilbert_heads import DistilBERT

    # First, while this process holds no model: the export's conversion is the peak of memory.
    ours_onnx = peers.our_onnx_session(fx.encoder_dir, fx.workdir)
    # The children load while this process builds its own models.
    workers = {
        backend: backend_worker.BackendWorker(backend, fx.encoder_dir, fx.workdir / f"worker-{backend}.log")
        for backend in backends
    }
    models: dict[str, Any] = {
        f"ours/{dtype}": DistilBERT.from_pretrained(fx.encoder_dir, dtype=dtype) for dtype in OUR_DTYPES
    }
    models["keras_hub"] = peers.keras_hub_backbone(fx.classifier_dir)
    models["keras_hub_bf16"] = (
        peers.keras_hub_backbone(fx.classifier_dir, dtype="bfloat16")
        if not isinstance(models["keras_hub"], peers.Skipped)
        else models["keras_hub"]
    )
    models["hf"] = peers.hf_model(fx.encoder_dir)
    hf_ok = not isinstance(models["hf"], peers.Skipped)
    models["hf_bf16"] = peers.hf_bf16_weights(models["hf"]) if hf_ok else models["hf"]
    models["ort"] = peers.onnx_session(models["hf"], fx.workdir) if hf_ok else models["hf"]
    models["ort_bf16"] = peers.ort_bf16_support() or peers.Skipped(
        "ONNX Runtime's CPU provider runs bf16 MatMul here; a bf16 ONNX contender is not built yet"
    )
    models["ours_onnx"] = ours_onnx
    for backend, worker in workers.items():
        try:
            models[f"worker/{backend}"] = worker.wait_ready()
        except backend_worker.WorkerError as error:
            worker.close()
            models[f"worker/{backend}"] = peers.Skipped(str(error))
    notes = {name: m.reason for name, m in models.items() if isinstance(m, peers.Skipped)}
    return models, notes


def close(models: dict[str, Any]) -> None:
    for name, model in models.items():
        if name.startswith("worker/") and isinstance(model, backend_worker.BackendWorker):
            model.close()


def contenders(
    models: dict[str, Any], batch: dict[str, np.ndarray], scratch: Path, notes: dict[str, str]
) -> dict[str, Contender]:
    """Name -> `Contender` running one batch. A child that fails its first call here is noted and left out."""
    out: dict[str, Contender] = {}
    for dtype in OUR_DTYPES:
        for path, jit in (("tf-graph", False), ("tf-xla", True)):
            out[f"ours/{path}/{dtype}"] = _local(_ours_tf(models[f"ours/{dtype}"], batch, jit))
    batch_size, length = batch["input_ids"].shape
    for backend, path in OTHER_BACKENDS.items():
        worker = models.get(f"worker/{backend}")
        if not isinstance(worker, backend_worker.BackendWorker):
            continue
        for dtype in worker.dtypes:
            name = f"ours/{path}/{dtype}"
            run = worker.runner(dtype, batch_size, length)
            try:
                run()  # compiles (JAX) and shows a failure here rather than inside the timed loop
            except backend_worker.WorkerError as error:
                notes[f"{name} {batch_size}x{length}"] = str(error)
                continue
            target = scratch / f"{backend}-{dtype}-{batch_size}x{length}.npy"
            out[name] = Contender(
                run,
                lambda worker=worker, dtype=dtype, target=target: worker.output(dtype, batch_size, length, target),
                in_process=False,
            )
    if not isinstance(models["ours_onnx"], peers.Skipped):
        # Its output is the head's logits (checked against Keras within 1e-4 by the export itself).
        out["ours/onnxruntime/float32"] = Contender(peers.onnx_runner(models["ours_onnx"], batch), None)

    def ok(name: str) -> bool:
        return not isinstance(models[name], peers.Skipped)

    if ok("hf"):
        out["peer/transformers/float32"] = _local(peers.hf_encoder_runner(models["hf"], batch))
        out["peer/transformers/bf16-weights"] = _local(peers.hf_encoder_runner(models["hf_bf16"], batch))
        out["peer/transformers/autocast-bf16"] = _local(peers.hf_encoder_runner(models["hf"], batch, autocast=True))
    if ok("keras_hub"):
        for jit, path in ((False, "keras-hub"), (True, "keras-hub-xla")):
            out[f"peer/{path}/float32"] = _local(_keras_hub(models["keras_hub"], batch, jit=jit))
            out[f"peer/{path}/bfloat16"] = _local(_keras_hub(models["keras_hub_bf16"], batch, jit=jit))
    if ok("ort"):
        out["peer/onnxruntime/float32"] = _local(peers.onnx_runner(models["ort"], batch))
    return out


def agreement(runners: dict[str, Contender]) -> dict[str, Any]:
    """Max |difference| of each float32 contender from ours (TF graph, float32); per-token cosine of each bf16 one."""
    reference = runners["ours/tf-graph/float32"].output()
    result: dict[str, Any] = {"max_abs_diff_vs_ours_float32": {}, "bf16_cosine_per_token": {}}
    for name, contender in runners.items():
        if contender.output is None or name == "ours/tf-graph/float32":
            continue
        low = contender.output()
        if family(name) == "float32":
            result["max_abs_diff_vs_ours_float32"][name] = float(np.abs(low - reference).max())
        else:
            norms = np.linalg.norm(low, axis=-1) * np.linalg.norm(reference, axis=-1)
            cosine = np.sum(low * reference, -1) / norms
            result["bf16_cosine_per_token"][name] = {"min": float(cosine.min()), "mean": float(cosine.mean())}
    return result


def run(
    fx: Fixtures,
    quick: bool,
    gemm: dict[str, Any] | None,
    shapes: dict[str, tuple[int, int]] | None = None,
    backends: tuple[str, ...] = tuple(OTHER_BACKENDS),
) -> dict[str, Any]:
    from benchmarks.gemm import encoder_flops_per_sequence, encoder_matmuls_only

    models, notes = build_models(fx, backends)
    config = models["ours/float32"].config
    shapes = shapes or SHAPES
    result: dict[str, Any] = {"skipped": notes, "shapes": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="dh-encoder-") as scratch:
            for label, (batch_size, length) in shapes.items():
                batch = token_batch(batch_size, length, vocab_size=config.vocab_size)
                runners = contenders(models, batch, Path(scratch), notes)
                timed = {name: c.run for name, c in runners.items()}
                timed[BOUND] = encoder_matmuls_only(
                    batch_size,
                    length,
                    config.hidden_size,
                    config.intermediate_size,
                    config.num_layers,
                    config.num_heads,
                )
                if label == "throughput":
                    stats = timing.interleaved(timed, repeats=2 if quick else 5, warmup=1 if quick else 2)
                else:
                    stats = timing.interleaved(
                        timed, repeats=5 if quick else 20, warmup=2 if quick else 5, min_time_s=0.0 if quick else 1.0
                    )
                flops = encoder_flops_per_sequence(
                    length, config.hidden_size, config.intermediate_size, config.num_layers
                )
                rows = {}
                for name, stat in stats.items():
                    row = {**stat, "dtype": family(name), "seq_per_s": batch_size / stat["median_s"]}
                    row["ms"] = stat["median_s"] * 1e3
                    if name in runners and not runners[name].in_process:
                        row.pop("cpu_median_s", None)  # this process only waited on the child
                    if gemm:
                        ceiling = (
                            gemm["bfloat16"] if row["dtype"] == "bf16" and gemm.get("bfloat16") else gemm["float32"]
                        )
                        row["share_of_gemm_ceiling"] = row["seq_per_s"] * flops / (ceiling * 1e9)
                    rows[name] = row
                result["shapes"][label] = {
                    "batch": batch_size,
                    "length": length,
                    "rows": rows,
                    **summarize(rows, latency=label == "latency"),
                }
                if label == list(shapes)[-1]:
                    # On the last (smallest) batch, where every contender is already compiled.
                    result["agreement"] = {"batch": f"{batch_size}x{length}", **agreement(runners)}
    finally:
        close(models)
    result["flops_per_sequence_128"] = encoder_flops_per_sequence(
        128, config.hidden_size, config.intermediate_size, config.num_layers
    )
    return result


def summarize(rows: dict[str, dict[str, Any]], latency: bool) -> dict[str, Any]:
    """Per dtype family: the fastest path we offer, the best peer, and the speed ratio between them.

    ``speed_vs_best_peer`` is the best peer's time over ours (> 1: ours leads) at either shape; the
    older ``ratios`` keep their convention (throughput: peer time / ours; latency: ours / peer).
    """

    def best(names: list[str]) -> str | None:
        return min(names, key=lambda n: rows[n]["median_s"]) if names else None

    out: dict[str, Any] = {"by_dtype": {}}
    for kind in FAMILIES:
        ours = best([n for n in rows if n.startswith("ours/") and rows[n]["dtype"] == kind])
        peer = best([n for n in rows if n.startswith("peer/") and rows[n]["dtype"] == kind])
        entry: dict[str, Any] = {"fastest_ours": ours, "best_peer": peer}
        if ours and peer:
            entry["speed_vs_best_peer"] = rows[peer]["median_s"] / rows[ours]["median_s"]
        out["by_dtype"][kind] = entry
        for name in rows:
            if peer and name.startswith("ours/") and rows[name]["dtype"] == kind:
                rows[name]["speed_vs_best_peer"] = rows[peer]["median_s"] / rows[name]["median_s"]
    ours, peer = out["by_dtype"]["float32"]["fastest_ours"], out["by_dtype"]["float32"]["best_peer"]
    ours_bf16 = out["by_dtype"]["bf16"]["fastest_ours"]
    out.update({"best_ours": ours, "best_ours_bf16": ours_bf16, "best_peer": peer, "ratios": {}})
    if peer and BOUND in rows:
        # The best ratio any TensorFlow float32 encoder could reach: its matmuls alone against the best peer.
        out["bound_vs_best_peer"] = (
            rows[BOUND]["median_s"] / rows[peer]["median_s"]
            if latency
            else rows[peer]["median_s"] / rows[BOUND]["median_s"]
        )
    if ours is None:
        return out
    for name in rows:
        if name.startswith("peer/") and rows[name]["dtype"] == "float32":
            ratio = rows[ours]["median_s"] / rows[name]["median_s"]
            out["ratios"][name] = ratio if latency else 1 / ratio
    if peer and ours_bf16:
        # bf16 of ours against the best float32 peer: the older target (>= 1.8x at 32 x 128).
        out["bf16_vs_best_peer"] = (
            rows[ours_bf16]["median_s"] / rows[peer]["median_s"]
            if latency
            else rows[peer]["median_s"] / rows[ours_bf16]["median_s"]
        )
    return out
