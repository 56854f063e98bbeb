"""Checkpoints of a training run, and resuming one from its last checkpoint at the same step and data position.

A checkpoint directory holds:

- ``last/``, the latest checkpoint, replaced as a whole (`distilbert_heads.atomic.atomic_directory`, so a kill
  at any moment leaves the previous checkpoint or the new one, never a mix or a broken file):

  - ``model.weights.h5``: the weights and the optimizer's state (Keras' ``save_weights``: step count,
    moments, accumulated gradients);
  - ``rng.npz``: the dropout layers' random-generator states, which ``save_weights`` leaves out (and, on the
    PyTorch backend, torch's global generators, which Keras' unseeded dropout draws from there);
  - ``tokenizer.json``: the run's tokenizer (a vocabulary learnt from scratch is not reproducible);
  - ``best.keras``: a hard link to the best model at the time of the checkpoint, when there is one;
  - ``state.json``: the data position (epoch, batch), the global step, the data seed, the held-out best so
    far, the per-epoch history and the settings of the run (a resume with other settings is refused).

- ``best.keras``: the best model so far by the held-out metric, a full model (tokenizer inside), written
  atomically whenever the metric improves.

`TrainingCheckpoints` (a Keras callback) writes them; `load_checkpoint` reads one back and `fit_from` continues
``fit`` from a position inside an epoch. Keras' own ``BackupAndRestore`` is not used: it restarts an
interrupted epoch from its first batch (it records the batch but never uses it), overwrites its weights
and metadata files in place one after the other (a kill between or during the writes leaves a broken or
inconsistent pair) and leaves out the dropout generators' state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from distilbert_heads import atomic
from distilbert_heads.text.tokenizer import DistilBertTokenizer
from distilbert_heads.training.callbacks import HeadEvaluationCallback
from distilbert_heads.training.distributed import local_saving
from distilbert_heads.training.settings import TrainingError
from distilbert_heads.training.streaming import TrainingStream, batch_counter

CHECKPOINT_FORMAT = 1
LAST = "last"
BEST = "best.keras"
WEIGHTS = "model.weights.h5"
RNG = "rng.npz"
TOKENIZER = "tokenizer.json"
STATE = "state.json"


def fingerprint(*values: Any) -> str:
    """SHA-256 of encoded data (nested mappings of arrays), so a resume on other data is refused."""
    digest = hashlib.sha256()

    def add(value: Any) -> None:
        if isinstance(value, Mapping):
            for key in sorted(value):
                digest.update(str(key).encode())
                add(value[key])
        elif isinstance(value, (tuple, list)):
            for item in value:
                add(item)
        else:
            array = np.ascontiguousarray(value)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())

    for value in values:
        add(value)
    return digest.hexdigest()


def seed_state_variables(model: keras.Model) -> list[Any]:
    """The model's variables that are not weights: its dropout layers' ``SeedGenerator`` states, in model order."""
    weights = {id(variable) for variable in model.weights}
    return [variable for variable in model.variables if id(variable) not in weights]


def random_state(model: keras.Model) -> dict[str, np.ndarray]:
    """The random state training draws from: the model's ``SeedGenerator`` states and, on PyTorch, torch's."""
    state = {f"seed_generator_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(seed_state_variables(model))}
    if keras.backend.backend() == "torch":
        import torch  # only on the PyTorch backend, where Keras imported it already

        state["torch_cpu"] = torch.get_rng_state().numpy()
        if torch.cuda.is_available():
            state.update({f"torch_cuda_{i}": s.cpu().numpy() for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def set_random_state(model: keras.Model, state: Mapping[str, np.ndarray], path: Path) -> None:
    """Restore the ``SeedGenerator`` states `random_state` returned (read from ``path``, named in errors)."""
    variables = seed_state_variables(model)
    seeds = [state[f"seed_generator_{i}"] for i in range(sum(key.startswith("seed_generator_") for key in state))]
    if len(seeds) != len(variables):
        raise TrainingError(
            f"The checkpoint {os.fspath(path)!r} holds {len(seeds)} random-generator states but the model has "
            f"{len(variables)}: it was made with another model. Start a new run without --resume."
        )
    for variable, value in zip(variables, seeds):
        variable.assign(value)


def set_torch_random_state(state: Mapping[str, np.ndarray]) -> None:
    """Restore torch's global generators from what `random_state` returned (nothing on other backends)."""
    if keras.backend.backend() == "torch" and "torch_cpu" in state:
        import torch  # only on the PyTorch backend, where Keras imported it already

        torch.set_rng_state(torch.from_numpy(state["torch_cpu"]))
        cuda = [torch.from_numpy(state[key]) for key in sorted(state) if key.startswith("torch_cuda_")]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (paths and other objects as strings), so settings compare equal."""
    return json.loads(json.dumps(value, default=str))


def setting_differences(recorded: Mapping[str, Any], given: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Each setting that differs between a checkpoint's run (``recorded``) and this one (``given``), said in words;
    mappings on both sides are compared key by key, a mapping on one side only is named, not printed. A key on one
    side only whose value is None is no difference: a setting that a later version records, unset in this run, so
    a checkpoint written before it was recorded still resumes."""
    differing = []
    for key in sorted(set(recorded) | set(given)):
        name = f"{prefix}{key}"
        if (key not in recorded and given[key] is None) or (key not in given and recorded[key] is None):
            continue
        if key not in given or key not in recorded:
            value, there, here = (recorded[key], "there", "here") if key in recorded else (given[key], "here", "there")
            shown = "set" if isinstance(value, Mapping) else f"{value!r}"
            differing.append(f"{name} is {shown} {there} and not set {here}")
        elif isinstance(recorded[key], Mapping) and isinstance(given[key], Mapping):
            differing.extend(setting_differences(recorded[key], given[key], f"{name}."))
        elif recorded[key] != given[key]:
            differing.append(f"{name} is {recorded[key]!r} there and {given[key]!r} here")
    return differing


