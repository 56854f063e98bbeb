"""`distilbert_heads.pipeline`: text in, the head's answers out, batched, in input order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any, ClassVar

import keras
import numpy as np
import pytest
from helpers import tiny_vocab

from distilbert_heads import DistilBERT, DistilBertTaskModel, TaskHead, create_distilbert_with_head, pipeline
from distilbert_heads.text.pipeline import PROGRESS_THRESHOLD, Pipeline
from distilbert_heads.text.tokenizer import DistilBertTokenizer

WORDS = list(
    dict.fromkeys(
        (
            "the a an and or of to in on is was were be it this that movie film plot actor great good bad awful "
            "boring fun love hate who what where when wrote paris london city capital france england river lives "
            "alice bob carol works at acme corp in berlin question answer context long story"
        ).split()
    )
)
VOCAB = tiny_vocab([".", ",", "?", "!", *WORDS, "##s", "##ed", "##ing"])
ENCODER = {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def tokenizer() -> DistilBertTokenizer:
    return DistilBertTokenizer.from_vocab(VOCAB)


def _encoder(tokenizer: DistilBertTokenizer, max_position_embeddings: int = 128) -> DistilBERT:
    return DistilBERT.from_variant(
        "tiny", vocab_size=tokenizer.vocab_size, max_position_embeddings=max_position_embeddings, **ENCODER
    )


# -- a head defined here: its answers say which input and which rows they came from ---------------
class RecordingHead(TaskHead):
    """Answers carry the text decode was given and the row's token count, so tests can check order."""

    task_types: ClassVar[tuple[str, ...]] = ("test_recording",)
    output_names: ClassVar[tuple[str, ...]] = ("logits",)

    def __init__(
        self,
        hidden_size: int,
        task_type: str = "test_recording",
        options: Any = None,
        *,
        input_kind: str = "text",
        **kwargs: Any,
    ) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        self.input_kind = input_kind
        self.dense = keras.layers.Dense(2, name="dense")

    def build(self, input_shape: Any = None) -> None:
        self.dense.build((None, self.hidden_size))
        self.built = True

    def call(self, hidden_states: Any, attention_mask: Any, training: bool | None = None) -> dict[str, Any]:
        return {"logits": self.dense(hidden_states[:, 0, :])}

    def default_losses(self) -> dict[str, Any]:
        return {"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}

    def decode(
        self,
        outputs: Mapping[str, np.ndarray],
        encoding: Any = None,
        *,
        texts=None,
        pairs=None,
        questions=None,
        contexts=None,
        shout: bool = False,
    ) -> list[Any]:
        assert isinstance(outputs["logits"], np.ndarray)
        assert outputs["logits"].shape[0] == len(encoding)
        lengths = encoding.attention_mask.sum(axis=1).tolist()
        if self.input_kind == "question_context":
            windows: dict[int, list[int]] = {}
            for row, sample in enumerate(encoding.overflow_to_sample):
                windows.setdefault(sample, []).append(lengths[row])
            return [
                {"question": q, "context": c, "windows": windows[i]}
                for i, (q, c) in enumerate(zip(questions, contexts))
            ]
        given = texts if self.input_kind == "text" else pairs
        return [{"input": (t.upper() if shout else t), "tokens": n} for t, n in zip(given, lengths)]


def _model(tokenizer, *, kinds=("text",), names=None, with_tokenizer=True, max_position_embeddings=128):
    encoder = _encoder(tokenizer, max_position_embeddings)
    names = names or [f"head_{i}" for i in range(len(kinds))]
    heads = [RecordingHead(encoder.config.hidden_size, input_kind=kind, name=name) for kind, name in zip(kinds, names)]
    return DistilBertTaskModel(encoder, heads, tokenizer=tokenizer if with_tokenizer else None)


def _spy(pipe: Pipeline, *, padded_to_own_longest: bool = True) -> list[tuple[int, int]]:
    """Record the (rows, length) of every batch the model is run on."""
    shapes: list[tuple[int, int]] = []
    run = pipe._run_model

    def spy(inputs):
        if padded_to_own_longest:
            assert inputs["attention_mask"].sum(axis=1).max() == inputs["input_ids"].shape[1]
        shapes.append(tuple(inputs["input_ids"].shape))
        return run(inputs)

    pipe._run_model = spy
    return shapes


# -- inputs and outputs --------------------------------------------------------------------------
def test_single_text_gives_one_answer_and_a_list_gives_a_list(tokenizer):
    pipe = pipeline(_model(tokenizer))
    assert pipe("the movie was great") == {"input": "the movie was great", "tokens": 6}
    assert pipe(["the movie", "bad"]) == [{"input": "the movie", "tokens": 4}, {"input": "bad", "tokens": 3}]
    assert pipe([]) == []


def test_batching_sorts_by_length_and_restores_the_input_order(tokenizer):
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(n))) for n in rng.integers(0, 30, size=23)]
    pipe = pipeline(_model(tokenizer), batch_size=4)
    shapes = _spy(pipe)
    answers = pipe(texts)
    assert [a["input"] for a in answers] == texts
    assert [a["tokens"] for a in answers] == [len(tokenizer.encode(t).input_ids[0]) for t in texts]
    assert [rows for rows, _ in shapes] == [4, 4, 4, 4, 4, 3]
    # Sorting by length first pads far less than batching in the given order would.
    token_counts = [a["tokens"] for a in answers]
    unsorted = sum(len(token_counts[i : i + 4]) * max(token_counts[i : i + 4]) for i in range(0, 23, 4))
    assert sum(rows * length for rows, length in shapes) < 0.8 * unsorted
    assert [length for _, length in shapes] == sorted(length for _, length in shapes)


