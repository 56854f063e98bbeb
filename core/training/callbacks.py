"""What runs during `fit`: per-epoch scoring with early stopping, and token dropout batches."""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from distilbert_heads.text.tokenizer import DistilBertTokenizer
from distilbert_heads.training.evaluation import LOWER_IS_BETTER, primary_metric
from distilbert_heads.training.streaming import drop_tokens, special_token_ids


class HeadEvaluationCallback(keras.callbacks.Callback):
    """Each epoch, score the model on held-out examples with the head's own metrics.

    Adds ``val_<metric>`` to the epoch logs (so they land in the history), stops training when
    the watched metric has not improved for ``patience`` epochs, and restores the best
    epoch's weights when training ends.

    ``keep``: the model that is scored and whose best weights are kept and restored (and that checkpoints save as
    ``best.keras``); default the model ``fit`` trains. `distill` passes the student, which its distiller trains.
    """

    def __init__(
        self,
        score: Callable[[Any], dict[str, float]],
        *,
        monitor: str | None = None,
        patience: int = 2,
        restore_best_weights: bool = True,
        verbose: int = 1,
        keep: keras.Model | None = None,
    ) -> None:
        super().__init__()
        self.score = score
        self.keep = keep
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

    @property
    def kept_model(self) -> keras.Model:
        """The model scored, whose best weights are kept (``keep``, else the model being fit)."""
        return self.keep if self.keep is not None else self.model

    def _improved(self, value: float) -> bool:
        if self.best is None or math.isnan(self.best):
            return not math.isnan(value)
        if self.monitor.rsplit("/", 1)[-1] in LOWER_IS_BETTER:  # "loss", or a multi-head run's "ner/loss"
            return value < self.best
        return value > self.best

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        metrics = self.score(self.kept_model)
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
                self._best_weights = self.kept_model.get_weights()
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
            self.kept_model.set_weights(self._best_weights)

    def state(self) -> dict[str, Any]:
        """What a checkpoint records to continue early stopping: the best value, its epoch and metrics, the wait."""
        return {
            "monitor": self.monitor,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_metrics": dict(self.best_metrics),
            "wait": self._wait,
        }

    def restore_state(self, state: dict[str, Any], best_weights: list[np.ndarray] | None) -> None:
        """Continue from a checkpoint's `state` (and the best epoch's weights, restored when training ends)."""
        self.monitor = state["monitor"]
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.best_metrics, self._wait = dict(state["best_metrics"]), int(state["wait"])
        self._best_weights = best_weights if self.restore_best_weights else None


class TokenDropoutBatches(keras.utils.PyDataset):
    """Shuffled training batches (a new order each epoch) in which text tokens are replaced by ``[UNK]`` at random
    with probability ``rate`` (0: never).

    Special tokens and padding are never replaced; labels are untouched.

    Every batch is a pure function of ``(seed, epoch, batch index)``: the epoch's row order is
    ``np.random.default_rng([seed, epoch]).permutation(rows)`` and the token dropout of batch ``b`` draws from
    ``np.random.default_rng([seed, epoch, b])``. So the same seed gives the same batches in every run, whatever
    the batch size and whichever batches were served before, and a resumed run reproduces the rest of an epoch
    exactly. Without a ``seed`` one is drawn (``self.seed``; record it to resume).

    ``start_at(epoch: int, batch: int)`` sets the data position: the next epoch served is ``epoch``, from its
    batch ``batch`` (the first ``batch`` batches are skipped, so ``len()`` is the batches left in that epoch).
    ``on_epoch_end`` moves on to the next epoch's order.

    For rows already in memory and ``model.fit``; `train` streams its files instead
    (`distilbert_heads.training.streaming.TrainingStream`, which batches the same way).
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
        self.special_ids = special_token_ids(tokenizer)
        self.size = len(self.x["input_ids"])
        self.seed = int(seed) if seed is not None else secrets.randbelow(2**32)  # the caller's RNGs stay untouched
        self.batches_per_epoch = math.ceil(self.size / self.batch_size)
        self.epoch = 0
        self.first_batch = 0
        self._orders: dict[int, np.ndarray] = {}

    def start_at(self, epoch: int, batch: int) -> None:
        """Serve ``epoch`` next, from its batch ``batch`` on (0 <= batch < batches per epoch)."""
        if epoch < 0 or not 0 <= batch < self.batches_per_epoch:
            raise ValueError(
                f"start_at({epoch}, {batch}): the epoch must be 0 or more and the batch from 0 to "
                f"{self.batches_per_epoch - 1} (an epoch has {self.batches_per_epoch} batches)."
            )
        self.epoch, self.first_batch = int(epoch), int(batch)

    @property
    def order(self) -> np.ndarray:
        """The row order of the current epoch."""
        if self.epoch not in self._orders:
            self._orders = {self.epoch: np.random.default_rng([self.seed, self.epoch]).permutation(self.size)}
        return self._orders[self.epoch]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.first_batch

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray], Any]:
        batch = self.first_batch + index
        rows = self.order[batch * self.batch_size : (batch + 1) * self.batch_size]
        inputs = {key: value[rows] for key, value in self.x.items()}
        if self.rate == 0:
            return inputs, _take_rows(self.y, rows)
        inputs["input_ids"] = drop_tokens(
            inputs, self.rate, self.special_ids, self.unk_id, np.random.default_rng([self.seed, self.epoch, batch])
        )
        return inputs, _take_rows(self.y, rows)

    def on_epoch_end(self) -> None:
        self.start_at(self.epoch + 1, 0)


def _take_rows(value: Any, rows: np.ndarray) -> Any:
    if isinstance(value, Mapping):
        return {key: _take_rows(item, rows) for key, item in value.items()}
    return np.asarray(value)[rows]
