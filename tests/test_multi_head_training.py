"""Several heads on one encoder, one training file per head: `train({task: file, ...})` and
``distilbert-heads train --head TASK=FILE ...``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import TINY_TRAINING as TINY
from helpers import assert_mentions, demo_rows, demo_vocab_tokenizer, train_worker_command

import distilbert_heads  # noqa: F401  (registers the Keras classes)
from distilbert_heads import pipeline
from distilbert_heads.cli import main
from distilbert_heads.model.factory import create_distilbert_with_heads
from distilbert_heads.plugins.input_kinds import PAIR
from distilbert_heads.training import data_files, multi_head
from distilbert_heads.training.callbacks import HeadEvaluationCallback
from distilbert_heads.training.checkpointing import BEST, LAST, load_checkpoint
from distilbert_heads.training.data_files import DataFileError
from distilbert_heads.training.examples import example_schema
from distilbert_heads.training.loop import train
from distilbert_heads.training.multi_head import HeadFile, MultiHeadStream, _TargetTemplate
from distilbert_heads.training.settings import TrainingError

pytestmark = pytest.mark.filterwarnings("ignore::distilbert_heads.training.ChanceLevelWarning")  # tiny runs

SETTINGS = {"batch_size": 8, "max_length": 32, "verbose": 0, "seed": 0, **TINY}
# Row counts that do not fill their last batch, so partial batches are interleaved too.
ROWS = {"sentiment": 37, "ner": 21, "pairwise": 13}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    return path


def task_rows(task: str, count: int) -> list[dict]:
    rows = demo_rows(task)
    return [rows[i % len(rows)] for i in range(count)]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("heads")
    return {
        task: {
            "train": write_jsonl(folder / f"{task}.jsonl", task_rows(task, count)),
            "eval": write_jsonl(folder / f"{task}_dev.jsonl", demo_rows(task, 8, "test")),
        }
        for task, count in ROWS.items()
    }


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
    """Sentiment (text), NER (tokens) and pairwise (text pairs) heads, trained together for 2 epochs and saved."""
    out = tmp_path_factory.mktemp("model") / "multi.keras"
    result = train(
        {task: paths["train"] for task, paths in files.items()},
        eval_files={task: paths["eval"] for task, paths in files.items()},
        loss_weights={"ner": 0.5},
        epochs=2,
        out=out,
        **SETTINGS,
    )
    return result


def test_a_multi_head_run_reports_each_heads_metrics_on_its_own_eval_file(trained):
    assert set(trained.metrics) == set(ROWS)
    assert {"accuracy", "macro_f1"} <= set(trained.metrics["sentiment"])
    assert {"precision", "recall", "f1"} <= set(trained.metrics["ner"])
    assert trained.metrics_split == "eval"
    # Early stopping watches the mean of each head's primary metric (sentiment and pairwise: accuracy; NER: f1).
    history = trained.history
    means = [
        np.mean([history["val_sentiment/accuracy"][i], history["val_ner/f1"][i], history["val_pairwise/accuracy"][i]])
        for i in range(trained.epochs_run)
    ]
    assert history["val_heads_mean"] == pytest.approx(means)
    assert trained.model.head_loss_weights == {"sentiment": 1.0, "ner": 0.5, "pairwise": 1.0}


def test_the_saved_model_reloads_in_a_fresh_process_with_every_head_answering_as_in_process(trained):
    inputs = {
        "sentiment": ["a wonderful film with a great cast", "dull and far too long"],
        "ner": ["Marie Curie moved to Paris to join Hooli ."],
        "pairwise": [("Our team found a wooden boat.", "A wooden boat was found by our team.")],
    }
    here = {head: pipeline(trained.model, head=head)(texts) for head, texts in inputs.items()}
    script = (
        "import json, sys\n"
        "from distilbert_heads import pipeline\n"
        "inputs = json.loads(sys.argv[2])\n"
        "inputs['pairwise'] = [tuple(pair) for pair in inputs['pairwise']]\n"
        "print(json.dumps({h: pipeline(sys.argv[1], head=h)(texts) for h, texts in inputs.items()}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(trained.path), json.dumps(inputs)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    there = json.loads(done.stdout.strip().splitlines()[-1])
    assert_same_answers(here, there)


def assert_same_answers(here: dict, there: dict) -> None:
    """Equal answers, scores to 5 decimals (JSON turns tuples into lists; approx does not reach into nested lists)."""

    def rounded(value):
        if isinstance(value, float):
            return round(value, 5)
        if isinstance(value, dict):
            return {key: rounded(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [rounded(item) for item in value]
        return value

    assert rounded(json.loads(json.dumps(here))) == rounded(there)


def _row_ids(ids: np.ndarray, pad_id: int) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in row if i != pad_id) for row in np.asarray(ids)]


def test_each_batch_holds_one_heads_rows_and_every_row_of_every_file_is_seen_once_per_epoch(files, monkeypatch):
    """The batches fit really trained on, recorded; each head's rows compared with its whole file encoded directly."""
    seen: list[tuple] = []
    batches = MultiHeadStream.batches

    def recording(self, epoch, *, skip=0):
        for batch in batches(self, epoch, skip=skip):
            seen.append((epoch, batch))
            yield batch

    monkeypatch.setattr(MultiHeadStream, "batches", recording)
    tasks = ("sentiment", "ner")
    result = train({task: files[task]["train"] for task in tasks}, epochs=2, **SETTINGS)
    model, tokenizer = result.model, result.tokenizer
    expected = {}
    for task in tasks:
        head = model.heads[task]
        schema = example_schema(type(head), head.task_type)
        examples = [example for _, example in data_files.iter_examples(files[task]["train"], schema, task)]
        x, _ = head.encode_examples(examples, tokenizer, 32)
        expected[task] = Counter(_row_ids(x["input_ids"], tokenizer.pad_token_id))
    orders = []
    for epoch in (0, 1):
        rows: dict[str, Counter] = {task: Counter() for task in tasks}
        order = []
        for _, (x, y, weights) in (item for item in seen if item[0] == epoch):
            active = [head for head, outputs in weights.items() if np.all(outputs["logits"] == 1)]
            idle = [head for head, outputs in weights.items() if np.all(outputs["logits"] == 0)]
            assert len(active) == 1 and len(idle) == len(tasks) - 1, weights
            rows[active[0]].update(_row_ids(x["input_ids"], tokenizer.pad_token_id))
            order.append(active[0])
            assert rows_match(y, x)
        assert rows == expected, f"epoch {epoch}: not every row once"
        assert order.count("sentiment") == 5 and order.count("ner") == 3  # ceil(37 / 8), ceil(21 / 8)
        orders.append(order)
    assert orders[0] != orders[1] or orders[0] != sorted(orders[0]), "the heads are not interleaved"


