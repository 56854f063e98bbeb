"""Hostile inputs on every input path: each is refused with our own ValueError stating the facts, or handled.

Input paths: the encoder called eagerly, its ``predict`` and ``predict_on_batch``, the task model
called eagerly, its ``predict`` and ``predict_on_batch``, and the pipeline's forward pass. Texts:
lone surrogates, control characters, a 50 MB text, empty lists, and repeated calls that must not
retrace. Files: a ``.keras`` whose tokenizer does not fit its encoder. Heads: outputs or options
that break the `TaskHead` contract, found when the model is built.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from typing import Any, ClassVar

import keras
import numpy as np
import pytest
from helpers import BOUNDED_ENCODER as TINY
from helpers import assert_mentions, tiny_vocab
from pydantic import ConfigDict

from distilbert_heads import (
    DistilBERT,
    DistilBertTaskModel,
    HeadOptions,
    TaskHead,
    create_distilbert_with_head,
    pipeline,
)
from distilbert_heads.plugins.registry import reset_registry
from distilbert_heads.text.tokenizer import DistilBertTokenizer

WORDS = [
    "the",
    "a",
    "good",
    "bad",
    "film",
    "plot",
    "who",
    "wrote",
    "it",
    "paris",
    "is",
    "in",
    "france",
    "alice",
    "works",
    "at",
    "acme",
]
VOCAB = tiny_vocab([".", ",", "?", *WORDS])
KERAS_WRAPPER = "Exception encountered when calling"


def good_inputs(batch: int = 2, length: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "input_ids": rng.integers(1, TINY["vocab_size"], size=(batch, length)).astype("int32"),
        "attention_mask": np.ones((batch, length), dtype="int32"),
    }


def _with(key: str, value: Any):
    def change(inputs):
        inputs[key] = value(inputs[key]) if callable(value) else value
        return inputs

    return change


def _set_at(key: str, value: Any, dtype: str | None = None):
    def change(inputs):
        array = inputs[key].astype(dtype) if dtype else inputs[key].copy()
        array[0, 2] = value
        inputs[key] = array
        return inputs

    return change


# (case id, how the good inputs are spoilt, facts the message must state)
HOSTILE = [
    (
        "float_ids",
        _with("input_ids", lambda a: a.astype("float32")),
        ["input_ids has dtype float32", "integer", "int32"],
    ),
    ("bool_ids", _with("input_ids", lambda a: a > 5), ["input_ids has dtype bool", "integer"]),
    (
        "id_past_vocab",
        _set_at("input_ids", 50),
        ["input_ids contains 50", "[0, 50)", "vocab_size=50", "(0, 2)", "Tokenize"],
    ),
    ("negative_id", _set_at("input_ids", -3), ["input_ids contains -3", "[0, 50)", "Tokenize"]),
    ("mask_2", _set_at("attention_mask", 2), ["attention_mask holds 2", "(0, 2)", "0 and 1", "padding"]),
    ("mask_minus_1", _set_at("attention_mask", -1), ["attention_mask holds -1", "0 and 1"]),
    ("mask_half", _set_at("attention_mask", 0.5, "float32"), ["attention_mask holds 0.5", "0 and 1"]),
    (
        "float_positions",
        lambda x: {**x, "position_ids": np.zeros((2, 6), "float32")},
        ["position_ids has dtype float32"],
    ),
    ("empty_batch", lambda x: good_inputs(batch=0), ["empty batch", "(0, 6)", "at least one sequence"]),
    ("zero_length", lambda x: good_inputs(length=0), ["length 0", "(2, 0)", "[CLS] [SEP]"]),
    ("too_long", lambda x: good_inputs(length=21), ["Sequence length 21", "max_position_embeddings=20", "Truncate"]),
    (
        "mask_shape",
        _with("attention_mask", lambda a: a[:, :4]),
        ["attention_mask has shape (2, 4)", "input_ids has shape (2, 6)"],
    ),
    ("ids_rank_1", lambda x: {"input_ids": x["input_ids"][0]}, ["shape (batch, sequence_length)", "ids[None, :]"]),
    ("ragged_lists", lambda x: {"input_ids": [[1, 2, 3], [1, 2]]}, ["rectangular", "Pad the rows"]),
    ("none_ids", lambda x: {**x, "input_ids": None}, ["got None for input_ids", "integer (batch, sequence_length)"]),
    ("no_inputs", lambda x: None, ["got None for input_ids", "tokenizer"]),
    ("text_not_ids", lambda x: "a good film", ["got a str ('a good film')", "tokenizer", "pipeline"]),
]


@pytest.fixture(scope="module")
def encoder() -> DistilBERT:
    return DistilBERT(**TINY)


@pytest.fixture(scope="module")
def task_model(encoder) -> DistilBertTaskModel:
    tokenizer = DistilBertTokenizer.from_vocab(VOCAB)
    model = create_distilbert_with_head(task_type="sentiment", distilbert_variant="tiny", **TINY)
    model.tokenizer = tokenizer
    return model


@pytest.fixture(scope="module")
def trainable_model() -> DistilBertTaskModel:
    model = create_distilbert_with_head(task_type="sentiment", distilbert_variant="tiny", **TINY)
    model.compile(optimizer="adam")
    return model


def _paths(encoder, task_model, trainable_model=None) -> dict[str, Any]:
    labels = np.zeros(2, dtype="int32")
    return {
        "model_fit": lambda x: trainable_model.fit(x, labels, epochs=1, verbose=0),
        "model_fit_validation_data": lambda x: trainable_model.fit(
            good_inputs(), labels, validation_data=(x, labels), epochs=1, verbose=0
        ),
        "model_evaluate": lambda x: trainable_model.evaluate(x, labels, verbose=0),
        "model_train_on_batch": lambda x: trainable_model.train_on_batch(x, labels),
        "model_test_on_batch": lambda x: trainable_model.test_on_batch(x, labels),
        "encoder_call": lambda x: encoder(x),
        "encoder_predict": lambda x: encoder.predict(x, verbose=0),
        "encoder_predict_on_batch": encoder.predict_on_batch,
        "model_call": lambda x: task_model(x, training=False),
        "model_predict": lambda x: task_model.predict(x, verbose=0),
        "model_predict_on_batch": task_model.predict_on_batch,
        "pipeline_forward": pipeline(task_model)._run_model,
    }


PATHS = [
    "encoder_call",
    "encoder_predict",
    "encoder_predict_on_batch",
    "model_call",
    "model_predict",
    "model_predict_on_batch",
    "pipeline_forward",
    "model_fit",
    "model_fit_validation_data",
    "model_evaluate",
    "model_train_on_batch",
    "model_test_on_batch",
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("spoil", "facts"), [pytest.param(s, f, id=i) for i, s, f in HOSTILE])
def test_every_input_path_refuses_hostile_inputs_with_our_message(
    encoder, task_model, trainable_model, path, spoil, facts
):
    run = _paths(encoder, task_model, trainable_model)[path]
    with pytest.raises(ValueError) as info:
        run(spoil(good_inputs()))
    message = str(info.value)
    for fact in facts:
        assert fact in message, f"{fact!r} missing from: {message}"
    assert KERAS_WRAPPER not in message and "\x1b[" not in message


@pytest.mark.parametrize("path", PATHS)
def test_every_input_path_accepts_good_inputs_of_any_integer_dtype(encoder, task_model, trainable_model, path):
    run = _paths(encoder, task_model, trainable_model)[path]
    for dtype in ("int32", "int64"):
        inputs = {key: value.astype(dtype) for key, value in good_inputs().items()}
        inputs["attention_mask"][1, 4:] = 0
        run(inputs)
    bool_mask = good_inputs()
    bool_mask["attention_mask"] = bool_mask["attention_mask"].astype(bool)
    run(bool_mask)


def test_symbolic_float_ids_are_refused_when_the_model_is_wired(encoder):
    with pytest.raises(ValueError, match="input_ids has dtype float32"):
        encoder({"input_ids": keras.Input(shape=(None,), dtype="float32")})


def test_readme_bad_input_example_prints_our_message_alone(tmp_path):
    script = textwrap.dedent(
        """
        import numpy as np
        from distilbert_heads import DistilBERT
        encoder = DistilBERT.from_variant("tiny", num_layers=1)
        try:
            encoder({"input_ids": np.array([[101, 40000]], dtype="int32")})
        except ValueError as error:
            print(error)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout.strip()
    assert printed.startswith("input_ids contains 40000, outside [0, 30522) where vocab_size=30522"), printed
    assert KERAS_WRAPPER not in printed and "\x1b[" not in printed


