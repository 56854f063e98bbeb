"""Pieces the built-in heads share: sparse cross-entropy that ignores -100 labels and smooths
correctly, a matching accuracy metric, the Hugging Face Linear <-> Keras Dense weight mapping,
the label rules of file rows (class names, class indices, numbers), and the pooled [CLS]
classifier that both the sentiment and the pairwise heads are.

Everything here is written with `keras.ops` only, so it runs under the TensorFlow, JAX and
PyTorch backends and inside `jit_compile=True` train steps.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import keras
import numpy as np
from keras import ops
from pydantic import BaseModel, Field, field_validator, model_validator

from distilbert_heads import metrics
from distilbert_heads.config import MAX_CLASSES, check_size_limit
from distilbert_heads.head import HeadOptions, HeadOptionsError, TaskHead
from distilbert_heads.input_kinds import input_kind_of

IGNORE_INDEX = -100  # the label value Hugging Face (and we) use for "no loss here"


# -- losses and metrics --------------------------------------------------------------------
def sparse_crossentropy_from_logits(labels: Any, logits: Any, label_smoothing: float = 0.0) -> Any:
    """Per-position cross-entropy of integer ``labels`` (shape S) against ``logits`` (S + (C,)).

    With ``label_smoothing`` = e the target distribution is ``(1 - e) * one_hot + e / C``,
    the same as Keras' `CategoricalCrossentropy` and torch's ``CrossEntropyLoss``. Labels must
    already be valid class ids (mask ignored positions before calling).
    """
    log_probs = ops.log_softmax(logits, axis=-1)
    num_classes = ops.shape(logits)[-1]
    one_hot = ops.one_hot(labels, num_classes, dtype=log_probs.dtype)
    nll = -ops.sum(one_hot * log_probs, axis=-1)
    if not label_smoothing:
        return nll
    uniform = -ops.mean(log_probs, axis=-1)
    return (1.0 - label_smoothing) * nll + label_smoothing * uniform


def _valid_and_safe_labels(y_true: Any, ignore_index: int | None) -> tuple[Any, Any]:
    labels = ops.cast(y_true, "int32")
    if ignore_index is None:
        return labels, ops.ones_like(labels, dtype="bool")
    valid = ops.not_equal(labels, ignore_index)
    return ops.where(valid, labels, ops.zeros_like(labels)), valid


def _match_rank(labels: Any, logits: Any) -> Any:
    """Accept labels shaped like the logits without the class axis, or with a trailing 1."""
    if len(labels.shape) == len(logits.shape):
        labels = ops.squeeze(labels, axis=-1)
    return labels


@keras.saving.register_keras_serializable(package="distilbert_heads")
class MaskedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Sparse cross-entropy from logits that skips positions labelled ``ignore_index`` (-100).

    The reduced loss is the mean over the positions that are not ignored, across the whole
    batch (as torch's ``CrossEntropyLoss(ignore_index=-100)``), so padding and sub-word
    continuations neither add loss nor dilute it. ``sample_weight`` may be per example (B,)
    or per position; the mean is then weighted. ``ignore_index=None`` ignores nothing.
    """

    def __init__(
        self,
        ignore_index: int | None = IGNORE_INDEX,
        label_smoothing: float = 0.0,
        from_logits: bool = True,
        reduction: str = "sum_over_batch_size",
        name: str = "masked_sparse_categorical_crossentropy",
        dtype: Any = None,
    ) -> None:
        if not from_logits:
            raise ValueError(
                "MaskedSparseCategoricalCrossentropy works on logits only (from_logits=True); "
                "the heads output logits, so drop from_logits=False."
            )
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = True

    def _weighted(self, y_true: Any, y_pred: Any, sample_weight: Any) -> tuple[Any, Any]:
        logits = ops.cast(ops.convert_to_tensor(y_pred), self.dtype)
        labels = _match_rank(ops.convert_to_tensor(y_true), logits)
        safe_labels, valid = _valid_and_safe_labels(labels, self.ignore_index)
        losses = sparse_crossentropy_from_logits(safe_labels, logits, self.label_smoothing)
        weights = ops.cast(valid, self.dtype)
        weights = _times_sample_weight(weights, sample_weight)
        return losses * weights, weights

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-position losses, zero where the label is ``ignore_index``."""
        losses, _ = self._weighted(y_true, y_pred, None)
        return losses

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        with keras.name_scope(self.name):
            losses, weights = self._weighted(y_true, y_pred, sample_weight)
            if self.reduction in (None, "none"):
                return losses
            total = ops.sum(losses)
            if self.reduction == "sum":
                return total
            return ops.divide_no_nan(total, ops.sum(weights))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(ignore_index=self.ignore_index, label_smoothing=self.label_smoothing, from_logits=True)
        return config


def _times_sample_weight(weights: Any, sample_weight: Any) -> Any:
    """``weights`` times a per-example or per-position ``sample_weight`` (broadcast over trailing axes)."""
    if sample_weight is None:
        return weights
    sample_weight = ops.cast(ops.convert_to_tensor(sample_weight), weights.dtype)
    while len(sample_weight.shape) < len(weights.shape):
        sample_weight = ops.expand_dims(sample_weight, -1)
    return weights * sample_weight


@keras.saving.register_keras_serializable(package="distilbert_heads")
class MaskedSparseCategoricalAccuracy(keras.metrics.Metric):
    """Accuracy of ``argmax(logits)`` over the positions whose label is not ``ignore_index``."""

    def __init__(self, ignore_index: int | None = IGNORE_INDEX, name: str = "accuracy", dtype: Any = None) -> None:
        super().__init__(name=name, dtype=dtype)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct", dtype=self.dtype)
        self.count = self.add_variable(shape=(), initializer="zeros", name="count", dtype=self.dtype)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        logits = ops.convert_to_tensor(y_pred)
        labels = _match_rank(ops.convert_to_tensor(y_true), logits)
        safe_labels, valid = _valid_and_safe_labels(labels, self.ignore_index)
        predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
        weights = ops.cast(valid, self.dtype)
        weights = _times_sample_weight(weights, sample_weight)
        hits = ops.cast(ops.equal(predicted, safe_labels), self.dtype) * weights
        self.correct.assign(self.correct + ops.sum(hits))
        self.count.assign(self.count + ops.sum(weights))

    def result(self) -> Any:
        return ops.divide_no_nan(self.correct, self.count)

    def reset_state(self) -> None:
        self.correct.assign(ops.zeros((), dtype=self.dtype))
        self.count.assign(ops.zeros((), dtype=self.dtype))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "ignore_index": self.ignore_index}


def large_negative(dtype: Any) -> float:
    """A finite logit that loses every softmax, representable in ``dtype`` (float16 included)."""
    return -6.0e4 if keras.backend.standardize_dtype(dtype) == "float16" else -1.0e9


# -- Hugging Face head weights -------------------------------------------------------------
def to_numpy(value: Any) -> np.ndarray:
    """A state-dict value (numpy array or torch tensor) as a float32 numpy array."""
    if hasattr(value, "detach"):  # torch tensor, possibly requiring grad
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def read_dense(
    dense: keras.layers.Dense, state_dict: Mapping[str, Any], prefix: str, head_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Torch ``nn.Linear`` weights ``{prefix}.weight`` (out, in) / ``.bias`` as a checked Keras
    (kernel, bias) pair for ``dense``; nothing is assigned yet, so callers can check every layer first."""
    missing = [f"{prefix}.{part}" for part in ("weight", "bias") if f"{prefix}.{part}" not in state_dict]
    if missing:
        raise ValueError(
            f"{head_name}: the checkpoint has some of this head's weights but not {', '.join(missing)}; "
            "it looks truncated or from another architecture. Use a complete Hugging Face task "
            "checkpoint, or load only the encoder and train the head from scratch."
        )
    not_float = [
        f"{prefix}.{part} ({np.asarray(state_dict[f'{prefix}.{part}']).dtype})"
        for part in ("weight", "bias")
        if not hasattr(state_dict[f"{prefix}.{part}"], "detach")
        and np.asarray(state_dict[f"{prefix}.{part}"]).dtype.kind != "f"
    ]
    if not_float:
        raise ValueError(
            f"{head_name}: the checkpoint stores {', '.join(not_float)} as non-floating-point values; weights are "
            "floats, so the checkpoint is corrupt. Use the original checkpoint."
        )
    kernel = to_numpy(state_dict[f"{prefix}.weight"]).T
    bias = to_numpy(state_dict[f"{prefix}.bias"])
    expected = tuple(dense.kernel.shape)
    if kernel.shape != expected or bias.shape != (expected[1],):
        raise ValueError(
            f"{head_name}: checkpoint weight {prefix}.weight has shape {kernel.T.shape} (out, in) and {prefix}.bias "
            f"has shape {bias.shape}, but this head expects {(expected[1], expected[0])} and {(expected[1],)}. "
            "The output size is the number of classes: build the head with num_classes (or labels) matching the "
            "checkpoint, and a hidden size equal to the encoder's."
        )
    return kernel, bias


