"""The storage suite, run on SQLite and on PostgreSQL: tasks, import, routing, answers, audit."""

import pytest
from sqlalchemy import func, inspect, select

from bot import tasks as task_ops
from bot.answers import get_item, import_examples, record_answer
from bot.errors import BadInputError, ConflictError
from bot.export import export_rows
from bot.ingest import IncomingItem
from bot.registry import versions
from bot.routing import submit
from bot.services import Services
from bot.states import ModelStatus
from bot.stats import task_stats
from bot.storage.db import current_revision
from bot.storage.schema import Answer, AuditLog, Item, Prediction, ReviewPrompt
from bot.training import retrain_task
from tests.bot.storage.test_migrations import HEAD
from tests.conftest import TINY

LABELS = ["positive", "negative"]


def make_task(services: Services, *, threshold: float = 0.6, name: str = "reviews") -> None:
    with services.sessions.begin() as session:
        task_ops.create_task(session, name, LABELS, channel="C0123", threshold=threshold)


def import_tiny(services: Services, name: str = "reviews") -> None:
    rows = [IncomingItem(text=t, label=label, line=i + 2) for i, (t, label) in enumerate(TINY)]
    with services.sessions.begin() as session:
        import_examples(session, task_ops.get_task(session, name), rows, max_chars=1000)


def count(services: Services, model: type) -> int:
    with services.sessions.begin() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def retrain(services: Services, name: str = "reviews", *, force: bool = True):  # type: ignore[no-untyped-def]
    return retrain_task(
        services.sessions,
        name,
        registry=services.registry,
        settings=services.settings,
        force=force,
    )


def test_migrations_create_every_table(services: Services) -> None:
    tables = set(inspect(services.engine).get_table_names())
    assert {
        "task",
        "item",
        "prediction",
        "answer",
        "model_version",
        "review_prompt",
        "audit_log",
        "retrain_run",
        "alembic_version",
    } <= tables
    assert current_revision(services.engine) == HEAD


def test_task_names_are_unique_and_creation_audited(services: Services) -> None:
    make_task(services)
    with pytest.raises(ConflictError, match="already exists"):
        make_task(services)
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        assert task.labels == LABELS and task.channel == "C0123"
        trail = task_ops.audit_trail(session, task)
    assert [(a.field, a.new_value) for a in trail] == [("task", "reviews")]


def test_import_with_one_bad_label_writes_nothing(services: Services) -> None:
    make_task(services)
    rows = [
        IncomingItem("fine", label="positive", line=2),
        IncomingItem("odd", label="meh", line=3),
    ]
    with services.sessions.begin() as session, pytest.raises(BadInputError, match="line 3"):
        import_examples(session, task_ops.get_task(session, "reviews"), rows, max_chars=100)
    assert count(services, Item) == 0 and count(services, Answer) == 0


def test_cold_start_routes_everything_to_review_with_zero_confidence(services: Services) -> None:
    make_task(services)
    with services.sessions.begin() as session:
        results = submit(
            session,
            task_ops.get_task(session, "reviews"),
            [IncomingItem("lovely"), IncomingItem("awful")],
            registry=services.registry,
            max_chars=100,
        )
    assert [(r.route, r.confidence, r.label, r.model_version) for r in results] == [
        ("review", 0.0, None, None),
        ("review", 0.0, None, None),
    ]
    assert count(services, ReviewPrompt) == 2


def test_retrain_then_submit_routes_by_threshold(services: Services) -> None:
    make_task(services, threshold=0.6)
    import_tiny(services)
    result = retrain(services)
    assert result.version == 1 and result.report.evaluation == "cross-fitted (3 folds)"
    assert result.report.new_accuracy == pytest.approx(0.4)  # 3-fold CV of TINY: 4 of 10 right
    texts = ["wonderful lovely kind staff", "the worst dirty rude awful meal", "it was a day"]
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        results = submit(
            session,
            task,
            [IncomingItem(t) for t in texts],
            registry=services.registry,
            max_chars=100,
        )
    for r in results:
        assert r.model_version == 1
        assert r.route == ("auto" if r.confidence >= 0.6 else "review")
    assert results[0].label == "positive" and results[1].label == "negative"
    with services.sessions.begin() as session:
        stored = session.scalars(select(Prediction).order_by(Prediction.id)).all()
        assert [p.label for p in stored] == [r.label for r in results]
        assert all(len(p.probabilities or []) == 2 for p in stored)
        prompts = session.scalar(select(func.count()).select_from(ReviewPrompt)) or 0
        auto_items = session.scalars(select(Item).where(Item.route == "auto")).all()
    assert prompts == sum(r.route == "review" for r in results)
    assert all(i.final_source == "model" and i.final_label for i in auto_items)


def test_second_retrain_retires_the_first_model(services: Services) -> None:
    make_task(services)
    import_tiny(services)
    retrain(services)
    retrain(services)
    with services.sessions.begin() as session:
        found = versions(session, task_ops.get_task(session, "reviews"))
    assert [(v.version, v.status) for v in found] == [
        (1, ModelStatus.RETIRED),
        (2, ModelStatus.ACTIVE),
    ]


