"""Model versions in the database, and a per-process cache of the loaded classifiers.

Artifacts are signed with the model signing key (HITL_MODEL_SIGNING_KEY, or a key file made on
first use) when stored, and checked against it when loaded: a row written by someone without
the key is refused, and the last model this process trusted keeps serving.

A serving replica loads new models in the background (`defer_loads`, `ModelRefresher`): a
model promoted by another replica is loaded within `HITL_MODEL_REFRESH_SECONDS`, while requests
go on with the model that was active before, so no request waits seconds for a load and none
sees a model half loaded (a classifier is swapped in only once it is fully read and checked).

Old artifacts are pruned (`prune_models`): the row, its metrics and its report stay, the bytes
go. Pinned versions, the active one and the newest few that were ever active keep theirs.
"""

import contextlib
import logging
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from bot.errors import BadInputError, NotFoundError
from bot.states import ModelStatus
from bot.storage.schema import AuditLog, ModelVersion, Task, utcnow
from model import ArtifactError, TextClassifier, dumps, loads
from model.persistence import Artifact

logger = logging.getLogger(__name__)
_KEY_BYTES = 32
# The artifact_meta key that marks a pruned artifact, with the ISO time it was pruned.
PRUNED_AT: Final = "pruned_at"


@dataclass(frozen=True)
class LoadedModel:
    """An active model version's identity and its ready-to-use classifier."""

    id: int
    version: int
    classifier: TextClassifier
    sha256: str = ""  # of its artifact: a row id alone can be reused on SQLite


class ModelRegistry:
    """Loads model artifacts from the database once per process and keeps a few in memory."""

    def __init__(self, *, key: bytes, capacity: int = 8) -> None:
        if len(key) < 16:
            raise ValueError("the model signing key must be at least 16 bytes")
        self._key = key
        self._capacity = capacity
        # Keyed by row id *and* artifact hash, and tasks by id *and* creation time: SQLite hands
        # the ids of deleted rows (`hitl task delete`) to new ones, which must not find the old
        # model here.
        self._cache: OrderedDict[tuple[int, str], TextClassifier] = OrderedDict()
        self._trusted: dict[tuple[int, datetime], LoadedModel] = {}  # per task: the last loaded
        self._lock = threading.Lock()
        # Serving: a newly active version is loaded by the refresher, not by a request.
        self._deferred = False

    def defer_loads(self) -> None:
        """Leave loading a newly active model to `refresh` (a serving process calls this):
        until it is loaded, the task's previous model keeps serving. A task that had no model
        in this process still loads its first one at once (better than asking a person)."""
        self._deferred = True

    def active(self, session: Session, task: Task, *, load: bool = False) -> LoadedModel | None:
        """The task's active model, loaded (or None at cold start).

        An active artifact that fails its checks is refused and logged; the last model this
        process trusted for the task keeps serving, or none (every item goes to a person).
        With `defer_loads` on, a version not loaded yet is left to the refresher unless `load`.
        """
        row = session.execute(
            select(ModelVersion.id, ModelVersion.version, ModelVersion.artifact_sha256).where(
                ModelVersion.task_id == task.id, ModelVersion.status == ModelStatus.ACTIVE
            )
        ).first()
        if row is None:
            return None
        key = (task.id, task.created_at)
        previous = self._trusted.get(key)
        if (
            self._deferred
            and not load
            and previous is not None
            and (previous.id, previous.sha256) != (row.id, row.artifact_sha256)
        ):
            with self._lock:
                ready = (row.id, row.artifact_sha256) in self._cache
            if not ready:
                return previous
        try:
            classifier = self.load(session, row.id, sha256=row.artifact_sha256)
        except ArtifactError as exc:
            fallback = self._trusted.get(key)
            logger.error(
                "task %s: model v%d refused (%s); %s",
                task.name,
                row.version,
                exc,
                f"v{fallback.version} keeps serving" if fallback else "every item goes to review",
            )
            return fallback
        loaded = LoadedModel(
            id=row.id, version=row.version, classifier=classifier, sha256=row.artifact_sha256
        )
        self._trusted[key] = loaded
        return loaded

    def load(
        self, session: Session, model_version_id: int, *, sha256: str | None = None
    ) -> TextClassifier:
        """The classifier of a model version (whose artifact hash is `sha256`, looked up when
        not given), from cache or from its stored artifact."""
        if sha256 is None:
            sha256 = session.execute(
                select(ModelVersion.artifact_sha256).where(ModelVersion.id == model_version_id)
            ).scalar_one()
        cache_key = (model_version_id, sha256)
        with self._lock:
            cached = self._cache.get(cache_key)
            if cached is not None:
                self._cache.move_to_end(cache_key)
                return cached
        version, data, meta = session.execute(
            select(ModelVersion.version, ModelVersion.artifact, ModelVersion.artifact_meta).where(
                ModelVersion.id == model_version_id
            )
        ).one()
        if PRUNED_AT in meta:
            raise ArtifactError(
                f"model v{version} was pruned at {meta[PRUNED_AT]} to save space: its artifact "
                "is gone and cannot be loaded; use a kept version or retrain (pin a version "
                "before it is pruned to keep its artifact)"
            )
        classifier = loads(bytes(data), meta, key=self._key)
        with self._lock:
            self._cache[cache_key] = classifier
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return classifier

    def sign(self, classifier: TextClassifier, *, extra: dict[str, Any]) -> Artifact:
        """Serialize `classifier` signed with this registry's key."""
        return dumps(classifier, key=self._key, extra=extra)


