"""Data retention on SQLite and PostgreSQL: `hitl task delete`, `hitl task purge`, and what a
deleted item leaves behind (nothing a click or the poster trips over)."""

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_bolt import BoltContext
from sqlalchemy import event, func, select

from bot import cli, retention
from bot import tasks as task_ops
from bot.answers import import_examples
from bot.errors import BadInputError
from bot.ingest import IncomingItem
from bot.routing import submit
from bot.services import Services
from bot.slack import ids
from bot.slack.context import DEPS_KEY, SlackDeps
from bot.slack.listeners import actions
from bot.storage.schema import (
    Answer,
    AuditLog,
    Base,
    Item,
    ModelVersion,
    Prediction,
    RetrainRun,
    ReviewPrompt,
    Task,
    TextVector,
)
from bot.training import retrain_task
from tests.bot.conftest import Hitl, cli_on
from tests.bot.slack.test_listeners import CHANNEL, Ack, FakeClient, InlineExecutor, post_prompt
from tests.conftest import TINY

LABELS = ["positive", "negative"]
OLD = datetime(2024, 1, 10, 12, tzinfo=UTC)
CUTOFF = "2024-06-01"
NEW_TEXTS = ["so-so", "it was fine I guess"]
OLD_TEXTS = ["middling", "not sure about it", "could be better"]


def seed_task(services: Services, name: str, channel: str) -> None:
    """A task with old imported answers, a model (and its retrain run), old and new items."""
    with services.sessions.begin() as session:
        task = task_ops.create_task(session, name, LABELS, channel=channel, threshold=0.99)
        rows = [IncomingItem(text=t, label=label, line=i + 2) for i, (t, label) in enumerate(TINY)]
        import_examples(session, task, rows, max_chars=1000, now=OLD)
    retrain_task(
        services.sessions,
        name,
        registry=services.registry,
        settings=services.settings,
        force=True,
    )
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, name)
        for texts, when in ((OLD_TEXTS, OLD), (NEW_TEXTS, None)):
            submit(
                session,
                task,
                [IncomingItem(text) for text in texts],
                registry=services.registry,
                max_chars=1000,
                now=when,
            )


def footprint(services: Services, name: str) -> dict[str, int]:
    """Rows of every kind that belong to the task `name` (zeros once it is gone)."""
    with services.sessions.begin() as session:
        # -1 once it is gone: `== None` would count the rows of no task (the deletion's audit).
        task_id = session.scalar(select(Task.id).where(Task.name == name)) or -1
        items = select(Item.id).where(Item.task_id == task_id)

        def count(model: Any, *where: Any) -> int:
            return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)

        return {
            "tasks": count(Task, Task.id == task_id),
            "items": count(Item, Item.task_id == task_id),
            "predictions": count(Prediction, Prediction.item_id.in_(items)),
            "answers": count(Answer, Answer.item_id.in_(items)),
            "prompts": count(ReviewPrompt, ReviewPrompt.item_id.in_(items)),
            "models": count(ModelVersion, ModelVersion.task_id == task_id),
            "runs": count(RetrainRun, RetrainRun.task_id == task_id),
            "audit": count(AuditLog, AuditLog.task_id == task_id),
        }


@pytest.fixture
def seeded(services: Services) -> Services:
    """Two tasks with the same history, on the fixture database (SQLite and PostgreSQL)."""
    seed_task(services, "reviews", CHANNEL)
    seed_task(services, "other", "C0OTHER01")
    return services


@pytest.fixture
def hitl_db(
    seeded: Services,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Hitl]:
    """`hitl ARGS...` in-process on the seeded database; (exit code, stdout, stderr)."""
    yield from cli_on(seeded.settings.database_url, tmp_path, monkeypatch, capsys)


# --- the storage functions ----------------------------------------------------------------


def test_seed_has_rows_of_every_kind(seeded: Services) -> None:
    counts = footprint(seeded, "reviews")
    assert counts == {
        "tasks": 1,
        "items": len(TINY) + len(OLD_TEXTS) + len(NEW_TEXTS),
        "predictions": len(OLD_TEXTS) + len(NEW_TEXTS),
        "answers": len(TINY),
        "prompts": len(OLD_TEXTS) + len(NEW_TEXTS),
        "models": 1,
        "runs": 1,
        "audit": counts["audit"],
    }
    assert counts["audit"] >= 1


