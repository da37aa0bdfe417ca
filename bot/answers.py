"""Answers: a person's label for an item, with history; and importing labelled examples."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import outbox
from bot.errors import BadInputError, NotFoundError
from bot.ingest import IncomingItem, check_batch, describe_labels
from bot.queries import MAX_ITEM_ID, decide_final, find_by_external_ids
from bot.states import IMPORT_USER, AnswerKind, AnswerSource, LabelSource
from bot.storage.bulk import insert_returning_ids, insert_rows
from bot.storage.schema import Answer, Item, Task, utcnow


@dataclass(frozen=True)
class AnswerOutcome:
    """What recording an answer did."""

    answer_id: int
    changed: bool  # False when the same answer was already current (a repeated click)
    final_label: str | None


@dataclass(frozen=True)
class ImportOutcome:
    """What an import wrote."""

    items_created: int
    answers_written: int
    unchanged: int


def current_answers(session: Session, item_id: int) -> list[Answer]:
    """The current (not superseded) answers of an item, oldest first."""
    query = select(Answer).where(Answer.item_id == item_id, Answer.is_current.is_(True))
    return list(session.scalars(query.order_by(Answer.created_at, Answer.id)))


def refresh_final(session: Session, item: Item, *, now: datetime) -> None:
    """Recompute an item's final label from its current human answers."""
    decided = decide_final(current_answers(session, item.id))
    if decided is None:
        if item.final_source == LabelSource.PERSON:
            item.final_label, item.final_source, item.resolved_at = None, None, None
        return
    if item.final_source != LabelSource.PERSON or item.resolved_at is None:
        item.resolved_at = now
    item.final_label = decided.label
    item.final_source = LabelSource.PERSON


def record_answer(
    session: Session,
    item: Item,
    user_id: str,
    *,
    label: str | None,
    kind: str = AnswerKind.LABEL,
    source: AnswerSource = AnswerSource.SLACK,
    now: datetime | None = None,
) -> AnswerOutcome:
    """Store `user_id`'s answer; an earlier answer of theirs is kept as history.

    The same answer given twice changes nothing, so repeated deliveries are harmless.
    """
    now = now or utcnow()
    task = item.task
    if kind == AnswerKind.LABEL:
        if label is None or label not in task.labels:
            raise BadInputError(
                f"unknown label {label!r}; known labels: {describe_labels(task.labels)}"
            )
    elif kind == AnswerKind.SKIP:
        label = None
    else:
        raise BadInputError(f"unknown answer kind {kind!r}")
    previous = session.scalar(
        select(Answer)
        .where(Answer.item_id == item.id, Answer.user_id == user_id, Answer.is_current.is_(True))
        .with_for_update()
    )
    if previous is not None and previous.kind == kind and previous.label == label:
        return AnswerOutcome(previous.id, changed=False, final_label=item.final_label)
    if previous is not None:
        previous.is_current = False
        previous.superseded_at = now
        session.flush()  # the partial unique index must see the old row retired first
    answer = Answer(
        item_id=item.id, user_id=user_id, kind=kind, label=label, source=source, created_at=now
    )
    session.add(answer)
    session.flush()
    refresh_final(session, item, now=now)
    if item.final_source == LabelSource.PERSON:
        outbox.mark_answered(session, item.id, now=now)
    return AnswerOutcome(answer.id, changed=True, final_label=item.final_label)


def get_item(session: Session, item_id: int, *, lock: bool = False) -> Item:
    """An item by its internal id."""
    if not 0 < item_id <= MAX_ITEM_ID:
        raise NotFoundError(f"no item #{item_id}")
    query = select(Item).where(Item.id == item_id)
    if lock:
        query = query.with_for_update()
    item = session.scalar(query)
    if item is None:
        raise NotFoundError(f"no item #{item_id}")
    return item


def import_examples(
    session: Session,
    task: Task,
    rows: Sequence[IncomingItem],
    *,
    max_chars: int,
    now: datetime | None = None,
) -> ImportOutcome:
    """Store labelled examples as answers by `import`; rows with a known id update that item."""
    checked = check_batch(rows, labels=task.labels, max_chars=max_chars)
    now = now or utcnow()
    ids = [row.external_id for row in checked if row.external_id is not None]
    existing = find_by_external_ids(session, task, ids)
    fresh = [row for row in checked if row.external_id is None or row.external_id not in existing]
    written = unchanged = 0
    for row in checked:
        item = existing.get(row.external_id) if row.external_id is not None else None
        if item is None:
            continue
        outcome = record_answer(
            session, item, IMPORT_USER, label=row.label, source=AnswerSource.IMPORT, now=now
        )
        written += outcome.changed
        unchanged += not outcome.changed
    if fresh:
        item_ids = insert_returning_ids(
            session,
            Item,
            [
                {
                    "task_id": task.id,
                    "external_id": row.external_id,
                    "text": row.text,
                    "source": "import",
                    "submitted_at": now,
                    "route": None,
                    "final_label": row.label,
                    "final_source": LabelSource.PERSON,
                    "resolved_at": now,
                }
                for row in fresh
            ],
        )
        insert_rows(
            session,
            Answer,
            [
                {
                    "item_id": item_id,
                    "user_id": IMPORT_USER,
                    "kind": AnswerKind.LABEL,
                    "source": AnswerSource.IMPORT,
                    "label": row.label,
                    "created_at": now,
                    "is_current": True,
                }
                for item_id, row in zip(item_ids, fresh, strict=True)
            ],
        )
        written += len(fresh)
    return ImportOutcome(items_created=len(fresh), answers_written=written, unchanged=unchanged)
