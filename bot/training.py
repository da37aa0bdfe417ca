"""Retraining a task's model from its human answers; the one function CLI, Slack and cron call."""

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.errors import BadInputError
from bot.registry import ACTIVE, ModelRegistry, store_model
from bot.storage.schema import SOURCE_PERSON, Item, Task, utcnow
from bot.tasks import get_task
from model import TextClassifier, TrainingError, train
from model.classifier import cross_val_probabilities, minimum_count_missing
from model.metrics import evaluate

logger = logging.getLogger(__name__)

HOLDOUT_MINIMUM = 50
_HASH_BUCKETS = 10_000


@dataclass(frozen=True)
class LabelledData:
    """The human-labelled items of a task (final labels only, skips excluded)."""

    item_ids: list[int]
    texts: list[str]
    labels: list[str]


@dataclass(frozen=True)
class RetrainResult:
    """What a retrain did, with the figures it measured."""

    task: str
    status: str  # "promoted" or "cold" (too few answers for a model)
    version: int | None
    train_size: int
    holdout_size: int
    evaluation: str  # "holdout" or "cross-validation"
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""


def load_labelled(session: Session, task: Task) -> LabelledData:
    """Every item of `task` whose final label was given by a person."""
    rows = session.execute(
        select(Item.id, Item.text, Item.final_label)
        .where(Item.task_id == task.id, Item.final_source == SOURCE_PERSON)
        .order_by(Item.id)
    ).all()
    known = set(task.labels)
    kept = [row for row in rows if row.final_label in known]
    return LabelledData(
        item_ids=[row.id for row in kept],
        texts=[row.text for row in kept],
        labels=[str(row.final_label) for row in kept],
    )


def in_holdout(item_ids: Sequence[int], *, share: float) -> NDArray[np.bool_]:
    """A stable share of items, chosen by a hash of their id, that never enters training."""
    cut = round(share * _HASH_BUCKETS)
    buckets = [
        int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=4).digest(), "big")
        % _HASH_BUCKETS
        for i in item_ids
    ]
    return np.asarray(buckets, dtype=np.int64) < cut


@dataclass(frozen=True)
class TrainedCandidate:
    """A freshly trained classifier and how it was evaluated."""

    classifier: TextClassifier
    train_size: int
    holdout_size: int
    evaluation: str
    metrics: dict[str, float]


def train_candidate(
    data: LabelledData,
    *,
    labels: Sequence[str],
    featurizer: str,
    min_per_label: int,
    holdout_share: float,
) -> TrainedCandidate:
    """Train on the non-holdout answers and measure on the holdout (or by cross-validation)."""
    short = minimum_count_missing(labels, data.labels, min_per_label=min_per_label)
    if short:
        shown = ", ".join(f"{label!r} has {count}" for label, count in list(short.items())[:8])
        more = f" and {len(short) - 8} more" if len(short) > 8 else ""
        raise TrainingError(
            f"every label needs at least {min_per_label} answers before a first model; "
            f"{shown}{more}"
        )
    holdout = in_holdout(data.item_ids, share=holdout_share)
    texts = np.asarray(data.texts, dtype=object)
    truth = np.asarray(data.labels, dtype=object)
    fit_labels = [str(x) for x in truth[~holdout]]
    use_holdout = int(holdout.sum()) >= HOLDOUT_MINIMUM and not minimum_count_missing(
        labels, fit_labels, min_per_label=min_per_label
    )
    if use_holdout:
        classifier = train(
            [str(x) for x in texts[~holdout]],
            fit_labels,
            labels=labels,
            featurizer=featurizer,
            min_per_label=min_per_label,
        )
        held_truth = [str(x) for x in truth[holdout]]
        probabilities = classifier.predict([str(x) for x in texts[holdout]]).probabilities
        metrics = evaluate(probabilities, labels, held_truth)
        return TrainedCandidate(classifier, len(fit_labels), len(held_truth), "holdout", metrics)
    # Too few answers for a meaningful holdout: measure by cross-validation, train on everything.
    probabilities = cross_val_probabilities(
        data.texts, data.labels, labels=labels, featurizer=featurizer
    )
    metrics = evaluate(probabilities, labels, data.labels)
    classifier = train(
        data.texts, data.labels, labels=labels, featurizer=featurizer, min_per_label=min_per_label
    )
    return TrainedCandidate(classifier, len(data.labels), 0, "cross-validation", metrics)


def retrain_task(
    sessions: sessionmaker[Session],
    task_name: str,
    *,
    registry: ModelRegistry,
    min_per_label: int,
    holdout_share: float,
    now: datetime | None = None,
) -> RetrainResult:
    """Train a model from all answers of a task and make it the active one.

    Reading, training and writing are separate steps so that the database is not held while
    the model trains; the new version is written in one transaction.
    """
    now = now or utcnow()
    with sessions.begin() as session:
        task = get_task(session, task_name)
        data = load_labelled(session, task)
        labels, featurizer, task_id = list(task.labels), task.featurizer, task.id
    try:
        candidate = train_candidate(
            data,
            labels=labels,
            featurizer=featurizer,
            min_per_label=min_per_label,
            holdout_share=holdout_share,
        )
    except TrainingError as exc:
        raise BadInputError(f"cannot train {task_name!r}: {exc}") from None
    metrics: dict[str, Any] = dict(candidate.metrics)
    metrics.update(
        evaluation=candidate.evaluation,
        holdout_size=candidate.holdout_size,
        trained_at=now.isoformat(),
    )
    with sessions.begin() as session:
        task = session.get_one(Task, task_id)
        row = store_model(
            session,
            task,
            candidate.classifier,
            status=ACTIVE,
            train_size=candidate.train_size,
            metrics=metrics,
        )
        version = row.version
    logger.info("task %s: model v%d active (%s)", task_name, version, candidate.evaluation)
    return RetrainResult(
        task=task_name,
        status="promoted",
        version=version,
        train_size=candidate.train_size,
        holdout_size=candidate.holdout_size,
        evaluation=candidate.evaluation,
        metrics={k: float(v) for k, v in candidate.metrics.items()},
        message=f"model v{version} is active",
    )
