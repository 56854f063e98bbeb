"""Training several heads on one encoder, one data file per head: ``train({"sentiment": a, "ner": b}, ...)``.

Each head reads its own file as a `TrainingStream` (shuffled, encoded and padded per batch, as a single-head run).
`MultiHeadStream` interleaves the heads' batches: every batch is one head's rows, the head drawn at random (seeded,
per epoch) with a probability proportional to the batches its file still has to give, so the heads are mixed evenly
through the epoch and every row of every file is seen once per epoch.

Keras' compiled loss needs a target for every output (Keras 3.15's ``CompileLoss`` resolves each output's target by
its key and fails on a missing one), so each batch carries zero targets for the other heads' outputs with a sample
weight of 0: their losses are exactly 0 (sum-over-batch-size and the masked NER loss both multiply by the weight)
and the batch's loss is its own head's loss times that head's loss weight.

Held-out scoring: each head on its own eval file, every epoch; early stopping watches the mean of the heads'
primary metrics (`PRIMARY_METRICS`; one that is lower-is-better, such as a loss, enters negated), or the primary
metric of the one head named by ``monitor_head``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distilbert_heads.model.factory import _default_head_name, create_distilbert_with_heads
from distilbert_heads.model.task_model import _stacked_rows
from distilbert_heads.plugins.plugin_errors import UnknownTaskTypeError
from distilbert_heads.text.tokenizer import DistilBertTokenizer
from distilbert_heads.training import data_files
from distilbert_heads.training.callbacks import HeadEvaluationCallback
from distilbert_heads.training.checkpointing import (
    checkpoint_writer,
    fingerprint,
    load_checkpoint,
    resolve_run_seed,
    resumable_fit,
)
from distilbert_heads.training.data_files import SkippedRows
from distilbert_heads.training.evaluation import (
    LOWER_IS_BETTER,
    chance_level_warning,
    head_scores_answers,
    loss_on_file,
    predict_examples,
    predict_file,
    primary_metric,
    score_predictions,
    scoring_batch_size,
)
from distilbert_heads.training.examples import (
    build_tokenizer,
    example_schema,
    example_texts,
    head_record,
    infer_options,
    numeric_class_note,
)
from distilbert_heads.training.optimization import build_optimizer
from distilbert_heads.training.report import print_metrics_table
from distilbert_heads.training.settings import (
    DEFAULT_LEARNING_RATE_PRETRAINED,
    DEFAULT_LEARNING_RATE_SCRATCH,
    ChanceLevelWarning,
    TrainingError,
    TrainResult,
    TrainSettings,
)
from distilbert_heads.training.streaming import (
    EpochTracker,
    ExampleEncoder,
    FileSample,
    TrainingStream,
    Tree,
    read_sample,
    rows_of,
    tree_map,
)

__all__ = ["HEADS_MEAN", "HeadFile", "MultiHeadStream", "head_files", "train_heads"]

# The early-stopping score of a multi-head run without ``monitor_head``: the mean of the heads' primary metrics.
HEADS_MEAN = "heads_mean"


class HeadFile(BaseModel):
    """One head of a multi-head run and the files it learns from.

    ``name`` defaults to the task as given (``"ner"``); two heads of one task need names of their own.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = Field(min_length=1)
    train_file: Path
    name: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    eval_file: Path | None = None
    loss_weight: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    head_options: dict[str, Any] = Field(default_factory=dict)

    @property
    def head_name(self) -> str:
        return self.name or _default_head_name(self.task)


