"""``predict --input FILE --output OUT.jsonl``: answers written as they are made, in input order, to OUT.partial,
renamed to OUT only once every row is answered; ``--resume`` continues after a kill without repeating or dropping
a row, and refuses a partial file that answers another input, model or dtype, or that was changed."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import TINY_TRAINING as TINY
from helpers import assert_mentions, demo_rows

import distilbert_heads  # noqa: F401  (registers the Keras classes)
from distilbert_heads.cli import main
from distilbert_heads.training import answer_files
from distilbert_heads.training.examples import load_model
from distilbert_heads.training.loop import train

pytestmark = pytest.mark.filterwarnings("ignore::distilbert_heads.training.ChanceLevelWarning")  # tiny runs

ROWS = 4000
CHUNK = 50  # small chunks, so the killed run is caught with some chunks written and many to go


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    return path


def input_rows(count: int) -> list[dict]:
    rows = demo_rows("sentiment")
    return [{"id": f"r{i}", "text": f"{rows[i % len(rows)]['text']} r{i}"} for i in range(count)]


def predict(*args: str) -> list[str]:
    return ["predict", *args, "--chunk-rows", str(CHUNK)]


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo_tokenizer):
    """A tiny model, an input file, and the answers of an uninterrupted `predict --output` run."""
    folder = tmp_path_factory.mktemp("predict_output")
    train_file = write_jsonl(folder / "train.jsonl", demo_rows("sentiment", 64))
    model = folder / "model.keras"
    settings = {"epochs": 1, "batch_size": 8, "max_length": 32, "verbose": 0, "seed": 0, **TINY}
    train("sentiment", train_file, tokenizer=demo_tokenizer, out=model, **settings)
    inputs = write_jsonl(folder / "inputs.jsonl", input_rows(ROWS))
    reference = folder / "reference.jsonl"
    assert main(predict("--model", str(model), "--input", str(inputs), "--output", str(reference))) == 0
    return {"folder": folder, "model": model, "inputs": inputs, "reference": reference}


def test_the_answer_file_has_one_line_per_row_in_order_joined_by_line_and_id(run, capsys):
    records = [json.loads(line) for line in run["reference"].read_text("utf-8").splitlines()]
    rows = input_rows(ROWS)
    assert [(r["line"], r["id"], r["input"]) for r in records] == [
        (i + 1, row["id"], row["text"]) for i, row in enumerate(rows)
    ]
    # The same answer shape as `predict --json` prints.
    assert main(["predict", "--model", str(run["model"]), "--json", "--text", rows[7]["text"]]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {key: records[7][key] for key in printed} == printed


@pytest.fixture(scope="module")
def killed(run, tmp_path_factory):
    """A real `distilbert-heads predict --output` process SIGKILLed part way: its partial and run files."""
    folder = tmp_path_factory.mktemp("killed")
    output = folder / "answers.jsonl"
    partial, run_file = answer_files.partial_path(output), answer_files.run_file_path(output)
    command = [sys.executable, "-m", "distilbert_heads.cli"]
    command += predict("--model", str(run["model"]), "--input", str(run["inputs"]), "--output", str(output))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    final_seen = False
    try:
        deadline = time.monotonic() + 300
        while line_count(partial) < ROWS // 4 and process.poll() is None and time.monotonic() < deadline:
            final_seen |= output.exists()
            time.sleep(0.005)
        final_seen |= output.exists()
        process.send_signal(signal.SIGKILL)
    finally:
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the run ended before it was killed: {stderr}"
    assert not final_seen and not output.exists(), "the final name must appear only once every row is answered"
    done = line_count(partial)
    assert CHUNK <= done < ROWS and done % CHUNK == 0  # whole chunks, flushed as they were answered
    kept = folder / "kept"
    kept.mkdir()
    shutil.copy2(partial, kept / partial.name)
    shutil.copy2(run_file, kept / run_file.name)
    return {"output": output, "kept": kept, "done": done}


def fresh_copy(killed, tmp_path: Path) -> Path:
    """A copy of the killed run's partial and run files beside a new output path; returns the output path."""
    for file in killed["kept"].iterdir():
        shutil.copy2(file, tmp_path / file.name)
    return tmp_path / killed["output"].name


def test_resume_after_sigkill_equals_an_uninterrupted_run_byte_for_byte(run, killed, tmp_path):
    output = fresh_copy(killed, tmp_path)
    partial = answer_files.partial_path(output)
    with open(partial, "ab") as file:  # and a kill mid-write: half a line, which is answered again
        file.write(b'{"line": 99999, "id": "r9')
    command = [sys.executable, "-m", "distilbert_heads.cli"]
    command += predict("--model", str(run["model"]), "--input", str(run["inputs"]), "--output", str(output), "--resume")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{killed['done']:,} of them from the interrupted run" in done.stdout
    assert output.read_bytes() == run["reference"].read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == [output.name]  # no .partial or run file left


def _other_input(run, tmp_path):
    rows = input_rows(ROWS)
    rows[3]["text"] = rows[3]["text"].replace("r3", "x3")  # same size, another first row
    return ["--input", str(write_jsonl(tmp_path / "inputs.jsonl", rows))]


def _other_model(run, tmp_path):
    model = load_model(run["model"])
    kernel = model.weights[-2]
    kernel.assign(keras.ops.convert_to_numpy(kernel) + np.float32(0.5))
    model.save(tmp_path / "other.keras")
    return ["--model", str(tmp_path / "other.keras")]


def _rewrite_partial(edit):
    def setup(run, tmp_path):
        partial = tmp_path / "answers.jsonl.partial"
        lines = partial.read_bytes().splitlines(keepends=True)
        partial.write_bytes(b"".join(edit(lines)))
        return []

    return setup


