"""The per-task text classifier: a featurizer and a calibrated linear model in one Pipeline."""

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from model.features import DEFAULT_FEATURIZER, build_featurizer

# Above this many examples a single held-out calibration split is as good as cross-validation
# and costs one fit instead of four, and a stochastic-gradient linear SVM (classes fitted in
# parallel) replaces liblinear's, which takes minutes on 100k texts with 77 labels.
_SINGLE_SPLIT_FROM = 20_000
_CALIBRATION_SHARE = 0.15


class TrainingError(ValueError):
    """Raised when the examples given cannot train a model (too few, one label, unknown label)."""


@dataclass(frozen=True)
class Prediction:
    """Batch prediction: best label, its probability, and the full probability matrix.

    `probabilities[i, j]` is the probability of `labels[j]` for text i, in the task's label
    order; labels the model never saw get 0.
    """

    labels: tuple[str, ...]
    predicted: list[str]
    confidence: NDArray[np.float64]
    probabilities: NDArray[np.float64]


class TextClassifier:
    """A fitted pipeline plus the ordered label set it answers in."""

    def __init__(self, pipeline: Pipeline, labels: Sequence[str], *, featurizer: str) -> None:
        self.pipeline = pipeline
        self.labels = tuple(labels)
        self.featurizer = featurizer
        classes = [str(c) for c in pipeline.classes_]
        position = {label: j for j, label in enumerate(self.labels)}
        missing = [c for c in classes if c not in position]
        if missing:
            raise TrainingError(f"model knows labels outside the label set: {missing}")
        self._columns = np.asarray([position[c] for c in classes], dtype=np.intp)

    def predict(self, texts: Sequence[str]) -> Prediction:
        """Score every text in one vectorised call."""
        n = len(texts)
        probabilities = np.zeros((n, len(self.labels)), dtype=np.float64)
        if n:
            probabilities[:, self._columns] = self.pipeline.predict_proba(list(texts))
        return self._prediction(probabilities)

    def predict_with_features(self, texts: Sequence[str]) -> tuple[Prediction, Any]:
        """`predict` and `features` together, featurizing once where the pipeline allows."""
        if "calibrated" in self.pipeline.named_steps or not len(texts):
            return self.predict(texts), self.features(texts)
        features = self.pipeline.named_steps["features"].transform(list(texts))
        probabilities = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        probabilities[:, self._columns] = self.pipeline.named_steps["classifier"].predict_proba(
            features
        )
        return self._prediction(probabilities), features

    def features(self, texts: Sequence[str]) -> Any:
        """The featurizer's output for `texts` (what the linear model sees): for similarity."""
        pipeline = self.pipeline
        if "calibrated" in pipeline.named_steps:  # a single-split model wraps the real pipeline
            pipeline = pipeline.named_steps["calibrated"].estimator.estimator
        return pipeline.named_steps["features"].transform(list(texts))

    def _prediction(self, probabilities: NDArray[np.float64]) -> Prediction:
        n = probabilities.shape[0]
        best = probabilities.argmax(axis=1) if n else np.zeros(0, dtype=np.intp)
        label_array = np.asarray(self.labels, dtype=object)
        return Prediction(
            labels=self.labels,
            predicted=[str(x) for x in label_array[best]],
            confidence=probabilities[np.arange(n), best] if n else np.zeros(0),
            probabilities=probabilities,
        )


def minimum_count_missing(
    labels: Sequence[str], train_labels: Sequence[str], *, min_per_label: int
) -> dict[str, int]:
    """Labels that have fewer than `min_per_label` examples, with their counts."""
    counts = Counter(train_labels)
    return {label: counts.get(label, 0) for label in labels if counts.get(label, 0) < min_per_label}


def build_pipeline(
    *, featurizer: str, calibration_folds: int, single_split: bool, random_state: int = 0
) -> Pipeline:
    """An unfitted pipeline: featurizer, then a temperature-calibrated linear SVM."""
    if single_split:
        # Calibration is fitted separately on a held-out share (see `train`).
        classifier: object = SGDClassifier(
            loss="hinge",
            alpha=2e-5,
            tol=1e-3,
            n_jobs=2,
            random_state=random_state,
            class_weight="balanced",
        )
    else:
        classifier = CalibratedClassifierCV(
            # Balanced weights: 3 "spam" among 20 answers must still be learnt, not outvoted.
            LinearSVC(C=0.5, random_state=random_state, class_weight="balanced"),
            method="temperature",
            cv=calibration_folds,
            ensemble=False,
        )
    return Pipeline([("features", build_featurizer(featurizer)), ("classifier", classifier)])


def _fit(estimator: Pipeline, texts: list[str], labels: list[str]) -> None:
    try:
        with warnings.catch_warnings():
            # Young tasks have many labels and few answers each: that is a classification
            # problem all the same, not the regression target scikit-learn suspects.
            warnings.filterwarnings("ignore", message="The number of unique classes is greater")
            estimator.fit(texts, labels)
    except ValueError as exc:  # e.g. an empty vocabulary: texts with no word characters at all
        raise TrainingError(f"cannot learn from these texts: {exc}") from exc


def train(
    texts: Sequence[str],
    train_labels: Sequence[str],
    *,
    labels: Sequence[str],
    featurizer: str = DEFAULT_FEATURIZER,
    min_per_label: int = 3,
    require_every_label: bool = True,
    random_state: int = 0,
) -> TextClassifier:
    """Fit a calibrated classifier on `texts` labelled `train_labels` within label set `labels`.

    With `require_every_label` False, labels without answers are allowed (the model gives them
    probability 0); the labels that do appear still need `min_per_label` answers each.
    """
    if len(texts) != len(train_labels):
        raise TrainingError("texts and labels differ in length")
    if min_per_label < 2:
        raise TrainingError("min_per_label must be at least 2 to calibrate probabilities")
    unknown = sorted(set(train_labels) - set(labels))
    if unknown:
        raise TrainingError(f"labels outside the label set: {unknown}")
    present = labels if require_every_label else sorted(set(train_labels))
    short = minimum_count_missing(present, train_labels, min_per_label=min_per_label)
    if short:
        shown = ", ".join(f"{label!r}: {count}" for label, count in list(short.items())[:10])
        raise TrainingError(
            f"every label needs at least {min_per_label} answers; short: {shown}"
            + (f" and {len(short) - 10} more" if len(short) > 10 else "")
        )
    if len(set(train_labels)) < 2:
        raise TrainingError("training needs at least two different labels")
    counts = Counter(train_labels)
    single_split = len(texts) >= _SINGLE_SPLIT_FROM
    folds = min(3, min(counts.values()))
    pipeline = build_pipeline(
        featurizer=featurizer,
        calibration_folds=folds,
        single_split=single_split,
        random_state=random_state,
    )
    text_list, label_list = list(texts), list(train_labels)
    if not single_split:
        _fit(pipeline, text_list, label_list)
        return TextClassifier(pipeline, labels, featurizer=featurizer)
    fit_x, cal_x, fit_y, cal_y = train_test_split(
        text_list,
        label_list,
        test_size=_CALIBRATION_SHARE,
        random_state=random_state,
        stratify=label_list,
    )
    _fit(pipeline, fit_x, fit_y)
    calibrated = CalibratedClassifierCV(FrozenEstimator(pipeline), method="temperature")
    calibrated.fit(cal_x, cal_y)
    wrapped = Pipeline([("calibrated", calibrated)])
    return TextClassifier(wrapped, labels, featurizer=featurizer)
