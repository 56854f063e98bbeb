"""Train and evaluate a task model from JSONL/CSV files, for any head that implements the data contract.

`train` reads and validates the rows with the head's ``example_schema`` (a bad row fails with
its file and line number), takes the head's options (label names) from the training file,
builds or loads a tokenizer, builds the model through the factory, fits it with Keras
progress bars and early stopping on the head's own evaluation metric, and saves one ``.keras``
file with the tokenizer inside. `evaluate` scores a saved (or in-memory) model on a file with
the metrics people expect for the task (the head's ``evaluate`` on its decoded answers).

Learning rates: Adam with 5e-5 when fine-tuning a pretrained checkpoint (the usual BERT
fine-tuning rate) and 1e-3 when training from scratch (small random models learn far too
slowly at fine-tuning rates). Pass ``learning_rate`` to choose another.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distilbert_heads import atomic
from distilbert_heads import data as data_files
from distilbert_heads.head import TaskHead
from distilbert_heads.input_kinds import input_kind_of
from distilbert_heads.tokenizer import DistilBertTokenizer

__all__ = [
    "CHANCE_MARGIN",
    "DEFAULT_LEARNING_RATE_PRETRAINED",
    "DEFAULT_LEARNING_RATE_SCRATCH",
    "DEFAULT_VOCAB_SIZE",
    "ChanceLevelWarning",
    "HeadEvaluationCallback",
    "TokenDropoutBatches",
    "TrainResult",
    "TrainingError",
    "chance_level_warning",
    "chance_predictions",
    "evaluate",
    "example_items",
    "example_texts",
    "load_model",
    "predict_examples",
    "primary_metric",
    "read_task_examples",
    "train",
]

DEFAULT_LEARNING_RATE_PRETRAINED = 5e-5
DEFAULT_LEARNING_RATE_SCRATCH = 1e-3
DEFAULT_VOCAB_SIZE = 2000
# Which of a head's metrics early stopping watches, first match wins; otherwise the first one it returns.
PRIMARY_METRICS = ("f1", "entity_f1", "exact_match", "accuracy", "macro_f1", "micro_f1", "pearson", "spearman")
LOWER_IS_BETTER = frozenset({"mse", "mae", "rmse", "loss"})
# A final score within this of what guessing gets counts as chance level (the scores are fractions in [0, 1]).
CHANCE_MARGIN = 0.02
# Options that say what the labels are; when head_options gives one, the training file's labels are not used to infer them.
LABEL_OPTION_KEYS = ("labels", "num_classes")


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
    (``metrics_split`` says which). ``history`` is Keras' per-epoch logs, plus ``val_<metric>``
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


# -- reading data ------------------------------------------------------------------------------
def head_record(task: str) -> Any:
    """The registry record serving ``task`` (`UnknownTaskTypeError` lists what is installed)."""
    from distilbert_heads.registry import get_head

    return get_head(task)


def read_task_examples(path: str | os.PathLike, head_class: type[TaskHead], task: str) -> list[BaseModel]:
    """Every row of ``path`` validated by ``head_class.example_schema``."""
    schema = getattr(head_class, "example_schema", None)
    if schema is None:
        raise TrainingError(
            f"The {task!r} head ({head_class.__name__}) declares no example_schema, so it cannot train or evaluate "
            "from files. Train it in Python with model.fit, or ask its plugin's author to add the data contract."
        )
    return data_files.read_examples(path, schema, task=f"task {task!r}")


def _line_numbers(path: str | os.PathLike) -> list[int]:
    return [number for number, _ in data_files.read_rows(path)]


def _locate_bad_example(
    error: Exception, check: Callable[[int], Any], count: int, path: str | os.PathLike | None
) -> TrainingError:
    """Turn an error about a batch of examples into one that names the file line of the first bad row."""
    if path is None:
        return TrainingError(str(error))
    lines = _line_numbers(path)
    for index in range(count):
        try:
            check(index)
        except (ValueError, KeyError, IndexError, TypeError) as row_error:
            line = lines[index] if index < len(lines) else "?"
            message = _strip_example_prefix(str(row_error))
            return TrainingError(f"{Path(path).name} line {line}: {message}")
    return TrainingError(f"{Path(path).name}: {error}")


def _strip_example_prefix(message: str) -> str:
    # Heads say "example 0: ..." about the one-row batch we re-ran; the line number replaces it.
    head, sep, rest = message.partition(": ")
    return rest if sep and head.startswith("example ") else message


def encode_examples(
    head: TaskHead,
    examples: Sequence[BaseModel],
    tokenizer: DistilBertTokenizer,
    max_length: int,
    path: str | os.PathLike | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The head's `encode_examples`, with a failing row reported by its line in ``path``."""
    try:
        return head.encode_examples(examples, tokenizer, max_length)
    except (ValueError, KeyError, IndexError) as error:
        raise _locate_bad_example(
            error, lambda i: head.encode_examples([examples[i]], tokenizer, max_length), len(examples), path
        ) from None


