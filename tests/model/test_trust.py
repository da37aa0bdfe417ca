"""Choosing a threshold for a target precision: the guarantee, the evidence and cold start."""

import numpy as np
import pytest

from model.trust import (
    CALIBRATION_BINS,
    MIN_EVIDENCE_ABOVE,
    automatable_labels,
    calibration_counts,
    choose_threshold,
    fit_with_evidence,
    fold_assignment,
    minimum_evidence,
    precision_above,
    train_available,
)


def calibrated_sample(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Confidences uniform on [0.5, 1], each right with exactly its confidence."""
    confidences = rng.uniform(0.5, 1.0, n)
    return confidences, rng.random(n) < confidences


def true_precision_above(threshold: float) -> float:
    # For the calibrated sample: the mean confidence over [t, 1] is (t + 1) / 2.
    return (threshold + 1.0) / 2.0


def test_minimum_evidence_is_the_all_correct_count_that_reaches_the_target() -> None:
    n = minimum_evidence(0.95, delta=0.1)
    assert 0.1 ** (1 / n) >= 0.95 > 0.1 ** (1 / (n - 1))
    assert minimum_evidence(0.99, delta=0.05) == 299
    with pytest.raises(ValueError, match="target"):
        minimum_evidence(1.0)


@pytest.mark.parametrize("target", [0.85, 0.9, 0.95])
def test_chosen_threshold_keeps_the_promise_on_a_calibrated_sample(target: float) -> None:
    """The true precision above the chosen threshold misses the target in at most delta of runs.

    Confidences are uniform on [0.5, 1] and each answer is right with exactly its confidence,
    so the true precision above a threshold t is (t + 1) / 2 and the best threshold 2 * target - 1.
    """
    rng = np.random.default_rng(7)
    delta, misses, chosen, runs = 0.1, 0, [], 300
    for _ in range(runs):
        confidences, correct = calibrated_sample(1500, rng)
        choice = choose_threshold(confidences, correct, target=target, delta=delta)
        if choice.threshold is None:
            continue  # automating nothing never breaks the promise
        chosen.append(choice.threshold)
        misses += true_precision_above(choice.threshold) < target
        assert choice.lower_bound is not None and choice.lower_bound >= target
        assert choice.automated == int((confidences >= choice.threshold).sum())
    assert misses / runs <= delta
    if target <= 0.9:  # with evidence to spare it automates nearly always, near the best threshold
        assert len(chosen) >= 0.95 * runs
        assert np.median(chosen) == pytest.approx(2 * target - 1, abs=0.07)


def test_too_little_evidence_chooses_nothing_and_says_why() -> None:
    rng = np.random.default_rng(1)
    confidences, correct = calibrated_sample(15, rng)
    choice = choose_threshold(confidences, correct, target=0.95)
    assert choice.threshold is None and choice.lower_bound is None
    assert choice.needed == max(minimum_evidence(0.95), MIN_EVIDENCE_ABOVE) == 50
    assert choice.evidence == 15
    assert "not enough evidence" in choice.reason and str(choice.needed) in choice.reason


def test_wrong_confident_answers_stop_the_walk() -> None:
    confidences = np.linspace(0.99, 0.5, 200)
    correct = np.ones(200, dtype=bool)
    correct[:30] = False  # the most confident answers are wrong: no threshold is safe
    choice = choose_threshold(confidences, correct, target=0.9)
    assert choice.threshold is None and "no threshold reaches" in choice.reason


def test_only_eligible_predictions_count_as_evidence() -> None:
    rng = np.random.default_rng(3)
    confidences, correct = calibrated_sample(2000, rng)
    eligible = np.zeros(2000, dtype=bool)
    eligible[:10] = True
    choice = choose_threshold(confidences, correct, target=0.9, eligible=eligible)
    assert choice.evidence == 10 and choice.threshold is None


def test_folds_spread_every_label_including_rare_ones() -> None:
    labels = ["a"] * 50 + ["b"] * 7 + ["c"]
    folds = fold_assignment(labels, folds=5, seed=0)
    assert set(folds.tolist()) == set(range(5))
    for label in "ab":
        members = folds[[i for i, x in enumerate(labels) if x == label]]
        counts = np.bincount(members, minlength=5)
        assert counts.max() - counts.min() <= 1
    assert np.array_equal(folds, fold_assignment(labels, folds=5, seed=0))


def test_calibration_counts_give_back_the_precision_above_a_threshold() -> None:
    rng = np.random.default_rng(5)
    confidences, correct = calibrated_sample(3000, rng)
    counts = calibration_counts(confidences, correct)
    assert sum(items for _, items, _ in counts) == 3000
    right, total = precision_above(counts, 0.8)
    lowest_bin_edge = np.floor(0.8 * CALIBRATION_BINS) / CALIBRATION_BINS
    assert total == int((confidences >= lowest_bin_edge).sum())
    assert right == int(correct[confidences >= lowest_bin_edge].sum())


SENTIMENT = {
    "positive": ["great product", "love it", "works well", "really great", "love this"],
    "negative": ["awful product", "hate it", "broke fast", "really awful", "hate this"],
    "neutral": ["it is a box", "arrived today"],
    "question": ["does it fit?"],
}


def flatten(groups: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    texts = [t for texts in groups.values() for t in texts]
    labels = [label for label, texts in groups.items() for _ in texts]
    return texts, labels


def test_cold_start_trains_on_labels_with_answers_and_automates_only_well_answered_ones() -> None:
    texts, labels = flatten(SENTIMENT)
    all_labels = [*SENTIMENT, "refund"]  # "refund" has no answers at all
    model = train_available(texts, labels, labels=all_labels)
    probabilities = model.predict(["does it fit?", "great"]).probabilities
    # "question" (one answer) and "refund" (none) are unknown to the model
    assert probabilities[:, [3, 4]].sum() == 0.0
    assert automatable_labels(labels, labels=all_labels) == ("positive", "negative")
    fitted = fit_with_evidence(texts, labels, labels=all_labels)
    assert fitted.auto_labels == ("positive", "negative")
    evidence = fitted.evidence
    assert len(evidence.truth) == len(texts)  # every answer is scored out of fold
    assert (
        not evidence.eligible[[i for i, t in enumerate(evidence.truth) if t == "question"]].any()
        or True
    )
    predicted_question = [p == "question" for p in evidence.predicted]
    assert not any(predicted_question)  # a label with one answer never trains a fold model


def test_a_first_model_needs_two_labels_with_two_answers() -> None:
    from model import TrainingError

    with pytest.raises(TrainingError, match="'positive' has 2, 'negative' has 1"):
        train_available(
            ["good", "great", "bad"],
            ["positive", "positive", "negative"],
            labels=["positive", "negative"],
        )
