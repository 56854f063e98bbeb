"""The ``distilbert-heads`` commands train, evaluate, predict, convert, export and demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import TINY_TRAINING as TINY
from helpers import assert_mentions, tiny_vocab
from test_training import task_files, write_rows

import distilbert_heads  # noqa: F401  (registers the Keras classes)
from distilbert_heads.cli import main
from distilbert_heads.training.loop import train

SCRIPT = Path(sys.executable).with_name("distilbert-heads")
COMMANDS = ["heads", "train", "evaluate", "predict", "convert", "export", "info", "demo"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Task -> (saved .keras path, test file): one tiny model per built-in head, trained for one epoch."""
    cache: dict[str, tuple[Path, Path]] = {}

    def get(task: str) -> tuple[Path, Path]:
        if task not in cache:
            directory = tmp_path_factory.mktemp(task)
            train_file, test_file = task_files(directory, task)
            out = directory / f"{task}.keras"
            train(task, train_file, epochs=1, batch_size=8, max_length=48, out=out, vocab_size=200, verbose=0, **TINY)
            cache[task] = (out, test_file)
        return cache[task]

    return get


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- help ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert f"usage: distilbert-heads {command}" in out
    assert "example" in out and f"distilbert-heads {command}" in out.split("example", 1)[1]


