"""Answers written to a JSON Lines file as they are made, that a killed run can resume (``predict --output``).

One line per input row, in input order: ``{"line": N, "id": ..., "input": ..., "prediction": ...}``,
where ``line`` is the row's line in the input file and ``id`` is copied from rows that have one.

While it runs, the answers go to ``<output>.partial`` beside the output, flushed to disk after every
chunk, and ``<output>.partial.json`` (the run file) records what they answer: the input's size and
the SHA-256 of its first MiB, the model file's SHA-256, the head and the dtype policy. Only when
the whole input is answered is the partial file renamed onto the output, so a kill never leaves a
half-written file under the output's name nor replaces an earlier one. ``resume=True`` continues
from the partial file: a trailing incomplete line (a kill mid-write) is dropped, every complete
line is checked against the input row it answers (its line number), that many rows are skipped
and the rest appended; a run file that records another input, model, head or dtype is refused,
naming what differs. Rows are read lazily: only the chunk being answered is held.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from distilbert_heads import atomic

__all__ = [
    "AnswerFileError",
    "AnswerRun",
    "check_resumable",
    "partial_path",
    "row_chunks",
    "run_file_path",
    "run_identity",
    "stream_answers",
]

ANSWER_FILE_FORMAT = 1
# How much of the input's start is hashed into the run file (with its size) to recognise it on --resume.
INPUT_START_BYTES = 1 << 20
_TAIL_BLOCK = 1 << 16
_START_OVER = "run without --resume to answer the whole input again"

# What each run-file key means, for the message that refuses a resume.
_IDENTITY_NAMES = {
    "format": "the answer file format",
    "input_bytes": "the input file's size in bytes",
    "input_start_sha256": f"the SHA-256 of the input file's first {INPUT_START_BYTES:,} bytes",
    "model_sha256": "the model file's SHA-256",
    "head": "the head",
    "dtype": "the --dtype policy",
}

Row = tuple[int, Mapping[str, Any]]
"""``(line_number, row)`` as `data_files.RowReader` yields them."""


class AnswerFileError(ValueError):
    """An answer file that cannot be written or resumed as asked; the message says why and what to do."""


@dataclass(frozen=True)
class AnswerRun:
    """What `stream_answers` did: ``rows`` answers in ``output``, of which ``resumed`` came from the partial file."""

    output: Path
    rows: int
    resumed: int


def partial_path(output: str | os.PathLike) -> Path:
    """Where the answers go while the run is in progress: ``<output>.partial`` beside the output."""
    target = atomic.check_file_target(output)
    return target.with_name(target.name + ".partial")


def run_file_path(output: str | os.PathLike) -> Path:
    """The run file beside the partial file: ``<output>.partial.json``."""
    partial = partial_path(output)
    return partial.with_name(partial.name + ".json")


def run_identity(
    input_path: str | os.PathLike, model_path: str | os.PathLike, *, head: str, dtype: str | None
) -> dict[str, Any]:
    """What a partial answer file answers: the input (its size and first MiB), the model file, head and dtype."""
    from distilbert_heads.training.run_record import describe_file  # imports Keras: the CLI checks flags first

    with open(input_path, "rb") as file:
        start = hashlib.sha256(file.read(INPUT_START_BYTES)).hexdigest()
    return {
        "format": ANSWER_FILE_FORMAT,
        "input_bytes": os.path.getsize(input_path),
        "input_start_sha256": start,
        "model_sha256": describe_file(model_path)["sha256"],
        "head": head,
        "dtype": dtype,
    }


def check_resumable(output: str | os.PathLike) -> None:
    """Raise `AnswerFileError` when there is no partial answer file for ``output`` to resume."""
    target = atomic.check_file_target(output)
    partial = partial_path(target)
    if not partial.is_file():
        done = f" ({target.name} is complete)" if target.is_file() else ""
        raise AnswerFileError(
            f"nothing to resume: there is no {partial.name} beside {os.fspath(target)!r}{done}; {_START_OVER}."
        )


def answer_record(line: int, row: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
    """One output line: the input's ``line`` (and its ``id`` when the row has one), then ``answer``."""
    record: dict[str, Any] = {"line": line}
    if "id" in row:
        record["id"] = row["id"]
    record.update(answer)
    return record


