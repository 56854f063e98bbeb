"""Distil a fine-tuned real model into a 3-layer student, side by side with the student trained alone.

Real weights and data as in `finetune_real.py` (same fetch, same seeded 80/10/10 split of the VADER
movie snippets): the teacher is all-MiniLM-L6-v2 (6 layers, hidden 384) fine-tuned for sentiment with
our CLI. Both students start from the same weights, `student_from_teacher(teacher, layers=[0, 2, 4])`
(the teacher's embeddings, its layers 0, 2 and 4 and its head), and train with the same settings:

- **student alone**: `distilbert-heads train --pretrained student_init.keras` (the labels only);
- **distilled student**: `distilbert-heads distill` with the teacher (0.5 x the head's loss on the
  labels + 0.5 x soft targets at temperature 2, the task-specific recipe of the DistilBERT paper's
  SQuAD experiments).

All three are scored on the same held-out test rows (`distilbert-heads evaluate`). Throughput is the
encoder and head alone (`predict_on_batch` on the test rows, tokenized once, batches of 32 padded to
their longest row), teacher and student timed round-robin in one process, so load hits both alike.
Each training runs in its own process, one after the other.

    pip install -e ".[bench]"
    python benchmarks/distill_real.py --out benchmarks/results/distill                    # full run
    python benchmarks/distill_real.py --limit 400 --epochs 1 --out /tmp/distill           # smoke run
    python benchmarks/distill_real.py --teacher T.keras --out ...   # reuse a fine-tuned teacher
    python benchmarks/distill_real.py --retime --out benchmarks/results/distill   # time the saved models again

It writes `distill.json` (machine, versions, settings, accuracies, throughputs, targets) and
`distill.md` (the table) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import finetune_real  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
import machine  # noqa: E402

STUDENT_LAYERS = (0, 2, 4)
TARGET_ACCURACY_SHARE = 0.97
TARGET_SPEEDUP = 1.8

_STUDENT_SCRIPT = r"""
import sys
from distilbert_heads.distillation.student import student_from_teacher
student = student_from_teacher(sys.argv[1], layers=[int(i) for i in sys.argv[3].split(",")])
student.save(sys.argv[2])
"""

_THROUGHPUT_SCRIPT = r"""
import json, sys
import keras
import distilbert_heads  # registers the classes load_model needs
import timing

settings = json.loads(sys.argv[1])
texts = [json.loads(line)["text"] for line in open(settings["test"], encoding="utf-8")]
models = {name: keras.models.load_model(path) for name, path in settings["models"].items()}
tokenizer = next(iter(models.values())).tokenizer
batches = [
    tokenizer.encode(texts[i : i + settings["batch_size"]], max_length=settings["max_length"]).as_model_inputs()
    for i in range(0, len(texts), settings["batch_size"])
]

def run_all(model):
    return lambda: [model.predict_on_batch(batch) for batch in batches]

