"""`distilbert-heads demo`: proof on shipped data that every built-in head learns, saves and reloads.

For each built-in head, on the datasets in `distilbert_heads/demo/`: learn a vocabulary, train a
tiny DistilBERT from scratch, score it on the held-out split (names the training split never
shows), save it, reload all models in a fresh Python process and compare predictions, then
print examples and a metrics table with the chance level beside each metric.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras

from distilbert_heads.atomic import atomic_path
from distilbert_heads.demo import datasets as demo_data
from distilbert_heads.display import console, describe_answer, jsonable
from distilbert_heads.plugins.input_kinds import input_kind_of
from distilbert_heads.training.evaluation import chance_predictions, predict_examples, score_examples
from distilbert_heads.training.examples import example_items, read_task_examples
from distilbert_heads.training.loop import train
from distilbert_heads.training.report import print_metrics_table
from distilbert_heads.training.settings import ChanceLevelWarning

# -- demo -----------------------------------------------------------------------------------------------
# The demo's model: small enough that all four tasks train on 2 CPU cores in about a minute
# (the whole demo, reload included, measured at about 60 s), big enough to learn the shipped tasks.
DEMO_ENCODER = {
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": 64,
}
DEMO_MAX_LENGTH = 64
# A cased whole-word vocabulary plus token dropout: the test splits use names the training
# splits never show, and this is what makes a model this small learn the context around a
# name rather than its spelling (with word pieces it memorises the names and NER F1 stays
# near 0.4 on the held-out names).
DEMO_VOCABULARY = {"vocab_size": 2000, "lowercase": False, "whole_words": True}
# Per task: (epochs, batch size, learning rate, token dropout). A fixed number of epochs, no
# early stopping: a validation slice of the training split shares its names, so it would stop
# too early, and the test split is only for the final score.
DEMO_TRAINING = {
    "sentiment": (5, 16, 1e-3, 0.25),
    "ner": (15, 16, 1e-3, 0.25),
    "qa": (20, 16, 1e-3, 0.25),
    "pairwise": (25, 16, 1e-3, 0.1),
}
# The floor each task must reach on its held-out test split, or `demo` exits 1 (not checked with --quick).
DEMO_FLOORS = {
    "sentiment": {"accuracy": 0.9},
    "ner": {"f1": 0.6},
    "qa": {"exact_match": 0.5},
    "pairwise": {"accuracy": 0.75},
}
QUICK_TRAIN_ROWS, QUICK_TEST_ROWS, QUICK_EPOCHS = 96, 24, 1
DEMO_SHOWN = 3  # example predictions printed per task

_RELOAD_SCRIPT = """
import json, sys
import distilbert_heads, keras
from distilbert_heads.text.pipeline import pipeline

results = {}
for task, item in json.load(sys.stdin).items():
    model = keras.models.load_model(item["path"])
    pipe = pipeline(model, show_progress=False)
    kind = pipe.input_kind
    results[task] = pipe.predict_items([kind.item_from_row(row, f"row {i}") for i, row in enumerate(item["rows"])])
