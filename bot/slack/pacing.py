"""Pacing Web API calls by Slack's rate limit tiers, a click's work before background work.

Slack limits each Web API method per app and workspace by tier (docs: "Rate limits"): Tier 2
about 20 calls a minute, Tier 3 50, Tier 4 100; chat.postMessage about one message a second per
channel. Going over gets HTTP 429 with `Retry-After`. After a retrain the bot edits every
re-scored prompt with chat.update (Tier 3), the same budget the edits of clicks draw on: unpaced,
the burst of edits would be refused and a person's click would wait behind it.

`Pacer` keeps a token bucket per method (per method and channel for chat.postMessage) filling at
a share of the tier's rate. A call waits for a token; waiting calls go by priority, interactive
(a click's chat.update or chat.postEphemeral) before background (re-score edits, reports), and
background calls leave part of the burst free, so a click never waits behind a backlog. A 429
pauses the method for its `Retry-After` and the call is tried again: it is delayed, never lost.

`ObservedWebClient` reports every call and its error (for `/metrics`); `PacedWebClient` is one
whose every call goes through a `Pacer`. The priority is a
context variable: interactive unless the caller runs inside `with background():`.
"""

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse


class Priority(IntEnum):
    """Who waits for a call: a person (first) or nobody in particular (after)."""

    INTERACTIVE = 0
    BACKGROUND = 1


# Requests a minute per tier, and each method's tier, from Slack's method reference pages.
TIER_PER_MINUTE: Mapping[int, float] = {1: 1.0, 2: 20.0, 3: 50.0, 4: 100.0}
METHOD_TIERS: Mapping[str, int] = {
    "auth.test": 4,
    "chat.delete": 3,
    "chat.getPermalink": 4,
    "chat.postEphemeral": 4,
    "chat.update": 3,
    "conversations.history": 3,
    "conversations.info": 3,
    "conversations.join": 3,
    "conversations.replies": 3,
    "files.completeUploadExternal": 4,
    "files.getUploadURLExternal": 4,
    "reactions.add": 3,
    "users.info": 4,
    "views.open": 4,
    "views.publish": 4,
    "views.update": 4,
}
DEFAULT_TIER = 2  # "most methods allow at least 20 requests per minute"
# chat.postMessage is "special": about one message a second per channel.
POST_MESSAGE = "chat.postMessage"
POST_MESSAGE_PER_MINUTE = 60.0

# Slack's own figures are approximate: stay a little under them.
DEFAULT_SHARE = 0.9
# The part of a bucket background calls leave for interactive ones.
DEFAULT_RESERVE = 0.2
DEFAULT_RETRY_AFTER = 1.0
_EPSILON = 1e-9
_MIN_SLEEP = 1e-3

_priority: ContextVar[Priority] = ContextVar("hitl_slack_priority", default=Priority.INTERACTIVE)


@contextlib.contextmanager
def background() -> Iterator[None]:
    """Mark the Web API calls made inside the block as background work."""
    token = _priority.set(Priority.BACKGROUND)
    try:
        yield
    finally:
        _priority.reset(token)


def current_priority() -> Priority:
    """The priority calls made here get: BACKGROUND inside `background()`, else INTERACTIVE."""
    return _priority.get()


def per_minute(method: str) -> float:
    """Slack's documented calls a minute for `method` (per channel for chat.postMessage)."""
    if method == POST_MESSAGE:
        return POST_MESSAGE_PER_MINUTE
    return TIER_PER_MINUTE[METHOD_TIERS.get(method, DEFAULT_TIER)]


@dataclass
class _Lane:
    """One rate limit: a token bucket, a pause after a 429, and the calls waiting on it."""

    rate: float  # tokens a second
    capacity: float
    reserve: float  # tokens background calls leave in the bucket
    tokens: float
    updated: float
    paused_until: float = 0.0
    waiting: list[tuple[int, int]] = field(default_factory=list)  # heap of (priority, order)


