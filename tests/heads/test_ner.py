"""The NER (token classification) head: build, data, decode, HF parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
from head_checks import (
    CASE_FIELDS,
    HF_CASE_FIELDS,
    HF_DIM,
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
    numpy_state_dict,
    run_both,
    softmax,
    write_csv,
)
from helpers import assert_mentions, demo_rows

from distilbert_heads.demo.datasets import data_path
from distilbert_heads.heads.ner import CONLL_LABELS, NerExample, NerHead, group_entities
from distilbert_heads.plugins.head import HeadOptionsError
from distilbert_heads.training.data_files import DataFileError, read_examples

CASES = [(NerHead, "named_entity_recognition", {}, {"logits": (B, L, 9)})]
HF_CASES = [("DistilBertForTokenClassification", NerHead, "ner", {"num_classes": 5}, ("classifier",))]
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


def token_labels(head, states: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """A tag per token from the hidden state; [CLS] and padding are -100."""
    tags = states[..., :3].argmax(-1).astype("int32")
    tags[:, 0] = -100
    tags[mask == 0] = -100
    return {"logits": tags}


@each_case
def test_loss_decreases_when_training(cls, task_type, options, shapes):
    check_loss_decreases_when_training(cls, task_type, options, token_labels)


def test_option_values_are_validated():
    with pytest.raises(HeadOptionsError, match="duplicate"):
        NerHead(D, "ner", {"labels": ["O", "O"]})


def test_ner_defaults_to_conll_tags():
    head = NerHead(D, "ner")
    assert head.class_names == CONLL_LABELS
    assert NerHead(D, "ner", {"num_classes": 5}).class_names == [f"LABEL_{i}" for i in range(5)]


# -- data -------------------------------------------------------------------------------------
def test_schema_accepts_demo_file():
    examples = read_examples(data_path("ner", "train"), NerHead.example_schema, "ner")
    assert len(examples) == 480
    assert isinstance(examples[0], NerExample)


def test_csv_rows_equal_jsonl_rows(tmp_path):
    rows = demo_rows("ner", 20)
    path = write_csv(
        tmp_path / "n.csv", ["tokens", "tags"], [[" ".join(r["tokens"]), " ".join(r["tags"])] for r in rows]
    )
    from_csv = read_examples(path, NerExample)
    assert from_csv == [NerExample(**r) for r in rows]
    assert from_csv[0].text == " ".join(rows[0]["tokens"])


def test_ner_span_rows_from_jsonl_and_csv(tmp_path):
    text = "Ada Lovelace visited Paris, then Acme Corp."
    entities = [
        {"start": 0, "end": 12, "label": "PER"},
        {"start": 21, "end": 26, "label": "LOC"},
        {"start": 33, "end": 42, "label": "ORG"},
    ]
    (tmp_path / "n.jsonl").write_text(json.dumps({"text": text, "entities": entities}) + "\n", encoding="utf-8")
    path = write_csv(tmp_path / "n.csv", ["text", "entities"], [[text, json.dumps(entities)]])
    from_jsonl, from_csv = read_examples(tmp_path / "n.jsonl", NerExample), read_examples(path, NerExample)
    assert from_jsonl == from_csv
    assert from_csv[0].gold_entities() == {("PER", 0, 12), ("LOC", 21, 26), ("ORG", 33, 42)}


@pytest.mark.parametrize(
    ("header", "rows", "facts"),
    [
        (
            ["tokens", "tags"],
            [["a b", "O O"], ["a b c", "O O"]],
            ["line 3", "tokens has 3 words", "tags has 2", "give exactly one tag per word"],
        ),
        (["tokens", "tags"], [["a b", ""]], ["line 2", "tags is missing"]),
        (
            ["text", "entities"],
            [["Ada", '[{"start": 0, "end": 9, "label": "PER"}]']],
            ["line 2", "entity PER", "start=0, end=9", "the text has 3 characters"],
        ),
        (
            ["text", "entities"],
            [["Ada", '[{"start": 0, "end": 3, "label": "B-PER"}]']],
            ["line 2", "B-/I- prefix", "give the type alone"],
        ),
        (["text", "entities"], [["Ada", "[{oops"]], ["line 2", "entities must be a JSON list"]),
    ],
)
def test_bad_csv_rows_name_the_line(tmp_path, header, rows, facts):
    path = write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(DataFileError) as info:
        read_examples(path, NerExample)
    assert_mentions(info, *facts)


def test_bad_jsonl_rows_name_the_line(tmp_path):
    (tmp_path / "n.jsonl").write_text('{"tokens": ["a"], "tags": ["O"]}\n{"words": ["a"]}\n')
    with pytest.raises(DataFileError) as info:
        read_examples(tmp_path / "n.jsonl", NerExample)
    assert_mentions(info, "line 2", "needs tokens + tags", "or text + entities")


def test_options_from_examples():
    ner = [
        NerExample(tokens=["a", "b", "c"], tags=["B-PER", "O", "B-LOC"]),
        NerExample(text="x y", entities=[{"start": 0, "end": 1, "label": "ORG"}]),
    ]
    assert NerHead.options_from_examples(ner) == {"labels": ["O", "B-PER", "B-LOC", "B-ORG", "I-ORG", "I-PER", "I-LOC"]}
    demo = read_examples(data_path("ner", "train"), NerExample)
    labels = NerHead.options_from_examples(demo)["labels"]
    assert labels[0] == "O" and sorted(labels) == sorted(
        ["O", *(f"{p}-{t}" for p in "BI" for t in ("PER", "LOC", "ORG"))]
    )


def test_ner_labels_on_first_sub_token_only(demo_tokenizer):
    example = NerExample(
        tokens=["Barbara", "McClintock", "visited", "U.S.", "."], tags=["B-PER", "I-PER", "O", "B-LOC", "O"]
    )
    head = NerHead(D, "ner", {"labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]})
    paris = NerExample(tokens=["Paris"], tags=["B-LOC"])
    inputs, labels = head.encode_examples([example, paris], demo_tokenizer, 32)
    tokens = demo_tokenizer.encode([example.text]).tokens[0]
    assert tokens == ["[CLS]", "barbara", "mc", "##cl", "##int", "##ock", "visited", "u", ".", "s", ".", ".", "[SEP]"]
    names = head.class_names
    got = [names[i] if i >= 0 else i for i in labels["logits"][0][: len(tokens)]]
    # Specials and ## continuations get -100; the tokenizer's extra words inside "U.S." continue its entity.
    assert got == [-100, "B-PER", "I-PER", -100, -100, -100, "O", "B-LOC", "I-LOC", "I-LOC", "I-LOC", "O", -100]
    assert labels["logits"].shape == inputs["input_ids"].shape == (2, len(tokens))
    assert (labels["logits"][1][inputs["attention_mask"][1] == 0] == -100).all()  # padding
    # Without I-LOC the extra pieces are skipped (-100), never an error.
    plain = NerHead(D, "ner", {"labels": ["O", "B-PER", "I-PER", "B-LOC"]})
    row = plain.encode_examples([example], demo_tokenizer, 32)[1]["logits"][0]
    assert row[7] == plain.class_names.index("B-LOC") and (row[8:11] == -100).all()


def test_ner_span_rows_label_like_word_rows(demo_tokenizer):
    words = NerExample(
        tokens=["Ada", "Lovelace", "moved", "to", "New", "York", "."],
        tags=["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"],
    )
    spans = NerExample(
        text="Ada Lovelace moved to New York.",
        entities=[{"start": 0, "end": 12, "label": "PER"}, {"start": 22, "end": 30, "label": "LOC"}],
    )
    head = NerHead(D, "ner", NerHead.options_from_examples([words, spans]))
    _, from_words = head.encode_examples([words], demo_tokenizer, 32)
    _, from_spans = head.encode_examples([spans], demo_tokenizer, 32)
    np.testing.assert_array_equal(from_words["logits"], from_spans["logits"])
    assert (
        spans.gold_entities() == {(t, s, e) for t, s, e in words.gold_entities()} == {("PER", 0, 12), ("LOC", 22, 30)}
    )


def test_ner_warns_when_an_entity_starts_inside_a_word(demo_tokenizer):
    example = NerExample(text="Lovelace moved", entities=[{"start": 4, "end": 8, "label": "PER"}])
    head = NerHead(D, "ner", {"labels": ["O", "B-PER", "I-PER"]})
    with pytest.warns(UserWarning, match="1 entity start inside a word"):
        head.encode_examples([example], demo_tokenizer, 16)


# -- decode and evaluate ----------------------------------------------------------------------
def test_ner_decode_groups_bio_entities():
    text = "John Smith lives in New York"
    # [CLS] John Smith lives in New Yo ##rk [SEP] [PAD]
    offsets = [(0, 0), (0, 4), (5, 10), (11, 16), (17, 19), (20, 23), (24, 26), (26, 28), (0, 0), (0, 0)]
    word_ids = [None, 0, 1, 2, 3, 4, 5, 5, None, None]
    tags = ["O", "B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O", "O", "O"]
    head = NerHead(D, "ner")
    logits = np.zeros((1, len(tags), 9), dtype="float32")
    for i, tag in enumerate(tags):
        logits[0, i, CONLL_LABELS.index(tag)] = 5.0 + i * 0.1
    mask = np.array([[1] * 9 + [0]])
    decoded = head.decode(
        {"logits": logits}, {"offsets": [offsets], "text": [text], "word_ids": [word_ids], "attention_mask": mask}
    )[0]
    assert decoded["tags"] == tags[:9]
    probs = np.exp(logits[0]) / np.exp(logits[0]).sum(-1, keepdims=True)
    assert decoded["scores"] == pytest.approx(list(probs.max(-1)[:9]))
    entities = decoded["entities"]
    assert [(e["entity"], e["word"], e["start"], e["end"]) for e in entities] == [
        ("PER", "John Smith", 0, 10),
        ("LOC", "New York", 20, 28),  # the ##rk continuation extends the span, its own tag ignored
    ]
    assert entities[0]["score"] == pytest.approx(probs.max(-1)[1:3].mean())
    assert "entities" not in head.decode({"logits": logits})[0]


def test_group_entities_bio_edge_cases():
    text = "a b c d e"
    offsets = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    scores = [1.0] * 5
    # B-PER B-PER: two entities; I-ORG after PER (IOB1 style) starts a new ORG; O closes.
    got = group_entities(["B-PER", "B-PER", "I-ORG", "I-ORG", "O"], scores, offsets, text)
    assert [(e["entity"], e["word"]) for e in got] == [("PER", "a"), ("PER", "b"), ("ORG", "c d")]
    # IO scheme (no prefixes): consecutive same tags merge.
    got = group_entities(["LOC", "LOC", "O", "PER", "LOC"], scores, offsets, text)
    assert [(e["entity"], e["word"]) for e in got] == [("LOC", "a b"), ("PER", "d"), ("LOC", "e")]


def ner_logits(encoding, tag_of_token, labels) -> np.ndarray:
    """Logits whose argmax is ``tag_of_token(row, j)``; scores vary by position so means are checkable."""
    logits = np.zeros((*encoding.input_ids.shape, len(labels)), dtype="float32")
    for row in range(len(encoding)):
        for j in range(encoding.input_ids.shape[1]):
            logits[row, j, labels.index(tag_of_token(row, j))] = 3.0 + 0.1 * j
    return logits


def test_ner_merges_sub_words_with_char_spans_on_multibyte_text(handmade_tokenizer):
    text = "Zoë Åström visited 東京"
    encoding = handmade_tokenizer.encode([text])
    assert encoding.tokens[0] == ["[CLS]", "zoe", "as", "##tr", "##om", "visited", "東", "京", "[SEP]"]
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    # The ## pieces are predicted O and B-LOC on purpose: a word's tag is its first sub-token's.
    tags = ["O", "B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC", "I-LOC", "B-PER"]
    logits = ner_logits(encoding, lambda row, j: tags[j], labels)
    entities = NerHead(D, "ner", {"labels": labels}).decode({"logits": logits}, encoding, texts=[text])[0]
    assert [(e["entity"], e["start"], e["end"], e["word"]) for e in entities] == [
        ("PER", 0, 10, "Zoë Åström"),
        ("LOC", 19, 21, "東京"),
    ]
    for entity in entities:
        assert entity["word"] == text[entity["start"] : entity["end"]]
    probs = softmax(logits[0]).max(-1)
    assert entities[0]["score"] == pytest.approx(np.mean([probs[1], probs[2]]))  # first sub-token of each word
    assert set(entities[0]) == {"entity", "score", "start", "end", "word"}


def test_ner_one_list_per_text_and_empty_text(handmade_tokenizer):
    texts = ["Zoë visited 東京", "", "visited"]
    encoding = handmade_tokenizer.encode(texts)
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]

    def tag(row, j):
        token = encoding.tokens[row][j]
        return {"zoe": "B-PER", "東": "B-LOC", "京": "I-LOC"}.get(token, "O")

    answers = NerHead(D, "ner", {"labels": labels}).decode(
        {"logits": ner_logits(encoding, tag, labels)}, encoding, texts=texts
    )
    assert [[(e["entity"], e["word"]) for e in row] for row in answers] == [[("PER", "Zoë"), ("LOC", "東京")], [], []]


def test_ner_windows_of_a_long_text_are_stitched(handmade_tokenizer):
    text = "a b Zoë Åström c d e f 東京 g h"
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    by_token = {"zoe": "B-PER", "as": "I-PER", "東": "B-LOC", "京": "I-LOC"}
    head = NerHead(D, "ner", {"labels": labels})
    whole = handmade_tokenizer.encode([text])
    windows = handmade_tokenizer.encode([text], max_length=6, stride=2, return_overflowing=True)
    assert len(windows) > 3

    def decode(encoding):
        logits = ner_logits(encoding, lambda r, j: by_token.get(encoding.tokens[r][j], "O"), labels)
        return head.decode({"logits": logits}, encoding, texts=[text])[0]

    expected = [("PER", "Zoë Åström"), ("LOC", "東京")]
    assert [(e["entity"], e["word"]) for e in decode(whole)] == expected
    assert [(e["entity"], e["word"]) for e in decode(windows)] == expected  # the PER entity crosses a window edge


def test_ner_without_texts_keeps_per_token_tags():
    logits = np.zeros((2, 3, 9), "float32")
    answers = NerHead(D, "ner").decode({"logits": logits})
    assert len(answers) == 2 and answers[0]["tags"] == ["O", "O", "O"]


def test_ner_evaluate_is_entity_level_on_char_spans():
    examples = [
        NerExample(
            tokens=["Ada", "Lovelace", "met", "Alan", "in", "Paris"],
            tags=["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC"],
        ),
        NerExample(text="Acme Corp hired Zoë.", entities=[{"start": 0, "end": 9, "label": "ORG"}]),
    ]
    predictions = [
        [
            {"entity": "PER", "start": 0, "end": 12, "word": "Ada Lovelace", "score": 0.9},  # right
            {"entity": "PER", "start": 17, "end": 21, "word": "Alan", "score": 0.9},  # right
            {"entity": "ORG", "start": 25, "end": 30, "word": "Paris", "score": 0.9},
        ],  # wrong type
        [
            {"entity": "ORG", "start": 0, "end": 4, "word": "Acme", "score": 0.9},  # wrong end
            {"entity": "PER", "start": 16, "end": 19, "word": "Zoë", "score": 0.9},
        ],  # not gold
    ]
    scores = NerHead(D, "ner").evaluate(examples, predictions)
    # tp 2, fp 3, fn 2
    assert scores == {"precision": pytest.approx(2 / 5), "recall": pytest.approx(2 / 4), "f1": pytest.approx(4 / 9)}


# -- Hugging Face parity ----------------------------------------------------------------------
@each_hf_case
def test_logits_match_transformers(model_class, head_cls, task_type, options, prefixes):
    _, _, mask, reference, ours = run_both(model_class, head_cls, task_type, options, prefixes)
    keep = mask.astype(bool)
    expected = reference.logits.numpy()
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(ours["logits"][keep], expected[keep], atol=1e-5, rtol=0)


@each_hf_case
def test_hf_head_weights_round_trip(model_class, head_cls, task_type, options, prefixes):
    check_hf_head_weights_round_trip(model_class, head_cls, task_type, options, prefixes)


@each_hf_case
def test_checkpoint_without_head_keeps_initialisation(model_class, head_cls, task_type, options, prefixes):
    check_checkpoint_without_head_keeps_initialisation(head_cls, task_type, options)


def test_token_head_ignores_sequence_classification_checkpoint():
    from hf_reference import make_hf_model  # optional torch: skips only this test when missing

    # Both have classifier.*, but the sequence head's classifier sits after a pre_classifier on [CLS].
    model = make_hf_model("DistilBertForSequenceClassification", num_labels=5)
    head = NerHead(HF_DIM, "ner", {"num_classes": 5})
    assert head.load_hf_head_weights(numpy_state_dict(model)) is False


def test_unbuilt_head_builds_and_loads():
    pytest.importorskip("torch")
    model = hf_model_with_lively_head("DistilBertForTokenClassification", 5, ("classifier",))
    head = NerHead(HF_DIM, "ner", {"num_classes": 5})
    assert head.load_hf_head_weights(numpy_state_dict(model)) is True
    np.testing.assert_array_equal(head.hf_head_weights()["classifier.weight"], model.classifier.weight.detach().numpy())
