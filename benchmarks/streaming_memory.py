"""Files of any size: peak memory and time to the first step of one training epoch, 20,000 rows against 2,000,000.

Each size runs `distilbert_heads.train` in its own fresh process on a generated sentiment JSONL (short
review-like sentences, two labels), with a small model so the epoch is about data, not compute. The
child reports its peak resident memory (``ru_maxrss``), the seconds from the call of ``train`` to the
end of the first training step, the seconds to merely read and validate the whole file (the floor a
read-everything-first loader could not beat), and the epoch's wall time.

    python benchmarks/streaming_memory.py --out benchmarks/results/streaming
    python benchmarks/streaming_memory.py --sizes 2000,20000 --out /tmp/stream   # quick

Writes ``streaming.json`` and ``streaming.md`` under ``--out``. The claim it checks: the peak memory
of the large run is under 1.5 times the small run's, and its first step starts well before the
file could have been read through.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

WORDS = {
    "pos": "great wonderful moving funny sharp warm brilliant charming clever lovely".split(),
    "neg": "dull boring flat tired clumsy weak awful bland stale messy".split(),
}
FILLER = "the film story cast plot music scenes ending script acting director camera".split()
MODEL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}


def write_rows(path: Path, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(count):
            label = rng.choice(("pos", "neg"))
            words = rng.choices(FILLER, k=rng.randint(4, 14)) + rng.choices(WORDS[label], k=2)
            rng.shuffle(words)
            handle.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")


def child(path: Path, batch_size: int) -> dict:
    import keras

    from distilbert_heads.heads.sentiment import SentimentHead
    from distilbert_heads.training import data_files
    from distilbert_heads.training.loop import train

    started = time.perf_counter()
    rows = sum(1 for _ in data_files.iter_examples(path, SentimentHead.example_schema))
    read_through = time.perf_counter() - started

    first_step: list[float] = []
    marker = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: first_step or first_step.append(time.perf_counter())
    )
    started = time.perf_counter()
    train(
        "sentiment",
        path,
        epochs=1,
        batch_size=batch_size,
        max_length=32,
        vocab_size=200,
        verbose=0,
        seed=0,
        callbacks=[marker],
        **MODEL,
    )
    ended = time.perf_counter()
    return {
        "rows": rows,
        "file_mib": path.stat().st_size / 2**20,
        "read_through_s": read_through,
        "first_step_s": first_step[0] - started,
        "epoch_s": ended - started,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20000,2000000", help="row counts, comma-separated (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.batch_size)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for size in (int(part) for part in args.sizes.split(",")):
        path = args.out / f"rows-{size}.jsonl"
        if not path.exists():
            write_rows(path, size)
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--out",
                str(args.out),
                "--child",
                str(path),
                "--batch-size",
                str(args.batch_size),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(f"the {size:,}-row run failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        print(json.dumps(result), flush=True)
        path.unlink()
    small, large = results[0], results[-1]
    ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
    report = {"machine": machine.describe(), "model": MODEL, "batch_size": args.batch_size, "runs": results}
    report["peak_rss_ratio"] = ratio
    (args.out / "streaming.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    lines = [
        "| rows | file | peak RSS | first step after | reading the file through alone | epoch |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in results:
        lines.append(
            f"| {run['rows']:,} | {run['file_mib']:.0f} MiB | {run['peak_rss_mib']:,.0f} MiB "
            f"| {run['first_step_s']:.1f} s | {run['read_through_s']:.1f} s | {run['epoch_s']:.0f} s |"
        )
    lines.append(f"\npeak RSS ratio, {large['rows']:,} rows / {small['rows']:,} rows: {ratio:.3f}")
    (args.out / "streaming.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
