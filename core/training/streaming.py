"""Training batches streamed from a data file: rows are read, validated and encoded as training needs them.

A file of any size trains in flat memory: only a shuffle buffer of rows (`SHUFFLE_BUFFER_ROWS`), the
sample read up front (`SAMPLE_ROWS`) and a few encoded batches are held, and the first step starts
after the sample, not after the whole file.

Why ``tf.data``: Keras takes a ``tf.data.Dataset`` of unknown length on every backend (TensorFlow,
JAX, PyTorch), ends the epoch when it runs out and iterates it afresh for the next, and ``prefetch``
encodes the next batches on a background thread while the current step runs. TensorFlow is already
a dependency. ``keras.utils.PyDataset`` needs the number of batches before the first epoch, which a
stream cannot know without reading the whole file first; grain would add a dependency for what one
generator does here.

Order: rows pass through a shuffle buffer (as ``tf.data``'s ``shuffle``) drawn from a generator seeded
by ``(seed, epoch)``, and token dropout by ``(seed, epoch, batch)``, so an epoch's batches are a pure
function of the seed, the epoch and the file: a resumed run (`TrainingStream.start_at`) sees the same
batches as the run it continues. A file no larger than the buffer is shuffled whole each epoch.

Padding: each batch is padded to its own longest row (as transformers' ``DataCollatorWithPadding``); on
the JAX backend rounded up to a multiple of `JAX_PAD_MULTIPLE` tokens, so it compiles a handful of step
shapes, not one per length.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from pydantic import BaseModel

from distilbert_heads.plugins.head import TaskHead
from distilbert_heads.text.tokenizer import DistilBertTokenizer
from distilbert_heads.training import data_files
from distilbert_heads.training.defaults import SAMPLE_ROWS, SHUFFLE_BUFFER_ROWS
from distilbert_heads.training.examples import strip_example_prefix
from distilbert_heads.training.settings import TrainingError

# JAX compiles a step per input shape, so there batches are padded to a multiple of this many tokens: a handful
# of shapes instead of one per length. TensorFlow's traced step takes any length, and PyTorch runs eagerly, so
# there a batch is padded to its longest row exactly (as `DataCollatorWithPadding`); rounding up would only add
# work (measured: fine-tuning MiniLM on short movie snippets).
JAX_PAD_MULTIPLE = 16


def pad_multiple() -> int:
    """The multiple of tokens a batch's length is rounded up to on the running Keras backend."""
    return JAX_PAD_MULTIPLE if keras.backend.backend() == "jax" else 1


# Examples encoded together (a multiple of the batch size): one tokenizer call per chunk, not per row.
ENCODE_CHUNK_BATCHES = 8
PREFETCH_BATCHES = 4
# A batch's random draws for the head's own preparation (masking) use a stream apart from token dropout's.
BATCH_PREPARATION_STREAM = 1

Tree = Any  # a numpy array or a (nested) dict of them: a head's inputs or targets


@dataclass
class FileSample:
    """The first rows of a data file, read before training: ``(line, example)`` pairs and how far they reach."""

    path: Path
    examples: list[tuple[int, BaseModel]]
    whole_file: bool
    bytes_read: int
    size: int

    def estimated_rows(self) -> int:
        """The file's number of valid rows: exact when the sample is the whole file, else scaled by its bytes."""
        if self.whole_file or not self.examples or self.bytes_read == 0:
            return len(self.examples)
        return max(len(self.examples), round(len(self.examples) * self.size / self.bytes_read))