def test_top_level_help_lists_every_command(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in COMMANDS:
        assert command in out


# -- train and evaluate ----------------------------------------------------------------------------------
def test_train_then_evaluate_prints_metrics(tmp_path, capsys):
    train_file, test_file = task_files(tmp_path, "pairwise", "csv")
    out = tmp_path / "pairs.keras"
    code, stdout, err = run(
        capsys,
        "train",
        "--task",
        "pairwise",
        "--train",
        str(train_file),
        "--eval",
        str(test_file),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--max-length",
        "48",
        "--vocab-size",
        "200",
        "--cased",
        "--whole-words",
        "--token-dropout",
        "0.1",
        "--out",
        str(out),
        "--json",
    )
    assert code == 0, err
    assert out.is_file()
    # stdout is the JSON alone, for machines; what people read went to stderr.
    assert "accuracy" in err and "macro_f1" in err and f"saved {out}" in err
    reported = json.loads(stdout)
    assert reported["split"] == "eval" and set(reported["metrics"]) == {"accuracy", "macro_f1"}

    code, stdout, err = run(capsys, "evaluate", "--model", str(out), "--data", str(test_file), "--json")
    assert code == 0, err
    assert json.loads(stdout) == pytest.approx(reported["metrics"], abs=1e-6)
    code, stdout, _ = run(capsys, "evaluate", "--model", str(out), "--data", str(test_file))
    assert code == 0 and "accuracy" in stdout and "macro_f1" in stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{"text": "good", "label": "positive"}\n{"text": "bad", "label": "negative"\n',
            r"train.jsonl line 2: not valid JSON",
        ),
        ('{"text": "good", "label": "positive"}\n{"label": "negative"}\n', r"train.jsonl line 2: .*text"),
        ("", r"train.jsonl: no examples found"),
    ],
    ids=["bad-json-line", "missing-field", "empty-file"],
)
def test_broken_training_file_exits_2_with_the_line(tmp_path, capsys, content, expected):
    import re

    (tmp_path / "train.jsonl").write_text(content, encoding="utf-8")
    code, _, err = run(
        capsys,
        "train",
        "--task",
        "sentiment",
        "--train",
        str(tmp_path / "train.jsonl"),
        "--out",
        str(tmp_path / "m.keras"),
    )
    assert code == 2
    assert re.search(expected, err), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_csv_column_exits_2_with_the_line(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("text,label\ngood,positive\nbad\n", encoding="utf-8")
    code, _, err = run(
        capsys,
        "train",
        "--task",
        "sentiment",
        "--train",
        str(tmp_path / "train.csv"),
        "--out",
        str(tmp_path / "m.keras"),
    )
    assert code == 2 and "train.csv line 3" in err and "label" in err


def test_unknown_label_in_eval_file_exits_2_with_the_line(tmp_path, capsys):
    train_file, _ = task_files(tmp_path, "sentiment")
    eval_file = write_rows(
        tmp_path / "dev.jsonl",
        "sentiment",
        [{"text": "fine", "label": "positive"}, {"text": "so so", "label": "neutral"}],
    )
    code, _, err = run(
        capsys,
        "train",
        "--task",
        "sentiment",
        "--train",
        str(train_file),
        "--eval",
        str(eval_file),
        "--out",
        str(tmp_path / "m.keras"),
    )
    assert code == 2 and "dev.jsonl line 2" in err and "neutral" in err


# (task, rows whose third holds a label the trained head cannot predict, the label as the message names it)
UNSEEN_LABEL_ROWS = {
    "sentiment": (
        [
            {"text": "fine", "label": "positive"},
            {"text": "ok", "label": "negative"},
            {"text": "so so", "label": "neutral"},
        ],
        "neutral",
    ),
    "ner-tags": (
        [
            {"tokens": ["Ada", "Lovelace"], "tags": ["B-PER", "I-PER"]},
            {"tokens": ["Paris"], "tags": ["B-LOC"]},
            {"tokens": ["a", "Fiat"], "tags": ["O", "B-PRODUCT"]},
        ],
        "B-PRODUCT",
    ),
    "ner-spans": (
        [
            {"tokens": ["Ada"], "tags": ["B-PER"]},
            {"tokens": ["Paris"], "tags": ["B-LOC"]},
            {"text": "a Fiat", "entities": [{"start": 2, "end": 6, "label": "CAR"}]},
        ],
        "B-CAR",
    ),
}


@pytest.mark.parametrize("case", list(UNSEEN_LABEL_ROWS))
def test_unknown_label_in_evaluate_data_exits_2_with_the_line(trained, tmp_path, capsys, case):
    task = case.split("-")[0]
    model, _ = trained(task)
    rows, label = UNSEEN_LABEL_ROWS[case]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    code, _, err = run(capsys, "evaluate", "--model", str(model), "--data", str(data))
    assert code == 2 and "test.jsonl line 3" in err and repr(label) in err, err


def test_unknown_task_missing_files_and_models_exit_2(tmp_path, capsys):
    train_file, _ = task_files(tmp_path, "sentiment")
    code, _, err = run(
        capsys, "train", "--task", "no_such_task", "--train", str(train_file), "--out", str(tmp_path / "m.keras")
    )
    assert code == 2 and "no_such_task" in err and "Traceback" not in err
    code, _, err = run(
        capsys, "train", "--task", "sentiment", "--train", str(tmp_path / "nope.csv"), "--out", "m.keras"
    )
    assert code == 2 and "nope.csv" in err
    code, _, err = run(capsys, "evaluate", "--model", str(tmp_path / "nope.keras"), "--data", str(train_file))
    assert code == 2 and "No model file" in err
    code, _, err = run(capsys, "predict", "--model", str(tmp_path / "nope.keras"), "--text", "hi")
    assert code == 2 and "No model file" in err


# -- predict ------------------------------------------------------------------------------------------------
def test_predict_texts_readable_and_json(trained, capsys):
    model, _ = trained("sentiment")
    code, out, err = run(capsys, "predict", "--model", str(model), "--text", "What a lovely meal.", "A dull show.")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "What a lovely meal." and lines[2] == "A dull show."
    for line in (lines[1], lines[3]):
        assert line.startswith("  -> ") and ("positive (score " in line or "negative (score " in line)

    code, out, _ = run(capsys, "predict", "--model", str(model), "--text", "What a lovely meal.", "--json")
    record = json.loads(out)
    assert record["input"] == "What a lovely meal."
    assert record["prediction"]["label"] in {"positive", "negative"} and 0.0 <= record["prediction"]["score"] <= 1.0


def test_predict_in_bfloat16_gives_the_same_answers_and_rejects_unknown_policies(trained, capsys):
    model, _ = trained("sentiment")
    texts = ["What a lovely meal.", "A dull show.", "The film was fine."]
    code, out32, err = run(capsys, "predict", "--model", str(model), "--json", "--text", *texts)
    assert code == 0, err
    code, out16, err = run(capsys, "predict", "--model", str(model), "--json", "--dtype", "bfloat16", "--text", *texts)
    assert code == 0, err
    for full, low in zip(out32.splitlines(), out16.splitlines(), strict=True):
        full, low = json.loads(full)["prediction"], json.loads(low)["prediction"]
        assert abs(full["score"] - low["score"]) < 0.02 and (
            full["label"] == low["label"] or abs(full["score"] - 0.5) < 0.02
        )

    code, _, err = run(capsys, "predict", "--model", str(model), "--dtype", "float8", "--text", "x")
    assert code == 2 and "Unknown dtype policy 'float8'" in err


def test_predict_question_answering(trained, capsys):
    model, _ = trained("qa")
    context = "Grace Hopper founded Globex in 1971. The headquarters of Globex are in Oslo."
    code, out, err = run(
        capsys, "predict", "--model", str(model), "--question", "Who founded Globex?", "--context", context, "--json"
    )
    assert code == 0, err
    answer = json.loads(out)["prediction"]
    assert set(answer) >= {"answer", "score", "start", "end"}
    assert answer["answer"] == context[answer["start"] : answer["end"]] and answer["answer"]
    # A QA model asked with --text says what it needs.
    code, _, err = run(capsys, "predict", "--model", str(model), "--text", "hello")
    assert code == 2 and "--question" in err


def test_predict_pairs_and_file_input(trained, tmp_path, capsys):
    model, _ = trained("pairwise")
    code, out, err = run(
        capsys,
        "predict",
        "--model",
        str(model),
        "--text-a",
        "The cat bought a red car.",
        "--text-b",
        "The cat purchased a red car.",
    )
    assert code == 0, err
    assert "The cat bought a red car. || The cat purchased a red car." in out
    assert "paraphrase (score" in out or "different (score" in out
    rows = tmp_path / "pairs.csv"
    rows.write_text("text_a,text_b\nA b.,C d.\nE f.,G h.\n", encoding="utf-8")
    code, out, err = run(capsys, "predict", "--model", str(model), "--input", str(rows), "--json")
    assert code == 0, err
    assert [json.loads(line)["input"] for line in out.strip().splitlines()] == ["A b. || C d.", "E f. || G h."]
    bad = tmp_path / "bad.csv"
    bad.write_text("text\nno pair here\n", encoding="utf-8")
    code, _, err = run(capsys, "predict", "--model", str(model), "--input", str(bad))
    assert code == 2 and "bad.csv line 2" in err and "text_a" in err


def test_predict_entities_from_a_file(trained, tmp_path, capsys):
    model, _ = trained("ner")
    rows = tmp_path / "sentences.jsonl"
    rows.write_text('{"text": "Ada Lovelace moved to Paris ."}\n{"text": "Nothing here ."}\n', encoding="utf-8")
    code, out, err = run(capsys, "predict", "--model", str(model), "--input", str(rows), "--json")
    assert code == 0, err
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["input"] for r in records] == ["Ada Lovelace moved to Paris .", "Nothing here ."]
    for record in records:
        assert isinstance(record["prediction"], list)
        for entity in record["prediction"]:
            assert record["input"][entity["start"] : entity["end"]] == entity["word"]


