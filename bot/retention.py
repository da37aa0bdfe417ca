"""Data retention: deleting a task, or a task's old items, with everything that hangs off them.

The rows go in an explicit order, children first (predictions, answers and review prompts, then
their items; then model versions, retrain runs and the task), so the deletes do not depend on
ON DELETE clauses and behave the same on SQLite and PostgreSQL. `prediction.model_version_id`
has none at all: a model version can only go once its predictions have.

Items go in batches of `BATCH` ids, so a million of them need about a thousand rounds of a
few statements and never more than one batch of ids in memory; the caller's transaction
holds them all, so a failure anywhere deletes nothing.

Text vectors (`text_vector`) stay: they are keyed by a hash of the text, not by task, so
another task (or the same text submitted again) may share them, and they hold no text.

A review prompt already in Slack keeps its message; a click on it finds no item and the person
is told the item was deleted (`bot.slack.listeners.actions`). A poster holding a deleted
prompt's claim finds nothing to mark when its send returns.
"""

import logging
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, tzinfo

from sqlalchemy import ColumnElement, Delete, delete, func, select
from sqlalchemy.orm import Session

from bot.errors import BadInputError
from bot.states import PromptState
from bot.storage.schema import (
    Answer,
    AuditLog,
    Item,
    ModelVersion,
    Prediction,
    RetrainRun,
    ReviewPrompt,
    Task,
)

logger = logging.getLogger(__name__)

# Item ids per round of deletes: small enough for any driver's parameter limit and for memory,
# large enough that a million items take about a thousand rounds.
BATCH = 1000
# The prompt states whose message may still be clicked or whose send may be in flight.
_OPEN_PROMPTS = (PromptState.PENDING, PromptState.SENDING, PromptState.POSTED)


@dataclass(frozen=True)
class Footprint:
    """What a deletion would remove: shown in the confirmation question."""

    items: int
    answers: int
    models: int
    open_prompts: int


@dataclass
class Removed:
    """How many rows of each kind a deletion removed."""

    items: int = 0
    predictions: int = 0
    answers: int = 0
    review_prompts: int = 0
    model_versions: int = 0
    retrain_runs: int = 0
    audit_rows: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts, for `--json`."""
        return asdict(self)


def parse_before(raw: str, *, zone: tzinfo, now: datetime) -> datetime:
    """`--before`: an ISO date (midnight) or datetime; without an offset it is in `zone`.

    A moment in the future is refused: every item would go, which is `hitl task delete`'s job
    (or pass the current time on purpose).
    """
    text = raw.strip()
    try:
        moment = (
            datetime.combine(date.fromisoformat(text), time())
            if len(text) == 10
            else datetime.fromisoformat(text)
        )
    except ValueError:
        raise BadInputError(
            f"--before {raw[:40]!r} is not an ISO date or datetime; "
            "use e.g. 2024-01-31 or 2024-01-31T12:00:00+00:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    if moment > now:
        raise BadInputError(
            f"--before {text} is in the future, so every item would go; give a past date "
            "(or delete the whole task with `hitl task delete`)"
        )
    return moment


def _of_items(task: Task, before: datetime | None) -> list[ColumnElement[bool]]:
    """The WHERE clause of the items a deletion takes."""
    clauses: list[ColumnElement[bool]] = [Item.task_id == task.id]
    if before is not None:
        clauses.append(Item.submitted_at < before)
    return clauses


def footprint(session: Session, task: Task, *, before: datetime | None = None) -> Footprint:
    """What deleting `task` (or, with `before`, its items submitted before then) would remove."""
    items = select(Item.id).where(*_of_items(task, before))
    answers = session.scalar(
        select(func.count()).select_from(Answer).where(Answer.item_id.in_(items))
    )
    prompts = session.scalar(
        select(func.count())
        .select_from(ReviewPrompt)
        .where(ReviewPrompt.item_id.in_(items), ReviewPrompt.status.in_(_OPEN_PROMPTS))
    )
    models = 0
    if before is None:
        models = (
            session.scalar(
                select(func.count())
                .select_from(ModelVersion)
                .where(ModelVersion.task_id == task.id)
            )
            or 0
        )
    item_count = session.scalar(select(func.count()).select_from(items.subquery()))
    return Footprint(
        items=item_count or 0, answers=answers or 0, models=models, open_prompts=prompts or 0
    )


def delete_items(
    session: Session, task: Task, *, before: datetime | None = None, batch: int = BATCH
) -> Removed:
    """Delete the task's items (those submitted before `before`, if given) and their
    predictions, answers and review prompts, `batch` items at a time."""
    removed = Removed()
    # No ORDER BY and no keyset: each round deletes what the last one found, so the next
    # query starts from the (task_id, submitted_at) index again and stops after `batch` rows.
    next_ids = select(Item.id).where(*_of_items(task, before)).limit(batch)
    while ids := list(session.scalars(next_ids)):
        removed.predictions += _delete(
            session, delete(Prediction).where(Prediction.item_id.in_(ids))
        )
        removed.answers += _delete(session, delete(Answer).where(Answer.item_id.in_(ids)))
        removed.review_prompts += _delete(
            session, delete(ReviewPrompt).where(ReviewPrompt.item_id.in_(ids))
        )
        removed.items += _delete(session, delete(Item).where(Item.id.in_(ids)))
    return removed


def purge_items(session: Session, task: Task, *, before: datetime, actor: str) -> Removed:
    """Delete the task's items submitted before `before` (the task, its models and settings
    stay), audited."""
    removed = delete_items(session, task, before=before)
    session.add(
        AuditLog(
            task_id=task.id,
            actor=actor,
            field="items",
            old_value=f"{removed.items} submitted before {before.isoformat()}",
            new_value="deleted",
        )
    )
    logger.info(
        "task %s: %s deleted %d items submitted before %s (%d answers, %d prompts)",
        task.name,
        actor,
        removed.items,
        before.isoformat(),
        removed.answers,
        removed.review_prompts,
    )
    return removed


def delete_task(session: Session, task: Task, *, actor: str) -> Removed:
    """Delete a task and everything of it; one audit row without a task records who did it.

    The task's own audit rows go too: their foreign key would only blank their task, leaving
    changes nobody could place. The row recording the deletion names the task and the counts.
    """
    removed = delete_items(session, task)
    # Items are gone, so no prediction points at these versions any more (cold-start ones
    # have none); a prediction of another task never does.
    removed.model_versions = _delete(
        session, delete(ModelVersion).where(ModelVersion.task_id == task.id)
    )
    removed.retrain_runs = _delete(session, delete(RetrainRun).where(RetrainRun.task_id == task.id))
    removed.audit_rows = _delete(session, delete(AuditLog).where(AuditLog.task_id == task.id))
    name = task.name
    _delete(session, delete(Task).where(Task.id == task.id))
    session.expunge(task)
    session.add(
        AuditLog(
            task_id=None,
            actor=actor,
            field="task",
            old_value=name,
            new_value=(
                f"deleted with {removed.items} items, {removed.answers} answers, "
                f"{removed.model_versions} models"
            ),
        )
    )
    logger.info(
        "task %s deleted by %s: %d items, %d answers, %d models",
        name,
        actor,
        removed.items,
        removed.answers,
        removed.model_versions,
    )
    return removed


def _delete(session: Session, statement: Delete) -> int:
    """Run a bulk DELETE without touching the session's objects; returns the rows it removed."""
    result = session.execute(statement.execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]  # a DELETE's CursorResult