def load_dense_layers(
    pairs: Sequence[tuple[keras.layers.Dense, str]], state_dict: Mapping[str, Any], head_name: str
) -> None:
    """Check all ``(dense, hf_prefix)`` pairs against ``state_dict``, then assign them."""
    arrays = [read_dense(dense, state_dict, prefix, head_name) for dense, prefix in pairs]
    for (dense, _), (kernel, bias) in zip(pairs, arrays):
        dense.kernel.assign(kernel)
        dense.bias.assign(bias)


def dense_weights(dense: keras.layers.Dense, prefix: str) -> dict[str, np.ndarray]:
    """``dense`` under Hugging Face names and torch layout (weight is (out, in))."""
    return {
        f"{prefix}.weight": np.ascontiguousarray(ops.convert_to_numpy(dense.kernel).T),
        f"{prefix}.bias": np.asarray(ops.convert_to_numpy(dense.bias)),
    }


def check_hidden_shape(head: TaskHead, input_shape: Sequence[int | None] | None) -> None:
    """Fail early and clearly if the hidden states are not (B, L, hidden_size)."""
    if input_shape is None:
        return
    shape = tuple(input_shape)
    if len(shape) != 3 or (shape[-1] is not None and shape[-1] != head.hidden_size):
        raise ValueError(
            f"{type(head).__name__} '{head.name}' expects hidden states shaped (batch, length, {head.hidden_size}) "
            f"but got {shape}. Pass the encoder's last_hidden_state and build the head with "
            "hidden_size equal to the encoder's hidden size."
        )


