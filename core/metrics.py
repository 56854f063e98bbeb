"""Evaluation metrics people expect, on plain Python/numpy values (no framework state).

Classification: accuracy and macro-F1. Token tagging: entity-level precision, recall and F1
over BIO/IOB2 spans (an entity counts only if type and both boundaries match, as in
seqeval's default mode). Extractive QA: exact match and token F1 after SQuAD's answer
normalisation. Regression and similarity: Pearson and Spearman correlation.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    true, pred = _paired(y_true, y_pred)
    return float(np.mean(true == pred)) if len(true) else 0.0


def macro_f1(y_true: Sequence, y_pred: Sequence, labels: Iterable | None = None) -> float:
    """Unweighted mean of per-class F1 over ``labels`` (default: every class seen in either list)."""
    true, pred = _paired(y_true, y_pred)
    classes = list(labels) if labels is not None else sorted(set(true.tolist()) | set(pred.tolist()), key=str)
    if not classes:
        return 0.0
    scores = []
    for cls in classes:
        tp = int(np.sum((pred == cls) & (true == cls)))
        fp = int(np.sum((pred == cls) & (true != cls)))
        fn = int(np.sum((pred != cls) & (true == cls)))
        scores.append(_f1(tp, fp, fn))
    return float(np.mean(scores))


def bio_entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Spans ``(type, start, end_exclusive)`` of a BIO/IOB2 tag sequence.

    An ``I-X`` that does not continue an ``X`` entity starts a new one (the lenient reading
    most taggers' outputs need); ``O`` and anything unprefixed close the current entity.
    """
    entities = set()
    current: tuple[str, int] | None = None
    for index, tag in enumerate([*tags, "O"]):
        prefix, _, kind = tag.partition("-") if "-" in tag else ("O", "", "")
        continues = prefix == "I" and current is not None and current[0] == kind
        if current is not None and not continues:
            entities.add((current[0], current[1], index))
            current = None
        if prefix == "B" or (prefix == "I" and not continues):
            current = (kind, index)
    return entities


def entity_scores(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro-averaged entity-level precision, recall and F1 over a corpus of tag sequences."""
    if len(true_tags) != len(pred_tags):
        raise ValueError(f"{len(true_tags)} gold sequences but {len(pred_tags)} predicted; pass one per example")
    for index, (true, pred) in enumerate(zip(true_tags, pred_tags)):
        if len(true) != len(pred):
            raise ValueError(f"example {index}: {len(true)} gold tags but {len(pred)} predicted tags")
    return micro_scores((bio_entities(true), bio_entities(pred)) for true, pred in zip(true_tags, pred_tags))


def micro_scores(gold_and_predicted: Iterable[tuple[set, set]]) -> dict[str, float]:
    """Micro-averaged precision, recall and F1 over ``(gold items, predicted items)`` set pairs."""
    tp = fp = fn = 0
    for gold, predicted in gold_and_predicted:
        tp += len(gold & predicted)
        fp += len(predicted - gold)
        fn += len(gold - predicted)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": precision, "recall": recall, "f1": _f1(tp, fp, fn)}


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation and articles, squeeze whitespace."""
    text = "".join(char for char in text.lower() if char not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    return (
        float(any(normalize_answer(prediction) == normalize_answer(answer) for answer in answers)) if answers else 0.0
    )


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """Best bag-of-tokens F1 of ``prediction`` against any gold answer."""
    best = 0.0
    predicted = normalize_answer(prediction).split()
    for answer in answers:
        gold = normalize_answer(answer).split()
        if not predicted or not gold:
            best = max(best, float(predicted == gold))
            continue
        common = sum((Counter(predicted) & Counter(gold)).values())
        if common:
            precision, recall = common / len(predicted), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def squad_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists")
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    return {
        "exact_match": float(np.mean([exact_match(p, a) for p, a in zip(predictions, answers)])),
        "f1": float(np.mean([token_f1(p, a) for p, a in zip(predictions, answers)])),
    }


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = _paired(x, y, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = _paired(x, y, dtype=np.float64)
    return pearson(_average_ranks(a), _average_ranks(b))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _paired(a: Sequence, b: Sequence, dtype: type | None = None) -> tuple[np.ndarray, np.ndarray]:
    first, second = np.asarray(a, dtype=dtype), np.asarray(b, dtype=dtype)
    if first.shape != second.shape:
        raise ValueError(f"gold has {first.shape} values but predictions have {second.shape}; pass one per example")
    return first, second
