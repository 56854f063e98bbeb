"""`NLPTaskType` vocabulary and `NLPTaskConfig` validation."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from distilbert_heads.tasks import NLPTaskConfig, NLPTaskType, normalize_task_type

# The vocabulary from the issue, in its order.
ISSUE_VOCABULARY = """
token_classification named_entity_recognition part_of_speech_tagging dependency_parsing
semantic_role_labeling word_sense_disambiguation text_classification sentiment_analysis
emotion_detection intent_classification topic_classification spam_detection question_answering
span_extraction coreference_resolution event_extraction relation_extraction text_similarity
natural_language_inference paraphrase_detection duplicate_detection text_generation
masked_language_modeling text_summarization machine_translation text_completion
dialogue_generation text_regression readability_scoring quality_scoring multiple_choice ranking
sequence_labeling text_matching key_phrase_extraction fact_extraction opinion_extraction
""".split()


def test_vocabulary_is_exactly_the_issue_list():
    assert [member.value for member in NLPTaskType] == ISSUE_VOCABULARY
    assert all(member.name == member.value.upper() for member in NLPTaskType)


@pytest.mark.parametrize("member", list(NLPTaskType))
def test_member_and_string_are_interchangeable(member):
    assert member == member.value
    assert isinstance(member, str)
    assert str(member) == member.value and f"{member}" == member.value
    assert NLPTaskType(member.value) is member
    assert hash(member) == hash(member.value)
    assert {member.value: 1}[member] == 1
    assert normalize_task_type(member) == normalize_task_type(member.value) == member.value
    assert json.dumps(member) == json.dumps(member.value)


def test_normalize_accepts_plugin_strings_and_rejects_bad_names():
    assert normalize_task_type("  Foo ") == "foo"
    assert normalize_task_type("my-plugin.task_2") == "my-plugin.task_2"
    with pytest.raises(ValueError, match="not a valid task type name"):
        normalize_task_type("two words")
    with pytest.raises(ValueError, match="not a valid task type name"):
        normalize_task_type("")
    with pytest.raises(TypeError, match="NLPTaskType member or a string"):
        normalize_task_type(3)  # type: ignore[arg-type]


def test_config_task_type_from_member_or_string():
    by_member = NLPTaskConfig(task_type=NLPTaskType.SENTIMENT_ANALYSIS)
    by_string = NLPTaskConfig(task_type="Sentiment_Analysis")
    assert by_member.task_type == by_string.task_type == "sentiment_analysis"
    assert by_member.task_type == NLPTaskType.SENTIMENT_ANALYSIS
    assert NLPTaskConfig(task_type="foo").task_type == "foo"


def test_num_labels_is_an_alias_of_num_classes():
    assert NLPTaskConfig(task_type="ner", num_labels=9).num_classes == 9
    assert NLPTaskConfig(task_type="ner", num_classes=9).num_classes == 9
    with pytest.raises(ValidationError):
        NLPTaskConfig(task_type="ner", num_labels=0)


def test_labels_length_must_match_num_classes():
    with pytest.raises(ValidationError, match="labels has 2 names but num_classes is 3"):
        NLPTaskConfig(task_type="sentiment", num_classes=3, labels=["neg", "pos"])
    config = NLPTaskConfig(task_type="sentiment", num_classes=2, labels=["neg", "pos"])
    assert config.labels == ["neg", "pos"]


@pytest.mark.parametrize(
    "field,value",
    [("dropout_rate", 1.0), ("dropout_rate", -0.1), ("loss_weight", -1.0), ("temperature", 0.0), ("max_length", 0)],
)
def test_field_ranges_are_validated(field, value):
    with pytest.raises(ValidationError, match=field):
        NLPTaskConfig(task_type="sentiment", **{field: value})


def test_name_must_be_an_identifier():
    assert NLPTaskConfig(task_type="ner", name="ner_head").name == "ner_head"
    with pytest.raises(ValidationError, match="identifier"):
        NLPTaskConfig(task_type="ner", name="my head")


def test_head_options_are_set_head_fields_plus_extras_and_options():
    config = NLPTaskConfig(
        name="sent",
        task_type="sentiment",
        num_labels=3,
        labels=["neg", "neu", "pos"],
        dropout_rate=0.2,
        loss_weight=2.0,
        max_length=64,
        hidden_size=32,
        pooling="mean",
        options={"threshold": 0.5},
    )
    assert config.head_options() == {
        "num_classes": 3,
        "labels": ["neg", "neu", "pos"],
        "dropout_rate": 0.2,
        "pooling": "mean",
        "threshold": 0.5,
    }
    # Nothing set beyond the task type: nothing for the head, not a dict full of None defaults.
    assert NLPTaskConfig(task_type="sentiment").head_options() == {}
    # A field explicitly set to its default still counts as set.
    assert NLPTaskConfig(task_type="ner", use_crf=None).head_options() == {"use_crf": None}
