"""`distilbert_heads.plugins.input_kinds`: one owner for how a head's examples become encoder rows.

The built-in kinds (parsing, packing, the one QA stride rule, decode keywords), 0.1-style string
kinds, and a kind defined by a plugin (several encoder rows per example) that flows through the
task model, pipeline and CLI with no change in the core.
"""

from __future__ import annotations

import importlib
import textwrap
import uuid
from typing import Any, ClassVar

import keras
import numpy as np
import pytest
from pydantic import BaseModel

from distilbert_heads import DistilBERT, DistilBertTaskModel, TaskHead, pipeline
from distilbert_heads.cli import main
from distilbert_heads.heads.qa_span import QAExample, QASpanHead
from distilbert_heads.plugins.input_kinds import BUILTIN_KINDS, PAIR, QUESTION_CONTEXT, TEXT, input_kind_of
from distilbert_heads.plugins.registry import reset_registry
from distilbert_heads.text.tokenizer import DistilBertTokenizer
from distilbert_heads.training.evaluation import chance_level_warning, chance_predictions, predict_examples

WORDS = (
    "the a film was great bad who wrote it alice bob paris is capital of france where does live in city "
    "river long story question answer context red blue green cat dog sat ran"
).split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "?", "|", *dict.fromkeys(WORDS), "##s"]
ENCODER = {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def tokenizer() -> DistilBertTokenizer:
    return DistilBertTokenizer.from_vocab(VOCAB)


def _encoder(tokenizer: DistilBertTokenizer) -> DistilBERT:
    return DistilBERT.from_variant("tiny", vocab_size=tokenizer.vocab_size, max_position_embeddings=64, **ENCODER)


# -- the built-in kinds: what a pipeline call takes ---------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "inputs", "keywords", "items", "single"),
    [
        (TEXT, "a film", {}, ["a film"], True),
        (TEXT, ["a", "b"], {}, ["a", "b"], False),
        (PAIR, ("a", "b"), {}, [("a", "b")], True),
        (PAIR, {"text_a": "a", "text_b": "b"}, {}, [("a", "b")], True),
        (
            PAIR,
            [("a", "b"), ["c", "d"], {"text_a": "e", "text_b": "f"}],
            {},
            [("a", "b"), ("c", "d"), ("e", "f")],
            False,
        ),
        (QUESTION_CONTEXT, None, {"question": "who", "context": "bob"}, [("who", "bob")], True),
        (
            QUESTION_CONTEXT,
            None,
            {"question": ["q1", "q2"], "context": ["c1", "c2"]},
            [("q1", "c1"), ("q2", "c2")],
            False,
        ),
        (QUESTION_CONTEXT, {"question": "who", "context": "bob"}, {}, [("who", "bob")], True),
        (QUESTION_CONTEXT, [{"question": "who", "context": "bob"}], {}, [("who", "bob")], False),
    ],
    ids=lambda value: getattr(value, "name", None),
)
def test_builtin_kinds_turn_call_inputs_into_items(kind, inputs, keywords, items, single):
    assert kind.items_from_call(inputs, keywords) == (items, single)


@pytest.mark.parametrize(
    ("kind", "inputs", "keywords", "error", "facts"),
    [
        (TEXT, ["ok", 3], {}, TypeError, ["Input 1", "int", "takes strings"]),
        (TEXT, None, {}, TypeError, ["texts must be", "NoneType"]),
        (PAIR, "one string", {}, TypeError, ["one string", "(text_a, text_b)"]),
        (PAIR, ("a", "b", "c"), {}, TypeError, ["tuple of 3 strings", "exactly two"]),
        (PAIR, [("a", 1)], {}, TypeError, ["Input 0", "text pairs"]),
        (QUESTION_CONTEXT, "who?", {}, TypeError, ["one string", "question=", "context="]),
        (QUESTION_CONTEXT, None, {"question": "who"}, TypeError, ["needs a question and a context"]),
        (QUESTION_CONTEXT, None, {"question": ["a", "b"], "context": ["c"]}, ValueError, ["2 questions", "1 contexts"]),
        (QUESTION_CONTEXT, {"question": "q"}, {"context": "c"}, TypeError, ["either question=/context= or"]),
        (QUESTION_CONTEXT, [{"question": 1, "context": "c"}], {}, TypeError, ["Input 0", "'question': str"]),
    ],
)
def test_builtin_kinds_refuse_what_they_do_not_take_and_say_what_they_do(kind, inputs, keywords, error, facts):
    with pytest.raises(error) as caught:
        kind.items_from_call(inputs, keywords)
    for fact in facts:
        assert fact in str(caught.value), (fact, str(caught.value))