def test_delete_task_removes_everything_of_it_and_nothing_else(seeded: Services) -> None:
    other_before = footprint(seeded, "other")
    with seeded.sessions.begin() as session:
        vectors_before = session.scalar(select(func.count()).select_from(TextVector))
        removed = retention.delete_task(
            session, task_ops.get_task(session, "reviews"), actor="cli:test"
        )
    assert removed.as_dict() == {
        "items": 15,
        "predictions": 5,
        "answers": 10,
        "review_prompts": 5,
        "model_versions": 1,
        "retrain_runs": 1,
        "audit_rows": removed.audit_rows,
    }
    assert set(footprint(seeded, "reviews").values()) == {0}
    assert footprint(seeded, "other") == other_before
    with seeded.sessions.begin() as session:
        (record,) = session.scalars(select(AuditLog).where(AuditLog.task_id.is_(None))).all()
        assert session.scalar(select(func.count()).select_from(TextVector)) == vectors_before
    assert (record.actor, record.field, record.old_value) == ("cli:test", "task", "reviews")
    assert record.new_value == "deleted with 15 items, 10 answers, 1 models"


def test_purge_deletes_only_older_items_and_keeps_the_task_and_its_model(
    seeded: Services,
) -> None:
    other_before = footprint(seeded, "other")
    cutoff = datetime(2024, 6, 1, tzinfo=UTC)
    with seeded.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        planned = retention.footprint(session, task, before=cutoff)
        removed = retention.purge_items(session, task, before=cutoff, actor="cli:test")
    assert planned == retention.Footprint(items=13, answers=10, models=0, open_prompts=3)
    assert (removed.items, removed.answers, removed.predictions, removed.review_prompts) == (
        13,
        10,
        3,
        3,
    )
    after = footprint(seeded, "reviews")
    assert (after["tasks"], after["items"], after["predictions"], after["prompts"]) == (1, 2, 2, 2)
    assert (after["answers"], after["models"], after["runs"]) == (0, 1, 1)
    with seeded.sessions.begin() as session:
        left = session.scalars(select(Item.text).where(Item.task_id == task.id)).all()
        last = session.scalars(
            select(AuditLog).where(AuditLog.task_id == task.id).order_by(AuditLog.id.desc())
        ).first()
    assert sorted(left) == sorted(NEW_TEXTS)
    assert last is not None and last.field == "items"
    assert last.old_value == "13 submitted before 2024-06-01T00:00:00+00:00"
    assert footprint(seeded, "other") == other_before


