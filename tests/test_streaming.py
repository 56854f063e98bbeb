"""Training, evaluation and prediction read their files as streams: rows are read, checked and encoded as they are
needed, bad rows fail with their line or are skipped into a side file, and every row is seen once per epoch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import TINY_TRAINING as TINY
from helpers import assert_mentions, demo_rows

import distilbert_heads  # noqa: F401  (registers the Keras classes)
from distilbert_heads import pipeline
from distilbert_heads.training import data_files, streaming
from distilbert_heads.training.data_files import DataFileError
from distilbert_heads.training.evaluation import evaluate
from distilbert_heads.training.loop import train
from distilbert_heads.training.settings import TrainingError

pytestmark = pytest.mark.filterwarnings("ignore::distilbert_heads.training.ChanceLevelWarning")  # tiny runs


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows), "utf-8")
    return path


def sentiment_rows(count: int) -> list[dict]:
    rows = demo_rows("sentiment")
    return [{**rows[i % len(rows)], "text": f"{rows[i % len(rows)]['text']} r{i}"} for i in range(count)]


def run(path: Path, tokenizer, **settings):
    options = {"epochs": 1, "batch_size": 8, "max_length": 32, "verbose": 0, "seed": 0, **TINY, **settings}
    return train("sentiment", path, tokenizer=tokenizer, **options)


# Each a row that breaks in a different layer: the JSON, the row's shape, the schema, the head's labels.
BAD_ROWS = {
    "not JSON": ('{"text": "a film", "label": ', "not valid JSON"),
    "not an object": ('["a film", "pos"]', "expected a JSON object"),
    "no text": ('{"label": "pos"}', "text"),
    "unknown label": ('{"text": "a film", "label": "meh"}', "meh"),
}


# The CI runs this module on JAX and PyTorch too. What a case proves there is how fit hands a failure out of the
# stream, which depends on the layer that raises (the reader's DataFileError, the encoder's TrainingError), not on
# the row: one row per layer runs on every backend, the other rows (and the CLI's row order, which is the same
# stream on every backend) on TensorFlow only.
TENSORFLOW_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="backend-independent: the TensorFlow run covers it"
)
EVERY_BACKEND = ("not JSON", "unknown label")


@pytest.mark.parametrize(
    "kind", [pytest.param(kind, marks=() if kind in EVERY_BACKEND else TENSORFLOW_ONLY) for kind in BAD_ROWS]
)
def test_a_bad_row_after_the_sample_fails_with_its_line_after_training_has_started(
    kind, tmp_path, demo_tokenizer, monkeypatch
):
    """The row is read only once fit runs (the sample is 16 rows): the error is still the real one, with its line,
    and steps ran before it, so the first step did not wait for the whole file."""
    monkeypatch.setattr(streaming, "SAMPLE_ROWS", 16)
    row, fact = BAD_ROWS[kind]
    path = write_jsonl(tmp_path / "train.jsonl", [*sentiment_rows(200), row, *sentiment_rows(3)])
    steps = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: steps.append(batch))
    with pytest.raises((TrainingError, DataFileError)) as error:
        run(path, demo_tokenizer, callbacks=[counter], shuffle_buffer=1)
    assert_mentions(error.value, "train.jsonl line 201", fact)
    assert steps, "no step ran before the bad row: the file was read through before training"


def test_skip_invalid_leaves_out_bad_rows_into_a_side_file_and_counts_them(tmp_path, demo_tokenizer, monkeypatch):
    monkeypatch.setattr(streaming, "SAMPLE_ROWS", 16)
    good = sentiment_rows(40)
    bad_lines = {}
    rows: list = []
    for index, (kind, (row, _)) in enumerate(BAD_ROWS.items()):
        rows.extend(good[index * 10 : index * 10 + 10])
        rows.append(row)
        bad_lines[len(rows)] = kind
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    eval_path = write_jsonl(tmp_path / "eval.jsonl", [*sentiment_rows(6), BAD_ROWS["no text"][0]])
    out = tmp_path / "model.keras"
    result = run(path, demo_tokenizer, eval_file=eval_path, skip_invalid=True, out=out, epochs=2)

    assert result.skipped_rows == {str(path): len(BAD_ROWS), str(eval_path): 1}
    assert len(result.epoch_seconds) == 2 and all(seconds > 0 for seconds in result.epoch_seconds)
    assert result.skipped_file == tmp_path / "model.skipped.jsonl"
    logged = [json.loads(line) for line in result.skipped_file.read_text("utf-8").splitlines()]
    assert len(logged) == len(BAD_ROWS) + 1  # each once, though both files were read in two epochs
    train_logged = {entry["line"]: entry for entry in logged if entry["file"] == str(path)}
    assert sorted(train_logged) == sorted(bad_lines)
    for line, kind in bad_lines.items():
        assert BAD_ROWS[kind][1] in train_logged[line]["reason"]
        assert f"line {line}" in train_logged[line]["reason"]
    assert [entry["line"] for entry in logged if entry["file"] == str(eval_path)] == [7]


def test_skipped_file_without_skip_invalid_is_refused(tmp_path, demo_tokenizer):
    path = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(8))
    with pytest.raises(TrainingError) as error:
        run(path, demo_tokenizer, skipped_file=tmp_path / "bad.jsonl")
    assert_mentions(error.value, "--skip-invalid", "--skipped")


# -- the stream ----------------------------------------------------------------------------------------------
@pytest.fixture
def stream_of(tmp_path, demo_tokenizer):
    """A `TrainingStream` over 50 sentiment rows whose labels are their row numbers (a regression head)."""
    from distilbert_heads.heads.sentiment import SentimentHead

    rows = [{"text": " ".join(["great"] * (1 + i % 37)), "label": float(i)} for i in range(50)]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    head = SentimentHead(16, "text_regression", {"num_classes": 1})

    def make(**settings):
        encoder = streaming.ExampleEncoder(head, demo_tokenizer, 64, path)
        options = {"head_name": "h", "batch_size": 8, "seed": 3, "shuffle_buffer": 10_000, **settings}
        return streaming.TrainingStream(path, SentimentHead.example_schema, "sentiment", encoder, **options)

    return make


def row_ids(batches) -> list[int]:
    return [int(value) for _, y in batches for value in np.asarray(y["h"]["logits"]).reshape(-1)]


@pytest.mark.parametrize("buffer", [10_000, 7])
def test_every_row_once_per_epoch_in_a_seeded_order(stream_of, buffer):
    stream = stream_of(shuffle_buffer=buffer)
    first, second = row_ids(stream.batches(0)), row_ids(stream.batches(1))
    assert sorted(first) == sorted(second) == list(range(50))
    assert first != second  # a new order each epoch
    assert row_ids(stream_of(shuffle_buffer=buffer).batches(0)) == first  # a pure function of seed and epoch
    assert row_ids(stream_of(shuffle_buffer=buffer, seed=4).batches(0)) != first
    assert [len(np.asarray(y["h"]["logits"])) for _, y in stream.batches(0)] == [8] * 6 + [2]


def test_start_at_resumes_an_epoch_at_the_same_batch(stream_of):
    stream = stream_of(token_dropout=0.3)
    full = list(stream.batches(2))
    resumed = list(stream.batches(2, skip=4))
    assert len(resumed) == len(full) - 4
    for (x_full, y_full), (x_resumed, y_resumed) in zip(full[4:], resumed):
        np.testing.assert_array_equal(x_full["input_ids"], x_resumed["input_ids"])  # same rows, same token dropout
        np.testing.assert_array_equal(y_full["h"]["logits"], y_resumed["h"]["logits"])


def test_batches_are_padded_to_their_own_longest_row(stream_of):
    widths = set()
    for x, _ in stream_of().batches(0):
        longest = int(x["attention_mask"].sum(axis=1).max())
        width = x["input_ids"].shape[1]
        multiple = streaming.pad_multiple()  # 16 on JAX (fewer compiled shapes), else exact
        assert longest <= width <= -(-longest // multiple) * multiple  # no token cut, no needless padding
        widths.add(width)
    assert len(widths) > 1


def test_token_dropout_replaces_only_text_tokens(stream_of, demo_tokenizer):
    plain, dropped = list(stream_of().batches(0)), list(stream_of(token_dropout=0.5).batches(0))
    changed = text_tokens = 0
    special = [demo_tokenizer.pad_token_id, demo_tokenizer.cls_token_id, demo_tokenizer.sep_token_id]
    for (x, _), (x_dropped, _) in zip(plain, dropped):
        difference = x["input_ids"] != x_dropped["input_ids"]
        assert (x_dropped["input_ids"][difference] == demo_tokenizer.unk_token_id).all()
        assert not (difference & np.isin(x["input_ids"], special)).any()
        changed += int(difference.sum())
        text_tokens += int((~np.isin(x["input_ids"], special)).sum())
    assert 0.4 < changed / text_tokens < 0.6


def test_joining_chunks_widens_token_targets_with_the_heads_own_padding():
    """Chunks are padded to their own longest row; NER tags pad with -100, which must survive a join."""
    narrow = (
        {"input_ids": np.array([[2, 5, 3]]), "attention_mask": np.array([[1, 1, 1]])},
        np.array([[-100, 1, -100]]),
    )
    wide = (
        {
            "input_ids": np.array([[2, 5, 6, 7, 3], [2, 5, 3, 0, 0]]),
            "attention_mask": np.array([[1] * 5, [1, 1, 1, 0, 0]]),
        },
        np.array([[-100, 1, 2, 0, -100], [-100, 2, -100, -100, -100]]),
    )
    x, y = streaming.join_batches([narrow, wide], pad_id=0)
    np.testing.assert_array_equal(x["input_ids"][0], [2, 5, 3, 0, 0])
    np.testing.assert_array_equal(x["attention_mask"][0], [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(y[0], [-100, 1, -100, -100, -100])
    trimmed_x, trimmed_y = streaming.trim_batch(
        {"input_ids": np.zeros((2, 40), int), "attention_mask": np.pad(np.ones((2, 17), int), ((0, 0), (0, 23)))},
        {"tags": np.zeros((2, 40), int), "label": np.zeros((2,), int)},
    )
    width = 32 if keras.backend.backend() == "jax" else 17  # JAX rounds up to 16 tokens: fewer step shapes
    assert trimmed_x["input_ids"].shape == trimmed_y["tags"].shape == (2, width)
    assert trimmed_y["label"].shape == (2,)


def test_the_schedule_length_is_estimated_from_the_files_size_beyond_the_sample(tmp_path, demo_tokenizer, monkeypatch):
    monkeypatch.setattr(streaming, "SAMPLE_ROWS", 40)
    path = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(400))
    result = run(path, demo_tokenizer, epochs=1, schedule="linear", learning_rate=1e-3)
    optimizer = result.model.optimizer
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 50
    # Linear decay reaches (about) 0 at the estimated end: within a few batches of the real one.
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) < 1e-3 * 4 / 50


# -- reading -------------------------------------------------------------------------------------------------
def test_reader_reports_progress_and_hands_bad_rows_over(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", ['{"a": 1}', "nope", '{"a": 2}', "[1]"])
    bad = []
    reader = data_files.RowReader(path, on_bad_row=lambda line, text, reason: bad.append((line, text, reason)))
    assert reader.bytes_read == 0
    assert [row for _, row in reader] == [{"a": 1}, {"a": 2}]
    assert reader.bytes_read == reader.size == path.stat().st_size
    assert [(line, text.strip()) for line, text, _ in bad] == [(2, "nope"), (4, "[1]")]


# -- evaluation and prediction stream too -------------------------------------------------------------------------
@TENSORFLOW_ONLY
def test_cli_predict_streams_a_file_in_order_with_a_progress_bar(trained_sentiment, tmp_path):
    model_path = trained_sentiment.model_path
    rows = sentiment_rows(2500)  # three chunks of predict's 1024 rows
    path = write_jsonl(tmp_path / "inputs.jsonl", [{"text": row["text"]} for row in rows])
    done = subprocess.run(
        [sys.executable, "-m", "distilbert_heads.cli", "predict", "--model", str(model_path), "--input", str(path)]
        + ["--json", "--progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["input"] for line in lines] == [row["text"] for row in rows]
    expected = pipeline(str(model_path))([row["text"] for row in rows[:50]])
    assert [line["prediction"]["label"] for line in lines[:50]] == [answer["label"] for answer in expected]
    assert "rows/s" in done.stderr and "2,500 rows" in done.stderr


def test_evaluate_streams_and_matches_scoring_in_memory(trained_sentiment):
    from distilbert_heads.training.evaluation import score_examples
    from distilbert_heads.training.examples import load_model, read_task_examples

    model_path, path = trained_sentiment.model_path, trained_sentiment.train_file
    model = load_model(model_path)
    examples = read_task_examples(path, type(model.select_head()[1]), "sentiment")
    assert evaluate(model, path) == pytest.approx(score_examples(model, examples))


def test_labels_beyond_the_sample_need_naming_and_then_train(tmp_path, monkeypatch):
    """A file sorted by label shows one class in its first rows: the error says why and how; --labels fixes it."""
    from distilbert_heads.cli import main

    monkeypatch.setattr(streaming, "SAMPLE_ROWS", 16)
    rows = [{"text": f"great film {i}", "label": "pos"} for i in range(20)]
    rows += [{"text": f"dull film {i}", "label": "neg"} for i in range(20)]
    path = write_jsonl(tmp_path / "sorted.jsonl", rows)
    flags = ["train", "--task", "sentiment", "--train", str(path), "--epochs", "1", "--out", str(tmp_path / "m.keras")]
    flags += ["--vocab-size", "60"]
    assert main(flags) == 2
    with pytest.raises(TrainingError) as error:
        train("sentiment", path, epochs=1, verbose=0, vocab_size=60, **TINY)
    assert_mentions(error.value, "first 16 rows", "--labels")
    result = train(
        "sentiment", path, epochs=1, verbose=0, vocab_size=60, head_options={"labels": ["neg", "pos"]}, **TINY
    )
    assert result.model.select_head()[1].class_names == ["neg", "pos"]