def test_retrain_without_enough_answers_says_which_labels(services: Services) -> None:
    make_task(services)
    rows = [IncomingItem("lovely", label="positive")] * 1
    with services.sessions.begin() as session:
        import_examples(session, task_ops.get_task(session, "reviews"), rows, max_chars=100)
    result = retrain(services)
    assert result.status == "cold" and result.version is None
    assert "'positive' has 1, 'negative' has 0" in result.report.headline


def test_resubmitting_an_id_replays_and_a_changed_text_is_refused(services: Services) -> None:
    make_task(services)
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        first = submit(
            session,
            task,
            [IncomingItem("hi", external_id="a")],
            registry=services.registry,
            max_chars=100,
        )
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        again = submit(
            session,
            task,
            [IncomingItem("hi", external_id="a"), IncomingItem("new")],
            registry=services.registry,
            max_chars=100,
        )
    assert again[0].item_id == first[0].item_id and again[0].duplicate
    assert not again[1].duplicate
    with services.sessions.begin() as session, pytest.raises(ConflictError, match="'a'"):
        task = task_ops.get_task(session, "reviews")
        submit(
            session,
            task,
            [IncomingItem("other", external_id="b"), IncomingItem("changed", external_id="a")],
            registry=services.registry,
            max_chars=100,
        )
    assert count(services, Item) == 2


def test_answers_keep_history_and_repeat_clicks_store_once(services: Services) -> None:
    make_task(services)
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        (routed,) = submit(
            session, task, [IncomingItem("meh")], registry=services.registry, max_chars=100
        )
    for label in ["positive", "positive", "negative"]:
        with services.sessions.begin() as session:
            record_answer(session, get_item(session, routed.item_id), "U1", label=label)
    with services.sessions.begin() as session:
        answers = session.scalars(select(Answer).order_by(Answer.id)).all()
        item = get_item(session, routed.item_id)
        assert [(a.label, a.is_current) for a in answers] == [
            ("positive", False),
            ("negative", True),
        ]
        assert answers[0].superseded_at is not None
        assert (item.final_label, item.final_source) == ("negative", "person")
        prompt = session.scalar(select(ReviewPrompt))
        assert prompt is not None and prompt.status == "answered"


def test_unknown_label_answer_is_refused(services: Services) -> None:
    make_task(services)
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        (routed,) = submit(
            session, task, [IncomingItem("x")], registry=services.registry, max_chars=100
        )
    with services.sessions.begin() as session, pytest.raises(BadInputError, match="unknown label"):
        record_answer(session, get_item(session, routed.item_id), "U1", label="neutral")
    assert count(services, Answer) == 0


def test_threshold_change_is_validated_and_audited(services: Services) -> None:
    make_task(services, threshold=0.8)
    for bad in ["abc", "1.5", "0", "-0.2", "nan"]:
        with services.sessions.begin() as session, pytest.raises(BadInputError):
            task_ops.set_threshold(session, task_ops.get_task(session, "reviews"), bad, actor="U9")
    with services.sessions.begin() as session:
        task_ops.set_threshold(session, task_ops.get_task(session, "reviews"), "75%", actor="U9")
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        assert task.threshold == pytest.approx(0.75)
        changes = session.scalars(select(AuditLog).where(AuditLog.field == "threshold")).all()
    assert [(c.actor, c.old_value, c.new_value) for c in changes] == [("U9", "0.8", "0.75")]


def test_stats_and_export_agree_with_what_was_stored(services: Services) -> None:
    make_task(services, threshold=0.6)
    import_tiny(services)
    retrain(services)
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        results = submit(
            session,
            task,
            [
                IncomingItem(t, external_id=f"e{i}")
                for i, t in enumerate(["lovely kind staff", "awful rude", "a day"])
            ],
            registry=services.registry,
            max_chars=100,
        )
    review = [r for r in results if r.route == "review"]
    if review:
        with services.sessions.begin() as session:
            record_answer(session, get_item(session, review[0].item_id), "U7", label="negative")
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        stats = task_stats(session, task)
        rows = list(export_rows(session, task))
    auto = sum(r.route == "auto" for r in results)
    assert (stats.items, stats.auto, stats.review) == (3, auto, 3 - auto)
    assert stats.imported == len(TINY)
    assert stats.review_queue == max(0, 3 - auto - 1)
    assert stats.answers == (1 if review else 0)
    assert stats.model_version == 1
    by_id = {row["id"]: row for row in rows if row["id"]}
    for r in results:
        row = by_id[r.external_id]
        assert row["route"] == r.route and row["predicted_label"] == r.label
        if r.route == "auto":
            assert (row["final_label"], row["label_source"]) == (r.label, "model")
    if review:
        row = by_id[review[0].external_id]
        assert (row["final_label"], row["label_source"], row["answered_by"]) == (
            "negative",
            "person",
            "U7",
        )
    assert sum(row["source"] == "import" for row in rows) == len(TINY)
