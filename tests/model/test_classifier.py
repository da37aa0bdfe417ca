"""The calibrated text classifier: training rules, prediction shape, real-data quality."""

import random

import numpy as np
import pytest

from model import TrainingError, train
from model.metrics import evaluate
from model.trust import cross_fit
from tests.conftest import TINY


def test_predict_returns_probabilities_in_task_label_order() -> None:
    """Columns follow the task's label order, rows sum to one, best label matches argmax."""
    texts, labels = zip(*TINY, strict=True)
    model = train(texts, labels, labels=["negative", "positive"])
    result = model.predict(["wonderful lovely staff", "awful dirty tables", "rude and cold"])
    assert result.labels == ("negative", "positive")
    assert result.probabilities.shape == (3, 2)
    assert np.allclose(result.probabilities.sum(axis=1), 1.0)
    assert result.predicted == ["positive", "negative", "negative"]
    assert np.allclose(result.confidence, result.probabilities.max(axis=1))


def test_empty_batch_predicts_nothing() -> None:
    texts, labels = zip(*TINY, strict=True)
    model = train(texts, labels, labels=["positive", "negative"])
    result = model.predict([])
    assert result.predicted == [] and result.probabilities.shape == (0, 2)


def test_label_never_seen_gets_zero_probability_column() -> None:
    """A label added to the task after training is a zero column, not an error."""
    texts, labels = zip(*TINY, strict=True)
    model = train(texts, labels, labels=["positive", "negative"])
    model.labels = ("positive", "neutral", "negative")
    model._columns = np.asarray([2, 0])  # classes_ are sorted: negative, positive
    result = model.predict(["lovely"])
    assert result.probabilities[0, 1] == 0.0
    assert result.predicted == ["positive"]


def test_too_few_answers_per_label_is_refused_with_counts() -> None:
    with pytest.raises(TrainingError, match=r"'neutral': 0"):
        train(
            [t for t, _ in TINY],
            [label for _, label in TINY],
            labels=["positive", "negative", "neutral"],
        )


def test_label_outside_label_set_is_refused() -> None:
    with pytest.raises(TrainingError, match="outside the label set"):
        train(["a b", "c d"], ["x", "y"], labels=["x"])


def test_non_latin_texts_train_and_predict() -> None:
    """Character n-grams carry languages written without spaces."""
    texts = [
        "とても美味しい料理でした",
        "素晴らしいサービス",
        "美味しくて最高",
        "最低の料理でした",
        "ひどいサービス",
        "二度と行かない最低",
    ]
    labels = ["良い", "良い", "良い", "悪い", "悪い", "悪い"]
    model = train(texts, labels, labels=["良い", "悪い"])
    assert model.predict(["最高に美味しい"]).predicted == ["良い"]
    assert model.predict(["最低のサービス"]).predicted == ["悪い"]


def test_out_of_fold_probabilities_cover_every_row() -> None:
    texts, labels = zip(*TINY, strict=True)
    probabilities = cross_fit(texts, labels, labels=["positive", "negative"]).probabilities
    assert probabilities.shape == (10, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0)


def test_banking77_accuracy_and_calibration(banking77: list[tuple[str, str]]) -> None:
    """On real data the model is accurate and its confidence means what it says."""
    rng = random.Random(7)
    train_rows = rng.sample(banking77[:10003], 4000)
    test_rows = banking77[10003:]
    labels = sorted({label for _, label in banking77})
    model = train([t for t, _ in train_rows], [label for _, label in train_rows], labels=labels)
    result = model.predict([t for t, _ in test_rows])
    metrics = evaluate(result.probabilities, labels, [label for _, label in test_rows])
    assert metrics["accuracy"] > 0.82
    assert metrics["macro_f1"] > 0.80
    assert metrics["ece"] < 0.08
    confident = result.confidence >= 0.9
    hits = (
        np.asarray(result.predicted, dtype=object)[confident]
        == np.asarray([label for _, label in test_rows], dtype=object)[confident]
    )
    assert hits.mean() > 0.9


def test_a_rare_label_is_learnt_not_outvoted() -> None:
    """3 spam among 20 answers: balanced weights make most new spam come out as spam."""
    rng = np.random.default_rng(0)
    common = [
        "the",
        "a",
        "to",
        "you",
        "your",
        "we",
        "our",
        "this",
        "that",
        "is",
        "for",
        "on",
        "with",
    ]
    ham_words = [
        "meeting",
        "lunch",
        "report",
        "tomorrow",
        "schedule",
        "notes",
        "project",
        "call",
        "agenda",
        "review",
    ]
    spam_words = ["prize", "winner", "free", "cash", "claim", "offer"]

    def make(words: list[str], n: int) -> list[str]:
        return [" ".join([*rng.choice(common, 5), *rng.choice(words, 2)]) for _ in range(n)]

    texts = make(ham_words, 17) + make(spam_words, 3)
    model = train(texts, ["ham"] * 17 + ["spam"] * 3, labels=["ham", "spam"], min_per_label=2)
    predicted = model.predict(make(spam_words, 200) + make(ham_words, 200)).predicted
    spam_recall = sum(p == "spam" for p in predicted[:200]) / 200
    ham_recall = sum(p == "ham" for p in predicted[200:]) / 200
    # Without class weights the same answers give a spam recall of 0.44.
    assert spam_recall >= 0.65
    assert ham_recall >= 0.95


def test_predict_with_features_matches_predict_and_features() -> None:
    texts, labels = zip(*TINY, strict=True)
    model = train(texts, labels, labels=["negative", "positive"])
    batch = ["wonderful lovely staff", "awful dirty tables"]
    prediction, features = model.predict_with_features(batch)
    assert np.allclose(prediction.probabilities, model.predict(batch).probabilities)
    assert np.allclose(features.toarray(), model.features(batch).toarray())
