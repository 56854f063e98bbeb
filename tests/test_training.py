"""Training and evaluating from JSONL/CSV files (`distilbert_heads.training.loop`) and vocabulary training."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import TINY_TRAINING as TINY

import distilbert_heads  # noqa: F401  (registers the Keras classes)
from distilbert_heads.demo import datasets as demo_data
from distilbert_heads.plugins.registry import get_head
from distilbert_heads.text.tokenizer import DistilBertTokenizer
from distilbert_heads.training.callbacks import HeadEvaluationCallback
from distilbert_heads.training.evaluation import evaluate, primary_metric
from distilbert_heads.training.examples import example_texts, read_task_examples
from distilbert_heads.training.loop import train
from distilbert_heads.training.settings import ChanceLevelWarning, TrainingError

EXPECTED_METRICS = {
    "sentiment": {"accuracy", "macro_f1"},
    "ner": {"precision", "recall", "f1"},
    "qa": {"exact_match", "f1"},
    "pairwise": {"accuracy", "macro_f1"},
}


def demo_rows(task: str, split: str, count: int) -> list[dict]:
    with open(demo_data.data_path(task, split), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle][:count]


def csv_row(task: str, row: dict) -> dict:
    """A demo row in the head's documented CSV columns."""
    if task == "ner":
        return {"tokens": " ".join(row["tokens"]), "tags": " ".join(row["tags"])}
    if task == "qa":
        return {
            "question": row["question"],
            "context": row["context"],
            "answer_text": row["answers"]["text"][0],
            "answer_start": row["answers"]["answer_start"][0],
        }
    return row


def write_rows(path: Path, task: str, rows: list[dict]) -> Path:
    if path.suffix == ".csv":
        converted = [csv_row(task, row) for row in rows]
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(converted[0]))
            writer.writeheader()
            writer.writerows(converted)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def task_files(
    tmp_path: Path, task: str, fmt: str = "jsonl", train_rows: int = 24, test_rows: int = 12
) -> tuple[Path, Path]:
    return (
        write_rows(tmp_path / f"{task}.train.{fmt}", task, demo_rows(task, "train", train_rows)),
        write_rows(tmp_path / f"{task}.test.{fmt}", task, demo_rows(task, "test", test_rows)),
    )


TASKS = ["sentiment", "ner", "qa", "pairwise"]


@pytest.mark.parametrize("task", TASKS)
def test_a_csv_file_gives_the_jsonl_files_examples(tmp_path, task):
    """Training and evaluation read both formats through the same examples: one CSV run below covers the rest."""
    head_class = get_head(task).head_class
    for jsonl, csv_file in zip(task_files(tmp_path, task, "jsonl"), task_files(tmp_path, task, "csv")):
        examples = read_task_examples(jsonl, head_class, task)
        assert len(examples) > 1 and read_task_examples(csv_file, head_class, task) == examples


@pytest.mark.filterwarnings("ignore::distilbert_heads.training.ChanceLevelWarning")  # one epoch stays at chance
@pytest.mark.parametrize(("task", "fmt"), [*((task, "jsonl") for task in TASKS), ("qa", "csv")])
def test_train_and_evaluate_from_files(tmp_path, task, fmt):
    train_file, test_file = task_files(tmp_path, task, fmt)
    out = tmp_path / f"{task}.keras"
    result = train(
        task,
        train_file,
        eval_file=test_file,
        epochs=1,
        batch_size=8,
        max_length=48,
        out=out,
        vocab_size=200,
        verbose=0,
        **TINY,
    )
    assert set(result.metrics) == EXPECTED_METRICS[task]
    assert all(0.0 <= value <= 1.0 for value in result.metrics.values())
    assert result.metrics_split == "eval" and result.epochs_run == 1
    assert {f"val_{name}" for name in EXPECTED_METRICS[task]} <= set(result.history)
    assert "loss" in result.history
    assert out.is_file() and result.path == out
    # The encoder's vocabulary is exactly the tokenizer learnt from the training rows.
    assert result.model.encoder.config.vocab_size == result.tokenizer.vocab_size
    # The saved file scores the same as the in-memory model (best weights restored, tokenizer inside).
    assert evaluate(out, test_file) == pytest.approx(result.metrics, abs=1e-6)