def load_active_models(session: Session, registry: ModelRegistry) -> tuple[int, int]:
    """Load every task's active model into `registry`'s cache (so no request pays for it);
    returns (loaded, active): fewer loaded than active means some artifact was refused."""
    tasks = session.scalars(
        select(Task)
        .join(ModelVersion, ModelVersion.task_id == Task.id)
        .where(ModelVersion.status == ModelStatus.ACTIVE)
        .order_by(Task.name)
    ).all()
    loaded = sum(1 for task in tasks if registry.active(session, task, load=True) is not None)
    return loaded, len(tasks)


class ModelRefresher:
    """Brings a serving process's models up to date every `interval` seconds: a version
    promoted elsewhere (another replica's retrain, `hitl retrain`, a pin) is loaded in the
    background and served from then on. `wait` is injected (tests step it); it returns True
    when the refresher should stop."""

    def __init__(
        self,
        sessions: "sessionmaker[Session]",
        registry: ModelRegistry,
        *,
        interval: float,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self._sessions = sessions
        self._registry = registry
        self._interval = interval
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        self._thread: threading.Thread | None = None
        self.refreshed_at: datetime | None = None

    def refresh(self) -> tuple[int, int]:
        """Load every active model not loaded yet; returns (loaded, active)."""
        with self._sessions.begin() as session:
            counts = load_active_models(session, self._registry)
        self.refreshed_at = utcnow()
        return counts

    def run(self) -> None:
        """Refresh until stopped (a thread's boundary: a failed round is logged, not fatal)."""
        while not self._wait(self._interval):
            try:
                self.refresh()
            except Exception:  # a database hiccup: the next round tries again
                logger.exception("refreshing the active models failed; retrying")

    def start(self) -> None:
        """Run in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name="hitl-model-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop (a load in progress finishes in its thread, which is a daemon)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)


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


def model_versions(session: Session, task: Task) -> list[ModelVersion]:
    """Every model version of a task, newest first (artifacts not loaded; see `is_pruned`)."""
    query = select(ModelVersion).where(ModelVersion.task_id == task.id)
    return list(session.scalars(query.order_by(ModelVersion.version.desc())))


def is_pruned(row: ModelVersion) -> bool:
    """True when the version's artifact was pruned (read from its metadata, not its bytes)."""
    return PRUNED_AT in row.artifact_meta


def prune_models(
    session: Session, task: Task, *, keep: int, now: datetime | None = None
) -> list[int]:
    """Delete the artifacts no longer worth keeping; returns the version numbers pruned.

    Kept: the active version, the newest `keep` versions that were ever active (active or
    retired) and every pinned version. Rejected candidates lose theirs whatever `keep` says.
    Rows stay, with their metrics, so reports and history still show them. Idempotent.
    """
    if keep < 1:
        raise ValueError("keep must be at least 1")
    stamp = now or utcnow()
    if stamp.tzinfo is None:
        raise ValueError("naive datetime given; use an aware UTC datetime")
    # Locked so that a version pinned or promoted meanwhile is not pruned under its feet
    # (PostgreSQL; SQLite transactions already take the write lock when they begin).
    rows = session.execute(
        select(
            ModelVersion.id,
            ModelVersion.version,
            ModelVersion.status,
            ModelVersion.pinned,
            ModelVersion.artifact_meta,
        )
        .where(ModelVersion.task_id == task.id)
        .order_by(ModelVersion.version.desc())
        .with_for_update()
    ).all()
    ever_active = [r for r in rows if r.status in (ModelStatus.ACTIVE, ModelStatus.RETIRED)]
    kept = {r.id for r in ever_active[:keep]}
    kept |= {r.id for r in rows if r.status == ModelStatus.ACTIVE or r.pinned}
    doomed = [r for r in rows if r.id not in kept and PRUNED_AT not in r.artifact_meta]
    if not doomed:
        return []
    pruned_at = stamp.isoformat()
    # ORM bulk UPDATE by primary key: one executemany, no artifact read, and objects already in
    # the session see the new values. A new dict: JSON columns only notice assignment.
    session.execute(
        update(ModelVersion),
        [
            {
                "id": r.id,
                "artifact": b"",
                "artifact_meta": {**r.artifact_meta, PRUNED_AT: pruned_at},
            }
            for r in doomed
        ],
    )
    pruned = sorted(r.version for r in doomed)
    logger.info("task %s: pruned the artifacts of model versions %s", task.name, pruned)
    return pruned


def pin_model(
    session: Session, task: Task, version: int, *, pinned: bool, actor: str
) -> ModelVersion:
    """Pin a model version (pruning keeps its artifact) or unpin it, audited; idempotent."""
    row = session.scalar(
        select(ModelVersion)
        .where(ModelVersion.task_id == task.id, ModelVersion.version == version)
        .with_for_update()
    )
    if row is None:
        newest = session.scalar(
            select(func.max(ModelVersion.version)).where(ModelVersion.task_id == task.id)
        )
        known = f"its versions are v1 to v{newest}" if newest else "it has no model yet"
        raise NotFoundError(f"task {task.name!r} has no model v{version}; {known}")
    if row.pinned == pinned:
        return row  # a repeated click or command changes nothing and audits nothing
    if pinned and is_pruned(row):
        raise BadInputError(
            f"model v{version} of task {task.name!r} was pruned at "
            f"{row.artifact_meta[PRUNED_AT]}; its artifact cannot be restored, so pinning it "
            "would keep nothing: pin a version before it is pruned"
        )
    session.add(
        AuditLog(
            task_id=task.id,
            actor=actor,
            field="model_pin",
            old_value=f"v{version} {_pin_word(row.pinned)}",
            new_value=f"v{version} {_pin_word(pinned)}",
        )
    )
    row.pinned = pinned
    return row


def _pin_word(pinned: bool) -> str:
    return "pinned" if pinned else "unpinned"