def read_sample(
    path: str | os.PathLike,
    schema: type[BaseModel],
    task: str,
    *,
    rows: int | None = None,
    on_bad_row: data_files.BadRowHandler | None = None,
) -> FileSample:
    """Up to ``rows`` (default `SAMPLE_ROWS`) valid examples from the start of ``path`` (a bad row raises, or goes
    to ``on_bad_row``)."""
    rows = SAMPLE_ROWS if rows is None else rows
    reader = data_files.RowReader(path, fields=list(schema.model_fields), on_bad_row=on_bad_row)
    examples: list[tuple[int, BaseModel]] = []
    iterator = data_files.iter_examples(path, schema, task, on_bad_row=on_bad_row, reader=reader)
    whole = True
    for item in iterator:
        examples.append(item)
        if len(examples) >= rows:
            whole = next(iterator, None) is None
            break
    iterator.close()
    if not examples:
        raise data_files.DataFileError(data_files.no_examples_message(Path(path).name, schema))
    return FileSample(Path(path), examples, whole, reader.bytes_read, reader.size)


class ExampleEncoder:
    """A head's `encode_examples` over chunks of ``(line, example)``: a row the head rejects fails with its file and
    line, or, with ``on_bad_row``, is left out (with its reason) and the rest of the chunk encoded."""

    def __init__(
        self,
        head: TaskHead,
        tokenizer: DistilBertTokenizer,
        max_length: int,
        path: str | os.PathLike,
        on_bad_row: data_files.BadRowHandler | None = None,
    ) -> None:
        self.head, self.tokenizer, self.max_length = head, tokenizer, max_length
        self.name = Path(path).name
        self.on_bad_row = on_bad_row

    def __call__(self, chunk: Sequence[tuple[int, BaseModel]]) -> tuple[Tree, Tree] | None:
        """The chunk's inputs and targets (None when every row was left out)."""
        try:
            return self._encode([example for _, example in chunk])
        except (ValueError, KeyError, IndexError) as error:
            if len(chunk) == 1:
                return self._bad_row(chunk[0], error)
            chunk_error = error
        # Find the bad row(s) by encoding one at a time; keep the good ones in their order.
        parts = [self(chunk[i : i + 1]) for i in range(len(chunk))]
        good = [part for part in parts if part is not None]
        if not good:
            return None
        if len(good) == len(parts):  # every row alone is fine: the chunk fails only together
            raise TrainingError(f"{self.name} lines {chunk[0][0]}-{chunk[-1][0]}: {chunk_error}") from None
        return join_batches(good, self.tokenizer.pad_token_id)

    def _encode(self, examples: list[BaseModel]) -> tuple[Tree, Tree]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x, y = self.head.encode_examples(examples, self.tokenizer, self.max_length)
        for warning in caught:
            _warnings_seen.note(warning)
        return x, y

    def _bad_row(self, item: tuple[int, BaseModel], error: Exception) -> None:
        line, example = item
        reason = f"{self.name} line {line}: {strip_example_prefix(str(error))}"
        if self.on_bad_row is None:
            raise TrainingError(reason) from None
        self.on_bad_row(line, example.model_dump_json(), reason)
        return None


class _WarningsSeen:
    """A head's data warnings (e.g. QA windows dropped) once per message kind, not once per encoded chunk."""

    def __init__(self) -> None:
        self.shown: set[tuple[type, str]] = set()

    def note(self, warning: warnings.WarningMessage) -> None:
        text = str(warning.message)
        key = (warning.category, text.split(":")[0])
        if key in self.shown:
            return
        self.shown.add(key)
        warnings.warn_explicit(
            f"{text} (shown for the first batch it happened in only)",
            warning.category,
            warning.filename,
            warning.lineno,
        )


_warnings_seen = _WarningsSeen()