# -- texts through the pipeline -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer() -> DistilBertTokenizer:
    return DistilBertTokenizer.from_vocab(VOCAB)


def _task_pipeline(tokenizer, task_type: str, **settings):
    model = create_distilbert_with_head(
        task_type=task_type,
        distilbert_variant="tiny",
        **{**TINY, "vocab_size": tokenizer.vocab_size, "max_position_embeddings": 64},
    )
    model.tokenizer = tokenizer
    return pipeline(model, **settings)


ODD_TEXTS = [
    "\ud800",
    "good \udfff film",
    "\ud83d\ude00 paris",
    "\x00\x07\x1b[31m bad \x7f",
    "\u200b\ufeff",
    "a\u0301 ☃ 中文",
]


def test_lone_surrogates_and_control_characters_get_answers(tokenizer):
    classify = _task_pipeline(tokenizer, "sentiment")
    answers = classify(ODD_TEXTS)
    assert len(answers) == len(ODD_TEXTS) and all(isinstance(a["label"], str) for a in answers)
    alone = classify(ODD_TEXTS[1])
    assert alone["label"] == answers[1]["label"] and alone["score"] == pytest.approx(answers[1]["score"], abs=1e-5)


def test_character_offsets_still_point_into_a_text_with_lone_surrogates(tokenizer):
    qa = _task_pipeline(tokenizer, "qa", max_length=24, stride=4)
    contexts = [f"\ud800 {' '.join(WORDS)} \udfff alice works at acme \ud800", "paris \udc00 is in france"]
    answers = qa(question=["who works at acme", "where is paris"], context=contexts)
    for answer, context in zip(answers, contexts):
        assert context[answer["start"] : answer["end"]] == answer["answer"]
    encoding = tokenizer.encode(contexts[1])
    assert [contexts[1][s:e] for s, e in encoding.offsets[0] if e] == ["paris", "is", "in", "france"]