def class_names(labels: Sequence[str] | None, num_classes: int) -> list[str]:
    """The given names, or Hugging Face's ``LABEL_i`` defaults."""
    return list(labels) if labels else [f"LABEL_{i}" for i in range(num_classes)]


def encoding_field(encoding: Any, name: str) -> Any:
    """``encoding[name]`` for a dict-like encoding, ``encoding.name`` otherwise; None if absent."""
    if encoding is None:
        return None
    if isinstance(encoding, Mapping):
        return encoding.get(name)
    return getattr(encoding, name, None)


def softmax_np(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


# -- labels of file rows ---------------------------------------------------------------------
Label = str | int | float


def coerce_label(value: Any) -> Any:
    """A ``label`` cell as the schema should see it (a ``mode="before"`` validator).

    CSV cells are strings: ``"3"`` becomes the integer 3 and ``"0.75"`` the float 0.75, as they
    would be in JSON; other strings are class names (surrounding spaces dropped). Booleans,
    empty cells and NaN/infinite numbers are rejected with a message saying what a label is.
    """
    if isinstance(value, bool):
        raise ValueError(f"label is the boolean {value}; give a class name, a class index or a number")
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise ValueError("label is empty; give a class name, a class index (0, 1, ...) or a number for regression")
        try:
            return int(value)
        except ValueError:
            pass
        try:
            number = float(value)
        except ValueError:
            return value
        if not math.isfinite(number):  # "nan", "inf" are more likely class names gone wrong
            raise ValueError(f"label {value!r} is not a finite number; give a class name or a real number")
        return number
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"label is {value}; regression targets must be finite numbers")
    return value


