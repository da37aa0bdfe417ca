"""The review rules a click obeys: who may answer, first answer wins, own answers may change.

"First answer wins" when a task (or an item, for a second opinion) needs one vote; with more,
an item resolves once that many people agree, and disagreements go to the admins.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.answers import current_answers, get_item, record_answer, votes_needed
from bot.queries import decide_final, latest_prediction
from bot.states import AnswerKind, LabelSource
from bot.storage.schema import Answer, Item, ReviewPrompt, utcnow

STORED = "stored"  # the answer was stored and decides the item
NEEDS_MORE = "needs_more"  # stored, but the item waits for more agreeing answers (or an admin)
UNCHANGED = "unchanged"
ALREADY_LABELLED = "already_labelled"
SKIPPED = "skipped"

# (user, label) of each current label answer, oldest first.
Votes = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ClickOutcome:
    """What a reviewer's click did, and what the message should show now."""

    status: str
    item_id: int
    label: str | None = None
    by_user: str | None = None
    at: datetime | None = None
    votes_needed: int = 1
    answers: Votes = ()  # the item's current label answers after this click
    escalated: bool = False  # reviewers disagree: the admins were just asked to decide
    second_opinion: bool = False  # the answer contradicts a very sure model: one more is asked


@dataclass(frozen=True)
class ItemView:
    """Everything a review message shows about an item."""

    item_id: int
    task_name: str
    external_id: str | None
    text: str
    labels: tuple[str, ...]
    ranked_labels: tuple[str, ...]
    guess: str | None
    confidence: float | None
    model_version: int | None
    final_label: str | None
    final_source: str | None
    answered_by: str | None
    answered_at: datetime | None
    resolved_at: datetime | None
    channel: str | None  # the channel of its prompt; None when it never had one
    message_ts: str | None
    requested_by: str | None = None
    spot_check: bool = False  # an automatic answer shown to a person to check, without the guess
    votes_needed: int = 1  # agreeing answers that resolve it
    answers_so_far: Votes = ()  # current label answers, oldest first
    escalated: bool = False  # reviewers disagreed and the admins were asked to decide


def item_view(session: Session, item_id: int) -> ItemView:
    """Load an item with its latest prediction, deciding answer and Slack message."""
    item = get_item(session, item_id)
    task = item.task
    prediction, version = latest_prediction(session, item.id)
    ranked: tuple[str, ...] = ()
    if prediction is not None and prediction.probabilities:
        probabilities = prediction.probabilities
        order = sorted(range(len(probabilities)), key=lambda j: -probabilities[j])
        ranked = tuple(task.labels[j] for j in order if j < len(task.labels))
    answers = current_answers(session, item.id)
    decided = deciding_answer(item, answers)
    prompt = session.scalar(select(ReviewPrompt).where(ReviewPrompt.item_id == item.id))
    return ItemView(
        item_id=item.id,
        task_name=task.name,
        external_id=item.external_id,
        text=item.text,
        labels=tuple(task.labels),
        ranked_labels=ranked,
        guess=prediction.label if prediction else None,
        confidence=prediction.confidence if prediction and prediction.label else None,
        model_version=version,
        final_label=item.final_label,
        final_source=item.final_source,
        answered_by=decided.user_id if decided else None,
        answered_at=decided.created_at if decided else None,
        resolved_at=item.resolved_at,
        channel=prompt.channel if prompt else None,
        message_ts=prompt.message_ts if prompt else None,
        requested_by=item.requested_by,
        spot_check=bool(item.spot_check),
        votes_needed=votes_needed(item),
        answers_so_far=_votes(answers),
        escalated=item.escalated_at is not None,
    )


def _votes(answers: Sequence[Answer]) -> Votes:
    return tuple(
        (a.user_id, a.label) for a in answers if a.kind == AnswerKind.LABEL and a.label is not None
    )


def deciding_answer(item: Item, answers: Sequence[Answer]) -> Answer | None:
    """The current answer behind a person-given final label; None unless a person decided.

    With one vote needed it is the majority's latest (`decide_final`); with more, or after an
    admin settled a disagreement, the latest answer that gave the final label.
    """
    if item.final_source != LabelSource.PERSON or item.final_label is None:
        return None
    if votes_needed(item) <= 1:
        decided = decide_final(answers)
        if decided is not None and decided.label == item.final_label:
            return decided
    giving = [a for a in answers if a.kind == AnswerKind.LABEL and a.label == item.final_label]
    return giving[-1] if giving else None


def _lock_item(session: Session, item_id: int) -> Item:
    # Row lock on PostgreSQL; on SQLite the transaction already holds the write lock.
    return get_item(session, item_id, lock=True)


def answer_click(
    session: Session,
    item_id: int,
    user_id: str,
    *,
    label: str,
    now: datetime | None = None,
    admins: frozenset[str] = frozenset(),
) -> ClickOutcome:
    """A person chose `label`: the first person's answer resolves the item (or the k-th
    agreeing one, when the item needs k votes; after an escalation, an admin's).

    Someone else's click on a resolved item changes nothing and says who answered; the same
    person clicking again (a retry or a change of mind) is kept as history.
    """
    now = now or utcnow()
    item = _lock_item(session, item_id)
    decided = deciding_answer(item, current_answers(session, item.id))
    if decided is not None and decided.user_id != user_id:
        return ClickOutcome(
            ALREADY_LABELLED, item.id, decided.label, decided.user_id, decided.created_at
        )
    outcome = record_answer(
        session, item, user_id, label=label, kind=AnswerKind.LABEL, now=now, admins=admins
    )
    if not outcome.changed:
        status = UNCHANGED
    elif item.final_source == LabelSource.PERSON:
        status = STORED
    else:
        status = NEEDS_MORE
    at = now if outcome.changed else (decided.created_at if decided else now)
    return ClickOutcome(
        status,
        item.id,
        label,
        user_id,
        at,
        votes_needed=votes_needed(item),
        answers=_votes(current_answers(session, item.id)),
        escalated=outcome.escalated,
        second_opinion=outcome.second_opinion,
    )


def skip_click(
    session: Session, item_id: int, user_id: str, *, now: datetime | None = None
) -> ClickOutcome:
    """Record that a person skipped an item; it stays open for others."""
    item = _lock_item(session, item_id)
    decided = deciding_answer(item, current_answers(session, item.id))
    if decided is not None:
        return ClickOutcome(
            ALREADY_LABELLED, item.id, decided.label, decided.user_id, decided.created_at
        )
    record_answer(session, item, user_id, label=None, kind=AnswerKind.SKIP, now=now)
    return ClickOutcome(SKIPPED, item.id)


def may_change(session: Session, item_id: int, user_id: str) -> ClickOutcome | None:
    """None when `user_id` may reopen the item's answer, else who holds it."""
    item = get_item(session, item_id)
    decided = deciding_answer(item, current_answers(session, item.id))
    if decided is not None and decided.user_id != user_id:
        return ClickOutcome(
            ALREADY_LABELLED, item.id, decided.label, decided.user_id, decided.created_at
        )
    return None
