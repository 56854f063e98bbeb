"""Train and evaluate a task model from JSONL/CSV files, for any head that implements the data contract.

`train` reads and validates the rows with the head's ``example_schema`` (a bad row fails with
its file and line number), takes the head's options (label names) from the training file,
builds or loads a tokenizer, builds the model through the factory, fits it with Keras
progress bars and early stopping on the head's own evaluation metric, and saves one ``.keras``
file with the tokenizer inside. `evaluate` scores a saved (or in-memory) model on a file with
the metrics people expect for the task (the head's ``evaluate`` on its decoded answers).

Learning rates: AdamW peaking at 5e-5 when fine-tuning a pretrained checkpoint (the usual BERT
fine-tuning rate) and 1e-3 when training from scratch (small random models learn far too
slowly at fine-tuning rates). Pass ``learning_rate`` to choose another. The other run controls
(seed, weight decay, schedule, clipping, accumulation, precision, callbacks, TensorBoard) are
Keras' own, set up in `distilbert_heads.training.optimization` and documented on `train`."""

from __future__ import annotations

import importlib.util
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras

from distilbert_heads import atomic
from distilbert_heads.model.factory import create_distilbert_with_head
from distilbert_heads.model.loading import first_non_finite_weight
from distilbert_heads.text.tokenizer import DistilBertTokenizer
from distilbert_heads.training.callbacks import HeadEvaluationCallback, TokenDropoutBatches
from distilbert_heads.training.defaults import DEFAULT_SCHEDULE_PRETRAINED, DEFAULT_SCHEDULE_SCRATCH
from distilbert_heads.training.evaluation import (
    chance_level_warning,
    head_scores_answers,
    loss_on,
    predict_examples,
    score_examples,
    score_predictions,
)
from distilbert_heads.training.examples import (
    build_tokenizer,
    encode_examples,
    example_texts,
    head_record,
    infer_options,
    numeric_class_note,
    read_task_examples,
)
from distilbert_heads.training.optimization import build_optimizer
from distilbert_heads.training.report import print_metrics_table
from distilbert_heads.training.run_record import describe_file, plain, training_record
from distilbert_heads.training.settings import (
    DEFAULT_CLIP_NORM,
    DEFAULT_LEARNING_RATE_PRETRAINED,
    DEFAULT_LEARNING_RATE_SCRATCH,
    DEFAULT_VOCAB_SIZE,
    DEFAULT_WEIGHT_DECAY,
    ChanceLevelWarning,
    TrainingError,
    TrainResult,
    check_train_settings,
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
    seed: int | None = None,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    warmup_ratio: float = 0.0,
    warmup_steps: int | None = None,
    schedule: str | None = None,
    clip_norm: float | None = DEFAULT_CLIP_NORM,
    gradient_accumulation_steps: int = 1,
    precision: str = "float32",
    callbacks: Sequence[keras.callbacks.Callback] = (),
    logdir: str | os.PathLike | None = None,
    run: Mapping[str, Any] | None = None,
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
        learning_rate: AdamW's peak rate; default 5e-5 with ``pretrained``, 1e-3 from scratch.
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
        seed: seed Python, NumPy and the Keras backend (`keras.utils.set_random_seed`: weights, dropout)
            and the shuffling and token dropout, so two runs with the same seed end with the same weights
            on CPU. None (default) leaves the random state as it is: ``train`` never reseeds the
            caller's random generators unasked.
        weight_decay: AdamW's decoupled weight decay (default 0.01, the BERT fine-tuning recipe's); never
            applied to LayerNorm weights or biases (as transformers' ``Trainer``). 0 turns it off.
        warmup_ratio, warmup_steps: the learning rate rises linearly from 0 over ``warmup_steps``
            optimizer updates (when given) or over this fraction of them (default 0.0: no warmup).
        schedule: after warmup, ``"linear"`` decays to 0 at the last update, ``"cosine"`` follows a half
            cosine to 0, ``"constant"`` stays at ``learning_rate``. Its length is the run's real number of
            updates: epochs x batches / ``gradient_accumulation_steps``. Default: ``"linear"`` with
            ``pretrained`` (the fine-tuning recipe), ``"constant"`` from scratch (a small random model
            stalls when its rate decays; see `distilbert_heads.training.defaults`).
        clip_norm: clip the gradients to this global norm (default 1.0, ``Trainer``'s); 0 or None: no clipping.
        gradient_accumulation_steps: average the gradients of this many batches into one update
            (default 1), for an effective batch of ``batch_size`` x this many rows.
        precision: ``"float32"`` (default) or ``"mixed_bfloat16"`` (bfloat16 compute, float32 weights,
            saved with the model; fast on accelerators and CPUs with bfloat16 instructions).
        callbacks: Keras callbacks run after this function's own (held-out scoring, TensorBoard).
        logdir: write TensorBoard logs (losses, held-out metrics, learning rate per epoch) here.
        run: how the run was asked for (the command line passes its ``--config`` run file, the keys it set and
            those flags overrode), kept as given in the model's training record.
        **encoder_overrides: `DistilBertConfig` fields, e.g. ``hidden_size=64, num_layers=2``.
    """
    # Every argument as given, before any is resolved or changed: the model's training record keeps them.
    arguments = plain({name: value for name, value in locals().items() if name != "run"})
    if schedule is None:
        schedule = DEFAULT_SCHEDULE_PRETRAINED if pretrained is not None else DEFAULT_SCHEDULE_SCRATCH
    settings = check_train_settings(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_length=max_length,
        token_dropout=token_dropout,
        patience=patience,
        seed=seed,
        weight_decay=weight_decay,
        warmup_ratio=warmup_ratio,
        warmup_steps=warmup_steps,
        schedule=schedule,
        clip_norm=clip_norm,
        gradient_accumulation_steps=gradient_accumulation_steps,
        precision=precision,
    )
    if out is not None and not os.fspath(out).endswith(".keras"):
        raise TrainingError(f"--out must name a .keras file (e.g. model.keras), got {os.fspath(out)!r}.")
    if out is not None:
        atomic.check_file_target(out)  # before training, not after it: a directory or a file in the way
    if logdir is not None and importlib.util.find_spec("tensorboard") is None:
        raise TrainingError(
            f"--logdir {os.fspath(logdir)!r} writes TensorBoard logs, which needs the tensorboard package: "
            "pip install 'distilbert-heads[tensorboard]' (or leave out --logdir)."
        )
    record = head_record(task)
    head_class = record.head_class
    train_examples = read_task_examples(train_file, head_class, task)
    eval_examples = read_task_examples(eval_file, head_class, task) if eval_file is not None else None
    # Hashed once the readers have checked they are regular data files: the record names the data this run saw.
    data_files = {"train": describe_file(train_file)}
    if eval_file is not None:
        data_files["eval"] = describe_file(eval_file)

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
    if seed is not None:
        keras.utils.set_random_seed(seed)  # before the model exists: its initial weights and dropout draw from it
    model = create_distilbert_with_head(
        task_type=task,
        distilbert_variant=variant,
        pretrained=pretrained if pretrained is not None else False,
        head_options=options,
        encoder_options=encoder_overrides,
        dtype=precision,
    )
    max_length = min(max_length, model.encoder.config.max_position_embeddings)
    model.tokenizer = tokenizer  # saved inside the .keras file
    # Saved in the model's config: pipelines (and `evaluate` on the saved file) use the length it was trained at.
    model.max_length = max_length
    head_name, head = model.select_head()

    x, y = encode_examples(head, train_examples, tokenizer, max_length, path=train_file)
    if learning_rate is None:
        learning_rate = DEFAULT_LEARNING_RATE_PRETRAINED if pretrained is not None else DEFAULT_LEARNING_RATE_SCRATCH
    # One shuffled (and, with token_dropout, noised) batch sequence, seeded by ``seed``: the same rows in the
    # same order on every backend and for every batch size, so accumulation matches a larger batch exactly.
    batches = TokenDropoutBatches(
        x, {head_name: y}, batch_size=batch_size, rate=token_dropout, tokenizer=tokenizer, seed=seed
    )
    model.compile(optimizer=build_optimizer(model, settings, learning_rate, len(batches)))
    scored = head_scores_answers(head)  # without evaluate(), the loss is the metric (lower is better)

    run_callbacks: list[keras.callbacks.Callback] = []
    evaluation: HeadEvaluationCallback | None = None
    if eval_examples is not None:
        # Check the eval rows fit the head (e.g. no label unseen in training) before spending time on training.
        x_eval, y_eval = encode_examples(head, eval_examples, tokenizer, max_length, path=eval_file)
        evaluation = HeadEvaluationCallback(
            (
                lambda m: score_examples(
                    m,
                    eval_examples,
                    head=head_name,
                    tokenizer=tokenizer,
                    batch_size=max(batch_size, 32),
                    max_length=max_length,
                    path=eval_file,
                )
            )
            if scored
            else (lambda m: loss_on(m, head_name, x_eval, y_eval, batch_size=max(batch_size, 32))),
            patience=patience,
            verbose=verbose,
        )
        run_callbacks.append(evaluation)
    if logdir is not None:
        # After the held-out scoring, so its val_* metrics are in the logs TensorBoard writes.
        run_callbacks.append(keras.callbacks.TensorBoard(log_dir=os.fspath(logdir)))
    run_callbacks.extend(callbacks)
    # shuffle=False: `batches` shuffles its rows itself (Keras would reorder the batches with its own RNG).
    history = model.fit(batches, epochs=epochs, shuffle=False, callbacks=run_callbacks, verbose=verbose)
    _refuse_diverged(model, history.history.get("loss", []), learning_rate, out)
    # The best epoch's weights are restored, so these predictions are the ones its metrics scored.
    split, split_examples, split_file = (
        ("eval", eval_examples, eval_file) if eval_examples is not None else ("train", train_examples, train_file)
    )
    best = dict(evaluation.best_metrics) if evaluation is not None and evaluation.best_metrics else None
    chance_warning = None
    if not scored:
        metrics = best or loss_on(model, head_name, x, y, batch_size=max(batch_size, 32))
    else:
        final_predictions = predict_examples(
            model,
            split_examples,
            head=head_name,
            tokenizer=tokenizer,
            batch_size=max(batch_size, 32),
            max_length=max_length,
        )
        metrics = best or score_predictions(head, split_examples, final_predictions, path=split_file)
        advice = _chance_advice(len(train_examples), len(history.epoch), pretrained, variant)
        chance_warning = chance_level_warning(
            head, split_examples, final_predictions, metrics, split=split, advice=advice
        )
    resolved = {"schedule": schedule, "learning_rate": learning_rate, "max_length": max_length}
    model.training_record = training_record({**arguments, **resolved}, data_files, run)
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
