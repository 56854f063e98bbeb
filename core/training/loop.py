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
from distilbert_heads.training.defaults import (
    DEFAULT_PATIENCE,
    DEFAULT_SCHEDULE_PRETRAINED,
    DEFAULT_SCHEDULE_SCRATCH,
    SHUFFLE_BUFFER_ROWS,
)
from distilbert_heads.training.distributed import DataParallelRun, Distribution, local_saving, parse_distribution
from distilbert_heads.training.distributed import setup as setup_distribution
from distilbert_heads.training.evaluation import (
    HeldOutFile,
    chance_level_warning,
    head_scores_answers,
    loss_on,
    predict_examples,
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
from distilbert_heads.training.multi_head import HeadFile, head_files, train_heads
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
from distilbert_heads.training.streaming import (
    ENCODE_CHUNK_BATCHES,
    EpochTracker,
    ExampleEncoder,
    TrainingStream,
    join_batches,
    read_sample,
    rows_of,
    split_rows,
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
    task: str | Mapping[str, str | os.PathLike] | Sequence[HeadFile],
    train_file: str | os.PathLike | None = None,
    *,
    eval_file: str | os.PathLike | None = None,
    eval_files: Mapping[str, str | os.PathLike] | None = None,
    loss_weights: Mapping[str, float] | None = None,
    monitor_head: str | None = None,
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
    patience: int = DEFAULT_PATIENCE,
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
    skip_invalid: bool = False,
    skipped_file: str | os.PathLike | None = None,
    shuffle_buffer: int = SHUFFLE_BUFFER_ROWS,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    run: Mapping[str, Any] | None = None,
    distribution: str | Mapping[str, Any] | Distribution | DataParallelRun | None = None,
    **encoder_overrides: Any,
) -> TrainResult:
    """Train a model for ``task`` on a JSONL/CSV file and (with ``out``) save it as one ``.keras`` file.

    Args:
        task: a task type or alias (``"sentiment"``, ``"ner"``, ``"qa"``, ``"pairwise"``, a plugin's).
        train_file: rows in the head's format (see ``distilbert-heads train --help``), of any size: they are read,
            checked and encoded while training runs (`distilbert_heads.training.streaming`), after the first
            `SAMPLE_ROWS` (50,000), which give the label names (a later row with another label fails with its line; pass
            ``head_options={"labels": [...]}`` to be sure) and a vocabulary learnt from scratch.
        eval_file: held-out rows; scored each epoch for early stopping (best weights restored)
            and for the final metrics. Without it the final metrics are on the training rows.
        Several heads on one encoder: pass ``task`` as ``{task: training file}`` (each head named after its task)
            or a list of `HeadFile` (names, per-head eval files, loss weights, options), and no ``train_file``;
            see `distilbert_heads.training.multi_head`. Then ``eval_files`` maps head names to eval files (every
            head or none), ``loss_weights`` head names to loss weights (default 1; 0 leaves a head untrained), and
            early stopping watches the mean of the heads' primary metrics, or ``monitor_head``'s primary metric.
            One vocabulary is learnt from all the files; ``TrainResult.metrics`` is keyed by head.
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
        skip_invalid: leave out rows that are broken or that the head rejects (in the training and eval files)
            instead of failing on the first: each goes, with its file, line and reason, to ``skipped_file``
            (default: ``<out name>.skipped.jsonl`` beside ``out``), and the result's ``skipped_rows`` counts them.
        shuffle_buffer: rows held for shuffling (default 10,000): a file of at most this many rows is shuffled
            whole each epoch; a larger one is shuffled through the buffer, as ``tf.data``'s ``shuffle``.
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
        run: how the run was asked for (the command line passes its ``--config`` run file, the keys it set and
            those flags overrode), kept as given in the model's training record.
        distribution: train data-parallel (`distilbert_heads.training.distributed`): ``"data-parallel"`` on the JAX
            backend over all local devices, or a `Distribution` (or mapping) naming ``devices`` and, for several
            processes, ``coordinator``, ``num_processes`` and ``process_id`` (else Keras' ``KERAS_DISTRIBUTION_*``
            variables). ``batch_size`` is the global batch, split across devices and processes; the run trains the
            weights a single-device run would on the same batches. Only process 0 writes ``out``, checkpoints and the
            skipped rows. ``"mirrored"``: tf.distribute's MirroredStrategy on the TensorFlow backend. A backend
            that cannot distribute is refused, never run on one device.
        **encoder_overrides: `DistilBertConfig` fields, e.g. ``hidden_size=64, num_layers=2``.
    """
    if distribution is not None and not isinstance(distribution, DataParallelRun):
        given = {name: value for name, value in locals().items() if name != "encoder_overrides"}
        if not isinstance(task, str):
            raise TrainingError(
                "distribution (--distribution) trains one head for now; train several heads without it."
            )
        data_parallel = setup_distribution(parse_distribution(distribution), batch_size=batch_size, seed=seed)
        if not data_parallel.writes_files:
            given["verbose"] = 0  # process 0 reports for the run
        with data_parallel.scope():
            return train(**{**given, "distribution": data_parallel}, **encoder_overrides)
    data_parallel = distribution
    writes_files = data_parallel is None or data_parallel.writes_files
    # Every argument as given, before any is resolved or changed: the model's training record keeps them.
    arguments = plain({name: value for name, value in locals().items() if name not in ("run", "data_parallel")})
    if data_parallel is not None:
        arguments["distribution"] = data_parallel.describe()
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
    if out is not None and not os.fspath(out).endswith(".keras"):
        raise TrainingError(f"--out must name a .keras file (e.g. model.keras), got {os.fspath(out)!r}.")
    if out is not None:
        atomic.check_file_target(out)  # before training, not after it: a directory or a file in the way
    if logdir is not None and importlib.util.find_spec("tensorboard") is None:
        raise TrainingError(
            f"--logdir {os.fspath(logdir)!r} writes TensorBoard logs, which needs the tensorboard package: "
            "pip install 'distilbert-heads[tensorboard]' (or leave out --logdir)."
        )
    if not isinstance(task, str):  # several heads, one file each
        if train_file is not None or eval_file is not None or head_options is not None:
            raise TrainingError(
                "A multi-head run takes each head's files (and options) in its own entry: train({task: file, ...}, "
                "eval_files={head: file}) or a list of HeadFile; leave train_file, eval_file and head_options out."
            )
        heads = head_files(task, eval_files=eval_files, loss_weights=loss_weights)
        return train_heads(
            heads,
            settings=settings,
            monitor_head=monitor_head,
            variant=variant,
            pretrained=pretrained,
            learning_rate=learning_rate,
            out=out,
            tokenizer=tokenizer,
            vocab_size=vocab_size,
            lowercase=lowercase,
            whole_words=whole_words,
            verbose=verbose,
            callbacks=callbacks,
            logdir=logdir,
            skipped=_skipped_rows(skip_invalid, skipped_file, out, heads[0].train_file),
            shuffle_buffer=shuffle_buffer,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            resume=resume,
            encoder_overrides=encoder_overrides,
        )
    if train_file is None or eval_files is not None or loss_weights is not None or monitor_head is not None:
        raise TrainingError(
            f"train({task!r}, ...) trains one head: give its train_file; eval_files, loss_weights and monitor_head "
            "are for several heads, train({task: file, ...})."
        )
    checkpoint = load_checkpoint(checkpoint_dir) if resume and checkpoint_dir is not None else None
    record = head_record(task)
    head_class = record.head_class
    schema = example_schema(head_class, task)
    skipped = _skipped_rows(skip_invalid, skipped_file, out, train_file)
    if skipped is not None and not writes_files:
        skipped.side_file = Path(os.devnull)  # every process skips the same rows; process 0 lists them
    on_train_bad = skipped.handler(train_file) if skipped is not None else None
    on_eval_bad = skipped.handler(eval_file) if skipped is not None and eval_file is not None else None
    task_name = f"task {task!r}"
    # The first rows, read before the model exists: the label names and a vocabulary learnt from scratch come
    # from them. The rest of the file is read while training runs.
    sample = read_sample(train_file, schema, task_name, on_bad_row=on_train_bad)
    sample_examples = [example for _, example in sample.examples]
    if eval_file is not None:
        data_files.RowReader(eval_file)  # a missing or unreadable eval file fails now, not after an epoch

    try:
        options = infer_options(
            head_class, sample_examples, record.task_type, given=head_options, path=train_file, lines=sample.examples
        )
    except TrainingError as error:
        if sample.whole_file:
            raise
        raise TrainingError(
            f"{error} The labels were read from the first {len(sample_examples):,} rows only (the file is larger); "
            "name them all with --labels (head_options={'labels': [...]}), or shuffle the file."
        ) from None
    if not sample.whole_file and options:
        _say_sample(verbose, sample, options)
    note = numeric_class_note(options)
    if note and verbose:
        print(note, flush=True)
    options.update(head_options or {})
    if tokenizer is None and checkpoint is not None:
        tokenizer = checkpoint.tokenizer()  # a vocabulary learnt from scratch again would differ
    if tokenizer is None:
        tokenizer = build_tokenizer(
            pretrained,
            example_texts(sample_examples),
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

    encoder = ExampleEncoder(head, tokenizer, max_length, train_file, on_train_bad)
    # The sample encoded: its rows are checked against the head (e.g. labels) before any training, and their
    # count sizes the epoch (exactly when the sample is the whole file, scaled by bytes when it is not).
    sample_encoded = _encode_all(encoder, sample.examples, batch_size)
    if sample_encoded is None:
        raise TrainingError(
            f"{Path(train_file).name}: every row of the first {len(sample.examples):,} was invalid and skipped "
            f"(see {skipped.side_file if skipped else 'the messages above'}); nothing is left to train on."
        )
    sample_rows = rows_of(sample_encoded[0])
    rows_per_epoch = (
        sample_rows if sample.whole_file else round(sample_rows * sample.estimated_rows() / len(sample.examples))
    )
    batches_per_epoch = max(math.ceil(rows_per_epoch / batch_size), 1)
    if (
        data_parallel is not None
        and rows_per_epoch % batch_size
        and not data_parallel.usable_rows(rows_per_epoch % batch_size)
    ):
        batches_per_epoch = max(batches_per_epoch - 1, 1)  # the short last batch splits across no replica: left out
    if learning_rate is None:
        learning_rate = DEFAULT_LEARNING_RATE_PRETRAINED if pretrained is not None else DEFAULT_LEARNING_RATE_SCRATCH
    # One shuffled (and, with token_dropout, noised) batch sequence, a pure function of the seed and the epoch:
    # the same rows in the same order on every backend and for every batch size.
    run_seed = resolve_run_seed(seed, checkpoint)
    stream = TrainingStream(
        train_file,
        schema,
        task_name,
        encoder,
        head_name=head_name,
        batch_size=batch_size,
        seed=run_seed,
        token_dropout=token_dropout,
        shuffle_buffer=shuffle_buffer,
        on_bad_row=on_train_bad,
        batches_per_epoch=batches_per_epoch if sample.whole_file else None,
        split=data_parallel,
    )
    first_batch = stream._finish(*split_rows_pair(sample_encoded, batch_size), 0, 0)
    model.compile(optimizer=build_optimizer(model, settings, learning_rate, batches_per_epoch))
    run_settings = {
        **settings.model_dump(exclude={"checkpoint_every"}),
        "task": task,
        "variant": variant,
        "pretrained": pretrained,
        "head_options": options,
        "encoder_options": encoder_overrides,
        "effective_max_length": max_length,
        "shuffle_buffer": shuffle_buffer,
        "skip_invalid": skip_invalid,
        "train_file_bytes": sample.size,
        "train_sample_sha256": fingerprint(sample_encoded),
        # The held-out best so far is only comparable on the same file: another one is refused on resume.
        "eval_file_bytes": None if eval_file is None else os.path.getsize(eval_file),
    }
    if checkpoint is not None:
        checkpoint.check_same_run(run_settings)
        checkpoint.restore(model)
        if verbose:
            print(f"resuming from {os.fspath(checkpoint.path)!r} at {checkpoint.where}", flush=True)
    scored = head_scores_answers(head)  # without evaluate(), the loss is the metric (lower is better)

    score_batch = scoring_batch_size(batch_size)
    tracker = EpochTracker(stream)
    run_callbacks: list[keras.callbacks.Callback] = [tracker]
    if data_parallel is not None:
        run_callbacks.insert(0, data_parallel.training_batches())  # first: split only the training steps
    evaluation: HeadEvaluationCallback | None = None
    held_out = None
    if eval_file is not None:
        held_out = HeldOutFile(
            eval_file,
            head=head_name,
            tokenizer=tokenizer,
            batch_size=score_batch,
            max_length=max_length,
            on_bad_row=on_eval_bad,
        )
        evaluation = HeadEvaluationCallback(
            held_out.score,
            patience=patience,
            verbose=verbose,
        )
        run_callbacks.append(evaluation)
        if checkpoint is not None:
            checkpoint.restore_evaluation(evaluation)
    if logdir is not None and writes_files:
        # After the held-out scoring, so its val_* metrics are in the logs TensorBoard writes.
        run_callbacks.append(keras.callbacks.TensorBoard(log_dir=os.fspath(logdir)))
    if checkpoint_dir is not None and writes_files:
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
    run_callbacks.extend(callbacks)
    history = resumable_fit(
        model,
        stream,
        first_batch,
        epochs=epochs,
        checkpoint=checkpoint,
        callbacks=run_callbacks,
        verbose=verbose,
    )
    epochs_run = len(history.get("loss", []))
    _refuse_diverged(model, history.get("loss", []), learning_rate, out)
    # The best epoch's weights are restored, so these predictions are the ones its metrics scored.
    best = dict(evaluation.best_metrics) if evaluation is not None and evaluation.best_metrics else None
    chance_warning = None
    split = "eval" if eval_file is not None else "train"
    if not scored:
        metrics = best or loss_on(model, head_name, *sample_encoded, batch_size=score_batch, tokenizer=tokenizer)
    else:
        if held_out is not None:
            split_examples, final_predictions = held_out.predict(model)
        else:  # the training rows read up front (the whole file unless it is larger than the sample)
            split_examples = sample_examples
            final_predictions = predict_examples(
                model,
                split_examples,
                head=head_name,
                tokenizer=tokenizer,
                batch_size=score_batch,
                max_length=max_length,
            )
        metrics = best or score_predictions(head, split_examples, final_predictions, path=eval_file or train_file)
        advice = _chance_advice(sample.estimated_rows(), epochs_run, pretrained, variant)
        chance_warning = chance_level_warning(
            head, split_examples, final_predictions, metrics, split=split, advice=advice
        )
    resolved = {"schedule": schedule, "learning_rate": learning_rate, "max_length": max_length, "seed": run_seed}
    # Hashed after training, not before: reading a large file through first would delay the first step.
    hashed = {"train": describe_file(train_file)}
    if eval_file is not None:
        hashed["eval"] = describe_file(eval_file)
    model.training_record = training_record(
        {**arguments, **resolved}, hashed, run, metrics=metrics, metrics_split=split, previous=model.training_record
    )
    path = None
    if out is not None and writes_files:
        path = Path(out)
        with local_saving():
            model.save(path)  # atomic: creates missing parent folders
    result = TrainResult(
        model=model,
        metrics=metrics,
        history=history,
        path=path,
        tokenizer=tokenizer,
        metrics_split=split,
        epochs_run=epochs_run,
        checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
        best_epoch=None if evaluation is None or evaluation.best_epoch is None else evaluation.best_epoch + 1,
        seed=run_seed,
        epoch_seconds=list(tracker.epoch_seconds),
        skipped_rows=dict(skipped.counts) if skipped is not None else {},
        skipped_file=skipped.side_file if skipped is not None and skipped.counts else None,
    )
    if chance_warning is not None:
        result.warnings.append(chance_warning)
        warnings.warn(chance_warning, ChanceLevelWarning, stacklevel=3)
    if verbose:
        where = "eval file" if split == "eval" else "training file (no --eval given)"
        if split == "train" and not sample.whole_file:
            where = f"first {len(sample_examples):,} training rows (no --eval given)"
        print_metrics_table({task: metrics}, title=f"{task}: metrics on the {where}")
        if path is not None:
            print(f"saved {path} (tokenizer inside)")
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


def _skipped_rows(skip_invalid: bool, skipped_file: Any, out: Any, train_file: Any) -> SkippedRows | None:
    """Where ``skip_invalid`` writes the rows it leaves out: ``skipped_file``, else beside ``out`` (or the training
    file) as ``<name>.skipped.jsonl``."""
    if not skip_invalid:
        if skipped_file is not None:
            raise TrainingError("skipped_file (--skipped) names where --skip-invalid writes skipped rows; pass both.")
        return None
    if skipped_file is None:
        beside = Path(out) if out is not None else Path(train_file)
        skipped_file = beside.with_name(beside.stem + ".skipped.jsonl")
    return SkippedRows(skipped_file)


def _encode_all(encoder: ExampleEncoder, items: Sequence[Any], batch_size: int) -> tuple[Any, Any] | None:
    chunk = batch_size * ENCODE_CHUNK_BATCHES
    parts = [part for start in range(0, len(items), chunk) if (part := encoder(items[start : start + chunk]))]
    return join_batches(parts, encoder.tokenizer.pad_token_id) if parts else None


def split_rows_pair(encoded: tuple[Any, Any], count: int) -> tuple[Any, Any]:
    (x, _), (y, _) = split_rows(encoded[0], count), split_rows(encoded[1], count)
    return x, y


def _say_sample(verbose: int, sample: Any, options: Mapping[str, Any]) -> None:
    if not verbose:
        return
    labels = options.get("labels")
    shown = f" ({len(labels)} labels: {', '.join(map(str, labels[:10]))}{', ...' if len(labels) > 10 else ''})"
    print(
        f"read the first {len(sample.examples):,} rows of {sample.path.name} for the head's options"
        f"{shown if labels else ''}; a later row with a label not among them fails with its line "
        "(pass the labels with --labels to be sure)",
        flush=True,
    )


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