@pytest.mark.parametrize("kind", ["sentiment", "pairwise", "qa"])
def test_an_empty_list_gives_an_empty_list(tokenizer, kind):
    pipe = _task_pipeline(tokenizer, kind)
    assert (pipe(question=[], context=[]) if kind == "qa" else pipe([])) == []


_BIG_TEXT_SCRIPT = r"""
import json, resource, sys
import numpy as np
from distilbert_heads import create_distilbert_with_head, pipeline
from distilbert_heads.text.tokenizer import DistilBertTokenizer
vocab, encoder = json.loads(sys.argv[1]), json.loads(sys.argv[2])
tokenizer = DistilBertTokenizer.from_vocab(vocab)
model = create_distilbert_with_head(task_type="sentiment", distilbert_variant="tiny", **encoder)
model.tokenizer = tokenizer
classify = pipeline(model)
qa_model = create_distilbert_with_head(task_type="qa", distilbert_variant="tiny", **encoder)
qa_model.tokenizer = tokenizer
qa = pipeline(qa_model)
sentence = "alice works at acme in paris . "
head = sentence * 40
classify(head)
big = head + sentence * (50_000_000 // len(sentence))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
answer = classify(big)
expected = classify(head)
try:
    qa(question="who works at acme", context=big)
    qa_error = None
except ValueError as error:
    qa_error = str(error)
grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
report = {"answer": answer, "expected": expected, "grown_mb": grown_mb, "qa_error": qa_error, "chars": len(big)}
print(json.dumps(report))
"""


