"""Reading training and evaluation files: JSONL or CSV rows, validated by the head's schema.

The format of a row belongs to the head (`TaskHead.example_schema`); this module only reads
files and turns every problem into an error that names the file, the line and what was
wrong. CSV cells holding lists (NER tokens and tags) are space-separated strings; heads'
schemas accept both forms.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

FORMATS = (".jsonl", ".json", ".csv")


class DataFileError(ValueError):
    """A data file that cannot be read, or a row that does not fit the task's format."""


def read_rows(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` for each non-empty row of a JSONL or CSV file."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"No such data file: {os.fspath(path)!r}")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataFileError(f"{path.name}: unknown file type {suffix!r}; use JSON Lines (.jsonl) or CSV (.csv)")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        if suffix == ".csv":
            reader = csv.DictReader(handle)
            if not reader.fieldnames:
                raise DataFileError(f"{path.name}: the CSV file is empty; its first line must name the columns")
            for row in reader:
                if None in row:
                    raise DataFileError(
                        f"{path.name} line {reader.line_num}: more cells than the {len(reader.fieldnames)} columns "
                        f"named in the header ({', '.join(reader.fieldnames)}); quote cells that contain commas"
                    )
                if any(value not in (None, "") for value in row.values()):
                    yield reader.line_num, {key: value for key, value in row.items() if key is not None}
            return
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFileError(f"{path.name} line {number}: not valid JSON ({error.msg} at column {error.colno})") from None
            if not isinstance(row, dict):
                raise DataFileError(f"{path.name} line {number}: expected a JSON object, got {type(row).__name__}")
            yield number, row


def read_examples(path: str | os.PathLike, schema: type[BaseModel], task: str = "this task") -> list[BaseModel]:
    """Every row of ``path`` validated by ``schema``; the first bad row raises `DataFileError`."""
    name = Path(path).name
    expected = ", ".join(schema.model_fields)
    examples = []
    for number, row in read_rows(path):
        try:
            examples.append(schema.model_validate(row))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc']) or 'row'}: {item['msg']}" for item in error.errors()
            )
            raise DataFileError(
                f"{name} line {number}: {problems}. Rows for {task} have the fields: {expected}."
            ) from None
    if not examples:
        raise DataFileError(f"{name}: no examples found; expected one row per example with the fields {expected}")
    return examples
