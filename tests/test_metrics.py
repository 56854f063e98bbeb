"""Metrics against hand-worked cases and, where installed, against reference libraries."""

from __future__ import annotations

import numpy as np
import pytest

from distilbert_heads import metrics


def test_accuracy_and_macro_f1():
    assert metrics.accuracy([0, 1, 1, 2], [0, 1, 2, 2]) == 0.75
    # class 0: f1 1; class 1: tp1 fn1 -> 2/3; class 2: tp1 fp1 -> 2/3
    assert metrics.macro_f1([0, 1, 1, 2], [0, 1, 2, 2]) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert metrics.macro_f1(["a", "a"], ["b", "b"]) == 0.0
    with pytest.raises(ValueError, match="one per example"):
        metrics.accuracy([1, 2], [1])


def test_macro_f1_matches_sklearn_when_available():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    true, pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    assert metrics.macro_f1(true, pred) == pytest.approx(sklearn_metrics.f1_score(true, pred, average="macro"))


def test_bio_entities():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-ORG", "I-ORG", "B-LOC", "B-LOC"]
    assert metrics.bio_entities(tags) == {("PER", 0, 2), ("LOC", 3, 4), ("ORG", 4, 6), ("LOC", 6, 7), ("LOC", 7, 8)}


def test_entity_scores_need_exact_boundaries():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    predicted = [["B-PER", "O", "O", "B-LOC"]]
    scores = metrics.entity_scores(gold, predicted)
    assert scores == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert metrics.entity_scores(gold, gold)["f1"] == 1.0
    with pytest.raises(ValueError, match="example 0"):
        metrics.entity_scores(gold, [["O"]])


def test_squad_scores():
    assert metrics.normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert metrics.exact_match("the Eiffel tower", ["Eiffel Tower", "Paris"]) == 1.0
    assert metrics.token_f1("Eiffel", ["Eiffel Tower"]) == pytest.approx(2 / 3)
    assert metrics.squad_scores(["Paris", "x"], [["Paris"], ["y"]]) == {"exact_match": 0.5, "f1": 0.5}


def test_correlations():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert metrics.pearson(x, [2.0, 4.0, 6.0, 8.0, 10.0]) == pytest.approx(1.0)
    assert metrics.spearman(x, [1.0, 8.0, 27.0, 64.0, 125.0]) == pytest.approx(1.0)
    assert metrics.spearman(x, [5.0, 4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert metrics.pearson([1.0, 1.0], [1.0, 2.0]) == 0.0


def test_spearman_with_ties_matches_scipy_when_available():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 5, 50).astype(float), rng.normal(size=50)
    assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
