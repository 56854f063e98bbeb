"""What a training run is told and what it gives back: defaults, settings checked up front, the result, the errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distilbert_heads.text.tokenizer import DistilBertTokenizer
from distilbert_heads.training.defaults import (  # noqa: F401  (also importable from here, as before)
    DEFAULT_CLIP_NORM,
    DEFAULT_LEARNING_RATE_PRETRAINED,
    DEFAULT_LEARNING_RATE_SCRATCH,
    DEFAULT_VOCAB_SIZE,
    DEFAULT_WEIGHT_DECAY,
    PRECISIONS,
    SCHEDULES,
)


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
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    weight_decay: float = Field(default=DEFAULT_WEIGHT_DECAY, ge=0.0, allow_inf_nan=False)
    warmup_ratio: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    warmup_steps: int | None = Field(default=None, ge=0)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    clip_norm: float | None = Field(default=DEFAULT_CLIP_NORM, ge=0.0, allow_inf_nan=False)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    precision: Literal["float32", "mixed_bfloat16"] = "float32"
    checkpoint_every: int | None = Field(default=None, ge=1)


# What each setting means, for its message (the CLI flag is the name with dashes).
_SETTING_ADVICE = {
    "epochs": "passes over the training rows: 1 or more",
    "batch_size": "examples per step: 1 or more",
    "learning_rate": "AdamW's peak step size: a positive finite number such as 1e-3 from scratch or 5e-5 to fine-tune",
    "max_length": "tokens per row, special tokens included: at least 3 ([CLS], one token, [SEP])",
    "token_dropout": "the probability of replacing a token by [UNK]: from 0 (off) up to, not including, 1",
    "patience": "epochs without improvement before stopping early: 0 (never stop early) or more",
    "seed": "an integer from 0 to 2**32 - 1, or None for an unseeded run",
    "weight_decay": "AdamW's decoupled weight decay: 0 (off) or a positive finite number such as 0.01",
    "warmup_ratio": "the fraction of the optimizer steps spent warming up: from 0.0 to 1.0",
    "warmup_steps": "optimizer steps spent warming up (overrides warmup_ratio): 0 or more",
    "schedule": f"one of {', '.join(SCHEDULES)}",
    "clip_norm": "the largest global gradient norm: a positive number such as 1.0, or 0 or None (no clipping)",
    "gradient_accumulation_steps": "batches whose gradients are averaged into one optimizer step: 1 or more",
    "precision": f"one of {', '.join(PRECISIONS)}",
    "checkpoint_every": "training steps (batches) between checkpoints: 1 or more, or None (only at epoch ends)",
}

# Settings whose command-line flag is not the name with dashes.
_SETTING_FLAGS = {"gradient_accumulation_steps": "--grad-accum"}


def check_train_settings(**settings: Any) -> TrainSettings:
    """`TrainSettings` from ``settings``, or one `TrainingError` naming every bad one, its flag and what it means."""
    try:
        return TrainSettings(**settings)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            name = str(item["loc"][0])
            flag = _SETTING_FLAGS.get(name, "--" + name.replace("_", "-"))
            problems.append(f"{name} ({flag}) is {item['input']!r}; expected {_SETTING_ADVICE[name]}")
        raise TrainingError("Bad training settings: " + "; ".join(problems) + ".") from None


@dataclass
class TrainResult:
    """What `train` returns: the trained model, its final metrics, the Keras history and the saved path.

    ``metrics`` are on the eval file when one was given, else on the training file
    (``metrics_split`` says which): the head's `evaluate` metrics, or ``{"loss": ...}`` for a head
    without ``evaluate``. ``history`` is Keras' per-epoch logs, plus ``val_<metric>``
    for each of the head's metrics when there was an eval file. ``checkpoint_dir`` is where the
    run's checkpoints and ``best.keras`` are (None without checkpointing). ``warnings`` holds what
    `train` also issued as Python warnings (e.g. a `ChanceLevelWarning`). ``seed`` is the run's seed (the one
    given, or the one drawn for an unseeded run); ``epoch_seconds`` each epoch's training time (its steps, not
    the held-out scoring); ``skipped_rows`` counts, per file, the rows ``skip_invalid``
    left out, each of which is in ``skipped_file``.
    """

    model: Any
    metrics: dict[str, float]
    history: dict[str, list[float]]
    path: Path | None
    tokenizer: DistilBertTokenizer
    metrics_split: str = "eval"
    epochs_run: int = 0
    best_epoch: int | None = None
    checkpoint_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seed: int | None = None
    epoch_seconds: list[float] = field(default_factory=list)
    skipped_rows: dict[str, int] = field(default_factory=dict)
    skipped_file: Path | None = None