def label_options(
    labels: Iterable[Label], *, task_type: str = "this classification task", regression_task: str = "text_regression"
) -> dict[str, Any]:
    """The class names a classification task's training labels imply: ``{"labels": [...]}``.

    Integers (numbers like ``"0"``, ``"1"`` in CSV included) are class names in numeric order,
    so class index i is the integer i for 0-based data; other labels are class names in order
    of first appearance. Labels never turn a classification into a regression: a fractional
    number, names mixed with numbers, or a single class raise a ValueError that says what to do
    (a regression task type, ``regression_task``, or head option ``num_classes=1``); a problem
    of one row starts with ``example <index>:`` so the trainer can name its line.
    """
    values = list(labels)
    if not values:
        return {}
    regression = (
        f"If the labels are scores to predict (regression), train the task type {regression_task!r} "
        f"(`--task {regression_task}`) or pass the head option num_classes=1"
    )
    if task_type == regression_task:  # e.g. text_similarity with some class names: a score needs numbers only
        regression = f"{task_type} predicts a score when every label is a number; make all labels numbers"
    first_name = next((v for v in values if isinstance(v, str)), None)
    for index, value in enumerate(values):
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(
                f"example {index}: label {value} is a fractional number, but {task_type} is a classification task "
                f"(labels are class names or class ids 0, 1, ...). {regression}; if they are classes, give them as "
                "names or whole numbers."
            )
        if first_name is not None and not isinstance(value, str):
            raise ValueError(
                f"example {index}: label {value} is a number, but other rows use class names (such as "
                f"{first_name!r}); use one kind of label throughout: class names, or class ids 0, 1, ... "
                "(a number means a class id here, so mixing them is ambiguous)."
            )
    if first_name is None:
        names = [str(v) for v in sorted({int(v) for v in values})]
    else:
        names = list(dict.fromkeys(values))
    if len(names) < 2:
        raise ValueError(
            f"every row has the label {names[0]!r}: one class cannot be learnt, a classifier needs examples of at "
            f"least two classes. Add rows of the other classes (or pass the head option labels=[...] naming them). "
            f"{regression}."
        )
    return {"labels": names}


def class_index(label: Label, names: Sequence[str], where: str) -> int:
    """The class id of a row's ``label``: a name of ``names``, or an integer index.

    An integer whose text is one of the names (classes ``"1"`` .. ``"5"`` of star ratings)
    means that name; any other integer is an index into ``names``.
    """
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if isinstance(label, int):
        if str(label) in names:
            return list(names).index(str(label))
        if 0 <= label < len(names):
            return label
        raise ValueError(
            f"{where}: label {label} is neither a class name nor a class index: this head has {len(names)} "
            f"classes {list(names)} (indices 0 to {len(names) - 1}). Fix the row, or build the head with "
            "labels=[...] covering every class in the data."
        )
    if isinstance(label, float):
        raise ValueError(
            f"{where}: label {label} is a fractional number but this head classifies into {list(names)}. "
            "Use num_classes=1 (regression / similarity) for numeric targets."
        )
    if label not in names:
        raise ValueError(
            f"{where}: unknown label {label!r}; this head knows the labels {list(names)}. Fix the row, or build "
            "the head with labels=[...] that include it (the trainer takes them from the training file when "
            "you give none)."
        )
    return list(names).index(label)


def regression_target(label: Label, where: str) -> float:
    """A row's ``label`` as a float target for a regression head."""
    if isinstance(label, str):
        raise ValueError(
            f"{where}: label {label!r} is not a number, but this head predicts a score (num_classes=1). "
            "Give numeric labels, or build the head with labels=[...] for classification."
        )
    return float(label)


def check_predictions(examples: Sequence[Any], predictions: Sequence[Any]) -> None:
    if len(examples) != len(predictions):
        raise ValueError(
            f"evaluate() got {len(examples)} examples but {len(predictions)} predictions; pass decode()'s "
            "answers, one per example, in the order of the examples"
        )


def predicted_label(prediction: Any) -> Any:
    """The label of one decode answer: ``{"label"}``, a top-k list (its first) or a bare value."""
    if isinstance(prediction, list):
        prediction = prediction[0] if prediction else None
    if isinstance(prediction, Mapping):
        return prediction.get("label", prediction.get("score"))
    return prediction


def predicted_score(prediction: Any) -> float:
    if isinstance(prediction, Mapping):
        return float(prediction["score"])
    return float(prediction)


def first_row_per_sample(encoding: Any, rows: int) -> list[int]:
    """Row indices holding each input's first window (all rows when there are no windows)."""
    samples = encoding_field(encoding, "overflow_to_sample")
    if not samples or len(samples) != rows:
        return list(range(rows))
    first: dict[int, int] = {}
    for row, sample in enumerate(samples):
        first.setdefault(int(sample), row)
    return [first[sample] for sample in sorted(first)]


