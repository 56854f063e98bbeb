"""The demo datasets shipped in the package are exactly what the generator writes, and well formed."""

from __future__ import annotations

import json

import pytest

from distilbert_heads.demo import datasets as demo_data


@pytest.mark.parametrize("task", sorted(demo_data.GENERATORS))
@pytest.mark.parametrize("split", sorted(demo_data.SIZES))
def test_shipped_file_matches_generator(task, split):
    shipped = [json.loads(line) for line in demo_data.data_path(task, split).read_text(encoding="utf-8").splitlines()]
    assert shipped == demo_data.generate(task, split)
    assert len(shipped) == demo_data.SIZES[split]


def test_examples_are_consistent():
    for example in demo_data.generate("qa", "train"):
        start = example["answers"]["answer_start"][0]
        answer = example["answers"]["text"][0]
        assert example["context"][start : start + len(answer)] == answer
    for example in demo_data.generate("ner", "train"):
        assert len(example["tokens"]) == len(example["tags"])


def test_test_split_holds_out_names():
    train_tokens = {token for example in demo_data.generate("ner", "train") for token in example["tokens"]}
    test_names = {
        token
        for example in demo_data.generate("ner", "test")
        for token, tag in zip(example["tokens"], example["tags"])
        if tag.endswith("PER")
    }
    assert test_names - train_tokens, "the test split should contain people the model never saw"
