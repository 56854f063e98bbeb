"""Our TensorFlow graph against ONNX Runtime on the same exported task model (`export_onnx`).

DistilBERT-base with a sentiment head, random weights (seed 0), exported with
`distilbert_heads.serving.onnx_export.export_onnx`; both contenders run that one model on the
same int32 batches, 1 x 128 (latency) and 32 x 128 (throughput), timed interleaved (median of
repeats, warmed up, `benchmarks.timing`). Ours is the model under ``tf.function`` (oneDNN kernels,
no XLA: the path `pipeline` and the SavedModel export use); ONNX Runtime runs with all graph
optimizations, one thread per core and no spinning (`peers.ort_session`)::

    pip install -e ".[bench,onnx]"
    python benchmarks/onnx_vs_tf.py --out benchmarks/results/onnx      # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import keras  # noqa: E402  (after KERAS_BACKEND is set)
import numpy as np  # noqa: E402

from benchmarks import machine, peers, timing  # noqa: E402
from distilbert_heads import create_distilbert_with_head  # noqa: E402
from distilbert_heads.serving.onnx_export import MODEL_FILE, export_onnx  # noqa: E402

SHAPES = {"latency 1x128": (1, 128), "throughput 32x128": (32, 128)}


def batch(size: int, length: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "input_ids": rng.integers(1000, 30000, (size, length)).astype("int32"),
        "attention_mask": np.ones((size, length), "int32"),
    }


def run(repeats: int, workdir: Path) -> dict[str, Any]:
    keras.utils.set_random_seed(0)
    model = create_distilbert_with_head("sentiment", distilbert_variant="base")
    start = time.perf_counter()
    export_onnx(model, workdir / "onnx")
    export_s = time.perf_counter() - start
    session = peers.ort_session(workdir / "onnx" / MODEL_FILE)
    graph = peers.tf_function(lambda d: model(d, training=False)["sentiment"]["logits"], jit_compile=False)
    rows = {}
    for label, (size, length) in SHAPES.items():
        inputs = batch(size, length)
        tensors = peers.to_tf(inputs)
        ours = graph(tensors).numpy()
        theirs = session.run(["sentiment__logits"], inputs)[0]
        times = timing.interleaved(
            {
                "ours (TensorFlow graph)": lambda tensors=tensors: graph(tensors).numpy(),
                "ONNX Runtime": lambda inputs=inputs: session.run(["sentiment__logits"], inputs),
            },
            repeats=repeats,
        )
        rows[label] = {"times": times, "max_abs_difference": float(np.max(np.abs(ours - theirs))), "batch": size}
    return {"export_s": export_s, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| shape | ours, TensorFlow graph (median ms) | ONNX Runtime (median ms) | ORT speed-up | max abs diff |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, row in result["rows"].items():
        ours, ort = row["times"]["ours (TensorFlow graph)"], row["times"]["ONNX Runtime"]
        lines.append(
            f"| {label} | {ours['median_s'] * 1e3:.1f} | {ort['median_s'] * 1e3:.1f} | "
            f"{ours['median_s'] / ort['median_s']:.2f}x | {row['max_abs_difference']:.1e} |"
        )
    cpu = result["machine"]["cpu"]
    lines.append("")
    lines.append(
        f"Export took {result['export_s']:.1f} s. {cpu.get('model', 'CPU')}, {cpu.get('usable_cores', '?')} cores; "
        f"load average {result['load_before']} before, {result['load_after']} after; "
        f"{result['repeats']} interleaved repeats per shape."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per contender and shape")
    parser.add_argument("--out", type=Path, help="folder for onnx_vs_tf.json and onnx_vs_tf.md")
    args = parser.parse_args(argv)
    load_before = machine.load_average()
    with tempfile.TemporaryDirectory() as workdir:
        result = run(args.repeats, Path(workdir))
    result.update(
        machine=machine.describe(), load_before=load_before, load_after=machine.load_average(), repeats=args.repeats
    )
    table = markdown(result)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "onnx_vs_tf.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        (args.out / "onnx_vs_tf.md").write_text(table + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