# -- rows (files, training examples) ---------------------------------------------------------------------
class _PairRow(BaseModel):
    text_a: str
    text_b: str
    label: str = "x"


@pytest.mark.parametrize(
    ("kind", "row", "item"),
    [
        (TEXT, {"text": "a film", "label": "pos"}, "a film"),
        (PAIR, _PairRow(text_a="a", text_b="b"), ("a", "b")),
        (PAIR, {"text_a": "a", "text_b": "b"}, ("a", "b")),
        (QUESTION_CONTEXT, {"question": "who", "context": "bob", "id": 7}, ("who", "bob")),
    ],
)
def test_items_from_rows_take_the_kinds_fields(kind, row, item):
    assert kind.item_from_row(row, "rows.jsonl line 1") == item


@pytest.mark.parametrize(
    ("kind", "row", "facts"),
    [
        (
            PAIR,
            {"text_a": "a", "txt_b": "b"},
            ["rows.jsonl line 3", "no column(s) text_b", "the row has text_a, txt_b"],
        ),
        (TEXT, {"text": 5}, ["rows.jsonl line 3", "text is the number 5, not a string", '"5"']),
        (QUESTION_CONTEXT, {"question": None, "context": "c"}, ["rows.jsonl line 3", "question is null"]),
        (TEXT, {"text": ["a"]}, ["text is a list"]),
    ],
)
def test_a_row_without_the_kinds_texts_is_an_error_naming_where_and_what(kind, row, facts):
    with pytest.raises(ValueError) as caught:
        kind.item_from_row(row, "rows.jsonl line 3")
    for fact in facts:
        assert fact in str(caught.value), (fact, str(caught.value))


# -- packing, stride, decode keywords ---------------------------------------------------------------------
def test_text_and_pair_packing_is_the_tokenizers_with_the_longest_text_trimmed_first(tokenizer):
    texts = ["the film was great", " ".join(WORDS)]
    expected = tokenizer.encode(texts, max_length=8, truncation="longest_first")
    assert np.array_equal(TEXT.model_inputs(TEXT.encode(tokenizer, texts, 8))["input_ids"], expected.input_ids)
    pairs = [("the film", "was great"), (" ".join(WORDS), "bob")]
    packed = PAIR.encode(tokenizer, pairs, 8)
    reference = tokenizer.encode([a for a, _ in pairs], [b for _, b in pairs], max_length=8, truncation="longest_first")
    assert np.array_equal(packed.input_ids, reference.input_ids)
    assert packed.input_ids.shape == (2, 8) and TEXT.stride(8) == PAIR.stride(8) == 0


@pytest.mark.parametrize(
    ("max_length", "requested", "stride"),
    [(384, None, 96), (512, None, 128), (16, None, 4), (384, 128, 128), (16, 128, 8), (16, 0, 0)],
)
def test_the_qa_stride_rule(max_length, requested, stride):
    """Default a quarter of the window; a requested stride is capped at half the window."""
    assert QUESTION_CONTEXT.stride(max_length, requested) == stride


