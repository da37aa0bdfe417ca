"""The review-prompt outbox: the one module that moves prompts between states.

pending → sending (a poster claimed it) → posted (Slack has it) → answered (a person) or
resolved (a newer model); pending again after a retryable error; failed when Slack refuses the
message itself. An attempt whose outcome is unknown (a timeout, a dropped connection, a poster
killed mid-send) leaves `unconfirmed_since`: Slack may have the message, so the next attempt looks
for it before posting again. Everything here takes a `Session`; the caller owns the transaction.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.states import PromptState
from bot.storage.bulk import insert_rows
from bot.storage.schema import Item, ReviewPrompt, Task

# A claim older than this belongs to a poster that died mid-send: the prompt goes back.
STALE_CLAIM = timedelta(minutes=2)


@dataclass(frozen=True)
class PostedMessage:
    """Where a prompt's Slack message lives."""

    item_id: int
    channel: str
    ts: str


@dataclass(frozen=True)
class Claim:
    """A prompt taken for sending: its item, and since when an earlier attempt is unconfirmed."""

    item_id: int
    unconfirmed_since: datetime | None


@dataclass(frozen=True)
class DuePrompt:
    """The oldest pending prompt of a channel."""

    prompt_id: int
    item_id: int
    channel: str
    due_at: datetime


def enqueue(
    session: Session, item_ids: Sequence[int], *, channel: str | None, now: datetime
) -> None:
    """Queue a prompt for each item routed to review."""
    insert_rows(
        session,
        ReviewPrompt,
        [
            {
                "item_id": item_id,
                "channel": channel,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
                "status": PromptState.PENDING,
                "attempts": 0,
            }
            for item_id in item_ids
        ],
    )


def mark_answered(session: Session, item_id: int, *, now: datetime) -> None:
    """A person answered: a prompt not yet sent need not be sent."""
    session.execute(
        update(ReviewPrompt)
        .where(ReviewPrompt.item_id == item_id, ReviewPrompt.status == PromptState.PENDING)
        .values(status=PromptState.ANSWERED, updated_at=now)
    )


def mark_resolved(
    session: Session, item_ids: Sequence[int], *, now: datetime
) -> list[PostedMessage]:
    """A model resolved these items: stop their prompts; returns the messages to update."""
    if not item_ids:
        return []
    posted = session.execute(
        select(ReviewPrompt.item_id, ReviewPrompt.channel, ReviewPrompt.message_ts).where(
            ReviewPrompt.item_id.in_(item_ids), ReviewPrompt.message_ts.is_not(None)
        )
    ).all()
    session.execute(
        update(ReviewPrompt)
        .where(
            ReviewPrompt.item_id.in_(item_ids),
            ReviewPrompt.status.in_([PromptState.PENDING, PromptState.POSTED]),
        )
        .values(status=PromptState.RESOLVED, updated_at=now)
    )
    return [PostedMessage(int(r[0]), str(r[1]), str(r[2])) for r in posted if r[1] and r[2]]


def release_stale_claims(session: Session, *, now: datetime) -> None:
    """Prompts claimed by a poster that died mid-send become pending again, unconfirmed."""
    session.execute(
        update(ReviewPrompt)
        .where(
            ReviewPrompt.status == PromptState.SENDING,
            ReviewPrompt.updated_at < now - STALE_CLAIM,
        )
        .values(
            status=PromptState.PENDING,
            # The claim's time is when that send began; Slack may have stored it since.
            unconfirmed_since=func.coalesce(
                ReviewPrompt.unconfirmed_since, ReviewPrompt.updated_at
            ),
            updated_at=now,
        )
    )


