"""Tasks: creating them, finding them, and changing their settings with an audit trail."""

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.errors import BadInputError, ConflictError, NotFoundError
from bot.storage.schema import AuditLog, Item, Task, utcnow
from model.features import FEATURIZERS

MAX_LABEL_CHARS = 200
MAX_LABELS = 1000
_TASK_NAME = re.compile(r"^\w[\w.-]{0,79}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,30}$")
_TEAM_ID = re.compile(r"^T[A-Z0-9]{2,30}$")


def parse_labels(raw: str | Sequence[str]) -> list[str]:
    """Validate a label set given as "a,b,c" or a sequence; order is kept."""
    parts = raw.split(",") if isinstance(raw, str) else list(raw)
    labels = _checked_labels(parts)
    if len(labels) < 2:
        raise BadInputError("a task needs at least two labels")
    if len(labels) > MAX_LABELS:
        raise BadInputError(f"a task can have at most {MAX_LABELS} labels")
    return labels


def _checked_labels(parts: Sequence[str]) -> list[str]:
    """Stripped labels, refusing empty, over-long and doubled ones."""
    labels = [part.strip() for part in parts]
    if any(not label for label in labels):
        raise BadInputError("labels must not be empty (check for a doubled or trailing comma)")
    too_long = [label for label in labels if len(label) > MAX_LABEL_CHARS]
    if too_long:
        raise BadInputError(f"label {too_long[0][:40]!r}… is over {MAX_LABEL_CHARS} characters")
    seen: set[str] = set()
    doubled = [label for label in labels if label in seen or seen.add(label)]  # type: ignore[func-returns-value]
    if doubled:
        raise BadInputError(f"label {doubled[0]!r} is given twice")
    return labels


def read_labels_file(path: Path) -> list[str]:
    """Labels from a UTF-8 file, one per line (for labels that contain commas)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise BadInputError(f"{path} is not valid UTF-8; save it as UTF-8") from None
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror}") from None
    return parse_labels([line for line in lines if line.strip()])


def number_or_percent(text: str) -> float:
    """0.85 or "85%" as 0.85; ValueError when it is neither."""
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def audit(
    session: Session, task: Task, field: str, old: object, new: object, *, actor: str
) -> None:
    """Record who changed a task setting from what to what (values as their repr)."""
    session.add(
        AuditLog(
            task_id=task.id, actor=actor, field=field, old_value=repr(old), new_value=repr(new)
        )
    )


def parse_threshold(raw: str | float) -> float:
    """A threshold in (0, 1]; accepts 0.85 and "85%"."""
    text = str(raw).strip()
    try:
        value = number_or_percent(text)
    except ValueError:
        raise BadInputError(
            f"threshold {text!r} is not a number; give a value above 0 and at most 1, e.g. 0.8"
        ) from None
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise BadInputError(f"threshold {text} is out of range; it must be above 0 and at most 1")
    return value


def validate_task_name(name: str) -> str:
    """Task names are one word: letters, digits, '_', '-', '.'; up to 80 characters."""
    if not _TASK_NAME.fullmatch(name):
        raise BadInputError(
            f"task name {name!r} is not valid; use up to 80 letters, digits, '_', '-' or '.'"
        )
    return name


def validate_channel(channel: str | None) -> str | None:
    """A Slack channel ID such as C0123ABCD, or None."""
    if channel is None or channel == "":
        return None
    if not _CHANNEL_ID.fullmatch(channel):
        raise BadInputError(
            f"channel {channel!r} is not a Slack channel ID; copy the ID (C…) "
            "from the channel's details in Slack"
        )
    return channel


def validate_team(team_id: str | None) -> str | None:
    """A Slack workspace ID such as T0123ABCD, or None."""
    if team_id is None or team_id == "":
        return None
    if not _TEAM_ID.fullmatch(team_id):
        raise BadInputError(
            f"workspace {team_id!r} is not a Slack team ID; copy the ID (T…) from the "
            "workspace's settings or from `auth.test`"
        )
    return team_id


def create_task(
    session: Session,
    name: str,
    labels: Sequence[str],
    *,
    channel: str | None = None,
    threshold: float,
    featurizer: str = "tfidf",
    actor: str = "cli",
    team_id: str | None = None,
) -> Task:
    """Create a task; the creation is audited."""
    validate_task_name(name)
    label_list = parse_labels(labels)
    if featurizer not in FEATURIZERS:
        raise BadInputError(
            f"unknown featurizer {featurizer!r}; available: {', '.join(sorted(FEATURIZERS))}"
        )
    threshold = parse_threshold(threshold)
    if session.scalar(select(Task.id).where(Task.name == name)) is not None:
        raise ConflictError(f"task {name!r} already exists; see `hitl task show {name}`")
    task = Task(
        name=name,
        labels=label_list,
        channel=validate_channel(channel),
        team_id=validate_team(team_id),
        threshold=threshold,
        featurizer=featurizer,
    )
    session.add(task)
    session.flush()
    session.add(
        AuditLog(task_id=task.id, actor=actor, field="task", old_value=None, new_value=name)
    )
    return task


def get_task(
    session: Session, name: str, *, lock: bool = False, team_id: str | None = None
) -> Task:
    """The task called `name`, or a NotFoundError that lists the known ones.

    With `team_id` (a request from that Slack workspace) only that workspace's tasks exist.
    """
    # Only valid names were ever stored; anything else (a NUL, which PostgreSQL cannot even
    # compare, or a 10 kB string) is unknown without asking the database.
    task = None
    if _TASK_NAME.fullmatch(name):
        query = select(Task).where(Task.name == name)
        if team_id is not None:
            query = query.where(Task.team_id == team_id)
        if lock:
            query = query.with_for_update()
        task = session.scalar(query)
    if task is None:
        names = select(Task.name).order_by(Task.name).limit(20)
        if team_id is not None:
            names = names.where(Task.team_id == team_id)
        known = session.scalars(names).all()
        hint = f"known tasks: {', '.join(known)}" if known else "create one with `hitl task create`"
        raise NotFoundError(f"no task named {name[:80]!r}; {hint}")
    return task


def list_tasks(session: Session, *, team_id: str | None = None) -> list[Task]:
    """All tasks, by name; with `team_id`, only that Slack workspace's."""
    query = select(Task).order_by(Task.name)
    if team_id is not None:
        query = query.where(Task.team_id == team_id)
    return list(session.scalars(query))


