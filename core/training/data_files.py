"""Reading training and evaluation files: JSONL, CSV or plain-text rows, validated by the head's schema.

The format of a row belongs to the head (`TaskHead.example_schema`); this module only reads
files and turns every problem into an error that names the file, the line and what was
wrong. CSV cells holding lists (NER tokens and tags) are space-separated strings; heads'
schemas accept both forms. A plain-text file (``.txt``) holds one example per non-empty line, read as
the row ``{"text": line}`` (for heads that learn from text alone, such as the masked-LM head).

Files must be UTF-8 (a byte-order mark is fine). One line (one CSV record) may hold at most
`MAX_LINE_BYTES` (1 MiB, about 150,000 words); the reader never holds more than that of a line in
memory, so a runaway line fails here, with its line number, instead of exhausting memory later
(the tokenizer needs about 200 times a text's size, and a minute for 9 MiB, before it truncates).
Set the environment variable ``DISTILBERT_HEADS_MAX_LINE_BYTES`` (or pass ``max_line_bytes``)
to raise it.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ValidationError

FORMATS = (".jsonl", ".json", ".csv", ".txt")
TEXT_FIELD = "text"  # the one field of a plain-text file's rows
MAX_LINE_BYTES = 1024 * 1024
MAX_LINE_BYTES_ENV = "DISTILBERT_HEADS_MAX_LINE_BYTES"

# Byte-order marks of encodings that are not UTF-8 (UTF-32 LE first: it begins with UTF-16 LE's).
_FOREIGN_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_JSON_TYPE_NAMES = {
    list: "a JSON array",
    str: "a JSON string",
    int: "a number",
    float: "a number",
    bool: "true/false",
    type(None): "null",
}


class DataFileError(ValueError):
    """A data file that cannot be read, or a row that does not fit the task's format."""


def default_max_line_bytes() -> int:
    """The per-line size limit: ``DISTILBERT_HEADS_MAX_LINE_BYTES`` when set, else `MAX_LINE_BYTES`."""
    value = os.environ.get(MAX_LINE_BYTES_ENV)
    if value is None or not value.strip():
        return MAX_LINE_BYTES
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise DataFileError(
            f"{MAX_LINE_BYTES_ENV}={value!r} is not a positive number of bytes; unset it or give e.g. 52428800"
        )
    return limit


def _size(count: int) -> str:
    return f"{count / 2**20:g} MiB" if count >= 2**20 else f"{count} bytes"