class TrainingStream:
    """Shuffled, encoded, token-dropped, padded training batches of one data file, epoch after epoch.

    ``batches(epoch)`` yields the batches of an epoch: ``(inputs, {head_name: targets})`` with exactly
    ``batch_size`` rows (the last one fewer). `dataset` wraps it for ``model.fit``; `EpochTracker`
    tells it which epoch Keras is in. `start_at(epoch, batch)` makes that epoch begin at that batch,
    for a resumed run. Rows are re-read from the file every epoch.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        schema: type[BaseModel],
        task: str,
        encoder: ExampleEncoder,
        *,
        head_name: str,
        batch_size: int,
        seed: int,
        token_dropout: float = 0.0,
        shuffle_buffer: int = SHUFFLE_BUFFER_ROWS,
        on_bad_row: data_files.BadRowHandler | None = None,
        batches_per_epoch: int | None = None,
        split: Any = None,
    ) -> None:
        self.reset_position(batches_per_epoch)
        # A data-parallel run (`distilbert_heads.training.distributed.DataParallelRun`): each global batch is cut to
        # the rows that split evenly across the replicas, then this process keeps its share. None: whole batches.
        self.split = split
        self.path, self.schema, self.task, self.encoder = Path(path), schema, task, encoder
        self.head_name, self.batch_size, self.seed = head_name, int(batch_size), int(seed)
        self.token_dropout, self.shuffle_buffer, self.on_bad_row = float(token_dropout), int(shuffle_buffer), on_bad_row
        tokenizer = encoder.tokenizer
        self.pad_id, self.unk_id = tokenizer.pad_token_id, tokenizer.unk_token_id
        self.special_ids = special_token_ids(tokenizer)

    # -- position ------------------------------------------------------------------------------------------
    def reset_position(self, batches_per_epoch: int | None) -> None:
        """The position state of a new stream (a subclass that reads no file itself calls it too): epoch 0, nothing
        produced, and the epoch's number of batches when known (None when not)."""
        self.batches_per_epoch = batches_per_epoch  # when known (the whole file was read up front)
        self.epoch = 0
        self.first_batch = 0  # where the current epoch started: 0, or the batch a resumed run continues at
        self.produced = 0  # batches of the current epoch handed to the pipeline so far (counting skipped ones)
        self.exhausted = False  # the current epoch has no more batches
        self._start: tuple[int, int] | None = None

    def start_at(self, epoch: int, batch: int) -> None:
        """Begin epoch ``epoch`` (0-based) at its batch ``batch``, skipping the batches before it (a resumed run)."""
        self._start = (int(epoch), int(batch))

    def _skip_for(self, epoch: int) -> int:
        if self._start is not None and self._start[0] == epoch:
            return self._start[1]
        return 0

    def begin_epoch(self, epoch: int) -> None:
        """Keras is starting ``epoch``: its batches follow (from `start_at`'s batch when it named this epoch)."""
        self.epoch, self.first_batch = epoch, self._skip_for(epoch)
        self.produced, self.exhausted = self.first_batch, False

    def has_batch(self, index: int) -> bool:
        """Whether the current epoch has a batch ``index`` (0-based), as far as is known without waiting: when the
        epoch's size is known, or once the pipeline has been handed that batch. False when it cannot tell yet."""
        if self.batches_per_epoch is not None:
            return index < self.batches_per_epoch
        return self.produced > index

    # -- batches -------------------------------------------------------------------------------------------
    def examples(self, epoch: int) -> Iterator[tuple[int, BaseModel]]:
        """The file's valid ``(line, example)`` pairs in this epoch's shuffled order."""
        rows = data_files.iter_examples(self.path, self.schema, self.task, on_bad_row=self.on_bad_row)
        return shuffled(rows, self.shuffle_buffer, np.random.default_rng([self.seed, epoch]))

    def batches(self, epoch: int, *, skip: int = 0) -> Iterator[tuple[Tree, Tree]]:
        """Epoch ``epoch``'s batches, from its batch ``skip`` on (earlier ones are built and dropped unseen)."""
        chunk_size = self.batch_size * ENCODE_CHUNK_BATCHES
        pending: list[tuple[Tree, Tree]] = []
        pending_rows = 0
        index = 0

        def chunks() -> Iterator[list[tuple[int, BaseModel]]]:
            chunk: list[tuple[int, BaseModel]] = []
            for item in self.examples(epoch):
                chunk.append(item)
                if len(chunk) == chunk_size:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

        for chunk in chunks():
            encoded = self.encoder(chunk)
            if encoded is None:
                continue
            pending.append(encoded)
            pending_rows += rows_of(encoded[0])
            while pending_rows >= self.batch_size:
                x, y = join_batches(pending, self.pad_id)
                (x_head, x_tail), (y_head, y_tail) = split_rows(x, self.batch_size), split_rows(y, self.batch_size)
                if index >= skip:
                    yield self._finish(x_head, y_head, epoch, index)
                index += 1
                pending_rows -= self.batch_size
                pending = [(x_tail, y_tail)] if pending_rows else []
        if pending_rows and index >= skip:
            if self.split is not None and not self.split.usable_rows(pending_rows):
                self._say_cut(pending_rows, 0)  # no row of it splits across the replicas: the batch is left out
                return
            x, y = join_batches(pending, self.pad_id)
            yield self._finish(x, y, epoch, index)

    def _finish(self, x: Tree, y: Tree, epoch: int, index: int) -> tuple[Tree, Tree]:
        rows = rows_of(x)
        if self.split is not None and self.split.usable_rows(rows) < rows:
            usable = self.split.usable_rows(rows)
            self._say_cut(rows, usable)
            (x, _), (y, _) = split_rows(x, usable), split_rows(y, usable)
            rows = usable
        x, y = trim_batch(x, y)
        if self.token_dropout > 0:
            rng = np.random.default_rng([self.seed, epoch, index])
            x = {**x, "input_ids": drop_tokens(x, self.token_dropout, self.special_ids, self.unk_id, rng)}
        rng = np.random.default_rng([self.seed, epoch, index, BATCH_PREPARATION_STREAM])
        x, y = self.encoder.head.prepare_batch(x, y, tokenizer=self.encoder.tokenizer, rng=rng)
        if self.split is not None:
            x, y = self.split.local_rows(x, rows), self.split.local_rows(y, rows)
        return x, {self.head_name: y}

    def _say_cut(self, rows: int, usable: int) -> None:
        # An epoch's last, short batch must split evenly across the replicas: its last rows wait for the next
        # epoch (shuffled anew, so other rows are cut then). Said once per run, never silently.
        if not getattr(self, "_said_cut", False):
            self._said_cut = True
            warnings.warn(
                f"{self.path.name}: the epoch's last batch has {rows} row(s), which do not split across "
                f"{self.split.replicas} replicas; its last {rows - usable} row(s) are left out of this epoch (the "
                f"order is reshuffled each epoch). A row count that is a multiple of {self.split.replicas} "
                "keeps every row.",
                UserWarning,
                stacklevel=2,
            )

    def _epoch_batches(self) -> Iterator[tuple[Tree, Tree]]:
        for batch in self.batches(self.epoch, skip=self.first_batch):
            self.produced += 1
            yield batch
        self.exhausted = True

    def dataset(self, first_batch: tuple[Tree, Tree]) -> Any:
        """A ``tf.data.Dataset`` over the current epoch's batches, for ``model.fit`` on any backend.

        ``first_batch`` (any batch of this stream) fixes the structure and dtypes; lengths stay open.
        """
        import tensorflow as tf  # a Keras data pipeline: TensorFlow is a dependency, whatever the backend

        self._first = first_batch
        signature = tree_map(lambda a: tf.TensorSpec(shape=(None,) * a.ndim, dtype=tf.as_dtype(a.dtype)), first_batch)
        dataset = tf.data.Dataset.from_generator(self._guarded_epoch_batches, output_signature=signature)
        return dataset.prefetch(PREFETCH_BATCHES)

    def _guarded_epoch_batches(self) -> Iterator[tuple[Tree, Tree]]:
        # TensorFlow turns an exception raised here into an opaque InvalidArgumentError; keep the real one.
        try:
            for batch in self._epoch_batches():
                yield tree_map(lambda a, like: np.asarray(a, dtype=like.dtype), batch, self._first)
        except Exception as error:
            self.failure = error
            raise

    failure: Exception | None = None


