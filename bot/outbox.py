"""The review-prompt outbox: the one module that moves prompts between states.

pending → sending (a poster claimed it) → posted (Slack has it) → answered (a person) or
resolved (a newer model); pending again after a retryable error; failed when Slack refuses the
message itself. A posted prompt nobody answered for long goes back to pending once to be posted
again (a re-post: it keeps its old message until the new one is in). Within a task, pending
prompts go out by priority (`bot.queue` ranks them), highest first and oldest first among equals;
a task that has posted its daily budget waits for the next day. An attempt whose outcome is
unknown (a timeout, a dropped connection, a poster killed mid-send) leaves `unconfirmed_since`:
Slack may have the message, so the next attempt looks for it before posting again. Everything
here takes a `Session`; the caller owns the transaction.

Several replicas share one database: a claim records its replica and a lease (on PostgreSQL
the row is taken with `FOR UPDATE SKIP LOCKED`, so two posters never wait on or take the same
prompt), a dead replica's claims are taken over when their lease ends, and `take_turn` spaces
the messages of a channel across every replica.

When Slack refuses the token or a channel (`invalid_auth`, `not_in_channel`, …), the prompts are
not at fault: they stay pending and a posting block (`posting_block`) stops the posts until a
probe gets through. Blocks live here too, so that every process sees the same ones.
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.states import LabelSource, PostingScope, PromptState
from bot.storage.bulk import insert_rows
from bot.storage.schema import AuditLog, ChannelTurn, Item, PostingBlock, ReviewPrompt, Task

# The default lease of a claim (`HITL_CLAIM_LEASE_SECONDS`): a prompt still `sending` after it
# belongs to a poster that died mid-send, and goes back. A send gives up long before (its HTTP
# timeout), so a live poster never loses a claim it still works on.
STALE_CLAIM = timedelta(minutes=2)
# A prompt given back by a replica that stops is due again after this many seconds: longer
# than a send's HTTP timeout, so a send it abandoned has reached Slack or never will.
GIVE_BACK_SETTLE = 15.0
# A blocked channel (or token) is probed with one post after 30 s, then 60 s, 120 s … 15 min.
FIRST_PROBE = 30.0
MAX_PROBE_INTERVAL = 900.0
# What a person can do about each reason Slack gives for refusing the token or a channel.
_FIX_TOKEN = "set a valid SLACK_BOT_TOKEN (reinstall the app) and restart the bot"
POSTING_HINTS = {
    "invalid_auth": _FIX_TOKEN,
    "not_authed": _FIX_TOKEN,
    "token_revoked": _FIX_TOKEN,
    "token_expired": _FIX_TOKEN,
    "account_inactive": _FIX_TOKEN,
    "not_allowed_token_type": "use the bot token (xoxb-…) as SLACK_BOT_TOKEN and restart",
    "missing_scope": "add the chat:write scope in the app's settings and reinstall the app",
    "not_in_channel": "invite the bot to the channel (/invite @hitl)",
    "channel_not_found": "invite the bot, or fix the task's channel (hitl task channel)",
    "is_archived": "unarchive the channel, or change the task's channel",
    "channel_is_archived": "unarchive the channel, or change the task's channel",
    "restricted_action": "let apps post in the channel (workspace or channel settings)",
    # Multi-workspace mode: the workspace's installation is gone.
    "app_uninstalled": "install the app in the workspace again (/slack/install)",
    "tokens_revoked": "install the app in the workspace again (/slack/install)",
    "not_installed": "install the app in the task's workspace (/slack/install)",
}


@dataclass(frozen=True)
class PostedMessage:
    """Where a prompt's Slack message lives."""

    item_id: int
    channel: str
    ts: str


@dataclass(frozen=True)
class Claim:
    """A prompt taken for sending: its item, since when an earlier attempt is unconfirmed, and
    for a re-post the message it replaces."""

    item_id: int
    unconfirmed_since: datetime | None
    previous: PostedMessage | None = None


@dataclass(frozen=True)
class DuePrompt:
    """The next prompt of a channel: the highest priority pending prompt of its tasks."""

    prompt_id: int
    item_id: int
    channel: str
    due_at: datetime
    team_id: str | None = None
    priority: float = 0.0
    task_id: int | None = None