# -- the pooled [CLS] classifier ------------------------------------------------------------
class ClassificationOptions(HeadOptions):
    """Options of a classifier over classes with optional names (``num_classes=1``: regression)."""

    num_classes: int | None = Field(default=None, ge=1, description="Classes; 1 means a regression score.")
    labels: list[str] | None = Field(default=None, description="Class names in index order.")

    @field_validator("num_classes")
    @classmethod
    def _bounded(cls, value: int | None) -> int | None:
        return value if value is None else check_size_limit(value, MAX_CLASSES)

    @field_validator("labels")
    @classmethod
    def _bounded_labels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            check_size_limit(len(value), MAX_CLASSES)
        return value

    @model_validator(mode="after")
    def _labels_match(self) -> ClassificationOptions:
        if self.labels is not None:
            if not self.labels:
                raise ValueError("labels is empty; give one name per class or leave labels unset")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError(f"labels has duplicate names: {self.labels}; each class needs its own name")
            if self.num_classes is not None and len(self.labels) != self.num_classes:
                raise ValueError(
                    f"labels has {len(self.labels)} names but num_classes is {self.num_classes}; "
                    "give one name per class or drop num_classes to infer it from labels"
                )
        return self


class PooledClassifierOptions(ClassificationOptions):
    dropout_rate: float = Field(default=0.2, ge=0.0, lt=1.0, description="HF seq_classif_dropout.")
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0, description="Classification only.")


