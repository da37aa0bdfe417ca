"""Task settings on SQLite and PostgreSQL: appending labels and changing the channel, audited."""

import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import tasks as task_ops
from bot.errors import BadInputError, NotFoundError
from bot.services import Services
from bot.storage.schema import AuditLog, Item


def make_task(services: Services, labels: list[str]) -> None:
    with services.sessions.begin() as session:
        task_ops.create_task(session, "t", labels, threshold=0.8)


def stored_labels(services: Services) -> list[str]:
    with services.sessions.begin() as session:
        return list(task_ops.get_task(session, "t").labels)


def test_add_labels_appends_persists_and_audits(services: Services) -> None:
    """New labels go after the old ones, survive a new session, and the change is audited."""
    make_task(services, ["billing", "bug"])
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "t", lock=True)
        result = task_ops.add_labels(session, task, [" refund ", "other"], actor="cli:ana")
    assert result == ["billing", "bug", "refund", "other"]
    assert stored_labels(services) == ["billing", "bug", "refund", "other"]
    with services.sessions.begin() as session:
        (entry,) = session.scalars(select(AuditLog).where(AuditLog.field == "labels")).all()
        assert entry.actor == "cli:ana"
        assert json.loads(entry.old_value or "") == ["billing", "bug"]
        assert json.loads(entry.new_value or "") == ["billing", "bug", "refund", "other"]


@pytest.mark.parametrize(
    ("new", "message"),
    [
        (["bug"], "already has the label 'bug'"),
        (["x", "x"], "label 'x' is given twice"),
        (["x", " "], "labels must not be empty"),
        ([], "give at least one label"),
        (["y" * 201], "over 200 characters"),
    ],
)
def test_add_labels_refuses_bad_labels_and_changes_nothing(
    services: Services, new: list[str], message: str
) -> None:
    make_task(services, ["billing", "bug"])
    with pytest.raises(BadInputError, match=message), services.sessions.begin() as session:
        task_ops.add_labels(session, task_ops.get_task(session, "t"), new, actor="cli")
    assert stored_labels(services) == ["billing", "bug"]
    with services.sessions.begin() as session:
        assert session.scalars(select(AuditLog).where(AuditLog.field == "labels")).all() == []


def test_add_labels_respects_the_label_limit(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task_ops, "MAX_LABELS", 4)
    make_task(services, ["a", "b", "c"])
    too_many = "at most 4 labels; 't' has 3, so at most 1 more"
    with pytest.raises(BadInputError, match=too_many), services.sessions.begin() as session:
        task_ops.add_labels(session, task_ops.get_task(session, "t"), ["d", "e"], actor="cli")
    with services.sessions.begin() as session:
        added = task_ops.add_labels(session, task_ops.get_task(session, "t"), ["d"], actor="cli")
    assert added == ["a", "b", "c", "d"]


def test_parse_labels_still_validates_after_sharing_its_checks() -> None:
    assert task_ops.parse_labels(" a , b ") == ["a", "b"]
    with pytest.raises(BadInputError, match="given twice"):
        task_ops.parse_labels("a,b,a")
    with pytest.raises(BadInputError, match="at least two labels"):
        task_ops.parse_labels("a")


def test_item_count_counts_only_the_tasks_items(services: Services) -> None:
    make_task(services, ["a", "b"])
    with services.sessions.begin() as session:
        other = task_ops.create_task(session, "u", ["a", "b"], threshold=0.8)
        task = task_ops.get_task(session, "t")
        for number in range(3):
            session.add(Item(task_id=task.id, text=f"text {number}", source="cli"))
        session.add(Item(task_id=other.id, text="elsewhere", source="cli"))
        session.flush()
        assert (task_ops.item_count(session, task), task_ops.item_count(session, other)) == (3, 1)


def test_tasks_of_one_workspace(services: Services) -> None:
    """With a team ID, listing and finding see only that workspace's tasks."""
    with services.sessions.begin() as session:
        task_ops.create_task(session, "alpha", ["a", "b"], threshold=0.8, team_id="T0ALPHA01")
        task_ops.create_task(session, "beta", ["a", "b"], threshold=0.8, team_id="T0BETA001")
    with services.sessions.begin() as session:
        check_workspace_tasks(session)


def check_workspace_tasks(session: Session) -> None:
    assert [t.name for t in task_ops.list_tasks(session)] == ["alpha", "beta"]
    assert [t.name for t in task_ops.list_tasks(session, team_id="T0ALPHA01")] == ["alpha"]
    assert task_ops.get_task(session, "beta", team_id="T0BETA001").team_id == "T0BETA001"
    with pytest.raises(NotFoundError, match=r"known tasks: alpha$"):
        task_ops.get_task(session, "beta", team_id="T0ALPHA01")
    assert task_ops.list_tasks(session, team_id="") == []