@dataclass(frozen=True)
class Redraw:
    """A posted message whose item changed without a click (an import): draw it again."""

    prompt_id: int
    item_id: int
    channel: str
    ts: str
    due_at: datetime
    team_id: str | None = None


def enqueue(
    session: Session,
    item_ids: Sequence[int],
    *,
    channel: str | None,
    now: datetime,
    priorities: Sequence[float] | None = None,
    task_id: int | None = None,
) -> None:
    """Queue a prompt for each item routed to review, at `priorities` (default 0: in order).

    `task_id` is the items' task; looked up when not given.
    """
    if not item_ids:
        return
    if task_id is None:
        query = select(Item.id, Item.task_id).where(Item.id.in_(item_ids))
        owners = {item: task for item, task in session.execute(query)}
    ranks = list(priorities) if priorities is not None else [0.0] * len(item_ids)
    insert_rows(
        session,
        ReviewPrompt,
        [
            {
                "item_id": item_id,
                "task_id": task_id if task_id is not None else owners.get(item_id),
                "channel": channel,
                "priority": float(priority),
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
                "status": PromptState.PENDING,
                "attempts": 0,
            }
            for item_id, priority in zip(item_ids, ranks, strict=True)
        ],
    )


def mark_answered(session: Session, item_id: int, *, now: datetime, redraw: bool = False) -> None:
    """A person answered: a prompt not yet sent need not be sent.

    `redraw` (an answer that did not come from a click on the message, such as an import):
    the poster redraws the prompt's message, as a click would have.
    """
    if redraw:
        session.execute(
            update(ReviewPrompt)
            .where(ReviewPrompt.item_id == item_id, ReviewPrompt.message_ts.is_not(None))
            .values(redraw_at=now)
        )
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


def release_stale_claims(session: Session, *, now: datetime) -> int:
    """Prompts claimed by a poster that died mid-send (their lease ended) become pending again,
    unconfirmed; returns how many. Claims from before leases expire by age (`STALE_CLAIM`)."""
    expired = or_(
        ReviewPrompt.lease_until < now,
        (ReviewPrompt.lease_until.is_(None)) & (ReviewPrompt.updated_at < now - STALE_CLAIM),
    )
    return _give_back(session, (ReviewPrompt.status == PromptState.SENDING) & expired, now=now)


def release_claims(
    session: Session, owner: str, *, now: datetime, settle: float = GIVE_BACK_SETTLE
) -> int:
    """Give back every prompt `owner` still holds (it is shutting down): pending again,
    unconfirmed, so the next poster looks in Slack before posting; returns how many. They are
    due after `settle` seconds: a send abandoned in flight may still reach Slack, and a look
    that comes before it would post the prompt twice."""
    held = (ReviewPrompt.status == PromptState.SENDING) & (ReviewPrompt.claimed_by == owner)
    return _give_back(session, held, now=now, due=now + timedelta(seconds=settle))


def _give_back(session: Session, where: Any, *, now: datetime, due: datetime | None = None) -> int:
    released = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
        update(ReviewPrompt)
        .where(where)
        .values(
            next_attempt_at=now if due is None else due,
            status=PromptState.PENDING,
            # The claim's time is when that send began; Slack may have stored it since.
            unconfirmed_since=func.coalesce(
                ReviewPrompt.unconfirmed_since, ReviewPrompt.updated_at
            ),
            claimed_by=None,
            lease_until=None,
            updated_at=now,
        )
    ).rowcount
    return int(released)


def take_turn(session: Session, channel: str, *, now: datetime, interval: float) -> float | None:
    """Take `channel`'s next turn to post (None), or say how many seconds until it is free.

    The turn is a row per channel shared by every replica: taking it moves it `interval`
    seconds on, so that together they post no faster than one message per `interval` to a
    channel. Each replica's clock is used as is: replicas must keep their clocks in sync (NTP),
    as any deployment does.
    """
    moved = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
        update(ChannelTurn)
        .where(ChannelTurn.channel == channel, ChannelTurn.next_at <= now)
        .values(next_at=now + timedelta(seconds=interval))
    ).rowcount
    if moved == 1:
        return None
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    inserted = session.execute(
        dialect.insert(ChannelTurn)
        .values(channel=channel, next_at=now + timedelta(seconds=interval))
        .on_conflict_do_nothing()
        .returning(ChannelTurn.channel)
    ).first()
    if inserted is not None:  # the channel's first message
        return None
    next_at = session.execute(
        select(ChannelTurn.next_at).where(ChannelTurn.channel == channel)
    ).scalar_one()
    return max((next_at - now).total_seconds(), 0.0)