@dataclass
class Checkpoint:
    """One checkpoint read back: its folder and its ``state.json``."""

    path: Path
    state: dict[str, Any]

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"])

    @property
    def batch(self) -> int:
        return int(self.state["batch"])

    @property
    def seed(self) -> int:
        return int(self.state["seed"])

    @property
    def finished(self) -> bool:
        return bool(self.state["finished"])

    @property
    def where(self) -> str:
        return f"epoch {self.epoch + 1}, batch {self.batch}, step {self.state['global_step']}"

    def tokenizer(self) -> DistilBertTokenizer:
        return DistilBertTokenizer.from_json_string((self.path / TOKENIZER).read_text(encoding="utf-8"))

    def check_same_run(self, settings: Mapping[str, Any]) -> None:
        """Refuse to resume with settings other than the checkpoint's, naming each key that differs (a key inside a
        nested mapping by its path, e.g. ``heads.ner.loss_weight``)."""
        differing = setting_differences(self.state["settings"], jsonable(dict(settings)))
        if differing:
            raise TrainingError(
                f"The checkpoint in {os.fspath(self.path.parent)!r} was made by a different run: "
                + "; ".join(differing)
                + ". Resume with the settings it was made with, or start a new run without --resume "
                "(or with another --checkpoint-dir)."
            )

    def restore(self, model: keras.Model) -> None:
        """Load the weights, the optimizer's state and the dropout generators' states into ``model`` (compiled)."""
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.path / WEIGHTS)
        with np.load(self.path / RNG) as saved:
            state = {key: saved[key] for key in saved.files}
        set_random_state(model, state, self.path / RNG)
        self._torch_state = state if "torch_cpu" in state else None

    def resume_callbacks(self) -> list[keras.callbacks.Callback]:
        """Callbacks to run first in the resumed ``fit``: on PyTorch, set torch's generators at the first batch.

        Keras' ``fit`` on PyTorch draws from torch's global generator before the first batch (each torch
        ``DataLoader`` iterator draws its base seed; ``fit`` makes one to build the model and one per epoch), so
        the state is set after those draws: as checkpointed for a position inside an epoch, and advanced by the
        one draw the next epoch's ``DataLoader`` made in the interrupted run for an epoch-end checkpoint.
        """
        state = getattr(self, "_torch_state", None)
        if state is None:
            return []
        return [_SetTorchRandomStateAtFirstBatch(state, data_loader_draws=1 if self.batch == 0 else 0)]

    def restore_evaluation(self, evaluation: HeadEvaluationCallback) -> None:
        """Continue the held-out scoring where the run left it: best score, wait and the best epoch's weights."""
        if self.state["evaluation"] is not None:
            evaluation.restore_state(self.state["evaluation"], self.best_weights())

    def best_weights(self) -> list[np.ndarray] | None:
        """The best epoch's weights as of this checkpoint, or None when no epoch was scored yet."""
        path = self.path / BEST
        return keras.saving.load_model(path).get_weights() if path.is_file() else None