# -- convert -----------------------------------------------------------------------------------------------
def _tiny_vocab() -> list[str]:
    words = ["the", "film", "was", "great", "bad", "good", "movie", ".", ",", "!", "?"]
    return tiny_vocab(words, letters=True, letter_pieces=True)


def test_convert_hf_checkpoint_matches_transformers(tmp_path, capsys):
    from hf_reference import make_hf_model, torch  # optional torch and transformers: skip when missing

    from distilbert_heads.text.tokenizer import DistilBertTokenizer

    vocab = _tiny_vocab()
    reference = make_hf_model("DistilBertForSequenceClassification", vocab_size=len(vocab), num_labels=3)
    checkpoint = tmp_path / "hf"
    reference.save_pretrained(checkpoint)
    DistilBertTokenizer.from_vocab(vocab).save(checkpoint)

    out = tmp_path / "converted.keras"
    code, stdout, err = run(capsys, "convert", str(checkpoint), "--task", "sentiment", "--out", str(out))
    assert code == 0, err
    assert f"saved {out}" in stdout

    model = keras.models.load_model(out)
    assert model.tokenizer is not None and model.tokenizer.vocab_size == len(vocab)
    encoding = model.tokenizer.encode(["The film was great!", "a bad movie"])
    ours = keras.ops.convert_to_numpy(model(encoding.as_model_inputs())["sentiment"]["logits"])
    with torch.no_grad():
        theirs = reference(
            input_ids=torch.tensor(encoding.input_ids, dtype=torch.long),
            attention_mask=torch.tensor(encoding.attention_mask, dtype=torch.long),
        ).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_convert_without_vocabulary_exits_2(tmp_path, capsys):
    from hf_reference import make_hf_model  # optional torch and transformers: skip when missing

    make_hf_model(vocab_size=99, n_layers=1).save_pretrained(tmp_path / "hf")
    code, _, err = run(
        capsys, "convert", str(tmp_path / "hf"), "--task", "sentiment", "--out", str(tmp_path / "m.keras")
    )
    assert code == 2 and "vocab.txt" in err


