"""Encoder inference: ours (eager, graph, XLA in float32; graph in the two bf16 modes) against
transformers, keras-hub (with and without XLA) and ONNX Runtime, on the same weights and inputs,
beside a bound: the encoder's matmuls alone on TensorFlow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import peers, timing
from benchmarks.fixtures import Fixtures, token_batch

SHAPES = {"throughput": (32, 128), "latency": (1, 128)}
BF16_MODES = {"ours/bf16-graph": "ours_bf16", "ours/mixed-bf16-graph": "ours_mixed_bf16"}


def _ours(encoder: Any, batch: dict[str, np.ndarray], mode: str) -> Callable[[], Any]:
    tensors = peers.to_tf(batch)
    if mode == "eager":
        return lambda: encoder(tensors, training=False)["last_hidden_state"].numpy()
    if mode == "predict_on_batch":
        return lambda: encoder.predict_on_batch(batch)["last_hidden_state"]
    fn = peers.tf_function(lambda d: encoder(d, training=False)["last_hidden_state"], jit_compile=mode == "xla")
    return lambda: fn(tensors).numpy()


def _keras_hub(backbone: Any, batch: dict[str, np.ndarray], jit: bool) -> Callable[[], Any]:
    tensors = peers.to_tf(peers.keras_hub_inputs(batch))
    fn = peers.tf_function(lambda d: backbone(d, training=False), jit_compile=jit)
    return lambda: fn(tensors).numpy()


def build_models(fx: Fixtures) -> tuple[dict[str, Any], dict[str, str]]:
    from distilbert_heads import DistilBERT

    models: dict[str, Any] = {
        "ours": DistilBERT.from_pretrained(fx.encoder_dir),
        # The bf16 modes: weights stored in bfloat16 (inference), or float32 weights cast per call.
        "ours_bf16": DistilBERT.from_pretrained(fx.encoder_dir, dtype="bfloat16"),
        "ours_mixed_bf16": DistilBERT.from_pretrained(fx.encoder_dir, dtype="mixed_bfloat16"),
        "keras_hub": peers.keras_hub_backbone(fx.classifier_dir),
        "hf": peers.hf_model(fx.encoder_dir),
    }
    models["ort"] = (
        peers.onnx_session(models["hf"], fx.workdir) if not isinstance(models["hf"], peers.Skipped) else models["hf"]
    )
    notes = {name: m.reason for name, m in models.items() if isinstance(m, peers.Skipped)}
    return models, notes


def contenders(models: dict[str, Any], batch: dict[str, np.ndarray], bf16: bool) -> dict[str, Callable[[], Any]]:
    """Name -> zero-argument call running one batch to numpy. Names start with ``ours/`` or ``peer/``."""
    out: dict[str, Callable[[], Any]] = {}
    for mode in ("eager", "graph", "xla"):
        out[f"ours/{mode}"] = _ours(models["ours"], batch, mode)
    if bf16:
        # bf16 under XLA ran at half the graph's speed on this CPU in every earlier run; not repeated.
        for name, model in BF16_MODES.items():
            out[name] = _ours(models[model], batch, "graph")

    def ok(name: str) -> bool:
        return not isinstance(models[name], peers.Skipped)

    if ok("hf"):
        out["peer/transformers-torch"] = peers.hf_encoder_runner(models["hf"], batch)
    if ok("keras_hub"):
        out["peer/keras-hub"] = _keras_hub(models["keras_hub"], batch, jit=False)
        out["peer/keras-hub-xla"] = _keras_hub(models["keras_hub"], batch, jit=True)
    if ok("ort"):
        out["peer/onnxruntime"] = peers.onnx_runner(models["ort"], batch)
    return out


def agreement(models: dict[str, Any], batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Max |difference| of each float32 contender's output from ours; cosine of bf16 vs float32 per token."""
    reference = np.asarray(_ours(models["ours"], batch, "graph")(), dtype=np.float32)
    result: dict[str, Any] = {"max_abs_diff_vs_ours_float32": {}}
    runners = contenders(models, batch, bf16=False)
    for name, run in runners.items():
        if name.startswith("peer/") or name in ("ours/eager", "ours/xla"):
            result["max_abs_diff_vs_ours_float32"][name] = float(
                np.abs(np.asarray(run(), np.float32) - reference).max()
            )
    result["bf16_cosine_per_token"] = {}
    for name, model in BF16_MODES.items():
        low = np.asarray(_ours(models[model], batch, "graph")(), dtype=np.float32)
        cosine = np.sum(low * reference, -1) / (np.linalg.norm(low, axis=-1) * np.linalg.norm(reference, axis=-1))
        result["bf16_cosine_per_token"][name] = {"min": float(cosine.min()), "mean": float(cosine.mean())}
    return result


