"""The outbox poster: sends review prompts to Slack at Slack's pace, and never drops one.

Each channel gets at most one message per `min_interval` seconds (Slack allows about one per
second per channel). A 429 pauses that channel for its Retry-After; server and connection
errors back off exponentially. Prompts of one channel go out in the order they were queued:
while the oldest cannot be sent, the ones behind it wait. Delivery is at least once: a process
killed between Slack's reply and our write re-sends that one prompt after a restart.

Time is injected, as stamina does for retries: `clock` (seconds, for pacing and backoff), `now`
(the outbox's timestamps) and `wait` (the pause between rounds). In production the pause is a
wait on an event that new items and `stop()` cut short; a test passes a fake clock whose `wait`
just moves time on, and steps the poster with `step()`: a 429 storm and a minute-long outage
then take milliseconds.
"""

import http.client
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy.orm import Session, sessionmaker

from bot import outbox
from bot.review import ItemView, item_view
from bot.storage.schema import utcnow

logger = logging.getLogger(__name__)

# Errors a person can fix (invite the bot, fix the channel): keep the prompt, retry slowly.
_FIXABLE = {"channel_not_found", "not_in_channel", "is_archived", "channel_is_archived"}
_FIXABLE_RETRY = 300.0
_MAX_BACKOFF = 60.0
# With a channel waiting out a delay, look at the outbox at least this often anyway: prompts
# queued by another process (`hitl submit`) do not wake this one.
_MAX_PAUSE = 1.0

MessageBuilder = Callable[[ItemView], dict[str, Any]]


@dataclass
class _ChannelState:
    ready_at: float = 0.0
    failures: int = 0


@dataclass
class PosterStats:
    """Counters for tests and the latency benchmark; times and delays are on the poster's clock."""

    posted: int = 0
    rate_limited: int = 0
    errors: int = 0
    post_times: list[float] = field(default_factory=list)
    retry_delays: list[float] = field(default_factory=list)


class Poster:
    """Sends due outbox rows with `chat.postMessage`, one channel at a time per slot."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: WebClient,
        build_message: MessageBuilder,
        *,
        min_interval: float = 1.0,
        tick: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
        wait: Callable[[float], object] | None = None,
    ) -> None:
        self._sessions = sessions
        self._client = client
        self._build = build_message
        self._min_interval = min_interval
        self._tick = tick
        self._clock = clock
        self._now = now
        self._channels: dict[str, _ChannelState] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._wait = wait or self._wait_for_wake
        self._thread: threading.Thread | None = None
        self.stats = PosterStats()

    def start(self) -> None:
        """Run the poster in a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hitl-poster", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread after the send in progress."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Look at the outbox now (called after new review items are stored)."""
        self._wake.set()

    def _loop(self) -> None:
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
        """One round, then a pause until a waiting channel may send again; returns posts made."""
        posted = self.run_once()
        self._wait(self.pause())
        return posted

    def pause(self) -> float:
        """How long to wait before the next round: `tick`, longer while every channel waits."""
        now = self._clock()
        waits = [state.ready_at - now for state in self._channels.values() if state.ready_at > now]
        if not waits:
            return self._tick
        return min(max(min(waits), self._tick), _MAX_PAUSE)

    def run_once(self) -> int:
        """Send at most one due prompt per ready channel; returns how many were posted."""
        now = self._now()
        with self._sessions.begin() as session:
            outbox.release_stale_claims(session, now=now)
            # Only the oldest pending prompt of a channel may go: order within a channel is kept.
            heads = outbox.due_heads(session)
        posted = 0
        for head in heads:
            state = self._channels.setdefault(head.channel, _ChannelState())
            if head.due_at > now or self._clock() < state.ready_at or self._stop.is_set():
                continue
            posted += self._send(head.channel, head.prompt_id, state)
        return posted

    def _claim(self, prompt_id: int) -> ItemView | None:
        with self._sessions.begin() as session:
            item_id = outbox.claim(session, prompt_id, now=self._now())
            return None if item_id is None else item_view(session, item_id)

    def _send(self, channel: str, prompt_id: int, state: _ChannelState) -> int:
        view = self._claim(prompt_id)
        if view is None:  # another poster took it, or it was answered meanwhile
            return 0
        message = self._build(view)
        started = self._clock()
        try:
            response = self._client.chat_postMessage(
                channel=channel, unfurl_links=False, unfurl_media=False, **message
            )
        except SlackApiError as exc:
            return self._failed(channel, prompt_id, state, exc)
        except (OSError, http.client.HTTPException) as exc:  # connection refused, reset, timeout
            return self._failed(channel, prompt_id, state, exc)
        state.failures = 0
        state.ready_at = started + self._min_interval
        with self._sessions.begin() as session:
            outbox.mark_posted(
                session,
                prompt_id,
                channel=str(response.get("channel") or channel),
                ts=str(response.get("ts")),
                now=self._now(),
            )
        self.stats.posted += 1
        self.stats.post_times.append(started)
        return 1

    def _failed(self, channel: str, prompt_id: int, state: _ChannelState, exc: Exception) -> int:
        now = self._clock()
        fatal = False
        if isinstance(exc, SlackApiError) and exc.response.status_code == 429:
            delay = float(exc.response.headers.get("Retry-After", 1) or 1)
            self.stats.rate_limited += 1
            reason = f"rate limited for {delay:g}s"
        elif isinstance(exc, SlackApiError) and exc.response.status_code < 500:
            error = str(exc.response.get("error", "unknown_error"))
            self.stats.errors += 1
            if error in _FIXABLE:
                delay, reason = _FIXABLE_RETRY, f"{error}: invite the bot or fix the task channel"
            else:
                delay, reason, fatal = 0.0, f"Slack refused the message: {error}", True
        else:
            state.failures += 1
            self.stats.errors += 1
            delay = min(_MAX_BACKOFF, 2.0 ** (state.failures - 1))
            reason = f"{type(exc).__name__}: {exc}"[:500]
        state.ready_at = now + delay
        with self._sessions.begin() as session:
            if fatal:
                logger.error("prompt %d to %s not sendable: %s", prompt_id, channel, reason)
                outbox.mark_failed(session, prompt_id, reason=reason, now=self._now())
            else:
                self.stats.retry_delays.append(delay)
                logger.warning(
                    "prompt %d to %s delayed %.1fs: %s", prompt_id, channel, delay, reason
                )
                outbox.mark_retry(session, prompt_id, reason=reason, delay=delay, now=self._now())
        return 0
