"""Evaluation figures for a classifier's probabilities against true labels."""

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import accuracy_score, f1_score


def expected_calibration_error(
    confidences: NDArray[np.floating], correct: NDArray[np.bool_], *, bins: int = 10
) -> float:
    """Weighted mean gap between confidence and accuracy over equal-width confidence bins."""
    if len(confidences) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 joins the first bin.
    index = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidences[mask].mean())
    return float(total)


def evaluate(
    probabilities: NDArray[np.floating],
    classes: Sequence[str],
    true_labels: Sequence[str],
) -> dict[str, float]:
    """Accuracy, macro-F1, log loss and expected calibration error of `probabilities`."""
    class_list = list(classes)
    truth = np.asarray(true_labels, dtype=object)
    if len(truth) == 0:
        return {"n": 0.0}
    predicted = np.asarray(class_list, dtype=object)[probabilities.argmax(axis=1)]
    confidences = probabilities.max(axis=1)
    correct = predicted == truth
    position = {label: j for j, label in enumerate(class_list)}
    columns = np.asarray([position.get(label, -1) for label in truth], dtype=np.intp)
    known = columns >= 0
    # Mean negative log probability of the true label, clipped as sklearn's log_loss does.
    true_probability = np.clip(probabilities[known, columns[known]], 1e-15, 1.0)
    loss = float(-np.log(true_probability).mean()) if known.any() else float("nan")
    return {
        "n": float(len(truth)),
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(
            f1_score(truth, predicted, labels=class_list, average="macro", zero_division=0)
        ),
        "log_loss": loss,
        "ece": expected_calibration_error(confidences, correct),
        "mean_confidence": float(confidences.mean()),
    }


def per_label_f1(
    probabilities: NDArray[np.floating], classes: Sequence[str], true_labels: Sequence[str]
) -> dict[str, float]:
    """F1 of each class, keyed by label."""
    class_list = list(classes)
    predicted = np.asarray(class_list, dtype=object)[probabilities.argmax(axis=1)]
    return per_label_f1_of(class_list, true_labels, predicted)


def per_label_f1_of(
    classes: Sequence[str], true_labels: Sequence[str], predicted: Sequence[str]
) -> dict[str, float]:
    """F1 of each class from predicted labels (0 where a label is neither true nor predicted)."""
    class_list = list(classes)
    scores = f1_score(
        np.asarray(list(true_labels), dtype=object),
        np.asarray(list(predicted), dtype=object),
        labels=class_list,
        average=None,
        zero_division=0,
    )
    return {label: float(score) for label, score in zip(class_list, scores, strict=True)}
