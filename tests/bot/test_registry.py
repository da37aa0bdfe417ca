"""Model versions in the database, on SQLite and on PostgreSQL.

A row rewritten by someone without the signing key: refused, never run, replaced. Old artifacts
pruned, pinned ones kept, a pruned version refused with a message saying so.
"""

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import func, inspect, select, update

from bot import tasks as task_ops
from bot.answers import import_examples
from bot.errors import BadInputError, NotFoundError
from bot.ingest import IncomingItem
from bot.registry import (
    ModelRegistry,
    is_pruned,
    model_versions,
    pin_model,
    prune_models,
    store_model,
)
from bot.routing import submit
from bot.services import Services, model_key
from bot.settings import Settings
from bot.states import ModelStatus, Route, RunStatus
from bot.storage.schema import AuditLog, ModelVersion
from bot.training import retrain_task
from model import ArtifactError, TextClassifier, train
from model.persistence import sha256
from tests.conftest import TINY
from tests.model.test_persistence import _plant_exec, _rewrite_schema


def _trained(services: Services) -> None:
    with services.sessions.begin() as session:
        task = task_ops.create_task(session, "reviews", ["positive", "negative"], threshold=0.5)
        import_examples(
            session, task, [IncomingItem(t, label=lab) for t, lab in TINY], max_chars=100
        )
    retrain_task(
        services.sessions, "reviews", registry=services.registry, settings=services.settings
    )


def _forge_active_row(services: Services) -> None:
    """What an attacker with database access does: plant exec, recompute the hash."""
    with services.sessions.begin() as session:
        row = session.query(ModelVersion).filter_by(version=1).one()
        forged = _rewrite_schema(bytes(row.artifact), _plant_exec)
        meta = {**row.artifact_meta, "sha256": sha256(forged)}
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.id == row.id)
            .values(artifact=forged, artifact_meta=meta, artifact_sha256=meta["sha256"])
        )


def test_a_forged_active_model_is_refused_and_items_go_to_people(services: Services) -> None:
    _trained(services)
    _forge_active_row(services)
    fresh = ModelRegistry(key=model_key(services.settings))  # a replica starting now
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        assert fresh.active(session, task) is None
        routed = submit(
            session, task, [IncomingItem("lovely kind staff")], registry=fresh, max_chars=100
        )
        # The process that had loaded v1 before the row was rewritten keeps serving it.
        cached = services.registry.active(session, task)
    assert [(r.route, r.confidence, r.model_version) for r in routed] == [(Route.REVIEW, 0.0, None)]
    assert cached is not None and cached.version == 1


def test_retraining_replaces_a_refused_model(services: Services) -> None:
    _trained(services)
    _forge_active_row(services)
    fresh = ModelRegistry(key=model_key(services.settings))
    result = retrain_task(
        services.sessions, "reviews", registry=fresh, settings=services.settings, force=True
    )
    assert (result.status, result.version) == (RunStatus.PROMOTED, 2)
    assert result.report.reason is not None and "v1 was refused" in result.report.reason
    with services.sessions.begin() as session:
        loaded = fresh.active(session, task_ops.get_task(session, "reviews"))
    assert loaded is not None and loaded.version == 2


# Pruning old artifacts, pinning, listing: run on SQLite and on PostgreSQL.

PRUNE_TIME = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def tiny_classifier() -> TextClassifier:
    """One small classifier, trained once and stored as every version of these tests."""
    return train([t for t, _ in TINY], [lab for _, lab in TINY], labels=["positive", "negative"])


def _store_versions(
    services: Services, classifier: TextClassifier, statuses: list[ModelStatus], *, pinned: set[int]
) -> None:
    """Store one version per status, in order (an `active` one retires the previous)."""
    with services.sessions.begin() as session:
        task = task_ops.create_task(session, "reviews", ["positive", "negative"], threshold=0.5)
        for status in statuses:
            row = store_model(
                session,
                task,
                classifier,
                registry=services.registry,
                status=status,
                train_size=len(TINY),
                metrics={"accuracy": 1.0},
            )
            row.pinned = row.version in pinned