class _Lines:
    """The decoded lines of a data file, read with a bounded ``readline`` and checked on the way.

    Tracks the line number and the byte offset for messages, and the bytes of the current CSV
    record (a quoted cell may span lines), so neither a line nor a record can exceed ``limit``.
    """

    def __init__(self, handle: BinaryIO, name: str, limit: int, on_bad_row: BadRowHandler | None = None) -> None:
        self.handle, self.name, self.limit, self.on_bad_row = handle, name, limit, on_bad_row
        self.number = 0
        self.offset = 0
        self.record_bytes = 0
        self.record_start = 1

    def __iter__(self) -> Iterator[str]:
        while True:
            raw = self.handle.readline(self.limit + 1)
            if not raw:
                return
            self.number += 1
            start, self.offset = self.offset, self.offset + len(raw)
            if self.number == 1:
                raw, start = self._strip_bom(raw, start)
            if len(raw) > self.limit and not raw.endswith(b"\n"):
                raise DataFileError(
                    f"{self.name} line {self.number}: longer than the limit of {_size(self.limit)} for one line "
                    "(no line end found within it). A row is one example; split the file into one example per "
                    f"line, or, if rows really are this long, raise the limit with {MAX_LINE_BYTES_ENV}=<bytes>."
                )
            self.record_bytes += len(raw.rstrip(b"\r\n"))
            if self.record_bytes > self.limit:
                raise DataFileError(
                    f"{self.name} line {self.record_start}: the CSV record starting here runs past the limit of "
                    f'{_size(self.limit)} (line {self.number}); a quote (") is probably never closed. Close it, '
                    f'or double quotes inside a quoted cell (""). To allow longer records set {MAX_LINE_BYTES_ENV}.'
                )
            try:
                yield self._decode(raw, start)
            except DataFileError as error:
                if self.on_bad_row is None:
                    raise
                self.on_bad_row(self.number, raw.decode("utf-8", "replace"), str(error))

    def next_record(self) -> None:
        self.record_bytes = 0
        self.record_start = self.number + 1

    def _strip_bom(self, raw: bytes, start: int) -> tuple[bytes, int]:
        if raw.startswith(codecs.BOM_UTF8):
            return raw[len(codecs.BOM_UTF8) :], start + len(codecs.BOM_UTF8)
        for bom, encoding in _FOREIGN_BOMS:
            if raw.startswith(bom):
                raise DataFileError(
                    f"{self.name}: the file is {encoding} text (it starts with a {encoding} byte-order mark), but data "
                    f"files must be UTF-8. Convert it, e.g. `iconv -f {encoding} -t UTF-8 {self.name} > "
                    f"utf8-{self.name}`, "
                    f"or save it as UTF-8 from your editor or spreadsheet."
                )
        return raw, start

    def _decode(self, raw: bytes, start: int) -> str:
        if b"\x00" in raw:
            at = raw.index(b"\x00")
            raise DataFileError(
                f"{self.name} line {self.number} (byte offset {start + at}): a NUL byte, which text never holds. "
                "The file is probably UTF-16 (convert it: `iconv -f UTF-16 -t UTF-8 "
                f"{self.name} > utf8-{self.name}`) or not a text file at all (export spreadsheets as CSV UTF-8)."
            )
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            bad = raw[error.start : error.start + 4]
            raise DataFileError(
                f"{self.name} line {self.number} (byte offset {start + error.start}): the bytes {bad!r} are not "
                "UTF-8, and data files must be UTF-8. If the file is Latin-1 or Windows-1252 (older spreadsheet "
                f"exports), convert it: `iconv -f latin1 -t utf-8 {self.name} > utf8-{self.name}`."
            ) from None


BadRowHandler = Callable[[int, str, str], None]
"""Called as ``handler(line_number, raw_text, reason)`` for a row that is left out instead of failing the read."""


class RowReader:
    """The non-empty rows of a JSONL or CSV file, as ``(line_number, row)``, read one at a time.

    ``bytes_read`` and ``size`` say how far through the file the reading is (for progress and
    estimates). ``fields`` (the names a row should have) only make the messages more helpful;
    ``max_line_bytes`` overrides the per-line limit (see the module's docstring). With
    ``on_bad_row``, a row that is broken on its own (not JSON, not an object, not UTF-8, a CSV
    row with the wrong number of cells) goes to it and reading goes on; problems with the file as
    a whole (not found, not UTF-8 from its byte-order mark, a line over the limit, broken CSV
    quoting) always raise.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fields: Sequence[str] | None = None,
        max_line_bytes: int | None = None,
        on_bad_row: BadRowHandler | None = None,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            if path.is_dir():
                raise DataFileError(f"{os.fspath(path)!r} is a directory; pass a .jsonl or .csv data file inside it")
            if path.exists():  # a device, FIFO or socket: reading could block or never end
                raise DataFileError(
                    f"{os.fspath(path)!r} is not a regular file (a device, pipe or socket); save the rows to a .jsonl "
                    "or .csv file and pass that"
                )
            raise DataFileError(f"No such data file: {os.fspath(path)!r}")
        suffix = path.suffix.lower()
        if suffix not in FORMATS:
            raise DataFileError(
                f"{path.name}: unknown file type {suffix!r}; use JSON Lines (.jsonl), CSV (.csv) or, for text alone, "
                "plain text (.txt, one example per line)"
            )
        limit = default_max_line_bytes() if max_line_bytes is None else int(max_line_bytes)
        if limit < 1:
            raise DataFileError(f"max_line_bytes must be a positive number of bytes, got {max_line_bytes!r}")
        self.path, self.limit, self.on_bad_row = path, limit, on_bad_row
        self.size = path.stat().st_size
        self.example = (
            "{" + ", ".join(f'"{field}": ...' for field in fields) + "}" if fields else '{"text": ..., "label": ...}'
        )
        self._lines: _Lines | None = None

    @property
    def bytes_read(self) -> int:
        return 0 if self._lines is None else self._lines.offset

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with open(self.path, "rb") as handle:
            self._lines = _Lines(handle, self.path.name, self.limit, self.on_bad_row)
            if self.path.suffix.lower() == ".csv":
                yield from _csv_rows(self._lines, self.limit)
            elif self.path.suffix.lower() == ".txt":
                yield from _text_rows(self._lines)
            else:
                yield from _json_rows(self._lines, self.example)


def read_rows(
    path: str | os.PathLike,
    *,
    fields: Sequence[str] | None = None,
    max_line_bytes: int | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` for each non-empty row of a JSONL or CSV file (see `RowReader`)."""
    return iter(RowReader(path, fields=fields, max_line_bytes=max_line_bytes))


