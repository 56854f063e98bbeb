"""The machine's matmul ceiling: float32 and bfloat16 GEMM rate, the best of numpy, torch and TF."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _rate(fn: Callable[[], Any], n: int, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / float(np.median(times)) / 1e9


def measure(n: int = 4096, repeats: int = 5) -> dict[str, Any]:
    """GFLOP/s of an n x n x n matmul per library and dtype; ``float32``/``bfloat16`` hold the best."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    rates: dict[str, float] = {"numpy/float32": _rate(lambda: a @ a, n, repeats)}
    try:
        import torch

        ta = torch.from_numpy(a)
        tb = ta.bfloat16()
        rates["torch/float32"] = _rate(lambda: ta @ ta, n, repeats)
        rates["torch/bfloat16"] = _rate(lambda: tb @ tb, n, repeats)
    except ImportError:
        pass
    try:
        import tensorflow as tf

        xa = tf.constant(a)
        xb = tf.cast(xa, tf.bfloat16)
        rates["tensorflow/float32"] = _rate(lambda: tf.matmul(xa, xa).numpy(), n, repeats)
        rates["tensorflow/bfloat16"] = _rate(lambda: tf.matmul(xb, xb).numpy(), n, repeats)
    except ImportError:
        pass
    return {
        "n": n,
        "gflops": {key: round(value, 1) for key, value in rates.items()},
        "float32": max(v for k, v in rates.items() if k.endswith("float32")),
        "bfloat16": max((v for k, v in rates.items() if k.endswith("bfloat16")), default=None),
    }


def encoder_flops_per_sequence(length: int, hidden: int = 768, intermediate: int = 3072, layers: int = 6) -> float:
    """Multiply-adds x 2 of one sequence through the encoder (projections, attention, FFN)."""
    projections = 4 * hidden * hidden + 2 * hidden * intermediate
    attention = 2 * length * hidden  # scores and context: L x L x D each
    return float(layers * 2 * length * (projections + attention))


def encoder_matmuls_only(
    batch: int, length: int, hidden: int = 768, intermediate: int = 3072, layers: int = 6, heads: int = 12
) -> Callable[[], Any]:
    """A TensorFlow graph of nothing but the encoder's matmuls, at its shapes, with variable weights.

    Every projection, FFN and attention product of DistilBERT-base, chained as in the encoder but with
    no embedding, bias, GELU, softmax, LayerNorm, transpose or residual between them: about the least
    time a float32 encoder built on TensorFlow's matmul can take. The report shows it as a bound row.
    """
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def variable(*shape: int) -> Any:
        return tf.Variable(rng.standard_normal(shape, dtype=np.float32) * 0.02)

    projections = [[variable(hidden, hidden) for _ in range(4)] for _ in range(layers)]
    ffn = [(variable(hidden, intermediate), variable(intermediate, hidden)) for _ in range(layers)]
    head_size = hidden // heads
    per_head = tf.constant(rng.standard_normal((batch, heads, length, head_size), dtype=np.float32))
    scores = tf.constant(rng.standard_normal((batch, heads, length, length), dtype=np.float32))
    tokens = tf.constant(rng.standard_normal((batch * length, hidden), dtype=np.float32))

    @tf.function
    def run(x: Any) -> Any:
        side_outputs = []  # returned so that the graph keeps them, never read
        for (wq, wk, wv, wo), (w1, w2) in zip(projections, ffn, strict=True):
            q, k, v = tf.matmul(x, wq), tf.matmul(x, wk), tf.matmul(x, wv)
            side_outputs += [k, v, tf.matmul(per_head, per_head, transpose_b=True), tf.matmul(scores, per_head)]
            x = tf.matmul(tf.matmul(tf.matmul(q, wo), w1), w2)
        return x, side_outputs

    return lambda: run(tokens)[0].numpy()