def test_each_batch_is_padded_to_its_own_longest_row_not_to_max_length(tokenizer):
    short = ["good", "bad film", "fun", "the plot", "great"]
    long = " ".join(["the movie was great"] * 10)  # 40 words
    pipe = pipeline(_model(tokenizer), batch_size=5)
    shapes = _spy(pipe)
    pipe([*short, long])
    assert shapes == [(5, 4), (1, 42)]  # the short batch: [CLS] two words [SEP]; never 128
    assert pipe.max_length == 128


def test_pairs_as_tuples_or_dicts(tokenizer):
    pipe = pipeline(_model(tokenizer, kinds=("pair",)))
    assert pipe(("good movie", "bad")) == {"input": ("good movie", "bad"), "tokens": 6}
    answers = pipe([("a", "b c"), {"text_a": "the", "text_b": "movie"}])
    assert [a["input"] for a in answers] == [("a", "b c"), ("the", "movie")]
    with pytest.raises(TypeError, match=r"Input 0 is 'just a string'; this head takes text pairs"):
        pipe(["just a string"])


def test_question_context_by_keywords_dicts_or_lists(tokenizer):
    pipe = pipeline(_model(tokenizer, kinds=("question_context",)))
    one = pipe(question="who wrote it ?", context="alice wrote it")
    assert one == {"question": "who wrote it ?", "context": "alice wrote it", "windows": [10]}
    assert pipe({"question": "who", "context": "bob"}) == {"question": "who", "context": "bob", "windows": [5]}
    listed = pipe(question=["who", "what"], context=["bob", "the movie"])
    assert [a["context"] for a in listed] == ["bob", "the movie"]
    assert pipe([{"question": "who", "context": "bob"}]) == [listed[0]]
    with pytest.raises(ValueError, match="2 questions and 1 contexts"):
        pipe(question=["who", "what"], context=["bob"])
    with pytest.raises(TypeError, match="needs a question and a context"):
        pipe(question="who")


def test_long_contexts_are_windowed_and_windows_are_batched_not_questions(tokenizer):
    context = " ".join(WORDS[:40])  # 40 tokens
    pipe = pipeline(_model(tokenizer, kinds=("question_context",)), max_length=16, stride=4, batch_size=3)
    shapes = _spy(pipe, padded_to_own_longest=False)
    answers = pipe(question=["who", "what"], context=[context, "bob"])
    # [CLS] who [SEP] + 12 context tokens [SEP]: windows advance by 12 - 4 = 8 tokens over 40 tokens.
    assert answers[0]["windows"] == [16, 16, 16, 16, 12]
    assert answers[1]["windows"] == [5]
    assert [rows for rows, _ in shapes] == [3, 3]  # six windows of two questions, three per forward pass
    assert all(length <= 16 for _, length in shapes)


def test_stride_is_capped_at_half_the_window(tokenizer):
    pipe = pipeline(_model(tokenizer, kinds=("question_context",)), max_length=16, stride=128)
    assert pipe.stride == 8  # 128 does not fit a 16-token window


