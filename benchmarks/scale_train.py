"""Training throughput of data-parallel training: 1 process against N processes on this machine (JAX backend).

Each configuration trains the same small DistilBERT (4 layers, hidden 256, 4 heads, FFN 1024; a vocabulary learnt
from the rows) with `distilbert_heads.training.loop.train` on the same file, global batch and seed; with N
processes they join through `keras.distribution.initialize` on a free localhost port (gloo collectives) and each
feeds batch / N rows of every global batch. Throughput is global samples per second over ``--steps`` training
steps after ``--warmup`` steps (compilation), timed in process 0 with the step's result awaited at both ends.

    KERAS_BACKEND=jax python benchmarks/scale_train.py --out benchmarks/results/scale_train
    python benchmarks/scale_train.py --processes 1 2 4 --steps 20 --out /tmp/scale

It writes `scale_train.json` (machine, settings, per-configuration rates) and `scale_train.md` under ``--out``.
On a machine whose cores are all that the processes share, expect no gain: one XLA process already uses every core
for its matrix products, and a second process splits the same cores while adding an all-reduce of the gradients
per step.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

ENCODER = {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 1024}

_WORKER = r"""
import json, sys, time
import keras
import numpy as np
from distilbert_heads.training.loop import train

settings = json.loads(sys.argv[1])

class Timer(keras.callbacks.Callback):
    steps = 0
    started = ended = None
    def on_train_batch_end(self, batch, logs=None):
        Timer.steps += 1
        if Timer.steps in (settings["warmup"], settings["warmup"] + settings["steps"]):
            int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))  # wait for the step to finish
            now = time.perf_counter()
            if Timer.steps == settings["warmup"]:
                Timer.started = now
            else:
                Timer.ended = now
                self.model.stop_training = True

train("sentiment", settings["data"], epochs=1, batch_size=settings["batch_size"], max_length=settings["max_length"],
      seed=0, verbose=0, callbacks=[Timer()], distribution=settings.get("distribution"), **settings["encoder"])
if settings.get("distribution") is None or settings["distribution"]["process_id"] == 0:
    seconds = Timer.ended - Timer.started
    print("RESULT " + json.dumps({"seconds": seconds,
                                  "samples_per_second": settings["steps"] * settings["batch_size"] / seconds}))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_rows(path: Path, rows: int) -> None:
    words = "the film was great awful dull moving bright a plot cast story ending slow fun".split()
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as file:
        for index in range(rows):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(8, 40)))
            file.write(json.dumps({"text": text, "label": ("positive", "negative")[index % 2]}) + "\n")


def measure(processes: int, settings: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
    port = _free_port()
    launched = []
    started = time.perf_counter()
    for index in range(processes):
        spec = dict(settings)
        if processes > 1:
            spec["distribution"] = {"coordinator": f"127.0.0.1:{port}", "num_processes": processes, "process_id": index}
        launched.append(
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, json.dumps(spec)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [process.communicate(timeout=1800)[0] for process in launched]
    for process, output in zip(launched, outputs):
        if process.returncode != 0:
            raise SystemExit(f"a training process failed:\n{output[-3000:]}")
    result = next(json.loads(line[7:]) for line in outputs[0].splitlines() if line.startswith("RESULT "))
    return {"processes": processes, **result, "wall_seconds": time.perf_counter() - started}


def markdown(report: dict[str, Any]) -> str:
    base = report["results"][0]["samples_per_second"]
    cpu = report["machine"]["cpu"]
    lines = [
        "# Data-parallel training throughput (JAX, processes on one machine)",
        "",
        f"Machine: {cpu.get('model')}, {cpu.get('usable_cores')} usable cores, {report['machine']['memory_gb']} GB; "
        f"load average before/after: {report['load_average']['before']} / {report['load_average']['after']} "
        "(other work on the machine shares the cores).",
        f"Model: {report['settings']['encoder']}, global batch {report['settings']['batch_size']}, "
        f"max length {report['settings']['max_length']}, {report['settings']['steps']} steps timed after "
        f"{report['settings']['warmup']} warm-up steps.",
        "",
        "| processes | samples/s | vs 1 process | run wall time (s) |",
        "|---|---|---|---|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['processes']} | {row['samples_per_second']:.1f} | {row['samples_per_second'] / base:.2f}x "
            f"| {row['wall_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "rows.jsonl"
    write_rows(data, (args.warmup + args.steps + 2) * args.batch_size)
    settings = {
        "data": str(data),
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "warmup": args.warmup,
        "steps": args.steps,
        "encoder": ENCODER,
    }
    before = machine.load_average()
    results = [measure(count, settings) for count in args.processes]
    load = {"before": before, "after": machine.load_average()}
    report = {"machine": machine.describe(), "load_average": load, "settings": settings, "results": results}
    (args.out / "scale_train.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (args.out / "scale_train.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))


if __name__ == "__main__":
    main()
