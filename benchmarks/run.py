"""Run the distilbert-heads CPU benchmarks and write ``latest.json`` and ``latest.md``.

    python benchmarks/run.py --out benchmarks/results            # full run, ~10 minutes
    python benchmarks/run.py --quick --only plugins              # smoke run, < 1 minute
    python benchmarks/run.py --quick --only gemm,encoder         # any subset of the sections

Sections: gemm (matmul ceiling), encoder (inference, float32 and bf16), int8 (ours after
quantize("int8") beside float32 and ONNX Runtime's dynamic int8), pipeline (text
throughput), train (one training step), plugins (import and lookup cost). Ours runs on the
TensorFlow backend (KERAS_BACKEND is set to tensorflow here). Contenders are timed round-robin
in one process, so load from elsewhere on the machine hits them alike; the load average at the
start and end is recorded. Peers that are not installed are skipped with a note.
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECTIONS = ("gemm", "encoder", "int8", "pipeline", "train", "plugins")
TINY_SECTIONS = ("gemm", "encoder")
TINY_SHAPES = {"throughput": (4, 16), "latency": (1, 16)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        help="directory for latest.json and latest.md (default: benchmarks/results)",
    )
    parser.add_argument("--quick", action="store_true", help="few repeats and a small corpus: numbers are rough")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, from {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where checkpoints and the ONNX export go (default: a temporary directory)",
    )
    parser.add_argument("--corpus-size", type=int, default=None, help="sentences in the pipeline corpus")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a 2-layer, hidden-32 model at 4 x 16 and 1 x 16: every code path of gemm,encoder in a minute (tests)",
    )
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.tiny and set(args.sections) - set(TINY_SECTIONS):
        parser.error(f"--tiny runs only {', '.join(TINY_SECTIONS)}; got --only {args.only}")
    return args


def _section(name: str, fn: Any, results: dict[str, Any]) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {name} (load {os.getloadavg()[0]:.2f}) ...", flush=True)
    start = time.perf_counter()
    results[name] = fn()
    results[name]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    results[name]["seconds"] = round(time.perf_counter() - start, 1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from benchmarks import machine, report

    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "quick": args.quick,
        "tiny": args.tiny,
        "machine": machine.describe(),
        "load_average_start": machine.load_average(),
    }
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="dh-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        needs_weights = {"encoder", "int8", "pipeline", "train"} & set(args.sections)
        fx = None
        if needs_weights:
            from benchmarks import fixtures

            corpus = args.corpus_size or (128 if args.quick else 512)
            fx = fixtures.prepare(workdir, corpus, fixtures.TINY_ENCODER if args.tiny else None)
        if "gemm" in args.sections or "encoder" in args.sections:
            from benchmarks import gemm

            size = 256 if args.tiny else 2048 if args.quick else 4096
            _section("gemm", lambda: gemm.measure(size, 3 if args.quick else 5), results)
        if "encoder" in args.sections:
            from benchmarks import inference

            shapes = TINY_SHAPES if args.tiny else None
            _section("encoder", lambda: inference.run(fx, args.quick, results.get("gemm"), shapes), results)
        if "int8" in args.sections:
            from benchmarks import int8

            _section("int8", lambda: int8.run(fx, args.quick), results)
        if "pipeline" in args.sections:
            from benchmarks import textpipe

            _section("pipeline", lambda: textpipe.run(fx, args.quick), results)
        if "train" in args.sections:
            from benchmarks import train_step

            _section("train", lambda: train_step.run(fx, args.quick), results)
        if "plugins" in args.sections:
            from benchmarks import plugins

            _section("plugins", lambda: plugins.run(args.quick, env), results)
    results["load_average_end"] = machine.load_average()
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    table = report.markdown(results)
    (args.out / "latest.md").write_text(table)
    print(table)
    return results


if __name__ == "__main__":
    main()
