"""A model row rewritten by someone without the signing key: refused, never run, replaced.

Run on SQLite and on PostgreSQL.
"""

from sqlalchemy import update

from bot import tasks as task_ops
from bot.answers import import_examples
from bot.ingest import IncomingItem
from bot.registry import ModelRegistry
from bot.routing import submit
from bot.services import Services, model_key
from bot.states import Route, RunStatus
from bot.storage.schema import ModelVersion
from bot.training import retrain_task
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