def resolve_run_seed(seed: int | None, checkpoint: Checkpoint | None) -> int:
    """The run's seed: the one given; else a resumed run's from its checkpoint; else one drawn now."""
    if seed is not None:
        return seed
    if checkpoint is not None:
        return checkpoint.seed
    return int(np.random.default_rng().integers(2**31))


def find_checkpoint(directory: str | os.PathLike) -> Checkpoint | None:
    """The last checkpoint in ``directory``, or None when there is none.

    A kill in the middle of replacing ``last/`` can leave only the previous checkpoint, renamed
    ``.last.old-<random>`` (see `atomic.atomic_directory`); that one is used then.
    """
    directory = Path(directory)
    candidates = [directory / LAST, *sorted(directory.glob(f".{LAST}.old-*"))]
    for path in candidates:
        if (path / STATE).is_file():
            state = json.loads((path / STATE).read_text(encoding="utf-8"))
            if state.get("format") != CHECKPOINT_FORMAT:
                raise TrainingError(
                    f"{os.fspath(path / STATE)!r} is a checkpoint of format {state.get('format')!r}; this version "
                    f"reads format {CHECKPOINT_FORMAT}. Start a new run without --resume."
                )
            return Checkpoint(path, state)
    return None


def load_checkpoint(directory: str | os.PathLike) -> Checkpoint:
    """The last checkpoint in ``directory``, or a `TrainingError` saying where it looked."""
    checkpoint = find_checkpoint(directory)
    if checkpoint is None:
        raise TrainingError(
            f"--resume: no checkpoint in {os.fspath(directory)!r} (looked for {os.fspath(Path(directory) / LAST)!r} "
            f"with a {STATE}). Start the run without --resume, or pass the --checkpoint-dir the interrupted run used."
        )
    return checkpoint


def start_fresh(directory: str | os.PathLike, verbose: int = 1) -> None:
    """Before a new (not resumed) run: drop an earlier run's ``best.keras`` so it cannot pass for this run's.

    The earlier run's ``last/`` stays until this run's first checkpoint replaces it. Says so when ``verbose``.
    """
    directory = Path(directory)
    earlier = find_checkpoint(directory)
    best = directory / BEST
    if verbose and (earlier is not None or best.is_file()):
        what = f"a checkpoint of an earlier run ({earlier.where})" if earlier is not None else "an earlier run's"
        removed = f"; its {BEST} is removed now" if best.is_file() else ""
        print(
            f"note: {os.fspath(directory)!r} holds {what}{' ' + BEST if earlier is None else ''}: this new run "
            f"replaces it{removed} (use --resume to continue that run instead)",
            flush=True,
        )
    if best.is_file():
        best.unlink()