# -- export ------------------------------------------------------------------------------------------------
def test_export_saved_model_ids_gives_the_keras_outputs(trained, tmp_path, capsys):
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("export needs the TensorFlow backend")
    model_path, _ = trained("qa")
    out = tmp_path / "serving" / "1"
    code, stdout, err = run(
        capsys, "export", "--model", str(model_path), "--format", "saved_model_ids", "--out", str(out)
    )
    assert code == 0, err
    assert "token ids in" in stdout and (out / "tokenizer" / "vocab.txt").is_file()

    model = keras.models.load_model(model_path)
    encoding = model.tokenizer.encode(
        ["Who founded Hooli?", "Where?"], ["Ada Lovelace founded Hooli in 1990.", "In Paris, they say."]
    )
    expected = model(encoding.as_model_inputs(), training=False)["qa"]
    loaded = tf.saved_model.load(str(out))
    serve = loaded.signatures["serving_default"]
    outputs = serve(
        input_ids=tf.constant(encoding.input_ids, tf.int32),
        attention_mask=tf.constant(encoding.attention_mask, tf.int32),
    )
    assert set(outputs) == {"qa__start_logits", "qa__end_logits"}
    for name in ("start_logits", "end_logits"):
        np.testing.assert_allclose(
            outputs[f"qa__{name}"].numpy(), keras.ops.convert_to_numpy(expected[name]), rtol=1e-5, atol=1e-5
        )
    # A batch of another shape runs through the same signature.
    single = serve(
        input_ids=tf.constant(encoding.input_ids[:1, :5]), attention_mask=tf.constant(encoding.attention_mask[:1, :5])
    )
    assert single["qa__start_logits"].shape == (1, 5)


def test_export_over_an_existing_folder_needs_overwrite_and_then_replaces_it_whole(trained, tmp_path, capsys):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("export needs the TensorFlow backend")
    model_path, _ = trained("sentiment")
    out = tmp_path / "serving"
    out.mkdir()
    (out / "old.txt").write_text("a previous export", encoding="utf-8")
    code, _, err = run(capsys, "export", "--model", str(model_path), "--out", str(out))
    assert code == 2 and str(out) in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    code, _, err = run(capsys, "export", "--model", str(model_path), "--out", str(out), "--overwrite")
    assert code == 0, err
    assert (out / "saved_model.pb").is_file() and not (out / "old.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving"]  # no temporary or old folder left


def test_export_refuses_other_backends(trained, tmp_path, capsys, monkeypatch):
    model_path, _ = trained("sentiment")
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    code, _, err = run(capsys, "export", "--model", str(model_path), "--out", str(tmp_path / "out"))
    assert code == 2 and "TensorFlow backend" in err and "KERAS_BACKEND=tensorflow" in err