def infer_options(
    head_class: type[TaskHead],
    examples: Sequence[BaseModel],
    task_type: str,
    *,
    given: Mapping[str, Any] | None = None,
    path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Options the training data implies (label names), passing ``task_type`` to heads that take it.

    When ``given`` (the caller's head options) sets ``labels`` or ``num_classes``, those say what
    the labels are and nothing is inferred. A head's complaint about the labels (one class, a
    fractional label for a classification task, ...) becomes a `TrainingError` naming the line
    of ``path`` when it is about one row (``"example <index>: ..."``).
    """
    if given and any(key in given for key in LABEL_OPTION_KEYS):
        return {}
    method = head_class.options_from_examples
    try:
        accepts_task = "task_type" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        accepts_task = False
    try:
        options = method(examples, task_type=task_type) if accepts_task else method(examples)
    except ValueError as error:
        raise _error_at_example_line(error, path) from None
    return dict(options or {})


def _error_at_example_line(error: Exception, path: str | os.PathLike | None) -> TrainingError:
    """``error`` as a `TrainingError`; an ``example <index>:`` prefix becomes the file and line of that row."""
    message = str(error)
    if path is None:
        return TrainingError(message)
    name = Path(path).name
    match = re.match(r"example (\d+): ", message)
    if match:
        lines = _line_numbers(path)
        index = int(match.group(1))
        line = lines[index] if index < len(lines) else "?"
        return TrainingError(f"{name} line {line}: {message[match.end() :]}")
    return TrainingError(f"{name}: {message}")


def numeric_class_note(options: Mapping[str, Any]) -> str | None:
    """A note when the inferred class names are all numbers (they are classes, not scores)."""
    names = options.get("labels") or []
    if not names or not all(re.fullmatch(r"-?\d+", str(name)) for name in names):
        return None
    return (
        f"note: the labels are numbers ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''}); they are read "
        f"as {len(names)} class names, so this trains a classifier. If they are scores to predict instead, train a "
        "regression task type (text_regression, or text_similarity for pairs)."
    )


def example_texts(examples: Sequence[BaseModel]) -> list[str]:
    """Every piece of text in the examples (string fields, and lists of strings joined by spaces).

    Schema-agnostic, so a vocabulary can be learnt for any plugin head's rows.
    """
    texts: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                collect(item)
        elif isinstance(value, (list, tuple)):
            if value and all(isinstance(item, str) for item in value):
                texts.append(" ".join(value))
            else:
                for item in value:
                    collect(item)

    for example in examples:
        collect(example.model_dump())
    return texts


# -- the model and its tokenizer ------------------------------------------------------------------
def load_model(model_or_path: Any) -> Any:
    """`model.load_task_model`, with its problems reported as `TrainingError` for the CLI."""
    from distilbert_heads.model import load_task_model

    try:
        return load_task_model(model_or_path)
    except (OSError, ValueError, TypeError) as error:
        raise TrainingError(str(error)) from error


def model_tokenizer(model: Any, tokenizer: DistilBertTokenizer | None = None) -> DistilBertTokenizer:
    """The tokenizer given, else the one saved inside the model, else a clear error."""
    found = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if found is None:
        raise TrainingError(
            "This model holds no tokenizer, so text cannot be turned into input ids. Train it with "
            "`distilbert-heads train` (which saves the tokenizer inside), or pass tokenizer=... explicitly."
        )
    return found


def select_head(model: Any, head: str | None = None) -> tuple[str, TaskHead]:
    """(name, head) of the model's only head, or of the head named ``head``."""
    heads = dict(model.heads)
    if head is None:
        if len(heads) != 1:
            raise TrainingError(f"The model has several heads {sorted(heads)}; say which one to use (head=...).")
        return next(iter(heads.items()))
    if head not in heads:
        raise TrainingError(f"The model has no head named {head!r}; its heads are {sorted(heads)}.")
    return head, heads[head]


def build_tokenizer(
    pretrained: str | os.PathLike | None,
    texts: Sequence[str],
    *,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    lowercase: bool = True,
    whole_words: bool = False,
) -> DistilBertTokenizer:
    """The checkpoint's tokenizer when ``pretrained`` names one, else a WordPiece vocab learnt on ``texts``."""
    if pretrained is not None:
        source = os.fspath(pretrained)
        if source.endswith(".keras"):
            return model_tokenizer(load_model(source))
        return DistilBertTokenizer.from_pretrained(source)
    return DistilBertTokenizer.train_from_texts(
        texts, vocab_size=vocab_size, lowercase=lowercase, whole_words=whole_words
    )


# -- predicting and scoring examples -----------------------------------------------------------------
def predict_examples(
    model: Any,
    examples: Sequence[BaseModel],
    *,
    head: str | None = None,
    tokenizer: DistilBertTokenizer | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
) -> list[Any]:
    """The head's decoded answers for the examples' inputs (through `distilbert_heads.pipeline`)."""
    from distilbert_heads.pipeline import pipeline

    head_name, task_head = select_head(model, head)
    pipe = pipeline(
        model,
        tokenizer=model_tokenizer(model, tokenizer),
        head=head_name,
        batch_size=batch_size,
        max_length=max_length,
        show_progress=False,
    )
    return pipe.predict_items(example_items(task_head, examples))


def example_items(head: TaskHead, examples: Sequence[BaseModel]) -> list[Any]:
    """The examples' inputs as the head's input kind defines them (`InputKind.item_from_row`)."""
    kind = input_kind_of(head)
    try:
        return [kind.item_from_row(example, f"example {index}") for index, example in enumerate(examples)]
    except ValueError as error:
        raise TrainingError(
            f"{type(head).__name__} has input_kind {kind.name!r} but its example rows do not hold its inputs "
            f"({error}). Its example_schema must have the fields {', '.join(kind.fields)}."
        ) from None


def score_examples(
    model: Any,
    examples: Sequence[BaseModel],
    *,
    head: str | None = None,
    tokenizer: DistilBertTokenizer | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    path: str | os.PathLike | None = None,
) -> dict[str, float]:
    """The head's metrics (its `evaluate`) of the model's answers on ``examples``."""
    _, task_head = select_head(model, head)
    predictions = predict_examples(
        model, examples, head=head, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length
    )
    return score_predictions(task_head, examples, predictions, path=path)


def score_predictions(
    task_head: TaskHead,
    examples: Sequence[BaseModel],
    predictions: Sequence[Any],
    *,
    path: str | os.PathLike | None = None,
) -> dict[str, float]:
    """The head's metrics (its `evaluate`) of ``predictions``; a failing row is reported by its line in ``path``."""
    try:
        scores = task_head.evaluate(examples, predictions)
    except (ValueError, KeyError, IndexError) as error:
        raise _locate_bad_example(
            error, lambda i: task_head.evaluate([examples[i]], [predictions[i]]), len(examples), path
        ) from None
    return {key: float(value) for key, value in scores.items()}


def evaluate(
    model_or_path: Any,
    eval_file: str | os.PathLike,
    *,
    batch_size: int = 32,
    max_length: int | None = None,
    head: str | None = None,
    tokenizer: DistilBertTokenizer | None = None,
) -> dict[str, float]:
    """Metrics of a model (or a ``.keras`` path) on a JSONL/CSV file in its head's row format.

    Classification: accuracy and macro-F1; NER: entity precision/recall/F1; QA: exact match
    and token F1; pairs: accuracy (or Pearson/Spearman for similarity), as the head defines.
    """
    model = load_model(model_or_path)
    _, task_head = select_head(model, head)
    examples = read_task_examples(eval_file, type(task_head), task_head.task_type)
    return score_examples(
        model, examples, head=head, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length, path=eval_file
    )


def primary_metric(metrics: Mapping[str, float]) -> str:
    """The metric early stopping watches: the first of `PRIMARY_METRICS` present, else the first key."""
    for name in PRIMARY_METRICS:
        if name in metrics:
            return name
    if not metrics:
        raise TrainingError("The head's evaluate() returned no metrics; early stopping needs at least one.")
    return next(iter(metrics))


# -- chance level ------------------------------------------------------------------------------------
def chance_predictions(head: TaskHead, examples: Sequence[BaseModel], seed: int = 0) -> list[Any] | None:
    """What guessing gives, by the head's own optional ``chance_predictions(examples, seed=0)``
    (the built-in heads: the majority class, no entities, a random 1-3 word span of the context);
    None for a head without one."""
    guess = getattr(head, "chance_predictions", None)
    return None if guess is None else guess(examples, seed=seed)


def _same_answer_everywhere(predictions: Sequence[Any]) -> str | None:
    """Says so when every answer is the same class, or no answer found anything."""
    if len(predictions) < 2:
        return None
    labels = {str(p.get("label")) for p in predictions if isinstance(p, Mapping) and "label" in p}
    if len(labels) == 1 and all(isinstance(p, Mapping) and "label" in p for p in predictions):
        return f"every prediction is the class {labels.pop()!r}"
    if all(isinstance(p, list) and not p for p in predictions):
        return "no row got any answer (e.g. no entity found)"
    return None


def chance_level_warning(
    head: TaskHead,
    examples: Sequence[BaseModel],
    predictions: Sequence[Any],
    metrics: Mapping[str, float],
    *,
    split: str = "eval",
    advice: str = "",
) -> str | None:
    """A warning when ``metrics`` (of ``predictions`` on ``examples``) are at or near chance level, else None.

    Chance is what `chance_predictions` scores with the head's own ``evaluate``; "near" is within
    `CHANCE_MARGIN` of it on the watched metric (`primary_metric`), or every prediction being the
    same class. Heads without ``chance_predictions`` (or whose returns None) get no check.
    """
    if not examples or not metrics:
        return None
    monitor = primary_metric(metrics)
    try:
        guesses = chance_predictions(head, examples)
        if guesses is None:
            return None
        chance = head.evaluate(examples, guesses)
    except Exception:  # noqa: BLE001 - a plugin's evaluate may reject guesses any way; the check must not end a finished training
        return None
    if monitor not in chance:
        return None
    value, level = float(metrics[monitor]), float(chance[monitor])
    lower_is_better = monitor in LOWER_IS_BETTER
    if not lower_is_better and level >= 1.0 - CHANCE_MARGIN:
        return None  # e.g. an eval file with one class: guessing is perfect, so the score shows nothing
    near = value >= level - CHANCE_MARGIN if lower_is_better else value <= level + CHANCE_MARGIN
    same = _same_answer_everywhere(predictions)
    if not near and same is None:
        return None
    where = "the eval file" if split == "eval" else "the training rows"
    detail = f"; {same}" if same else ""
    return (
        f"Training ended at chance level (no better than guessing): {monitor} on {where} is {value:.3f}, and "
        f"guessing scores {level:.3f} ({getattr(head, 'chance_description', 'guessing')}){detail}. The model has "
        f"not learnt the task. Try {advice or 'more data or more epochs'}."
    )


def _chance_advice(rows: int, epochs_run: int, pretrained: Any, variant: str) -> str:
    steps = [
        f"more training rows (it had {rows}; aim for hundreds per class)",
        f"more epochs (it ran {epochs_run}; --epochs)",
    ]
    if pretrained is None:
        steps.append(
            "fine-tuning a pretrained checkpoint instead of training from scratch "
            "(--pretrained distilbert-base-uncased)"
        )
    if variant != "base":
        steps.append(f"a larger model than {variant!r} (--variant small or base)")
    return ", ".join(steps[:-1]) + " or " + steps[-1]


class HeadEvaluationCallback(keras.callbacks.Callback):
    """Each epoch, score the model on held-out examples with the head's own metrics.

    Adds ``val_<metric>`` to the epoch logs (so they land in the history), stops training when
    the watched metric has not improved for ``patience`` epochs, and restores the best
    epoch's weights when training ends.
    """

    def __init__(
        self,
        score: Callable[[Any], dict[str, float]],
        *,
        monitor: str | None = None,
        patience: int = 2,
        restore_best_weights: bool = True,
        verbose: int = 1,
    ) -> None:
        super().__init__()
        self.score = score
        self.monitor = monitor
        self.patience = int(patience)
        self.restore_best_weights = restore_best_weights
        self.verbose = verbose
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, float] = {}
        self.last_metrics: dict[str, float] = {}
        self._best_weights: list[np.ndarray] | None = None
        self._wait = 0

    def _improved(self, value: float) -> bool:
        if self.best is None or math.isnan(self.best):
            return not math.isnan(value)
        if self.monitor in LOWER_IS_BETTER:
            return value < self.best
        return value > self.best

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = self.score(self.model)
        self.last_metrics = metrics
        if self.monitor is None:
            self.monitor = primary_metric(metrics)
        if logs is not None:
            logs.update({f"val_{key}": value for key, value in metrics.items()})
        value = float(metrics[self.monitor])
        if self.verbose:
            shown = "  ".join(f"{key}={val:.4f}" for key, val in metrics.items())
            print(f"epoch {epoch + 1} held-out: {shown}", flush=True)
        if self._improved(value):
            self.best, self.best_epoch, self.best_metrics, self._wait = value, epoch, dict(metrics), 0
            if self.restore_best_weights:
                self._best_weights = self.model.get_weights()
            return
        self._wait += 1
        if self.patience > 0 and self._wait >= self.patience:
            self.model.stop_training = True
            if self.verbose:
                print(
                    f"early stopping: held-out {self.monitor} has not improved for {self._wait} epoch(s) "
                    f"(best {self.best:.4f} at epoch {self.best_epoch + 1})",
                    flush=True,
                )

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.restore_best_weights and self._best_weights is not None and self.best_epoch is not None:
            self.model.set_weights(self._best_weights)


