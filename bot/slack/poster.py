"""The outbox poster: sends review prompts to Slack at Slack's pace, once, and never drops one.

Each channel gets at most one message per `min_interval` seconds (Slack allows about one per
second per channel). A 429 pauses that channel for its Retry-After; server and connection
errors back off exponentially. Prompts of one channel go out one by one in queue order (below):
while the first cannot be sent, the ones behind it wait. Channels are independent: each has at
most one send in flight, on a small pool of threads, so a channel whose sends time out holds up
only itself.

A send that gets no answer (the client's timeout, a connection dropped after the request went
out) may still have reached Slack: it stored the message and answered too late. Every prompt
carries its id in the message's `metadata`, and before a prompt with such an unconfirmed attempt
is posted again, the poster reads the channel's recent history for it. Found: that message is the
prompt, and nothing is re-posted. Several copies found (Slack stored a late one after all): the
oldest stays the prompt, the others are edited into a pointer to it, without buttons.

Slack refusing the token (`invalid_auth`, `token_revoked`, …) or a channel (`not_in_channel`,
`missing_scope`, `is_archived`, …) is not the prompts' fault: they stay pending, and a posting
block in the database stops the posts, to every channel for a token, to that one channel
otherwise. It is logged once, as an error, by the poster that found it. At `next_probe_at` one
poster sends the channel's oldest prompt as a probe (after 30 s, then 60 s, 120 s … every 15 min);
the first that gets through lifts the block (logged once, as info), and the rest follow in order.
A token block is also lifted when a poster starts with a token that `auth.test` accepts.

Serving many workspaces (`client_for`), each prompt is posted with the bot token of its task's
workspace; a token refused there, or a workspace without an installation (uninstalled, tokens
revoked), blocks that workspace only, and installing the app again lifts the block. Only a
message Slack refuses as malformed (`invalid_blocks`, `msg_too_long`, …) marks its prompt
`failed`; any other refusal is retried with backoff like a server error.

Within a task, prompts go out by priority (`bot.queue` ranks them: uncertainty, spread, age),
the oldest first among equals; tasks sharing a channel take turns by the same rule. `rules`
(`PostingRules`, from the settings) hold everything back in quiet hours, let a task post at most
its daily budget a day (in `HITL_TIMEZONE`; the rest wait, ranked, for the next day), queue a
prompt nobody answered for `repost_after` to be posted once more (the old message becomes a
pointer to the new one, without buttons), and post each task's daily digest of waiting items.
Messages whose item was answered without a click (`hitl import`) are redrawn as a click would
have. Edits are not posts: redraws go on in quiet hours.

Several replicas on one database: each claim carries this poster's `owner` and a `lease`; a
claim whose lease ended (its replica died mid-send) is taken over by whichever poster looks
next, and `stop()` gives back the claims still held. With `shared_pacing` each channel's turns
are taken in the database, so the replicas together post at Slack's pace.

Time is injected, as stamina does for retries: `clock` (seconds, for pacing and backoff), `now`
(the outbox's timestamps) and `wait` (the pause between rounds). In production the pause is a
wait on an event that new items, finished sends and `stop()` cut short; a test passes a fake
clock whose `wait` just moves time on (after `wait_for_sends()` if it wants sends to finish
first), and steps the poster with `step()`: a 429 storm and a minute-long outage then take
milliseconds.
"""

import http.client
import logging
import os
import socket
import threading
import time
import urllib.error
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bot import outbox, queue
from bot.posting_hours import PostingRules
from bot.review import ItemView, item_view
from bot.slack import blocks as builders
from bot.states import PostingScope
from bot.storage.schema import utcnow

logger = logging.getLogger(__name__)