def due_heads(session: Session) -> list[DuePrompt]:
    """The oldest pending prompt of every channel (order within a channel is kept)."""
    oldest = (
        select(func.min(ReviewPrompt.id))
        .join(Item, Item.id == ReviewPrompt.item_id)
        .join(Task, Task.id == Item.task_id)
        .where(ReviewPrompt.status == PromptState.PENDING, Task.channel.is_not(None))
        .group_by(Task.channel)
    )
    rows = session.execute(
        select(ReviewPrompt.id, ReviewPrompt.item_id, Task.channel, ReviewPrompt.next_attempt_at)
        .join(Item, Item.id == ReviewPrompt.item_id)
        .join(Task, Task.id == Item.task_id)
        .where(ReviewPrompt.id.in_(oldest))
    ).all()
    return [DuePrompt(int(r[0]), int(r[1]), str(r[2]), r[3]) for r in rows]


def claim(session: Session, prompt_id: int, *, now: datetime) -> Claim | None:
    """Take a pending prompt for sending; None if someone else has it or it was answered."""
    claimed = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
        update(ReviewPrompt)
        .where(ReviewPrompt.id == prompt_id, ReviewPrompt.status == PromptState.PENDING)
        .values(status=PromptState.SENDING, updated_at=now)
    ).rowcount
    if claimed != 1:
        return None
    row = session.execute(
        select(ReviewPrompt.item_id, ReviewPrompt.unconfirmed_since).where(
            ReviewPrompt.id == prompt_id
        )
    ).one()
    return Claim(int(row[0]), row[1])


def mark_posted(session: Session, prompt_id: int, *, channel: str, ts: str, now: datetime) -> None:
    """Slack stored the message: remember where, so clicks and re-scores can update it."""
    _posted(session, prompt_id, channel=channel, ts=ts, attempts=1, now=now)


def mark_found(session: Session, prompt_id: int, *, channel: str, ts: str, now: datetime) -> None:
    """An unconfirmed attempt did reach Slack: that message is the prompt; nothing is re-posted."""
    _posted(session, prompt_id, channel=channel, ts=ts, attempts=0, now=now)


def _posted(
    session: Session, prompt_id: int, *, channel: str, ts: str, attempts: int, now: datetime
) -> None:
    session.execute(
        update(ReviewPrompt)
        .where(ReviewPrompt.id == prompt_id)
        .values(
            status=PromptState.POSTED,
            channel=channel,
            message_ts=ts,
            attempts=ReviewPrompt.attempts + attempts,
            last_error=None,
            unconfirmed_since=None,
            updated_at=now,
        )
    )


def mark_retry(
    session: Session, prompt_id: int, *, reason: str, delay: float, now: datetime
) -> None:
    """Sending failed for a reason that passes: try again after `delay` seconds."""
    _attempt_failed(session, prompt_id, PromptState.PENDING, reason=reason, delay=delay, now=now)


def mark_unconfirmed(
    session: Session,
    prompt_id: int,
    *,
    started: datetime,
    reason: str,
    delay: float,
    now: datetime,
) -> None:
    """The attempt begun at `started` got no answer (timeout, dropped connection): Slack may
    have the message, so the retry after `delay` seconds looks for it first."""
    _attempt_failed(session, prompt_id, PromptState.PENDING, reason=reason, delay=delay, now=now)
    session.execute(  # an earlier unconfirmed attempt, if any, stays the one to look back to
        update(ReviewPrompt)
        .where(ReviewPrompt.id == prompt_id, ReviewPrompt.unconfirmed_since.is_(None))
        .values(unconfirmed_since=started)
    )


def mark_failed(session: Session, prompt_id: int, *, reason: str, now: datetime) -> None:
    """Slack refused the message itself: stop trying (a person must look)."""
    _attempt_failed(session, prompt_id, PromptState.FAILED, reason=reason, delay=0.0, now=now)


def _attempt_failed(
    session: Session,
    prompt_id: int,
    status: PromptState,
    *,
    reason: str,
    delay: float,
    now: datetime,
) -> None:
    session.execute(
        update(ReviewPrompt)
        .where(ReviewPrompt.id == prompt_id)
        .values(
            status=status,
            attempts=ReviewPrompt.attempts + 1,
            last_error=reason,
            next_attempt_at=now + timedelta(seconds=delay),
            updated_at=now,
        )
    )
