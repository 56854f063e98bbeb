"""The strings-in SavedModel: in-graph tokenization equal to ours, answers equal to the pipeline's.

The SavedModel is loaded in a fresh process that cannot import distilbert_heads, keras,
transformers or tokenizers (only TensorFlow and TensorFlow Text), as on a serving host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from helpers import assert_mentions

from distilbert_heads import pipeline
from distilbert_heads.model.factory import create_distilbert_with_head
from distilbert_heads.text.tokenizer import DistilBertTokenizer

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="SavedModel export needs TensorFlow")
tf_text = pytest.importorskip("tensorflow_text", reason="the 'serving' extra (tensorflow-text) is not installed")

from distilbert_heads.serving.export import ExportError  # noqa: E402
from distilbert_heads.serving.graph_tokenizer import GraphTokenizer  # noqa: E402
from distilbert_heads.serving.saved_model import (  # noqa: E402
    INPUT_NAMES,
    export_saved_model_text,
    unsupported_heads_saved_model_text,
)

ENCODER = {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64}
MAX_LENGTH = 48

# Every class of text the normalizer, pre-tokenizer and WordPiece treat specially.
HOSTILE = [
    "The film was great, wasn't it?",
    "Café naïve résumé Ångström façade ÉCOLE",  # accents: NFD + dropped marks when uncased
    "東京は晴れ。北京欢迎你！서울",  # CJK ideographs split one by one; Hangul is not
    "Loved it 😀👍🏽 so much 🇫🇷!",  # emoji, skin-tone modifier, flags
    "tab\there\nnew\rline\x00nul\x07bell\x1bescape\ufffdreplacement",  # control characters
    "zero\u200bwidth\u200djoiner\ufeffbom\u00adsoft\u2028sep",  # zero-width and format characters
    "İstanbul STRASSE straße ΣΊΣΥΦΟΣ ﬁnance Ⅻ",  # case mappings that expand or differ by context
    "e\u0301 combining and \u0301 lone mark",
    "[CLS] typed [SEP]specials[MASK] and [sep] lowercase",
    "",
    "   \t\n  ",
    "x" * 150 + " after a word over 100 characters",
    " ".join(["long text with many words"] * 80),  # over-long: truncated
    "!!!...,,,???",
]


def _vocab_tokenizer(lowercase: bool) -> DistilBertTokenizer:
    training = [text for text in HOSTILE if text.strip()] + ["the good bad film movie great awful"]
    return DistilBertTokenizer.train_from_texts(training, vocab_size=300, lowercase=lowercase)


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def tokenizer(request: pytest.FixtureRequest) -> DistilBertTokenizer:
    return _vocab_tokenizer(request.param)


def _rows(encoded: dict[str, Any], row: int) -> tuple[list[int], list[tuple[int, int]], list[int]]:
    length = int(encoded["attention_mask"][row].sum())
    ids = [int(i) for i in encoded["input_ids"][row][:length]]
    offsets = [(int(s), int(e)) for s, e in zip(encoded["start"][row][:length], encoded["end"][row][:length])]
    return ids, offsets, [int(s) for s in encoded["sequence_ids"][row][:length]]


@pytest.mark.parametrize("layout", ["text", "pair", "question_context"])
def test_graph_tokenizer_gives_our_ids_and_offsets_on_hostile_text(tokenizer, layout):
    graph = GraphTokenizer(tokenizer, MAX_LENGTH)
    firsts = list(HOSTILE)
    seconds = None if layout == "text" else list(reversed(HOSTILE))
    if layout == "pair":  # both texts over half the room: longest-first cuts both
        firsts, seconds = [*firsts, HOSTILE[12]], [*seconds, HOSTILE[12].upper()]
    if layout == "question_context":  # questions short enough to leave room, as the pipeline requires
        firsts = [text[:30] for text in HOSTILE]
    rows = graph.encode(
        np.array(firsts, dtype=object),
        None if seconds is None else np.array(seconds, dtype=object),
        keep_first=layout == "question_context",
    )
    encoded = {key: value.numpy() for key, value in rows.items()}
    truncation = {"text": "longest_first", "pair": "longest_first", "question_context": "only_second"}[layout]
    ours = tokenizer.encode(firsts, seconds, max_length=MAX_LENGTH, truncation=truncation)
    for row in range(len(firsts)):
        ids, offsets, sequence_ids = _rows(encoded, row)
        assert ids == ours.input_ids[row][: len(ids)].tolist(), (row, firsts[row])
        assert len(ids) == int(ours.attention_mask[row].sum()), (row, firsts[row])
        assert offsets == [tuple(o) for o in ours.offsets[row][: len(ids)]], (row, firsts[row])
        assert sequence_ids == [-1 if s is None else s for s in ours.sequence_ids[row][: len(ids)]]
    assert all(encoded["fits"])


def test_a_question_that_leaves_no_room_for_the_context_is_flagged(tokenizer):
    question = HOSTILE[12]
    rows = GraphTokenizer(tokenizer, MAX_LENGTH).encode(
        np.array([question, "short?"], dtype=object), np.array(["context", "context"], dtype=object), keep_first=True
    )
    assert rows["fits"].numpy().tolist() == [False, True]
    with pytest.raises(ValueError, match="leaves no room"):
        tokenizer.encode([question], ["context"], max_length=MAX_LENGTH, truncation="only_second")


# -- the SavedModel in a process that can import only TensorFlow and TensorFlow Text ----------------
_SERVING_HOST = r"""
import json, sys

