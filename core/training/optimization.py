"""The optimizer of a training run: AdamW, its learning-rate schedule, clipping and gradient accumulation.

All of it is Keras': ``keras.optimizers.AdamW`` (decoupled weight decay, ``global_clipnorm``,
``gradient_accumulation_steps``, ``exclude_from_weight_decay``) and ``keras.optimizers.schedules``.
Keras has no warmup-then-linear-decay schedule (the usual fine-tuning one), so `WarmupDecay` is a
small serializable one; `PerOptimizerUpdate` makes any schedule count optimizer updates rather
than batches when gradients are accumulated (Keras calls schedules with the batch count).

Both schedules are saved in a ``.keras`` file's compile config, so this module is registered with
Keras whenever Keras is imported (see `distilbert_heads._keras_registration`).
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from distilbert_heads.training.settings import TrainingError, TrainSettings

# HF `Trainer` (``get_parameter_names(model, ALL_LAYERNORM_LAYERS)`` minus ``"bias"``) and the BERT recipe
# leave LayerNorm scales/offsets and biases undecayed: pulling them towards 0 only hurts.
NO_DECAY_NAMES = ("bias",)


@keras.saving.register_keras_serializable(package="distilbert_heads")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to ``learning_rate`` over ``warmup_steps``, then linear decay to 0 at
    ``total_steps`` (``decay="linear"``, transformers' ``get_linear_schedule_with_warmup``) or a
    constant rate (``decay="constant"``, its ``get_constant_schedule_with_warmup``)."""

    def __init__(
        self,
        learning_rate: float,
        warmup_steps: int,
        total_steps: int,
        decay: str = "linear",
        name: str = "WarmupDecay",
    ) -> None:
        super().__init__()
        if decay not in ("linear", "constant"):
            raise ValueError(f"WarmupDecay decay must be 'linear' or 'constant', got {decay!r}.")
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.decay = decay
        self.name = name

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        warming = ops.minimum(step / warmup, 1.0)
        if self.decay == "constant":
            after = ops.ones_like(step)
        else:
            remaining = float(max(self.total_steps - self.warmup_steps, 1))
            after = ops.clip((self.total_steps - step) / remaining, 0.0, 1.0)
        factor = ops.where(step < self.warmup_steps, warming, after)
        return ops.multiply(factor, self.learning_rate)

    def get_config(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "decay": self.decay,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="distilbert_heads")
class PerOptimizerUpdate(keras.optimizers.schedules.LearningRateSchedule):
    """``schedule`` evaluated at the optimizer-update count when gradients are accumulated over ``steps`` batches.

    Keras calls a schedule with the number of batches seen; with accumulation the weights move every
    ``steps`` batches, so step ``b`` is update ``b // steps`` (the update at the end of batches
    ``k*steps .. k*steps+steps-1`` uses the rate of update ``k``, as without accumulation).
    """

    def __init__(self, schedule: Any, steps: int) -> None:
        super().__init__()
        if isinstance(schedule, dict):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        self.schedule = schedule
        self.steps = int(steps)

    def __call__(self, step: Any) -> Any:
        return self.schedule(ops.floor_divide(step, self.steps))

    def get_config(self) -> dict[str, Any]:
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule), "steps": self.steps}


def optimizer_updates(batches_per_epoch: int, epochs: int, accumulation_steps: int) -> int:
    """How many times the weights change in a run: Keras updates once every ``accumulation_steps`` batches,
    counting across epoch ends."""
    updates = (batches_per_epoch * epochs) // accumulation_steps
    if updates < 1:
        raise TrainingError(
            f"gradient_accumulation_steps (--grad-accum) is {accumulation_steps}, but the run has only "
            f"{batches_per_epoch * epochs} batch(es) ({epochs} epoch(s) of {batches_per_epoch}), so the weights "
            "would never be updated. Lower --grad-accum, use a smaller --batch-size or more --epochs."
        )
    return updates


def warmup_updates(settings: TrainSettings, total_updates: int) -> int:
    """``warmup_steps`` when given (at most the whole run), else ``ceil(warmup_ratio * total_updates)`` as `Trainer`."""
    if settings.warmup_steps is not None:
        return min(settings.warmup_steps, total_updates)
    return math.ceil(settings.warmup_ratio * total_updates)


def learning_rate_schedule(
    learning_rate: float, schedule: str, total_updates: int, warmup: int, accumulation_steps: int = 1
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate for ``schedule`` (``linear``, ``cosine`` or ``constant``), counted in optimizer updates.

    ``linear`` and ``cosine`` warm up linearly from 0 over ``warmup`` updates and then decay to 0 at
    ``total_updates``; ``constant`` warms up the same way and then stays at ``learning_rate``.
    """
    if schedule == "cosine":
        rate: Any = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else learning_rate,
            decay_steps=max(total_updates - warmup, 1),
            warmup_target=learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    elif schedule == "constant" and not warmup:
        return learning_rate
    elif schedule in ("linear", "constant"):
        rate = WarmupDecay(learning_rate, warmup, total_updates, decay=schedule)
    else:
        raise TrainingError(f"Unknown learning-rate schedule {schedule!r}; expected linear, cosine or constant.")
    return PerOptimizerUpdate(rate, accumulation_steps) if accumulation_steps > 1 else rate


def no_decay_variables(model: keras.Model) -> list[Any]:
    """Every LayerNormalization weight and every bias in ``model``: the weights AdamW must not decay."""
    return [
        variable
        for layer in model._flatten_layers(include_self=False)
        for variable in layer.weights
        if isinstance(layer, keras.layers.LayerNormalization) or variable.name in NO_DECAY_NAMES
    ]


def build_optimizer(
    model: keras.Model, settings: TrainSettings, learning_rate: float, batches_per_epoch: int, **adam: Any
) -> keras.optimizers.AdamW:
    """AdamW for ``model`` with ``settings``' decay, schedule, clipping and accumulation, before ``compile``.

    The schedule's length is the run's real number of optimizer updates (epochs x batches / accumulation).
    ``adam``: other AdamW arguments (``beta_2``, ``epsilon``: distillation's recipe sets them).
    """
    accumulation = settings.gradient_accumulation_steps
    total = optimizer_updates(batches_per_epoch, settings.epochs, accumulation)
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate_schedule(
            learning_rate, settings.schedule, total, warmup_updates(settings, total), accumulation
        ),
        weight_decay=settings.weight_decay,
        global_clipnorm=settings.clip_norm or None,
        gradient_accumulation_steps=accumulation if accumulation > 1 else None,
        **adam,
    )
    # Must come before the optimizer is built (`DistilBertTaskModel.compile` builds it).
    optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
    return optimizer