def due_heads(session: Session, *, skip_tasks: Collection[int] = ()) -> list[DuePrompt]:
    """The next prompt of every channel: the pending prompt of its tasks with the highest
    priority, the oldest among equals. Tasks in `skip_tasks` (their budget is used up) wait.

    One index lookup per task (`ix_review_prompt_queue`), however long the queues are.
    """
    tasks = session.execute(
        select(Task.id, Task.channel, Task.team_id).where(Task.channel.is_not(None))
    ).all()
    best: dict[str, DuePrompt] = {}
    for task_id, channel, team_id in tasks:
        if task_id in skip_tasks:
            continue
        row = session.execute(
            select(
                ReviewPrompt.id,
                ReviewPrompt.item_id,
                ReviewPrompt.next_attempt_at,
                ReviewPrompt.priority,
            )
            .where(ReviewPrompt.task_id == task_id, ReviewPrompt.status == PromptState.PENDING)
            .order_by(ReviewPrompt.priority.desc(), ReviewPrompt.id)
            .limit(1)
        ).first()
        if row is None:
            continue
        head = DuePrompt(
            int(row[0]), int(row[1]), str(channel), row[2], team_id, float(row[3]), int(task_id)
        )
        current = best.get(head.channel)
        # Tasks sharing a channel take turns by the same rule: priority, then age.
        if current is None or (-head.priority, head.prompt_id) < (
            -current.priority,
            current.prompt_id,
        ):
            best[head.channel] = head
    return list(best.values())


def posted_since(session: Session, task_ids: Collection[int], *, since: datetime) -> dict[int, int]:
    """How many prompts each task posted (or re-posted) since `since`."""
    if not task_ids:
        return {}
    rows = session.execute(
        select(ReviewPrompt.task_id, func.count())
        .where(ReviewPrompt.task_id.in_(list(task_ids)), ReviewPrompt.posted_at >= since)
        .group_by(ReviewPrompt.task_id)
    )
    return {int(task_id): int(count) for task_id, count in rows if task_id is not None}


def over_budget(session: Session, *, day_start: datetime) -> set[int]:
    """The tasks that posted their daily budget since `day_start`: their prompts wait."""
    query = select(Task.id, Task.daily_budget).where(Task.daily_budget.is_not(None))
    budgets = {task_id: budget for task_id, budget in session.execute(query)}
    posted = posted_since(session, list(budgets), since=day_start)
    return {
        task_id
        for task_id, budget in budgets.items()
        if budget is not None and posted.get(task_id, 0) >= budget
    }


def claim(
    session: Session,
    prompt_id: int,
    *,
    now: datetime,
    owner: str = "",
    lease: timedelta | None = None,
) -> Claim | None:
    """Take a pending prompt for sending, for `owner` until `now + lease` (default
    `STALE_CLAIM`); None if someone else has it or it was answered."""
    # On PostgreSQL the row is locked and a row another poster is taking right now is skipped,
    # not waited for; SQLite (one process) has no row locks and ignores the clause.
    free = session.execute(
        select(ReviewPrompt.id)
        .where(ReviewPrompt.id == prompt_id, ReviewPrompt.status == PromptState.PENDING)
        .with_for_update(skip_locked=True)
    ).first()
    if free is None:
        return None
    claimed = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
        update(ReviewPrompt)
        .where(ReviewPrompt.id == prompt_id, ReviewPrompt.status == PromptState.PENDING)
        .values(
            status=PromptState.SENDING,
            claimed_by=owner or None,
            lease_until=now + (STALE_CLAIM if lease is None else lease),
            updated_at=now,
        )
    ).rowcount
    if claimed != 1:
        return None
    row = session.execute(
        select(
            ReviewPrompt.item_id,
            ReviewPrompt.unconfirmed_since,
            ReviewPrompt.channel,
            ReviewPrompt.message_ts,
        ).where(ReviewPrompt.id == prompt_id)
    ).one()
    item_id = int(row[0])
    # Only a re-post has a message already: the one the new message replaces.
    previous = PostedMessage(item_id, str(row[2]), str(row[3])) if row[2] and row[3] else None
    return Claim(item_id, row[1], previous)


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
            posted_at=now,
            claimed_by=None,
            lease_until=None,
            updated_at=now,
        )
    )


