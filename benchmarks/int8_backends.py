"""Our encoder in float32 and int8 on the JAX and torch Keras backends (the CPU section runs TensorFlow).

    KERAS_BACKEND=torch python benchmarks/int8_backends.py --weights WORKDIR/encoder
    KERAS_BACKEND=jax python benchmarks/int8_backends.py --weights WORKDIR/encoder --batch 1

``WORKDIR`` is ``run.py --workdir``'s (the same random-init base weights). JAX runs under
``jax.jit(stateless_call)``; torch eagerly under ``no_grad``. Prints one JSON line: milliseconds per
batch (median, interleaved) and the int8 cosine per token to float32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402  (after the backend is chosen)

from benchmarks import timing  # noqa: E402
from benchmarks.fixtures import token_batch  # noqa: E402


def runner(encoder: Any, batch: dict[str, np.ndarray]) -> Any:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        trainable = [v.value for v in encoder.trainable_variables]
        frozen = [v.value for v in encoder.non_trainable_variables]
        forward = jax.jit(lambda t, f, x: encoder.stateless_call(t, f, x, training=False)[0]["last_hidden_state"])
        return lambda: np.asarray(forward(trainable, frozen, batch))
    import torch

    def run() -> Any:
        with torch.no_grad():
            return keras.ops.convert_to_numpy(encoder(batch, training=False)["last_hidden_state"])

    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True, help="a checkpoint folder (run.py's WORKDIR/encoder)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    import keras

    from distilbert_heads import DistilBERT
    from distilbert_heads.model.task_model import is_matmul_layer

    quantized = DistilBERT.from_pretrained(args.weights)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have a `quantize` method", category=UserWarning)
        quantized.quantize("int8", filters=is_matmul_layer)
    batch = token_batch(args.batch, 128)
    runners = {"float32": runner(DistilBERT.from_pretrained(args.weights), batch), "int8": runner(quantized, batch)}
    stats = timing.interleaved(runners, repeats=args.repeats, warmup=2)
    reference, low = runners["float32"](), runners["int8"]()
    cosine = np.sum(low * reference, -1) / (np.linalg.norm(low, axis=-1) * np.linalg.norm(reference, axis=-1))
    result = {
        "backend": keras.backend.backend(),
        "batch": f"{args.batch}x128",
        "ms": {name: stat["median_s"] * 1e3 for name, stat in stats.items()},
        "int8_cosine_min": float(cosine.min()),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
