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

import hashlib
import importlib.util
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from distilbert_heads import atomic
from distilbert_heads.model.factory import create_distilbert_with_head
from distilbert_heads.model.loading import first_non_finite_weight
from distilbert_heads.text.tokenizer import DistilBertTokenizer
from distilbert_heads.training.callbacks import FollowEpochs, HeadEvaluationCallback, TokenDropoutBatches
from distilbert_heads.training.checkpointing import (
    TrainingCheckpoints,
    fit_from,
    load_checkpoint,
    restore_best_file,
    start_fresh,
)
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
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
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
        checkpoint_dir: write checkpoints here (see `distilbert_heads.training.checkpointing`): at each epoch end,
            every ``checkpoint_every`` training steps (batches), and ``best.keras``, the best model by the held-out
            metric, whenever it improves. Each is replaced atomically: a kill never leaves a broken one. The
            folder is kept when the run ends. None (default): no checkpoints.
        checkpoint_every: also checkpoint every this many training steps (batches), counted over the whole run.
        resume: continue the run whose last checkpoint is in ``checkpoint_dir``, at its step and data position
            (and with its tokenizer, unless ``tokenizer`` is given); the other arguments must be those of the
            interrupted run (a different setting is refused, naming it). With a ``seed`` the resumed run ends
            with the weights the uninterrupted run would have (on CPU). Without one the run's drawn data seed is
            read from the checkpoint. The loss in ``history`` for the resumed epoch covers its remaining batches.
        **encoder_overrides: `DistilBertConfig` fields, e.g. ``hidden_size=64, num_layers=2``.
    """
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
        checkpoint_every=checkpoint_every,
    )
    if checkpoint_dir is None and (resume or checkpoint_every is not None):
        given = "resume=True (--resume)" if resume else f"checkpoint_every={checkpoint_every} (--checkpoint-every)"
        raise TrainingError(f"{given} needs a checkpoint folder: pass checkpoint_dir (--checkpoint-dir).")
    if checkpoint_dir is not None and Path(checkpoint_dir).exists() and not Path(checkpoint_dir).is_dir():
        raise TrainingError(
            f"--checkpoint-dir {os.fspath(checkpoint_dir)!r} is a file, not a folder: choose another path."
        )
    checkpoint = load_checkpoint(checkpoint_dir) if resume and checkpoint_dir is not None else None
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

    options = infer_options(head_class, train_examples, record.task_type, given=head_options, path=train_file)
    note = numeric_class_note(options)
    if note and verbose:
        print(note, flush=True)
    options.update(head_options or {})
    if tokenizer is None and checkpoint is not None:
        tokenizer = checkpoint.tokenizer()  # a vocabulary learnt from scratch again would differ
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
    # Without a seed the batches draw one; a resumed run takes the interrupted run's from its checkpoint.
    batches = TokenDropoutBatches(
        x,
        {head_name: y},
        batch_size=batch_size,
        rate=token_dropout,
        tokenizer=tokenizer,
        seed=seed if seed is not None or checkpoint is None else checkpoint.seed,
    )
    model.compile(optimizer=build_optimizer(model, settings, learning_rate, len(batches)))
    run_settings = {
        **settings.model_dump(exclude={"checkpoint_every"}),
        "task": task,
        "variant": variant,
        "pretrained": pretrained,
        "head_options": options,
        "encoder_options": encoder_overrides,
        "effective_max_length": max_length,
        "train_rows": len(train_examples),
        "train_data_sha256": _fingerprint(x, y),
        "eval_rows": None if eval_examples is None else len(eval_examples),
    }
    if checkpoint is not None:
        checkpoint.check_same_run(run_settings)
        checkpoint.restore(model)
        if verbose:
            print(f"resuming from {os.fspath(checkpoint.path)!r} at {checkpoint.where}", flush=True)
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
        if checkpoint is not None and checkpoint.state["evaluation"] is not None:
            evaluation.restore_state(checkpoint.state["evaluation"], checkpoint.best_weights())
    if logdir is not None:
        # After the held-out scoring, so its val_* metrics are in the logs TensorBoard writes.
        run_callbacks.append(keras.callbacks.TensorBoard(log_dir=os.fspath(logdir)))
    if checkpoint_dir is not None:
        if checkpoint is None:
            start_fresh(checkpoint_dir, verbose)
        else:
            restore_best_file(checkpoint_dir, checkpoint)
        run_callbacks.append(
            TrainingCheckpoints(
                checkpoint_dir,
                batches=batches,
                tokenizer=tokenizer,
                settings=run_settings,
                epochs=epochs,
                every=checkpoint_every,
                evaluation=evaluation,
                history=checkpoint.state["history"] if checkpoint is not None else None,
            )
        )
    run_callbacks.extend(callbacks)
    history: dict[str, list[float]] = {
        key: list(values) for key, values in (checkpoint.state["history"] if checkpoint else {}).items()
    }
    if checkpoint is not None and checkpoint.finished:  # killed after its last epoch: nothing left to train
        if evaluation is not None:
            evaluation.set_model(model)
            evaluation.on_train_end()
    else:
        position = (checkpoint.epoch, checkpoint.batch) if checkpoint is not None else (0, 0)
        for logs in fit_from(
            model,
            batches,
            epoch=position[0],
            batch=position[1],
            epochs=epochs,
            callbacks=[FollowEpochs(batches), *(checkpoint.resume_callbacks() if checkpoint else []), *run_callbacks],
            verbose=verbose,
        ):
            for key, values in logs.items():
                history.setdefault(key, []).extend(float(v) for v in values)
    epochs_run = len(history.get("loss", []))
    _refuse_diverged(model, history.get("loss", []), learning_rate, out)
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
        advice = _chance_advice(len(train_examples), epochs_run, pretrained, variant)
        chance_warning = chance_level_warning(
            head, split_examples, final_predictions, metrics, split=split, advice=advice
        )
    path = None
    if out is not None:
        path = Path(out)
        model.save(path)  # atomic: creates missing parent folders
    result = TrainResult(
        model=model,
        metrics=metrics,
        history=history,
        path=path,
        tokenizer=tokenizer,
        metrics_split=split,
        epochs_run=epochs_run,
        best_epoch=None if evaluation is None or evaluation.best_epoch is None else evaluation.best_epoch + 1,
        checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
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
        if checkpoint_dir is not None:
            print(
                f"checkpoints kept in {os.fspath(checkpoint_dir)} (continue a killed run with --resume"
                f"{'; best.keras is the best held-out epoch' if evaluation is not None else ''})"
            )
        for message in result.warnings:
            print(f"warning: {message}", flush=True)
    return result


def _fingerprint(*values: Any) -> str:
    """SHA-256 of encoded training data (nested mappings of arrays), so a resume on other data is refused."""
    digest = hashlib.sha256()

    def add(value: Any) -> None:
        if isinstance(value, Mapping):
            for key in sorted(value):
                digest.update(str(key).encode())
                add(value[key])
        else:
            array = np.ascontiguousarray(value)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())

    for value in values:
        add(value)
    return digest.hexdigest()


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