def waits_for_a_person() -> Any:
    """The condition "its item has no final answer from a person" (a spot check still waits)."""
    return or_(Item.final_source.is_(None), Item.final_source != LabelSource.PERSON)


def queue_reposts(session: Session, *, posted_before: datetime, now: datetime) -> int:
    """Prompts posted before `posted_before` and still unanswered go back to pending, to be
    posted once more; returns how many. Each is re-posted at most once; items the admins were
    asked to settle keep their message, where that thread is."""
    waiting = select(Item.id).where(waits_for_a_person(), Item.escalated_at.is_(None))
    requeued = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
        update(ReviewPrompt)
        .where(
            ReviewPrompt.status == PromptState.POSTED,
            ReviewPrompt.reposted_at.is_(None),
            ReviewPrompt.posted_at < posted_before,
            ReviewPrompt.message_ts.is_not(None),
            ReviewPrompt.item_id.in_(waiting),
        )
        .values(status=PromptState.PENDING, reposted_at=now, next_attempt_at=now, updated_at=now)
    ).rowcount
    return int(requeued)


def redraws_due(session: Session, *, limit: int) -> list[Redraw]:
    """Up to `limit` posted messages to draw again from what is stored now, oldest first."""
    rows = session.execute(
        select(
            ReviewPrompt.id,
            ReviewPrompt.item_id,
            ReviewPrompt.channel,
            ReviewPrompt.message_ts,
            ReviewPrompt.redraw_at,
            Task.team_id,
        )
        .join(Item, Item.id == ReviewPrompt.item_id)
        .join(Task, Task.id == Item.task_id)
        .where(
            ReviewPrompt.redraw_at.is_not(None),
            ReviewPrompt.channel.is_not(None),
            ReviewPrompt.message_ts.is_not(None),
        )
        .order_by(ReviewPrompt.redraw_at, ReviewPrompt.id)
        .limit(limit)
    ).all()
    return [Redraw(int(r[0]), int(r[1]), str(r[2]), str(r[3]), r[4], r[5]) for r in rows if r[4]]


def mark_redrawn(session: Session, redraw: Redraw) -> None:
    """The message was drawn again; a newer change (a later `redraw_at`) keeps its turn."""
    session.execute(
        update(ReviewPrompt)
        .where(ReviewPrompt.id == redraw.prompt_id, ReviewPrompt.redraw_at <= redraw.due_at)
        .values(redraw_at=None)
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
            claimed_by=None,
            lease_until=None,
            updated_at=now,
        )
    )


def mark_blocked(session: Session, prompt_id: int, *, reason: str, now: datetime) -> None:
    """Slack refused the token or the channel, not the message: the prompt waits, uncounted."""
    session.execute(
        update(ReviewPrompt)
        .where(ReviewPrompt.id == prompt_id)
        .values(
            status=PromptState.PENDING,
            last_error=reason,
            claimed_by=None,
            lease_until=None,
            updated_at=now,
        )
    )


def requeue_failed(session: Session, task: Task, *, actor: str, now: datetime) -> int:
    """Queue again every failed prompt of `task` (after a fix), audited; returns how many."""
    of_task = select(Item.id).where(Item.task_id == task.id)
    requeued = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
        update(ReviewPrompt)
        .where(ReviewPrompt.status == PromptState.FAILED, ReviewPrompt.item_id.in_(of_task))
        .values(status=PromptState.PENDING, next_attempt_at=now, updated_at=now)
    ).rowcount
    if requeued:
        session.add(
            AuditLog(
                task_id=task.id,
                actor=actor,
                field="prompts",
                old_value=f"{requeued} failed",
                new_value=f"{requeued} pending",
                at=now,
            )
        )
    return int(requeued)