def test_training_learns_sentiment(tmp_path):
    train_file, test_file = task_files(tmp_path, "sentiment", train_rows=240, test_rows=80)
    keras.utils.set_random_seed(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(
            "sentiment",
            train_file,
            epochs=3,
            batch_size=16,
            max_length=32,
            vocab_size=300,
            verbose=0,
            hidden_size=64,
            num_layers=1,
            num_heads=4,
            intermediate_size=128,
            max_position_embeddings=32,
        )
    assert result.metrics_split == "train"  # no eval file: final metrics are on the training rows
    # A model that learnt is not at chance level: no warning (tests/test_hostile_data.py has the one that is).
    assert result.warnings == [] and not [w for w in caught if issubclass(w.category, ChanceLevelWarning)]
    held_out = evaluate(result.model, test_file)
    assert held_out["accuracy"] > 0.85, held_out


@pytest.mark.filterwarnings("ignore::distilbert_heads.training.ChanceLevelWarning")  # one epoch stays at chance
def test_plugin_head_trains_from_a_file(tmp_path):
    rows = [
        {"text": f"{word} news today", "labels": labels}
        for word, labels in [
            ("football", ["sports"]),
            ("election", ["politics"]),
            ("chip", ["tech"]),
            ("match", ["sports", "tech"]),
        ]
        * 4
    ]
    train_file = write_rows(tmp_path / "foo.jsonl", "foo", rows)
    result = train("foo", train_file, epochs=1, batch_size=8, max_length=16, vocab_size=100, verbose=0, **TINY)
    assert set(result.metrics) == {"micro_precision", "micro_recall", "micro_f1", "exact_match"}
    assert result.model.heads["foo"].options.labels == ["sports", "politics", "tech"]


def test_unknown_label_in_eval_file_names_its_line(tmp_path):
    train_file, _ = task_files(tmp_path, "sentiment")
    eval_file = write_rows(
        tmp_path / "eval.jsonl",
        "sentiment",
        [{"text": "fine", "label": "positive"}, {"text": "meh", "label": "neutral"}],
    )
    with pytest.raises(TrainingError, match=r"eval.jsonl line 2: .*neutral"):
        train("sentiment", train_file, eval_file=eval_file, epochs=1, verbose=0, **TINY)


def test_out_must_be_a_keras_file(tmp_path):
    train_file, _ = task_files(tmp_path, "sentiment")
    with pytest.raises(TrainingError, match=r"\.keras"):
        train("sentiment", train_file, out=tmp_path / "model.h5", verbose=0, **TINY)


def test_evaluate_missing_model_file(tmp_path):
    with pytest.raises(TrainingError, match="No model file"):
        evaluate(tmp_path / "nope.keras", tmp_path / "data.jsonl")


def test_primary_metric_prefers_f1_then_accuracy():
    assert primary_metric({"precision": 0.1, "recall": 0.2, "f1": 0.3}) == "f1"
    assert primary_metric({"macro_f1": 0.5, "accuracy": 0.4}) == "accuracy"
    assert primary_metric({"micro_precision": 0.1, "micro_f1": 0.2}) == "micro_f1"
    assert primary_metric({"custom": 1.0}) == "custom"


def test_evaluation_callback_stops_early_and_restores_the_best_weights():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    scores = iter([0.5, 0.8, 0.6, 0.7, 0.9, 0.95])
    snapshots = []

    def score(m):
        snapshots.append([w.copy() for w in m.get_weights()])
        return {"accuracy": next(scores), "macro_f1": 0.0}

    callback = HeadEvaluationCallback(score, patience=2, verbose=0)
    x, y = np.random.default_rng(0).normal(size=(16, 2)), np.ones((16, 1))
    history = model.fit(x, y, epochs=6, batch_size=16, callbacks=[callback], verbose=0)
    assert len(history.epoch) == 4  # epochs 3 and 4 did not beat epoch 2: stop after epoch 4
    assert history.history["val_accuracy"] == [0.5, 0.8, 0.6, 0.7]
    assert callback.best_epoch == 1 and callback.best_metrics["accuracy"] == 0.8
    for restored, best in zip(model.get_weights(), snapshots[1]):
        np.testing.assert_array_equal(restored, best)
    assert not np.array_equal(snapshots[1][0], snapshots[3][0])  # the weights did move after the best epoch


def test_example_texts_collects_every_text_field():
    schema = get_head("qa").head_class.example_schema
    example = schema.model_validate(demo_rows("qa", "train", 1)[0])
    texts = example_texts([example])
    assert example.question in texts and example.context in texts
    ner_schema = get_head("ner").head_class.example_schema
    ner = ner_schema.model_validate(demo_rows("ner", "train", 1)[0])
    assert " ".join(ner.tokens) in example_texts([ner])


# -- learning a WordPiece vocabulary ------------------------------------------------------------------
def test_train_from_texts_builds_a_bert_vocabulary():
    texts = [row["text"] for row in demo_rows("sentiment", "train", 200)]
    tokenizer = DistilBertTokenizer.train_from_texts(texts, vocab_size=300)
    assert [tokenizer.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tokenizer.pad_token_id == 0
    assert len({t for t in tokenizer.get_vocab()}) == tokenizer.vocab_size
    tokens = tokenizer.encode(["The MOVIE was superb."]).tokens[0]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "[UNK]" not in tokens
    assert "movie" in tokens  # lowercased, and a frequent word is one piece
    # A word never seen, made of seen characters, splits into pieces instead of becoming [UNK].
    unseen = tokenizer.encode(["flabbergasted"]).tokens[0][1:-1]
    assert "[UNK]" not in unseen and len(unseen) > 1 and all(t.startswith("##") for t in unseen[1:])


def test_trained_vocabulary_gives_transformers_ids(tmp_path):
    transformers = pytest.importorskip("transformers")
    texts = [row["context"] for row in demo_rows("qa", "train", 100)]
    tokenizer = DistilBertTokenizer.train_from_texts(texts, vocab_size=300)
    tokenizer.save(tmp_path)
    reference = transformers.DistilBertTokenizerFast.from_pretrained(tmp_path)
    sample = ["Ada Lovelace founded Initech in 1999.", "Where is Hooli based? Zürich!"]
    assert tokenizer.encode(sample).input_ids.tolist() == reference(sample, padding=True)["input_ids"]


def test_train_from_texts_rejects_bad_arguments():
    with pytest.raises(ValueError, match="vocab_size"):
        DistilBertTokenizer.train_from_texts(["a b"], vocab_size=3)
    with pytest.raises(ValueError, match="non-empty text"):
        DistilBertTokenizer.train_from_texts(["", "  "])
    with pytest.raises(ValueError, match="not a single string"):
        DistilBertTokenizer.train_from_texts("just one string")


def test_whole_word_vocabulary_maps_unseen_words_to_unk():
    texts = ["Ada met Bob .", "Bob met Cy in Paris .", "Bob left ."]
    tokenizer = DistilBertTokenizer.train_from_texts(texts, vocab_size=100, lowercase=False, whole_words=True)
    vocab = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert vocab[5:8] == ["Bob", ".", "met"]  # most frequent first, ties in order of appearance
    assert not any(token.startswith("##") for token in vocab)
    assert tokenizer.encode(["Zed met Bob in Rome ."]).tokens[0] == [
        "[CLS]",
        "[UNK]",
        "met",
        "Bob",
        "in",
        "[UNK]",
        ".",
        "[SEP]",
    ]
    small = DistilBertTokenizer.train_from_texts(texts, vocab_size=7, whole_words=True)
    assert small.vocab_size == 7 and small.id_to_token(5) == "bob"


def test_token_dropout_batches_replace_only_text_tokens():
    from distilbert_heads.training.callbacks import TokenDropoutBatches

    tokenizer = DistilBertTokenizer.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"])
    encoding = tokenizer.encode(["a b c a b c a b c"] * 40 + ["a"] * 40)
    labels = np.arange(80)
    batches = TokenDropoutBatches(
        encoding.as_model_inputs(), {"head": {"logits": labels}}, batch_size=16, rate=0.5, tokenizer=tokenizer, seed=0
    )
    assert len(batches) == 5
    seen, dropped, text_tokens = [], 0, 0
    for index in range(len(batches)):
        inputs, targets = batches[index]
        rows = targets["head"]["logits"]
        seen.extend(rows.tolist())
        original = encoding.input_ids[rows]
        np.testing.assert_array_equal(inputs["attention_mask"], encoding.attention_mask[rows])
        changed = inputs["input_ids"] != original
        assert (inputs["input_ids"][changed] == tokenizer.unk_token_id).all()
        text = np.isin(original, [5, 6, 7])
        assert not (changed & ~text).any()  # [CLS], [SEP] and padding are never replaced
        dropped += int(changed.sum())
        text_tokens += int(text.sum())
    assert sorted(seen) == list(range(80))  # every row once per epoch, labels kept with their inputs
    assert 0.4 < dropped / text_tokens < 0.6
    first_order = batches.order.copy()
    batches.start_at(1, 0)  # the next epoch: a new order
    assert not np.array_equal(first_order, batches.order)