def stream_answers(
    output: str | os.PathLike,
    rows: Iterable[Row],
    answer_chunk: Callable[[list[Row]], list[Mapping[str, Any]]],
    *,
    identity: Mapping[str, Any],
    resume: bool = False,
    chunk_rows: int = 1024,
    on_resumed: Callable[[int], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> AnswerRun:
    """Answer ``rows`` chunk by chunk into ``output`` (see the module's docstring).

    ``answer_chunk`` turns a chunk of rows into one JSON-ready mapping per row (``input`` and
    ``prediction``); ``identity`` is `run_identity` of this run. ``on_resumed`` gets the number of
    rows taken from the partial file, ``on_chunk`` the number of rows of each chunk written.
    An exception (a bad row, Ctrl-C) leaves the partial file as it stands, to resume.
    """
    if chunk_rows < 1:
        raise AnswerFileError(f"chunk_rows must be at least 1, got {chunk_rows}")
    target = atomic.check_file_target(output)
    partial, run_file = partial_path(target), run_file_path(target)
    rows = iter(rows)
    if resume:
        done, complete_bytes = _check_partial(target, partial, run_file, rows, identity)
        with open(partial, "r+b") as file:
            file.truncate(complete_bytes)  # a line cut short by the kill is answered again
        if on_resumed is not None:
            on_resumed(done)
    else:
        done = 0
        # The old partial goes before the new run file is written: a kill in between leaves nothing to resume.
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        with atomic.atomic_path(run_file) as temp:
            temp.write_text(json.dumps(dict(identity), indent=1) + "\n", "utf-8")
    resumed = done
    with open(partial, "ab") as file:
        for chunk in row_chunks(rows, chunk_rows):
            answers = answer_chunk(chunk)
            if len(answers) != len(chunk):
                raise AnswerFileError(f"{len(chunk)} rows were answered with {len(answers)} answers; expected one each")
            _write_chunk(file, chunk, answers)
            done += len(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    atomic.move_file_into_place(partial, target)
    with contextlib.suppress(FileNotFoundError):
        run_file.unlink()
    return AnswerRun(output=target, rows=done, resumed=resumed)


def row_chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    """``rows`` in lists of ``size`` (the last may be shorter), read lazily: one list is held at a time."""
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_chunk(file: BinaryIO, chunk: list[Row], answers: list[Mapping[str, Any]]) -> None:
    text = "".join(
        json.dumps(answer_record(line, row, answer), ensure_ascii=False) + "\n"
        for (line, row), answer in zip(chunk, answers, strict=True)
    )
    file.write(text.encode("utf-8"))
    file.flush()
    os.fsync(file.fileno())  # a kill (or a power cut) loses at most the chunk in flight


def _check_partial(
    target: Path, partial: Path, run_file: Path, rows: Iterator[Row], identity: Mapping[str, Any]
) -> tuple[int, int]:
    """``(rows answered, bytes of complete lines)`` of the partial file, after checking it answers these rows.

    Consumes those rows from ``rows``; raises `AnswerFileError` saying what does not match.
    """
    check_resumable(target)
    try:
        recorded = json.loads(run_file.read_text("utf-8"))
        if not isinstance(recorded, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        raise AnswerFileError(
            f"cannot resume {partial.name}: its run file {run_file.name} is missing or unreadable ({error}), so "
            f"which input and model it answers is unknown; {_START_OVER}."
        ) from None
    differences = [
        f"{_IDENTITY_NAMES.get(key, key)} was {recorded.get(key)!r}, now {value!r}"
        for key, value in identity.items()
        if recorded.get(key) != value
    ]
    if differences:
        raise AnswerFileError(
            f"cannot resume {partial.name}: it answers another run ({'; '.join(differences)}). Pass the same "
            f"--input, --model, --head and --dtype as the interrupted run, or {_START_OVER}."
        )
    complete_bytes = _complete_lines_size(partial)
    done = 0
    with open(partial, "rb") as file:
        for raw in iter(lambda: file.readline(), b""):
            if file.tell() > complete_bytes:
                break
            done += 1
            where = f"{partial.name} line {done}"
            line = _recorded_line(raw, where)
            row = next(rows, None)
            if row is None:
                raise AnswerFileError(
                    f"cannot resume: {where} is an answer beyond the input's last row; the partial file was changed "
                    f"or belongs to another input; {_START_OVER}."
                )
            if row[0] != line:
                raise AnswerFileError(
                    f"cannot resume: {where} answers input line {line}, but row {done} of the input is on line "
                    f"{row[0]}; the partial file was changed (a line lost or added); {_START_OVER}."
                )
    return done, complete_bytes


def _recorded_line(raw: bytes, where: str) -> int:
    try:
        record = json.loads(raw)
    except ValueError as error:
        reason = f"not JSON: {error}"
    else:
        line = record.get("line") if isinstance(record, dict) else None
        if isinstance(line, int) and not isinstance(line, bool) and "prediction" in record:
            return line
        reason = "not an answer with a line number and a prediction"
    raise AnswerFileError(
        f"cannot resume: {where} is {reason}; the partial file was changed or corrupted; run without --resume to "
        f"{_START_OVER}."
    )


def _complete_lines_size(path: Path) -> int:
    """The size of ``path`` up to and including its last newline (what is left once a cut-short line is dropped)."""
    with open(path, "rb") as file:
        end = file.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - _TAIL_BLOCK)
            file.seek(start)
            block = file.read(end - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            end = start
    return 0