# Slack refuses the token: nothing can be posted anywhere until a person fixes it.
TOKEN_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "token_revoked",
        "token_expired",
        "account_inactive",
        "not_allowed_token_type",
    }
)
# Slack refuses this channel (membership, permission, scope, archive): the others may go on.
CHANNEL_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "channel_is_archived",
        "missing_scope",
        "restricted_action",
        "restricted_action_read_only_channel",
        "restricted_action_non_threadable_channel",
        "restricted_action_thread_only_channel",
        "ekm_access_denied",
        "team_access_not_granted",
        "access_denied",
        "no_permission",
    }
)
# Slack refuses the message itself: sending it again cannot help, so the prompt is `failed`.
MALFORMED_ERRORS = frozenset(
    {
        "invalid_blocks",
        "invalid_blocks_format",
        "invalid_attachments",
        "too_many_attachments",
        "msg_too_long",
        "msg_blocks_too_long",
        "no_text",
        "invalid_arguments",
        "invalid_metadata_format",
        "invalid_metadata_schema",
        "metadata_too_large",
        "metadata_must_be_sent_from_app",
        "markdown_text_conflict",
        "invalid_array_arg",
        "invalid_form_data",
        "invalid_post_type",
        "too_many_contact_cards",
    }
)
_MAX_BACKOFF = 60.0
# With a channel waiting out a delay, look at the outbox at least this often anyway: prompts
# queued by another process (`hitl submit`) do not wake this one.
_MAX_PAUSE = 1.0
# While quiet hours hold every post, the longest pause (nothing can go out before they end).
_QUIET_PAUSE = 60.0
# Seconds between looks for re-posts, digests and messages to redraw, on the poster's clock.
_UPKEEP_EVERY = 15.0
# Messages redrawn per look: chat.update allows about 50 a minute (Tier 3); clicks need some.
_REDRAWS_PER_ROUND = 10
# Slack refused a digest: the channel tries again after this long.
_DIGEST_RETRY = 60.0
# The message metadata that marks a review prompt (Slack's `metadata` of chat.postMessage).
PROMPT_EVENT = "hitl_prompt"
DUPLICATE_EVENT = "hitl_prompt_duplicate"
DUPLICATE_TEXT = "Duplicate of a review prompt: answer in the message above."
# How far before an unconfirmed attempt the history is read (clock skew between us and Slack),
# and how much of it: a page of `_LOOKUP_LIMIT` messages, at most `_LOOKUP_PAGES` pages.
_LOOKUP_MARGIN = 60.0
_LOOKUP_LIMIT = 50
_LOOKUP_PAGES = 4

MessageBuilder = Callable[[ItemView], dict[str, Any]]
# The client with the bot token of a workspace, or None when the app is not installed there.
ClientFor = Callable[[str | None], WebClient | None]
_TransportError = (OSError, http.client.HTTPException)


@dataclass
class _ChannelState:
    ready_at: float = 0.0
    failures: int = 0
    sending: bool = False


@dataclass
class PosterStats:
    """Counters for tests and the latency benchmark; times and delays are on the poster's clock."""

    posted: int = 0
    rate_limited: int = 0
    errors: int = 0
    unconfirmed: int = 0
    found: int = 0
    duplicates: int = 0
    blocked: int = 0  # sends refused for the token or the channel (the prompt waits)
    reposts: int = 0  # unanswered prompts posted once more
    digests: int = 0
    redraws: int = 0
    post_times: list[float] = field(default_factory=list)
    retry_delays: list[float] = field(default_factory=list)


def prompt_metadata(
    prompt_id: int, item_id: int, *, event_type: str = PROMPT_EVENT
) -> dict[str, Any]:
    """The `metadata` a prompt's message carries, so a lost answer can be found in history."""
    return {"event_type": event_type, "event_payload": {"prompt_id": prompt_id, "item_id": item_id}}


def replica_name() -> str:
    """This process's name in claims: host, pid and a random part (a pid is reused after a
    restart, and containers all have pid 1)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _where(scope: PostingScope, key: str) -> str:
    """What a block stops, for the log."""
    if scope == PostingScope.TOKEN:
        return "every channel"
    return f"workspace {key}" if scope == PostingScope.WORKSPACE else key


def _never_sent(exc: Exception) -> bool:
    """True when the request cannot have reached Slack (connection refused)."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, ConnectionRefusedError)