class EpochTracker(keras.callbacks.Callback):
    """Tells a `TrainingStream` which epoch ``fit`` is starting (its order and dropout depend on it), and keeps the
    optimizer's step counter equal to the batches trained.

    Keras ends an epoch of unknown length when fetching the next batch fails. On TensorFlow that last, failed call
    can still add 1 to ``optimizer.iterations`` (the increment does not wait for the fetch), which would shift the
    learning-rate schedule and gradient accumulation by a step per epoch, and differently in a resumed run. At each
    epoch end the counter is set back to the steps really taken.

    ``epoch_seconds`` holds each epoch's training time (the steps, not the held-out scoring after them).
    """

    def __init__(self, stream: TrainingStream) -> None:
        super().__init__()
        self.stream = stream
        self._first_step = 0
        self._started = 0.0
        self.epoch_seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.stream.begin_epoch(epoch)
        self._first_step = int(batch_counter(self.model.optimizer).numpy())
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.epoch_seconds.append(time.perf_counter() - self._started)
        counter = batch_counter(self.model.optimizer)
        taken = self._first_step + self.stream.produced - self.stream.first_batch
        if int(counter.numpy()) != taken:
            counter.assign(taken)


def batch_counter(optimizer: Any) -> Any:
    """The optimizer's batch counter, a Keras variable (read it with ``.numpy()``, which on TensorFlow avoids
    NumPy 2's copy-keyword warning). With gradient accumulation ``iterations`` is computed (batches // steps);
    the variable behind it counts batches."""
    return optimizer._iterations


