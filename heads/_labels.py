"""The label rules of file rows: class names, class indices and numbers, and reading them back from decoded answers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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