@pytest.mark.parametrize("bad", [-1, 1.5, True, "8"])
def test_a_bad_stride_is_an_error_saying_what_a_stride_is(bad):
    with pytest.raises(ValueError, match="stride must be a non-negative integer"):
        QUESTION_CONTEXT.stride(64, bad)


def test_the_default_stride_leaves_room_for_a_long_question(tokenizer):
    long_question = " ".join(["cat"] * 20)  # 20 tokens: 64 - 3 - 20 = 41 tokens of room, so at most 20 of overlap
    assert QUESTION_CONTEXT.batch_stride(tokenizer, [("who", "bob")], 64) == 16
    assert QUESTION_CONTEXT.batch_stride(tokenizer, [(long_question, "bob"), ("who", "bob")], 64) == 16
    longer = " ".join(["cat"] * 40)  # 40 tokens: 21 tokens of room -> 10
    assert QUESTION_CONTEXT.batch_stride(tokenizer, [(longer, "bob")], 64) == 10
    assert QUESTION_CONTEXT.batch_stride(tokenizer, [(longer, "bob")], 64, requested=12) == 12


def _qa_model(tokenizer: DistilBertTokenizer) -> DistilBertTaskModel:
    encoder = _encoder(tokenizer)
    head = QASpanHead(encoder.config.hidden_size, "question_answering", name="qa")
    return DistilBertTaskModel(encoder, [head], tokenizer=tokenizer, max_length=24)


