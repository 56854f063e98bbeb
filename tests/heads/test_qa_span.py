"""The extractive QA span head: build, data, decode, HF parity."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from head_checks import (
    CASE_FIELDS,
    HF_CASE_FIELDS,
    HF_DIM,
    MASK,
    B,
    D,
    L,
    case_ids,
    check_builds_weights_before_first_call,
    check_checkpoint_without_head_keeps_initialisation,
    check_config_round_trip_gives_identical_outputs,
    check_hf_head_weights_round_trip,
    check_loss_decreases_when_training,
    check_output_names_and_shapes,
    hf_case_ids,
    hf_model_with_lively_head,
    hidden,
    numpy_outputs,
    run_both,
    write_csv,
)
from helpers import assert_mentions, demo_rows

from distilbert_heads.demo.datasets import data_path
from distilbert_heads.heads.qa_span import QAExample, QASpanHead
from distilbert_heads.plugins.head import HeadOptionsError
from distilbert_heads.training.data_files import DataFileError, read_examples

CASES = [(QASpanHead, "question_answering", {}, {"start_logits": (B, L), "end_logits": (B, L)})]
HF_CASES = [("DistilBertForQuestionAnswering", QASpanHead, "question_answering", {}, ("qa_outputs",))]
each_case = pytest.mark.parametrize(CASE_FIELDS, CASES, ids=case_ids(CASES))
each_hf_case = pytest.mark.parametrize(HF_CASE_FIELDS, HF_CASES, ids=hf_case_ids(HF_CASES))


# -- build ------------------------------------------------------------------------------------
@each_case
def test_output_names_and_shapes(cls, task_type, options, shapes):
    check_output_names_and_shapes(cls, task_type, options, shapes)


@each_case
def test_builds_weights_before_first_call(cls, task_type, options, shapes):
    check_builds_weights_before_first_call(cls, task_type, options)


@each_case
def test_config_round_trip_gives_identical_outputs(cls, task_type, options, shapes):
    check_config_round_trip_gives_identical_outputs(cls, task_type, options)


def span_labels(head, states: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """An answer that starts where hidden feature 0 peaks (within the unpadded 5) and ends one later."""
    start = states[:, :5, 0].argmax(-1).astype("int32")
    return {"start_logits": start, "end_logits": np.minimum(start + 1, 4).astype("int32")}


@each_case
def test_loss_decreases_when_training(cls, task_type, options, shapes):
    check_loss_decreases_when_training(cls, task_type, options, span_labels)


def test_option_values_are_validated():
    with pytest.raises(HeadOptionsError, match="max_answer_length"):
        QASpanHead(D, "question_answering", {"max_answer_length": 0})


def test_qa_padding_never_wins():
    head = QASpanHead(D, "question_answering")
    head.build((None, None, D))
    kernel = np.zeros((D, 2), dtype="float32")
    kernel[0, 0] = kernel[1, 1] = 1.0  # start logit = hidden[..., 0], end logit = hidden[..., 1]
    head.qa_outputs.set_weights([kernel, np.zeros(2, dtype="float32")])
    states = hidden()
    states[1, 5:, :2] = 1000.0  # padded positions of example 1 would win by far
    outputs = numpy_outputs(head(states, MASK))
    np.testing.assert_allclose(outputs["start_logits"][0], states[0, :, 0], rtol=1e-6)
    np.testing.assert_allclose(outputs["start_logits"][1, :5], states[1, :5, 0], rtol=1e-6)
    assert (outputs["start_logits"][1, 5:] <= -1e8).all() and (outputs["end_logits"][1, 5:] <= -1e8).all()
    span = head.decode(outputs)[1]
    assert 0 <= span["start"] <= span["end"] < 5


# -- data -------------------------------------------------------------------------------------
def test_schema_accepts_demo_file():
    examples = read_examples(data_path("qa", "train"), QASpanHead.example_schema, "qa")
    assert len(examples) == 480
    assert isinstance(examples[0], QAExample)


def test_csv_rows_equal_jsonl_rows(tmp_path):
    rows = demo_rows("qa", 20)
    path = write_csv(
        tmp_path / "q.csv",
        ["question", "context", "answer_text", "answer_start"],
        [[r["question"], r["context"], r["answers"]["text"][0], r["answers"]["answer_start"][0]] for r in rows],
    )
    assert read_examples(path, QAExample) == [QAExample(**r) for r in rows]


@pytest.mark.parametrize(
    ("row", "facts"),
    [
        (
            ["Who?", "Ada wrote it.", "Ada", "2"],
            ["line 2", "'Ada' does not match the context", "answer_start=2", "reads 'a w'", "it occurs at [0]"],
        ),
        (["Who?", "Ada wrote it.", "Ada", "x"], ["line 2", "answer_start 'x' is not an integer"]),
    ],
)
def test_bad_csv_rows_name_the_line(tmp_path, row, facts):
    path = write_csv(tmp_path / "bad.csv", ["question", "context", "answer_text", "answer_start"], [row])
    with pytest.raises(DataFileError) as info:
        read_examples(path, QAExample)
    assert_mentions(info, *facts)


def test_bad_jsonl_rows_name_the_line(tmp_path):
    good = {"question": "Who?", "context": "Ada wrote it.", "answers": {"text": ["Ada"], "answer_start": [0]}}
    empty = {**good, "answers": {"text": [], "answer_start": []}}
    (tmp_path / "q.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(empty) + "\n")
    with pytest.raises(DataFileError) as info:
        read_examples(tmp_path / "q.jsonl", QAExample)
    assert_mentions(info, "line 2", "does not support unanswerable")


def test_options_from_examples():
    assert QASpanHead.options_from_examples(read_examples(data_path("qa", "train"), QAExample)) == {}


def _answer_from_labels(tokenizer, inputs, labels, example, row):
    """The context characters that the token labels of ``row`` point at."""
    encoding = tokenizer.encode([example.question], [example.context])
    ids = [i for i in inputs["input_ids"][row] if i != tokenizer.pad_token_id]
    assert ids == encoding.input_ids[0].tolist()
    start, end = int(labels["start_logits"][row]), int(labels["end_logits"][row])
    assert encoding.sequence_ids[0][start] == encoding.sequence_ids[0][end] == 1
    return example.context[encoding.offsets[0][start][0] : encoding.offsets[0][end][1]]


def test_qa_token_positions_map_back_to_the_answer(demo_tokenizer):
    examples = read_examples(data_path("qa", "train"), QAExample)[:16]
    head = QASpanHead(D, "qa")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # short contexts: nothing is dropped, nothing to warn about
        inputs, labels = head.encode_examples(examples, demo_tokenizer, max_length=96)
    assert inputs["input_ids"].shape[0] == 16 and inputs["input_ids"].shape[1] < 96
    assert labels["start_logits"].dtype == np.int32
    for row, example in enumerate(examples):
        assert _answer_from_labels(demo_tokenizer, inputs, labels, example, row) == example.answers.text[0]


def test_qa_long_contexts_keep_windows_with_the_answer(demo_tokenizer):
    filler = " ".join(["the movie was great"] * 12)
    context = f"{filler} Marie Curie founded Hooli in 1984. {filler}"
    answer = "Marie Curie"
    example = QAExample(
        question="Who founded Hooli?",
        context=context,
        answers={"text": [answer], "answer_start": [context.index(answer)]},
    )
    head = QASpanHead(D, "qa")
    with pytest.warns(UserWarning) as caught:
        inputs, labels = head.encode_examples([example], demo_tokenizer, max_length=24, stride=4)
    message = " ".join(str(w.message) for w in caught)
    for fact in (r"dropped \d+ of \d+ windows", r"stride=4\)", "that do not hold their whole answer", "0 of 1"):
        assert re.search(fact, message), (fact, message)
    assert 1 <= len(labels["start_logits"]) and inputs["input_ids"].shape[1] <= 24
    windows = demo_tokenizer.encode(
        [example.question], [context], max_length=24, truncation="only_second", stride=4, return_overflowing=True
    )
    kept = [
        r
        for r in range(len(windows))
        if windows.input_ids[r].tolist()[: inputs["input_ids"].shape[1]]
        in [row.tolist() for row in inputs["input_ids"]]
    ]
    for i, row in enumerate(kept):
        start, end = int(labels["start_logits"][i]), int(labels["end_logits"][i])
        assert context[windows.offsets[row][start][0] : windows.offsets[row][end][1]] == answer
    # An answer longer than any window cannot be kept: a clear error, not an empty training set.
    with pytest.raises(ValueError, match="No example kept its answer"):
        long = QAExample(question="What?", context=filler, answers={"text": [filler], "answer_start": [0]})
        head.encode_examples([long], demo_tokenizer, max_length=12, stride=2)


# -- decode and evaluate ----------------------------------------------------------------------
def test_qa_decode_picks_best_legal_span():
    neg = -1e9
    # Unconstrained best pair is start=4, end=1 (end before start): illegal.
    start = np.array([[0.0, 1.0, 0.0, 0.0, 10.0, neg]], dtype="float32")
    end = np.array([[0.0, 10.0, 2.0, 0.0, 0.0, neg]], dtype="float32")
    head = QASpanHead(D, "question_answering")
    best = head.decode({"start_logits": start, "end_logits": end})[0]
    assert (best["start"], best["end"]) == (1, 1)

    def softmax(x):
        e = np.exp(x[:5] - x[:5].max())
        return e / e.sum()

    assert best["score"] == pytest.approx(softmax(start[0])[1] * softmax(end[0])[1], rel=1e-5)
    # Outside the context (position 1 is question), the next best legal span is (4, 4).
    context = np.array([[0, 0, 1, 1, 1, 1]])
    assert head.decode({"start_logits": start, "end_logits": end}, context_mask=context)[0]["start"] == 4
    # Length limit: start=0, end=4 is best but 5 tokens long.
    start2 = np.array([[9.0, 0.0, 0.0, 0.0, 0.0, 1.0]], dtype="float32")
    end2 = np.array([[0.0, 1.0, 0.0, 0.0, 9.0, 0.0]], dtype="float32")
    short = QASpanHead(D, "qa", {"max_answer_length": 3}).decode({"start_logits": start2, "end_logits": end2})[0]
    assert (short["start"], short["end"]) == (0, 1)
    assert head.decode({"start_logits": start2, "end_logits": end2})[0]["end"] == 4
    # Answer text from offsets.
    text = "who? Paris is big"
    offsets = [[(0, 0), (0, 4), (5, 10), (11, 13), (14, 17), (0, 0)]]
    answered = head.decode(
        {"start_logits": start, "end_logits": end}, {"offsets": offsets, "text": [text], "context_mask": context}
    )[0]
    assert answered["answer"] == "big" and (answered["char_start"], answered["char_end"]) == (14, 17)
    nothing = head.decode({"start_logits": start, "end_logits": end}, context_mask=np.zeros((1, 6)))[0]
    assert nothing == {"start": None, "end": None, "score": 0.0}


LONG_CONTEXT = "a b c d e f g h a b c d marie curie founded hooli in a b c d e f"


def qa_logits(encoding, context, answer_start, answer_end):
    """Logits high at the answer's first and last context token, wherever a window holds them."""
    n, width = encoding.input_ids.shape
    start = np.zeros((n, width), "float32")
    end = np.zeros((n, width), "float32")
    for row in range(n):
        for j, (s, e) in enumerate(encoding.offsets[row]):
            if encoding.sequence_ids[row][j] != 1:
                continue
            if s == answer_start:
                start[row, j] = 8.0
            if e == answer_end:
                end[row, j] = 8.0
    return start, end