def _text_rows(lines: _Lines) -> Iterator[tuple[int, dict[str, Any]]]:
    """``{"text": line}`` for each non-blank line (its line end removed, nothing else)."""
    for line in lines:
        lines.next_record()
        text = line.rstrip("\r\n")
        if text.strip():
            yield lines.number, {TEXT_FIELD: text}


def _json_rows(lines: _Lines, example: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for line in lines:
        lines.next_record()
        if not line.strip():
            continue
        try:
            row = _json_row(line, lines.number, lines.name, example)
        except DataFileError as error:
            if lines.on_bad_row is None:
                raise
            lines.on_bad_row(lines.number, line, str(error))
            continue
        yield lines.number, row


def _json_row(line: str, number: int, name: str, example: str) -> dict[str, Any]:
    """One JSON Lines row as a dict, or a `DataFileError` naming the line and what is wrong with it."""
    try:
        row = json.loads(line)
    except RecursionError:
        raise DataFileError(
            f"{name} line {number}: the JSON is nested too deeply to read. A row is one flat JSON object, "
            f"like {example}."
        ) from None
    except json.JSONDecodeError as error:
        hint = ""
        if number == 1 and line.strip() in ("[", "{"):
            hint = (
                " The file looks like one pretty-printed JSON document; write one object per line (JSON Lines), "
                f"e.g. `jq -c '.[]' {name} > rows.jsonl`."
            )
        raise DataFileError(
            f"{name} line {number}: not valid JSON ({error.msg} at column {error.colno}); each line must be one "
            f"JSON object, like {example}.{hint}"
        ) from None
    except ValueError:  # the only other ValueError: an integer with more digits than Python converts
        raise DataFileError(
            f"{name} line {number}: a number has too many digits to read (over 4300); labels and other numbers "
            f"must be ordinary numbers, in rows like {example}."
        ) from None
    if not isinstance(row, dict):
        kind = _JSON_TYPE_NAMES.get(type(row), type(row).__name__)
        hint = ""
        if isinstance(row, list) and row and all(isinstance(item, dict) for item in row):
            hint = f" To turn an array of objects into JSON Lines: `jq -c '.[]' {name} > rows.jsonl`."
        raise DataFileError(
            f"{name} line {number}: expected a JSON object (one row per line, like {example}), got {kind}.{hint}"
        )
    if _SURROGATE_ESCAPE.search(line) and _has_lone_surrogate(row):
        raise DataFileError(
            f"{name} line {number}: a text holds a lone surrogate escape (\\ud800-\\udfff): half of a UTF-16 pair, "
            "not a character. The tool that wrote the file split a character (often an emoji); fix or drop it."
        )
    return row


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _csv_rows(lines: _Lines, limit: int) -> Iterator[tuple[int, dict[str, Any]]]:
    name = lines.name
    # Python's csv refuses cells over 128 KiB by default; the record limit above is the real bound.
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)
    reader = csv.reader(lines, strict=True)
    header: list[str] | None = None
    header_line = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            hint = ""
            if "new-line" in str(error):
                hint = " The file may use old Mac line ends (\\r): convert them to \\n (e.g. `mac2unix`)."
            elif "end of data" in str(error):
                hint = ' A quote (") opened in this record is never closed.'
            raise DataFileError(
                f"{name} line {lines.record_start}: not valid CSV ({error}). Quote cells that contain commas, quotes "
                f'or line breaks ("like, this"), and double quotes inside them ("").{hint}'
            ) from None
        start = lines.record_start
        lines.next_record()
        if not any(cell.strip() for cell in cells):
            continue
        if header is None:
            header, header_line = [cell.strip() for cell in cells], start
            named = [column for column in header if column]
            duplicates = sorted({column for column in named if named.count(column) > 1})
            if duplicates:
                raise DataFileError(
                    f"{name} line {start}: the header names the column(s) {', '.join(map(repr, duplicates))} more than "
                    "once; give each column its own name."
                )
            continue
        problem = _csv_row_problem(cells, header, f"{name} line {start}", header_line)
        if problem is not None:
            if lines.on_bad_row is None:
                raise DataFileError(problem)
            lines.on_bad_row(start, ",".join(cells), problem)
            continue
        yield start, {column: cell for column, cell in zip(header, cells) if column}
    if header is None:
        raise DataFileError(f"{name}: the CSV file is empty; its first line must name the columns (e.g. text,label)")