def _artifact_sizes(services: Services) -> dict[int, int]:
    with services.sessions.begin() as session:
        rows = session.execute(
            select(ModelVersion.version, func.length(ModelVersion.artifact)).order_by(
                ModelVersion.version
            )
        ).all()
    return {version: size for version, size in rows}


# v1..v8: promoted (later retired), rejected candidates at v3, v6 and v8, v7 active.
# Pinned: v1 (old, retired) and v6 (rejected).
HISTORY = [
    ModelStatus.ACTIVE,
    ModelStatus.ACTIVE,
    ModelStatus.REJECTED,
    ModelStatus.ACTIVE,
    ModelStatus.ACTIVE,
    ModelStatus.REJECTED,
    ModelStatus.ACTIVE,
    ModelStatus.REJECTED,
]


def test_pruning_keeps_active_newest_ever_active_and_pinned(
    services: Services, tiny_classifier: TextClassifier
) -> None:
    """keep=3 keeps v7 (active), v5 and v4 (newest ever active), v1 and v6 (pinned)."""
    _store_versions(services, tiny_classifier, HISTORY, pinned={1, 6})
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        listed = model_versions(session, task)
        pruned = prune_models(session, task, keep=3, now=PRUNE_TIME)
        # Rows already in the session see the change, and no artifact was read to make it.
        seen_pruned = [row.version for row in listed if is_pruned(row)]
        unloaded = {row.version for row in listed if "artifact" in inspect(row).unloaded}
    assert pruned == [2, 3, 8]
    assert seen_pruned == [8, 3, 2]
    assert unloaded == set(range(1, 9))
    sizes = _artifact_sizes(services)
    assert [v for v, size in sizes.items() if size == 0] == [2, 3, 8]
    assert all(sizes[v] > 1000 for v in (1, 4, 5, 6, 7))
    with services.sessions.begin() as session:
        rows = model_versions(session, task_ops.get_task(session, "reviews"))
    assert [r.version for r in rows] == [8, 7, 6, 5, 4, 3, 2, 1]
    assert [r.version for r in rows if is_pruned(r)] == [8, 3, 2]
    pruned_row = next(r for r in rows if r.version == 3)
    assert pruned_row.artifact_meta["pruned_at"] == PRUNE_TIME.isoformat()
    # The rest of the metadata and the row itself stay: reports and history still show it.
    assert pruned_row.artifact_meta["labels"] == ["positive", "negative"]
    assert (pruned_row.status, pruned_row.metrics, pruned_row.train_size) == (
        ModelStatus.REJECTED,
        {"accuracy": 1.0},
        len(TINY),
    )


def test_pruning_twice_changes_nothing(services: Services, tiny_classifier: TextClassifier) -> None:
    _store_versions(services, tiny_classifier, HISTORY, pinned={1, 6})
    with services.sessions.begin() as session:
        assert prune_models(session, task_ops.get_task(session, "reviews"), keep=3, now=PRUNE_TIME)
    later = PRUNE_TIME + timedelta(days=1)
    with services.sessions.begin() as session:
        assert prune_models(session, task_ops.get_task(session, "reviews"), keep=3, now=later) == []
        metas = {r.version: r.artifact_meta for r in session.scalars(select(ModelVersion))}
    assert {v: m["pruned_at"] for v, m in metas.items() if "pruned_at" in m} == {
        v: PRUNE_TIME.isoformat() for v in (2, 3, 8)
    }


def test_rejected_candidates_are_pruned_even_when_newest(
    services: Services, tiny_classifier: TextClassifier
) -> None:
    """A large `keep` never spares a rejected candidate's artifact; a pinned one is spared."""
    statuses = [ModelStatus.ACTIVE, ModelStatus.REJECTED, ModelStatus.REJECTED]
    _store_versions(services, tiny_classifier, statuses, pinned={3})
    with services.sessions.begin() as session:
        assert prune_models(session, task_ops.get_task(session, "reviews"), keep=100) == [2]