def test_qa_answer_crossing_a_window_edge_is_found_whole(handmade_tokenizer):
    question = "who founded hooli ?"
    answer = "marie curie founded hooli"
    char_start = LONG_CONTEXT.index(answer)
    char_end = char_start + len(answer)
    encoding = handmade_tokenizer.encode(
        [question], [LONG_CONTEXT], max_length=12, truncation="only_second", stride=2, return_overflowing=True
    )
    ends_by_row = [
        {e for (s, e), q in zip(encoding.offsets[r], encoding.sequence_ids[r]) if q == 1} for r in range(len(encoding))
    ]
    starts_by_row = [
        {s for (s, e), q in zip(encoding.offsets[r], encoding.sequence_ids[r]) if q == 1} for r in range(len(encoding))
    ]
    # Some window holds "marie" but not "curie": the answer crosses its edge.
    assert any(char_start in s and char_end not in e for s, e in zip(starts_by_row, ends_by_row))
    start, end = qa_logits(encoding, LONG_CONTEXT, char_start, char_end)
    # Illegal spans with huge logits: the question and special tokens, padding, end before start.
    for row in range(len(encoding)):
        for j, sequence in enumerate(encoding.sequence_ids[row]):
            if sequence != 1:
                start[row, j] = end[row, j] = 50.0
    head = QASpanHead(D, "qa")
    answers = head.decode(
        {"start_logits": start, "end_logits": end}, encoding, questions=[question], contexts=[LONG_CONTEXT]
    )
    assert answers == [
        {"answer": answer, "score": pytest.approx(answers[0]["score"]), "start": char_start, "end": char_end}
    ]
    assert LONG_CONTEXT[answers[0]["start"] : answers[0]["end"]] == answers[0]["answer"]
    assert 0.0 < answers[0]["score"] <= 1.0