def test_a_50_mb_text_is_answered_in_bounded_memory_and_a_50_mb_context_refused_clearly():
    big_text_encoder = {**TINY, "vocab_size": len(VOCAB), "max_position_embeddings": 64}
    result = subprocess.run(
        [sys.executable, "-c", _BIG_TEXT_SCRIPT, json.dumps(VOCAB), json.dumps(big_text_encoder)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["chars"] > 50_000_000 - 100
    # Only a prefix is tokenized, and its kept tokens are the whole text's: the same answer as its first sentences.
    assert report["answer"] == report["expected"]
    # Tokenizing it whole took gigabytes; now the growth is the text's own size at most, not tokens per character.
    assert report["grown_mb"] < 150, report
    assert "1,000,000 characters" in report["qa_error"] and "Question/context input 0" in report["qa_error"]


# -- no retracing per call ------------------------------------------------------------------------
def test_twenty_calls_of_varied_lengths_do_not_retrace(tokenizer):
    classify = _task_pipeline(tokenizer, "sentiment", batch_size=4)
    model = classify.model
    shapes: list[tuple[int, int]] = []
    predict_on_batch = model.predict_on_batch

    def recording(x):
        shapes.append(tuple(x["input_ids"].shape))
        return predict_on_batch(x)

    model.predict_on_batch = recording
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Capture()
    loggers = [logging.getLogger("tensorflow"), logging.getLogger("absl")]
    for logger in loggers:
        logger.addHandler(handler)
    rng = np.random.default_rng(0)
    calls = [
        [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 55)))) for _ in range(int(rng.integers(1, 7)))]
        for _ in range(40)
    ]
    try:
        for texts in calls:
            classify(texts)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert not [r for r in records if "retracing" in r], records
    assert len({length for _, length in shapes}) > 1
    backend = keras.backend.backend()
    if backend == "tensorflow":
        # Lengths vary, yet one generalised trace (reduce_retracing) serves them all after the second shape.
        assert model.predict_function.experimental_get_tracing_count() <= 2
    elif backend == "jax":
        # JAX compiles once per shape: the shapes come from a few buckets, not one per call.
        assert all(rows in (1, 2, 4) and length in (16, 32, 64) for rows, length in shapes), set(shapes)


@pytest.mark.parametrize("task_type", ["ner", "sentiment"])
def test_bucketed_padding_changes_no_answer(tokenizer, task_type):
    """JAX pads rows to shape buckets (forced on here, on any backend): outputs must equal the unpadded ones."""
    pipe = _task_pipeline(tokenizer, task_type, batch_size=8)
    pipe._bucketed = True
    if pipe._per_token_outputs() is None:
        assert keras.backend.backend() == "torch"  # placeholder lengths there; torch runs eagerly and never buckets
        pytest.skip("no symbolic output shapes on torch")
    inputs = tokenizer.encode(["alice works at acme", "paris", "who wrote it in france ?"]).as_model_inputs()
    padded = pipe._pad_to_bucket(inputs)
    assert padded["input_ids"].shape == (4, 16)
    direct = pipe.model(inputs, training=False)[pipe.head_name]
    bucketed = pipe._run_model(inputs)
    assert set(bucketed) == set(direct)
    for key, value in bucketed.items():
        np.testing.assert_allclose(value, keras.ops.convert_to_numpy(direct[key]), atol=1e-5)


