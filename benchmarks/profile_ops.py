"""Where the encoder's time goes: a `tf.profiler` trace of the graph forward pass, summed per op.

    pip install xprof                                    # reads the trace; not in the bench extra
    python benchmarks/profile_ops.py                     # DistilBERT-base, 32 x 128, float32
    python benchmarks/profile_ops.py --batch 1 --dtype bfloat16
    python benchmarks/profile_ops.py --int8 --out benchmarks/results/int8/profile.txt

Prints milliseconds per forward pass for each TensorFlow op type, and the same time summed per
kind of work (GEMM, int8 quantize/dequantize, attention, LayerNorm, ...). Ops that run concurrently
(the q, k and v projections) overlap, so the column can add up to more than the wall time.
``--int8`` profiles the encoder after ``quantize("int8")`` (the layers the ``dtype="int8"`` mode
quantizes); the XLA-compiled int8 pieces show as ``XlaLaunch``/``__inference_*`` ops.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Trace events of the runtime itself, not of an op.
RUNTIME_EVENTS = ("ThreadpoolListener", "Executor", "Eager", "TFE_", "KernelAndDevice", "FunctionRun", "<lambda>")

# Trace events that wrap an XLA executable's own (HLO) events, which are counted instead.
XLA_WRAPPERS = ("CpuExecutable::", "SlinkyThreadPool::", "end: ")

# Op-name fragments -> the kind of work, first match wins (lower case). XLA's events are HLO
# instruction names ("MatMul.2", "dot.3", "fusion.1", "reduce.5"); the rest are TensorFlow op types.
# Einsum/BatchMatMul are the attention products; the elementwise TensorFlow ops around an int8 GEMM
# are its quantize/dequantize passes (and the unfused GELU after lin1's).
CATEGORIES = (
    ("int8 GEMM (oneDNN QuantizedMatMulWithBias, or XLA's dot)", ("quantizedmatmul", "xla:matmul", "xla:dot")),
    ("XLA fused loops (int8 quantize / dequantize)", ("xla:",)),
    ("attention (einsum/batch matmul, softmax)", ("einsum", "batchmatmul", "softmax")),
    ("float GEMM (MatMul, fused bias/gelu)", ("matmul", "fusedmatmul")),
    ("layernorm", ("layernorm", "mean", "squareddifference", "rsqrt", "fusedbatchnorm")),
    ("gelu (erfc, neg; unfused after an int8 layer)", ("erf", "neg")),
    (
        "other elementwise (GELU/LayerNorm products, adds, scales)",
        ("abs", "max", "round", "clip", "cast", "div", "mul", "minimum", "maximum", "biasadd", "addv2", "addn"),
    ),
    ("reshape/transpose/gather/other", ("",)),
)


def category(op: str) -> str:
    lowered = op.lower()
    # An HLO instruction of an XLA-compiled function: "dot.3", "wrapped_abs", "add_convert_fusion".
    if re.fullmatch(r"[a-z_\-]+\.\d+", lowered) or lowered.startswith("wrapped_") or "fusion" in lowered:
        lowered = "xla:" + lowered
    return next(name for name, fragments in CATEGORIES if any(f in lowered for f in fragments))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--dtype", default=None, help="a Keras dtype policy, e.g. bfloat16 or mixed_bfloat16")
    parser.add_argument("--steps", type=int, default=None, help="traced forward passes (default 3, or 20 at batch 1)")
    parser.add_argument("--int8", action="store_true", help='profile the encoder after quantize("int8")')
    parser.add_argument("--top", type=int, default=15, help="how many ops to list")
    parser.add_argument("--out", type=Path, default=None, help="also write the summary to this text file")
    args = parser.parse_args(argv)
    try:
        from xprof.convert import raw_to_tool_data
    except ImportError:
        sys.exit("profile_ops.py reads the trace with xprof: pip install xprof")
    import numpy as np
    import tensorflow as tf

    from distilbert_heads import DistilBERT

    encoder = DistilBERT.from_variant("base", **({"dtype": args.dtype} if args.dtype else {}))
    if args.int8:
        from distilbert_heads.model.task_model import is_matmul_layer

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have a `quantize` method", category=UserWarning)
            encoder.quantize("int8", filters=is_matmul_layer)
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
        if event.get("ph") == "X" and "dur" in event and not name.startswith(RUNTIME_EVENTS + XLA_WRAPPERS):
            total[name] += event["dur"]
            calls[name] += 1
    mode = "int8" if args.int8 else (args.dtype or "float32")
    lines = [f"{args.batch} x {args.length}, {mode}: {wall_ms:.1f} ms per forward pass (traced, {steps} passes)"]
    lines.append(f"{'op':<40} {'ms/pass':>9} {'calls/pass':>11}")
    for name, microseconds in total.most_common(args.top):
        lines.append(f"{name[:40]:<40} {microseconds / 1e3 / steps:9.2f} {calls[name] // steps:11d}")
    kinds: collections.Counter[str] = collections.Counter()
    for name, microseconds in total.items():
        kinds[category(name)] += microseconds
    summed = sum(kinds.values()) or 1
    lines += ["", f"{'kind of work':<66} {'ms/pass':>9} {'share':>6}"]
    for kind, microseconds in kinds.most_common():
        lines.append(f"{kind:<66} {microseconds / 1e3 / steps:9.2f} {microseconds / summed:6.1%}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        partial = args.out.with_name(args.out.name + ".partial")
        partial.write_text(text)
        partial.replace(args.out)


if __name__ == "__main__":
    main()
