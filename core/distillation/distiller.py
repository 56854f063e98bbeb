"""`TaskDistiller`: the training model of distillation, a student learning from a frozen teacher.

It is a `keras.distillation.Distiller`, and takes from it what fits:

- the teacher is frozen (``trainable = False``) and always called with ``training=False`` (dropout off);
- ``call`` is the student's forward pass, so ``fit`` trains the student (and a projection, below) only;
- the loss trackers (``student_loss``, ``distillation_loss``, ``total_loss``) are Keras'; and each declared
  target is a ``keras.distillation.DistillationLoss`` subclass (`losses.SoftTargetDistillation`,
  `losses.HiddenCosineDistillation`).

Where it does not fit, it is overridden:

- the loss (``compute_loss``): Keras' ``LogitsDistillation`` averages over every position, padding included,
  and mixes the two parts as ``w * student + (1 - w) * distillation``; here every target masks padding with the
  batch's attention mask, and the parts have their own weights (DistilBERT's 5 : 2 : 1 do not add up to 1):
  ``alpha_task * the head's own loss on the labels`` (the student task model's ``compute_loss``, the loss ``train``
  uses) ``+ alpha_soft * soft targets over the head's declared outputs + alpha_cos * hidden-state cosine``;
- feature matching: Keras' ``FeatureDistillation`` builds a feature-extractor model and runs the student a second
  time. Here ``call`` returns the student's last hidden state from its one forward pass
  (`DistilBertTaskModel.call_with_hidden_states`), with the head outputs and the attention mask; a learned
  ``Dense`` projection maps it to the teacher's size when the two differ;
- ``compile`` takes no student loss (the head's own losses are used) and compiles the student with them;
- checkpoints (``save_weights`` / ``load_weights``) hold the student, the projection and the optimizer, not the
  teacher: it is named by path and fingerprint in the run's settings instead.

Teacher outputs computed beforehand (`distilbert_heads.distill`'s ``cache_teacher``) arrive in the batch's inputs
under ``teacher/<output>`` and are used instead of a teacher pass.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

# Keras' weights-file writer is the only one that can leave an object (the teacher) out of the file.
from keras.src.saving import saving_lib

from distilbert_heads.distillation.losses import HiddenCosineDistillation, SoftTargetDistillation
from distilbert_heads.model.task_model import DistilBertTaskModel
from distilbert_heads.plugins.head import DistillationTarget, HeadContractError, distillation_targets_of

# Inputs that carry precomputed teacher outputs: "teacher/<output name>".
CACHED_TEACHER_PREFIX = "teacher/"


class TaskDistiller(keras.distillation.Distiller):
    """``fit`` it on ``(inputs, {head: labels})`` batches to train ``student`` from ``teacher``.

    Args:
        teacher: the fine-tuned task model (frozen here).
        student: a task model with the same head (name, task type, outputs); its encoder may be smaller.
        head: which head to distil (default: the only one).
        temperature: T of the soft targets.
        alpha_task, alpha_soft, alpha_cos: weights of the head's own loss on the labels, of the soft targets and
            of the hidden-state cosine loss (0 leaves a part out).
    """

    def __init__(
        self,
        teacher: DistilBertTaskModel,
        student: DistilBertTaskModel,
        *,
        head: str | None = None,
        temperature: float = 2.0,
        alpha_task: float = 0.5,
        alpha_soft: float = 0.5,
        alpha_cos: float = 0.0,
        name: str = "task_distiller",
    ) -> None:
        for role, model in (("teacher", teacher), ("student", student)):
            if not isinstance(model, DistilBertTaskModel):
                raise TypeError(f"The {role} must be a distilbert_heads task model, got {type(model).__name__}.")
        head_name, student_head = student.select_head(head)
        if head_name not in teacher.heads or teacher.heads[head_name].task_type != student_head.task_type:
            raise HeadContractError(
                f"The student's head {head_name!r} ({student_head.task_type}) is not among the teacher's heads "
                f"{[f'{n} ({h.task_type})' for n, h in teacher.heads.items()]}; a student distils the head of the "
                "same name and task type (build it with distilbert_heads.distillation.student_from_teacher)."
            )
        targets = distillation_targets_of(student_head, student.head_plugin(head_name))
        for weight_name, weight in (("alpha_task", alpha_task), ("alpha_soft", alpha_soft), ("alpha_cos", alpha_cos)):
            if not weight >= 0:
                raise ValueError(f"{weight_name} is {weight!r}; loss weights are 0 (part left out) or more.")
        if not temperature > 0:
            raise ValueError(f"temperature is {temperature!r}; the soft targets' temperature must be above 0.")
        losses: list[keras.distillation.DistillationLoss] = [
            SoftTargetDistillation(output, target, temperature) for output, target in targets.items()
        ]
        weights = [float(alpha_soft)] * len(losses)
        if alpha_cos > 0:
            losses.append(HiddenCosineDistillation())
            weights.append(float(alpha_cos))
        # Keras' convex student_loss_weight is not used: compute_loss weighs the parts with the alphas.
        super().__init__(teacher, student, losses, weights, student_loss_weight=0.5, name=name)
        self.head_name, self.targets = head_name, dict(targets)
        self.temperature = float(temperature)
        self.alpha_task, self.alpha_soft, self.alpha_cos = float(alpha_task), float(alpha_soft), float(alpha_cos)
        self.soft_target_loss_tracker = keras.metrics.Mean(name="soft_target_loss")
        teacher_size, student_size = teacher.encoder.config.hidden_size, student.encoder.config.hidden_size
        self.projection = None
        if alpha_cos > 0:
            self.hidden_cosine_loss_tracker = keras.metrics.Mean(name="hidden_cosine_loss")
            if teacher_size != student_size:
                self.projection = keras.layers.Dense(teacher_size, name="hidden_projection")
                self.projection.build((None, None, student_size))
        self.built = True  # teacher, student and projection are built: checkpoints load into it as it is

    # -- training ------------------------------------------------------------------------------------------
    def compile(self, optimizer: Any = "adam", metrics: Any = None, **kwargs: Any) -> None:
        """Compile for ``fit``: the student with its head's own losses (what ``alpha_task`` weighs), this model
        with ``optimizer``."""
        if not self.student.compiled:
            self.student.compile(optimizer="sgd")  # for its losses only: this model's optimizer trains it
        keras.Model.compile(self, optimizer=optimizer, metrics=metrics, **kwargs)

    def call(self, inputs: Any, training: bool | None = None) -> dict[str, Any]:
        """The student's head outputs, last hidden state and attention mask, from one forward pass."""
        outputs, hidden, mask = self.student.call_with_hidden_states(student_inputs(inputs), training=training)
        return {"outputs": outputs, "last_hidden_state": hidden, "attention_mask": mask}

    def teacher_outputs(self, inputs: Any) -> tuple[dict[str, Any], Any]:
        """The teacher's outputs of the distilled head and its last hidden state (None when cached outputs are
        given: the cache holds no hidden states, so the cosine loss needs a teacher pass)."""
        cached = {
            key[len(CACHED_TEACHER_PREFIX) :]: value
            for key, value in dict(inputs).items()
            if key.startswith(CACHED_TEACHER_PREFIX)
        }
        if cached and self.alpha_cos == 0:
            return cached, None
        outputs, hidden, _ = self.teacher.call_with_hidden_states(student_inputs(inputs), training=False)
        return keras.tree.map_structure(ops.stop_gradient, outputs[self.head_name]), ops.stop_gradient(hidden)

    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None, training: bool = True
    ) -> Any:
        if y_pred is None:
            y_pred = self(x, training=training)
        mask = y_pred["attention_mask"]
        # Each batch weighs its rows, as Keras' own "loss": a weight read from the batch also keeps TensorFlow from
        # counting the failed fetch that ends an epoch of unknown length (a constant count would run regardless).
        rows = ops.cast(ops.shape(mask)[0], "float32")
        student_loss = ops.convert_to_tensor(0.0)
        if self.alpha_task > 0 and y is not None:
            student_loss = self.student.compute_loss(
                x=student_inputs(x), y=y, y_pred=y_pred["outputs"], sample_weight=sample_weight, training=training
            )
        teacher, teacher_hidden = self.teacher_outputs(x)
        student = y_pred["outputs"][self.head_name]
        soft = ops.convert_to_tensor(0.0)
        for loss in self.distillation_losses:
            if isinstance(loss, SoftTargetDistillation):
                loss.validate_outputs(teacher[loss.output], student[loss.output])
                soft = soft + loss.compute_loss(teacher[loss.output], student[loss.output], attention_mask=mask)
        distillation = self.alpha_soft * soft
        if self.alpha_cos > 0:
            hidden = y_pred["last_hidden_state"]
            if self.projection is not None:
                hidden = self.projection(hidden)
            cosine_loss = self.distillation_losses[-1]
            cosine_loss.validate_outputs(teacher_hidden, hidden)
            cosine = cosine_loss.compute_loss(teacher_hidden, hidden, attention_mask=mask)
            self.hidden_cosine_loss_tracker.update_state(cosine, sample_weight=rows)
            distillation = distillation + self.alpha_cos * cosine
        total = self.alpha_task * student_loss + distillation
        self.student_loss_tracker.update_state(student_loss, sample_weight=rows)
        self.soft_target_loss_tracker.update_state(soft, sample_weight=rows)
        self.distillation_loss_tracker.update_state(distillation, sample_weight=rows)
        self.total_loss_tracker.update_state(total, sample_weight=rows)
        return total

    # -- checkpoints: the student (and projection) and the optimizer, never the teacher --------------------
    def save_weights(self, filepath: Any, overwrite: bool = True, max_shard_size: Any = None) -> None:
        saving_lib.save_weights_only(self, str(filepath), objects_to_skip=[self.teacher])

    def load_weights(self, filepath: Any, skip_mismatch: bool = False, **kwargs: Any) -> None:
        super().load_weights(filepath, skip_mismatch=skip_mismatch, objects_to_skip=[self.teacher], **kwargs)

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError(
            "A TaskDistiller is not saved whole: save its student (distiller.student.save('student.keras'))."
        )


def student_inputs(inputs: Any) -> Any:
    """The batch's model inputs without the cached teacher outputs."""
    if isinstance(inputs, dict):
        return {key: value for key, value in inputs.items() if not key.startswith(CACHED_TEACHER_PREFIX)}
    return inputs


__all__ = ["CACHED_TEACHER_PREFIX", "DistillationTarget", "TaskDistiller", "student_inputs"]