def test_an_active_version_older_than_the_kept_ones_is_kept(
    services: Services, tiny_classifier: TextClassifier
) -> None:
    """After a rollback to v1, keep=1 keeps v1 (active) and v3 (newest ever active)."""
    _store_versions(services, tiny_classifier, [ModelStatus.ACTIVE] * 3, pinned=set())
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        session.execute(
            update(ModelVersion).where(ModelVersion.version == 3).values(status=ModelStatus.RETIRED)
        )
        session.execute(
            update(ModelVersion).where(ModelVersion.version == 1).values(status=ModelStatus.ACTIVE)
        )
        assert prune_models(session, task, keep=1) == [2]


def test_a_pruned_version_refuses_to_load_and_a_kept_one_predicts(
    services: Services, tiny_classifier: TextClassifier
) -> None:
    _store_versions(services, tiny_classifier, HISTORY, pinned={1, 6})
    with services.sessions.begin() as session:
        prune_models(session, task_ops.get_task(session, "reviews"), keep=3, now=PRUNE_TIME)
    fresh = ModelRegistry(key=model_key(services.settings))  # nothing cached
    with services.sessions.begin() as session:
        ids = {v: i for v, i in session.execute(select(ModelVersion.version, ModelVersion.id))}
        with pytest.raises(ArtifactError, match="pruned") as refused:
            fresh.load(session, ids[2])
        kept = fresh.load(session, ids[4])
        active = fresh.active(session, task_ops.get_task(session, "reviews"))
    assert "model v2" in str(refused.value) and "pin" in str(refused.value)
    assert kept.predict(["what a lovely evening"]).predicted == ["positive"]
    assert active is not None and active.version == 7


def test_pin_and_unpin_are_audited(services: Services, tiny_classifier: TextClassifier) -> None:
    _store_versions(services, tiny_classifier, [ModelStatus.ACTIVE] * 2, pinned=set())
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        assert pin_model(session, task, 1, pinned=True, actor="U1").pinned is True
        # A repeated click changes nothing and writes no second audit row.
        assert pin_model(session, task, 1, pinned=True, actor="U1").pinned is True
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        assert prune_models(session, task, keep=1) == []  # v1 is pinned, v2 active
        assert pin_model(session, task, 1, pinned=False, actor="U2").pinned is False
    with services.sessions.begin() as session:
        audit = session.scalars(
            select(AuditLog).where(AuditLog.field == "model_pin").order_by(AuditLog.id)
        ).all()
        pins = {r.version: r.pinned for r in session.scalars(select(ModelVersion))}
    assert [(a.actor, a.field, a.old_value, a.new_value) for a in audit] == [
        ("U1", "model_pin", "v1 unpinned", "v1 pinned"),
        ("U2", "model_pin", "v1 pinned", "v1 unpinned"),
    ]
    assert pins == {1: False, 2: False}


def test_pinning_a_pruned_or_unknown_version_is_refused(
    services: Services, tiny_classifier: TextClassifier
) -> None:
    _store_versions(services, tiny_classifier, [ModelStatus.ACTIVE] * 2, pinned=set())
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        assert prune_models(session, task, keep=1) == [1]
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        with pytest.raises(BadInputError, match="cannot be restored"):
            pin_model(session, task, 1, pinned=True, actor="U1")
        with pytest.raises(NotFoundError, match="no model v9; its versions are v1 to v2"):
            pin_model(session, task, 9, pinned=True, actor="U1")
    with services.sessions.begin() as session:
        pin_audits = select(func.count()).where(AuditLog.field == "model_pin")
        assert session.scalar(pin_audits) == 0
        assert not session.scalar(select(ModelVersion.pinned).where(ModelVersion.version == 1))


def test_keep_models_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HITL_KEEP_MODELS", raising=False)
    assert Settings(_env_file=None).keep_models == 5
    monkeypatch.setenv("HITL_KEEP_MODELS", "2")
    assert Settings(_env_file=None).keep_models == 2
    monkeypatch.setenv("HITL_KEEP_MODELS", "0")
    with pytest.raises(ValidationError, match="keep_models"):
        Settings(_env_file=None)
