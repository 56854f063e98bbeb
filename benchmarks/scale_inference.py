"""Batch inference on Ray Data: samples/s over N texts with 1 actor against 2, beside the in-process pipeline.

A DistilBERT of the chosen variant (random weights, a sentiment head, a WordPiece vocabulary over the
generated words) is saved to ``.keras``; N review-like texts of 8 to 40 words are answered three ways
on this machine:

- ``pipeline``: `distilbert_heads.pipeline` in this process, one worker, no Ray (the reference rate);
- ``ray, 1 actor`` and ``ray, 2 actors``: `distilbert_heads.ray_data.predict` on a local Ray cluster
  with as many CPUs as this machine has (``num_cpus=1`` per actor).

For the Ray runs it reports the wall time from ``predict`` to the last answer (actor start-up and
model loads included) and the steady rate: rows answered divided by the span from the first batch
an actor started to the last one it finished, summed over actors (a `BatchPredictor` subclass stamps
each batch). The per-actor steady rate is what a cluster projection scales (see the report).

    python benchmarks/scale_inference.py --out benchmarks/results/scale_inference
    python benchmarks/scale_inference.py --texts 400 --variant tiny --out /tmp/scale   # quick

Writes ``scale_inference_<variant>.json`` and ``.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

from distilbert_heads.serving.batch import BatchPredictor  # noqa: E402

WORDS = (
    "the film story cast plot music scenes ending script acting director camera great wonderful moving funny "
    "sharp warm brilliant charming clever lovely dull boring flat tired clumsy weak awful bland stale messy "
    "and but with a of to in was is it this that very too quite"
).split()


class TimedPredictor(BatchPredictor):
    """`BatchPredictor` that adds, per row, the process that answered it and when its batch started and ended."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        started = time.time()
        result = super().__call__(batch)
        rows = len(result[self.answer_column])
        return {
            **result,
            "worker": np.full(rows, os.getpid()),
            "started": np.full(rows, started),
            "ended": np.full(rows, time.time()),
        }


def make_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(8, 40))) for _ in range(count)]


def make_model(variant: str, folder: Path) -> Path:
    from distilbert_heads import create_distilbert_with_head
    from distilbert_heads.text.tokenizer import DistilBertTokenizer

    tokenizer = DistilBertTokenizer.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])
    model = create_distilbert_with_head(
        task_type="sentiment", distilbert_variant=variant, vocab_size=tokenizer.vocab_size, tokenizer=tokenizer
    )
    model.max_length = 128
    path = folder / f"{variant}.keras"
    model.save(path)
    return path


def steady_rate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per actor: rows per second after its first batch (which pays for tracing the predict function), from the
    end of that batch to the end of its last; and the sum over actors."""
    batches: dict[int, dict[float, list[float]]] = {}
    for row in rows:
        entry = batches.setdefault(int(row["worker"]), {}).setdefault(float(row["started"]), [float(row["ended"]), 0])
        entry[1] += 1
    per_actor, counts = [], []
    for worker_batches in batches.values():
        ordered = sorted(worker_batches.items())
        counts.append(sum(count for _, (_, count) in ordered))
        if len(ordered) > 1:
            later = ordered[1:]
            span = max(end for _, (end, _) in later) - ordered[0][1][0]
        else:
            later, span = ordered, ordered[0][1][0] - ordered[0][0]
        per_actor.append(sum(count for _, (_, count) in later) / span)
    return {
        "rows_per_actor": sorted(counts),
        "per_actor_samples_per_s": sorted(round(rate, 2) for rate in per_actor),
        "steady_samples_per_s": round(sum(per_actor), 2),
    }


def run(
    texts: list[str], model_path: Path, actor_counts: list[int], batch_size: int, threads: int | None
) -> list[dict[str, Any]]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a loopback cluster for one run: no token under ~/.ray
    import ray

    from distilbert_heads import pipeline, ray_data

    results = []
    pipe = pipeline(model_path, show_progress=False)
    pipe(texts[:64])  # the first calls trace the predict function; time what follows
    start = time.perf_counter()
    expected = pipe(texts)
    seconds = time.perf_counter() - start
    results.append(
        {
            "setup": "pipeline (in process)",
            "actors": 0,
            "wall_s": round(seconds, 2),
            "samples_per_s": round(len(texts) / seconds, 2),
        }
    )

    ray_dir = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must stay under 107 characters
    ray.init(
        _temp_dir=ray_dir,
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        for actors in actor_counts:
            dataset = ray.data.from_items(
                [{"id": i, "text": text} for i, text in enumerate(texts)], override_num_blocks=max(8, 4 * actors)
            )
            start = time.perf_counter()
            rows = ray_data.predict(
                dataset,
                model_path,
                actors=actors,
                batch_size=batch_size,
                predictor=TimedPredictor,
                ray_options={"runtime_env": {"env_vars": {"TF_NUM_INTRAOP_THREADS": str(threads)}}}
                if threads
                else None,
            ).take_all()
            seconds = time.perf_counter() - start
            answers = {row["id"]: json.loads(row["answer"]) for row in rows}
            same = sum(answers[i]["label"] == expected[i]["label"] for i in range(len(texts)))
            results.append(
                {
                    "setup": f"ray, {actors} actor{'s' * (actors > 1)}",
                    "actors": actors,
                    "wall_s": round(seconds, 2),
                    "samples_per_s": round(len(texts) / seconds, 2),
                    **steady_rate(rows),
                    "labels_equal_to_pipeline": f"{same}/{len(texts)}",
                }
            )
    finally:
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
    return results


def markdown(report: dict[str, Any]) -> str:
    cpu = report["machine"]["cpu"]
    lines = [
        f"# Batch inference on Ray Data: {report['texts']:,} texts, DistilBERT-{report['variant']}",
        "",
        f"{cpu['model']}, {cpu['usable_cores']} usable cores, load average before {report['load_before']}, "
        f"after {report['load_after']}; Ray batch {report['batch_size']} rows, forward passes of 32, "
        f"TensorFlow threads per actor: {report['threads_per_actor'] or 'every core'}.",
        "",
        "| setup | wall s (start-up included) | samples/s end to end | steady samples/s | per actor "
        "| labels as pipeline's |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['setup']} | {row['wall_s']} | {row['samples_per_s']} | {row.get('steady_samples_per_s', '-')} "
            f"| {', '.join(map(str, row.get('per_actor_samples_per_s', []))) or '-'} "
            f"| {row.get('labels_equal_to_pipeline', '-')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=2000, help="how many texts (default 2000)")
    parser.add_argument("--variant", default="small", choices=("tiny", "small", "base"))
    parser.add_argument("--actors", default="1,2", help="actor counts to run, comma-separated (default 1,2)")
    parser.add_argument("--batch-size", type=int, default=128, help="rows per Ray batch (default 128)")
    parser.add_argument(
        "--threads", type=int, help="TensorFlow threads per actor (TF_NUM_INTRAOP_THREADS; default: every core)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for scale_inference_<variant>.json and .md")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    texts = make_texts(args.texts)
    load_before = machine.load_average()
    with tempfile.TemporaryDirectory() as folder:
        model_path = make_model(args.variant, Path(folder))
        results = run(texts, model_path, [int(n) for n in args.actors.split(",")], args.batch_size, args.threads)
    report = {
        "texts": args.texts,
        "variant": args.variant,
        "batch_size": args.batch_size,
        "threads_per_actor": args.threads,
        "load_before": load_before,
        "load_after": machine.load_average(),
        "machine": machine.describe(),
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"scale_inference_{args.variant}" + (f"_{args.threads}thread" if args.threads else "")
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
