"""Task metrics on hand-built predictions with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from models_registry.nn.metrics import (
    Predictions,
    check_metric,
    default_metric,
    metric_score,
    metrics_for,
    predictions_from_raw,
)


def test_accuracy_balanced_accuracy_and_macro_f1():
    y = np.array([0, 0, 0, 1])
    always_zero = Predictions(np.array([0, 0, 0, 0]))
    assert metric_score("accuracy", y, always_zero) == 0.75
    assert metric_score("balanced_accuracy", y, always_zero) == 0.5  # recall 1 on class 0, 0 on class 1
    # F1: class 0 = 2·3/(2·3+1+0) = 6/7; class 1 = 0
    assert metric_score("macro_f1", y, always_zero) == pytest.approx((6 / 7 + 0) / 2)
    perfect = Predictions(y.copy())
    assert all(metric_score(m, y, perfect) == 1.0 for m in ("accuracy", "balanced_accuracy", "macro_f1"))


def test_roc_auc_counts_correctly_ordered_pairs_and_ties_as_half():
    y = np.array([0, 0, 1, 1])
    # pairs (pos, neg): (0.35 > 0.1) yes, (0.35 > 0.4) no, (0.8 > both) yes, yes: 3 of 4
    assert metric_score("roc_auc", y, Predictions(np.array([0, 0, 0, 1]), np.array([0.1, 0.4, 0.35, 0.8]))) == 0.75
    assert metric_score("roc_auc", y, Predictions(y, np.array([0.5, 0.5, 0.5, 0.5]))) == 0.5


def test_regression_scores():
    y = np.array([[1.0], [2.0], [3.0], [10.0]])
    assert metric_score("r2", y, Predictions(y.copy())) == 1.0
    assert metric_score("r2", y, Predictions(np.full_like(y, y.mean()))) == 0.0
    # median predictor: MAE skill 0; half its error: 0.5
    median = np.full_like(y, np.median(y))
    assert metric_score("mae_skill", y, Predictions(median)) == pytest.approx(0.0)
    assert metric_score("mae_skill", y, Predictions(y + (median - y) / 2)) == pytest.approx(0.5)
    assert metric_score("r2", y, Predictions(np.array([[np.nan]] * 4))) == 0.0


def test_the_default_metric_follows_the_class_balance():
    assert default_metric("classes", np.array([0, 1] * 50)) == "accuracy"
    assert default_metric("classes", np.array([0] * 90 + [1] * 10)) == "balanced_accuracy"
    assert default_metric("values") == "r2" and default_metric("reconstruction") == "reconstruction_r2"


def test_metric_choice_is_checked_against_the_task():
    assert "roc_auc" in metrics_for("classes", n_classes=2) and "roc_auc" not in metrics_for("classes", n_classes=3)
    with pytest.raises(ValueError, match="metric: expected one of"):
        check_metric("r2", "classes", n_classes=3)
    with pytest.raises(ValueError, match="roc_auc"):
        check_metric("roc_auc", "classes", n_classes=5)


def test_binary_logits_give_a_class_one_score():
    predictions = predictions_from_raw("classes", np.array([[2.0, 0.0], [0.0, 3.0]]))
    assert list(predictions.values) == [0, 1]
    assert predictions.scores[0] < 0.5 < predictions.scores[1]