print("RESULTS " + json.dumps(results, default=float))
"""


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return path


def _same_answers(a: Any, b: Any, tolerance: float = 1e-3) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(_same_answers(a[key], b[key], tolerance) for key in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_answers(x, y, tolerance) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) <= tolerance
    return a == b


def run_demo(*, quick: bool = False, out: str | os.PathLike | None = None, seed: int = 0, verbose: bool = False) -> int:
    """Train, score, save and reload a tiny model per built-in head; 0 when every floor is met, else 1."""
    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="distilbert-heads-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    screen = console()
    tasks = list(DEMO_TRAINING)
    screen.print(
        f"[bold]distilbert-heads demo[/]: training a tiny DistilBERT from scratch for each built-in head "
        f"({', '.join(tasks)}) on the datasets shipped in the package, then scoring it on held-out test rows."
        + (" [yellow](--quick: a few rows and one epoch; it shows the plumbing, not learning)[/]" if quick else "")
    )
    metrics: dict[str, dict[str, float]] = {}
    baselines: dict[str, dict[str, float]] = {}
    reload_spec: dict[str, Any] = {}
    shown: dict[str, list[tuple[str, Any]]] = {}
    in_process: dict[str, list[Any]] = {}
    timings: dict[str, float] = {}
    for task in tasks:
        task_started = time.perf_counter()
        rows = _read_jsonl(demo_data.data_path(task, "train"))
        test_rows = _read_jsonl(demo_data.data_path(task, "test"))
        epochs, batch_size, learning_rate, token_dropout = DEMO_TRAINING[task]
        if quick:
            rows, test_rows, epochs = rows[:QUICK_TRAIN_ROWS], test_rows[:QUICK_TEST_ROWS], QUICK_EPOCHS
        train_path = _write_jsonl(out / "data" / f"{task}.train.jsonl", rows)
        test_path = _write_jsonl(out / "data" / f"{task}.test.jsonl", test_rows)
        screen.rule(
            f"[bold]{task}[/]: {len(rows)} training rows, {len(test_rows)} held-out test rows, {epochs} epoch(s)"
        )
        with warnings.catch_warnings():
            if quick:  # one epoch on a few rows is expected to stay at chance; the table shows chance beside it
                warnings.simplefilter("ignore", ChanceLevelWarning)
            result = train(
                task,
                train_path,
                epochs=epochs,
                batch_size=batch_size,
                learning_rate=learning_rate,
                token_dropout=token_dropout,
                max_length=DEMO_MAX_LENGTH,
                out=out / f"{task}.keras",
                verbose=2 if verbose else 0,
                **DEMO_VOCABULARY,
                **DEMO_ENCODER,
            )
        model = result.model
        _, head = model.select_head()
        test_examples = read_task_examples(test_path, type(head), task)
        metrics[task] = score_examples(model, test_examples, max_length=DEMO_MAX_LENGTH, path=test_path)
        baselines[task] = {
            key: float(value)
            for key, value in head.evaluate(test_examples, chance_predictions(head, test_examples)).items()
        }
        sample = test_examples[:DEMO_SHOWN]
        in_process[task] = [jsonable(a) for a in predict_examples(model, sample, max_length=DEMO_MAX_LENGTH)]
        kind = input_kind_of(head)
        rows = [{field: getattr(example, field) for field in kind.fields} for example in sample]
        reload_spec[task] = {"path": str(result.path), "rows": rows}
        shown[task] = [(kind.show(item), answer) for item, answer in zip(example_items(head, sample), in_process[task])]
        timings[task] = time.perf_counter() - task_started
        primary = next(iter(DEMO_FLOORS[task]))
        screen.print(
            f"{task}: {result.epochs_run} epoch(s) in {timings[task]:.1f}s; test {primary} "
            f"{metrics[task].get(primary, float('nan')):.3f} "
            f"(chance {baselines[task].get(primary, float('nan')):.3f}); "
            f"saved {result.path}"
        )

    screen.rule("[bold]reloading the saved models in a fresh Python process[/]")
    reload_started = time.perf_counter()
    reloaded = _reload_in_fresh_process(reload_spec)
    mismatches = [task for task in tasks if not _same_answers(in_process[task], reloaded.get(task))]
    screen.print(
        f"fresh process: `import distilbert_heads, keras; keras.models.load_model(...)` loaded {len(reloaded)} models "
        f"in {time.perf_counter() - reload_started:.1f}s; predictions "
        + (
            "[green]identical to the in-process ones[/]"
            if not mismatches
            else f"[bold red]differ for {', '.join(mismatches)}[/]"
        )
    )
    for task in tasks:
        screen.print(f"\n[bold]{task}[/] (predictions of the reloaded model on test rows)")
        for (text, _), answer in zip(shown[task], reloaded.get(task, [])):
            screen.print(f"  {text}\n    -> {describe_answer(answer)}", markup=False, highlight=False)

    floors = None if quick else DEMO_FLOORS
    print_metrics_table(
        metrics,
        title="held-out test metrics",
        baselines=baselines,
        floors=floors,
        caption="chance: the majority class (classification), no entities (NER), a random 1-3 word "
        "span of the context (QA)",
    )
    failed = [
        f"{task} {metric} {metrics[task].get(metric, 0.0):.3f} < {floor}"
        for task, task_floors in DEMO_FLOORS.items()
        for metric, floor in task_floors.items()
        if metrics[task].get(metric, 0.0) < floor
    ]
    total = time.perf_counter() - started
    screen.print(
        f"models and data in {out}; total time {total:.0f}s "
        f"({', '.join(f'{task} {seconds:.0f}s' for task, seconds in timings.items())})"
    )
    if mismatches:
        print(
            f"error: the reloaded models' predictions differ from the trained ones for {', '.join(mismatches)}",
            file=sys.stderr,
        )
        return 1
    if failed and not quick:
        print(f"error: below the documented floor: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _reload_in_fresh_process(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Load every saved model in a new interpreter and return its predictions on the spec's inputs."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run(
        [sys.executable, "-c", _RELOAD_SCRIPT],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    line = next((out for out in completed.stdout.splitlines() if out.startswith("RESULTS ")), None)
    if completed.returncode != 0 or line is None:
        tail = " | ".join(completed.stderr.strip().splitlines()[-3:])
        raise RuntimeError(
            f"reloading the saved models in a fresh process failed (exit {completed.returncode}): {tail}"
        )
    return json.loads(line[len("RESULTS ") :])