def failed_count(session: Session, task: Task) -> int:
    """How many of `task`'s prompts Slack refused as malformed."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(ReviewPrompt)
            .join(Item, Item.id == ReviewPrompt.item_id)
            .where(Item.task_id == task.id, ReviewPrompt.status == PromptState.FAILED)
        )
        or 0
    )


@dataclass(frozen=True)
class Block:
    """Posting stopped: for every channel (`scope` token, `channel` ""), for one channel, or
    for one workspace (`scope` workspace, `channel` its team ID)."""

    scope: PostingScope
    channel: str
    reason: str
    since: datetime
    next_probe_at: datetime
    probes: int

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of stats and health: state, reason, since (ISO 8601)."""
        return {"state": "blocked", "reason": self.reason, "since": self.since.isoformat()}


def probe_interval(probes: int) -> float:
    """Seconds to the next probe after `probes` failed ones: 30, 60, 120 … at most 900."""
    return min(MAX_PROBE_INTERVAL, FIRST_PROBE * 2.0**probes)


def posting_blocks(session: Session) -> list[Block]:
    """Every posting block, oldest first."""
    rows = session.scalars(
        select(PostingBlock).order_by(PostingBlock.since, PostingBlock.channel)
    ).all()
    return [
        Block(
            PostingScope(row.scope),
            row.channel,
            row.reason,
            row.since,
            row.next_probe_at,
            row.probes,
        )
        for row in rows
    ]


def block_posting(
    session: Session, scope: PostingScope, *, channel: str = "", reason: str, now: datetime
) -> bool:
    """Stop posting (to `channel`, to the workspace `channel` names, or at all for a token
    block); True if it was not stopped yet.

    An existing block keeps its `since` and its probe schedule; only the reason is brought up
    to date.
    """
    key = _key(scope, channel)
    values = {
        "scope": scope.value,
        "channel": key,
        "reason": reason,
        "since": now,
        "next_probe_at": now + timedelta(seconds=FIRST_PROBE),
        "probes": 0,
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    inserted = session.execute(
        dialect.insert(PostingBlock)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(PostingBlock.scope)
    ).first()
    if inserted is not None:
        return True
    session.execute(
        update(PostingBlock)
        .where(PostingBlock.scope == scope.value, PostingBlock.channel == key)
        .values(reason=reason)
    )
    return False


def claim_probe(session: Session, block: Block, *, now: datetime) -> bool:
    """Take the next probe of `block` (one post that tests it); False if it is not due or
    another poster took it. The probe after this one is scheduled at once, with backoff."""
    claimed = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
        update(PostingBlock)
        .where(
            PostingBlock.scope == block.scope.value,
            PostingBlock.channel == block.channel,
            PostingBlock.probes == block.probes,
            PostingBlock.next_probe_at <= now,
        )
        .values(
            probes=block.probes + 1,
            next_probe_at=now + timedelta(seconds=probe_interval(block.probes + 1)),
        )
    ).rowcount
    return bool(claimed == 1)


def unblock_posting(session: Session, scope: PostingScope, *, channel: str = "") -> Block | None:
    """Posting works again: remove the block; returns it, or None if there was none."""
    key = _key(scope, channel)
    found = [b for b in posting_blocks(session) if b.scope == scope and b.channel == key]
    removed = session.execute(  # type: ignore[attr-defined]  # a DELETE's CursorResult
        delete(PostingBlock).where(PostingBlock.scope == scope.value, PostingBlock.channel == key)
    ).rowcount
    return found[0] if found and removed == 1 else None


def _key(scope: PostingScope, channel: str) -> str:
    """The `channel` column of a block: "" for the token, else the channel or team ID."""
    return "" if scope == PostingScope.TOKEN else channel


def posting_state(
    session: Session, channel: str | None, *, team_id: str | None = None
) -> dict[str, Any]:
    """Whether prompts to `channel` (in workspace `team_id`) can go out: `{"state": "ok"}`, or
    the block that stops them (a token block stops every channel, a workspace block all of
    that workspace's)."""
    blocks = posting_blocks(session)
    token = [b for b in blocks if b.scope == PostingScope.TOKEN]
    team = [
        b
        for b in blocks
        if b.scope == PostingScope.WORKSPACE and team_id is not None and b.channel == team_id
    ]
    mine = [b for b in blocks if b.scope == PostingScope.CHANNEL and b.channel == channel]
    found = token or team or mine
    return found[0].as_dict() if found else {"state": "ok"}