BLOCKED = {"distilbert_heads", "keras", "transformers", "tokenizers"}


class Absent:
    # Wraps a finder so that the blocked packages look not installed (find_spec None, import fails).

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED or not hasattr(self.finder, "find_spec"):
            return None
        return self.finder.find_spec(name, path, target)


sys.meta_path[:] = [Absent(finder) for finder in sys.meta_path]
import glob, importlib.util, os
import tensorflow as tf

# The TF Text ops, loaded as TF Serving links them: the op libraries alone. (`import tensorflow_text`
# would also load its Keras layers, and Keras is refused here.)
ops_dir = os.path.join(importlib.util.find_spec("tensorflow_text").submodule_search_locations[0], "python", "ops")
for library in sorted(glob.glob(os.path.join(ops_dir, "_*.so"))):
    tf.load_op_library(library)

serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
inputs = json.loads(sys.argv[2])
outputs = serve(**{name: tf.constant(values, tf.string) for name, values in inputs.items()})

def plain(value):
    value = value.numpy()
    if value.dtype != object:
        return value.tolist()
    return [[b.decode() for b in row] if value.ndim == 2 else row.decode() for row in value]

answers = {name: plain(value) for name, value in outputs.items()}
loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
print(json.dumps({"answers": answers, "blocked_but_loaded": loaded}))
"""


def _serve_in_fresh_process(path: Path, inputs: dict[str, list[str]]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", _SERVING_HOST, os.fspath(path), json.dumps(inputs)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["blocked_but_loaded"] == []
    return served["answers"]


def _model(task: str, tokenizer: DistilBertTokenizer, **options: Any) -> Any:
    model = create_distilbert_with_head(
        task_type=task,
        distilbert_variant="tiny",
        vocab_size=tokenizer.vocab_size,
        tokenizer=tokenizer,
        max_position_embeddings=64,
        **ENCODER,
        **options,
    )
    model.max_length = MAX_LENGTH
    return model


def _close(served: float, ours: float) -> bool:
    return abs(served - ours) <= 1e-4


QUESTIONS = ["what film?", "Café?", "東京", "", "who 😀", "[SEP] x"]
CASES = {
    "sentiment": ({"labels": ["negative", "neutral", "positive"]}, "text"),
    "regression": ({"num_classes": 1}, "text"),
    "ner": ({"labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "MISC"]}, "text"),
    "pairwise": ({"labels": ["entailment", "neutral", "contradiction"]}, "pair"),
    "similarity": ({"num_classes": 1}, "pair"),
    "qa": ({}, "question_context"),
}
TASKS = {"sentiment": "sentiment", "regression": "text_regression", "ner": "ner", "pairwise": "pairwise"}
TASKS |= {"similarity": "text_similarity", "qa": "qa"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """case -> (its model, that model's strings-in SavedModel folder): built and exported once per module."""
    done: dict[str, tuple[Any, Path]] = {}

    def export_case(case: str) -> tuple[Any, Path]:
        if case not in done:
            keras.utils.set_random_seed(7)
            model = _model(TASKS[case], _vocab_tokenizer(lowercase=True), **CASES[case][0])
            done[case] = (model, export_saved_model_text(model, tmp_path_factory.mktemp(case) / "served"))
        return done[case]

    return export_case


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_saved_model_answers_equal_the_pipeline_on_a_host_without_our_package(case, exported):
    _, kind = CASES[case]
    model, out = exported(case)
    tokenizer = model.tokenizer
    (head,) = model.heads
    pipe = pipeline(model)
    texts = list(HOSTILE)
    if kind == "text":
        served = _serve_in_fresh_process(out, {"text": texts})
        ours = pipe(texts)
    elif kind == "pair":
        pairs = list(reversed(texts))
        served = _serve_in_fresh_process(out, {"text": texts, "text_pair": pairs})
        ours = pipe(list(zip(texts, pairs)))
    else:
        # Contexts that fit one window, plus the over-long one: for that one the SavedModel answers from
        # the first window, so it is compared with the pipeline run on that window's text alone.
        contexts = [text for text in texts if len(text) < 200][: len(QUESTIONS)]
        questions = QUESTIONS[: len(contexts)]
        long_context = HOSTILE[12]
        served = _serve_in_fresh_process(
            out, {"question": [*questions, "words?"], "context": [*contexts, long_context]}
        )
        room = MAX_LENGTH - 3 - len(tokenizer.encode("words?").tokens[0]) + 2
        window_end = tokenizer.encode(long_context).offsets[0][room][1]
        ours = pipe(question=[*questions, "words?"], context=[*contexts, long_context[:window_end]])
        assert served[f"{head}__start"][-1] == -1 or served[f"{head}__end"][-1] <= window_end
    if case in ("ner", "qa"):  # the comparison covers found entities / spans, not only empty answers
        assert any(answer if case == "ner" else answer["start"] is not None for answer in ours)
    _assert_same(case, head, served, ours)


def _assert_same(case: str, head: str, served: dict[str, Any], ours: list[Any]) -> None:
    for row, answer in enumerate(ours):
        if case in ("regression", "similarity"):
            assert _close(served[f"{head}__score"][row], answer["score"]), row
        elif case in ("sentiment", "pairwise"):
            assert served[f"{head}__label"][row] == answer["label"], row
            assert _close(served[f"{head}__score"][row], answer["score"]), row
        elif case == "ner":
            count = served[f"{head}__num_entities"][row]
            got = [
                (
                    served[f"{head}__entity"][row][i],
                    served[f"{head}__entity_start"][row][i],
                    served[f"{head}__entity_end"][row][i],
                )
                for i in range(count)
            ]
            assert got == [(e["entity"], e["start"], e["end"]) for e in answer], (row, HOSTILE[row])
            assert served[f"{head}__entity_word"][row][:count] == [e["word"] for e in answer]
            assert all(_close(s, e["score"]) for s, e in zip(served[f"{head}__entity_score"][row], answer))
        else:
            assert served[f"{head}__answer"][row] == answer["answer"], row
            expected_span = tuple(-1 if answer[key] is None else answer[key] for key in ("start", "end"))
            assert (served[f"{head}__start"][row], served[f"{head}__end"][row]) == expected_span, row
            assert _close(served[f"{head}__score"][row], answer["score"]), row


@pytest.fixture(scope="module")
def serving_signature(exported: Any) -> Any:
    """case -> the ``serving_default`` signature of that case's exported SavedModel, loaded once per module."""
    import tensorflow as tf  # only the signature-calling tests need it in-process

    loaded: dict[str, Any] = {}

    def signature(case: str) -> Any:
        if case not in loaded:
            loaded[case] = tf.saved_model.load(os.fspath(exported(case)[1]))  # kept: the signature needs it alive
        return loaded[case].signatures["serving_default"]

    return signature


@pytest.mark.parametrize("batch", [[], [""], ["", "  \t", "\x00\u200b"]], ids=["no rows", "empty", "nothing to read"])
@pytest.mark.parametrize("case", ["ner", "qa"])
def test_batches_without_a_single_token_get_empty_answers(case, batch, serving_signature):
    import tensorflow as tf  # only this test calls the signature in-process

    serve = serving_signature(case)
    inputs = {name: tf.constant(batch, tf.string) for name in INPUT_NAMES[CASES[case][1]]}
    answers = {key.split("__")[-1]: value.numpy() for key, value in serve(**inputs).items()}
    if case == "ner":
        assert answers["num_entities"].tolist() == [0] * len(batch)
        assert answers["tags"].shape[0] == len(batch) and answers["tags"].size == 0
    else:
        assert answers["answer"].tolist() == [b""] * len(batch)
        assert answers["start"].tolist() == [-1] * len(batch)


def test_plugin_heads_are_refused_with_the_head_named(tmp_path):
    tokenizer = _vocab_tokenizer(lowercase=True)
    model = _model("foo", tokenizer, num_classes=3)
    (name,) = model.heads
    assert list(unsupported_heads_saved_model_text(model)) == [name]
    with pytest.raises(ExportError) as error:
        export_saved_model_text(model, tmp_path / "served")
    assert_mentions(error, name, "no in-graph decoder", "export_saved_model")
    assert not (tmp_path / "served").exists()