def run(fx: Fixtures, quick: bool, gemm: dict[str, Any] | None) -> dict[str, Any]:
    from benchmarks.gemm import encoder_flops_per_sequence, encoder_matmuls_only

    models, notes = build_models(fx)
    result: dict[str, Any] = {"skipped": notes, "shapes": {}}
    result["agreement"] = agreement(models, token_batch(4, 128))
    for label, (batch_size, length) in SHAPES.items():
        batch = token_batch(batch_size, length)
        runners = contenders(models, batch, bf16=True)
        runners["bound/tf-matmuls-only"] = encoder_matmuls_only(batch_size, length)
        if label == "throughput":
            stats = timing.interleaved(runners, repeats=2 if quick else 5, warmup=1 if quick else 2)
        else:
            stats = timing.interleaved(
                runners, repeats=5 if quick else 20, warmup=2 if quick else 5, min_time_s=0.0 if quick else 1.0
            )
        flops = encoder_flops_per_sequence(length)
        rows = {}
        for name, stat in stats.items():
            row = {**stat, "seq_per_s": batch_size / stat["median_s"], "ms": stat["median_s"] * 1e3}
            if gemm:
                ceiling = gemm["bfloat16"] if "bf16" in name and gemm.get("bfloat16") else gemm["float32"]
                row["share_of_gemm_ceiling"] = row["seq_per_s"] * flops / (ceiling * 1e9)
            rows[name] = row
        result["shapes"][label] = {
            "batch": batch_size,
            "length": length,
            "rows": rows,
            **summarize(rows, latency=label == "latency"),
        }
    result["flops_per_sequence_128"] = encoder_flops_per_sequence(128)
    return result


def summarize(rows: dict[str, dict[str, float]], latency: bool) -> dict[str, Any]:
    """Best float32 mode of ours, best bf16 mode, best peer, and the ratios the targets name."""

    def best(names: list[str]) -> str | None:
        return min(names, key=lambda n: rows[n]["median_s"]) if names else None

    ours = best([n for n in rows if n.startswith("ours/") and "bf16" not in n and n != "ours/eager"])
    ours_bf16 = best([n for n in rows if n.startswith("ours/") and "bf16" in n])
    peer = best([n for n in rows if n.startswith("peer/")])
    out: dict[str, Any] = {"best_ours": ours, "best_ours_bf16": ours_bf16, "best_peer": peer, "ratios": {}}
    bound = "bound/tf-matmuls-only"
    if peer and bound in rows:
        # The best ratio any TensorFlow float32 encoder could reach: its matmuls alone against the best peer.
        out["bound_vs_best_peer"] = (
            rows[bound]["median_s"] / rows[peer]["median_s"]
            if latency
            else rows[peer]["median_s"] / rows[bound]["median_s"]
        )
    if ours is None:
        return out
    for name in rows:
        if name.startswith("peer/"):
            if latency:
                out["ratios"][name] = rows[ours]["median_s"] / rows[name]["median_s"]
            else:
                out["ratios"][name] = rows[name]["median_s"] / rows[ours]["median_s"]
    if peer and ours_bf16:
        out["bf16_vs_best_peer"] = (
            rows[ours_bf16]["median_s"] / rows[peer]["median_s"]
            if latency
            else rows[peer]["median_s"] / rows[ours_bf16]["median_s"]
        )
    return out
