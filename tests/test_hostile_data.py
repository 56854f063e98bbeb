"""Hostile data files and labels: each fails with one clear message (file, line, what, the fix), memory stays
bounded, labels never silently switch a classification to regression, and chance-level training says so."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import keras
import pytest
from helpers import TINY_TRAINING as TINY
from helpers import assert_mentions

import distilbert_heads  # noqa: F401  (registers the Keras classes)
from distilbert_heads.heads.ner import NerExample, NerHead
from distilbert_heads.heads.sentiment import SentimentHead, TextExample
from distilbert_heads.training import data_files as data_module
from distilbert_heads.training.data_files import (
    MAX_LINE_BYTES,
    MAX_LINE_BYTES_ENV,
    DataFileError,
    read_examples,
    read_rows,
)
from distilbert_heads.training.evaluation import chance_level_warning
from distilbert_heads.training.examples import head_record, infer_options, read_task_examples
from distilbert_heads.training.loop import train
from distilbert_heads.training.settings import ChanceLevelWarning, TrainingError

GOOD = '{"text": "a fine film", "label": "positive"}\n'
DEEP = 100_000

# (file name, bytes, fragments the message must hold). The fragments name the line (where the
# problem has one), what was wrong and what to do; every message must also name the file.
HOSTILE_FILES = [
    ("utf16.jsonl", GOOD.encode("utf-16"), ["UTF-16", "must be UTF-8", "iconv -f UTF-16 -t UTF-8"]),
    ("utf32.jsonl", GOOD.encode("utf-32"), ["UTF-32", "iconv -f UTF-32"]),
    ("utf16-no-bom.csv", "text,label\nfilm,positive\n".encode("utf-16-le"), ["line 1", "NUL byte", "iconv -f UTF-16"]),
    (
        "latin1.csv",
        "text,label\ncafé noir,positive\n".encode("latin1"),
        ["line 2", "byte offset 14", "not UTF-8", "iconv -f latin1 -t utf-8"],
    ),
    (
        "cp1252.jsonl",
        (GOOD + '{"text": "\u201cquoted\u201d", "label": "negative"}\n').encode("cp1252"),
        ["line 2", "not UTF-8", "iconv -f latin1"],
    ),
    (
        "deep.jsonl",
        (GOOD + '{"text": "a", "label": ' + "[" * DEEP + "]" * DEEP + "}\n").encode(),
        ["line 2", "nested too deeply", '"text": ...'],
    ),
    ("array.jsonl", b'[{"text": "a", "label": "x"}]\n', ["line 1", "expected a JSON object", "a JSON array", "jq -c"]),
    ("number.jsonl", (GOOD + "42\n").encode(), ["line 2", "expected a JSON object", "got a number"]),
    ("string.jsonl", (GOOD + '"just text"\n').encode(), ["line 2", "got a JSON string"]),
    ("null.jsonl", (GOOD + "null\n").encode(), ["line 2", "got null"]),
    (
        "pretty.json",
        b'[\n  {"text": "a", "label": "x"}\n]\n',
        ["line 1", "not valid JSON", "one object per line", "jq"],
    ),
    ("broken.jsonl", (GOOD + '{"text": "a", "label": \n').encode(), ["line 2", "not valid JSON", "column"]),
    ("bigint.jsonl", (GOOD + '{"text": "a", "label": ' + "9" * 5000 + "}\n").encode(), ["line 2", "too many digits"]),
    ("surrogate.jsonl", (GOOD + '{"text": "smile \\ud83d", "label": "x"}\n').encode(), ["line 2", "lone surrogate"]),
    (
        "no-header.csv",
        b"great film,positive\nawful film,negative\n",
        ["line 1", "header", "must name the columns", "text,label"],
    ),
    ("short-row.csv", b"text,label\ngood,positive\nno label here\n", ["line 3", "1 cell", "2 columns", "text, label"]),
    ("long-row.csv", b"text,label\ngood, really good,positive\n", ["line 2", "3 cells", "Quote cells"]),
    ("nul.csv", b"text,label\ngood\x00film,positive\n", ["line 2", "NUL byte"]),
    ("unclosed.csv", b'text,label\n"good film,positive\nbad,negative\n', ["line 2", "not valid CSV", "never closed"]),
    ("mac.csv", b"text,label\rgood,positive\rbad,negative\r", ["line 1", "\\r"]),
    ("twice.csv", b"text,text,label\na,b,positive\n", ["line 1", "'text'", "more than once"]),
    ("unnamed.csv", b"text,label,\ngood,positive,oops\n", ["line 2", "column 3", "no name"]),
    ("empty.csv", b"", ["empty", "first line must name the columns"]),
    ("header-only.csv", b"text,label\n", ["no examples found", "text, label"]),
    ("empty.jsonl", b"", ["no examples found", "text, label"]),
    ("blank.jsonl", b"\n   \n\n", ["no examples found"]),
    ("bad-row.jsonl", (GOOD + '{"text": "no label"}\n').encode(), ["line 2", "label: Field required", "text, label"]),
]


def _check_message(message: str, name: str, fragments: list[str]) -> None:
    assert name in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "Traceback" not in message and len(message) < 1000, message


@pytest.mark.parametrize(("name", "content", "fragments"), HOSTILE_FILES, ids=[case[0] for case in HOSTILE_FILES])
def test_bad_file_gets_one_clear_error_from_the_reader_and_train(tmp_path, name, content, fragments):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataFileError) as from_reader:
        read_examples(path, TextExample, "task 'sentiment'")
    _check_message(str(from_reader.value), name, fragments)
    # train() reads before it builds anything: the same error, no model, no traceback from deeper down.
    with pytest.raises((DataFileError, TrainingError)) as from_train:
        train("sentiment", path, epochs=1, verbose=0, **TINY)
    _check_message(str(from_train.value), name, fragments)


def test_utf8_with_byte_order_mark_reads_like_plain_utf8(tmp_path):
    rows = "text,label\ncafé,positive\nbad,negative\n"
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + rows.encode())
    (tmp_path / "plain.csv").write_bytes(rows.encode())
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert read_examples(tmp_path / "bom.csv", TextExample) == read_examples(tmp_path / "plain.csv", TextExample)
    assert read_examples(tmp_path / "bom.jsonl", TextExample)[0].text == "a fine film"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_line_over_the_limit_names_line_limit_and_override(tmp_path, monkeypatch, fmt):
    long_text = "word " * 60_000  # 300 kB
    if fmt == "jsonl":
        content = GOOD + json.dumps({"text": long_text, "label": "positive"}) + "\n"
    else:
        content = f"text,label\ngood,positive\n{long_text},positive\n"
    path = tmp_path / f"long.{fmt}"
    path.write_text(content, encoding="utf-8")
    monkeypatch.setenv(MAX_LINE_BYTES_ENV, "100000")
    with pytest.raises(DataFileError) as error:
        read_examples(path, TextExample)
    _check_message(
        str(error.value), path.name, [f"line {2 if fmt == 'jsonl' else 3}", "100000 bytes", MAX_LINE_BYTES_ENV]
    )
    monkeypatch.setenv(MAX_LINE_BYTES_ENV, "1000000")  # the documented override lets it through
    assert read_examples(path, TextExample)[-1].text.strip() == long_text.strip()
    monkeypatch.setenv(MAX_LINE_BYTES_ENV, "lots")
    with pytest.raises(DataFileError) as error:
        read_examples(path, TextExample)
    assert_mentions(error, f"{MAX_LINE_BYTES_ENV}='lots'", "not a positive number")


def test_csv_record_spanning_lines_is_bounded_too(tmp_path):
    # An unclosed quote swallows line after line; the record limit stops it at the line where it began.
    path = tmp_path / "swallow.csv"
    path.write_text('text,label\ngood,positive\n"never closed,positive\n' + "more text,negative\n" * 5000)
    with pytest.raises(DataFileError) as error:
        list(read_rows(path, max_line_bytes=10_000))
    _check_message(str(error.value), "swallow.csv", ["line 3", "never closed", "10000 bytes"])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads peak memory from Linux's /proc")
def test_fifty_megabyte_line_keeps_memory_bounded(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(GOOD)
        handle.write('{"text": "')
        handle.writelines("x" * 2**20 for _ in range(50))
        handle.write('", "label": "positive"}\n')
    # The reader module alone (no TensorFlow import, whose start-up peak would hide the growth); first with the
    # default limit, then with a limit above the line, which shows the measurement sees a line read whole.
    # Peak RSS is VmHWM: ru_maxrss of a child started by fork+exec keeps the (large) pytest parent's peak.
    script = textwrap.dedent(f"""
        import importlib.util, re
        from pydantic import BaseModel
        spec = importlib.util.spec_from_file_location("reader", {data_module.__file__!r})
        reader = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(reader)
        class Row(BaseModel):
            text: str
            label: str
        def peak_kb():
            with open("/proc/self/status") as status:
                return int(re.search(r"VmHWM:\\s+(\\d+)", status.read()).group(1))
        def peak_growth_kb(limit):
            before = peak_kb()
            try:
                reader.read_examples({str(path)!r}, Row, max_line_bytes=limit)
            except reader.DataFileError as error:
                print("MESSAGE", error)
            return peak_kb() - before
        print("BOUNDED_KB", peak_growth_kb(None))
        print("WHOLE_KB", peak_growth_kb(100 * 2**20))
    """)
    env = {key: value for key, value in os.environ.items() if key != MAX_LINE_BYTES_ENV}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.split(" ")[0].isupper())
    _check_message(lines["MESSAGE"], "huge.jsonl", ["line 2", "1 MiB", MAX_LINE_BYTES_ENV])
    bounded, whole = int(lines["BOUNDED_KB"]) / 1024, int(lines["WHOLE_KB"]) / 1024
    assert whole > 50, f"reading the 50 MiB line whole should show in the peak memory (grew {whole:.0f} MiB)"
    assert bounded < MAX_LINE_BYTES / 2**20 + 8, f"peak memory grew by {bounded:.0f} MiB under the default limit"


# -- labels: numbers never silently turn a classification into a regression -------------------------------
def _label_file(path: Path, task: str, labels: list) -> Path:
    if task in ("sentiment", "text_regression"):
        rows = [{"text": f"text number {i}", "label": label} for i, label in enumerate(labels)]
    else:
        rows = [{"text_a": f"a {i}", "text_b": f"b {i}", "label": label} for i, label in enumerate(labels)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# (task, labels, the options inferred, or the fragments of the error); the file has one row per line from line 1.
LABEL_CASES = [
    ("sentiment", [0, 1, 2, 1], {"labels": ["0", "1", "2"]}),
    ("sentiment", ["0", "1", "1"], {"labels": ["0", "1"]}),
    ("sentiment", [5, 3, 1, 4, 2], {"labels": ["1", "2", "3", "4", "5"]}),
    ("sentiment", [1.0, 0.0], {"labels": ["0", "1"]}),
    ("sentiment", ["pos", "neg"], {"labels": ["pos", "neg"]}),
    (
        "sentiment",
        [1, 1, 1],
        ["every row has the label '1'", "one class cannot be learnt", "--task text_regression", "num_classes=1"],
    ),
    ("sentiment", ["pos", "pos"], ["every row has the label 'pos'", "at least two classes"]),
    ("sentiment", [0.37, 0.9], ["line 1", "0.37 is a fractional number", "classification", "--task text_regression"]),
    ("sentiment", [0, 1, "0.5"], ["line 3", "0.5 is a fractional number", "text_regression"]),
    ("sentiment", ["pos", "neg", 1], ["line 3", "label 1 is a number", "class names (such as 'pos')"]),
    ("text_regression", [0.37, 1, 2.5], {"num_classes": 1}),
    ("text_regression", [1, 1, 1], {"num_classes": 1}),
    ("text_similarity", [0.5, 4.2, 3], {"num_classes": 1}),
    ("text_similarity", ["same", 0.5], ["line 2", "fractional", "every label is a number"]),
    ("paraphrase_detection", [0, 1, 1], {"labels": ["0", "1"]}),
    ("paraphrase_detection", [0.5, 1], ["line 1", "fractional", "--task text_similarity"]),
    ("natural_language_inference", ["entailment"] * 3, ["every row has the label 'entailment'"]),
]


@pytest.mark.parametrize(("task", "labels", "expected"), LABEL_CASES)
def test_numeric_labels_follow_the_task_type(tmp_path, task, labels, expected):
    path = _label_file(tmp_path / "labels.jsonl", task, labels)
    record = head_record(task)
    examples = read_task_examples(path, record.head_class, task)
    if isinstance(expected, dict):
        assert infer_options(record.head_class, examples, record.task_type, path=path) == expected
        return
    with pytest.raises(TrainingError) as error:
        infer_options(record.head_class, examples, record.task_type, path=path)
    _check_message(str(error.value), "labels.jsonl", expected)


def test_train_refuses_numeric_labels_it_cannot_classify_and_takes_an_explicit_regression(tmp_path):
    path = _label_file(tmp_path / "scores.jsonl", "sentiment", [0.1, 0.8, 0.4, 0.3])
    with pytest.raises(TrainingError, match=r"scores.jsonl line 1: .*fractional.*--task text_regression"):
        train("sentiment", path, epochs=1, verbose=0, **TINY)
    ones = _label_file(tmp_path / "ones.jsonl", "sentiment", [1, 1, 1, 1])
    with pytest.raises(TrainingError, match=r"ones.jsonl: every row has the label '1'"):
        train("sentiment", ones, epochs=1, verbose=0, **TINY)
    # Asking for a regression explicitly (head option num_classes=1) trains one on the same file.
    result = train("sentiment", path, epochs=1, verbose=0, head_options={"num_classes": 1}, vocab_size=100, **TINY)
    assert result.model.heads["sentiment"].is_regression and set(result.metrics) == {"pearson", "spearman", "mse"}


def test_numeric_class_labels_are_announced(tmp_path, capsys):
    path = _label_file(tmp_path / "ids.jsonl", "sentiment", [0, 1, 0, 1, 2, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChanceLevelWarning)
        result = train("sentiment", path, epochs=1, verbose=2, vocab_size=100, **TINY)
    assert result.model.heads["sentiment"].class_names == ["0", "1", "2"]
    out = capsys.readouterr().out
    assert "read as 3 class names" in out and "text_regression" in out


# -- chance level ------------------------------------------------------------------------------------------
def test_chance_level_warning_for_constant_and_guessing_answers():
    examples = [TextExample(text=f"t{i}", label=label) for i, label in enumerate(["pos", "pos", "pos", "neg"])]
    head = SentimentHead(8, "sentiment", {"labels": ["pos", "neg"]})
    constant = [{"label": "pos", "score": 0.9}] * 4
    message = chance_level_warning(head, examples, constant, head.evaluate(examples, constant), advice="more rows")
    assert message is not None
    for fact in ("accuracy", "0.750", "guessing scores 0.750", "every prediction is the class 'pos'", "more rows"):
        assert fact in message, message
    perfect = [{"label": example.label, "score": 0.9} for example in examples]
    assert chance_level_warning(head, examples, perfect, head.evaluate(examples, perfect)) is None

    tagged = [NerExample(tokens=["Ada", "ran"], tags=["B-PER", "O"])] * 3
    tagger = NerHead(8, "ner", {"labels": ["O", "B-PER", "I-PER"]})
    nothing: list = [[] for _ in tagged]
    ner_message = chance_level_warning(tagger, tagged, nothing, tagger.evaluate(tagged, nothing), split="train")
    assert ner_message is not None and "f1 on the training rows is 0.000" in ner_message


def test_training_on_random_labels_warns_at_chance_level(tmp_path, capsys):
    rng = random.Random(0)
    words = ["film", "plot", "actor", "scene", "music", "story", "ending", "cast", "script", "camera"]
    rows = [
        {"text": " ".join(rng.choices(words, k=6)), "label": rng.choice(["positive", "negative"])} for _ in range(30)
    ]
    path = tmp_path / "random.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    keras.utils.set_random_seed(0)
    with pytest.warns(ChanceLevelWarning) as caught:
        result = train("sentiment", path, epochs=1, batch_size=16, verbose=2, vocab_size=100, **TINY)
    (message,) = [str(w.message) for w in caught if w.category is ChanceLevelWarning]
    assert result.warnings == [message]
    majority = max(sum(row["label"] == label for row in rows) for label in ("positive", "negative")) / len(rows)
    for fact in (
        f"accuracy on the training rows is {result.metrics['accuracy']:.3f}",
        f"guessing scores {majority:.3f}",
        "30",
        "more epochs",
        "--pretrained",
        "--variant",
    ):
        assert fact in message, message
    assert f"warning: {message}" in capsys.readouterr().out


# -- training settings: refused before any file is read, and a diverged run never overwrites a model ---------------
BAD_SETTINGS = [
    ({"learning_rate": -1.0}, ["learning_rate (--learning-rate) is -1.0", "positive finite"]),
    ({"learning_rate": float("nan")}, ["learning_rate (--learning-rate) is nan"]),
    ({"learning_rate": float("inf")}, ["learning_rate (--learning-rate) is inf"]),
    ({"learning_rate": 0.0}, ["learning_rate (--learning-rate) is 0.0"]),
    ({"max_length": 1}, ["max_length (--max-length) is 1", "at least 3"]),
    ({"epochs": 0}, ["epochs (--epochs) is 0", "1 or more"]),
    ({"batch_size": -5}, ["batch_size (--batch-size) is -5"]),
    ({"patience": -3}, ["patience (--patience) is -3", "0 (never stop early)"]),
    ({"token_dropout": 1.0}, ["token_dropout (--token-dropout) is 1.0"]),
    (
        {"token_dropout": float("nan"), "epochs": "3"},
        ["token_dropout (--token-dropout) is nan", "epochs (--epochs) is '3'"],
    ),
]


@pytest.mark.parametrize(("settings", "fragments"), BAD_SETTINGS, ids=[str(case[0]) for case in BAD_SETTINGS])
def test_bad_training_settings_are_refused_before_reading_the_files(tmp_path, settings, fragments):
    with pytest.raises(TrainingError) as error:
        train("sentiment", tmp_path / "never-read.jsonl", out=tmp_path / "m.keras", verbose=0, **settings)
    for fragment in ["Bad training settings", *fragments]:
        assert fragment in str(error.value), str(error.value)
    assert not (tmp_path / "m.keras").exists()


def test_a_diverged_run_raises_and_leaves_the_previous_model_in_place(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(
            json.dumps({"text": f"{word} film {i}", "label": word}) + "\n" for i in range(8) for word in ("good", "bad")
        ),
        encoding="utf-8",
    )
    out = tmp_path / "m.keras"
    out.write_bytes(b"the previous, good model")
    with pytest.raises(TrainingError) as error:
        train("sentiment", data, epochs=2, learning_rate=1e30, out=out, verbose=0, vocab_size=60, **TINY)
    for fragment in [
        "Training diverged",
        "NaN or infinite",
        f"nothing was written to {str(out)!r}",
        "Lower the learning rate",
        "1e+30",
    ]:
        assert fragment in str(error.value), str(error.value)
    assert out.read_bytes() == b"the previous, good model"


@pytest.mark.parametrize("kind", ["directory", "fifo", "device"])
def test_a_path_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path, kind):
    path = tmp_path / "rows.jsonl"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # opening it would block until a writer came
    else:
        path.symlink_to("/dev/zero")  # reading it would never end
    with pytest.raises(DataFileError) as error:
        list(read_rows(path))
    expected = "is a directory" if kind == "directory" else "not a regular file"
    assert "rows.jsonl" in str(error.value) and expected in str(error.value), str(error.value)