# -- a tokenizer that does not fit the encoder ------------------------------------------------------
@pytest.mark.parametrize(
    "vocab",
    [
        pytest.param([*VOCAB, *(f"extra{i}" for i in range(30))], id="more_tokens"),
        pytest.param({**{t: i for i, t in enumerate(VOCAB)}, "gap": 70}, id="few_tokens_but_an_id_past_the_vocab"),
    ],
)
def test_a_tokenizer_past_the_vocabulary_cannot_be_attached(vocab):
    model = create_distilbert_with_head(task_type="sentiment", distilbert_variant="tiny", **TINY)
    bigger = DistilBertTokenizer.from_vocab(vocab)
    largest = max(bigger.get_vocab().values())
    with pytest.raises(ValueError, match=f"ids up to {largest} .*vocab_size is 50 .*vocab_size={largest + 1}"):
        model.tokenizer = bigger
    with pytest.raises(ValueError) as error:
        pipeline(model, tokenizer=bigger)
    assert_mentions(error, "pipeline()", f"token ids up to {largest}")


def test_keras_file_whose_tokenizer_is_past_the_vocabulary_fails_at_load(tmp_path):
    model = create_distilbert_with_head(task_type="sentiment", distilbert_variant="tiny", **TINY)
    model._tokenizer = DistilBertTokenizer.from_vocab([*VOCAB, *(f"extra{i}" for i in range(30))])  # as an edited file
    path = tmp_path / "mismatch.keras"
    model.save(path)
    with pytest.raises(ValueError) as info:
        keras.models.load_model(path)
    message = str(info.value)
    for fact in ("ids up to 54", "vocab_size is 50", "saved in this .keras file", "Use the tokenizer"):
        assert fact in message, message


# -- heads that break the contract ----------------------------------------------------------------
class _Opaque:
    pass


class OpaqueOptions(HeadOptions):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    thing: _Opaque = _Opaque()


class BrokenHead(TaskHead):
    """Its ``mode`` option picks the way it breaks the contract."""

    task_types: ClassVar[tuple[str, ...]] = ("hostile_broken",)
    output_names: ClassVar[tuple[str, ...]] = ("logits",)

    def __init__(
        self,
        hidden_size: int,
        task_type: str = "hostile_broken",
        options: Any = None,
        *,
        mode: str = "ok",
        **kwargs: Any,
    ) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        self.mode = mode
        self.dense = keras.layers.Dense(2, name="dense")

    def call(self, hidden_states: Any, attention_mask: Any, training: bool | None = None) -> Any:
        cls_vector = self.dense(hidden_states[:, 0, :])
        return {
            "ok": {"logits": cls_vector},
            "wrong_names": {"scores": cls_vector},
            "extra_name": {"logits": cls_vector, "debug": cls_vector},
            "not_a_dict": cls_vector,
            "per_length": {"logits": self.dense(hidden_states[0])},
            "scalar": {"logits": keras.ops.sum(cls_vector)},
        }[self.mode]

    def default_losses(self) -> dict[str, Any]:
        return {"logits": "mse"}


class OpaqueOptionsHead(BrokenHead):
    options_schema = OpaqueOptions


@pytest.mark.parametrize(
    ("mode", "facts"),
    [
        ("wrong_names", ["returned outputs ['scores']", "output_names=['logits']"]),
        ("extra_name", ["returned outputs ['debug', 'logits']", "output_names=['logits']"]),
        ("not_a_dict", ["returned", "non-empty dict"]),
        ("per_length", ["output 'logits' has shape (3, 2)", "batch of 2", "first axis"]),
        ("scalar", ["output 'logits' has shape ()", "first axis"]),
    ],
)
def test_head_breaking_the_output_contract_fails_at_build_naming_it(mode, facts):
    encoder = DistilBERT(**TINY)
    head = BrokenHead(encoder.config.hidden_size, mode=mode, name="broken")
    with pytest.raises(ValueError) as info:
        DistilBertTaskModel(encoder, [head], provenance={"broken": {"plugin": "hostile-plugin"}})
    message = str(info.value)
    for fact in ["Head 'broken'", "BrokenHead", "plugin hostile-plugin", *facts]:
        assert fact in message, message


