"""Task vocabulary (`NLPTaskType`) and the user-facing task description (`NLPTaskConfig`).

`NLPTaskType` is a `str` enum: a member and its string value are interchangeable, and
plugins may serve task types that are not members at all (any lowercase string such as
``"foo"``). `NLPTaskConfig` keeps the original README's fields; anything a head needs
beyond them goes in ``options`` (or as extra keywords) and is validated by that head's own
pydantic schema when the head is built.
"""

from __future__ import annotations

import enum
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TASK_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_\-\.]*$")
MAX_TASK_TYPE_LENGTH = 100  # a name, shown in listings and error messages; none comes close


class NLPTaskType(str, enum.Enum):
    """The task names heads are keyed by. `NLPTaskType("ner")` style aliases live in the registry."""

    TOKEN_CLASSIFICATION = "token_classification"
    NAMED_ENTITY_RECOGNITION = "named_entity_recognition"
    PART_OF_SPEECH_TAGGING = "part_of_speech_tagging"
    DEPENDENCY_PARSING = "dependency_parsing"
    SEMANTIC_ROLE_LABELING = "semantic_role_labeling"
    WORD_SENSE_DISAMBIGUATION = "word_sense_disambiguation"
    TEXT_CLASSIFICATION = "text_classification"
    SENTIMENT_ANALYSIS = "sentiment_analysis"
    EMOTION_DETECTION = "emotion_detection"
    INTENT_CLASSIFICATION = "intent_classification"
    TOPIC_CLASSIFICATION = "topic_classification"
    SPAM_DETECTION = "spam_detection"
    QUESTION_ANSWERING = "question_answering"
    SPAN_EXTRACTION = "span_extraction"
    COREFERENCE_RESOLUTION = "coreference_resolution"
    EVENT_EXTRACTION = "event_extraction"
    RELATION_EXTRACTION = "relation_extraction"
    TEXT_SIMILARITY = "text_similarity"
    NATURAL_LANGUAGE_INFERENCE = "natural_language_inference"
    PARAPHRASE_DETECTION = "paraphrase_detection"
    DUPLICATE_DETECTION = "duplicate_detection"
    TEXT_GENERATION = "text_generation"
    MASKED_LANGUAGE_MODELING = "masked_language_modeling"
    TEXT_SUMMARIZATION = "text_summarization"
    MACHINE_TRANSLATION = "machine_translation"
    TEXT_COMPLETION = "text_completion"
    DIALOGUE_GENERATION = "dialogue_generation"
    TEXT_REGRESSION = "text_regression"
    READABILITY_SCORING = "readability_scoring"
    QUALITY_SCORING = "quality_scoring"
    MULTIPLE_CHOICE = "multiple_choice"
    RANKING = "ranking"
    SEQUENCE_LABELING = "sequence_labeling"
    TEXT_MATCHING = "text_matching"
    KEY_PHRASE_EXTRACTION = "key_phrase_extraction"
    FACT_EXTRACTION = "fact_extraction"
    OPINION_EXTRACTION = "opinion_extraction"

    def __str__(self) -> str:
        return self.value


def normalize_task_type(task_type: str | NLPTaskType) -> str:
    """Return the plain string key for a task type, checking its spelling.

    Members become their value; strings are stripped and lowercased. Raises `ValueError`
    for anything that cannot be a task type key.
    """
    if isinstance(task_type, NLPTaskType):
        return task_type.value
    if not isinstance(task_type, str):
        raise TypeError(
            f"task_type must be an NLPTaskType member or a string, got {type(task_type).__name__} "
            f"{task_type!r}. Pass e.g. NLPTaskType.SENTIMENT_ANALYSIS or 'sentiment_analysis'."
        )
    key = task_type.strip().lower()
    if len(key) > MAX_TASK_TYPE_LENGTH:
        raise ValueError(
            f"task_type {key[:40]!r}... is {len(key):,} characters long; a task type name has at most "
            f"{MAX_TASK_TYPE_LENGTH} (for example 'sentiment_analysis' or 'foo')."
        )
    if not TASK_TYPE_PATTERN.match(key):
        raise ValueError(
            f"task_type {task_type!r} is not a valid task type name: expected lowercase letters, "
            "digits, '_', '-' or '.', starting with a letter (for example 'sentiment_analysis' or 'foo')."
        )
    return key


# Fields of NLPTaskConfig that describe the task or the composite model rather than one head;
# everything else that the user set is handed to the head's options schema.
TASK_LEVEL_FIELDS = frozenset({"name", "task_type", "loss_weight", "hidden_size", "max_length", "options"})


class NLPTaskConfig(BaseModel):
    """One task to attach to the encoder, in the original README's vocabulary.

    Only the fields you set are passed on to the head; a field the chosen head does not
    support (say ``use_crf=True`` on the sentiment head) is an error naming that head.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True, validate_assignment=True)

    name: str | None = Field(default=None, description="Head name; outputs are keyed by it.")
    task_type: str = Field(description="An NLPTaskType member, its value, an alias or a plugin's task type.")
    num_classes: int | None = Field(default=None, alias="num_labels", ge=1)
    labels: list[str] | None = Field(default=None, description="Class (or tag) names, index order.")
    max_length: int | None = Field(default=None, ge=1)
    dropout_rate: float | None = Field(default=None, ge=0.0, lt=1.0)
    hidden_size: int | None = Field(default=None, ge=1)
    loss_weight: float = Field(default=1.0, ge=0.0)
    label_smoothing: float | None = Field(default=None, ge=0.0, lt=1.0)
    use_crf: bool | None = None
    use_attention_pooling: bool | None = None
    vocabulary_size: int | None = Field(default=None, ge=1)
    beam_size: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, gt=0.0)
    options: dict[str, Any] = Field(default_factory=dict, description="Head-specific options.")

    @field_validator("task_type", mode="before")
    @classmethod
    def _task_type_key(cls, value: Any) -> str:
        return normalize_task_type(value)

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
            raise ValueError(
                f"name {value!r} must be a Python-identifier-like string (letters, digits, '_'), "
                "because model outputs and saved weights are keyed by it"
            )
        return value

    @model_validator(mode="after")
    def _labels_match_classes(self) -> NLPTaskConfig:
        if self.labels is not None and self.num_classes is not None and len(self.labels) != self.num_classes:
            raise ValueError(
                f"labels has {len(self.labels)} names but num_classes is {self.num_classes}; "
                "give one name per class or drop num_classes to infer it from labels"
            )
        return self

    def head_options(self) -> dict[str, Any]:
        """The options to validate against the head's schema: every field set except task-level ones."""
        chosen = {
            key: getattr(self, key)
            for key in self.model_fields_set
            if key not in TASK_LEVEL_FIELDS and key in type(self).model_fields
        }
        chosen.update(self.model_extra or {})
        chosen.update(self.options)
        return chosen
