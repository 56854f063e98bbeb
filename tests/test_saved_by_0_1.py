"""`.keras` files saved by distilbert-heads 0.1.0 keep loading and answering the same.

The fixtures in tests/fixtures/v0_1 were written by 0.1.0 itself (make_fixtures.py there); each
later version must reload them with `keras.models.load_model` and through `pipeline`, and give the
raw outputs and the answers recorded then.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from distilbert_heads import pipeline

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0_1"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))


def assert_answers_match(expected, actual, where="answer"):
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), where
        for key, value in expected.items():
            assert_answers_match(value, actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected), where
        for index, (want, got) in enumerate(zip(expected, actual)):
            assert_answers_match(want, got, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-5), where
    else:
        assert actual == expected, where


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_raw_outputs_of_a_0_1_file_are_unchanged(task):
    record = EXPECTED[task]
    model = keras.models.load_model(FIXTURES / f"{task}.keras")
    ids = np.array(record["raw_input_ids"], dtype="int32")
    outputs = model.predict({"input_ids": ids, "attention_mask": (ids != 0).astype("int32")}, verbose=0)
    assert set(outputs) == set(record["raw_outputs"])
    for head, values in record["raw_outputs"].items():
        assert set(outputs[head]) == set(values)
        for name, value in values.items():
            np.testing.assert_allclose(
                np.asarray(outputs[head][name]), np.asarray(value), atol=1e-5, err_msg=f"{head}/{name}"
            )


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_pipeline_answers_of_a_0_1_file_are_unchanged(task):
    record = EXPECTED[task]
    query = record["query"]
    pipe = pipeline(str(FIXTURES / f"{task}.keras"))
    if "inputs" in query:
        answers = pipe([tuple(item) if isinstance(item, list) else item for item in query["inputs"]])
    else:
        answers = pipe(question=query["question"], context=query["context"])
    assert_answers_match(record["answers"], answers)