def test_qa_never_picks_illegal_spans(handmade_tokenizer):
    question, context = "who ?", "Marie Curie founded Hooli in a b c"
    encoding = handmade_tokenizer.encode([question], [context])
    tokens = encoding.tokens[0]
    assert tokens[:4] == ["[CLS]", "who", "?", "[SEP]"]
    position = {token: j for j, token in enumerate(tokens) if encoding.sequence_ids[0][j] == 1}
    head = QASpanHead(D, "qa", {"max_answer_length": 3})

    def decode(starts: dict, ends: dict, head=head):
        start = np.zeros((1, len(tokens)), "float32")
        end = np.zeros((1, len(tokens)), "float32")
        start[0, :4] = end[0, :4] = 40.0  # question and special tokens: never legal
        start[0, -1] = end[0, -1] = 40.0  # the final [SEP]
        for token, value in starts.items():
            start[0, position[token]] = value
        for token, value in ends.items():
            end[0, position[token]] = value
        return head.decode(
            {"start_logits": start, "end_logits": end}, encoding, questions=[question], contexts=[context]
        )[0]

    answer = decode({"founded": 10.0}, {"hooli": 10.0})
    assert (answer["answer"], answer["start"], answer["end"]) == ("founded Hooli", 12, 25)
    # End before start: hooli -> curie scores 60 but is illegal; marie -> curie (35) beats hooli -> hooli (30).
    assert decode({"hooli": 30.0, "marie": 5.0}, {"curie": 30.0})["answer"] == "Marie Curie"
    # Too long: marie -> c (8 tokens) exceeds max_answer_length=3, founded -> hooli (22) wins.
    assert decode({"marie": 20.0, "founded": 10.0}, {"c": 20.0, "hooli": 12.0})["answer"] == "founded Hooli"
    # With a wider limit the long span wins; it is cut from the context, not from lowercased tokens.
    wide = QASpanHead(D, "qa", {"max_answer_length": 30})
    assert (
        decode({"marie": 20.0, "founded": 10.0}, {"c": 20.0, "hooli": 12.0}, head=wide)["answer"]
        == "Marie Curie founded Hooli in a b c"
    )
    assert decode({}, {}, head=wide)["start"] >= 0  # even flat logits give a span inside the context