class Poster:
    """Sends due outbox rows with `chat.postMessage`, each channel on its own, in parallel."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: WebClient,
        build_message: MessageBuilder,
        *,
        min_interval: float = 1.0,
        tick: float = 0.05,
        max_parallel: int = 8,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
        wait: Callable[[float], object] | None = None,
        client_for: ClientFor | None = None,
        rules: PostingRules | None = None,
        owner: str | None = None,
        lease: timedelta | None = None,
        shared_pacing: bool = False,
    ) -> None:
        self._sessions = sessions
        # Who holds this poster's claims, and for how long: several replicas share the outbox.
        self.owner = owner or replica_name()
        self._lease = lease
        # Space each channel's messages through the database (`outbox.take_turn`), so that
        # several replicas together keep Slack's pace; one process alone paces in memory.
        self._shared_pacing = shared_pacing
        self._rules = rules or PostingRules()
        self._client = client
        self._client_for = client_for
        self._build = build_message
        self._min_interval = min_interval
        self._tick = tick
        self._max_parallel = max_parallel
        # After an unanswered send, give a slow Slack as long again to store the message
        # before looking for it: a look that comes too early re-posts it.
        self._settle = float(client.timeout)
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._channels: dict[str, _ChannelState] = {}
        self._sending = 0
        self._pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._wait = wait or self._wait_for_wake
        self._thread: threading.Thread | None = None
        # The blocks seen in the last round (for `health()` while the database does not answer)
        # and, on the poster's clock, when the next probe of a block that holds a prompt is due.
        self._blocks: list[outbox.Block] = []
        self._probe_at: float | None = None
        # On the poster's clock: until when quiet hours or a used-up budget hold prompts back
        # (so the pause is not a busy poll), and when the next upkeep look is due.
        self._held_until: float | None = None
        self._quiet = False
        self._upkeep_at = 0.0
        self._redrawing = False
        # Digests found due at the last upkeep and not started yet (their channel was busy).
        self._digests: list[queue.Digest] = []
        self.stats = PosterStats()

    def start(self) -> None:
        """Run the poster in a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hitl-poster", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, letting the sends in progress finish (up to `timeout`), then give
        back the prompts still claimed (a send that did not finish): another replica, or this
        one after a restart, posts them, looking in Slack first."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.wait_for_sends(max(0.0, deadline - time.monotonic()))
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
        try:
            with self._sessions.begin() as session:
                released = outbox.release_claims(session, self.owner, now=self._now())
        except SQLAlchemyError:  # the database is gone: the claims end with their lease
            logger.warning("could not give back this poster's claims; their lease ends them")
            return
        if released:
            logger.info("gave back %d prompt(s) still being sent", released)

    def wake(self) -> None:
        """Look at the outbox now (called after new review items are stored)."""
        self._wake.set()

    def health(self) -> dict[str, Any]:
        """How posting is going, for `/healthz`: `{"state": "ok"}` while Slack takes prompts,
        else the block (the token's, or the oldest one) and every blocked channel (and
        workspace, serving many)."""
        try:
            with self._sessions.begin() as session:
                blocks = outbox.posting_blocks(session)
        except SQLAlchemyError:  # the database check of /healthz reports that; show the last seen
            blocks = list(self._blocks)
        if not blocks:
            return {"state": "ok"}
        token = [b for b in blocks if b.scope == PostingScope.TOKEN]
        first = (token or blocks)[0]
        channels = {
            b.channel: {"reason": b.reason, "since": b.since.isoformat()}
            for b in blocks
            if b.scope == PostingScope.CHANNEL
        }
        health = {**first.as_dict(), "scope": first.scope.value, "channels": channels}
        workspaces = {
            b.channel: {"reason": b.reason, "since": b.since.isoformat()}
            for b in blocks
            if b.scope == PostingScope.WORKSPACE
        }
        if workspaces:  # many workspaces: which of them wait for an installation or a token
            health["workspaces"] = workspaces
        return health

    def resume_if_token_accepted(self) -> bool:
        """Lift a token block when Slack accepts this poster's token (`auth.test`): a new token
        after a restart. True if the token was accepted (always, serving many workspaces: each
        has its own token, checked by the probes)."""
        if self._client_for is not None:
            return True
        try:
            self._client.auth_test()
        except SlackApiError as exc:
            logger.warning("Slack refuses the bot token (%s)", exc.response.get("error"))
            return False
        except _TransportError:
            return False  # Slack unreachable: the probes will tell
        with self._sessions.begin() as session:
            lifted = outbox.unblock_posting(session, PostingScope.TOKEN)
        if lifted is not None:
            self._log_resumed(lifted, "every channel")
        return True

    def wait_for_sends(self, timeout: float | None = None) -> bool:
        """Block until no send is in flight; False if some still are after `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._sending == 0, timeout)

    def _loop(self) -> None:
        try:
            self.resume_if_token_accepted()
        except Exception:  # thread boundary: a database hiccup here must not stop the poster
            logger.exception("could not check the bot token; the probes will")
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # process boundary: the poster must outlive any one failure
                logger.exception("poster round failed; retrying")
                self._stop.wait(1.0)

    def _wait_for_wake(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def step(self) -> int:
        """One round, then a pause until a channel may send again; returns sends started."""
        started = self.run_once()
        self._wait(self.pause())
        return started

    def pause(self) -> float:
        """How long to wait before the next round: `tick`, longer while every channel waits,
        and until quiet hours end (at most a minute) while they hold every post."""
        now = self._clock()
        with self._lock:
            waits = [
                state.ready_at - now
                for state in self._channels.values()
                if state.ready_at > now and not state.sending
            ]
            if self._probe_at is not None and self._probe_at > now:
                waits.append(self._probe_at - now)
            if self._held_until is not None:
                waits.append(self._held_until - now)
            longest = _QUIET_PAUSE if self._quiet else _MAX_PAUSE
        if not waits:
            return self._tick
        return min(max(min(waits), self._tick), longest)

    def run_once(self) -> int:
        """Start a send of the next due prompt of each ready, idle channel (and, every
        `_UPKEEP_EVERY` seconds, queue re-posts, send due digests and redraw messages);
        returns how many prompt sends were started."""
        now = self._now()
        rules, hours = self._rules, self._rules.hours
        quiet_until = hours.quiet_until(now)
        with self._lock:
            # A channel busy before the heads are read keeps its turn until the next round:
            # its send may put its prompt back at the head after the query.
            busy = {name for name, state in self._channels.items() if state.sending}
            upkeep = self._clock() >= self._upkeep_at
            if upkeep:
                self._upkeep_at = self._clock() + _UPKEEP_EVERY
        digests: list[queue.Digest] | None = None
        redraws: list[outbox.Redraw] = []
        held: set[int] = set()
        with self._sessions.begin() as session:
            outbox.release_stale_claims(session, now=now)
            if upkeep and rules.repost_after is not None:
                outbox.queue_reposts(session, posted_before=now - rules.repost_after, now=now)
            if quiet_until is None:
                held = outbox.over_budget(session, day_start=hours.day_start(now))
                # Only the first pending prompt of a channel may go: the order is kept.
                heads = outbox.due_heads(session, skip_tasks=held)
                if upkeep and rules.digest_hour is not None:
                    digests = queue.digests_due(
                        session, hours=hours, hour=rules.digest_hour, now=now
                    )
            else:
                heads = []
            if upkeep and not self._redrawing:
                redraws = outbox.redraws_due(session, limit=_REDRAWS_PER_ROUND)
            blocks = outbox.posting_blocks(session)
        self._hold(now, quiet_until=quiet_until, budget_held=bool(held))
        self._blocks = blocks
        if quiet_until is not None:
            self._digests = []
        elif digests is not None:
            self._digests = digests
        # A due digest takes its channel's next turn, before the channel's next prompt.
        busy |= self._start_digests(busy, blocks)
        token = [b for b in blocks if b.scope == PostingScope.TOKEN]
        by_channel = {b.channel: b for b in blocks if b.scope == PostingScope.CHANNEL}
        probe_waits: list[float] = []
        by_team = {b.channel: b for b in blocks if b.scope == PostingScope.WORKSPACE}
        token_probed = False  # a refused token is probed with one post, not one per channel
        teams_probed: set[str] = set()  # the same for a workspace's token
        started = 0
        for head in heads:
            if head.channel in busy or head.due_at > now or self._stop.is_set():
                continue
            team_block = by_team.get(head.team_id) if head.team_id is not None else None
            stopping = tuple(
                token
                + ([team_block] if team_block is not None else [])
                + ([by_channel[head.channel]] if head.channel in by_channel else [])
            )
            if stopping and token and token_probed:
                continue
            if team_block is not None and team_block.channel in teams_probed:
                continue
            if stopping:
                later = [(b.next_probe_at - now).total_seconds() for b in stopping]
                if max(later) > 0:
                    probe_waits.append(max(later))
                    continue
            with self._lock:
                state = self._channels.setdefault(head.channel, _ChannelState())
                if self._clock() < state.ready_at or self._sending >= self._max_parallel:
                    continue
            if stopping:
                token_probed = bool(token)
                if team_block is not None:
                    teams_probed.add(team_block.channel)
                with self._sessions.begin() as session:
                    # Another poster may have taken this probe: then it is not ours to send.
                    if not all([outbox.claim_probe(session, b, now=now) for b in stopping]):
                        continue
                logger.debug("probing %s with prompt %d", head.channel, head.prompt_id)
            with self._lock:
                state.sending = True
                self._sending += 1
                pool = self._ensure_pool()
            pool.submit(
                self._send_then_free, head.channel, head.prompt_id, state, stopping, head.team_id
            )
            started += 1
        clock = self._clock()
        with self._lock:
            self._probe_at = clock + min(probe_waits) if probe_waits else None
        if redraws:
            self._start_redraws(redraws)
        return started

    def _hold(self, now: datetime, *, quiet_until: datetime | None, budget_held: bool) -> None:
        """Remember what holds prompts back, for the pause: quiet hours or a used-up budget."""
        hold: float | None = None
        if quiet_until is not None:
            hold = (quiet_until - now).total_seconds()
        elif budget_held:
            hold = (self._rules.hours.next_day_start(now) - now).total_seconds()
        with self._lock:
            self._quiet = quiet_until is not None
            self._held_until = None if hold is None else self._clock() + max(hold, 0.0)

    def _start_digests(self, busy: set[str], blocks: list[outbox.Block]) -> set[str]:
        """Send each due digest whose channel is idle, ready and not blocked; returns their
        channels. The others wait for a later round."""
        taken: set[str] = set()
        if not self._digests or any(b.scope == PostingScope.TOKEN for b in blocks):
            return taken
        stopped = {b.channel for b in blocks}
        waiting = []
        for digest in self._digests:
            if digest.channel in stopped or digest.team_id in stopped:
                continue  # blocked: the next upkeep looks again
            if digest.channel in busy | taken or self._stop.is_set():
                waiting.append(digest)
                continue
            with self._lock:
                state = self._channels.setdefault(digest.channel, _ChannelState())
                if (
                    state.sending
                    or self._clock() < state.ready_at
                    or self._sending >= self._max_parallel
                ):
                    waiting.append(digest)
                    continue
                state.sending = True
                self._sending += 1
                pool = self._ensure_pool()
            pool.submit(self._digest_then_free, digest, state)
            taken.add(digest.channel)
        self._digests = waiting
        return taken

    def _ensure_pool(self) -> ThreadPoolExecutor:
        """The send pool (made on first use); call with the lock held."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self._max_parallel, thread_name_prefix="hitl-poster-send"
            )
        return self._pool

    def _digest_then_free(self, digest: queue.Digest, state: _ChannelState) -> None:
        try:
            self._send_digest(digest, state)
        except Exception:  # thread boundary: the channel must be freed whatever went wrong
            logger.exception("sending the digest of %s failed", digest.task_name)
            with self._lock:
                state.ready_at = self._clock() + _DIGEST_RETRY
        finally:
            with self._idle:
                state.sending = False
                self._sending -= 1
                self._idle.notify_all()
            self._wake.set()

    def _send_digest(self, digest: queue.Digest, state: _ChannelState) -> None:
        """Post a task's digest once for its day: claimed in the database first, so restarts
        and other posters do not post it again; given back when Slack refused it."""
        client = self._client_of(digest.team_id)
        if client is None:
            return
        with self._sessions.begin() as session:
            if not queue.claim_digest(session, digest):
                return
        summary = digest.summary
        message = builders.digest_blocks(
            digest.task_name,
            waiting=summary.waiting,
            in_channel=summary.in_channel,
            oldest_since=summary.oldest_since,
            now=self._now(),
        )
        started = self._clock()
        try:
            client.chat_postMessage(channel=digest.channel, unfurl_links=False, **message)
        except (SlackApiError, *_TransportError) as exc:
            # Slack answered "no", or the request never left: another round sends it. A
            # request that may have arrived (a timeout) keeps its claim: once is the promise.
            if isinstance(exc, SlackApiError) or _never_sent(exc):
                with self._sessions.begin() as session:
                    queue.release_digest(session, digest)
            logger.warning("the digest of %s was not posted: %s", digest.task_name, exc)
            with self._lock:
                state.ready_at = self._clock() + _DIGEST_RETRY
            return
        with self._lock:
            state.ready_at = started + self._min_interval
            self.stats.digests += 1

    def _start_redraws(self, redraws: list[outbox.Redraw]) -> None:
        """Redraw messages in the pool, one batch at a time."""
        with self._lock:
            if self._redrawing or self._stop.is_set():
                return
            self._redrawing = True
            self._sending += 1
            pool = self._ensure_pool()
        pool.submit(self._redraw_then_free, redraws)

    def _redraw_then_free(self, redraws: list[outbox.Redraw]) -> None:
        try:
            self._redraw(redraws)
        except Exception:  # thread boundary: the next upkeep tries again
            logger.exception("redrawing prompt messages failed")
        finally:
            with self._idle:
                self._redrawing = False
                self._sending -= 1
                self._idle.notify_all()

    def _redraw(self, redraws: list[outbox.Redraw]) -> None:
        """Draw each message again from what is stored; stop at the first sign of trouble."""
        for redraw in redraws:
            client = self._client_of(redraw.team_id)
            if client is None:
                continue
            with self._sessions.begin() as session:
                message = self._build(item_view(session, redraw.item_id))
            try:
                client.chat_update(channel=redraw.channel, ts=redraw.ts, **message)
            except SlackApiError as exc:
                status = exc.response.status_code
                if status == 429 or status >= 500 or exc.response.get("error") in TOKEN_ERRORS:
                    return  # Slack is busy or refuses us: the next upkeep tries again
                # The message is gone or cannot be edited: nothing to redraw.
                logger.warning(
                    "could not redraw the prompt of item %d (%s)",
                    redraw.item_id,
                    exc.response.get("error"),
                )
            except _TransportError:
                return
            else:
                with self._lock:
                    self.stats.redraws += 1
            with self._sessions.begin() as session:
                outbox.mark_redrawn(session, redraw)

    def _send_then_free(
        self,
        channel: str,
        prompt_id: int,
        state: _ChannelState,
        blocks: tuple[outbox.Block, ...] = (),
        team_id: str | None = None,
    ) -> None:
        try:
            self._send(channel, prompt_id, state, blocks, team_id)
        except Exception:  # thread boundary: the channel must be freed whatever went wrong
            logger.exception("sending prompt %d to %s failed", prompt_id, channel)
            with self._lock:
                state.ready_at = self._clock() + _MAX_PAUSE
        finally:
            with self._idle:
                state.sending = False
                self._sending -= 1
                self._idle.notify_all()
            self._wake.set()

    def _client_of(self, team_id: str | None) -> WebClient | None:
        """The client that posts to workspace `team_id`; None when it is not installed."""
        return self._client if self._client_for is None else self._client_for(team_id)

    def _send(
        self,
        channel: str,
        prompt_id: int,
        state: _ChannelState,
        blocks: tuple[outbox.Block, ...],
        team_id: str | None = None,
    ) -> None:
        """Send one prompt; `blocks` are the blocks this send probes (lifted if it gets through)."""
        client = self._client_of(team_id)
        if client is None:  # no installation for the workspace: nothing can be posted there
            held = [b for b in blocks if b.scope == PostingScope.WORKSPACE]
            reason = held[0].reason if held else "not_installed"
            self._blocked(channel, prompt_id, state, PostingScope.WORKSPACE, reason, team_id)
            return
        attempt_at = self._now()
        with self._sessions.begin() as session:
            if self._shared_pacing:
                wait = outbox.take_turn(
                    session, channel, now=attempt_at, interval=self._min_interval
                )
                if wait is not None:  # another replica posted to the channel just now
                    with self._lock:
                        state.ready_at = self._clock() + wait
                    return
            claim = outbox.claim(
                session, prompt_id, now=attempt_at, owner=self.owner, lease=self._lease
            )
            view = None if claim is None else item_view(session, claim.item_id)
        if claim is None or view is None:  # another poster took it, or it was answered meanwhile
            return
        if claim.unconfirmed_since is not None:
            try:
                copies = self._find_copies(
                    client, channel, prompt_id, since=claim.unconfirmed_since
                )
            except (SlackApiError, *_TransportError) as exc:
                if not self._lookup_refused(exc, channel):
                    self._failed(
                        channel,
                        prompt_id,
                        state,
                        exc,
                        unconfirmed=None,
                        blocks=blocks,
                        team_id=team_id,
                    )
                    return
                copies = []
            if copies:
                self._keep_oldest(client, channel, prompt_id, claim.item_id, copies, state)
                if claim.previous is not None:
                    self._point_to(client, claim.previous, channel=channel, ts=copies[0], view=view)
                return
        message = self._build(view)
        started = self._clock()
        try:
            response = client.chat_postMessage(
                channel=channel,
                unfurl_links=False,
                unfurl_media=False,
                metadata=prompt_metadata(prompt_id, claim.item_id),
                **message,
            )
        except SlackApiError as exc:  # Slack answered: the message was not stored
            self._failed(
                channel, prompt_id, state, exc, unconfirmed=None, blocks=blocks, team_id=team_id
            )
            return
        except _TransportError as exc:  # refused, reset, timed out
            unconfirmed = None if _never_sent(exc) else attempt_at
            self._failed(
                channel,
                prompt_id,
                state,
                exc,
                unconfirmed=unconfirmed,
                blocks=blocks,
                team_id=team_id,
            )
            return
        with self._lock:
            state.failures = 0
            state.ready_at = started + self._min_interval
            self.stats.posted += 1
            self.stats.post_times.append(started)
        posted_in, ts = str(response.get("channel") or channel), str(response.get("ts"))
        with self._sessions.begin() as session:
            outbox.mark_posted(session, prompt_id, channel=posted_in, ts=ts, now=self._now())
        if blocks:
            self._lift(blocks)
        if claim.previous is not None:
            self._point_to(client, claim.previous, channel=posted_in, ts=ts, view=view)

    def _point_to(
        self,
        client: WebClient,
        previous: outbox.PostedMessage,
        *,
        channel: str,
        ts: str,
        view: ItemView,
    ) -> None:
        """A re-post is in: its old message loses its buttons and points to the new one."""
        if (previous.channel, previous.ts) == (channel, ts):
            return
        with self._lock:
            self.stats.reposts += 1
        moved_to = channel if channel != previous.channel else None
        message = builders.reposted_pointer(view.task_name, view.text, moved_to=moved_to)
        try:
            client.chat_update(channel=previous.channel, ts=previous.ts, **message)
        except (SlackApiError, *_TransportError):
            logger.warning(
                "could not turn %s in %s into a pointer to the re-post",
                previous.ts,
                previous.channel,
                exc_info=True,
            )

    def _lift(self, blocks: tuple[outbox.Block, ...]) -> None:
        """A probe got through: Slack takes the token and the channel again."""
        with self._sessions.begin() as session:
            lifted = [
                outbox.unblock_posting(session, block.scope, channel=block.channel)
                for block in blocks
            ]
        for block in lifted:
            if block is not None:
                self._log_resumed(block, _where(block.scope, block.channel))

    def _log_resumed(self, block: outbox.Block, where: str) -> None:
        logger.info(
            "posting to %s resumed (stopped since %s: %s)",
            where,
            block.since.isoformat(timespec="seconds"),
            block.reason,
        )

    def _find_copies(
        self, client: WebClient, channel: str, prompt_id: int, *, since: datetime
    ) -> list[str]:
        """The ts of every message in `channel` carrying this prompt's id, oldest first."""
        oldest = f"{since.timestamp() - _LOOKUP_MARGIN:.6f}"
        found: set[str] = set()
        cursor: str | None = None
        for _ in range(_LOOKUP_PAGES):
            response = client.conversations_history(
                channel=channel,
                oldest=oldest,
                limit=_LOOKUP_LIMIT,
                include_all_metadata=True,
                cursor=cursor,
            )
            for message in response.get("messages") or []:
                metadata = message.get("metadata") or {}
                payload = metadata.get("event_payload") or {}
                if (
                    metadata.get("event_type") == PROMPT_EVENT
                    and payload.get("prompt_id") == prompt_id
                ):
                    found.add(str(message["ts"]))
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not response.get("has_more") or cursor is None:
                break
        return sorted(found, key=lambda ts: tuple(int(part) for part in ts.split(".")))

    def _lookup_refused(self, exc: Exception, channel: str) -> bool:
        """True when Slack refuses the history read for good (a missing scope): post anyway."""
        if not isinstance(exc, SlackApiError) or exc.response.status_code in (429,):
            return False
        if exc.response.status_code >= 500:
            return False
        error = exc.response.get("error")
        if error in TOKEN_ERRORS:
            return False  # nothing can be posted either: block, as a post would

        logger.error(
            "cannot read the history of %s (%s): re-posting an unconfirmed prompt may duplicate it;"
            " grant channels:history and groups:history",
            channel,
            error,
        )
        return True

    def _keep_oldest(
        self,
        client: WebClient,
        channel: str,
        prompt_id: int,
        item_id: int,
        copies: list[str],
        state: _ChannelState,
    ) -> None:
        live, extra = copies[0], copies[1:]
        logger.info("prompt %d was in %s already (ts %s); not re-posting", prompt_id, channel, live)
        with self._lock:
            state.failures = 0
            state.ready_at = self._clock() + self._min_interval
            self.stats.found += 1
        with self._sessions.begin() as session:
            outbox.mark_found(session, prompt_id, channel=channel, ts=live, now=self._now())
        for ts in extra:
            try:
                client.chat_update(
                    channel=channel,
                    ts=ts,
                    text=DUPLICATE_TEXT,
                    blocks=[],
                    metadata=prompt_metadata(prompt_id, item_id, event_type=DUPLICATE_EVENT),
                )
            except (SlackApiError, *_TransportError):
                logger.warning(
                    "could not mark %s in %s as a duplicate of %s", ts, channel, live, exc_info=True
                )
                continue
            with self._lock:
                self.stats.duplicates += 1

    def _failed(
        self,
        channel: str,
        prompt_id: int,
        state: _ChannelState,
        exc: Exception,
        *,
        unconfirmed: datetime | None,
        blocks: tuple[outbox.Block, ...] = (),
        team_id: str | None = None,
    ) -> None:
        error = ""
        if isinstance(exc, SlackApiError) and 400 <= exc.response.status_code < 500:
            error = str(exc.response.get("error", "unknown_error"))
        elif isinstance(exc, SlackApiError) and exc.response.status_code < 400:
            error = str(exc.response.get("error", "unknown_error"))  # `"ok": false`, HTTP 200
        if error in TOKEN_ERRORS or error in CHANNEL_ERRORS:
            scope = PostingScope.TOKEN if error in TOKEN_ERRORS else PostingScope.CHANNEL
            if scope == PostingScope.TOKEN and self._client_for is not None:
                scope = PostingScope.WORKSPACE  # that workspace's token: the others post on
            self._blocked(channel, prompt_id, state, scope, error, team_id)
            return
        if error in MALFORMED_ERRORS:
            with self._lock:
                self.stats.errors += 1
                state.ready_at = self._clock() + self._min_interval
            reason = f"Slack refused the message: {error}"
            logger.error("prompt %d to %s not sendable: %s", prompt_id, channel, reason)
            with self._sessions.begin() as session:
                outbox.mark_failed(session, prompt_id, reason=reason, now=self._now())
            if blocks:  # Slack read the message, so it took the token and the channel
                self._lift(blocks)
            return
        with self._lock:
            if isinstance(exc, SlackApiError) and exc.response.status_code == 429:
                delay = float(exc.response.headers.get("Retry-After", 1) or 1)
                self.stats.rate_limited += 1
                reason = f"rate limited for {delay:g}s"
            else:
                state.failures += 1
                self.stats.errors += 1
                delay = min(_MAX_BACKOFF, 2.0 ** (state.failures - 1))
                reason = error or f"{type(exc).__name__}: {exc}"[:500]
                if unconfirmed is not None:
                    self.stats.unconfirmed += 1
                    delay = max(delay, self._settle)
            state.ready_at = self._clock() + delay
            self.stats.retry_delays.append(delay)
        logger.warning("prompt %d to %s delayed %.1fs: %s", prompt_id, channel, delay, reason)
        with self._sessions.begin() as session:
            if unconfirmed is not None:
                outbox.mark_unconfirmed(
                    session,
                    prompt_id,
                    started=unconfirmed,
                    reason=reason,
                    delay=delay,
                    now=self._now(),
                )
            else:
                outbox.mark_retry(session, prompt_id, reason=reason, delay=delay, now=self._now())

    def _blocked(
        self,
        channel: str,
        prompt_id: int,
        state: _ChannelState,
        scope: PostingScope,
        error: str,
        team_id: str | None = None,
    ) -> None:
        """Slack refused the token or the channel: the prompt waits, and so does the channel
        (or every channel, or the workspace's), until a probe gets through."""
        now = self._now()
        key = (team_id or "") if scope == PostingScope.WORKSPACE else channel
        with self._lock:
            self.stats.blocked += 1
            state.failures = 0
            state.ready_at = self._clock() + self._min_interval
        with self._sessions.begin() as session:
            outbox.mark_blocked(session, prompt_id, reason=error, now=now)
            new = outbox.block_posting(session, scope, channel=key, reason=error, now=now)
            # Slack got as far as the channel, so it took the token.
            lifted: list[outbox.Block | None] = []
            if scope == PostingScope.CHANNEL:
                lifted.append(outbox.unblock_posting(session, PostingScope.TOKEN))
                if team_id is not None:
                    lifted.append(
                        outbox.unblock_posting(session, PostingScope.WORKSPACE, channel=team_id)
                    )
        for block in lifted:
            if block is not None:
                self._log_resumed(block, _where(block.scope, block.channel))
        if new:
            where = {
                PostingScope.TOKEN: "any channel",
                PostingScope.WORKSPACE: f"workspace {key}",
            }.get(scope, channel)
            logger.error(
                "posting to %s stopped: Slack says %s; %s. Prompts wait (none is lost); "
                "posting resumes by itself once a probe gets through (every 30 s to 15 min)",
                where,
                error,
                outbox.POSTING_HINTS.get(error, "check the app's permissions in Slack"),
            )
        else:
            logger.debug("prompt %d to %s still blocked: %s", prompt_id, channel, error)
