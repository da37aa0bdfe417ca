"""Model versions in the database, and a per-process cache of the loaded classifiers.

Artifacts are signed with the model signing key (HITL_MODEL_SIGNING_KEY, or a key file made on
first use) when stored, and checked against it when loaded: a row written by someone without
the key is refused, and the last model this process trusted keeps serving.
"""

import contextlib
import logging
import os
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.states import ModelStatus
from bot.storage.schema import ModelVersion, Task
from model import ArtifactError, TextClassifier, dumps, loads
from model.persistence import Artifact

logger = logging.getLogger(__name__)
_KEY_BYTES = 32


@dataclass(frozen=True)
class LoadedModel:
    """An active model version's identity and its ready-to-use classifier."""

    id: int
    version: int
    classifier: TextClassifier


class ModelRegistry:
    """Loads model artifacts from the database once per process and keeps a few in memory."""

    def __init__(self, *, key: bytes, capacity: int = 8) -> None:
        if len(key) < 16:
            raise ValueError("the model signing key must be at least 16 bytes")
        self._key = key
        self._capacity = capacity
        self._cache: OrderedDict[int, TextClassifier] = OrderedDict()
        self._trusted: dict[int, LoadedModel] = {}  # per task: the last model that loaded
        self._lock = threading.Lock()

    def active(self, session: Session, task: Task) -> LoadedModel | None:
        """The task's active model, loaded (or None at cold start).

        An active artifact that fails its checks is refused and logged; the last model this
        process trusted for the task keeps serving, or none (every item goes to a person).
        """
        row = session.execute(
            select(ModelVersion.id, ModelVersion.version).where(
                ModelVersion.task_id == task.id, ModelVersion.status == ModelStatus.ACTIVE
            )
        ).first()
        if row is None:
            return None
        try:
            classifier = self.load(session, row.id)
        except ArtifactError as exc:
            fallback = self._trusted.get(task.id)
            logger.error(
                "task %s: model v%d refused (%s); %s",
                task.name,
                row.version,
                exc,
                f"v{fallback.version} keeps serving" if fallback else "every item goes to review",
            )
            return fallback
        loaded = LoadedModel(id=row.id, version=row.version, classifier=classifier)
        self._trusted[task.id] = loaded
        return loaded

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
        classifier = loads(bytes(data), meta, key=self._key)
        with self._lock:
            self._cache[model_version_id] = classifier
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return classifier

    def sign(self, classifier: TextClassifier, *, extra: dict[str, Any]) -> Artifact:
        """Serialize `classifier` signed with this registry's key."""
        return dumps(classifier, key=self._key, extra=extra)


def signing_key(secret: str | None, key_file: Path) -> bytes:
    """The model signing key: the configured secret, else a random key kept in `key_file`.

    The key file is made on first use, readable by its owner only. Replicas that share a
    database must share the key: set HITL_MODEL_SIGNING_KEY on each.
    """
    if secret:
        return secret.encode()
    try:
        return _read_key(key_file)
    except FileNotFoundError:
        pass
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Write the whole key under a private name, then link it into place: a process that
    # races us either links first or finds a complete file.
    partial = key_file.with_name(f".{key_file.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(_KEY_BYTES) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(partial, key_file)
    finally:
        partial.unlink(missing_ok=True)
    return _read_key(key_file)


def _read_key(key_file: Path) -> bytes:
    key = key_file.read_text(encoding="ascii").strip().encode()
    if len(key) < 16:
        raise ArtifactError(f"the model key file {key_file} is empty or too short")
    return key


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
    registry: ModelRegistry,
    status: str,
    train_size: int,
    metrics: dict[str, Any],
) -> ModelVersion:
    """Save a trained classifier as the task's next version; `active` retires the old one."""
    artifact = registry.sign(classifier, extra={"train_size": train_size, "metrics": metrics})
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