def _csv_row_problem(cells: list[str], header: list[str], where: str, header_line: int) -> str | None:
    """What is wrong with one CSV record's cells against the header, or None."""
    if len(cells) != len(header):
        relation = "more" if len(cells) > len(header) else "fewer"
        return (
            f"{where}: {len(cells)} cell{'s' if len(cells) != 1 else ''}, {relation} than the {len(header)} columns "
            f"named in the header on line {header_line} ({', '.join(header)}); every row needs one cell per column. "
            'Quote cells that contain commas ("a, b") and leave empty cells empty (a,,c).'
        )
    unnamed = [index for index, column in enumerate(header) if not column and cells[index].strip()]
    if unnamed:
        return (
            f"{where}: a value in column {unnamed[0] + 1}, which has no name in the header on line {header_line}; "
            "name the column or remove the value."
        )
    return None


def iter_examples(
    path: str | os.PathLike,
    schema: type[BaseModel],
    task: str = "this task",
    *,
    max_line_bytes: int | None = None,
    on_bad_row: BadRowHandler | None = None,
    reader: RowReader | None = None,
) -> Iterator[tuple[int, BaseModel]]:
    """``(line_number, example)`` for each row of ``path`` validated by ``schema``, read lazily.

    A bad row raises `DataFileError` naming its line, or, with ``on_bad_row``, goes to it with its
    reason (see `RowReader`). Pass ``reader`` (a `RowReader` of ``path``) to watch its progress.
    """
    path = Path(path)
    name = path.name
    fields = list(schema.model_fields)
    known = set(fields) | {info.alias for info in schema.model_fields.values() if info.alias}
    expected = ", ".join(fields)
    is_csv = path.suffix.lower() == ".csv"
    needed = sorted(field for field, info in schema.model_fields.items() if info.is_required() and field != TEXT_FIELD)
    if path.suffix.lower() == ".txt" and needed:
        raise DataFileError(
            f"{name}: a plain-text file gives each row its text alone, but rows for {task} also need "
            f"{', '.join(needed)} (fields: {expected}). Write the rows as JSON Lines (.jsonl) or CSV (.csv) instead."
        )
    if reader is None:
        reader = RowReader(path, fields=fields, max_line_bytes=max_line_bytes, on_bad_row=on_bad_row)
    first = True
    for number, row in reader:
        try:
            example = schema.model_validate(row)
        except RecursionError:
            problem = (
                f"{name} line {number}: a value is nested too deeply to read. Rows for {task} have the fields: "
                f"{expected}."
            )
        except ValidationError as error:
            if is_csv and first and not known & set(row):
                raise DataFileError(_missing_header(name, row, task, fields)) from None
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc']) or 'row'}: {item['msg']}" for item in error.errors()
            )
            problem = f"{name} line {number}: {problems}. Rows for {task} have the fields: {expected}."
        else:
            first = False
            yield number, example
            continue
        first = False
        if on_bad_row is None:
            raise DataFileError(problem)
        on_bad_row(number, json.dumps(row, ensure_ascii=False, default=str), problem)