def test_question_too_long_for_the_window_names_the_input(tokenizer):
    pipe = pipeline(_model(tokenizer, kinds=("question_context",)), max_length=16, stride=2)
    with pytest.raises(ValueError, match=r"input 1 cannot be windowed with max_length=16.*first text is 14 tokens"):
        pipe(question=["who", " ".join(WORDS[:14])], context=["bob", "alice"])


def test_empty_whitespace_and_very_long_texts(tokenizer):
    pipe = pipeline(_model(tokenizer, max_position_embeddings=32))
    very_long = " ".join(WORDS * 20)
    answers = pipe(["", "   \t\n", very_long, "good"])
    # Empty and blank texts are [CLS] [SEP]; a long text is cut to max_length (the encoder's 32 here).
    assert [a["tokens"] for a in answers] == [2, 2, 32, 3]
    assert pipeline(_model(tokenizer), max_length=10)(very_long)["tokens"] == 10


def test_decode_options_reach_decode_and_unknown_ones_are_refused(tokenizer):
    pipe = pipeline(_model(tokenizer))
    assert pipe("good", shout=True)["input"] == "GOOD"
    with pytest.raises(TypeError, match=r"takes no option 'top_k'; the options it takes are: shout"):
        pipe("good", top_k=2)
    with pytest.raises(TypeError, match="passed to decode by the pipeline itself"):
        pipe("good", texts=["x"])


def test_bad_inputs_say_what_is_expected(tokenizer):
    pipe = pipeline(_model(tokenizer))
    with pytest.raises(TypeError, match=r"Input 1 is int \(3\); this head takes strings"):
        pipe(["good", 3])
    with pytest.raises(TypeError, match="question=/context= are for question answering heads"):
        pipe(question="who", context="bob")


# -- choosing head and tokenizer, settings --------------------------------------------------------
def test_multi_head_model_needs_a_head_and_lists_them(tokenizer):
    model = _model(tokenizer, kinds=("text", "pair"), names=["topic", "nli"])
    with pytest.raises(ValueError, match=r"2 heads: 'topic' \(test_recording\), 'nli' \(test_recording\).*head="):
        pipeline(model)
    with pytest.raises(ValueError, match=r"no head named 'sentiment'; its heads are 'topic'"):
        pipeline(model, head="sentiment")
    assert pipeline(model, head="nli")(("a", "b"))["input"] == ("a", "b")
    assert pipeline(model, head="topic")("good")["input"] == "good"


def test_missing_tokenizer_says_how_to_pass_one(tokenizer):
    model = _model(tokenizer, with_tokenizer=False)
    with pytest.raises(ValueError, match=r"no tokenizer.*tokenizer=DistilBertTokenizer\.from_pretrained\(dir\)"):
        pipeline(model)
    assert pipeline(model, tokenizer=tokenizer)("good")["tokens"] == 3


def test_a_tokenizer_larger_than_the_encoder_vocabulary_is_refused(tokenizer):
    model = _model(tokenizer, with_tokenizer=False)
    bigger = DistilBertTokenizer.from_vocab([*VOCAB, *(f"extra{i}" for i in range(10))])
    with pytest.raises(ValueError, match=f"ids up to {bigger.vocab_size - 1} .*vocab_size is {tokenizer.vocab_size}"):
        pipeline(model, tokenizer=bigger)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_length": 500}, "max_position_embeddings=128"),
        ({"max_length": 2}, r"from 3 .*got 2"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"stride": -1}, "stride must be a non-negative integer"),
    ],
)
def test_bad_settings_are_refused(tokenizer, settings, message):
    with pytest.raises(ValueError, match=message):
        pipeline(_model(tokenizer), **settings)


def test_path_that_is_not_a_keras_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model file at"):
        pipeline(tmp_path / "missing.keras")
    other = tmp_path / "weights.h5"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match="is not a .keras file"):
        pipeline(other)


def test_model_max_length_is_the_pipeline_default_and_is_saved(tokenizer, tmp_path):
    model = create_distilbert_with_head(
        task_type="sentiment",
        distilbert_variant="tiny",
        vocab_size=tokenizer.vocab_size,
        tokenizer=tokenizer,
        **ENCODER,
    )
    assert model.max_length == model.encoder.config.max_position_embeddings
    model.max_length = 24
    assert model.get_config()["max_length"] == 24
    model.save(tmp_path / "m.keras")
    assert pipeline(tmp_path / "m.keras").max_length == 24