# -- token dropout ------------------------------------------------------------------------------------------
def special_token_ids(tokenizer: DistilBertTokenizer) -> np.ndarray:
    """Ids token dropout never replaces: padding, [CLS], [SEP], [UNK] and [MASK]."""
    ids = (
        tokenizer.pad_token_id,
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.unk_token_id,
        tokenizer.mask_token_id,
    )
    return np.array([i for i in ids if i is not None])


def drop_tokens(
    inputs: Mapping[str, np.ndarray], rate: float, special_ids: np.ndarray, unk_id: int, rng: np.random.Generator
) -> np.ndarray:
    """``inputs["input_ids"]`` with each text token (not special, not padding) replaced by ``unk_id`` with
    probability ``rate``, drawn from ``rng``."""
    ids = np.array(inputs["input_ids"], copy=True)
    droppable = ~np.isin(ids, special_ids)
    if "attention_mask" in inputs:
        droppable &= np.asarray(inputs["attention_mask"]).astype(bool)
    ids[droppable & (rng.random(ids.shape) < rate)] = unk_id
    return ids


# -- shuffling and batch arithmetic -----------------------------------------------------------------------
def shuffled(items: Iterator[Any], buffer_size: int, rng: np.random.Generator) -> Iterator[Any]:
    """``items`` in a random order drawn through a buffer of ``buffer_size`` (``tf.data``'s ``shuffle``): an
    iterable no longer than the buffer comes out as one uniform permutation."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        slot = int(rng.integers(buffer_size))
        yield buffer[slot]
        buffer[slot] = item
    for slot in rng.permutation(len(buffer)):
        yield buffer[slot]


def tree_map(function: Any, tree: Tree, *others: Tree) -> Tree:
    if isinstance(tree, Mapping):
        return {key: tree_map(function, tree[key], *(other[key] for other in others)) for key in tree}
    if isinstance(tree, tuple):
        return tuple(tree_map(function, *parts) for parts in zip(tree, *others))
    return function(tree, *others)


def leaves(tree: Tree) -> list[np.ndarray]:
    if isinstance(tree, Mapping):
        return [leaf for value in tree.values() for leaf in leaves(value)]
    if isinstance(tree, tuple):
        return [leaf for value in tree for leaf in leaves(value)]
    return [np.asarray(tree)]


def rows_of(tree: Tree) -> int:
    return len(leaves(tree)[0])


def split_rows(tree: Tree, count: int) -> tuple[Tree, Tree]:
    return tree_map(lambda a: np.asarray(a)[:count], tree), tree_map(lambda a: np.asarray(a)[count:], tree)


def join_batches(parts: Sequence[tuple[Tree, Tree]], pad_id: int) -> tuple[Tree, Tree]:
    """Encoded chunks joined row-wise. Each chunk is padded to its own longest row, so narrower ones are widened
    first: ids with ``pad_id``, other inputs with 0, token-aligned targets with the value the head itself put at
    padded positions (e.g. -100 for NER tags), found in any chunk."""
    if len(parts) == 1:
        return parts[0]
    widths = [x["input_ids"].shape[-1] for x, _ in parts]
    width = max(widths)
    masks = [x.get("attention_mask") for x, _ in parts]

    def join_inputs(key: str) -> np.ndarray:
        arrays = [np.asarray(x[key]) for x, _ in parts]
        fill = pad_id if key == "input_ids" else 0
        return np.concatenate([_widen(a, x["input_ids"], width, fill) for a, (x, _) in zip(arrays, parts)])

    def join_targets(*arrays: np.ndarray) -> np.ndarray:
        arrays = tuple(np.asarray(a) for a in arrays)
        fill = next((f for a, m in zip(arrays, masks) if (f := _target_fill(a, m)) is not None), 0)
        return np.concatenate([_widen(a, x["input_ids"], width, fill) for a, (x, _) in zip(arrays, parts)])

    x = {key: join_inputs(key) for key in parts[0][0]}
    return x, tree_map(join_targets, *(y for _, y in parts))


def trim_batch(x: Tree, y: Tree) -> tuple[Tree, Tree]:
    """Inputs (and targets aligned with their tokens) cut to the batch's longest row rounded up to `pad_multiple`
    (never wider than they are): only positions that are padding in every row go."""
    ids = np.asarray(x["input_ids"])
    mask = x.get("attention_mask")
    length = ids.shape[-1]
    if mask is None or not np.asarray(mask).any():
        return x, y
    used = int(np.asarray(mask).reshape(-1, length).any(axis=0).nonzero()[0].max()) + 1
    multiple = pad_multiple()
    width = min(math.ceil(used / multiple) * multiple, length)
    if width == length:
        return x, y

    def cut(array: Any) -> Any:
        array = np.asarray(array)
        if array.shape[: ids.ndim] != ids.shape:
            return array
        return array[(slice(None),) * (ids.ndim - 1) + (slice(0, width),)]

    return {key: cut(value) for key, value in x.items()}, tree_map(cut, y)


def _widen(array: np.ndarray, ids: np.ndarray, width: int, fill: Any) -> np.ndarray:
    """``array`` padded along the token axis (axis ``ids.ndim - 1``) to ``width`` when it is aligned with ``ids``."""
    if array.shape[: ids.ndim] != ids.shape or ids.shape[-1] >= width:
        return array
    pad = [(0, 0)] * array.ndim
    pad[ids.ndim - 1] = (0, width - ids.shape[-1])
    return np.pad(array, pad, constant_values=fill)


def _target_fill(array: np.ndarray, mask: Any) -> Any:
    """The value a head put at padded positions of a token-aligned target (None when there is no padding)."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if array.shape[: mask.ndim] != mask.shape:
        return None
    padded = array[mask == 0]
    return None if padded.size == 0 else padded.reshape(-1)[0]


__all__ = [
    "EpochTracker",
    "ExampleEncoder",
    "FileSample",
    "TrainingStream",
    "read_sample",
    "shuffled",
]