class PooledClassifierHead(TaskHead):
    """Hugging Face ``DistilBertForSequenceClassification``'s head, shared by sentiment and pairwise.

    ``hidden_states[:, 0]`` -> ``pre_classifier`` Dense(D) -> ReLU -> dropout -> ``classifier``
    Dense(num_classes). ``num_classes == 1`` makes it a regression head (MSE loss, raw score).
    Subclasses set the class attributes and `resolve_options`.
    """

    options_schema: ClassVar[type[HeadOptions]] = PooledClassifierOptions
    output_names: ClassVar[tuple[str, ...]] = ("logits",)

    def __init__(self, hidden_size: int, task_type: str, options: Any = None, **kwargs: Any) -> None:
        super().__init__(hidden_size, task_type, options, **kwargs)
        try:
            resolved = self.resolve_options(self.options.model_dump())
            self.options = self.options_schema(**resolved)
        except ValueError as error:
            raise HeadOptionsError(f"{type(self).__name__} (task type {self.task_type}): {error}") from error
        if self.num_classes == 1 and self.options.label_smoothing:
            raise HeadOptionsError(
                f"{type(self).__name__} (task type {self.task_type}): label_smoothing={self.options.label_smoothing} "
                "only applies to classification, but num_classes=1 makes this a regression head. "
                "Drop label_smoothing or use num_classes >= 2."
            )
        self.pre_classifier = keras.layers.Dense(
            self.hidden_size, activation="relu", name="pre_classifier", dtype=self.dtype_policy
        )
        self.dropout = keras.layers.Dropout(self.options.dropout_rate, name="dropout", dtype=self.dtype_policy)
        self.classifier = keras.layers.Dense(self.num_classes, name="classifier", dtype=self.dtype_policy)

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Fill in the task-dependent defaults (num_classes, labels); raise ValueError on conflicts."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return int(self.options.num_classes)

    @property
    def is_regression(self) -> bool:
        return self.num_classes == 1

    @property
    def class_names(self) -> list[str]:
        return class_names(self.options.labels, self.num_classes)

    def build(self, input_shape: Any = None) -> None:
        check_hidden_shape(self, input_shape)
        self.pre_classifier.build((None, self.hidden_size))
        self.classifier.build((None, self.hidden_size))
        self.built = True

    def call(self, hidden_states: Any, attention_mask: Any = None, training: bool | None = None) -> dict[str, Any]:
        # Position 0 is [CLS]; the encoder attends over the mask already, so it is unused here.
        pooled = self.pre_classifier(hidden_states[:, 0, :])
        pooled = self.dropout(pooled, training=training)
        return {"logits": self.classifier(pooled)}

    def default_losses(self) -> dict[str, Any]:
        if self.is_regression:
            return {"logits": keras.losses.MeanSquaredError()}
        if self.options.label_smoothing:
            return {
                "logits": MaskedSparseCategoricalCrossentropy(
                    ignore_index=None, label_smoothing=self.options.label_smoothing
                )
            }
        return {"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}

    def default_metrics(self) -> dict[str, list[Any]]:
        if self.is_regression:
            return {"logits": [keras.metrics.MeanAbsoluteError(name="mae")]}
        return {"logits": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}

    def decode(
        self,
        outputs: Mapping[str, Any],
        encoding: Any = None,
        *,
        top_k: int | None = None,
        texts: Sequence[str] | None = None,
        pairs: Sequence[tuple[str, str]] | None = None,
    ) -> list[Any]:
        """Per input ``{"label", "score"}`` (softmax probability), or the ``top_k`` best as a list.

        Regression heads return ``{"score"}``, the raw predicted value. ``texts`` / ``pairs``
        (what the pipeline passes) are not needed to classify. When ``encoding`` holds several
        windows of one input (``overflow_to_sample``), the input's first window decides.
        """
        if top_k is not None:
            if self.is_regression:
                raise ValueError(
                    f"top_k={top_k!r} ranks class labels, but head {self.name!r} is a regression head (one score per "
                    "input); leave top_k out."
                )
            if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
                raise ValueError(
                    f"top_k must be a positive integer (how many of the {len(self.class_names)} labels to return per "
                    f"input, best first), got {top_k!r}; leave it out for the single best label."
                )
        logits = np.asarray(ops.convert_to_numpy(outputs["logits"]), dtype=np.float32)
        logits = logits.reshape(len(logits), -1)[first_row_per_sample(encoding, len(logits))]
        if self.is_regression:
            return [{"score": float(row[0])} for row in logits]
        probs = softmax_np(logits)
        names = self.class_names
        results: list[Any] = []
        for row in probs:
            order = np.argsort(-row, kind="stable")
            ranked = [{"label": names[i], "score": float(row[i])} for i in order]
            results.append(ranked[: int(top_k)] if top_k is not None else ranked[0])
        return results

    # -- training and evaluating from files ----------------------------------------------------
    def label_targets(self, examples: Sequence[Any]) -> np.ndarray:
        """Class ids (int32) or, for regression, float32 targets; shape (N,)."""
        if self.is_regression:
            return np.array(
                [regression_target(ex.label, f"example {i}") for i, ex in enumerate(examples)], dtype=np.float32
            )
        names = self.class_names
        return np.array([class_index(ex.label, names, f"example {i}") for i, ex in enumerate(examples)], dtype=np.int32)

    def encode_examples(
        self, examples: Sequence[BaseModel], tokenizer: Any, max_length: int
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The examples packed by the head's input kind (token ids padded to the longest example,
        truncated to ``max_length``) and ``{"logits": targets}``."""
        targets = self.label_targets(examples)
        kind = input_kind_of(self)
        return kind.model_inputs(kind.encode_rows(tokenizer, examples, max_length)), {"logits": targets}

    chance_description: ClassVar[str] = "always the most common label"

    def chance_predictions(self, examples: Sequence[BaseModel], seed: int = 0) -> list[Any]:
        """What guessing gives: the most common label for every example."""
        majority, _ = Counter(str(example.label) for example in examples).most_common(1)[0]
        return [{"label": majority, "score": 1.0} for _ in examples]

    def evaluate(self, examples: Sequence[BaseModel], predictions: Sequence[Any]) -> dict[str, float]:
        """Classification: ``accuracy`` and ``macro_f1`` over class names. Regression: ``pearson``,
        ``spearman`` and ``mse``. ``predictions`` are `decode`'s answers, one per example."""
        check_predictions(examples, predictions)
        if self.is_regression:
            gold = [regression_target(ex.label, f"example {i}") for i, ex in enumerate(examples)]
            guess = [predicted_score(p) for p in predictions]
            return {
                "pearson": metrics.pearson(gold, guess),
                "spearman": metrics.spearman(gold, guess),
                "mse": float(np.mean((np.asarray(gold) - np.asarray(guess)) ** 2)) if gold else 0.0,
            }
        names = self.class_names
        gold_names = [names[class_index(ex.label, names, f"example {i}")] for i, ex in enumerate(examples)]
        guessed = [predicted_label(p) for p in predictions]
        guessed = [names[g] if isinstance(g, (int, np.integer)) and 0 <= g < len(names) else str(g) for g in guessed]
        return {"accuracy": metrics.accuracy(gold_names, guessed), "macro_f1": metrics.macro_f1(gold_names, guessed)}

    def load_hf_head_weights(self, state_dict: Mapping[str, Any]) -> bool:
        if not any(key.startswith("pre_classifier.") for key in state_dict):
            return False
        if not self.built:
            self.build((None, None, self.hidden_size))
        head_name = f"{type(self).__name__} (task type {self.task_type})"
        load_dense_layers(
            [(self.pre_classifier, "pre_classifier"), (self.classifier, "classifier")], state_dict, head_name
        )
        return True

    def hf_head_weights(self) -> dict[str, np.ndarray]:
        if not self.built:
            return {}
        return {**dense_weights(self.pre_classifier, "pre_classifier"), **dense_weights(self.classifier, "classifier")}