# -- progress ----------------------------------------------------------------------------------
def test_progress_bar_on_request_and_for_long_inputs(tokenizer, capsys):
    pipe = pipeline(_model(tokenizer), batch_size=64, show_progress=True)
    pipe(["good"] * 10)
    assert "10/10" in capsys.readouterr().err

    pipe = pipeline(_model(tokenizer), batch_size=512)
    pipe(["good"] * 10)
    assert capsys.readouterr().err == ""
    pipe(["good", "bad"] * (PROGRESS_THRESHOLD // 2 + 1))
    captured = capsys.readouterr()
    assert f"{PROGRESS_THRESHOLD + 2}/{PROGRESS_THRESHOLD + 2}" in captured.err
    assert captured.out == ""  # answers may be printed to stdout by callers: keep it clean

    pipe = pipeline(_model(tokenizer), batch_size=512, show_progress=False)
    pipe(["good"] * (PROGRESS_THRESHOLD + 1))
    assert capsys.readouterr().err == ""


# -- a third-party head: the installed example plugin ------------------------------------------------
def test_plugin_head_gets_a_pipeline_with_no_core_change(tokenizer):
    pytest.importorskip("distilbert_head_foo")
    model = create_distilbert_with_head(
        task_type="foo",
        labels=["sports", "tech", "food"],
        threshold=0.3,
        distilbert_variant="tiny",
        vocab_size=tokenizer.vocab_size,
        tokenizer=tokenizer,
        **ENCODER,
    )
    texts = ["the movie was great", "", "bob works at acme corp in berlin"]
    answers = pipeline(model)(texts)
    expected = []
    for text in texts:
        encoding = tokenizer.encode([text])
        outputs = model(encoding.as_model_inputs(), training=False)["foo"]
        expected.extend(model.heads["foo"].decode({k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}))
    assert len(answers) == 3
    for got, want in zip(answers, expected):
        assert [a["label"] for a in got] == [w["label"] for w in want]
        np.testing.assert_allclose([a["score"] for a in got], [w["score"] for w in want], atol=1e-5)


# -- saving: the tokenizer inside the .keras file -------------------------------------------------
def test_tokenizer_travels_inside_the_keras_file(tokenizer, tmp_path):
    model = create_distilbert_with_head(
        task_type="sentiment",
        distilbert_variant="tiny",
        vocab_size=tokenizer.vocab_size,
        tokenizer=tokenizer,
        **ENCODER,
    )
    model.save(tmp_path / "with.keras")
    reloaded = keras.models.load_model(tmp_path / "with.keras")
    texts = ["The Movie, was GREAT!", "", "unknownword boring films"]
    assert reloaded.tokenizer is not None
    for field in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(
            getattr(reloaded.tokenizer.encode(texts), field), getattr(tokenizer.encode(texts), field)
        )
    assert reloaded.tokenizer.encode(texts).offsets == tokenizer.encode(texts).offsets

    model.tokenizer = None
    model.save(tmp_path / "without.keras")
    assert keras.models.load_model(tmp_path / "without.keras").tokenizer is None


def test_model_refuses_a_tokenizer_that_does_not_fit(tokenizer):
    model = _model(tokenizer, with_tokenizer=False)
    with pytest.raises(TypeError, match="must be a distilbert_heads.tokenizer.DistilBertTokenizer"):
        model.tokenizer = "vocab.txt"
    with pytest.raises(ValueError, match="encoder's vocab_size"):
        model.tokenizer = DistilBertTokenizer.from_vocab([*VOCAB, "extra"])


_SUBPROCESS = r"""
import json, sys
import distilbert_heads
calls = json.loads(sys.argv[2])
pipe = distilbert_heads.pipeline(sys.argv[1], **calls["settings"])
results = [pipe(*call.get("args", []), **call.get("kwargs", {})) for call in calls["calls"]]
print(json.dumps(results))
"""


def _answers_in_fresh_process(path: os.PathLike, settings: dict[str, Any], calls: list[dict[str, Any]]) -> list[Any]:
    result = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS, os.fspath(path), json.dumps({"settings": settings, "calls": calls})],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _same_answers(got: Any, want: Any) -> None:
    """Equal structure and strings; scores equal to float32 precision."""
    if isinstance(want, Mapping):
        assert set(got) == set(want)
        for key in want:
            _same_answers(got[key], want[key])
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            _same_answers(g, w)
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-5)
    else:
        assert got == want