def head_files(
    heads: Mapping[str, str | os.PathLike] | Sequence[HeadFile | Mapping[str, Any]],
    *,
    eval_files: Mapping[str, str | os.PathLike] | None = None,
    loss_weights: Mapping[str, float] | None = None,
) -> list[HeadFile]:
    """The heads of a run, checked: unique names, every ``eval_files`` / ``loss_weights`` key a head, eval files for
    every head or none.

    ``heads`` is ``{task: training file}`` (each head named after its task) or a list of `HeadFile` (or dicts of
    its fields), which can name heads and give each its eval file, loss weight and options.
    """
    if isinstance(heads, Mapping):
        items: list[Any] = [{"task": task, "train_file": path} for task, path in heads.items()]
    elif isinstance(heads, (str, bytes, os.PathLike)) or not isinstance(heads, Sequence):
        raise TrainingError(
            f"heads must be a dict {{task: training file}} or a list of HeadFile, got {type(heads).__name__}."
        )
    else:
        items = list(heads)
    if not items:
        raise TrainingError("A multi-head run needs at least one head: {task: training file}.")
    specs = []
    for index, item in enumerate(items):
        try:
            specs.append(item if isinstance(item, HeadFile) else HeadFile.model_validate(item))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, problem['loc']))}: {problem['msg']} (got {problem.get('input')!r})"
                for problem in error.errors()
            )
            raise TrainingError(f"Head {index + 1} of the run is malformed: {problems}.") from None
    names = [spec.head_name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TrainingError(
            f"Several heads are named {', '.join(map(repr, duplicates))}; head names key the model's outputs and must "
            "be unique. Name them: HeadFile(name='...', task=..., train_file=...) (--head NAME:TASK=FILE)."
        )
    for what, given in (("eval_files (--head-eval)", eval_files), ("loss_weights (--loss-weight)", loss_weights)):
        unknown = sorted(set(given or {}) - set(names))
        if unknown:
            raise TrainingError(
                f"{what} names {', '.join(map(repr, unknown))}, which {'is' if len(unknown) == 1 else 'are'} not a "
                f"head of this run; the heads are {', '.join(map(repr, names))}."
            )
    updated = []
    for spec in specs:
        changes: dict[str, Any] = {}
        if eval_files and spec.head_name in eval_files:
            if spec.eval_file is not None:
                raise TrainingError(f"Head {spec.head_name!r} has two eval files: in its HeadFile and in eval_files.")
            changes["eval_file"] = Path(eval_files[spec.head_name])
        if loss_weights and spec.head_name in loss_weights:
            changes["loss_weight"] = loss_weights[spec.head_name]
        try:
            updated.append(HeadFile.model_validate({**spec.model_dump(), **changes}) if changes else spec)
        except ValidationError as error:
            problem = error.errors()[0]
            raise TrainingError(
                f"Head {spec.head_name!r}: {problem['loc'][0]} is {problem.get('input')!r}; {problem['msg']} "
                "(a loss weight is a finite number >= 0; 0 leaves the head untrained)."
            ) from None
    with_eval = [spec.head_name for spec in updated if spec.eval_file is not None]
    if with_eval and len(with_eval) != len(updated):
        missing = [spec.head_name for spec in updated if spec.eval_file is None]
        raise TrainingError(
            f"Eval files are given for {', '.join(map(repr, with_eval))} but not for {', '.join(map(repr, missing))}: "
            "held-out scoring and early stopping need every head's eval file, or none. Give one per head "
            "(eval_files={name: file}, --head-eval NAME=FILE) or leave them all out."
        )
    return updated


# -- the interleaved stream ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _TargetTemplate:
    """A head's target leaves, enough to make zero targets of the right shape for another head's batch."""

    structure: Tree  # one (dtype, trailing shape, token aligned) per leaf

    @classmethod
    def of(cls, x: Tree, y: Tree) -> _TargetTemplate:
        ids = np.asarray(x["input_ids"])

        def describe(array: Any) -> tuple[np.dtype, tuple[int, ...], bool]:
            array = np.asarray(array)
            aligned = array.shape[: ids.ndim] == ids.shape
            return array.dtype, array.shape[ids.ndim if aligned else 1 :], aligned

        return cls(tree_map(describe, y))

    def zeros(self, x: Tree) -> Tree:
        ids_shape = np.asarray(x["input_ids"]).shape

        def make(spec: Any) -> np.ndarray:
            dtype, trailing, aligned = spec
            return np.zeros((ids_shape if aligned else ids_shape[:1]) + trailing, dtype=dtype)

        return _map_specs(make, self.structure)


def _map_specs(function: Any, tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {key: _map_specs(function, value) for key, value in tree.items()}
    return function(tree)


class MultiHeadStream(TrainingStream):
    """Batches of several heads' `TrainingStream` s interleaved, one head per batch, as ``(x, y, sample_weight)``.

    ``y`` holds every head's targets and ``sample_weight`` every head's output weights: 1 for the batch's head,
    0 (with zero targets) for the others. ``estimated_batches`` (per head) sets how often each head is drawn; the
    draw follows what each head has left, so every batch of every stream comes out once per epoch whatever the
    estimates. ``batches_per_epoch`` is their sum when every estimate is exact (each file read whole up front), else
    None. Epoch tracking, resuming (`start_at`) and the ``tf.data`` wrapping are `TrainingStream`'s.
    """

    def __init__(
        self,
        streams: Mapping[str, TrainingStream],
        *,
        estimated_batches: Mapping[str, int],
        templates: Mapping[str, _TargetTemplate],
        output_names: Mapping[str, Sequence[str]],
        seed: int,
        batches_per_epoch: int | None = None,
    ) -> None:
        # Not TrainingStream.__init__: this stream reads no file itself; it shares the position (resuming and
        # checkpointing: `start_at`, `has_batch`) and the dataset machinery.
        self.streams = dict(streams)
        self.estimated_batches = {name: max(int(estimated_batches[name]), 1) for name in self.streams}
        self.templates, self.output_names, self.seed = dict(templates), dict(output_names), int(seed)
        self.reset_position(batches_per_epoch)

    def batches(self, epoch: int, *, skip: int = 0) -> Iterator[tuple[Tree, Tree, Tree]]:
        rng = np.random.default_rng([self.seed, epoch, len(self.streams)])
        left = dict(self.estimated_batches)
        iterators = {name: stream.batches(epoch) for name, stream in self.streams.items()}
        index = 0
        while iterators:
            names = list(iterators)
            weights = np.array([max(left[name], 1) for name in names], dtype=float)
            name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
            batch = next(iterators[name], None)
            if batch is None:
                del iterators[name]
                continue
            left[name] -= 1
            if index >= skip:
                yield self.complete(name, *batch)
            index += 1

    def complete(self, name: str, x: Tree, y: Tree) -> tuple[Tree, Tree, Tree]:
        """One head's batch with zero targets (weighted 0) for every other head's outputs."""
        rows = rows_of(x)
        targets = {head: (y[head] if head == name else template.zeros(x)) for head, template in self.templates.items()}
        weights = {
            head: {output: np.full((rows,), float(head == name), dtype="float32") for output in outputs}
            for head, outputs in self.output_names.items()
        }
        return x, targets, weights


# -- the run ---------------------------------------------------------------------------------------------------
@dataclass
class _Head:
    spec: HeadFile
    record: Any
    schema: Any
    sample: FileSample
    options: dict[str, Any]
    on_train_bad: Any = None
    on_eval_bad: Any = None

    @property
    def name(self) -> str:
        return self.spec.head_name

    @property
    def examples(self) -> list[Any]:
        return [example for _, example in self.sample.examples]


def train_heads(
    heads: Sequence[HeadFile],
    *,
    settings: TrainSettings,
    monitor_head: str | None = None,
    variant: str,
    pretrained: str | os.PathLike | None,
    learning_rate: float | None,
    out: str | os.PathLike | None,
    tokenizer: DistilBertTokenizer | None,
    vocab_size: int,
    lowercase: bool,
    whole_words: bool,
    verbose: int,
    callbacks: Sequence[keras.callbacks.Callback],
    logdir: str | os.PathLike | None,
    skipped: SkippedRows | None,
    shuffle_buffer: int,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    encoder_overrides: Mapping[str, Any],
) -> TrainResult:
    """The multi-head run behind ``train({task: file, ...})``; ``heads`` come from `head_files`, ``settings`` and
    ``skipped`` from `train`'s own checks. See `train` for the arguments.

    Checkpoints and ``resume`` work as for one head (`distilbert_heads.training.checkpointing`): the position is
    the interleaved stream's batch, and the checkpoint records each head's task, loss weight, options and training
    sample, so a resume with other heads, files or loss weights is refused, naming what differs.
    """
    from distilbert_heads.training.loop import _encode_all, _refuse_diverged, split_rows_pair  # loop imports us

    names = [spec.head_name for spec in heads]
    if monitor_head is not None and monitor_head not in names:
        raise TrainingError(f"monitor_head is {monitor_head!r}, not a head of this run; the heads are {names}.")
    has_eval = heads[0].eval_file is not None
    if monitor_head is not None and not has_eval:
        raise TrainingError(
            f"monitor_head={monitor_head!r} chooses what early stopping watches on the eval files; "
            "give every head an eval file, or leave monitor_head out."
        )
    checkpoint = load_checkpoint(checkpoint_dir) if resume and checkpoint_dir is not None else None
    records = {}
    for spec in heads:  # every task known before any file is read
        try:
            records[spec.head_name] = head_record(spec.task)
        except UnknownTaskTypeError as error:
            raise TrainingError(f"Head {spec.head_name!r} (training file {spec.train_file}): {error}") from None
    parts: list[_Head] = []
    for spec in heads:
        record = records[spec.head_name]
        schema = example_schema(record.head_class, spec.task)
        on_train_bad = skipped.handler(spec.train_file) if skipped is not None else None
        on_eval_bad = skipped.handler(spec.eval_file) if skipped is not None and spec.eval_file is not None else None
        sample = read_sample(spec.train_file, schema, f"task {spec.task!r}", on_bad_row=on_train_bad)
        if spec.eval_file is not None:
            data_files.RowReader(spec.eval_file)  # a missing or unreadable eval file fails now, not after an epoch
        examples = [example for _, example in sample.examples]
        options = infer_options(
            record.head_class,
            examples,
            record.task_type,
            given=spec.head_options,
            path=spec.train_file,
            lines=sample.examples,
        )
        note = numeric_class_note(options)
        if note and verbose:
            print(f"{spec.head_name}: {note}", flush=True)
        options.update(spec.head_options)
        parts.append(_Head(spec, record, schema, sample, options, on_train_bad, on_eval_bad))

    if tokenizer is None and checkpoint is not None:
        tokenizer = checkpoint.tokenizer()  # a vocabulary learnt from scratch again would differ
    if tokenizer is None:  # one vocabulary for every head: learnt from all the files' samples together
        texts = [text for part in parts for text in example_texts(part.examples)]
        tokenizer = build_tokenizer(
            pretrained, texts, vocab_size=vocab_size, lowercase=lowercase, whole_words=whole_words
        )
    encoder_options = dict(encoder_overrides)
    if pretrained is None:
        encoder_options.setdefault("vocab_size", tokenizer.vocab_size)
    if settings.seed is not None:
        keras.utils.set_random_seed(settings.seed)
    model = create_distilbert_with_heads(
        [
            {
                "name": part.name,
                "task_type": part.spec.task,
                "loss_weight": part.spec.loss_weight,
                "options": part.options,
            }
            for part in parts
        ],
        distilbert_variant=variant,
        pretrained=pretrained if pretrained is not None else False,
        dtype=settings.precision,
        **encoder_options,
    )
    _check_input_shapes(model)
    max_length = min(settings.max_length, model.encoder.config.max_position_embeddings)
    model.tokenizer = tokenizer
    model.max_length = max_length

    run_seed = resolve_run_seed(settings.seed, checkpoint)
    batch_size = settings.batch_size
    streams: dict[str, TrainingStream] = {}
    estimates: dict[str, int] = {}
    templates: dict[str, _TargetTemplate] = {}
    sample_encoded: dict[str, tuple[Tree, Tree]] = {}
    for index, part in enumerate(parts):
        head = model.heads[part.name]
        encoder = ExampleEncoder(head, tokenizer, max_length, part.spec.train_file, part.on_train_bad)
        encoded = _encode_all(encoder, part.sample.examples, batch_size)
        if encoded is None:
            raise TrainingError(
                f"{part.spec.train_file.name} (head {part.name!r}): every row of the first "
                f"{len(part.sample.examples):,} was invalid and skipped; nothing is left to train this head on."
            )
        sample_encoded[part.name] = encoded
        rows = rows_of(encoded[0])
        if not part.sample.whole_file:
            rows = round(rows * part.sample.estimated_rows() / len(part.sample.examples))
        estimates[part.name] = max(math.ceil(rows / batch_size), 1)
        templates[part.name] = _TargetTemplate.of(*encoded)
        streams[part.name] = TrainingStream(
            part.spec.train_file,
            part.schema,
            f"task {part.spec.task!r}",
            encoder,
            head_name=part.name,
            batch_size=batch_size,
            seed=run_seed + index,  # each file its own shuffle and token dropout draws
            token_dropout=settings.token_dropout,
            shuffle_buffer=shuffle_buffer,
            on_bad_row=part.on_train_bad,
        )
    stream = MultiHeadStream(
        streams,
        estimated_batches=estimates,
        templates=templates,
        output_names=model.output_keys,
        seed=run_seed,
        batches_per_epoch=sum(estimates.values()) if all(part.sample.whole_file for part in parts) else None,
    )
    first = parts[0].name
    first_batch = stream.complete(
        first, *streams[first]._finish(*split_rows_pair(sample_encoded[first], batch_size), 0, 0)
    )
    if learning_rate is None:
        learning_rate = DEFAULT_LEARNING_RATE_PRETRAINED if pretrained is not None else DEFAULT_LEARNING_RATE_SCRATCH
    # No training metrics: the heads' default ones are unweighted, so the zero targets of other heads' batches
    # would count in them. The held-out metrics come from each head's eval file.
    model.compile(optimizer=build_optimizer(model, settings, learning_rate, sum(estimates.values())), metrics={})
    run_settings = {
        **settings.model_dump(exclude={"checkpoint_every"}),
        # The order matters too: it orders the model's weights and seeds each head's file stream.
        "head_order": [part.name for part in parts],
        "heads": {
            part.name: {
                "task": part.spec.task,
                "loss_weight": part.spec.loss_weight,
                "head_options": part.options,
                "train_file_bytes": part.sample.size,
                "train_sample_sha256": fingerprint(sample_encoded[part.name]),
                "eval_file_bytes": None if part.spec.eval_file is None else os.path.getsize(part.spec.eval_file),
            }
            for part in parts
        },
        "monitor_head": monitor_head,
        "variant": variant,
        "pretrained": pretrained,
        "encoder_options": encoder_options,
        "effective_max_length": max_length,
        "shuffle_buffer": shuffle_buffer,
        "skip_invalid": skipped is not None,
    }
    if checkpoint is not None:
        checkpoint.check_same_run(run_settings)
        checkpoint.restore(model)
        if verbose:
            print(f"resuming from {os.fspath(checkpoint.path)!r} at {checkpoint.where}", flush=True)

    score_batch = scoring_batch_size(batch_size)

    def score_head(m: Any, part: _Head) -> dict[str, float]:
        head = m.heads[part.name]
        common = {
            "head": part.name,
            "tokenizer": tokenizer,
            "batch_size": score_batch,
            "max_length": max_length,
            "on_bad_row": part.on_eval_bad,
        }
        if not head_scores_answers(head):
            return loss_on_file(m, part.spec.eval_file, **common)
        examples, predictions = predict_file(m, part.spec.eval_file, show_progress=False, **common)
        return score_predictions(head, examples, predictions, path=part.spec.eval_file)

    def score_all(m: Any) -> dict[str, float]:
        per_head = {part.name: score_head(m, part) for part in parts}
        flat = {f"{name}/{metric}": value for name, scores in per_head.items() for metric, value in scores.items()}
        flat[HEADS_MEAN] = heads_mean(per_head)
        if evaluation is not None and evaluation.monitor is None:
            evaluation.monitor = f"{monitor_head}/{primary_metric(per_head[monitor_head])}"
        return flat

    tracker = EpochTracker(stream)
    run_callbacks: list[keras.callbacks.Callback] = [tracker]
    evaluation: HeadEvaluationCallback | None = None
    if has_eval:
        # With monitor_head, its primary metric's name is known once it has been scored (see score_all).
        monitor = HEADS_MEAN if monitor_head is None else None
        evaluation = HeadEvaluationCallback(score_all, monitor=monitor, patience=settings.patience, verbose=verbose)
        run_callbacks.append(evaluation)
        if checkpoint is not None:
            checkpoint.restore_evaluation(evaluation)
    if logdir is not None:
        run_callbacks.append(keras.callbacks.TensorBoard(log_dir=os.fspath(logdir)))
    if checkpoint_dir is not None:
        run_callbacks.append(
            checkpoint_writer(
                checkpoint_dir,
                checkpoint,
                batches=stream,
                tokenizer=tokenizer,
                settings=run_settings,
                epochs=settings.epochs,
                every=checkpoint_every,
                evaluation=evaluation,
                verbose=verbose,
            )
        )
    run_callbacks.extend(callbacks)
    # A failure inside any head's stream surfaces as itself (resumable_fit).
    history = resumable_fit(
        model,
        stream,
        first_batch,
        epochs=settings.epochs,
        checkpoint=checkpoint,
        callbacks=run_callbacks,
        verbose=verbose,
    )
    _refuse_diverged(model, history.get("loss", []), learning_rate, out)

    split = "eval" if has_eval else "train"
    best = evaluation.best_metrics if evaluation is not None and evaluation.best_metrics else None
    metrics: dict[str, dict[str, float]] = {}
    chance_warnings: list[str] = []
    for part in parts:
        head = model.heads[part.name]
        if best is not None:
            prefix = f"{part.name}/"
            metrics[part.name] = {key[len(prefix) :]: value for key, value in best.items() if key.startswith(prefix)}
        if not head_scores_answers(head):
            if best is None:
                x, y = sample_encoded[part.name]
                everything = stream.complete(part.name, x, {part.name: y})
                logs = model.evaluate(*everything, batch_size=score_batch, verbose=0, return_dict=True)
                metrics[part.name] = {"loss": float(logs["loss"])}
            continue
        if has_eval:
            examples, predictions = predict_file(
                model,
                part.spec.eval_file,
                head=part.name,
                tokenizer=tokenizer,
                batch_size=score_batch,
                max_length=max_length,
                show_progress=False,
                on_bad_row=part.on_eval_bad,
            )
        else:
            examples = part.examples
            predictions = predict_examples(
                model, examples, head=part.name, tokenizer=tokenizer, batch_size=score_batch, max_length=max_length
            )
        if best is None:
            metrics[part.name] = score_predictions(
                head, examples, predictions, path=part.spec.eval_file or part.spec.train_file
            )
        message = chance_level_warning(
            head,
            examples,
            predictions,
            metrics[part.name],
            split=split,
            advice="more training rows or more epochs for this head",
        )
        if message is not None:
            chance_warnings.append(f"head {part.name!r}: {message}")

    path = None
    if out is not None:
        path = Path(out)
        model.save(path)
    result = TrainResult(
        model=model,
        metrics=metrics,
        history=history,
        path=path,
        tokenizer=tokenizer,
        metrics_split=split,
        epochs_run=len(history.get("loss", [])),
        checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
        epoch_seconds=list(tracker.epoch_seconds),
        best_epoch=None if evaluation is None or evaluation.best_epoch is None else evaluation.best_epoch + 1,
        seed=run_seed,
        skipped_rows=dict(skipped.counts) if skipped is not None else {},
        skipped_file=skipped.side_file if skipped is not None and skipped.counts else None,
    )
    for message in chance_warnings:
        result.warnings.append(message)
        warnings.warn(message, ChanceLevelWarning, stacklevel=4)
    if verbose:
        where = "eval files" if has_eval else "training files (no eval files given)"
        print_metrics_table(metrics, title=f"{len(parts)} heads: metrics on their {where}")
        if path is not None:
            print(f"saved {path} ({len(parts)} heads, tokenizer inside)")
        if checkpoint_dir is not None:
            print(
                f"checkpoints kept in {os.fspath(checkpoint_dir)} (continue a killed run with --resume"
                f"{'; best.keras is the best held-out epoch' if evaluation is not None else ''})"
            )
        if skipped is not None and skipped.summary():
            print(skipped.summary(), flush=True)
        for message in result.warnings:
            print(f"warning: {message}", flush=True)
    return result


def heads_mean(per_head: Mapping[str, Mapping[str, float]]) -> float:
    """The mean of each head's primary metric, a lower-is-better one (a loss, an error) negated: higher is better."""
    values = []
    for scores in per_head.values():
        metric = primary_metric(scores)
        values.append(-float(scores[metric]) if metric in LOWER_IS_BETTER else float(scores[metric]))
    return float(np.mean(values))


def _check_input_shapes(model: Any) -> None:
    """Every batch runs through every head, so the heads must take inputs of one shape: ``(B, L)`` rows, or the
    same number N of stacked rows ``(B, N, L)``."""
    rows = {name: _stacked_rows(head) for name, head in model.heads.items()}
    if len(set(rows.values())) > 1:
        shapes = ", ".join(
            f"{name!r} ({model.heads[name].task_type}): " + ("(batch, length)" if n == 1 else f"(batch, {n}, length)")
            for name, n in rows.items()
        )
        raise TrainingError(
            f"These heads take inputs of different shapes: {shapes}. One multi-head model runs every batch through "
            "every head, so its heads must share one input shape. Train the heads with different shapes as "
            "separate models."
        )