def restore_best_file(directory: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """On resume, make ``best.keras`` the checkpoint's (a later one belongs to steps that will be run again)."""
    best = Path(directory) / BEST
    if (checkpoint.path / BEST).is_file():
        with atomic.atomic_path(best) as temp:
            shutil.copyfile(checkpoint.path / BEST, temp)
    elif best.is_file():
        best.unlink()


def _link_or_copy(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination)  # best.keras is replaced by rename, so the linked version never changes
    except OSError:
        shutil.copyfile(source, destination)


class TrainingCheckpoints(keras.callbacks.Callback):
    """Write a checkpoint every ``every`` training steps (batches; None: only at epoch ends) and at each epoch end,
    and ``best.keras`` whenever the held-out metric of ``evaluation`` improves. Place it after ``evaluation``.

    ``settings`` (JSON-able) are recorded so that a resume with other settings is refused; ``history`` is the
    per-epoch logs of the epochs run before a resume, continued here.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        batches: TrainingStream,
        tokenizer: DistilBertTokenizer,
        settings: Mapping[str, Any],
        epochs: int,
        every: int | None = None,
        evaluation: HeadEvaluationCallback | None = None,
        history: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.batches, self.tokenizer, self.epochs, self.every = batches, tokenizer, int(epochs), every
        self.settings = jsonable(dict(settings))
        self.evaluation = evaluation
        self.history: dict[str, list[float]] = {key: list(values) for key, values in (history or {}).items()}
        self.saved: list[tuple[int, int]] = []  # (epoch, batch) positions written, for tests and messages
        self._due = False

    @property
    def best_path(self) -> Path:
        return self.directory / BEST

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if not self.every:
            return
        if self._global_step() % self.every == 0:
            self._due = True
        position = self.batches.first_batch + batch + 1  # the next batch to train; Keras counts from the start
        # Never at an epoch's last batch (the epoch-end checkpoint follows, after the held-out scoring): a
        # checkpoint mid-epoch needs a batch after it. A due checkpoint waits until the stream shows one.
        if self._due and self.batches.has_batch(position):
            self.save(self.batches.epoch, position)
            self._due = False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key, value in (logs or {}).items():
            if isinstance(value, (int, float, np.floating, np.integer)):
                self.history.setdefault(key, []).append(float(value))
        if self.evaluation is not None and self.evaluation.best_epoch == epoch:
            with local_saving():  # in a data-parallel run only process 0 writes checkpoints
                self.evaluation.kept_model.save(self.best_path)  # atomic (`atomic.save_keras_model`)
        finished = epoch + 1 >= self.epochs or bool(self.model.stop_training)
        self.save(epoch + 1, 0, finished=finished)

    def _global_step(self) -> int:
        """Batches trained so far in the run: the optimizer's own count (saved and restored with it)."""
        return int(batch_counter(self.model.optimizer).numpy())

    def save(self, epoch: int, batch: int, finished: bool = False) -> None:
        """Replace ``last/`` by a checkpoint at data position (``epoch``, ``batch``): the next batch to train."""
        with atomic.atomic_directory(self.directory / LAST) as temp, local_saving():
            self.model.save_weights(temp / WEIGHTS)
            np.savez(temp / RNG, **random_state(self.model))
            (temp / TOKENIZER).write_text(self.tokenizer.to_json_string(), encoding="utf-8")
            evaluation = self.evaluation
            if evaluation is not None and evaluation.best_epoch is not None and self.best_path.is_file():
                _link_or_copy(self.best_path, temp / BEST)
            state = {
                "format": CHECKPOINT_FORMAT,
                "epoch": epoch,
                "batch": batch,
                "global_step": self._global_step(),
                "batches_per_epoch": self.batches.batches_per_epoch,
                "seed": self.batches.seed,
                "finished": finished,
                "evaluation": evaluation.state() if evaluation is not None else None,
                "history": self.history,
                "settings": self.settings,
            }
            (temp / STATE).write_text(json.dumps(jsonable(state), indent=1), encoding="utf-8")
        self.saved.append((epoch, batch))


class _SetTorchRandomStateAtFirstBatch(keras.callbacks.Callback):
    def __init__(self, state: Mapping[str, np.ndarray], data_loader_draws: int) -> None:
        super().__init__()
        self.state: Mapping[str, np.ndarray] | None = state
        self.data_loader_draws = data_loader_draws

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.state is None:
            return
        set_torch_random_state(self.state)
        self.state = None
        import torch  # this callback exists only on the PyTorch backend

        for _ in range(self.data_loader_draws):  # what `iter(DataLoader)` draws: its `_base_seed`
            torch.empty((), dtype=torch.int64).random_()


class _PartOfOneRun(keras.callbacks.Callback):
    """``callback`` during one of several ``fit`` calls that make one run: train begin/end only where the run does."""

    def __init__(self, callback: keras.callbacks.Callback, *, begins: bool, ends: bool) -> None:
        super().__init__()
        self.callback, self.begins, self.ends = callback, begins, ends

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params: dict[str, Any]) -> None:
        super().set_params(params)
        self.callback.set_params(params)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.begins:
            self.callback.on_train_begin(logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.ends:
            self.callback.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.callback.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.callback.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.callback.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.callback.on_train_batch_end(batch, logs)


def fit_from(
    model: keras.Model,
    batches: TrainingStream,
    dataset: Any,
    *,
    epoch: int,
    batch: int,
    epochs: int,
    callbacks: Sequence[keras.callbacks.Callback],
    verbose: int,
) -> list[dict[str, list[float]]]:
    """``model.fit`` on ``dataset`` (fed by the stream ``batches``) from data position (``epoch``, ``batch``)
    to the end of epoch ``epochs``;
    the Keras history of each ``fit`` call made.

    Keras' ``fit`` starts epochs at their first batch (``initial_epoch``), so a run resumed inside an epoch is
    two ``fit`` calls: the rest of that epoch, then the epochs after it. The callbacks see one run: one train
    begin, one train end. Both calls draw the same batches an uninterrupted run would.
    """
    batches.start_at(epoch, batch)
    options = {"shuffle": False, "verbose": verbose}  # the stream shuffles its rows itself
    if batch == 0:
        return [model.fit(dataset, initial_epoch=epoch, epochs=epochs, callbacks=list(callbacks), **options).history]
    rest_of_epoch = [_PartOfOneRun(callback, begins=True, ends=False) for callback in callbacks]
    histories = [model.fit(dataset, initial_epoch=epoch, epochs=epoch + 1, callbacks=rest_of_epoch, **options).history]
    if model.stop_training or epoch + 1 >= epochs:
        for callback in callbacks:
            callback.on_train_end()
        return histories
    batches.start_at(epoch + 1, 0)  # before `fit` reads the number of batches
    later = [_PartOfOneRun(callback, begins=False, ends=True) for callback in callbacks]
    histories.append(model.fit(dataset, initial_epoch=epoch + 1, epochs=epochs, callbacks=later, **options).history)
    return histories


def checkpoint_writer(
    directory: str | os.PathLike,
    checkpoint: Checkpoint | None,
    *,
    batches: TrainingStream,
    tokenizer: DistilBertTokenizer,
    settings: Mapping[str, Any],
    epochs: int,
    every: int | None,
    evaluation: HeadEvaluationCallback | None = None,
    verbose: int = 1,
) -> TrainingCheckpoints:
    """The callback that checkpoints a run into ``directory``, after readying the folder for it: a new run drops an
    earlier run's ``best.keras`` (`start_fresh`); a resumed one puts back the checkpoint's (`restore_best_file`)."""
    if checkpoint is None:
        start_fresh(directory, verbose)
    else:
        restore_best_file(directory, checkpoint)
    return TrainingCheckpoints(
        directory,
        batches=batches,
        tokenizer=tokenizer,
        settings=settings,
        epochs=epochs,
        every=every,
        evaluation=evaluation,
        history=checkpoint.state["history"] if checkpoint is not None else None,
    )


def resumable_fit(
    model: keras.Model,
    stream: TrainingStream,
    first_batch: Any,
    *,
    epochs: int,
    checkpoint: Checkpoint | None,
    callbacks: Sequence[keras.callbacks.Callback],
    verbose: int,
) -> dict[str, list[float]]:
    """Train ``model`` on ``stream`` from ``checkpoint``'s position (the start without one) to the end of epoch
    ``epochs``; the whole run's history, the checkpoint's earlier epochs first.

    A run killed after its last epoch trains nothing; the held-out scoring among ``callbacks`` (a
    `HeadEvaluationCallback`) still ends the run then, restoring the best epoch's weights. An error raised inside
    the stream (a bad row, an unreadable file) surfaces as that error, not as the framework's wrapper around it.
    """
    history = {key: list(values) for key, values in (checkpoint.state["history"] if checkpoint else {}).items()}
    if checkpoint is not None and checkpoint.finished:
        evaluation = next((c for c in callbacks if isinstance(c, HeadEvaluationCallback)), None)
        if evaluation is not None:
            evaluation.set_model(model)
            evaluation.on_train_end()
        return history
    position = (checkpoint.epoch, checkpoint.batch) if checkpoint is not None else (0, 0)
    try:
        with warnings.catch_warnings():
            # Keras warns at the end of each epoch of a dataset of unknown length; a stream ends its epochs so.
            warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
            for logs in fit_from(
                model,
                stream,
                stream.dataset(first_batch),
                epoch=position[0],
                batch=position[1],
                epochs=epochs,
                callbacks=[*(checkpoint.resume_callbacks() if checkpoint else []), *callbacks],
                verbose=verbose,
            ):
                for key, values in logs.items():
                    history.setdefault(key, []).extend(float(v) for v in values)
    except Exception as error:
        if stream.failure is not None and stream.failure is not error:
            raise stream.failure from None
        raise
    return history