def _more_answers_than_rows(run, tmp_path):
    extra = json.dumps({"line": ROWS + 1, "input": "?", "prediction": None}) + "\n"
    (tmp_path / "answers.jsonl.partial").write_bytes(run["reference"].read_bytes() + extra.encode())
    return []


def _remove(name):
    def setup(run, tmp_path):
        (tmp_path / name).unlink()
        return []

    return setup


# Each a resume that must be refused, leaving the partial file as it was: (what the case adds, facts in the error).
HOSTILE_RESUMES = {
    "another input": (_other_input, ["answers.jsonl.partial", "SHA-256 of the input", "--input"]),
    "another model": (_other_model, ["answers.jsonl.partial", "model file's SHA-256", "--model"]),
    "another dtype": (lambda run, tmp: ["--dtype", "bfloat16"], ["--dtype", "None", "bfloat16"]),
    "a line lost": (
        _rewrite_partial(lambda lines: lines[:9] + lines[10:]),
        ["answers.jsonl.partial line 10", "input line 11", "line 10", "without --resume"],
    ),
    "a corrupted line": (
        _rewrite_partial(lambda lines: [*lines[:4], b"\x00\x00garbage\n", *lines[5:]]),
        ["answers.jsonl.partial line 5", "not JSON", "without --resume"],
    ),
    "more answers than rows": (
        _more_answers_than_rows,
        ["beyond the input's last row", "without --resume"],
    ),
    "no run file": (_remove("answers.jsonl.partial.json"), ["answers.jsonl.partial.json", "without --resume"]),
    "nothing to resume": (_remove("answers.jsonl.partial"), ["nothing to resume", "answers.jsonl.partial"]),
}


@pytest.mark.parametrize("case", HOSTILE_RESUMES, ids=list(HOSTILE_RESUMES))
def test_a_resume_that_does_not_match_is_refused_and_changes_nothing(case, run, killed, tmp_path, capsys):
    output = fresh_copy(killed, tmp_path)
    setup, facts = HOSTILE_RESUMES[case]
    overrides = setup(run, tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    given = dict(zip(overrides[::2], overrides[1::2]))
    flags = {"--model": str(run["model"]), "--input": str(run["inputs"]), **given}
    code = main(predict(*(part for item in flags.items() for part in item), "--output", str(output), "--resume"))
    err = capsys.readouterr().err
    assert code == 2, err
    assert_mentions(err, *facts)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    assert not output.exists()


def test_a_run_without_resume_starts_over_and_says_so(run, killed, tmp_path, capsys):
    output = fresh_copy(killed, tmp_path)
    assert main(predict("--model", str(run["model"]), "--input", str(run["inputs"]), "--output", str(output))) == 0
    assert "starting over" in capsys.readouterr().err
    assert output.read_bytes() == run["reference"].read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == [output.name]


# -- the writer: lazy, one chunk at a time, never a half-written file under the output's name -----------------------
def test_rows_are_read_one_chunk_ahead_and_an_interrupted_run_keeps_the_earlier_file(tmp_path):
    output = tmp_path / "answers.jsonl"
    output.write_text("the earlier, complete answers\n", "utf-8")
    partial = answer_files.partial_path(output)
    identity = {"format": 1, "input": "rows"}
    lines_when_pulled = []

    def rows(count):
        for line in range(1, count + 1):
            lines_when_pulled.append(line_count(partial))
            yield line, {"id": line * 10, "text": f"t{line}"}

    def answer(chunk, stop_at=None):
        if stop_at is not None and chunk[0][0] >= stop_at:
            raise KeyboardInterrupt
        return [{"input": row["text"], "prediction": line % 3} for line, row in chunk]

    with pytest.raises(KeyboardInterrupt):
        answer_files.stream_answers(output, rows(95), lambda c: answer(c, stop_at=41), identity=identity, chunk_rows=10)
    # Row n was read only once every chunk before its own was written (and flushed): one chunk in memory at a time.
    assert lines_when_pulled == [(n - 1) // 10 * 10 for n in range(1, 41)] + [40] * 10
    assert output.read_text("utf-8") == "the earlier, complete answers\n"
    assert line_count(partial) == 40

    lines_when_pulled.clear()
    result = answer_files.stream_answers(output, rows(95), answer, identity=identity, chunk_rows=10, resume=True)
    assert (result.rows, result.resumed) == (95, 40)
    records = [json.loads(line) for line in output.read_text("utf-8").splitlines()]
    assert records == [{"line": n, "id": n * 10, "input": f"t{n}", "prediction": n % 3} for n in range(1, 96)]
    assert not partial.exists() and not answer_files.run_file_path(output).exists()


# -- arguments that cannot work are refused before the model is loaded ------------------------------------------
ARGUMENT_ERRORS = {
    "--resume without --output": (lambda tmp: ["--input", "IN", "--resume"], ["--resume", "--output"]),
    "--output without --input": (
        lambda tmp: ["--text", "hi", "--output", str(tmp / "a.jsonl")],
        ["--output", "--input"],
    ),
    "--output is the input": (lambda tmp: ["--input", "IN", "--output", "IN"], ["--output", "--input", "another file"]),
    "--output is a folder": (lambda tmp: ["--input", "IN", "--output", str(tmp)], ["directory"]),
}


@pytest.mark.parametrize("case", ARGUMENT_ERRORS, ids=list(ARGUMENT_ERRORS))
def test_output_arguments_that_cannot_work_are_refused(case, run, tmp_path, capsys):
    make, facts = ARGUMENT_ERRORS[case]
    args = [str(run["inputs"]) if arg == "IN" else arg for arg in make(tmp_path)]
    code = main(["predict", "--model", str(tmp_path / "never-loaded.keras"), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert_mentions(err, *facts)
    assert "never-loaded" not in err  # refused before the model was looked at