def item_count(session: Session, task: Task) -> int:
    """How many items a task holds."""
    return session.scalar(select(func.count()).where(Item.task_id == task.id)) or 0


def set_threshold(session: Session, task: Task, value: str | float, *, actor: str) -> float:
    """Set a task's threshold by hand (leaving precision mode), audited; returns the old value."""
    new = parse_threshold(value)
    old = task.threshold
    if task.target_precision is not None:
        audit(session, task, "target_precision", task.target_precision, None, actor=actor)
    task.target_precision = None
    task.precision_lower_bound = None
    task.threshold_evidence = None
    task.precision_alert_at = None
    if new != old or task.threshold_since is None:
        task.threshold_since = utcnow()
    task.threshold = new
    audit(session, task, "threshold", old, new, actor=actor)
    return old


def set_channel(session: Session, task: Task, channel: str | None, *, actor: str) -> None:
    """Change a task's review channel, audited."""
    new = validate_channel(channel)
    session.add(
        AuditLog(
            task_id=task.id, actor=actor, field="channel", old_value=task.channel, new_value=new
        )
    )
    task.channel = new


def add_labels(session: Session, task: Task, new_labels: Sequence[str], *, actor: str) -> list[str]:
    """Append labels to a task, audited; returns the whole label set.

    Append only: Slack buttons carry a label's position, so existing labels never move.
    """
    added = _checked_labels(new_labels)
    if not added:
        raise BadInputError("give at least one label to add, e.g. --add refund")
    known = [label for label in added if label in task.labels]
    if known:
        raise BadInputError(f"task {task.name!r} already has the label {known[0]!r}")
    old = list(task.labels)
    if len(old) + len(added) > MAX_LABELS:
        raise BadInputError(
            f"a task can have at most {MAX_LABELS} labels; {task.name!r} has {len(old)}, "
            f"so at most {MAX_LABELS - len(old)} more fit"
        )
    # A new list, not an in-place append: the JSON column only notices assignment.
    task.labels = [*old, *added]
    session.add(
        AuditLog(
            task_id=task.id,
            actor=actor,
            field="labels",
            old_value=json.dumps(old, ensure_ascii=False),
            new_value=json.dumps(task.labels, ensure_ascii=False),
        )
    )
    return list(task.labels)


def audit_trail(session: Session, task: Task) -> list[AuditLog]:
    """Every audited change of a task, oldest first."""
    query = select(AuditLog).where(AuditLog.task_id == task.id).order_by(AuditLog.id)
    return list(session.scalars(query))
