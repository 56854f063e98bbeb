"""Where the encoder's time goes: a `tf.profiler` trace of the graph forward pass, summed per op.

    pip install xprof                                    # reads the trace; not in the bench extra
    python benchmarks/profile_ops.py                     # DistilBERT-base, 32 x 128, float32
    python benchmarks/profile_ops.py --batch 1 --dtype bfloat16

Prints milliseconds per forward pass for each TensorFlow op type. Ops that run concurrently
(the q, k and v projections) overlap, so the column can add up to more than the wall time.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Trace events of the runtime itself, not of an op.
RUNTIME_EVENTS = ("ThreadpoolListener", "Executor", "Eager", "TFE_", "KernelAndDevice", "FunctionRun", "<lambda>")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--dtype", default=None, help="a Keras dtype policy, e.g. bfloat16 or mixed_bfloat16")
    parser.add_argument("--steps", type=int, default=None, help="traced forward passes (default 3, or 20 at batch 1)")
    args = parser.parse_args(argv)
    try:
        from xprof.convert import raw_to_tool_data
    except ImportError:
        sys.exit("profile_ops.py reads the trace with xprof: pip install xprof")
    import numpy as np
    import tensorflow as tf

    from distilbert_heads import DistilBERT

    encoder = DistilBERT.from_variant("base", **({"dtype": args.dtype} if args.dtype else {}))
    ids = np.random.default_rng(0).integers(1000, 30000, (args.batch, args.length))
    inputs = {"input_ids": tf.constant(ids, tf.int32), "attention_mask": tf.ones(ids.shape, tf.int32)}
    forward = tf.function(lambda batch: encoder(batch, training=False)["last_hidden_state"])
    for _ in range(3):
        forward(inputs).numpy()
    steps = args.steps or (20 if args.batch == 1 else 3)
    with tempfile.TemporaryDirectory(prefix="dh-profile-") as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(steps):
            forward(inputs).numpy()
        wall_ms = (time.perf_counter() - start) * 1e3 / steps
        tf.profiler.experimental.stop()
        traces = [str(path) for path in Path(logdir).rglob("*.xplane.pb")]
        data, _ = raw_to_tool_data.xspace_to_tool_data(traces, "trace_viewer", {})
    total: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    for event in json.loads(data)["traceEvents"]:
        name = event.get("name", "")
        if event.get("ph") == "X" and "dur" in event and not name.startswith(RUNTIME_EVENTS):
            total[name] += event["dur"]
            calls[name] += 1
    print(f"{args.batch} x {args.length}, dtype {args.dtype or 'float32'}: {wall_ms:.1f} ms per forward pass (traced)")
    print(f"{'op':<32} {'ms/pass':>9} {'calls/pass':>11}")
    for name, microseconds in total.most_common(15):
        print(f"{name:<32} {microseconds / 1e3 / steps:9.2f} {calls[name] // steps:11d}")


if __name__ == "__main__":
    main()