def test_training_and_the_pipeline_window_contexts_with_one_stride(tokenizer, monkeypatch):
    """The QA head's encode_examples (training) and the pipeline call the tokenizer with the same stride."""
    context = " ".join(WORDS * 2) + " alice"
    example = QAExample(
        question="who", context=context, answers={"text": ["alice"], "answer_start": [context.index("alice")]}
    )
    strides: list[int] = []
    encode = DistilBertTokenizer.encode

    def spy(self, *args, **kwargs):
        if kwargs.get("return_overflowing"):
            strides.append(kwargs["stride"])
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(DistilBertTokenizer, "encode", spy)
    model = _qa_model(tokenizer)
    with pytest.warns(UserWarning, match=r"stride=6\)"):
        model.heads["qa"].encode_examples([example], tokenizer, max_length=24)
    predict_examples(model, [example], max_length=24)
    pipeline(model, max_length=24)(question="who", context=context)
    assert strides == [24 // 4] * 3


def test_decode_gets_the_texts_under_the_kinds_keywords():
    assert TEXT.decode_context(["a", "b"]) == {"texts": ["a", "b"]}
    assert PAIR.decode_context([("a", "b")]) == {"pairs": [("a", "b")]}
    assert QUESTION_CONTEXT.decode_context([("q1", "c1"), ("q2", "c2")]) == {
        "questions": ["q1", "q2"],
        "contexts": ["c1", "c2"],
    }
    assert {kind.name: kind.decode_keywords for kind in BUILTIN_KINDS.values()} == {
        "text": ("texts",),
        "pair": ("pairs",),
        "question_context": ("questions", "contexts"),
    }


def test_length_key_sorts_by_a_bounded_prefix_and_qa_counts_the_whole_context():
    long = "word " * 10_000
    assert TEXT.length_key(long, 8) == TEXT.length_key(long + long, 8)  # past the prefix, length changes nothing
    assert TEXT.length_key("a b", 8) < TEXT.length_key("a b c", 8)
    assert QUESTION_CONTEXT.length_key(("q", long), 8) < QUESTION_CONTEXT.length_key(("q", long + long), 8)


# -- 0.1 string kinds ---------------------------------------------------------------------------------------
class _StringKindHead(TaskHead):
    task_types: ClassVar[tuple[str, ...]] = ("test_string_kind",)
    output_names: ClassVar[tuple[str, ...]] = ("logits",)
    input_kind = "pair"

    def __init__(self, hidden_size: int, task_type: str = "test_string_kind", options: Any = None, **kwargs: Any):
        super().__init__(hidden_size, task_type, options, **kwargs)
        self.dense = keras.layers.Dense(2, name="dense")

    def call(self, hidden_states: Any, attention_mask: Any, training: bool | None = None) -> dict[str, Any]:
        return {"logits": self.dense(hidden_states[:, 0, :])}

    def decode(self, outputs: Any, encoding: Any = None, *, pairs: Any = None) -> list[Any]:
        return [{"pair": list(pair), "rows": len(encoding)} for pair in pairs]


def test_a_01_string_input_kind_resolves_to_the_builtin_kind(tokenizer):
    assert input_kind_of(_StringKindHead) is PAIR
    assert input_kind_of(type("Bare", (), {})) is TEXT  # no input_kind at all: text, as in 0.1
    encoder = _encoder(tokenizer)
    model = DistilBertTaskModel(
        encoder, [_StringKindHead(encoder.config.hidden_size, name="pairs")], tokenizer=tokenizer
    )
    assert pipeline(model)([("the film", "was great")]) == [{"pair": ["the film", "was great"], "rows": 1}]


@pytest.mark.parametrize("kind", ["qa", "Text", "", 3])
def test_an_unknown_input_kind_is_an_error_naming_the_head_and_the_builtin_kinds(tokenizer, kind):
    encoder = _encoder(tokenizer)
    head = _StringKindHead(encoder.config.hidden_size, name="odd_head")
    head.input_kind = kind
    model = DistilBertTaskModel(encoder, [head], tokenizer=tokenizer)
    for failing in (lambda: input_kind_of(head), lambda: pipeline(model)):
        with pytest.raises(ValueError) as caught:
            failing()
        message = str(caught.value)
        for fact in (
            "_StringKindHead",
            "'odd_head'",
            repr(kind),
            "'text'",
            "'pair'",
            "'question_context'",
            "InputKind",
        ):
            assert fact in message, (fact, message)


# -- chance level is the head's business -------------------------------------------------------------------
def test_chance_level_comes_from_the_head_and_heads_without_it_get_no_check(tokenizer):
    qa = _qa_model(tokenizer).heads["qa"]
    context = "alice lives in paris"
    examples = [QAExample(question="who", context=context, answers={"text": ["alice"], "answer_start": [0]})] * 4
    assert chance_predictions(qa, examples) == qa.chance_predictions(examples, seed=0)
    wrong = [{"answer": "paris", "score": 1.0, "start": 15, "end": 20}] * 4
    warning = chance_level_warning(qa, examples, wrong, {"f1": 0.0, "exact_match": 0.0})
    assert warning is not None and "a random 1-3 word span of the context" in warning
    head = _StringKindHead(32, name="no_chance")
    head.evaluate = lambda examples, predictions: {"accuracy": 0.0}
    assert chance_predictions(head, examples) is None
    assert chance_level_warning(head, examples, wrong, {"accuracy": 0.0}) is None


# -- a plugin's own kind: several encoder rows per example ----------------------------------------------------
PLUGIN_SOURCE = textwrap.dedent(
    '''
    import keras
    import numpy as np
    from keras import ops

    from distilbert_heads import TaskHead, hookimpl
    from distilbert_heads.plugins.input_kinds import InputKind


    class ChoicesKind(InputKind):
        """A context and two candidate answers: one encoder row per (context, candidate), (B, 2, L)."""

        name = "test_choices"
        fields = ("context", "choices")
        decode_keywords = ("contexts", "choices")
        description = "a context and two candidates"
        rows_per_example = 2

        def items_from_call(self, inputs, keywords):
            if isinstance(inputs, tuple):
                return [self.item_from_row({"context": inputs[0], "choices": inputs[1]}, "input 0")], True
            rows = [{"context": context, "choices": choices} for context, choices in inputs]
            return [self.item_from_row(row, f"input {i}") for i, row in enumerate(rows)], False

        def item_from_row(self, row, where):
            context, choices = (row[f] if isinstance(row, dict) else getattr(row, f) for f in self.fields)
            choices = tuple(choices.split("|") if isinstance(choices, str) else choices)
            if len(choices) != 2:
                raise ValueError(f"{where}: choices must be two candidates, got {len(choices)}")
            return (context, choices)

        def encode(self, tokenizer, items, max_length, *, stride=None):
            firsts = [context for context, choices in items for _ in choices]
            seconds = [choice for _, choices in items for choice in choices]
            return tokenizer.encode(firsts, seconds, max_length=max_length)

        def model_inputs(self, encoding):
            return {k: v.reshape(-1, 2, v.shape[-1]) for k, v in encoding.as_model_inputs().items()}

        def show(self, item):
            return f"{item[0]} -> {' | '.join(item[1])}"


    class ChoiceHead(TaskHead):
        task_types = ("{task}",)
        output_names = ("logits",)
        input_kind = ChoicesKind()

        def __init__(self, hidden_size, task_type="{task}", options=None, **kwargs):
            super().__init__(hidden_size, task_type, options, **kwargs)
            self.score = keras.layers.Dense(1, name="score")

        def build(self, input_shape=None):
            self.score.build((None, self.hidden_size))
            self.built = True

        def call(self, hidden_states, attention_mask, training=None):
            return {{"logits": ops.squeeze(self.score(hidden_states[:, :, 0, :]), -1)}}

        def default_losses(self):
            return {{"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}}

        def decode(self, outputs, encoding=None, *, contexts=None, choices=None):
            logits = np.asarray(outputs["logits"])
            return [
                {{"choice": choices[i][int(np.argmax(row))], "context": contexts[i], "logits": row.tolist()}}
                for i, row in enumerate(logits)
            ]


    @hookimpl
    def register_heads(register):
        register(ChoiceHead)
    '''
)


@pytest.fixture
def choice_plugin(tmp_path, monkeypatch):
    """An installed throwaway plugin distribution whose head has its own input kind."""
    site = tmp_path / "site"
    site.mkdir()
    module = f"choice_plugin_{uuid.uuid4().hex[:8]}"
    task = f"test_choice_{uuid.uuid4().hex[:6]}"
    (site / f"{module}.py").write_text(PLUGIN_SOURCE.replace("{task}", task).replace("{{", "{").replace("}}", "}"))
    info = site / "distilbert_head_choice-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: distilbert-head-choice\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[distilbert_heads]\n{task} = {module}\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    reset_registry()
    yield importlib.import_module(module)
    reset_registry()


def _choice_model(plugin: Any, tokenizer: DistilBertTokenizer) -> DistilBertTaskModel:
    keras.utils.set_random_seed(0)
    encoder = _encoder(tokenizer)
    head = plugin.ChoiceHead(encoder.config.hidden_size, name="choice")
    return DistilBertTaskModel(encoder, [head], tokenizer=tokenizer, max_length=32)


ITEMS = [
    ("the cat sat", ("red", "blue")),
    ("alice lives in paris", ("the capital of france", "a river")),
    ("bob ran", ("dog", "cat sat")),
]


def test_n_rows_per_example_fit_save_reload_and_equal_each_row_run_alone(choice_plugin, tokenizer, tmp_path):
    model = _choice_model(choice_plugin, tokenizer)
    kind = input_kind_of(model.heads["choice"])
    x = kind.model_inputs(kind.encode(tokenizer, ITEMS, 32))
    assert x["input_ids"].shape[:2] == (3, 2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, {"choice": {"logits": np.array([0, 0, 1])}}, epochs=2, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()

    logits = keras.ops.convert_to_numpy(model(x, training=False)["choice"]["logits"])
    assert logits.shape == (3, 2)
    for row in range(2):  # each candidate's rows through the plain (B, L) path, one at a time
        alone = {key: value[:, row] for key, value in x.items()}
        hidden = model.encoder(alone, training=False)["last_hidden_state"]
        expected = keras.ops.convert_to_numpy(model.heads["choice"].score(hidden[:, 0, :]))[:, 0]
        np.testing.assert_allclose(logits[:, row], expected, atol=1e-6)

    path = tmp_path / "choice.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(x, training=False)["choice"]["logits"]), logits, atol=1e-6
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded.predict_on_batch(x)["choice"]["logits"]), logits, atol=1e-6
    )