class Pacer:
    """Token buckets per Web API method, shared by every thread that calls Slack.

    `scale` multiplies Slack's rates (a stand-in Slack may be faster than the real one);
    `share` is the part of them used. `clock` and `sleep` are injectable for tests.
    """

    def __init__(
        self,
        *,
        scale: float = 1.0,
        share: float = DEFAULT_SHARE,
        reserve: float = DEFAULT_RESERVE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if scale <= 0 or not 0 < share <= 1 or not 0 <= reserve < 1:
            raise ValueError("scale must be positive, share in (0, 1] and reserve in [0, 1)")
        self.scale = scale
        self.share = share
        self.reserve = reserve
        self._clock = clock
        self._sleep = sleep
        self._changed = threading.Condition()
        self._lanes: dict[tuple[str, str | None], _Lane] = {}
        self._order = itertools.count()

    def rate(self, method: str) -> float:
        """Calls a minute this pacer lets `method` make (per channel for chat.postMessage)."""
        return per_minute(method) * self.scale * self.share

    def acquire(
        self, method: str, *, priority: Priority | None = None, channel: str | None = None
    ) -> None:
        """Wait until `method` may be called; callers of higher priority go first."""
        rank = current_priority() if priority is None else priority
        with self._changed:
            lane = self._lane(method, channel)
            ticket = (int(rank), next(self._order))
            heapq.heappush(lane.waiting, ticket)
            try:
                while True:
                    now = self._clock()
                    self._refill(lane, now)
                    if lane.waiting[0] != ticket:
                        self._changed.wait()  # someone ahead; woken when they leave
                        continue
                    needed = 1.0 + (lane.reserve if rank == Priority.BACKGROUND else 0.0)
                    if now >= lane.paused_until and lane.tokens >= needed - _EPSILON:
                        lane.tokens -= 1.0
                        return
                    delay = max(lane.paused_until - now, (needed - lane.tokens) / lane.rate)
                    delay = max(delay, _MIN_SLEEP)  # float rounding must not spin at zero
                    self._changed.release()
                    try:
                        self._sleep(delay)
                    finally:
                        self._changed.acquire()
            finally:
                lane.waiting.remove(ticket)
                heapq.heapify(lane.waiting)
                self._changed.notify_all()

    def pause(self, method: str, seconds: float, *, channel: str | None = None) -> None:
        """Slack answered 429: no call to `method` for `seconds`, and the bucket starts empty."""
        with self._changed:
            lane = self._lane(method, channel)
            now = self._clock()
            lane.paused_until = max(lane.paused_until, now + seconds)
            lane.tokens = 0.0
            lane.updated = max(now, lane.paused_until)
            self._changed.notify_all()

    def waiting(self, method: str, *, channel: str | None = None) -> int:
        """How many calls to `method` wait for a token now."""
        with self._changed:
            lane = self._lanes.get(_key(method, channel))
            return len(lane.waiting) if lane is not None else 0

    def _lane(self, method: str, channel: str | None) -> _Lane:
        key = _key(method, channel)
        lane = self._lanes.get(key)
        if lane is None:
            per_second = self.rate(method) / 60.0
            # A minute's calls as the burst, as Slack's tiers allow; one message at a time for
            # chat.postMessage, whose "short bursts" have no documented size.
            capacity = 1.0 if method == POST_MESSAGE else max(1.0, per_second * 60.0)
            reserve = min(self.reserve * capacity, capacity - 1.0)
            lane = _Lane(per_second, capacity, reserve, capacity, self._clock())
            self._lanes[key] = lane
        return lane

    @staticmethod
    def _refill(lane: _Lane, now: float) -> None:
        if now > lane.updated:
            lane.tokens = min(lane.capacity, lane.tokens + (now - lane.updated) * lane.rate)
            lane.updated = now


def _key(method: str, channel: str | None) -> tuple[str, str | None]:
    return (method, channel if method == POST_MESSAGE else None)


def retry_after(error: SlackApiError) -> float | None:
    """The seconds a 429 asks to wait, or None when the error is not a rate limit."""
    response = error.response
    if response.status_code != 429:
        return None
    headers = response.headers or {}
    value = headers.get("Retry-After", headers.get("retry-after"))
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return max(0.0, float(value)) if value is not None else DEFAULT_RETRY_AFTER
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER


# Told of every Web API call sent: the method, and Slack's error (or `connection`) when it failed.
CallObserver = Callable[[str, str | None], None]


class ObservedWebClient(WebClient):
    """A WebClient that tells `observer` of every call it sends and how it ended."""

    def __init__(self, *args: Any, observer: CallObserver | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.observer = observer

    def api_call(
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> SlackResponse:
        """Send the call; the observer hears of it whatever the outcome."""
        error: str | None = None
        try:
            return super().api_call(
                api_method,
                http_verb=http_verb,
                files=files,
                data=data,
                params=params,
                json=json,
                headers=headers,
                auth=auth,
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error") or exc.response.status_code)
            raise
        except OSError:  # urllib's connection errors
            error = "connection"
            raise
        finally:
            if self.observer is not None:
                self.observer(api_method, error)


class PacedWebClient(ObservedWebClient):
    """A WebClient that waits for its method's turn before every call and retries 429s.

    Methods in `unpaced` go straight out (a caller that paces them itself).
    """

    def __init__(
        self, *args: Any, pacer: Pacer, unpaced: Collection[str] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.pacer = pacer
        self.unpaced = frozenset(unpaced)

    def api_call(
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> SlackResponse:
        """Call `api_method` once its bucket allows; after a 429 wait and call it again."""

        def call() -> SlackResponse:
            return super(PacedWebClient, self).api_call(
                api_method,
                http_verb=http_verb,
                files=files,
                data=data,
                params=params,
                json=json,
                headers=headers,
                auth=auth,
            )

        if api_method in self.unpaced:
            return call()
        channel = _channel_of(api_method, json, data, params)
        priority = current_priority()
        while True:
            self.pacer.acquire(api_method, priority=priority, channel=channel)
            try:
                return call()
            except SlackApiError as error:
                wait = retry_after(error)
                if wait is None:
                    raise
                self.pacer.pause(api_method, wait, channel=channel)


def _channel_of(method: str, *sources: dict[str, Any] | None) -> str | None:
    if method != POST_MESSAGE:
        return None
    for source in sources:
        if source and source.get("channel") is not None:
            return str(source["channel"])
    return None
