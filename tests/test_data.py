"""Reading data files: both formats, and an error naming the line for every kind of bad row."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, field_validator

from distilbert_heads.training.data_files import DataFileError, read_examples


class Row(BaseModel):
    text: str
    label: str
    tokens: list[str] = []

    @field_validator("tokens", mode="before")
    @classmethod
    def _split(cls, value):
        return value.split() if isinstance(value, str) else value


def test_jsonl_and_csv(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        '{"text": "good", "label": "pos"}\n\n{"text": "bad", "label": "neg", "tokens": ["b"]}\n'
    )
    (tmp_path / "a.csv").write_text('text,label,tokens\n"good, really",pos,a b\nbad,neg,\n')
    assert [r.label for r in read_examples(tmp_path / "a.jsonl", Row)] == ["pos", "neg"]
    rows = read_examples(tmp_path / "a.csv", Row)
    assert rows[0].text == "good, really" and rows[0].tokens == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "bad.jsonl",
            '{"text": "ok", "label": "x"}\n{"text": "no label"}\n',
            "bad.jsonl line 2: label: Field required",
        ),
        ("bad.jsonl", '{"text": "ok", "label": "x"}\n{oops\n', "bad.jsonl line 2: not valid JSON"),
        ("bad.jsonl", '["a list"]\n', "bad.jsonl line 1: expected a JSON object"),
        ("bad.csv", "text,label\nok,x,extra\n", "bad.csv line 2: 3 cells, more than the 2 columns"),
        ("bad.csv", "", "the CSV file is empty"),
        ("bad.jsonl", "\n\n", "no examples found"),
        ("bad.tsv", "text\tlabel\n", "unknown file type '.tsv'"),
    ],
)
def test_bad_files_name_the_line_and_the_problem(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataFileError, match=message.replace("(", r"\(").replace("[", r"\[")):
        read_examples(tmp_path / name, Row)


def test_missing_file(tmp_path):
    with pytest.raises(DataFileError, match="No such data file"):
        read_examples(tmp_path / "nope.jsonl", Row)