@pytest.mark.parametrize(
    ("change", "facts"),
    [
        (lambda x: {**x, "input_ids": np.where(x["input_ids"] > 0, 999, 0)}, ["input_ids", "999", "vocab_size"]),
        (lambda x: {**x, "attention_mask": x["attention_mask"] * 2}, ["attention_mask", "0 and 1"]),
        (lambda x: {**x, "attention_mask": x["attention_mask"][:, :1]}, ["attention_mask has shape", "input_ids"]),
        (lambda x: {key: value[:, :, None] for key, value in x.items()}, ["input_ids must have shape"]),
    ],
    ids=["id-out-of-vocab", "mask-not-binary", "mask-other-shape", "rank-4"],
)
def test_rows_per_example_inputs_get_the_encoders_checks(choice_plugin, tokenizer, change, facts):
    model = _choice_model(choice_plugin, tokenizer)
    kind = input_kind_of(model.heads["choice"])
    x = change(kind.model_inputs(kind.encode(tokenizer, ITEMS, 32)))
    for run in (model.predict_on_batch, lambda inputs: model(inputs)):
        with pytest.raises(ValueError) as caught:
            run(x)
        for fact in facts:
            assert fact in str(caught.value), (fact, str(caught.value))


def test_a_plugin_kind_flows_through_pipeline_and_cli_flags_with_no_core_change(
    choice_plugin, tokenizer, tmp_path, capsys
):
    model = _choice_model(choice_plugin, tokenizer)
    pipe = pipeline(model, batch_size=2)
    answers = pipe([(context, list(choices)) for context, choices in ITEMS])
    kind = input_kind_of(model.heads["choice"])
    x = kind.model_inputs(kind.encode(tokenizer, ITEMS, 32))
    direct = keras.ops.convert_to_numpy(model(x)["choice"]["logits"])
    assert [answer["context"] for answer in answers] == [context for context, _ in ITEMS]
    np.testing.assert_allclose([answer["logits"] for answer in answers], direct, atol=1e-5)
    single = pipe(ITEMS[0])  # one example in: one answer out (padded to its own length, so logits ~equal)
    assert single["context"] == ITEMS[0][0] and np.allclose(single["logits"], answers[0]["logits"], atol=1e-5)

    path = tmp_path / "choice.keras"
    model.save(path)
    capsys.readouterr()
    assert main(["predict", "--model", str(path), "--context", "bob ran", "--choices", "dog|cat sat", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"input": "bob ran -> dog | cat sat"' in out and '"choice": "' in out

    assert main(["predict", "--model", str(path), "--text", "bob ran"]) == 2
    err = capsys.readouterr().err
    for fact in ("--context CONTEXT --choices CHOICES", "input_kind 'test_choices'", "--text does not apply"):
        assert fact in err, (fact, err)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"context": "bob ran", "choices": ["dog", "cat sat"]}\n{"context": "x", "choices": ["a"]}\n')
    assert main(["predict", "--model", str(path), "--input", str(rows)]) == 2
    assert "rows.jsonl line 2: choices must be two candidates, got 1" in capsys.readouterr().err


def test_the_cli_derives_builtin_flags_from_the_kinds_fields():
    from distilbert_heads.cli import field_flag

    assert {kind.name: tuple(map(field_flag, kind.fields)) for kind in BUILTIN_KINDS.values()} == {
        "text": ("--text",),
        "pair": ("--text-a", "--text-b"),
        "question_context": ("--question", "--context"),
    }
