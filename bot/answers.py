"""Answers: a person's label for an item, with history; and importing labelled examples."""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import outbox, webhooks
from bot.errors import BadInputError, NotFoundError
from bot.ingest import IncomingItem, check_batch, describe_labels
from bot.queries import MAX_ITEM_ID, decide_final, find_by_external_ids
from bot.states import IMPORT_USER, AnswerKind, AnswerSource, LabelSource
from bot.storage.bulk import insert_returning_ids, insert_rows
from bot.storage.schema import Answer, Item, Prediction, Task, utcnow
from bot.webhooks import Resolution

# A model this sure that a person contradicts gets a second person's opinion.
VERY_SURE = 0.9


@dataclass(frozen=True)
class AnswerOutcome:
    """What recording an answer did."""

    answer_id: int
    changed: bool  # False when the same answer was already current (a repeated click)
    final_label: str | None
    escalated: bool = False  # reviewers disagree: the admins were just asked to decide
    second_opinion: bool = False  # the answer contradicts a very sure model: one more is needed


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


def votes_needed(item: Item) -> int:
    """Agreeing answers that resolve `item`: its own need (a second opinion) or its task's."""
    return max(item.votes_required or 1, item.task.votes_required or 1)


def decide_with_votes(
    answers: Sequence[Answer], *, needed: int, escalated: bool, admins: frozenset[str]
) -> Answer | None:
    """The answer that decides an item, or None while the reviewers have not agreed.

    Imported labels decide at once (the latest wins). With one vote needed the majority
    decides, ties going to the latest. With more, a label decides once `needed` people gave
    it; after an escalation an admin's answer decides.
    """
    labelled = [a for a in answers if a.kind == AnswerKind.LABEL and a.label is not None]
    imported = [a for a in labelled if a.user_id == IMPORT_USER]
    if imported:
        return imported[-1]
    if needed <= 1:
        return decide_final(answers)
    if escalated:
        by_admin = [a for a in labelled if a.user_id in admins]
        if by_admin:
            return by_admin[-1]
    counts = Counter(a.label for a in labelled)
    agreed = [a for a in labelled if counts[a.label] >= needed]
    if not agreed:
        return None
    best = max(counts[a.label] for a in agreed)
    return [a for a in agreed if counts[a.label] == best][-1]


def first_prediction(session: Session, item_id: int) -> Prediction | None:
    """The prediction that routed an item (its first)."""
    return session.scalar(
        select(Prediction).where(Prediction.item_id == item_id).order_by(Prediction.id).limit(1)
    )


def refresh_final(
    session: Session, item: Item, *, now: datetime, admins: frozenset[str] = frozenset()
) -> None:
    """Recompute an item's final label from its current human answers; a changed result is
    queued for the task's webhook in the same transaction."""
    before = (item.final_label, item.final_source)
    decided = _settle(session, item, now=now, admins=admins)
    if (item.final_label, item.final_source) != before:
        webhooks.record_change(session, item, decided=decided, now=now)


def _settle(
    session: Session, item: Item, *, now: datetime, admins: frozenset[str]
) -> Answer | None:
    """Set an item's final label from its answers; returns the deciding answer, if any."""
    decided = decide_with_votes(
        current_answers(session, item.id),
        needed=votes_needed(item),
        escalated=item.escalated_at is not None,
        admins=admins,
    )
    if decided is None:
        if item.final_source == LabelSource.PERSON:
            item.final_label, item.final_source, item.resolved_at = None, None, None
            if item.spot_check:
                # Back to the automatic answer the spot check was checking.
                routed = first_prediction(session, item.id)
                item.final_label = routed.label if routed else None
                item.final_source = LabelSource.MODEL if routed else None
                item.resolved_at = item.submitted_at if routed else None
        return None
    if item.final_source != LabelSource.PERSON or item.resolved_at is None:
        item.resolved_at = now
    item.final_label = decided.label
    item.final_source = LabelSource.PERSON
    return decided


def record_answer(
    session: Session,
    item: Item,
    user_id: str,
    *,
    label: str | None,
    kind: str = AnswerKind.LABEL,
    source: AnswerSource = AnswerSource.SLACK,
    now: datetime | None = None,
    admins: frozenset[str] = frozenset(),
) -> AnswerOutcome:
    """Store `user_id`'s answer; an earlier answer of theirs is kept as history.

    The same answer given twice changes nothing, so repeated deliveries are harmless. A
    person's answer to a spot check is stored as a spot check. An answer that contradicts a
    very sure model asks for a second opinion; reviewers who disagree where several votes are
    needed are escalated to the admins (`AnswerOutcome.escalated`, once per item).
    """
    now = now or utcnow()
    task = item.task
    if item.spot_check and source == AnswerSource.SLACK:
        source = AnswerSource.SPOT_CHECK
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
    second = (
        kind == AnswerKind.LABEL
        and user_id != IMPORT_USER
        and _contradicts_sure_model(session, item, label)
    )
    if second:
        item.votes_required = max(item.votes_required or 1, 2)
    refresh_final(session, item, now=now, admins=admins)
    escalated = False
    if item.final_source != LabelSource.PERSON and votes_needed(item) > 1:
        labels_given = {a.label for a in current_answers(session, item.id) if a.label is not None}
        if len(labels_given) > 1 and item.escalated_at is None:
            item.escalated_at = now
            escalated = True
    if item.final_source == LabelSource.PERSON:
        # A click redraws its own message; an imported answer has the poster redraw it.
        outbox.mark_answered(session, item.id, now=now, redraw=source == AnswerSource.IMPORT)
    return AnswerOutcome(
        answer.id,
        changed=True,
        final_label=item.final_label,
        escalated=escalated,
        second_opinion=second,
    )


def _contradicts_sure_model(session: Session, item: Item, label: str | None) -> bool:
    """The first person to answer disagrees with a model that was very sure."""
    if item.votes_required is not None and item.votes_required > 1:
        return False  # a second opinion is already asked for
    others = [
        a
        for a in current_answers(session, item.id)
        if a.kind == AnswerKind.LABEL and a.label is not None
    ]
    if len(others) != 1:
        return False
    routed = first_prediction(session, item.id)
    if routed is None or routed.label is None or routed.label == label:
        return False
    return routed.confidence >= max(VERY_SURE, item.task.threshold)


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
        if task.webhook_url is not None:
            webhooks.record_resolutions(
                session,
                task,
                [
                    Resolution(
                        item_id=item_id,
                        external_id=row.external_id,
                        route=None,
                        final_label=row.label,
                        label_source=LabelSource.PERSON,
                        source="import",
                        resolved_at=now,
                        answered_by=IMPORT_USER,
                        answered_at=now,
                    )
                    for item_id, row in zip(item_ids, fresh, strict=True)
                ],
                now=now,
            )
        written += len(fresh)
    return ImportOutcome(items_created=len(fresh), answers_written=written, unchanged=unchanged)
