"""Thresholds that keep a promise: automatic answers reach a target precision, with evidence.

The evidence is out-of-fold: every labelled example is scored by a model that never trained on
it (cross-fitting), so its confidence and correctness look like those of a new item. The
threshold is then chosen by fixed-sequence testing (a learn-then-test procedure): candidate
thresholds are visited from the most confident down, each is accepted only while the one-sided
Clopper-Pearson lower bound of the precision above it reaches the target, and the walk stops at
the first failure. The order depends on the confidences only, never on which answers were right,
so the chance that the chosen threshold's true precision is below the target is at most `delta`.
Finally the deployed model is refit on every answer.
"""

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model.classifier import TextClassifier, TrainingError, train
from model.features import DEFAULT_FEATURIZER
from model.intervals import precision_lower_bound

DEFAULT_DELTA = 0.1
# A label is automated only once this many of its answers exist: below that its out-of-fold
# evidence is one or two items, and the model has barely seen it.
MIN_ANSWERS_TO_AUTOMATE = 3
# No threshold rests on fewer held-out answers above it than this, whatever the target: a
# handful of lucky answers says little about the next thousand items.
MIN_EVIDENCE_ABOVE = 50
# A label needs two answers to enter a model (its probability calibration splits it in two).
MIN_ANSWERS_TO_TRAIN = 2
# From this many answers one held-out share gives ample evidence at a fifth of the cost.
_SINGLE_SPLIT_FROM = 20_000
_SPLIT_SHARE = 0.2
# Stored calibration evidence: counts per confidence bin of this width.
CALIBRATION_BINS = 1000


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold chosen for a target precision, and the evidence behind it.

    `threshold` is None when the evidence cannot support the target yet: nothing is automated.
    """

    target: float
    delta: float
    threshold: float | None
    lower_bound: float | None
    automated: int  # evidence items at or above the threshold
    correct: int  # of those, how many the model got right
    evidence: int  # evidence items whose predicted label may be automated
    needed: int  # the fewest all-correct items any threshold needs to reach the target

    @property
    def reason(self) -> str:
        """One sentence a person can act on."""
        if self.threshold is not None:
            return (
                f"{self.correct} of {self.automated} held-out answers above {self.threshold:.3f} "
                f"were right; precision ≥ {self.lower_bound:.3f} with "
                f"{1 - self.delta:.0%} confidence"
            )
        if self.evidence < self.needed:
            return (
                f"not enough evidence yet for {self.target:.1%}: it takes at least "
                f"{self.needed} held-out answers the model is sure of, and there are "
                f"{self.evidence}; items keep going to people"
            )
        return (
            f"no threshold reaches {self.target:.1%} with {1 - self.delta:.0%} confidence on "
            f"{self.evidence} held-out answers yet; items keep going to people"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored with the task and printed by the CLI)."""
        return {
            "target_precision": self.target,
            "threshold": self.threshold,
            "precision_lower_bound": self.lower_bound,
            "confidence_level": 1 - self.delta,
            "automated": self.automated,
            "correct": self.correct,
            "evidence": self.evidence,
            "needed": self.needed,
            "reason": self.reason,
        }


def minimum_evidence(target: float, *, delta: float = DEFAULT_DELTA) -> int:
    """How many all-correct items it takes before a lower bound can reach `target`."""
    if not 0.0 < target < 1.0:
        raise ValueError("the target precision must be above 0 and below 1")
    # With k == n the exact lower bound is delta ** (1 / n).
    return math.ceil(math.log(delta) / math.log(target))