@pytest.mark.slow
def test_saved_model_gives_the_same_answers_in_a_fresh_process(tokenizer, tmp_path):
    model = create_distilbert_with_head(
        task_type="sentiment",
        labels=["negative", "neutral", "positive"],
        distilbert_variant="tiny",
        vocab_size=tokenizer.vocab_size,
        tokenizer=tokenizer,
        **ENCODER,
    )
    model.save(tmp_path / "sentiment.keras")
    texts = ["the movie was great", "", "awful boring plot", "Paris is the capital of France!"]
    calls = [{"args": [texts]}, {"args": [texts[0]], "kwargs": {"top_k": 2}}]
    pipe = pipeline(model, batch_size=2)
    expected = json.loads(json.dumps([pipe(texts), pipe(texts[0], top_k=2)]))
    assert expected[0][0]["label"] in {"negative", "neutral", "positive"}
    _same_answers(_answers_in_fresh_process(tmp_path / "sentiment.keras", {"batch_size": 2}, calls), expected)


# -- the built-in heads end to end -----------------------------------------------------------------
def _builtin(task_type: str, tokenizer: DistilBertTokenizer, **options: Any) -> DistilBertTaskModel:
    return create_distilbert_with_head(
        task_type=task_type,
        distilbert_variant="tiny",
        vocab_size=tokenizer.vocab_size,
        tokenizer=tokenizer,
        **ENCODER,
        **options,
    )


def test_sentiment_end_to_end(tokenizer):
    model = _builtin("sentiment", tokenizer, labels=["negative", "positive"])
    pipe = pipeline(model)
    texts = ["the movie was great", "awful", ""]
    answers = pipe(texts)
    logits = keras.ops.convert_to_numpy(
        model(tokenizer.encode(texts).as_model_inputs(), training=False)["sentiment"]["logits"]
    )
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    for answer, row in zip(answers, probs):
        assert answer["label"] == ["negative", "positive"][int(row.argmax())]
        assert answer["score"] == pytest.approx(float(row.max()), abs=1e-5)
    ranked = pipe(texts[0], top_k=2)
    assert [r["label"] for r in ranked] == sorted(
        ["negative", "positive"], key=lambda n: -probs[0][["negative", "positive"].index(n)]
    )


def test_ner_end_to_end(tokenizer):
    model = _builtin("ner", tokenizer, labels=["O", "B-PER", "I-PER", "B-ORG", "I-ORG"])
    text = "Alice works at Acme Corp in Berlin."
    answers = pipeline(model)([text, "", "   "])
    assert answers[1] == [] and answers[2] == []
    for entity in answers[0]:
        assert set(entity) >= {"entity", "score", "start", "end", "word"}
        assert entity["entity"] in {"PER", "ORG", "B-PER", "I-PER", "B-ORG", "I-ORG"}
        assert text[entity["start"] : entity["end"]].lower() == entity["word"].lower()


def test_qa_end_to_end_over_windows(tokenizer):
    model = _builtin("qa", tokenizer)
    context = " ".join(["the river in london is long ."] * 12)  # 96 tokens: several 24-token windows
    pipe = pipeline(model, max_length=24, stride=6, batch_size=4)
    shapes = _spy(pipe, padded_to_own_longest=False)  # windows of one batch of questions share a width
    answer = pipe(question="where is the river ?", context=context)
    assert sum(rows for rows, _ in shapes) > 1  # windows were used
    assert set(answer) >= {"answer", "score", "start", "end"}
    assert context[answer["start"] : answer["end"]] == answer["answer"]
    both = pipe(question=["where is the river ?", "who"], context=[context, "bob"])
    _same_answers(both[0], answer)


def test_pairwise_end_to_end(tokenizer):
    classify = pipeline(_builtin("pairwise", tokenizer, labels=["entailment", "neutral", "contradiction"]))
    answers = classify([("alice lives in paris", "alice lives in france"), ("a", "")])
    assert [a["label"] in {"entailment", "neutral", "contradiction"} for a in answers] == [True, True]
    similarity = pipeline(_builtin("text_similarity", tokenizer, num_classes=1))
    score = similarity(("the movie", "the film"))
    assert set(score) == {"score"} and isinstance(score["score"], float)