def test_head_options_that_cannot_be_json_fail_at_build_naming_the_head():
    encoder = DistilBERT(**TINY)
    head = OpaqueOptionsHead(encoder.config.hidden_size, name="opaque")
    with pytest.raises(ValueError) as info:
        DistilBertTaskModel(encoder, [head])
    message = str(info.value)
    for fact in ("Head 'opaque'", "OpaqueOptionsHead", "cannot be saved as JSON", "JSON types"):
        assert fact in message, message


_PLUGIN = textwrap.dedent(
    """
    import keras
    from distilbert_heads import TaskHead, hookimpl

    class MisnamedHead(TaskHead):
        task_types = ("{task}",)
        output_names = ("logits",)

        def __init__(self, hidden_size, task_type, options=None, **kwargs):
            super().__init__(hidden_size, task_type, options, **kwargs)
            self.dense = keras.layers.Dense(2)

        def call(self, hidden_states, attention_mask, training=None):
            return {{"probabilities": self.dense(hidden_states[:, 0])}}

        def default_losses(self):
            return {{"logits": "mse"}}

    @hookimpl
    def register_heads(register):
        register(MisnamedHead)
    """
)


def test_registered_plugin_head_with_wrong_outputs_fails_at_build_naming_its_plugin(tmp_path, monkeypatch):
    task = f"misnamed_{uuid.uuid4().hex[:6]}"
    module = f"misnamed_plugin_{uuid.uuid4().hex[:6]}"
    (tmp_path / f"{module}.py").write_text(_PLUGIN.format(task=task))
    info_dir = tmp_path / "distilbert_head_misnamed-0.1.0.dist-info"
    info_dir.mkdir()
    (info_dir / "METADATA").write_text("Metadata-Version: 2.1\nName: distilbert-head-misnamed\nVersion: 0.1.0\n")
    (info_dir / "entry_points.txt").write_text(f"[distilbert_heads]\n{task} = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reset_registry()
    try:
        with pytest.raises(ValueError) as info:
            create_distilbert_with_head(task_type=task, distilbert_variant="tiny", **TINY)
    finally:
        reset_registry()
    message = str(info.value)
    for fact in ("MisnamedHead", f"plugin {task}", "['probabilities']", "output_names=['logits']"):
        assert fact in message, message


@pytest.mark.parametrize("call", ["encoder", "model"])
def test_bare_nested_lists_of_ids_are_called_like_an_array(encoder, task_model, call):
    model = encoder if call == "encoder" else task_model
    ids = good_inputs()["input_ids"]
    from_list, from_array = model(ids.tolist()), model(ids)
    first = (lambda out: out["last_hidden_state"]) if call == "encoder" else (lambda out: out["sentiment"]["logits"])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(first(from_list)), keras.ops.convert_to_numpy(first(from_array)), atol=1e-6
    )


# (case id, head, how the pipeline is misused, error type, facts the message must state)
PIPELINE_MISUSE = [
    (
        "top_k_zero",
        "sentiment",
        lambda p: p("good", top_k=0),
        ValueError,
        ["top_k must be a positive integer", "got 0"],
    ),
    ("top_k_negative", "sentiment", lambda p: p("good", top_k=-1), ValueError, ["top_k", "got -1"]),
    ("top_k_string", "sentiment", lambda p: p("good", top_k="2"), ValueError, ["top_k", "got '2'"]),
    ("top_k_float", "sentiment", lambda p: p("good", top_k=1.5), ValueError, ["top_k", "got 1.5"]),
    ("top_k_bool", "sentiment", lambda p: p("good", top_k=True), ValueError, ["top_k", "got True"]),
    ("top_k_regression", "text_regression", lambda p: p("good", top_k=2), ValueError, ["regression head", "top_k"]),
    ("pair_of_one", "pairwise", lambda p: p(("a film",)), TypeError, ["tuple of 1 strings", "exactly two"]),
    ("pair_of_three", "pairwise", lambda p: p(("a", "b", "c")), TypeError, ["tuple of 3 strings", "(text_a, text_b)"]),
    ("pair_as_string", "pairwise", lambda p: p("a film"), TypeError, ["one string ('a film')", "(text_a, text_b)"]),
    (
        "qa_as_string",
        "qa",
        lambda p: p("who wrote it"),
        TypeError,
        ["one string ('who wrote it')", "question=", "context="],
    ),
    (
        "huge_bad_item",
        "sentiment",
        lambda p: p(["good", ("x" * 1_000_000,)]),
        TypeError,
        ["Input 1 is tuple", "strings"],
    ),
]


