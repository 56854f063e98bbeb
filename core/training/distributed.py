"""Data-parallel training: one run on several devices and several processes, through the backend's own engine.

On the JAX backend `train` runs under ``keras.distribution.DataParallel``: the weights are replicated on every
device of every process, each global batch (``batch_size`` rows) is split across the devices, and the gradients are
averaged by XLA's collectives, so the run trains the same weights as one device would on the same global batches.
Several processes (machines, or processes on one machine) join through ``keras.distribution.initialize`` (JAX's
distributed runtime): give each the coordinator's ``HOST:PORT``, the number of processes and its own id, or set
Keras' variables ``KERAS_DISTRIBUTION_JOB_ADDRESSES``, ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and
``KERAS_DISTRIBUTION_PROCESS_ID``. Processes on CPUs talk through gloo (``jax_cpu_collectives_implementation``).

Data: every process reads the whole file in the same seeded order and builds the same global batches as a
single-process run (`distilbert_heads.training.streaming.TrainingStream`), then keeps only its rows of each
(`DataParallelRun.local_rows`), so Keras' own dataset sharding (which needs a fixed batch size) is turned off
(``auto_shard_dataset=False``). Held-out scoring feeds every process the same rows, laid out replicated, so each
process gets all the answers.

Writing: only process 0 writes the model, the checkpoints and the skipped-rows file; a resumed run reads the
checkpoint folder in every process, so it must be on a filesystem they all see.

Other backends: on TensorFlow ``keras.distribution`` is a prototype that does nothing, so ``"mirrored"`` runs
``tf.distribute.MirroredStrategy`` over the local devices instead; ``MultiWorkerMirroredStrategy`` fails inside
Keras' TensorFlow trainer (keras-team/keras#20585) and is refused. The PyTorch backend has no
``keras.distribution`` yet and is refused. A distribution asked for is never quietly a single-device run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import keras
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from distilbert_heads.training.settings import TrainingError

DATA_PARALLEL = "data-parallel"
MIRRORED = "mirrored"
STRATEGIES = (DATA_PARALLEL, MIRRORED)
MULTI_WORKER_TF_ISSUE = "keras-team/keras#20585"
ENV_COORDINATOR = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
ENV_NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ENV_PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"


class Distribution(BaseModel):
    """How a run is spread: ``strategy`` (``"data-parallel"`` on JAX, ``"mirrored"`` on TensorFlow), ``devices``
    (local devices per process: a count of the first ones, or ``"cpu:0,cpu:1"``-style names; None: all), and for
    several processes ``coordinator`` (``HOST:PORT`` of process 0), ``num_processes`` and ``process_id`` (each
    read from Keras' ``KERAS_DISTRIBUTION_*`` variables when not given)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["data-parallel", "mirrored"] = DATA_PARALLEL
    devices: int | list[str] | None = Field(default=None)
    coordinator: str | None = None
    num_processes: int | None = Field(default=None, ge=1)
    process_id: int | None = Field(default=None, ge=0)

    @field_validator("devices", mode="before")
    @classmethod
    def _device_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            return int(text) if text.isdigit() else [name.strip() for name in text.split(",") if name.strip()]
        return value

    @field_validator("devices")
    @classmethod
    def _at_least_one(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 1 or isinstance(value, list) and not value:
            raise ValueError("give at least one device (a count >= 1 or names such as cpu:0,cpu:1)")
        return value

    def from_environment(self) -> Distribution:
        """This setting with the multi-process fields Keras' ``KERAS_DISTRIBUTION_*`` variables give, where unset."""
        values = self.model_dump()
        if values["coordinator"] is None and os.environ.get(ENV_COORDINATOR):
            values["coordinator"] = os.environ[ENV_COORDINATOR]
        for key, name in (("num_processes", ENV_NUM_PROCESSES), ("process_id", ENV_PROCESS_ID)):
            if values[key] is None and os.environ.get(name):
                try:
                    values[key] = int(os.environ[name])
                except ValueError:
                    raise TrainingError(f"${name} must be a whole number, got {os.environ[name]!r}.") from None
        return Distribution(**values)

    @property
    def multi_process(self) -> bool:
        return (self.num_processes or 1) > 1


def parse_distribution(value: str | Distribution | Mapping[str, Any] | None) -> Distribution | None:
    """``value`` as a `Distribution`: a strategy name, a mapping of its fields, or one already made."""
    if value is None or isinstance(value, Distribution):
        return value
    try:
        if isinstance(value, str):
            return Distribution(strategy=value)
        return Distribution(**dict(value))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'distribution'}: {e['msg']}" for e in error.errors())
        raise TrainingError(
            f"distribution={value!r} (--distribution): {problems}. Expected one of {', '.join(STRATEGIES)}, "
            "with devices, coordinator, num_processes and process_id."
        ) from None


class DataParallelRun:
    """A distribution set up for one training run: the devices, this process's place among the processes, and the
    backend's scope to build and train the model in."""

    def __init__(
        self,
        setting: Distribution,
        *,
        process_index: int,
        process_count: int,
        replicas: int,
        scope: Any,
        keras_distribution: Any = None,
    ) -> None:
        self.setting = setting
        self.process_index, self.process_count, self.replicas = process_index, process_count, replicas
        self._scope = scope
        self.keras_distribution = keras_distribution

    @property
    def writes_files(self) -> bool:
        """Whether this process writes the model, checkpoints and other files (process 0 only)."""
        return self.process_index == 0

    def describe(self) -> dict[str, Any]:
        return {
            "strategy": self.setting.strategy,
            "replicas": self.replicas,
            "processes": self.process_count,
            "process_id": self.process_index,
        }

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        with self._scope():
            yield

    def usable_rows(self, rows: int) -> int:
        """Of a batch of ``rows`` rows, how many split evenly across the replicas (all of them for a full batch)."""
        return rows - rows % self.replicas

    def local_rows(self, tree: Any, rows: int) -> Any:
        """This process's rows of a global batch of ``rows`` rows (already cut to `usable_rows`)."""
        share = rows // self.process_count
        start = self.process_index * share
        return _tree_map(lambda a: np.asarray(a)[start : start + share], tree)

    def training_batches(self) -> keras.callbacks.Callback:
        """A callback (run it first) that splits the batches across the replicas only while an epoch trains.

        Outside the epochs' training steps (held-out scoring, the final metrics, predictions) every process is fed
        the same rows laid out replicated, so each process computes and gets all the answers.
        """
        return _SplitWhileTraining(self.keras_distribution)


class _SplitWhileTraining(keras.callbacks.Callback):
    def __init__(self, distribution: Any) -> None:
        super().__init__()
        self.distribution = distribution

    def _split(self, split: bool) -> None:
        if self.distribution is not None:
            self.distribution.replicate_data = not split

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._split(True)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self._split(False)

    def on_train_end(self, logs: Any = None) -> None:
        self._split(False)


@contextlib.contextmanager
def local_saving() -> Iterator[None]:
    """No distribution while a file is written by one process alone.

    Keras' saving creates variables (``saving_lib`` builds a throwaway optimizer), and under a multi-process
    distribution creating a variable is a collective every process must join: process 0 saving alone would wait
    for the others forever. The weights themselves are replicated, so each process reads them locally.
    """
    current = keras.distribution.distribution()
    if current is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


def _tree_map(function: Any, tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _tree_map(function, value) for key, value in tree.items()}
    if isinstance(tree, tuple):
        return tuple(_tree_map(function, value) for value in tree)
    return function(tree)


def setup(setting: Distribution, *, batch_size: int, seed: int | None) -> DataParallelRun:
    """Check ``setting`` against the running backend and the batch size, join the processes, and return the run.

    Raises `TrainingError` for a backend that cannot run it (naming the one that can), a batch size the replicas do
    not divide, a multi-process run without a seed, or devices that do not exist.
    """
    setting = setting.from_environment()
    backend = keras.backend.backend()
    if backend == "torch":
        raise TrainingError(
            f"distribution={setting.strategy!r}: the PyTorch Keras backend has no keras.distribution yet, so it "
            "cannot train data-parallel. Run with KERAS_BACKEND=jax (data-parallel over devices and processes), or "
            "leave out --distribution for a single-device run."
        )
    if backend == "tensorflow":
        return _setup_tensorflow(setting, batch_size)
    if backend != "jax":
        raise TrainingError(f"distribution={setting.strategy!r} is not supported on the {backend!r} backend; use JAX.")
    if setting.strategy != DATA_PARALLEL:
        raise TrainingError(
            f"distribution={setting.strategy!r} is tf.distribute's MirroredStrategy, for the TensorFlow backend; on "
            f"JAX use distribution={DATA_PARALLEL!r} (--distribution {DATA_PARALLEL})."
        )
    if setting.multi_process:
        _check_processes(setting, batch_size, seed)
        _join_processes(setting)
    return _data_parallel(setting, batch_size)


def _check_processes(setting: Distribution, batch_size: int, seed: int | None) -> None:
    count = setting.num_processes or 1
    if setting.coordinator is None or setting.process_id is None:
        missing = [
            name
            for name, value in (
                ("coordinator (--coordinator HOST:PORT)", setting.coordinator),
                ("process_id (--process-id)", setting.process_id),
            )
            if value is None
        ]
        raise TrainingError(
            f"A run over {count} processes needs {' and '.join(missing)} in every process (or ${ENV_COORDINATOR}, "
            f"${ENV_PROCESS_ID}): the coordinator is process 0's HOST:PORT, the ids are 0 to {count - 1}."
        )
    if setting.process_id >= count:
        raise TrainingError(
            f"process_id {setting.process_id} (--process-id) is out of range for {count} processes: use 0 to "
            f"{count - 1}."
        )
    if batch_size % count:
        raise TrainingError(
            f"batch_size {batch_size} (--batch-size, the global batch) does not divide across {count} processes: "
            f"each process feeds batch_size / processes rows. Use a multiple of {count}, e.g. "
            f"{batch_size + count - batch_size % count}."
        )
    if seed is None:
        raise TrainingError(
            f"A run over {count} processes needs a seed (--seed): every process must draw the same data order and "
            "initial weights."
        )


def _join_processes(setting: Distribution) -> None:
    import jax  # only on the JAX backend, which Keras has imported already

    if jax.distributed.is_initialized():
        return
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        # Processes on CPUs exchange gradients through gloo; JAX's default has no cross-process CPU collectives.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize(setting.coordinator, setting.num_processes, setting.process_id)


class _DataParallel(keras.distribution.DataParallel):
    """Keras' ``DataParallel`` whose data layout is replicated instead of split while `replicate_data` is set (all
    but the training steps: `DataParallelRun.training_batches`)."""

    replicate_data = True

    def get_data_layout(self, data_shape: Any) -> Any:
        if self.replicate_data:
            return keras.distribution.TensorLayout([None] * len(data_shape), self.device_mesh)
        return super().get_data_layout(data_shape)


def _data_parallel(setting: Distribution, batch_size: int) -> DataParallelRun:
    import jax  # only on the JAX backend, which Keras has imported already

    local = jax.local_devices()
    if isinstance(setting.devices, list):
        names = {f"{device.platform}:{device.id}": device for device in jax.devices()}
        unknown = [name for name in setting.devices if name not in names]
        if unknown:
            raise TrainingError(
                f"devices {', '.join(unknown)} (--devices) do not exist here; the devices are "
                f"{', '.join(names)}. On CPUs, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N of them."
            )
        chosen = [names[name] for name in setting.devices]
    else:
        count = len(local) if setting.devices is None else setting.devices
        if count > len(local):
            raise TrainingError(
                f"devices={count} (--devices) but this process has {len(local)} "
                f"({', '.join(f'{d.platform}:{d.id}' for d in local)}). Ask for at most {len(local)}; on CPUs, "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={count} makes {count} of them."
            )
        # The first `count` local devices of every process (each process has the same number).
        chosen = [device for device in jax.devices() if _local_position(device) < count]
    process_count = jax.process_count()
    replicas = len(chosen)
    if batch_size % replicas:
        raise TrainingError(
            f"batch_size {batch_size} (--batch-size, the global batch) does not divide across {replicas} devices "
            f"({process_count} process(es)): each device trains batch_size / devices rows. Use a multiple of "
            f"{replicas}, e.g. {batch_size + replicas - batch_size % replicas}."
        )
    distribution = _DataParallel(devices=chosen, auto_shard_dataset=False)
    return DataParallelRun(
        setting,
        process_index=jax.process_index(),
        process_count=process_count,
        replicas=replicas,
        scope=distribution.scope,
        keras_distribution=distribution,
    )


def _local_position(device: Any) -> int:
    import jax  # only on the JAX backend

    same_process = [d for d in jax.devices() if d.process_index == device.process_index]
    return same_process.index(device)


def _setup_tensorflow(setting: Distribution, batch_size: int) -> DataParallelRun:
    if setting.multi_process:
        raise TrainingError(
            f"A run over {setting.num_processes} processes on the TensorFlow backend would need "
            f"MultiWorkerMirroredStrategy, which fails inside Keras' TensorFlow trainer ({MULTI_WORKER_TF_ISSUE}, "
            "open). Run with KERAS_BACKEND=jax (--distribution data-parallel over processes), or on TensorFlow use "
            f"--distribution {MIRRORED} over this machine's devices."
        )
    if setting.strategy != MIRRORED:
        raise TrainingError(
            f"distribution={setting.strategy!r} runs through keras.distribution, which is a prototype that does "
            f"nothing on the TensorFlow backend. Use KERAS_BACKEND=jax, or on TensorFlow distribution={MIRRORED!r} "
            "(--distribution mirrored: tf.distribute.MirroredStrategy over this machine's devices)."
        )
    import tensorflow as tf  # the TensorFlow backend is running: TensorFlow is imported already

    available = [device.name.replace("/physical_device:", "") for device in tf.config.list_physical_devices()]
    available = [name for name in available if name.split(":")[0] in ("CPU", "GPU")]
    if isinstance(setting.devices, list):
        chosen = setting.devices
    else:
        gpus = [name for name in available if name.startswith("GPU")]
        pool = gpus or [name for name in available if name.startswith("CPU")]
        count = len(pool) if setting.devices is None else setting.devices
        if count > len(pool):
            raise TrainingError(
                f"devices={count} (--devices) but TensorFlow sees {len(pool)} ({', '.join(pool)}); ask for fewer."
            )
        chosen = pool[:count]
    if batch_size % len(chosen):
        raise TrainingError(
            f"batch_size {batch_size} (--batch-size) does not divide across {len(chosen)} devices; use a multiple "
            f"of {len(chosen)}."
        )
    strategy = tf.distribute.MirroredStrategy(devices=chosen)
    # replicas=1: the strategy splits every batch itself, a last short one included, so no row is cut here.
    return DataParallelRun(setting, process_index=0, process_count=1, replicas=1, scope=strategy.scope)


__all__ = [
    "DATA_PARALLEL",
    "MIRRORED",
    "DataParallelRun",
    "Distribution",
    "local_saving",
    "parse_distribution",
    "setup",
]
