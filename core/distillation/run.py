"""`distill`: train a smaller student from a teacher on a data file, streamed like ``train``.

General distillation (the teacher's head is masked-LM, as DistilBERT was made): the data is text, masked anew
every batch by the head's ``prepare_batch``, and the loss is DistilBERT's triple loss, 5 x soft targets +
2 x masked-LM loss + 1 x hidden-state cosine at T = 2, with its optimiser (Adam, lr 5e-4, eps 1e-6, betas
(0.9, 0.98), 5% warmup, clipping at 5.0). Task-specific distillation (every other head): the teacher is a
fine-tuned task model, the data the head's usual labelled file, and the loss 0.5 x the head's own loss + 0.5 x
soft targets at T = 2 (the research distiller's SQuAD recipe), plus a cosine term when ``alpha_cos`` is set.

Teacher and student see the same batch (after the head's ``prepare_batch``). Checkpoints and ``resume`` work as in
``train`` (`distilbert_heads.training.checkpointing`); they hold the student and its optimizer, and the teacher is
named by its path and the fingerprint of its weights, so a resume with another teacher is refused.

With an ``eval_file`` the student is scored after every epoch as ``train`` scores its model (the same
`HeldOutFile` and `HeadEvaluationCallback`): early stopping, the best epoch's student kept, returned, saved and
checkpointed as ``best.keras``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from distilbert_heads import atomic
from distilbert_heads.distillation.distiller import CACHED_TEACHER_PREFIX, TaskDistiller
from distilbert_heads.model.task_model import DistilBertTaskModel
from distilbert_heads.plugins.head import TaskHead, distillation_targets_of
from distilbert_heads.training import data_files
from distilbert_heads.training.callbacks import HeadEvaluationCallback
from distilbert_heads.training.checkpointing import (
    checkpoint_writer,
    fingerprint,
    load_checkpoint,
    resolve_run_seed,
    resumable_fit,
)
from distilbert_heads.training.defaults import DEFAULT_PATIENCE
from distilbert_heads.training.evaluation import HeldOutFile, scoring_batch_size
from distilbert_heads.training.examples import example_schema, load_model, model_tokenizer
from distilbert_heads.training.loop import _encode_all, split_rows_pair
from distilbert_heads.training.optimization import build_optimizer
from distilbert_heads.training.run_record import describe_file, plain, training_record
from distilbert_heads.training.settings import TrainingError, TrainResult, check_train_settings
from distilbert_heads.training.streaming import EpochTracker, ExampleEncoder, TrainingStream, read_sample, rows_of

MASKED_LM = "masked_language_modeling"

# DistilBERT's general distillation (transformers' research distiller, train.py defaults).
GENERAL = {
    "alpha_soft": 5.0,
    "alpha_task": 2.0,
    "alpha_cos": 1.0,
    "learning_rate": 5e-4,
    "warmup_ratio": 0.05,
    "clip_norm": 5.0,
    "weight_decay": 0.0,
}
GENERAL_ADAM = {"beta_2": 0.98, "epsilon": 1e-6}
# Task-specific distillation (its SQuAD recipe): half the head's own loss, half soft targets.
TASK = {
    "alpha_soft": 0.5,
    "alpha_task": 0.5,
    "alpha_cos": 0.0,
    "learning_rate": 5e-5,
    "warmup_ratio": 0.0,
    "clip_norm": 1.0,
    "weight_decay": 0.01,
}


def distill(
    teacher: DistilBertTaskModel | str | os.PathLike,
    train_file: str | os.PathLike,
    *,
    eval_file: str | os.PathLike | None = None,
    patience: int | None = None,
    student: DistilBertTaskModel | None = None,
    layers: list[int] | None = None,
    head: str | None = None,
    out: str | os.PathLike | None = None,
    temperature: float = 2.0,
    alpha_task: float | None = None,
    alpha_soft: float | None = None,
    alpha_cos: float | None = None,
    epochs: int = 3,
    batch_size: int = 16,
    learning_rate: float | None = None,
    warmup_ratio: float | None = None,
    clip_norm: float | None = None,
    weight_decay: float | None = None,
    max_length: int | None = None,
    token_dropout: float = 0.0,
    seed: int | None = None,
    cache_teacher: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 1,
) -> TrainResult:
    """Distil ``teacher`` (a task model or its ``.keras`` path) into ``student`` on ``train_file``.

    Args:
        teacher: the teacher; frozen and in inference mode throughout. Its tokenizer makes the inputs.
        train_file: the head's training data (labelled rows; for a masked-LM teacher, text rows), streamed.
        eval_file: held-out rows in the same format, on which the student is scored after every epoch, as ``train``
            scores its model: the head's own metrics (its ``evaluate``; early stopping watches the primary one), or,
            for a head without ``evaluate`` such as masked-LM (text rows, no labels), the student's loss on the
            file with the head's own loss: the masked-LM loss on masks drawn from a fixed seed, the same every
            epoch (``train`` and ``evaluate`` report it so for that head). Not the distillation loss: that measures
            agreement with the teacher rather than the student's own language modelling, and would need a teacher
            pass over the file every epoch. The scores are printed, kept in ``history`` as ``val_<metric>`` and,
            for the best epoch, are the result's ``metrics`` and the training record's.
        patience: stop when the held-out score has not improved for this many epochs (0: never stop early;
            default 2, as ``train``). Needs ``eval_file``. With an eval file the student returned and saved to
            ``out`` is always the best epoch's, as ``train``'s model is.
        student: the model to train; by default built from the teacher with ``layers`` (every other layer).
        head: which of the teacher's heads to distil (default: its only one).
        out: save the student here as one ``.keras`` file (atomically), tokenizer inside.
        temperature: T of the soft targets (2).
        alpha_task, alpha_soft, alpha_cos: weights of the head's own loss on the labels, of the soft targets and
            of the hidden-state cosine loss; defaults 2 / 5 / 1 for a masked-LM teacher, 0.5 / 0.5 / 0 otherwise.
        learning_rate, warmup_ratio, clip_norm, weight_decay: the optimiser; defaults as the recipe (module doc).
        epochs, batch_size, max_length, token_dropout, seed: as in ``train``; ``max_length`` defaults to the
            teacher's.
        cache_teacher: compute the teacher's outputs once per row and reuse them every epoch. Only where the
            teacher's input is the same every epoch: refused with token dropout, with a head that draws its batch
            anew (masked-LM masking) and with ``alpha_cos`` (the cosine needs the teacher's hidden states).
        checkpoint_dir, checkpoint_every, resume: as in ``train``.
        callbacks: Keras callbacks run after this function's own (the model they see is the `TaskDistiller`).

    Returns a `TrainResult` whose ``model`` is the student and ``metrics`` the last epoch's losses, or with
    ``eval_file`` the best epoch's held-out metrics (``metrics_split`` "eval", ``best_epoch`` counted from 1).
    """
    # Every argument as given (the student and teacher objects by name): the student's training record keeps them.
    arguments = plain({name: value for name, value in locals().items() if name not in ("teacher", "student")})
    teacher_path = None if isinstance(teacher, DistilBertTaskModel) else os.fspath(teacher)
    teacher = teacher if isinstance(teacher, DistilBertTaskModel) else load_model(teacher)
    tokenizer = model_tokenizer(teacher)
    head_name, teacher_head = teacher.select_head(head)
    distillation_targets_of(teacher_head, teacher.head_plugin(head_name))  # a head without declarations fails now
    general = teacher_head.task_type == MASKED_LM
    recipe = GENERAL if general else TASK
    given = {
        "alpha_soft": alpha_soft,
        "alpha_task": alpha_task,
        "alpha_cos": alpha_cos,
        "learning_rate": learning_rate,
        "warmup_ratio": warmup_ratio,
        "clip_norm": clip_norm,
        "weight_decay": weight_decay,
    }
    chosen = {key: recipe[key] if value is None else value for key, value in given.items()}
    max_length = teacher.max_length if max_length is None else max_length
    if patience is not None and eval_file is None:
        raise TrainingError(
            f"patience={patience} (--patience) stops distillation when the held-out score stops improving, and "
            "without eval_file (--eval-file) there is no held-out score. Pass an eval file of held-out rows, or "
            "leave out patience."
        )
    if patience is None:
        patience = DEFAULT_PATIENCE if eval_file is not None else 0
    settings = check_train_settings(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=chosen["learning_rate"],
        max_length=max_length,
        token_dropout=token_dropout,
        patience=patience,
        seed=seed,
        weight_decay=chosen["weight_decay"],
        warmup_ratio=chosen["warmup_ratio"],
        schedule="linear",
        clip_norm=chosen["clip_norm"],
        checkpoint_every=checkpoint_every,
    )
    if checkpoint_dir is None and (resume or checkpoint_every is not None):
        raise TrainingError("resume and checkpoint_every (--resume, --checkpoint-every) need checkpoint_dir.")
    if out is not None and not os.fspath(out).endswith(".keras"):
        raise TrainingError(f"--out must name a .keras file (e.g. student.keras), got {os.fspath(out)!r}.")
    if out is not None:
        atomic.check_file_target(out)
    if eval_file is not None:
        data_files.RowReader(eval_file)  # a missing or unreadable eval file fails now, not after an epoch
    if cache_teacher:
        _check_cacheable(teacher_head, token_dropout, chosen["alpha_cos"])
    if student is None:
        # The student builder lives beside this module (another part of the distillation package).
        from distilbert_heads.distillation.student import student_from_teacher

        student = student_from_teacher(teacher, layers)
    if student.tokenizer is None:
        student.tokenizer = tokenizer
    elif student.tokenizer.get_vocab() != tokenizer.get_vocab():
        raise TrainingError(
            f"The student's tokenizer ({student.tokenizer.vocab_size} tokens) is not the teacher's "
            f"({tokenizer.vocab_size}): teacher and student must read the same input ids. Give the student the "
            "teacher's tokenizer (student.tokenizer = teacher.tokenizer) or build it from the teacher."
        )
    student.max_length = min(max_length, student.encoder.config.max_position_embeddings)
    distiller = TaskDistiller(
        teacher,
        student,
        head=head_name,
        temperature=temperature,
        alpha_task=chosen["alpha_task"],
        alpha_soft=chosen["alpha_soft"],
        alpha_cos=chosen["alpha_cos"],
    )

    checkpoint = load_checkpoint(checkpoint_dir) if resume and checkpoint_dir is not None else None
    task = teacher_head.task_type
    schema = example_schema(type(teacher_head), task)
    sample = read_sample(train_file, schema, f"task {task!r}")
    student_head = student.heads[head_name]
    encoder = ExampleEncoder(student_head, tokenizer, student.max_length, train_file)
    sample_encoded = _encode_all(encoder, sample.examples, batch_size)
    rows = rows_of(sample_encoded[0])
    rows_per_epoch = rows if sample.whole_file else round(rows * sample.estimated_rows() / len(sample.examples))
    batches_per_epoch = max(math.ceil(rows_per_epoch / batch_size), 1)
    run_seed = resolve_run_seed(seed, checkpoint)
    stream_class = CachedTeacherStream if cache_teacher else TrainingStream
    stream = stream_class(
        train_file,
        schema,
        f"task {task!r}",
        encoder,
        head_name=head_name,
        batch_size=batch_size,
        seed=run_seed,
        token_dropout=token_dropout,
        batches_per_epoch=batches_per_epoch if sample.whole_file else None,
    )
    if cache_teacher:
        stream.teacher = teacher
        if verbose:
            print(f"computing the teacher's outputs for every row of {Path(train_file).name} (--cache-teacher)")
        stream.fill_cache()
    first_batch = stream._finish(*split_rows_pair(sample_encoded, batch_size), 0, 0)
    adam = GENERAL_ADAM if general else {}
    distiller.compile(
        optimizer=build_optimizer(distiller, settings, chosen["learning_rate"], batches_per_epoch, **adam)
    )
    run_settings = {
        **settings.model_dump(exclude={"checkpoint_every"}),
        **chosen,
        "temperature": temperature,
        "head": head_name,
        "teacher": teacher_path,
        "teacher_sha256": fingerprint(teacher.get_weights()),
        "student_sha256": fingerprint(student.get_weights()) if checkpoint is None else None,
        "cache_teacher": cache_teacher,
        "train_file_bytes": sample.size,
        "train_sample_sha256": fingerprint(sample_encoded),
        # The held-out best so far is only comparable on the same file: another one is refused on resume.
        "eval_file_bytes": None if eval_file is None else os.path.getsize(eval_file),
    }
    if checkpoint is not None:
        # The student's starting weights are not compared: the checkpoint replaces them.
        checkpoint.check_same_run({**run_settings, "student_sha256": checkpoint.state["settings"]["student_sha256"]})
        checkpoint.restore(distiller)
        if verbose:
            print(f"resuming from {os.fspath(checkpoint.path)!r} at {checkpoint.where}", flush=True)
    tracker = EpochTracker(stream)
    run_callbacks: list[keras.callbacks.Callback] = [tracker]
    evaluation: HeadEvaluationCallback | None = None
    if eval_file is not None:
        held_out = HeldOutFile(
            eval_file,
            head=head_name,
            tokenizer=tokenizer,
            batch_size=scoring_batch_size(batch_size),
            max_length=student.max_length,
        )
        evaluation = HeadEvaluationCallback(held_out.score, patience=patience, verbose=verbose, keep=student)
        run_callbacks.append(evaluation)
        if checkpoint is not None:
            checkpoint.restore_evaluation(evaluation)
    if checkpoint_dir is not None:
        run_callbacks.append(
            checkpoint_writer(
                checkpoint_dir,
                checkpoint,
                batches=stream,
                tokenizer=tokenizer,
                settings=run_settings,
                epochs=epochs,
                every=checkpoint_every,
                evaluation=evaluation,
                verbose=verbose,
            )
        )
    history = resumable_fit(
        distiller,
        stream,
        first_batch,
        epochs=epochs,
        checkpoint=checkpoint,
        callbacks=[*run_callbacks, *callbacks],
        verbose=verbose,
    )
    losses = {key: values[-1] for key, values in history.items() if values and not key.startswith("val_")}
    if not all(math.isfinite(value) for value in losses.values()):
        raise TrainingError(
            f"Distillation diverged (last epoch's losses {losses}); nothing was saved. Lower the learning rate "
            f"(it was {chosen['learning_rate']:g}) or the temperature."
        )
    best = evaluation.best_metrics if evaluation is not None and evaluation.best_metrics else None
    metrics = dict(best) if best else {key: values[-1] for key, values in history.items() if values}
    split = "eval" if best else "train"
    files = {"train": describe_file(train_file)}
    if eval_file is not None:
        files["eval"] = describe_file(eval_file)
    student.training_record = training_record(
        {
            **arguments,
            **chosen,
            "teacher": teacher_path,
            "teacher_sha256": run_settings["teacher_sha256"],
            "seed": run_seed,
            "max_length": student.max_length,
        },
        files,
        metrics=metrics,
        metrics_split=split,
        previous=student.training_record,
    )
    # A fresh, unbuilt optimizer of the same kind: the distiller's holds the projection's slots too.
    student.compile(optimizer=distiller.optimizer.__class__.from_config(distiller.optimizer.get_config()))
    path = None
    if out is not None:
        path = Path(out)
        student.save(path)  # atomic
        if verbose:
            print(f"saved the student to {path} (tokenizer inside)", flush=True)
    return TrainResult(
        model=student,
        metrics=metrics,
        history=history,
        path=path,
        tokenizer=tokenizer,
        metrics_split=split,
        epochs_run=len(history.get("loss", [])),
        best_epoch=None if evaluation is None or evaluation.best_epoch is None else evaluation.best_epoch + 1,
        checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
        seed=run_seed,
        epoch_seconds=list(tracker.epoch_seconds),
    )


def _check_cacheable(head: TaskHead, token_dropout: float, alpha_cos: float) -> None:
    """Refuse ``cache_teacher`` where the teacher's input (or what is cached) would differ between epochs."""
    if type(head).prepare_batch is not TaskHead.prepare_batch:
        raise TrainingError(
            f"cache_teacher (--cache-teacher) cannot be used with head {head.name!r} ({head.task_type}): its "
            "prepare_batch draws every batch anew (e.g. masked-LM masking), so the teacher's input changes every "
            "batch and outputs cached in one epoch would be wrong in the next. Leave out --cache-teacher."
        )
    if token_dropout > 0:
        raise TrainingError(
            f"cache_teacher (--cache-teacher) cannot be used with token_dropout={token_dropout} (--token-dropout): "
            "tokens are dropped anew every epoch, so the teacher's input changes. Use one or the other."
        )
    if alpha_cos > 0:
        raise TrainingError(
            f"cache_teacher (--cache-teacher) keeps the teacher's head outputs, not its hidden states, and "
            f"alpha_cos={alpha_cos} (--alpha-cos) needs those every step. Set alpha_cos to 0 or leave out the cache."
        )


class CachedTeacherStream(TrainingStream):
    """A `TrainingStream` whose batches carry the teacher's declared outputs (``teacher/<output>`` inputs), computed
    once per row (keyed by the row's real tokens) by `fill_cache` and reused every epoch. Token-aligned outputs are
    kept at the row's length and padded to each batch's width (every loss masks padding out). Held in memory: one
    entry per row.

    The teacher runs in `fill_cache`, on the calling thread, before training: the data pipeline's own thread only
    looks outputs up (a Keras model called there while a JAX step runs fails).
    """

    teacher: DistilBertTaskModel
    filling = False

    def fill_cache(self) -> None:
        """Run the teacher once over every row of the file (one pass, in epoch 0's order)."""
        self.filling = True
        try:
            for _ in self.batches(0):
                pass
        finally:
            self.filling = False

    def _finish(self, x: Any, y: Any, epoch: int, index: int) -> tuple[Any, Any]:
        x, y = super()._finish(x, y, epoch, index)
        cache: dict[bytes, dict[str, np.ndarray]] = self.__dict__.setdefault("cache", {})
        targets = distillation_targets_of(self.teacher.heads[self.head_name], self.teacher.head_plugin(self.head_name))
        arrays = {name: np.asarray(value) for name, value in x.items()}
        width = arrays["input_ids"].shape[-1]
        lengths = arrays["attention_mask"].astype(bool).reshape(len(arrays["input_ids"]), -1).sum(axis=1)
        keys = [
            b"|".join(arrays[name][row][..., : lengths[row]].tobytes() for name in sorted(arrays))
            for row in range(len(lengths))
        ]
        missing = [row for row, key in enumerate(keys) if key not in cache]
        if missing and not self.filling:
            raise TrainingError(
                f"{self.path.name}: {len(missing)} row(s) of epoch {epoch + 1}, batch {index + 1} were not in the "
                "teacher cache filled before training: the file changed during the run. Run again (or leave out "
                "--cache-teacher)."
            )
        if missing:
            outputs = self.teacher({name: value[missing] for name, value in arrays.items()}, training=False)
            for slot, row in enumerate(missing):
                cache[keys[row]] = {
                    name: keras.ops.convert_to_numpy(outputs[self.head_name][name])[slot][
                        : lengths[row] if target.tokens != "none" else None
                    ]
                    for name, target in targets.items()
                }
        for name, target in targets.items():
            rows = [cache[key][name] for key in keys]
            if target.tokens != "none":
                rows = [np.pad(row, [(0, width - len(row))] + [(0, 0)] * (row.ndim - 1)) for row in rows]
            x = {**x, CACHED_TEACHER_PREFIX + name: np.stack(rows)}
        return x, y


__all__ = ["distill"]