@pytest.mark.parametrize(
    ("task_type", "misuse", "error", "facts"), [pytest.param(*case[1:], id=case[0]) for case in PIPELINE_MISUSE]
)
def test_pipeline_misuse_is_refused_with_our_message(tokenizer, task_type, misuse, error, facts):
    with pytest.raises(error) as info:
        misuse(_task_pipeline(tokenizer, task_type))
    message = str(info.value)
    for fact in facts:
        assert fact in message, f"{fact!r} missing from: {message}"
    assert len(message) < 600, message[:600]


def test_a_single_pair_dict_and_a_huge_top_k_are_answered(tokenizer):
    pairs = _task_pipeline(tokenizer, "pairwise")
    as_dict = pairs({"text_a": "a good film", "text_b": "the plot"})
    as_tuple = pairs(("a good film", "the plot"))
    assert as_dict["label"] == as_tuple["label"] and as_dict["score"] == pytest.approx(as_tuple["score"], abs=1e-6)
    ranked = _task_pipeline(tokenizer, "sentiment")("a good film", top_k=10**9)
    assert len(ranked) == 2 and ranked[0]["score"] >= ranked[1]["score"]  # every label, best first


@pytest.mark.parametrize(
    ("dtype", "facts"),
    [
        ("int32", ["'int32'", "floating-point"]),
        ("bool", ["'bool'", "floating-point"]),
        ("float8", ["Unknown dtype policy 'float8'"]),
        ("mixed_int8", ["Unknown dtype policy 'mixed_int8'"]),
        (5, ["Unknown dtype policy 5"]),
    ],
)
@pytest.mark.parametrize("where", ["encoder", "factory", "pipeline"])
def test_a_non_float_or_unknown_dtype_policy_is_refused_with_our_message(tokenizer, where, dtype, facts):
    with pytest.raises(ValueError) as info:
        if where == "encoder":
            DistilBERT(**TINY, dtype=dtype)
        elif where == "factory":
            create_distilbert_with_head(task_type="sentiment", distilbert_variant="tiny", dtype=dtype, **TINY)
        else:
            _task_pipeline(tokenizer, "sentiment", dtype=dtype)
    for fact in [*facts, "'bfloat16'"]:
        assert fact in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("ids", "facts"),
    [
        ([10**9], ["decode got id 1000000000", "[0, 25)", "vocab_size=25"]),
        ([5, -1], ["decode got id -1 at position 1", "[0, 25)"]),
        ([1.5], ["integer token ids", "float64"]),
        ([[5, 6], [7, 8]], ["one sequence", "shape (2, 2)", "row by row"]),
        (["5"], ["integer token ids"]),
    ],
)
def test_decoding_ids_outside_the_vocabulary_is_refused(tokenizer, ids, facts):
    with pytest.raises(ValueError) as info:
        tokenizer.decode(ids)
    for fact in facts:
        assert fact in str(info.value), str(info.value)


def test_decoding_any_integer_ids_of_the_vocabulary_works(tokenizer):
    ids = tokenizer.encode("the good film").input_ids[0]
    assert tokenizer.decode(ids) == tokenizer.decode(ids.astype("int64").tolist()) == "the good film"
    assert tokenizer.decode([]) == ""