# -- every user error: one line, exit 2 ---------------------------------------------------------------------
def _saved_model_dir(tmp_path, trained):
    folder = tmp_path / "serving" / "1"
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")
    return ["predict", "--model", str(folder), "--text", "hi"]


def _bad_row_file(tmp_path, trained):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "fine", "label": "positive"}\n{"text": "oops", "label": \n', encoding="utf-8")
    return ["evaluate", "--model", str(trained("sentiment")[0]), "--data", str(data)]


def _nested_json_file(tmp_path, trained):
    data = tmp_path / "nested.jsonl"
    data.write_text('{"text": ' + "[" * 200_000 + "]" * 200_000 + ', "label": "x"}\n', encoding="utf-8")
    return ["train", "--task", "sentiment", "--train", str(data), "--out", str(tmp_path / "m.keras")]


def _not_a_zip(tmp_path, trained):
    model = tmp_path / "broken.keras"
    model.write_bytes(b"not a zip file")
    return ["predict", "--model", str(model), "--text", "hi"]


def _symlink(tmp_path, target, name):
    link = tmp_path / name
    link.symlink_to(target)
    return str(link)


def _rows(tmp_path, rows):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def _fifo(tmp_path, name):
    os.mkfifo(tmp_path / name)
    return str(tmp_path / name)


def _sentiment(tmp_path, trained):
    return str(trained("sentiment")[0])


def _train_file(tmp_path, trained):
    return str(task_files(tmp_path, "sentiment")[0])


USER_ERRORS = {
    "missing-file": (
        lambda tmp, tr: ["train", "--task", "sentiment", "--train", str(tmp / "nope.csv"), "--out", "m.keras"],
        ["nope.csv", "does not exist", "--train"],
    ),
    "unknown-task": (
        lambda tmp, tr: [
            "train",
            "--task",
            "no_such_task",
            "--train",
            _train_file(tmp, tr),
            "--out",
            str(tmp / "m.keras"),
        ],
        ["no_such_task"],
    ),
    "bad-flag-value": (
        lambda tmp, tr: [
            "train",
            "--task",
            "sentiment",
            "--train",
            _train_file(tmp, tr),
            "--epochs",
            "zero",
            "--out",
            "m.keras",
        ],
        ["--epochs", "'zero'", "distilbert-heads train --help"],
    ),
    "zero-epochs": (
        lambda tmp, tr: [
            "train",
            "--task",
            "sentiment",
            "--train",
            _train_file(tmp, tr),
            "--epochs",
            "0",
            "--out",
            "m.keras",
        ],
        ["--epochs", "at least 1"],
    ),
    "negative-learning-rate": (
        lambda tmp, tr: [
            "train",
            "--task",
            "sentiment",
            "--train",
            _train_file(tmp, tr),
            "--learning-rate",
            "-1",
            "--out",
            str(tmp / "m.keras"),
        ],
        ["--learning-rate", "-1.0", "positive finite"],
    ),
    "max-length-1": (
        lambda tmp, tr: [
            "train",
            "--task",
            "sentiment",
            "--train",
            _train_file(tmp, tr),
            "--max-length",
            "1",
            "--out",
            str(tmp / "m.keras"),
        ],
        ["--max-length", "is 1", "at least 3"],
    ),
    "unknown-flag": (lambda tmp, tr: ["predict", "--model", "m.keras", "--text", "hi", "--bogus"], ["--bogus"]),
    "flag-without-value": (lambda tmp, tr: ["predict", "--model", "m.keras", "--text"], ["--text"]),
    "device-as-file": (
        lambda tmp, tr: [
            "train",
            "--task",
            "sentiment",
            "--train",
            _symlink(tmp, "/dev/zero", "z.jsonl"),
            "--out",
            "m.keras",
        ],
        ["z.jsonl", "not a regular file", "--train"],
    ),
    "fifo-as-file": (
        lambda tmp, tr: ["predict", "--model", "m.keras", "--input", _fifo(tmp, "rows.jsonl")],
        ["rows.jsonl", "not a regular file", "--input"],
    ),
    "input-text-a-number": (
        lambda tmp, tr: [
            "predict",
            "--model",
            _sentiment(tmp, tr),
            "--input",
            _rows(tmp, [{"text": "fine"}, {"text": 5}]),
        ],
        ["rows.jsonl line 2", "text is the number 5, not a string", '"5"'],
    ),
    "input-text-null": (
        lambda tmp, tr: ["predict", "--model", _sentiment(tmp, tr), "--input", _rows(tmp, [{"text": None}])],
        ["rows.jsonl line 1", "text is null"],
    ),
    "input-wrong-column": (
        lambda tmp, tr: [
            "predict",
            "--model",
            str(tr("pairwise")[0]),
            "--input",
            _rows(tmp, [{"text_a": "a", "txt_b": "b"}]),
        ],
        ["rows.jsonl line 1", "no column(s) text_b", "the row has text_a, txt_b"],
    ),
    "directory-as-file": (lambda tmp, tr: ["evaluate", "--model", "m.keras", "--data", str(tmp)], ["is a directory"]),
    "saved-model-as-model": (_saved_model_dir, ["SavedModel export", "serving", "Pass the .keras file"]),
    "question-to-sentiment": (
        lambda tmp, tr: ["predict", "--model", _sentiment(tmp, tr), "--question", "Who?", "--context", "Ada."],
        ["--question", "--context", "--text TEXT", "input_kind 'text'", "one text per input"],
    ),
    "pair-count-mismatch": (
        lambda tmp, tr: [
            "predict",
            "--model",
            str(tr("pairwise")[0]),
            "--text-a",
            "A",
            "--text-a",
            "B",
            "--text-b",
            "C",
        ],
        ["--text-a was given 2", "--text-b 1"],
    ),
    "pair-flag-missing": (
        lambda tmp, tr: ["predict", "--model", str(tr("pairwise")[0]), "--text-a", "A"],
        ["--text-b is missing", "--text-a TEXT_A --text-b TEXT_B", "input_kind 'pair'"],
    ),
    "input-and-text": (
        lambda tmp, tr: ["predict", "--model", _sentiment(tmp, tr), "--input", _train_file(tmp, tr), "--text", "hi"],
        ["--input", "--text"],
    ),
    "bad-data-row": (_bad_row_file, ["bad.jsonl line 2"]),
    "deeply-nested-json": (_nested_json_file, ["nested.jsonl line 1", "nested too deeply"]),
    "convert-out-not-keras": (
        lambda tmp, tr: ["convert", str(tmp), "--task", "sentiment", "--out", "m.h5"],
        [".keras", "'m.h5'"],
    ),
    "keras-file-not-a-zip": (_not_a_zip, ["broken.keras"]),
}


@pytest.mark.parametrize("case", list(USER_ERRORS), ids=list(USER_ERRORS))
def test_user_errors_print_one_plain_line_and_exit_2(trained, tmp_path, capfd, case):
    make_argv, expected = USER_ERRORS[case]
    argv = make_argv(tmp_path, trained)
    capfd.readouterr()
    code = main(argv)
    err = capfd.readouterr().err
    assert code == 2, err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "usage:" not in err and "\x1b[" not in err
    for fact in expected:
        assert fact in err, (fact, err)


class _Raises(keras.layers.Layer):
    def call(self, inputs):
        raise ValueError("input_ids hold id 70000 but the vocabulary has 30522 ids; check the tokenizer")


@pytest.mark.parametrize(
    "make_error",
    [
        lambda: _Raises()(np.zeros((1, 2))),  # Keras wraps it: "Exception encountered when calling ..."
        lambda: (_ for _ in ()).throw(
            ValueError(
                "Exception encountered when calling DistilBERT.call().\n\n\x1b[1minput_ids hold id 70000 but the "
                "vocabulary has 30522 ids; check the tokenizer\x1b[0m\n\nArguments received by DistilBERT.call():\n"
                "  • inputs={'input_ids': 'tf.Tensor(shape=(1, 2), dtype=int32)'}"
            )
        ),
    ],
    ids=["raised-through-keras", "wrapped-text-only"],
)
def test_keras_wrapped_errors_print_only_the_original_message(monkeypatch, capfd, make_error):
    from distilbert_heads import cli

    def fail(args):
        make_error()

    monkeypatch.setattr(cli, "_cmd_heads", fail)
    assert main(["heads"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line, no traceback
    assert_mentions(err, "input_ids", "70000", "30522", "check the tokenizer")


@pytest.mark.parametrize(
    ("error", "debug"),
    [(KeyError("a bug"), ""), (AttributeError("a bug"), ""), (ValueError("bad input"), "1")],
    ids=["bug-keyerror", "bug-attributeerror", "debug-shows-user-errors"],
)
def test_bugs_and_debug_mode_raise_instead_of_one_line(monkeypatch, error, debug):
    from distilbert_heads import cli

    def fail(args):
        raise error

    monkeypatch.setattr(cli, "_cmd_heads", fail)
    monkeypatch.setenv("DISTILBERT_HEADS_DEBUG", debug)
    with pytest.raises(type(error)):
        main(["heads"])


# -- predict answers every input, in order ------------------------------------------------------------------
@pytest.mark.parametrize(
    "text_flags",
    [
        ["--text", "A superb meal.", "--text", "An awful trip.", "--text", "Fine."],
        ["--text", "A superb meal.", "An awful trip.", "--text", "Fine."],
    ],
    ids=["repeated-flag", "mixed"],
)
def test_predict_answers_every_text_in_order(trained, capsys, text_flags):
    model = str(trained("sentiment")[0])
    texts = ["A superb meal.", "An awful trip.", "Fine."]
    code, out, err = run(capsys, "predict", "--model", model, "--json", *text_flags)
    assert code == 0, err
    records = [json.loads(line) for line in out.strip().splitlines()]
    assert [record["input"] for record in records] == texts
    for text, record in zip(texts, records, strict=True):  # each answer is that text's own
        _, alone, _ = run(capsys, "predict", "--model", model, "--json", "--text", text)
        assert json.loads(alone)["prediction"]["label"] == record["prediction"]["label"]
        assert json.loads(alone)["prediction"]["score"] == pytest.approx(record["prediction"]["score"], abs=1e-4)


def test_predict_repeated_pairs_answer_each_pair(trained, capsys):
    code, out, err = run(
        capsys,
        "predict",
        "--model",
        str(trained("pairwise")[0]),
        "--json",
        "--text-a",
        "A cat sat.",
        "--text-b",
        "A cat was sitting.",
        "--text-a",
        "Rain fell.",
        "--text-b",
        "The sun shone.",
    )
    assert code == 0, err
    inputs = [json.loads(line)["input"] for line in out.strip().splitlines()]
    assert inputs == ["A cat sat. || A cat was sitting.", "Rain fell. || The sun shone."]


# -- the installed script and the demo --------------------------------------------------------------------
@pytest.mark.slow
def test_installed_script_prints_one_error_line_without_traceback(tmp_path):
    train_file, _ = task_files(tmp_path, "sentiment")
    completed = subprocess.run(
        [
            str(SCRIPT),
            "train",
            "--task",
            "no_such_task",
            "--train",
            str(train_file),
            "--out",
            str(tmp_path / "m.keras"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no_such_task" in errors[0]
    assert "Traceback" not in completed.stderr


@pytest.mark.slow
def test_demo_quick_runs_every_step_and_prints_the_table(tmp_path, capsys):
    code, out, err = run(capsys, "demo", "--quick", "--out", str(tmp_path))
    assert code == 0, err
    for task in ("sentiment", "ner", "qa", "pairwise"):
        assert (tmp_path / f"{task}.keras").is_file()
        assert f"{task}: 1 epoch(s)" in out
    assert "identical to the in-process ones" in out
    assert "held-out test metrics" in out and "Chance" in out
    for metric in ("accuracy", "f1", "exact_match"):
        assert metric in out