def rows_match(y: dict, x: dict) -> bool:
    """Every head's targets (real or zero) have the batch's rows."""
    rows = len(x["input_ids"])
    return all(len(leaf) == rows for outputs in y.values() for leaf in outputs.values())


@pytest.mark.parametrize("ner_weight", [0.0, 0.5])
def test_a_heads_loss_weight_reaches_its_loss(ner_weight, files):
    """Weight 0 leaves the NER head exactly as it started (without weight decay, which moves every weight);
    weight 0.5 trains it. The sentiment head trains either way."""
    start: dict[str, list[np.ndarray]] = {}

    class Remember(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            start.update({name: [w.copy() for w in head.get_weights()] for name, head in self.model.heads.items()})

    result = train(
        {"sentiment": files["sentiment"]["train"], "ner": files["ner"]["train"]},
        loss_weights={"ner": ner_weight},
        weight_decay=0.0,
        epochs=1,
        callbacks=[Remember()],
        **SETTINGS,
    )
    moved = {
        name: any(not np.array_equal(a, b) for a, b in zip(start[name], head.get_weights()))
        for name, head in result.model.heads.items()
    }
    assert moved["sentiment"]
    assert moved["ner"] is (ner_weight > 0)


@pytest.mark.parametrize("active", ["sentiment", "ner"])
def test_the_other_heads_zero_weighted_targets_add_no_loss(active, files):
    """A batch's compiled loss is its own head's loss times its weight, whatever the other heads' targets hold."""
    tokenizer = demo_vocab_tokenizer()
    model = create_distilbert_with_heads(
        [
            {"task_type": "sentiment", "labels": ["negative", "positive"], "loss_weight": 2.0},
            {"task_type": "ner", "labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]},
        ],
        distilbert_variant="tiny",
        **{**TINY, "vocab_size": tokenizer.vocab_size},
    )
    model.compile(metrics={})
    encoded = {}
    rng = np.random.default_rng(0)
    for task in ("sentiment", "ner"):
        head = model.heads[task]
        schema = example_schema(type(head), head.task_type)
        examples = [e for _, e in data_files.iter_examples(files[task]["train"], schema, task)][:6]
        encoded[task] = head.encode_examples(examples, tokenizer, 24)
    templates = {task: _TargetTemplate.of(*pair) for task, pair in encoded.items()}
    stream = MultiHeadStream({}, estimated_batches={}, templates=templates, output_names=model.output_keys, seed=0)
    x, y = encoded[active]
    x_all, y_all, weights = stream.complete(active, x, {active: y})
    noisy = {
        head: ({"logits": rng.integers(0, 2, np.shape(t["logits"]))} if head != active else t)
        for head, t in y_all.items()
    }
    combined = model.evaluate(
        x_all, y_all, sample_weight=weights, batch_size=len(x["input_ids"]), verbose=0, return_dict=True
    )["loss"]
    with_noise = model.evaluate(
        x_all, noisy, sample_weight=weights, batch_size=len(x["input_ids"]), verbose=0, return_dict=True
    )["loss"]
    own_loss = model.heads[active].default_losses()["logits"]
    alone = float(own_loss(y["logits"], model(x)[active]["logits"])) * model.head_loss_weights[active]
    assert combined == pytest.approx(alone, rel=1e-5)
    assert with_noise == pytest.approx(alone, rel=1e-5)


BAD_RUNS = {
    "duplicate head names": (
        lambda f: {
            "task": [
                HeadFile(task="sentiment", train_file=f["sentiment"]["train"]),
                HeadFile(task="sentiment", train_file=f["sentiment"]["eval"]),
            ]
        },
        ["'sentiment'", "unique", "name"],
    ),
    "a file for an unknown task": (
        lambda f: {"task": {"sentiment": f["sentiment"]["train"], "astrology": f["ner"]["train"]}},
        ["'astrology'", "ner.jsonl"],
    ),
    "an eval file for no head": (
        lambda f: {
            "task": {"sentiment": f["sentiment"]["train"], "ner": f["ner"]["train"]},
            "eval_files": {"sentiment": f["sentiment"]["eval"], "nre": f["ner"]["eval"]},
        },
        ["'nre'", "'ner'", "'sentiment'"],
    ),
    "eval files for some heads only": (
        lambda f: {
            "task": {"sentiment": f["sentiment"]["train"], "ner": f["ner"]["train"]},
            "eval_files": {"sentiment": f["sentiment"]["eval"]},
        },
        ["'sentiment'", "'ner'", "every head"],
    ),
    "a negative loss weight": (
        lambda f: {
            "task": {"sentiment": f["sentiment"]["train"], "ner": f["ner"]["train"]},
            "loss_weights": {"ner": -1},
        },
        ["'ner'", "-1", ">= 0"],
    ),
    "a loss weight for no head": (
        lambda f: {"task": {"sentiment": f["sentiment"]["train"]}, "loss_weights": {"ner": 0.5}},
        ["'ner'", "'sentiment'"],
    ),
    "a single-head train_file too": (
        lambda f: {"task": {"sentiment": f["sentiment"]["train"]}, "train_file": f["ner"]["train"]},
        ["train_file", "eval_files"],
    ),
    "a distribution (data-parallel training is single-head for now)": (
        lambda f: {"task": {"sentiment": f["sentiment"]["train"]}, "distribution": "data-parallel"},
        ["distribution", "one head", "without it"],
    ),
    "a monitor head that is not a head": (
        lambda f: {
            "task": {"sentiment": f["sentiment"]["train"]},
            "eval_files": {"sentiment": f["sentiment"]["eval"]},
            "monitor_head": "ner",
        },
        ["monitor_head", "'ner'", "sentiment"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_a_bad_multi_head_run_fails_before_training_and_says_what_to_fix(case, files):
    make, facts = BAD_RUNS[case]
    arguments = make(files)
    task = arguments.pop("task")
    with pytest.raises(TrainingError) as error:
        train(task, **arguments, epochs=1, **SETTINGS)
    assert_mentions(error, *facts)


def test_the_cli_trains_one_file_per_head_and_early_stops_on_a_named_head(files, tmp_path, capsys):
    out = tmp_path / "multi.keras"
    code = main(
        [
            "train",
            "--head",
            f"sentiment={files['sentiment']['train']}",
            "--head",
            f"tags:ner={files['ner']['train']}",
            "--head-eval",
            f"sentiment={files['sentiment']['eval']}",
            "--head-eval",
            f"tags={files['ner']['eval']}",
            "--loss-weight",
            "tags=0.5",
            "--monitor-head",
            "tags",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--max-length",
            "32",
            "--seed",
            "0",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["metrics"]) == {"sentiment", "tags"}
    # Checkpoints beside --out, as for one head; best.keras by the monitored head's held-out metric.
    assert report["checkpoint_dir"] == str(tmp_path / "multi.checkpoints")
    assert load_checkpoint(tmp_path / "multi.checkpoints").finished
    assert (tmp_path / "multi.checkpoints" / BEST).is_file()
    model = keras.models.load_model(out)
    assert {name: head.task_type for name, head in model.heads.items()} == {
        "sentiment": "sentiment_analysis",
        "tags": "named_entity_recognition",
    }
    assert model.head_loss_weights["tags"] == 0.5


@pytest.mark.parametrize(
    ("argv", "facts"),
    [
        (["--task", "sentiment", "--head", "ner=x.jsonl"], ["--head", "--task"]),
        (["--head", "ner=x.jsonl", "--labels", "O,B-PER"], ["--head", "--labels"]),
        (["--head", "ner"], ["ner", "TASK=FILE"]),
        (["--head", "sentiment=a.jsonl", "--loss-weight", "sentiment=heavy"], ["heavy", "NAME=WEIGHT"]),
        (["--head-eval", "ner=a.jsonl"], ["--head-eval", "--head"]),
    ],
)
def test_the_cli_refuses_a_mixed_or_malformed_head_list(argv, facts, tmp_path, capsys):
    assert main(["train", *argv, "--out", str(tmp_path / "m.keras")]) == 2
    assert_mentions(capsys.readouterr().err, *facts)


@pytest.mark.parametrize(("monitor_head", "monitor"), [(None, "heads_mean"), ("ner", "ner/f1")])
def test_early_stopping_watches_the_heads_mean_or_the_named_heads_primary_metric(
    monitor_head, monitor, files, monkeypatch
):
    watched = []

    class Recording(HeadEvaluationCallback):
        def on_train_end(self, logs=None):
            watched.append(self.monitor)
            super().on_train_end(logs)

    monkeypatch.setattr(multi_head, "HeadEvaluationCallback", Recording)
    train(
        {task: files[task]["train"] for task in ("sentiment", "ner")},
        eval_files={task: files[task]["eval"] for task in ("sentiment", "ner")},
        monitor_head=monitor_head,
        epochs=1,
        **SETTINGS,
    )
    assert watched == [monitor]


def test_heads_that_take_inputs_of_different_shapes_are_refused_with_their_shapes(monkeypatch):
    """A head whose input kind stacks 2 rows per example, (batch, 2, length), beside a text head, (batch, length)."""

    class TwoRows(type(PAIR)):
        rows_per_example = 2

    model = create_distilbert_with_heads(
        [{"task_type": "sentiment", "labels": ["a", "b"]}, {"task_type": "pairwise", "labels": ["a", "b"]}],
        distilbert_variant="tiny",
        **{**TINY, "vocab_size": 50},
    )
    monkeypatch.setattr(type(model.heads["pairwise"]), "input_kind", TwoRows())
    with pytest.raises(TrainingError) as error:
        multi_head._check_input_shapes(model)
    assert_mentions(error, "'sentiment'", "(batch, length)", "'pairwise'", "(batch, 2, length)", "separate models")


@pytest.mark.parametrize("skip_invalid", [False, True])
def test_a_bad_row_in_one_heads_file_names_that_file_and_line_or_is_skipped_into_the_side_file(
    skip_invalid, files, tmp_path
):
    rows = [json.dumps(row) for row in task_rows("ner", 12)]
    rows.insert(5, '{"tokens": ["Ada"], "tags": ["B-PER", "O"]}')  # line 6: one tag too many
    ner_file = tmp_path / "ner_bad.jsonl"
    ner_file.write_text("\n".join(rows) + "\n", "utf-8")
    heads = {"sentiment": files["sentiment"]["train"], "ner": ner_file}
    out = tmp_path / "multi.keras"
    if not skip_invalid:
        with pytest.raises(DataFileError) as error:
            train(heads, epochs=1, out=out, **SETTINGS)
        assert_mentions(error, "ner_bad.jsonl line 6")
        assert not out.exists()
        return
    result = train(heads, epochs=1, out=out, skip_invalid=True, **SETTINGS)
    assert {Path(name).name: count for name, count in result.skipped_rows.items()} == {"ner_bad.jsonl": 1}
    skipped = [json.loads(line) for line in result.skipped_file.read_text("utf-8").splitlines()]
    assert [(Path(row["file"]).name, row["line"]) for row in skipped] == [("ner_bad.jsonl", 6)]


# -- checkpoints and resume ------------------------------------------------------------------------------------------
# 37 sentiment and 21 NER rows in batches of 8: 5 + 3 = 8 steps an epoch, 16 in 2 epochs.
RESUMABLE_HEADS = ("sentiment", "ner")
RESUMABLE = {**SETTINGS, "epochs": 2, "loss_weights": {"ner": 0.5}}


def resumable_run(files, **changes) -> dict:
    """`train`'s arguments for the checkpointed two-head run (JSON-able, for the worker process), with ``changes``."""
    return {
        "task": {task: str(files[task]["train"]) for task in RESUMABLE_HEADS},
        "eval_files": {task: str(files[task]["eval"]) for task in RESUMABLE_HEADS},
        **RESUMABLE,
        **changes,
    }


def recording_batches(seen: list, monkeypatch) -> None:
    """Record every batch the multi-head stream hands to ``fit`` as ``(epoch, batch)`` in ``seen``."""
    batches = MultiHeadStream.batches

    def recording(self, epoch, *, skip=0):
        for batch in batches(self, epoch, skip=skip):
            seen.append((epoch, batch))
            yield batch

    monkeypatch.setattr(MultiHeadStream, "batches", recording)


def rows_by_head(batches: list, pad_id: int) -> dict[str, Counter]:
    """The rows (token ids without padding) of each head in ``batches``, counted; each batch is one head's."""
    rows: dict[str, Counter] = {}
    for x, _, weights in batches:
        [active] = [head for head, outputs in weights.items() if np.all(outputs["logits"] == 1)]
        rows.setdefault(active, Counter()).update(_row_ids(x["input_ids"], pad_id))
    return rows


def file_rows(files, model, tokenizer, tasks) -> dict[str, Counter]:
    """Each head's training file encoded directly, every row once, counted as `rows_by_head` counts."""
    expected = {}
    for task in tasks:
        head = model.heads[task]
        schema = example_schema(type(head), head.task_type)
        examples = [example for _, example in data_files.iter_examples(files[task]["train"], schema, task)]
        x, _ = head.encode_examples(examples, tokenizer, 32)
        expected[task] = Counter(_row_ids(x["input_ids"], tokenizer.pad_token_id))
    return expected


@pytest.fixture(scope="module")
def uninterrupted(files, tmp_path_factory):
    """The checkpointed two-head run, not interrupted, with the batches it trained on."""
    seen: list = []
    arguments = resumable_run(files, checkpoint_dir=tmp_path_factory.mktemp("uninterrupted"))
    with pytest.MonkeyPatch.context() as patch:
        recording_batches(seen, patch)
        result = train(arguments.pop("task"), tokenizer=demo_vocab_tokenizer(), **arguments)
    return result, seen


def test_a_killed_multi_head_run_resumes_to_the_uninterrupted_runs_weights_seeing_every_row_once(
    files, uninterrupted, tmp_path, monkeypatch
):
    expected_run, expected_batches = uninterrupted
    killed_dir = tmp_path / "killed"
    arguments = resumable_run(files, checkpoint_dir=str(killed_dir), checkpoint_every=3)
    task = arguments.pop("task")
    # Checkpoints at steps 3 and 6, at the epoch end (step 8) and at step 9; killed (SIGKILL) right after step 11.
    done = subprocess.run(
        train_worker_command(task, None, arguments, kill_at=11),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == -9, done.stdout[-2000:] + done.stderr[-3000:]  # killed by SIGKILL, not finished
    checkpoint = load_checkpoint(killed_dir)
    assert (checkpoint.epoch, checkpoint.batch, checkpoint.state["global_step"]) == (1, 1, 9)
    assert not checkpoint.finished and len(checkpoint.state["history"]["val_heads_mean"]) == 1
    assert (checkpoint.path / BEST).is_file()  # the best held-out epoch so far (the first)

    seen: list = []
    recording_batches(seen, monkeypatch)
    # No tokenizer given: the resumed run takes the checkpoint's.
    resumed = train(task, resume=True, **arguments)

    assert int(resumed.model.optimizer.iterations) == int(expected_run.model.optimizer.iterations) == 16
    for a, b in zip(resumed.model.get_weights(), expected_run.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert resumed.history["loss"][0] == expected_run.history["loss"][0]  # the killed run's first epoch, kept
    assert resumed.history["val_heads_mean"] == pytest.approx(expected_run.history["val_heads_mean"], abs=1e-6)
    assert resumed.best_epoch == expected_run.best_epoch
    final = load_checkpoint(killed_dir)
    assert (final.epoch, final.batch, final.finished) == (2, 0, True)
    best_resumed = keras.saving.load_model(killed_dir / BEST).get_weights()
    best_expected = keras.saving.load_model(expected_run.checkpoint_dir / BEST).get_weights()
    for a, b in zip(best_resumed, best_expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)

    # The resumed epoch's batches are the uninterrupted run's from batch 1 on (batch 0 trained before the kill):
    # together every row of every head's file once. The second epoch has all of them too.
    pad_id = resumed.tokenizer.pad_token_id
    expected_epochs = {epoch: [batch for e, batch in expected_batches if e == epoch] for epoch in (0, 1)}
    resumed_epoch = [batch for epoch, batch in seen if epoch == 1]
    assert len(resumed_epoch) == len(expected_epochs[1]) - 1 == 7
    for (x, _, weights), (x_expected, _, weights_expected) in zip(resumed_epoch, expected_epochs[1][1:]):
        np.testing.assert_array_equal(x["input_ids"], x_expected["input_ids"])
        assert {h: float(w["logits"][0]) for h, w in weights.items()} == {
            h: float(w["logits"][0]) for h, w in weights_expected.items()
        }
    every_row = file_rows(files, resumed.model, resumed.tokenizer, RESUMABLE_HEADS)
    assert rows_by_head(expected_epochs[0], pad_id) == every_row
    assert rows_by_head([*expected_epochs[1][:1], *resumed_epoch], pad_id) == every_row


@pytest.fixture
def finished_run_checkpoints(uninterrupted, tmp_path) -> Path:
    """A copy of the finished run's checkpoint folder, for a test to resume from."""
    return Path(shutil.copytree(uninterrupted[0].checkpoint_dir, tmp_path / "checkpoints"))


def _one_row_less(files, tmp_path) -> dict:
    shorter = tmp_path / "ner_shorter.jsonl"
    shorter.write_text(files["ner"]["train"].read_text("utf-8").split("\n", 1)[1], "utf-8")
    return {"task": {"sentiment": str(files["sentiment"]["train"]), "ner": str(shorter)}}


RESUME_CHANGES = {
    "another set of heads": (
        lambda f, tmp: {
            "task": {"sentiment": str(f["sentiment"]["train"]), "pairwise": str(f["pairwise"]["train"])},
            "eval_files": {"sentiment": str(f["sentiment"]["eval"]), "pairwise": str(f["pairwise"]["eval"])},
            "loss_weights": None,
        },
        ["head_order is ['sentiment', 'ner'] there and ['sentiment', 'pairwise'] here", "heads.ner is set there"],
    ),
    "a changed loss weight": (
        lambda f, tmp: {"loss_weights": {"ner": 2.0}},
        ["heads.ner.loss_weight is 0.5 there and 2.0 here"],
    ),
    "another training file for a head": (
        _one_row_less,
        ["heads.ner.train_file_bytes", "heads.ner.train_sample_sha256"],
    ),
    "the heads in another order": (
        lambda f, tmp: {"task": {"ner": str(f["ner"]["train"]), "sentiment": str(f["sentiment"]["train"])}},
        ["head_order is ['sentiment', 'ner'] there and ['ner', 'sentiment'] here"],
    ),
}


@pytest.mark.parametrize("case", list(RESUME_CHANGES))
def test_resume_refuses_a_checkpoint_of_other_heads_files_or_loss_weights(
    case, files, finished_run_checkpoints, tmp_path
):
    change, facts = RESUME_CHANGES[case]
    arguments = {**resumable_run(files), **change(files, tmp_path)}
    with pytest.raises(TrainingError) as error:
        train(arguments.pop("task"), checkpoint_dir=finished_run_checkpoints, resume=True, **arguments)
    assert_mentions(error, str(finished_run_checkpoints), "different run", "without --resume", *facts)
    assert "heads.sentiment" not in str(error.value)  # what did not change is not named


def test_resume_of_a_finished_multi_head_run_trains_nothing_and_ends_at_its_best_epoch(
    files, uninterrupted, finished_run_checkpoints
):
    arguments = resumable_run(files)
    again = train(arguments.pop("task"), checkpoint_dir=finished_run_checkpoints, resume=True, **arguments)
    assert again.history == uninterrupted[0].history and again.best_epoch == uninterrupted[0].best_epoch
    for a, b in zip(again.model.get_weights(), uninterrupted[0].model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_multi_head_resume_without_a_checkpoint_says_where_it_looked(files, tmp_path, capsys):
    heads = {task: files[task]["train"] for task in RESUMABLE_HEADS}
    empty = tmp_path / "nothing here"
    with pytest.raises(TrainingError) as error:
        train(heads, checkpoint_dir=empty, resume=True, **SETTINGS)
    assert_mentions(error, str(empty), str(empty / LAST), "without --resume")
    with pytest.raises(TrainingError) as error:
        train(heads, resume=True, **SETTINGS)
    assert_mentions(error, "--resume", "--checkpoint-dir")

    out = tmp_path / "multi.keras"
    argv = ["train", *(f"--head={task}={path}" for task, path in heads.items()), "--out", str(out), "--resume"]
    assert main(argv) == 2
    assert_mentions(capsys.readouterr().err, str(tmp_path / "multi.checkpoints"), "--resume")
    assert not out.exists()