def choose_threshold(
    confidences: NDArray[np.floating],
    correct: NDArray[np.bool_],
    *,
    target: float,
    delta: float = DEFAULT_DELTA,
    eligible: NDArray[np.bool_] | None = None,
    step: int | None = None,
) -> ThresholdChoice:
    """The lowest threshold whose precision reaches `target` with confidence 1 - delta.

    A walk that starts among the few most confident answers stops at the first of them that is
    wrong; so with enough evidence up to three walks start deeper (at m, 4m and 16m answers,
    m the fewest that can reach the target), each at delta / 3 (a union bound keeps the whole
    at delta), and the lowest threshold any of them accepts is kept. Candidate thresholds are
    spaced `step` answers apart (by default a fiftieth of the evidence).
    """
    mask = np.ones(len(confidences), dtype=bool) if eligible is None else eligible
    conf = np.asarray(confidences, dtype=np.float64)[mask]
    right = np.asarray(correct, dtype=bool)[mask]
    order = np.argsort(-conf, kind="stable")
    conf, right = conf[order], right[order]
    n = len(conf)
    walks, each = 1, delta
    for count in (3, 2):
        needed = max(minimum_evidence(target, delta=delta / count), MIN_EVIDENCE_ABOVE)
        if needed * 4 ** (count - 1) <= n:
            walks, each = count, delta / count
            break
    needed = max(minimum_evidence(target, delta=each), MIN_EVIDENCE_ABOVE)
    fewest = max(minimum_evidence(target, delta=delta), MIN_EVIDENCE_ABOVE)
    none = ThresholdChoice(target, delta, None, None, 0, 0, n, fewest)
    if n < needed:
        return none
    hits = np.cumsum(right)
    # Candidate cuts end tie groups: a threshold takes every item with that confidence or more.
    ends = np.flatnonzero(np.append(conf[1:] < conf[:-1], True))
    spacing = step if step is not None else max(1, n // 50, needed // 4)
    best: ThresholdChoice = none
    for walk in range(walks):
        start = needed * 4**walk
        last = -spacing
        for end in ends[ends + 1 >= start].tolist():
            if end - last < spacing and end != ends[-1]:
                continue
            last = end
            total, k = end + 1, int(hits[end])
            bound = precision_lower_bound(k, total, delta=each)
            if bound < target:
                break
            if best.threshold is None or total > best.automated:
                best = ThresholdChoice(target, delta, float(conf[end]), bound, total, k, n, needed)
    return best


def fold_assignment(train_labels: Sequence[str], *, folds: int, seed: int = 0) -> NDArray[np.intp]:
    """A fold per example, spreading each label over the folds (stratified, rare labels too)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(train_labels), dtype=np.intp)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(train_labels):
        by_label.setdefault(label, []).append(i)
    for label in sorted(by_label):
        members = np.asarray(by_label[label], dtype=np.intp)
        rng.shuffle(members)
        start = int(rng.integers(folds))
        out[members] = (start + np.arange(len(members))) % folds
    return out


def train_available(
    texts: Sequence[str],
    train_labels: Sequence[str],
    *,
    labels: Sequence[str],
    featurizer: str = DEFAULT_FEATURIZER,
    random_state: int = 0,
) -> TextClassifier:
    """Fit on the labels that have enough answers; the others stay unknown to the model."""
    counts = Counter(train_labels)
    kept = [i for i, label in enumerate(train_labels) if counts[label] >= MIN_ANSWERS_TO_TRAIN]
    if len({train_labels[i] for i in kept}) < 2:
        shown = ", ".join(
            f"{label!r} has {counts.get(label, 0)}"
            for label in sorted(labels, key=lambda x: -counts.get(x, 0))[:8]
        )
        raise TrainingError(
            f"a first model needs two labels with at least {MIN_ANSWERS_TO_TRAIN} answers "
            f"each; {shown}" + (f" and {len(labels) - 8} more" if len(labels) > 8 else "")
        )
    return train(
        [texts[i] for i in kept],
        [train_labels[i] for i in kept],
        labels=labels,
        featurizer=featurizer,
        min_per_label=MIN_ANSWERS_TO_TRAIN,
        require_every_label=False,
        random_state=random_state,
    )


@dataclass(frozen=True)
class OutOfFold:
    """Probabilities for labelled examples from models that never trained on them."""

    probabilities: NDArray[np.float64]  # rows for every example; zeros where `scored` is False
    scored: NDArray[np.bool_]  # which examples have an out-of-fold score
    folds: int


def cross_fit(
    texts: Sequence[str],
    train_labels: Sequence[str],
    *,
    labels: Sequence[str],
    featurizer: str = DEFAULT_FEATURIZER,
    random_state: int = 0,
) -> OutOfFold:
    """Score every labelled example with a model trained on the other folds."""
    n = len(texts)
    if n >= _SINGLE_SPLIT_FROM:
        rng = np.random.default_rng(random_state)
        held = rng.random(n) < _SPLIT_SHARE
        assignment = np.where(held, 0, 1).astype(np.intp)
        folds_to_score = [0]
    else:
        folds = 5 if n >= 50 else 3
        assignment = fold_assignment(train_labels, folds=folds, seed=random_state)
        folds_to_score = list(range(folds))
    out = np.zeros((n, len(labels)), dtype=np.float64)
    scored = np.zeros(n, dtype=bool)
    for fold in folds_to_score:
        test = np.flatnonzero(assignment == fold)
        fit = np.flatnonzero(assignment != fold).tolist()
        try:
            model = train_available(
                [texts[i] for i in fit],
                [train_labels[i] for i in fit],
                labels=labels,
                featurizer=featurizer,
                random_state=random_state,
            )
        except TrainingError:
            continue  # a fold too small to learn from leaves its examples unscored
        out[test] = model.predict([texts[i] for i in test.tolist()]).probabilities
        scored[test] = True
    return OutOfFold(out, scored, len(folds_to_score) if n >= _SINGLE_SPLIT_FROM else folds)


def automatable_labels(
    train_labels: Sequence[str],
    *,
    labels: Sequence[str],
    min_answers: int = MIN_ANSWERS_TO_AUTOMATE,
) -> tuple[str, ...]:
    """Labels with enough answers for their predictions to be answered automatically."""
    counts = Counter(train_labels)
    return tuple(label for label in labels if counts[label] >= min_answers)


def calibration_counts(
    confidences: NDArray[np.floating], correct: NDArray[np.bool_]
) -> list[list[int]]:
    """Compact evidence: [bin, items, correct] for each non-empty confidence bin."""
    index = np.clip(
        (np.asarray(confidences) * CALIBRATION_BINS).astype(np.intp), 0, CALIBRATION_BINS - 1
    )
    totals = np.bincount(index, minlength=CALIBRATION_BINS)
    rights = np.bincount(index, weights=correct.astype(np.float64), minlength=CALIBRATION_BINS)
    return [[int(b), int(totals[b]), int(rights[b])] for b in np.flatnonzero(totals)]


def precision_above(counts: Sequence[Sequence[int]], threshold: float) -> tuple[int, int]:
    """From stored calibration counts: (correct, items) of evidence at or above `threshold`.

    Bins are 1/CALIBRATION_BINS wide; a bin counts when its lower edge reaches the threshold
    rounded down to a bin, so the figure may include items up to one bin below it.
    """
    first = math.floor(threshold * CALIBRATION_BINS + 1e-9)
    total = right = 0
    for b, items, ok in counts:
        if b >= first:
            total += items
            right += ok
    return right, total


@dataclass(frozen=True)
class Evidence:
    """Out-of-fold confidence and correctness of the labelled examples that were scored."""

    confidences: NDArray[np.float64]
    correct: NDArray[np.bool_]
    eligible: NDArray[np.bool_]  # predicted label may be automated
    truth: list[str]
    predicted: list[str]
    probabilities: NDArray[np.float64]
    rows: NDArray[np.intp]  # positions of these examples in the training data


@dataclass(frozen=True)
class FittedWithEvidence:
    """A deployable model refit on every answer, and the held-out evidence that judges it."""

    classifier: TextClassifier
    evidence: Evidence
    auto_labels: tuple[str, ...]
    folds: int

    def choose(self, target: float, *, delta: float = DEFAULT_DELTA) -> ThresholdChoice:
        """The threshold for `target` on this model's evidence."""
        e = self.evidence
        return choose_threshold(
            e.confidences, e.correct, target=target, delta=delta, eligible=e.eligible
        )


def fit_with_evidence(
    texts: Sequence[str],
    train_labels: Sequence[str],
    *,
    labels: Sequence[str],
    featurizer: str = DEFAULT_FEATURIZER,
    random_state: int = 0,
    min_to_automate: int = MIN_ANSWERS_TO_AUTOMATE,
) -> FittedWithEvidence:
    """Cross-fit for out-of-fold evidence, then refit on every answer for deployment."""
    classifier = train_available(
        texts, train_labels, labels=labels, featurizer=featurizer, random_state=random_state
    )
    oof = cross_fit(
        texts, train_labels, labels=labels, featurizer=featurizer, random_state=random_state
    )
    auto = automatable_labels(train_labels, labels=labels, min_answers=min_to_automate)
    rows = np.flatnonzero(oof.scored)
    probabilities = oof.probabilities[rows]
    label_array = np.asarray(list(labels), dtype=object)
    predicted = label_array[probabilities.argmax(axis=1)] if len(rows) else label_array[:0]
    truth = np.asarray(list(train_labels), dtype=object)[rows]
    allowed = set(auto)
    evidence = Evidence(
        confidences=probabilities.max(axis=1) if len(rows) else np.zeros(0),
        correct=np.asarray(predicted == truth, dtype=bool),
        eligible=np.asarray([p in allowed for p in predicted], dtype=bool),
        truth=[str(x) for x in truth],
        predicted=[str(x) for x in predicted],
        probabilities=probabilities,
        rows=rows,
    )
    return FittedWithEvidence(classifier, evidence, auto, oof.folds)
