"""What a training run is told and what it gives back: defaults, settings checked up front, the result, the errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distilbert_heads.text.tokenizer import DistilBertTokenizer

DEFAULT_LEARNING_RATE_PRETRAINED = 5e-5


DEFAULT_LEARNING_RATE_SCRATCH = 1e-3


DEFAULT_VOCAB_SIZE = 2000


class TrainingError(ValueError):
    """A problem with what was asked (task, files, model, options), explained for the user."""


class ChanceLevelWarning(UserWarning):
    """Training ended with the model scoring no better than guessing (see `chance_level_warning`)."""


class TrainSettings(BaseModel):
    """`train`'s numeric settings, checked before any file is read or model built."""

    model_config = ConfigDict(strict=True)

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float | None = Field(gt=0, allow_inf_nan=False)
    max_length: int = Field(ge=3)
    token_dropout: float = Field(ge=0.0, lt=1.0, allow_inf_nan=False)
    patience: int = Field(ge=0)


# What each setting means, for its message (the CLI flag is the name with dashes).
_SETTING_ADVICE = {
    "epochs": "passes over the training rows: 1 or more",
    "batch_size": "examples per step: 1 or more",
    "learning_rate": "Adam's step size: a positive finite number such as 1e-3 from scratch or 5e-5 to fine-tune",
    "max_length": "tokens per row, special tokens included: at least 3 ([CLS], one token, [SEP])",
    "token_dropout": "the probability of replacing a token by [UNK]: from 0 (off) up to, not including, 1",
    "patience": "epochs without improvement before stopping early: 0 (never stop early) or more",
}


def check_train_settings(**settings: Any) -> TrainSettings:
    """`TrainSettings` from ``settings``, or one `TrainingError` naming every bad one, its flag and what it means."""
    try:
        return TrainSettings(**settings)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            name = str(item["loc"][0])
            problems.append(
                f"{name} (--{name.replace('_', '-')}) is {item['input']!r}; expected {_SETTING_ADVICE[name]}"
            )
        raise TrainingError("Bad training settings: " + "; ".join(problems) + ".") from None


@dataclass
class TrainResult:
    """What `train` returns: the trained model, its final metrics, the Keras history and the saved path.

    ``metrics`` are on the eval file when one was given, else on the training file
    (``metrics_split`` says which): the head's `evaluate` metrics, or ``{"loss": ...}`` for a head
    without ``evaluate``. ``history`` is Keras' per-epoch logs, plus ``val_<metric>``
    for each of the head's metrics when there was an eval file. ``warnings`` holds what
    `train` also issued as Python warnings (e.g. a `ChanceLevelWarning`).
    """

    model: Any
    metrics: dict[str, float]
    history: dict[str, list[float]]
    path: Path | None
    tokenizer: DistilBertTokenizer
    metrics_split: str = "eval"
    epochs_run: int = 0
    best_epoch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