def test_items_are_deleted_in_batches(seeded: Services) -> None:
    """13 items, 4 at a time: 4 rounds of deletes, whatever the item count."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM ITEM "):
            statements.append(statement)

    event.listen(seeded.engine, "before_cursor_execute", record)
    try:
        with seeded.sessions.begin() as session:
            task = task_ops.get_task(session, "reviews")
            removed = retention.delete_items(
                session, task, before=datetime(2024, 6, 1, tzinfo=UTC), batch=4
            )
    finally:
        event.remove(seeded.engine, "before_cursor_execute", record)
    assert removed.items == 13
    assert len(statements) == 4


def test_every_reference_to_a_task_or_item_is_deleted_explicitly_or_cascades() -> None:
    """A table added later that points at a task or an item must be handled here, or its
    rows would block the deletes (or outlive their task)."""
    handled = {"item", "prediction", "answer", "review_prompt", "model_version", "retrain_run"}
    handled |= {"audit_log"}
    for table in Base.metadata.sorted_tables:
        for key in table.foreign_keys:
            if key.column.table.name in ("task", "item") and table.name not in handled:
                assert key.ondelete == "CASCADE", f"{table.name}.{key.parent.name}"


def test_bad_dates_are_refused_with_the_expected_form() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    for raw in ("yesterday", "2024-13-01", "01/02/2024", ""):
        with pytest.raises(BadInputError, match="not an ISO date"):
            retention.parse_before(raw, zone=UTC, now=now)
    with pytest.raises(BadInputError, match="in the future"):
        retention.parse_before("2025-01-02", zone=UTC, now=now)
    assert retention.parse_before("2024-06-01", zone=UTC, now=now) == datetime(
        2024, 6, 1, tzinfo=UTC
    )
    offset = retention.parse_before("2024-06-01T12:00:00+02:00", zone=UTC, now=now)
    assert offset == datetime(2024, 6, 1, 10, tzinfo=UTC)


def test_a_click_on_a_deleted_items_message_says_so(seeded: Services) -> None:
    with seeded.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        item_id = session.scalars(
            select(Item.id).where(Item.task_id == task.id, Item.text == OLD_TEXTS[0])
        ).one()
    post_prompt(seeded, item_id, "1700000000.000200")
    with seeded.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        retention.purge_items(
            session, task, before=datetime(2024, 6, 1, tzinfo=UTC), actor="cli:test"
        )
    client = FakeClient()
    deps = SlackDeps(services=seeded, client=client, background=InlineExecutor())  # type: ignore[arg-type]
    context = BoltContext({DEPS_KEY: deps})
    body = {
        "type": "block_actions",
        "user": {"id": "U0ANNA"},
        "container": {"channel_id": CHANNEL, "message_ts": "1700000000.000200"},
    }
    ack = Ack()
    actions.on_label_button(ack, body, {"value": ids.encode_choice(item_id, 0)}, context)
    assert ack.count == 1
    assert [t["text"] for t in client.named("chat_postEphemeral")] == [actions.DELETED_ITEM]
    assert client.named("chat_update") == []


# --- the commands -------------------------------------------------------------------------


def test_delete_without_a_terminal_and_without_yes_changes_nothing(
    hitl_db: Any, seeded: Services
) -> None:
    before = footprint(seeded, "reviews")
    code, out, err = hitl_db("task", "delete", "reviews")
    assert code == 2
    assert out == ""
    assert err.strip() == (
        "error: Delete task reviews and its 15 items, 10 answers, 1 models: "
        "not without --yes (stdin is no terminal)"
    )
    assert footprint(seeded, "reviews") == before


def test_delete_asks_on_a_terminal(
    hitl_db: Any, seeded: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = footprint(seeded, "reviews")
    monkeypatch.setattr(cli, "_is_terminal", lambda stream: True)
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    code, _, err = hitl_db("task", "delete", "reviews")
    assert code == 1
    assert "Delete task reviews and its 15 items, 10 answers, 1 models? [y/N]" in err
    assert footprint(seeded, "reviews") == before
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    code, out, _ = hitl_db("task", "delete", "reviews")
    assert code == 0
    assert out.strip() == "deleted task reviews: 15 items, 10 answers, 1 models"
    assert footprint(seeded, "reviews")["tasks"] == 0


def test_delete_with_yes_prints_the_counts_as_json(hitl_db: Any, seeded: Services) -> None:
    other_before = footprint(seeded, "other")
    code, out, _ = hitl_db("task", "delete", "reviews", "--yes", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["task"] == "reviews"
    assert {k: v for k, v in shown["deleted"].items() if k != "audit_rows"} == {
        "items": 15,
        "predictions": 5,
        "answers": 10,
        "review_prompts": 5,
        "model_versions": 1,
        "retrain_runs": 1,
    }
    assert footprint(seeded, "other") == other_before
    code, out, _ = hitl_db("task", "list", "--json")
    assert [row["name"] for row in json.loads(out)] == ["other"]


def test_unknown_task_is_one_line_and_exit_2(hitl_db: Any) -> None:
    for args in (
        ("task", "delete", "nope", "--yes"),
        ("task", "purge", "nope", "--before", CUTOFF),
    ):
        code, out, err = hitl_db(*args)
        assert code == 2
        assert out == ""
        assert err.count("\n") == 1
        assert err.startswith("error: no task named 'nope'; known tasks: other, reviews")


def test_purge_refuses_bad_and_future_dates(hitl_db: Any, seeded: Services) -> None:
    before = footprint(seeded, "reviews")
    future = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    for bad, why in (("31/01/2024", "not an ISO date"), (future, "in the future")):
        code, _, err = hitl_db("task", "purge", "reviews", "--before", bad, "--yes")
        assert code == 2
        assert why in err and err.count("\n") == 1
    assert footprint(seeded, "reviews") == before


def test_purge_exports_first_then_deletes(hitl_db: Any, seeded: Services, tmp_path: Path) -> None:
    out_file = tmp_path / "old.jsonl"
    code, out, _ = hitl_db(
        "task", "purge", "reviews", "--before", CUTOFF, "--export", str(out_file), "--yes", "--json"
    )
    assert code == 0
    shown = json.loads(out)
    assert (shown["exported"], shown["deleted"]["items"]) == (13, 13)
    assert shown["before"] == "2024-06-01T00:00:00+00:00"
    rows = [json.loads(line) for line in out_file.read_text(encoding="utf-8").splitlines()]
    assert sorted(row["text"] for row in rows) == sorted([t for t, _ in TINY] + OLD_TEXTS)
    imported = {row["text"]: row for row in rows if row["label_source"] == "person"}
    assert {text: row["final_label"] for text, row in imported.items()} == dict(TINY)
    assert all(len(row["answers"]) == 1 for row in imported.values())
    assert sorted(r["text"] for r in rows if r["label_source"] == "pending") == sorted(OLD_TEXTS)
    assert footprint(seeded, "reviews")["items"] == len(NEW_TEXTS)
    assert not list(tmp_path.glob(".*.partial"))


def test_purge_deletes_nothing_when_the_export_fails(
    hitl_db: Any, seeded: Services, tmp_path: Path
) -> None:
    before = footprint(seeded, "reviews")
    missing = tmp_path / "no-such-dir" / "old.csv"
    code, _, err = hitl_db(
        "task", "purge", "reviews", "--before", CUTOFF, "--export", str(missing), "--yes"
    )
    assert code == 2
    assert err.startswith(f"error: cannot write {missing}")
    assert footprint(seeded, "reviews") == before
    code, _, err = hitl_db(
        "task", "purge", "reviews", "--before", CUTOFF, "--export", "old.txt", "--yes"
    )
    assert code == 2 and "cannot tell the format" in err
    assert footprint(seeded, "reviews") == before