def read_examples(
    path: str | os.PathLike,
    schema: type[BaseModel],
    task: str = "this task",
    *,
    max_line_bytes: int | None = None,
) -> list[BaseModel]:
    """Every row of ``path`` validated by ``schema``; the first bad row raises `DataFileError`."""
    examples = [example for _, example in iter_examples(path, schema, task, max_line_bytes=max_line_bytes)]
    if not examples:
        raise DataFileError(no_examples_message(Path(path).name, schema))
    return examples


def no_examples_message(name: str, schema: type[BaseModel]) -> str:
    return (
        f"{name}: no examples found (the file is empty, holds only blank lines, or is a CSV header alone); "
        f"add one row per example with the fields {', '.join(schema.model_fields)}"
    )


class SkippedRows:
    """Rows left out by ``--skip-invalid``: each written with its file, line and reason to a JSON Lines side file.

    Nothing is dropped silently: `counts` says how many rows of each file were skipped, and the side
    file holds every one of them (each once, however often the file is read). The side file is
    started afresh by the first skipped row of a run and only then; a run with no bad row writes
    nothing.
    """

    def __init__(self, side_file: str | os.PathLike) -> None:
        self.side_file = Path(side_file)
        self.counts: dict[str, int] = {}
        self._seen: set[tuple[str, int]] = set()

    def handler(self, path: str | os.PathLike) -> BadRowHandler:
        """The `BadRowHandler` for rows of ``path``."""
        name = os.fspath(path)
        return lambda line, text, reason: self.record(name, line, text, reason)

    def record(self, file: str, line: int, text: str, reason: str) -> None:
        if (file, line) in self._seen:
            return
        first = not self._seen
        self._seen.add((file, line))
        self.counts[file] = self.counts.get(file, 0) + 1
        if first:
            self.side_file.parent.mkdir(parents=True, exist_ok=True)
        entry = {"file": file, "line": line, "reason": reason, "row": text.rstrip("\r\n")}
        with open(self.side_file, "w" if first else "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str | None:
        """One line for the user, or None when no row was skipped."""
        if not self.counts:
            return None
        parts = ", ".join(f"{count:,} of {Path(file).name}" for file, count in self.counts.items())
        return f"skipped {self.total:,} invalid row(s) ({parts}); each is in {self.side_file} with its line and reason"


def _missing_header(name: str, row: dict[str, Any], task: str, fields: Sequence[str]) -> str:
    shown = ", ".join(repr(key)[:40] for key in list(row)[:6])
    return (
        f"{name} line 1: the header names the columns {shown}, none of which is a field of rows for {task} "
        f"({', '.join(fields)}). The first line of a CSV file must name the columns, e.g. `{','.join(fields)}`; "
        "if line 1 is already data, add such a header above it."
    )