def test_qa_several_questions_and_no_legal_span(handmade_tokenizer):
    questions, contexts = ["who ?", "who ?"], ["Marie Curie founded Hooli", "a b c d e f g h a b c d"]
    encoding = handmade_tokenizer.encode(
        questions, contexts, max_length=8, truncation="only_second", stride=1, return_overflowing=True
    )
    start, end = np.zeros(encoding.input_ids.shape, "float32"), np.zeros(encoding.input_ids.shape, "float32")
    rows = [r for r, s in enumerate(encoding.overflow_to_sample) if s == 0]
    for row in rows:
        for j, (s, e) in enumerate(encoding.offsets[row]):
            if encoding.sequence_ids[row][j] == 1 and s == 0:
                start[row, j] = 9.0
            if encoding.sequence_ids[row][j] == 1 and e == 11:
                end[row, j] = 9.0
    answers = QASpanHead(D, "qa").decode(
        {"start_logits": start, "end_logits": end}, encoding, questions=questions, contexts=contexts
    )
    assert answers[0]["answer"] == "Marie Curie" and len(answers) == 2
    padded_out = {"start_logits": np.full_like(start, -1e9), "end_logits": np.full_like(end, -1e9)}
    assert QASpanHead(D, "qa").decode(padded_out, encoding, questions=questions, contexts=contexts)[1] == {
        "answer": "",
        "score": 0.0,
        "start": None,
        "end": None,
    }