timed = timing.interleaved({name: run_all(model) for name, model in models.items()}, repeats=settings["repeats"])
result = {name: {**stats, "sequences_per_s": len(texts) / stats["median_s"]} for name, stats in timed.items()}
print("RESULT " + json.dumps({"texts": len(texts), "batches": len(batches), "sides": result}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for distill.json and distill.md")
    parser.add_argument("--work", type=Path, default=None, help="download and data folder (default: <out>/work)")
    parser.add_argument("--teacher", type=Path, default=None, help="a fine-tuned teacher .keras to reuse")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes over the test rows per model")
    parser.add_argument("--limit", type=int, default=None, help="use only this many rows (smoke runs)")
    parser.add_argument(
        "--retime",
        action="store_true",
        help="only time the models of the run recorded in <out>/distill.json again (e.g. on an idle machine)",
    )
    return parser.parse_args(argv)


def _run(command: list[str], what: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{what} failed ({' '.join(command[:3])} ...):\n{done.stderr[-3000:]}")
    print(f"{what}: {seconds:.0f} s", file=sys.stderr)
    return done, seconds


def common_flags(args: argparse.Namespace, files: dict[str, Path]) -> list[str]:
    """The settings every training here shares: data, epochs, batch, rate, warmup, length, seed."""
    return [
        "--train", str(files["train"]), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--learning-rate", str(args.learning_rate), "--max-length", str(args.max_length),
        "--warmup-ratio", "0.1", "--seed", str(args.seed), "--json",
    ]  # fmt: skip


def train_teacher(args: argparse.Namespace, model_dir: Path, files: dict[str, Path], work: Path) -> dict[str, Any]:
    if args.teacher is not None:
        return {"path": str(args.teacher), "reused": True}
    out = work / "teacher.keras"
    command = ["distilbert-heads", "train", "--task", "sentiment", "--pretrained", str(model_dir), "--out", str(out)]
    # The teacher alone picks its best epoch on the dev rows; the students train the same epochs and both keep
    # their last, so they differ only in the teacher's signal.
    command += ["--eval", str(files["dev"]), "--patience", "0"]
    done, seconds = _run(command + common_flags(args, files), "teacher fine-tuning")
    return {"path": str(out), "train_seconds": seconds, "epoch_seconds": json.loads(done.stdout)["epoch_seconds"]}


def train_students(args: argparse.Namespace, teacher: Path, files: dict[str, Path], work: Path) -> dict[str, Any]:
    start = work / "student_init.keras"
    layers = ",".join(map(str, STUDENT_LAYERS))
    _run([sys.executable, "-c", _STUDENT_SCRIPT, str(teacher), str(start), layers], "student from teacher")
    alone, distilled = work / "student_alone.keras", work / "student_distilled.keras"
    _, alone_seconds = _run(
        ["distilbert-heads", "train", "--task", "sentiment", "--pretrained", str(start), "--out", str(alone)]
        + common_flags(args, files),
        "student alone",
    )
    _, distil_seconds = _run(
        ["distilbert-heads", "distill", "--teacher", str(teacher), "--student", str(start), "--out", str(distilled)]
        + ["--temperature", str(args.temperature)]
        + common_flags(args, files),
        "distilled student",
    )
    return {
        "student alone": {"path": str(alone), "train_seconds": alone_seconds},
        "distilled student": {"path": str(distilled), "train_seconds": distil_seconds},
    }


def accuracy(model: Path, test: Path) -> float:
    done, _ = _run(["distilbert-heads", "evaluate", "--model", str(model), "--data", str(test), "--json"], "evaluate")
    return float(json.loads(done.stdout)["accuracy"])


def throughput(args: argparse.Namespace, models: dict[str, str], test: Path) -> dict[str, Any]:
    settings = {
        "test": str(test), "models": models, "batch_size": 32, "max_length": args.max_length, "repeats": args.repeats,
    }  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    done = subprocess.run(
        [sys.executable, "-c", _THROUGHPUT_SCRIPT, json.dumps(settings)], capture_output=True, text=True, env=env
    )
    line = next((out for out in done.stdout.splitlines() if out.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"throughput failed:\n{done.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def report(results: dict[str, Any], out: Path) -> str:
    sides, targets = results["sides"], results["targets"]
    teacher = sides["teacher"]
    lines = [
        f"Distilling all-MiniLM-L6-v2 fine-tuned on {results['rows']} movie-review snippets ({results['split']}) "
        f"into a student of its layers {list(STUDENT_LAYERS)}, {results['settings']['epochs']} epoch(s) each; "
        f"{results['machine']['cpu']['model']}, {results['machine']['cpu']['logical_cores']} cores.",
        "",
        "| | layers | held-out accuracy | share of teacher's | sequences/s | speed vs teacher | train time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, side in sides.items():
        lines.append(
            f"| {name} | {side['layers']} | {side['accuracy']:.4f} | {side['accuracy'] / teacher['accuracy']:.1%} | "
            f"{side['sequences_per_s']:.0f} | {side['sequences_per_s'] / teacher['sequences_per_s']:.2f}x | "
            + (f"{side['train_seconds']:.0f} s |" if "train_seconds" in side else "reused |")
        )
    lines += [
        "",
        f"Targets: distilled keeps >= {TARGET_ACCURACY_SHARE:.0%} of the teacher's accuracy: "
        f"{'met' if targets['accuracy_share_met'] else 'missed'} ({targets['accuracy_share']:.1%}); "
        f">= {TARGET_SPEEDUP}x its throughput: {'met' if targets['speedup_met'] else 'missed'} "
        f"({targets['speedup']:.2f}x); beats the student trained alone: "
        f"{'met' if targets['beats_alone'] else 'missed'} ({targets['over_alone'] * 100:+.2f} points).",
        "",
        "Throughput: `predict_on_batch` over the test rows tokenized once, batches of 32 padded to their longest "
        "row, models timed round-robin in one process (median of the passes). Train time: the whole command.",
    ]
    text = "\n".join(lines) + "\n"
    (out / "distill.md").write_text(text, encoding="utf-8")
    (out / "distill.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return text


def with_throughput(results: dict[str, Any], speed: dict[str, Any]) -> dict[str, Any]:
    """``results`` with each side's throughput from ``speed`` and the targets worked out again."""
    sides = results["sides"]
    for name, side in sides.items():
        side["sequences_per_s"] = speed["sides"][name]["sequences_per_s"]
        side["timing"] = speed["sides"][name]
    distilled, alone, teacher = sides["distilled student"], sides["student alone"], sides["teacher"]
    share = distilled["accuracy"] / teacher["accuracy"]
    speedup = distilled["sequences_per_s"] / teacher["sequences_per_s"]
    results["targets"] = {
        "accuracy_share": share,
        "accuracy_share_met": share >= TARGET_ACCURACY_SHARE,
        "speedup": speedup,
        "speedup_met": speedup >= TARGET_SPEEDUP,
        "over_alone": distilled["accuracy"] - alone["accuracy"],
        "beats_alone": distilled["accuracy"] > alone["accuracy"],
    }
    return results


def retime(args: argparse.Namespace) -> dict[str, Any]:
    results = json.loads((args.out / "distill.json").read_text(encoding="utf-8"))
    test = Path(results["settings"]["work"] or args.out / "work") / "movies.test.jsonl"
    speed = throughput(args, {name: side["path"] for name, side in results["sides"].items()}, test)
    results["timing_machine"] = machine.describe()  # the training ran on results["machine"]
    print(report(with_throughput(results, speed), args.out))
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.retime:
        return retime(args)
    work = args.work or args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir, snippets = finetune_real.fetch(work)
    files = finetune_real.split(snippets, work, args.seed, args.limit)
    counts = {name: sum(1 for _ in path.open(encoding="utf-8")) for name, path in files.items()}
    teacher = train_teacher(args, model_dir, files, work)
    students = train_students(args, Path(teacher["path"]), files, work)
    sides = {"teacher": {**teacher, "layers": 6}}
    sides.update({name: {**side, "layers": len(STUDENT_LAYERS)} for name, side in students.items()})
    for side in sides.values():
        side["accuracy"] = accuracy(Path(side["path"]), files["test"])
    speed = throughput(args, {name: side["path"] for name, side in sides.items()}, files["test"])
    results = {
        "machine": machine.describe(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
        "rows": sum(counts.values()),
        "split": "/".join(str(counts[name]) for name in ("train", "dev", "test")) + " train/dev/test",
        "sides": sides,
    }
    print(report(with_throughput(results, speed), args.out))
    return results


if __name__ == "__main__":
    main()
