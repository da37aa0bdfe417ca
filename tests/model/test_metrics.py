"""Evaluation figures: accuracy, macro-F1, log loss and calibration error."""

import numpy as np
import pytest

from model.metrics import evaluate, expected_calibration_error, per_label_f1


def test_perfect_confident_predictions() -> None:
    probabilities = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    metrics = evaluate(probabilities, ["a", "b"], ["a", "b", "a"])
    assert metrics["accuracy"] == 1.0
    assert metrics["macro_f1"] == 1.0
    assert metrics["ece"] == pytest.approx(0.0)
    assert metrics["log_loss"] < 1e-6


def test_ece_of_overconfident_model() -> None:
    """Confidence 0.9 on every row with half of them right is 0.4 off."""
    confidences = np.full(10, 0.9)
    correct = np.array([True, False] * 5)
    assert expected_calibration_error(confidences, correct) == pytest.approx(0.4)


def test_ece_weights_bins_by_size() -> None:
    confidences = np.array([0.95, 0.95, 0.95, 0.95, 0.55])
    correct = np.array([True, True, True, True, False])
    # bin 0.9-1.0: |1.0 - 0.95| * 4/5; bin 0.5-0.6: |0 - 0.55| * 1/5
    assert expected_calibration_error(confidences, correct) == pytest.approx(0.04 + 0.11)


def test_accuracy_and_macro_f1_values() -> None:
    probabilities = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    metrics = evaluate(probabilities, ["a", "b"], ["a", "b", "b", "a"])
    assert metrics["accuracy"] == pytest.approx(0.75)
    # a: precision 2/3 recall 1 -> 0.8; b: precision 1 recall 0.5 -> 2/3
    assert metrics["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert per_label_f1(probabilities, ["a", "b"], ["a", "b", "b", "a"]) == pytest.approx(
        {"a": 0.8, "b": 2 / 3}
    )