def test_qa_evaluate_squad_numbers():
    examples = [
        QAExample(
            question="q",
            context="It was Marie Curie.",
            answers={"text": ["Marie Curie", "Curie"], "answer_start": [7, 13]},
        ),
        QAExample(question="q", context="In 1984 it began.", answers={"text": ["1984"], "answer_start": [3]}),
    ]
    predictions = [
        {"answer": "the Curie", "score": 0.5, "start": 0, "end": 1},
        {"answer": "1984 it", "score": 0.4, "start": 3, "end": 10},
    ]
    scores = QASpanHead(D, "qa").evaluate(examples, predictions)
    # "the Curie" normalises to "curie" (exact for the 2nd answer); "1984 it": precision 1/2, recall 1 -> 2/3
    assert scores == {"exact_match": pytest.approx(0.5), "f1": pytest.approx((1.0 + 2 / 3) / 2)}


# -- Hugging Face parity ----------------------------------------------------------------------
@each_hf_case
def test_logits_match_transformers(model_class, head_cls, task_type, options, prefixes):
    _, _, mask, reference, ours = run_both(model_class, head_cls, task_type, options, prefixes)
    keep = mask.astype(bool)
    for name in ("start_logits", "end_logits"):
        expected = getattr(reference, name).numpy()
        np.testing.assert_allclose(ours[name][keep], expected[keep], atol=1e-5, rtol=0)
        assert (ours[name][~keep] <= -1e8).all()  # padding masked, documented difference
    assert np.abs(reference.start_logits.numpy()).max() > 0.1


@each_hf_case
def test_hf_head_weights_round_trip(model_class, head_cls, task_type, options, prefixes):
    check_hf_head_weights_round_trip(model_class, head_cls, task_type, options, prefixes)


@each_hf_case
def test_checkpoint_without_head_keeps_initialisation(model_class, head_cls, task_type, options, prefixes):
    check_checkpoint_without_head_keeps_initialisation(head_cls, task_type, options)


def test_torch_tensors_are_accepted():
    pytest.importorskip("torch")
    model = hf_model_with_lively_head("DistilBertForQuestionAnswering", 2, ("qa_outputs",))
    head = QASpanHead(HF_DIM, "qa")
    assert head.load_hf_head_weights(model.state_dict()) is True
    np.testing.assert_array_equal(head.hf_head_weights()["qa_outputs.bias"], model.qa_outputs.bias.detach().numpy())