# -- training --------------------------------------------------------------------------------------
def train(
    task: str,
    train_file: str | os.PathLike,
    *,
    eval_file: str | os.PathLike | None = None,
    variant: str = "tiny",
    pretrained: str | os.PathLike | None = None,
    epochs: int = 3,
    batch_size: int = 16,
    learning_rate: float | None = None,
    max_length: int = 128,
    out: str | os.PathLike | None = None,
    tokenizer: DistilBertTokenizer | None = None,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    lowercase: bool = True,
    whole_words: bool = False,
    token_dropout: float = 0.0,
    patience: int = 2,
    verbose: int = 1,
    head_options: Mapping[str, Any] | None = None,
    **encoder_overrides: Any,
) -> TrainResult:
    """Train a model for ``task`` on a JSONL/CSV file and (with ``out``) save it as one ``.keras`` file.

    Args:
        task: a task type or alias (``"sentiment"``, ``"ner"``, ``"qa"``, ``"pairwise"``, a plugin's).
        train_file: rows in the head's format (see ``distilbert-heads train --help``).
        eval_file: held-out rows; scored each epoch for early stopping (best weights restored)
            and for the final metrics. Without it the final metrics are on the training rows.
        variant: ``"tiny"``, ``"small"`` or ``"base"`` when training from scratch.
        pretrained: a Hugging Face checkpoint directory or hub id (or a ``.keras`` model) to fine-tune;
            its tokenizer is used. Without it the tokenizer's vocabulary is learnt from the training texts.
        epochs, batch_size, max_length: as usual; ``max_length`` is in tokens, special tokens included.
        learning_rate: Adam's; default 5e-5 with ``pretrained``, 1e-3 from scratch.
        out: where to save the ``.keras`` file (tokenizer inside); None to not save.
        tokenizer: use this tokenizer instead of building one.
        vocab_size: size of the vocabulary learnt from scratch (at most; small data gives fewer pieces).
        lowercase: whether a vocabulary learnt from scratch is uncased (True) or cased (False,
            which keeps capitalisation, a strong cue for names).
        whole_words: learn a vocabulary of whole words (unseen words become ``[UNK]``) instead of
            word pieces; see `DistilBertTokenizer.train_from_texts`. Use it with ``token_dropout``.
        token_dropout: while training, replace each text token by ``[UNK]`` with this probability
            (fresh each epoch). It keeps a small model from memorising names and makes it read the
            context around them; 0 (default) turns it off.
        patience: epochs without improvement of the held-out metric before stopping (0: never stop early).
        verbose: 0 silent, 1 progress bars and tables, 2 one line per epoch.
        head_options: extra head options (the label names come from the training file).
        **encoder_overrides: `DistilBertConfig` fields, e.g. ``hidden_size=64, num_layers=2``.
    """
    from distilbert_heads.factory import create_distilbert_with_head

    check_train_settings(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_length=max_length,
        token_dropout=token_dropout,
        patience=patience,
    )
    if out is not None and not os.fspath(out).endswith(".keras"):
        raise TrainingError(f"--out must name a .keras file (e.g. model.keras), got {os.fspath(out)!r}.")
    if out is not None:
        atomic.check_file_target(out)  # before training, not after it: a directory or a file in the way
    record = head_record(task)
    head_class = record.head_class
    train_examples = read_task_examples(train_file, head_class, task)
    eval_examples = read_task_examples(eval_file, head_class, task) if eval_file is not None else None

    options = infer_options(head_class, train_examples, record.task_type, given=head_options, path=train_file)
    note = numeric_class_note(options)
    if note and verbose:
        print(note, flush=True)
    options.update(head_options or {})
    if tokenizer is None:
        tokenizer = build_tokenizer(
            pretrained,
            example_texts(train_examples),
            vocab_size=vocab_size,
            lowercase=lowercase,
            whole_words=whole_words,
        )
    if pretrained is None:
        encoder_overrides.setdefault("vocab_size", tokenizer.vocab_size)
    model = create_distilbert_with_head(
        task_type=task,
        distilbert_variant=variant,
        pretrained=pretrained if pretrained is not None else False,
        head_options=options,
        **encoder_overrides,
    )
    max_length = min(max_length, model.encoder.config.max_position_embeddings)
    model.tokenizer = tokenizer  # saved inside the .keras file
    # Saved in the model's config: pipelines (and `evaluate` on the saved file) use the length it was trained at.
    model.max_length = max_length
    head_name, head = select_head(model)

    x, y = encode_examples(head, train_examples, tokenizer, max_length, path=train_file)
    if learning_rate is None:
        learning_rate = DEFAULT_LEARNING_RATE_PRETRAINED if pretrained is not None else DEFAULT_LEARNING_RATE_SCRATCH
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate))

    callbacks: list[keras.callbacks.Callback] = []
    evaluation: HeadEvaluationCallback | None = None
    if eval_examples is not None:
        # Check the eval rows fit the head (e.g. no label unseen in training) before spending time on training.
        encode_examples(head, eval_examples, tokenizer, max_length, path=eval_file)
        evaluation = HeadEvaluationCallback(
            lambda m: score_examples(
                m,
                eval_examples,
                head=head_name,
                tokenizer=tokenizer,
                batch_size=max(batch_size, 32),
                max_length=max_length,
                path=eval_file,
            ),
            patience=patience,
            verbose=verbose,
        )
        callbacks.append(evaluation)
    if token_dropout > 0:
        batches = TokenDropoutBatches(x, {head_name: y}, batch_size=batch_size, rate=token_dropout, tokenizer=tokenizer)
        history = model.fit(batches, epochs=epochs, callbacks=callbacks, verbose=verbose)
    else:
        history = model.fit(
            x, {head_name: y}, batch_size=batch_size, epochs=epochs, shuffle=True, callbacks=callbacks, verbose=verbose
        )
    _refuse_diverged(model, history.history.get("loss", []), learning_rate, out)
    # The best epoch's weights are restored, so these predictions are the ones its metrics scored.
    split, split_examples, split_file = (
        ("eval", eval_examples, eval_file) if eval_examples is not None else ("train", train_examples, train_file)
    )
    final_predictions = predict_examples(
        model,
        split_examples,
        head=head_name,
        tokenizer=tokenizer,
        batch_size=max(batch_size, 32),
        max_length=max_length,
    )
    if evaluation is not None and evaluation.best_metrics:
        metrics = dict(evaluation.best_metrics)
    else:
        metrics = score_predictions(head, split_examples, final_predictions, path=split_file)
    advice = _chance_advice(len(train_examples), len(history.epoch), pretrained, variant)
    chance_warning = chance_level_warning(head, split_examples, final_predictions, metrics, split=split, advice=advice)
    path = None
    if out is not None:
        path = Path(out)
        model.save(path)  # atomic: creates missing parent folders
    result = TrainResult(
        model=model,
        metrics=metrics,
        history={key: [float(v) for v in values] for key, values in history.history.items()},
        path=path,
        tokenizer=tokenizer,
        metrics_split=split,
        epochs_run=len(history.epoch),
        best_epoch=None if evaluation is None or evaluation.best_epoch is None else evaluation.best_epoch + 1,
    )
    if chance_warning is not None:
        result.warnings.append(chance_warning)
        warnings.warn(chance_warning, ChanceLevelWarning, stacklevel=2)
    if verbose:
        print_metrics_table(
            {task: metrics},
            title=f"{task}: metrics on the {'eval file' if split == 'eval' else 'training file (no --eval given)'}",
        )
        if path is not None:
            print(f"saved {path} (tokenizer inside)")
        for message in result.warnings:
            print(f"warning: {message}", flush=True)
    return result


