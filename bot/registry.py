"""Model versions in the database, and a per-process cache of the loaded classifiers."""

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.states import ModelStatus
from bot.storage.schema import ModelVersion, Task
from model import TextClassifier, dumps, loads


@dataclass(frozen=True)
class LoadedModel:
    """An active model version's identity and its ready-to-use classifier."""

    id: int
    version: int
    classifier: TextClassifier


class ModelRegistry:
    """Loads model artifacts from the database once per process and keeps a few in memory."""

    def __init__(self, *, capacity: int = 8) -> None:
        self._capacity = capacity
        self._cache: OrderedDict[int, TextClassifier] = OrderedDict()
        self._lock = threading.Lock()

    def active(self, session: Session, task: Task) -> LoadedModel | None:
        """The task's active model, loaded (or None at cold start)."""
        row = session.execute(
            select(ModelVersion.id, ModelVersion.version).where(
                ModelVersion.task_id == task.id, ModelVersion.status == ModelStatus.ACTIVE
            )
        ).first()
        if row is None:
            return None
        return LoadedModel(id=row.id, version=row.version, classifier=self.load(session, row.id))

    def load(self, session: Session, model_version_id: int) -> TextClassifier:
        """The classifier of a model version, from cache or from its stored artifact."""
        with self._lock:
            cached = self._cache.get(model_version_id)
            if cached is not None:
                self._cache.move_to_end(model_version_id)
                return cached
        data, meta = session.execute(
            select(ModelVersion.artifact, ModelVersion.artifact_meta).where(
                ModelVersion.id == model_version_id
            )
        ).one()
        classifier = loads(bytes(data), meta)
        with self._lock:
            self._cache[model_version_id] = classifier
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return classifier


def next_version(session: Session, task: Task) -> int:
    """The number the task's next model version gets."""
    current = session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.task_id == task.id)
    )
    return (current or 0) + 1


def store_model(
    session: Session,
    task: Task,
    classifier: TextClassifier,
    *,
    status: str,
    train_size: int,
    metrics: dict[str, Any],
) -> ModelVersion:
    """Save a trained classifier as the task's next version; `active` retires the old one."""
    artifact = dumps(classifier, extra={"train_size": train_size, "metrics": metrics})
    if status == ModelStatus.ACTIVE:
        retire_active(session, task)
    row = ModelVersion(
        task_id=task.id,
        version=next_version(session, task),
        status=status,
        train_size=train_size,
        featurizer=classifier.featurizer,
        metrics=metrics,
        artifact_meta=artifact.metadata,
        artifact_sha256=artifact.metadata["sha256"],
        artifact=artifact.data,
    )
    session.add(row)
    session.flush()
    return row


def retire_active(session: Session, task: Task) -> None:
    """Mark the task's active model version retired."""
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.task_id == task.id, ModelVersion.status == ModelStatus.ACTIVE)
        .values(status=ModelStatus.RETIRED)
    )


def active_version(session: Session, task: Task) -> ModelVersion | None:
    """The task's active model version row (artifact not loaded)."""
    return session.scalar(
        select(ModelVersion).where(
            ModelVersion.task_id == task.id, ModelVersion.status == ModelStatus.ACTIVE
        )
    )


def versions(session: Session, task: Task) -> list[ModelVersion]:
    """Every model version of a task, oldest first (artifacts not loaded)."""
    query = select(ModelVersion).where(ModelVersion.task_id == task.id)
    return list(session.scalars(query.order_by(ModelVersion.version)))