def _refuse_diverged(model: Any, losses: Sequence[float], learning_rate: float, out: Any) -> None:
    """Raise when training left NaN or infinite weights: saving them would replace a good file with one that
    cannot be loaded, and every prediction would be garbage."""
    from distilbert_heads.model import first_non_finite_weight

    bad_weight = first_non_finite_weight(model)
    if bad_weight is None:
        return
    name, count = bad_weight
    epoch = next((i + 1 for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
    when = f"the loss became {losses[epoch - 1]} in epoch {epoch}, and " if epoch else ""
    kept = f"; nothing was written to {os.fspath(out)!r}" if out is not None else ""
    raise TrainingError(
        f"Training diverged: {when}{count:,} value(s) of weight {name!r} are NaN or infinite{kept}. "
        f"Lower the learning rate (it was {learning_rate:g}; try 1e-3 from scratch or 5e-5 to fine-tune)."
    )


class TokenDropoutBatches(keras.utils.PyDataset):
    """Shuffled training batches in which text tokens are replaced by ``[UNK]`` at random (anew each epoch).

    Special tokens and padding are never replaced; labels are untouched.
    """

    def __init__(
        self,
        x: Mapping[str, np.ndarray],
        y: Any,
        *,
        batch_size: int,
        rate: float,
        tokenizer: DistilBertTokenizer,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.rate = dict(x), y, int(batch_size), float(rate)
        self.unk_id = tokenizer.unk_token_id
        self.special_ids = np.array(
            [
                i
                for i in (
                    tokenizer.pad_token_id,
                    tokenizer.cls_token_id,
                    tokenizer.sep_token_id,
                    tokenizer.unk_token_id,
                    tokenizer.mask_token_id,
                )
                if i is not None
            ]
        )
        self.size = len(self.x["input_ids"])
        self.rng = np.random.default_rng(seed if seed is not None else int(keras.random.randint((), 0, 2**31 - 1)))
        self.order = self.rng.permutation(self.size)

    def __len__(self) -> int:
        return math.ceil(self.size / self.batch_size)

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray], Any]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        inputs = {key: value[rows] for key, value in self.x.items()}
        ids = inputs["input_ids"].copy()
        droppable = ~np.isin(ids, self.special_ids)
        if "attention_mask" in inputs:
            droppable &= inputs["attention_mask"].astype(bool)
        ids[droppable & (self.rng.random(ids.shape) < self.rate)] = self.unk_id
        inputs["input_ids"] = ids
        return inputs, _take_rows(self.y, rows)

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(self.size)


def _take_rows(value: Any, rows: np.ndarray) -> Any:
    if isinstance(value, Mapping):
        return {key: _take_rows(item, rows) for key, item in value.items()}
    return np.asarray(value)[rows]


def print_metrics_table(
    rows: Mapping[str, Mapping[str, float]],
    *,
    title: str = "metrics",
    baselines: Mapping[str, Mapping[str, float]] | None = None,
    floors: Mapping[str, Mapping[str, float]] | None = None,
    caption: str | None = None,
) -> None:
    """A rich table: one row per (model, metric), with the chance baseline and floor when given."""
    import sys

    from rich.console import Console
    from rich.table import Table

    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120
    table = Table(title=title, caption=caption)
    table.add_column("Model")
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    if baselines is not None:
        table.add_column("Chance", justify="right")
    if floors is not None:
        table.add_column("Floor", justify="right")
        table.add_column("Pass")
    for name, metrics in rows.items():
        for metric, value in metrics.items():
            cells = [name, metric, f"{value:.4f}"]
            if baselines is not None:
                base = (baselines.get(name) or {}).get(metric)
                cells.append("-" if base is None else f"{base:.4f}")
            if floors is not None:
                floor = (floors.get(name) or {}).get(metric)
                cells.append("-" if floor is None else f"{floor:.2f}")
                cells.append("-" if floor is None else ("[green]yes[/]" if value >= floor else "[bold red]NO[/]"))
            table.add_row(*cells)
    Console(width=width).print(table)
