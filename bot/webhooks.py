"""Outbound webhooks: each item's result POSTed to its task's URL, signed, at least once.

A task with a webhook (`hitl task webhook NAME URL`) gets one event per change of an item's
result: `item.resolved` when the model, a person, a spot check's correction, a vote or an import
gives it its final label (again on each later correction), `item.reopened` when the answers that
decided it no longer agree. The event is written to the `webhook_delivery` outbox in the
transaction that changes the item, so no result is lost when the process dies; its body is the
item as `GET /api/tasks/{task}/items/{id}` shows it, without the answer history, as it was then.

The worker (`WebhookWorker`, started by `hitl serve`) POSTs due events as JSON, signed the way
Slack signs its requests: `X-Hitl-Signature: v0=hex(HMAC-SHA256(secret, "v0:{ts}:{body}"))`
with the timestamp in `X-Hitl-Request-Timestamp`, so a receiver can refuse old replays. Any 2xx
delivers; anything else (3xx included: redirects are not followed) is retried after 10 s,
doubling up to an hour, each wait shortened at random by up to half so that a receiver coming
back is not hit by every event at once; after a day the event is `failed` and logged. Every
attempt of an event carries the same `X-Hitl-Delivery` id, so receivers can drop repeats.

An item's events go out in order: event n+1 waits while event n is pending. Several replicas
may run workers on one PostgreSQL database: a claim takes rows `FOR UPDATE SKIP LOCKED` and
holds them by a lease, and a dead worker's rows are taken over when the lease ends (at least
once, never twice at the same time). A receiver cannot hold a worker up: every request ends
after `deadline` seconds, however slowly it answers, and at most a few KB of the answer is read.
"""

import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import os
import random
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, aliased, sessionmaker

from bot.errors import BadInputError
from bot.queries import latest_prediction
from bot.states import AnswerSource, DeliveryState, LabelSource, Route
from bot.storage.bulk import insert_rows
from bot.storage.schema import Answer, Item, Task, WebhookDelivery, utcnow
from bot.tasks import audit

logger = logging.getLogger(__name__)

RESOLVED = "item.resolved"
REOPENED = "item.reopened"
TIMESTAMP_HEADER = "X-Hitl-Request-Timestamp"
SIGNATURE_HEADER = "X-Hitl-Signature"
DELIVERY_HEADER = "X-Hitl-Delivery"
SIGNATURE_VERSION = "v0"
# The first retry after 10 s, then twice as long each time up to an hour; after a day, give up.
FIRST_RETRY = 10.0
MAX_RETRY = 3600.0
GIVE_UP_AFTER = timedelta(days=1)
# A receiver gets 10 s for each step (connect, send, first byte) and 30 s in all.
TIMEOUT = 10.0
DEADLINE = 30.0
# Longer than any request, so a live worker never loses the rows it is sending.
LEASE = timedelta(minutes=2)
# Enough of an answer to say why it was refused; the rest is never read.
MAX_RESPONSE_BYTES = 4096
MAX_URL_CHARS = 2000
_ERROR_CHARS = 300
_LOOKUP_CHUNK = 500

# POST one body to one URL with these headers: None when it was taken, else what went wrong.
Sender = Callable[[str, bytes, Mapping[str, str]], str | None]


# --- configuration -------------------------------------------------------------------------------


def validate_webhook_url(raw: str) -> str:
    """An http(s) URL with a host, ASCII, with no user or password in it."""
    url = raw.strip()
    example = "give one like https://example.com/hooks/hitl"
    if not url:
        raise BadInputError(f"the webhook URL is empty; {example}")
    shown = url[:80]
    if len(url) > MAX_URL_CHARS:
        raise BadInputError(f"webhook URL {shown!r}… is over {MAX_URL_CHARS} characters")
    if not url.isascii() or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise BadInputError(
            f"webhook URL {shown!r} has spaces or non-ASCII characters; percent-encode them"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # parsing the port is what checks it
    except ValueError:
        raise BadInputError(f"webhook URL {shown!r} is not a valid URL; {example}") from None
    if parts.scheme not in ("http", "https"):
        raise BadInputError(f"webhook URL {shown!r} must start with https:// (or http://)")
    if not parts.hostname:
        raise BadInputError(f"webhook URL {shown!r} has no host; {example}")
    if parts.username is not None or parts.password is not None:
        raise BadInputError(
            f"webhook URL {parts.hostname!r}… must not hold a user or password; receivers "
            "check the signature instead"
        )
    if parts.fragment:
        raise BadInputError(f"webhook URL {shown!r} must not have a #fragment")
    return url


def set_webhook(
    session: Session, task: Task, url: str, *, actor: str, rotate_secret: bool = False
) -> str | None:
    """Send `task`'s results to `url`, audited; returns the new signing secret, if one was made.

    A task gets a secret with its first webhook; changing the URL keeps it (receivers keep
    working) unless `rotate_secret`. Events still pending go to the new URL.
    """
    new = validate_webhook_url(url)
    if new != task.webhook_url:
        audit(session, task, "webhook_url", task.webhook_url, new, actor=actor)
        task.webhook_url = new
    if task.webhook_secret is None or rotate_secret:
        return _new_secret(session, task, actor=actor)
    return None


def rotate_webhook_secret(session: Session, task: Task, *, actor: str) -> str:
    """Give `task`'s webhook a new signing secret, audited; returns it (pending events use it)."""
    if task.webhook_url is None:
        raise BadInputError(
            f"task {task.name!r} has no webhook; set one with `hitl task webhook {task.name} URL`"
        )
    return _new_secret(session, task, actor=actor)


def _new_secret(session: Session, task: Task, *, actor: str) -> str:
    secret = secrets.token_hex(32)
    # The audit log says that the secret changed, never what it is.
    audit(
        session,
        task,
        "webhook_secret",
        None if task.webhook_secret is None else "(secret)",
        "(new secret)",
        actor=actor,
    )
    task.webhook_secret = secret
    return secret


def remove_webhook(session: Session, task: Task, *, actor: str) -> int:
    """Stop sending `task`'s results, audited; returns how many pending events were cancelled."""
    if task.webhook_url is None:
        return 0
    cancelled = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
        update(WebhookDelivery)
        .where(WebhookDelivery.task_id == task.id, WebhookDelivery.status == DeliveryState.PENDING)
        .values(status=DeliveryState.CANCELLED, claimed_by=None, lease_until=None)
    ).rowcount
    audit(session, task, "webhook_url", task.webhook_url, None, actor=actor)
    audit(session, task, "webhook_secret", "(secret)", None, actor=actor)
    task.webhook_url = None
    task.webhook_secret = None
    return int(cancelled)


def webhook_state(session: Session, task: Task) -> dict[str, Any]:
    """`{"url", "deliveries": {state: count}, "last_error"}` of a task (no secret)."""
    counts = dict.fromkeys((s.value for s in DeliveryState), 0)
    rows = session.execute(
        select(WebhookDelivery.status, func.count())
        .where(WebhookDelivery.task_id == task.id)
        .group_by(WebhookDelivery.status)
    )
    counts.update({str(status): int(count) for status, count in rows})
    last_error = session.scalar(
        select(WebhookDelivery.last_error)
        .where(
            WebhookDelivery.task_id == task.id,
            WebhookDelivery.status.in_([DeliveryState.PENDING, DeliveryState.FAILED]),
            WebhookDelivery.last_error.is_not(None),
        )
        .order_by(WebhookDelivery.id.desc())
        .limit(1)
    )
    return {"url": task.webhook_url, "deliveries": counts, "last_error": last_error}


# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """An item's result as its webhook event reports it.

    `source` says who gave the label, finer than `label_source`: `model`, `person`,
    `spot_check` (a person correcting or confirming an automatic answer) or `import`.
    """

    item_id: int
    external_id: str | None
    route: str | None
    final_label: str | None
    label_source: str | None
    source: str | None
    resolved_at: datetime | None
    predicted_label: str | None = None
    confidence: float | None = None
    model_version: int | None = None
    answered_by: str | None = None
    answered_at: datetime | None = None

    @classmethod
    def by_model(
        cls,
        item_id: int,
        external_id: str | None,
        *,
        route: str,
        label: str | None,
        confidence: float,
        model_version: int | None,
        at: datetime,
    ) -> "Resolution":
        """An item the model resolved, sure enough of `label`."""
        return cls(
            item_id=item_id,
            external_id=external_id,
            route=route,
            final_label=label,
            label_source=LabelSource.MODEL,
            source=LabelSource.MODEL,
            resolved_at=at,
            predicted_label=label,
            confidence=confidence,
            model_version=model_version,
        )

    @property
    def event(self) -> str:
        """`item.resolved`, or `item.reopened` once its label is gone."""
        return RESOLVED if self.label_source is not None else REOPENED

    def as_dict(self) -> dict[str, Any]:
        """The item part of an event: the keys of `GET /items/{id}` but `answers`, and `source`."""
        if self.label_source is not None:
            status = "resolved"
        else:
            status = "waiting_for_review" if self.route == Route.REVIEW else "unrouted"
        return {
            "item_id": self.item_id,
            "id": self.external_id,
            "status": status,
            "route": self.route,
            "final_label": self.final_label,
            "label_source": self.label_source,
            "source": self.source,
            "answered_by": self.answered_by,
            "answered_at": self.answered_at.isoformat() if self.answered_at else None,
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "predicted_label": self.predicted_label,
            "confidence": self.confidence,
            "model_version": self.model_version,
        }


def source_of(answer_source: str) -> str:
    """The event `source` of a person's deciding answer (stored with `AnswerSource`)."""
    if answer_source == AnswerSource.IMPORT:
        return "import"
    if answer_source == AnswerSource.SPOT_CHECK:
        return "spot_check"
    return "person"


def event_body(task_name: str, resolution: Resolution, *, delivery_id: str, sequence: int) -> str:
    """The JSON an event is POSTed as: event, delivery id, the item's sequence, task, item."""
    body = {
        "event": resolution.event,
        "delivery_id": delivery_id,
        "sequence": sequence,
        "task": task_name,
        **resolution.as_dict(),
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def record_resolutions(
    session: Session, task: Task, resolutions: Sequence[Resolution], *, now: datetime
) -> int:
    """Queue an event per result for `task`'s webhook (none without one); returns how many.

    Call it in the transaction that changed the items, after the change is flushed: on
    PostgreSQL the item's row lock then orders two transactions' events of one item.
    """
    if task.webhook_url is None or not resolutions:
        return 0
    ids = [r.item_id for r in resolutions]
    last: dict[int, int] = {}
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        rows = session.execute(
            select(WebhookDelivery.item_id, func.max(WebhookDelivery.sequence))
            .where(WebhookDelivery.item_id.in_(ids[start : start + _LOOKUP_CHUNK]))
            .group_by(WebhookDelivery.item_id)
        )
        last.update({int(item_id): int(top) for item_id, top in rows})
    rows_out: list[dict[str, Any]] = []
    for resolution in resolutions:
        sequence = last.get(resolution.item_id, 0) + 1
        last[resolution.item_id] = sequence
        delivery_id = uuid.uuid4().hex
        rows_out.append(
            {
                "delivery_id": delivery_id,
                "task_id": task.id,
                "item_id": resolution.item_id,
                "sequence": sequence,
                "event": resolution.event,
                "body": event_body(
                    task.name, resolution, delivery_id=delivery_id, sequence=sequence
                ),
                "status": DeliveryState.PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
        )
    insert_rows(session, WebhookDelivery, rows_out)
    return len(rows_out)


def record_change(session: Session, item: Item, *, decided: Answer | None, now: datetime) -> None:
    """Queue an event for an item whose final label or its source just changed (the item as it
    is now; `decided` is the person's answer behind a person-given label)."""
    task = item.task
    if task.webhook_url is None:
        return
    session.flush()  # the item's update takes its row lock before its events are numbered
    prediction, version = latest_prediction(session, item.id)
    person = decided if item.final_source == LabelSource.PERSON else None
    # "model" for the model's label, None once reopened.
    source = source_of(person.source) if person is not None else item.final_source
    resolution = Resolution(
        item_id=item.id,
        external_id=item.external_id,
        route=item.route,
        final_label=item.final_label,
        label_source=item.final_source,
        source=source,
        resolved_at=item.resolved_at,
        predicted_label=prediction.label if prediction else None,
        confidence=prediction.confidence if prediction else None,
        model_version=version,
        answered_by=person.user_id if person is not None else None,
        answered_at=person.created_at if person is not None else None,
    )
    record_resolutions(session, task, [resolution], now=now)


# --- signing and sending -------------------------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`v0=` and the hex HMAC-SHA256 of `v0:{timestamp}:{body}` (Slack's scheme)."""
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signed_headers(secret: str, body: bytes, *, delivery_id: str, at: datetime) -> dict[str, str]:
    """The headers of one attempt: content type, delivery id, timestamp and signature."""
    timestamp = str(int(at.timestamp()))
    return {
        "Content-Type": "application/json",
        "User-Agent": "hitl-bot-webhook",
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def post_json(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float = TIMEOUT,
    deadline: float = DEADLINE,
) -> str | None:
    """POST `body` to `url`: None when the receiver answered 2xx, else what went wrong.

    http.client rather than urllib.request: no redirects followed (a POST turned into a GET
    elsewhere is no delivery), no proxy from the environment, and the socket at hand, so a
    watchdog can cut a receiver that trickles its answer past `deadline`.
    """
    parts = urlsplit(url)
    connection_type = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_type(parts.hostname or "", parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    cut = threading.Event()
    watchdog = threading.Timer(deadline, _cut, args=(connection, cut))
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request("POST", target, body=body, headers=dict(headers))
        response = connection.getresponse()
        head = response.read(MAX_RESPONSE_BYTES) if not 200 <= response.status < 300 else b""
    except (OSError, http.client.HTTPException) as exc:
        if cut.is_set():
            return f"no answer within {deadline:g} s"
        return f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
    finally:
        watchdog.cancel()
        connection.close()
    if cut.is_set():  # an answer cut short may look whole: headers ended by the cut
        return f"no answer within {deadline:g} s"
    if 200 <= response.status < 300:
        return None
    text = head.decode("utf-8", "replace").strip()
    return f"HTTP {response.status}: {text}"[:_ERROR_CHARS] if text else f"HTTP {response.status}"


def _cut(connection: http.client.HTTPConnection, cut: threading.Event) -> None:
    """End a request past its deadline: its blocked read returns at once."""
    cut.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # closed already: the request ended by itself
            sock.shutdown(socket.SHUT_RDWR)


def retry_delay(attempts: int, *, rng: random.Random) -> float:
    """Seconds to wait after `attempts` failed attempts: 10 s doubling up to an hour, each
    shortened at random by up to half (receivers coming back are not hit all at once)."""
    full = min(FIRST_RETRY * 2.0 ** min(max(attempts - 1, 0), 30), MAX_RETRY)
    return full * (1.0 - rng.random() / 2)


# --- the outbox ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """An event claimed for sending, with where it goes and the key that signs it."""

    row_id: int
    delivery_id: str
    task_name: str
    item_id: int
    sequence: int
    url: str
    secret: str
    body: str
    attempts: int
    created_at: datetime
    lease_until: datetime


def claim_due(
    session: Session, *, now: datetime, owner: str, limit: int, lease: timedelta = LEASE
) -> list[Job]:
    """Take up to `limit` due events for `owner` until `now + lease`, oldest due first.

    An event whose item has an earlier event still pending waits for it. On PostgreSQL rows
    another worker is claiming are skipped, not waited for; SQLite (one process, whose
    transaction holds the write lock) ignores the clause.
    """
    earlier = aliased(WebhookDelivery)
    waits = (
        select(earlier.id)
        .where(
            earlier.item_id == WebhookDelivery.item_id,
            earlier.sequence < WebhookDelivery.sequence,
            earlier.status == DeliveryState.PENDING,
        )
        .exists()
    )
    ids = list(
        session.scalars(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.status == DeliveryState.PENDING,
                WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until <= now),
                ~waits,
            )
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        return []
    until = now + lease
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(ids))
        .values(claimed_by=owner, lease_until=until)
    )
    rows = session.execute(
        select(WebhookDelivery, Task.name, Task.webhook_url, Task.webhook_secret)
        .join(Task, Task.id == WebhookDelivery.task_id)
        .where(WebhookDelivery.id.in_(ids))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
    ).all()
    jobs: list[Job] = []
    orphans: list[int] = []
    for row, task_name, url, secret in rows:
        if url is None or secret is None:  # the webhook was removed as this was queued
            orphans.append(row.id)
            continue
        jobs.append(
            Job(
                row_id=row.id,
                delivery_id=row.delivery_id,
                task_name=task_name,
                item_id=row.item_id,
                sequence=row.sequence,
                url=url,
                secret=secret,
                body=row.body,
                attempts=row.attempts,
                created_at=row.created_at,
                lease_until=until,
            )
        )
    if orphans:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(orphans))
            .values(status=DeliveryState.CANCELLED, claimed_by=None, lease_until=None)
        )
    return jobs


def release_claims(session: Session, owner: str) -> int:
    """Give back the pending events `owner` holds (it is stopping); returns how many."""
    released = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
        update(WebhookDelivery)
        .where(
            WebhookDelivery.claimed_by == owner,
            WebhookDelivery.status == DeliveryState.PENDING,
        )
        .values(claimed_by=None, lease_until=None)
    ).rowcount
    return int(released)


def _held(job: Job, owner: str) -> Any:
    """Still `owner`'s claim: a worker whose lease ran out leaves the row to its new holder."""
    return (
        (WebhookDelivery.id == job.row_id)
        & (WebhookDelivery.claimed_by == owner)
        & (WebhookDelivery.lease_until == job.lease_until)
        & (WebhookDelivery.status == DeliveryState.PENDING)
    )


def mark_delivered(session: Session, job: Job, *, owner: str, now: datetime) -> bool:
    """The receiver took the event; False when the claim had passed to another worker."""
    done = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
        update(WebhookDelivery)
        .where(_held(job, owner))
        .values(
            status=DeliveryState.DELIVERED,
            attempts=WebhookDelivery.attempts + 1,
            delivered_at=now,
            last_error=None,
            claimed_by=None,
            lease_until=None,
        )
    ).rowcount
    return bool(done)


def mark_failed_attempt(
    session: Session, job: Job, *, owner: str, error: str, now: datetime, rng: random.Random
) -> DeliveryState:
    """The attempt failed: pending again after `retry_delay`, or `failed` once a retry would
    come more than `GIVE_UP_AFTER` after the event; returns which."""
    attempts = job.attempts + 1
    delay = retry_delay(attempts, rng=rng)
    next_at = now + timedelta(seconds=delay)
    state = (
        DeliveryState.FAILED if next_at > job.created_at + GIVE_UP_AFTER else DeliveryState.PENDING
    )
    session.execute(
        update(WebhookDelivery)
        .where(_held(job, owner))
        .values(
            status=state,
            attempts=WebhookDelivery.attempts + 1,
            next_attempt_at=next_at,
            last_error=error[:_ERROR_CHARS],
            claimed_by=None,
            lease_until=None,
        )
    )
    return state


# --- the worker ----------------------------------------------------------------------------------


def worker_name() -> str:
    """This worker's name in the claims it holds: host, process, and a random part."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class WebhookWorker:
    """Sends due webhook events in a thread, up to `parallel` at a time, in order per item.

    Time is injected: `now` (the outbox's timestamps and the signature's) and `wait` (the
    pause between rounds; by default a wait that a finished send or `stop()` cuts short). A
    test steps the worker with `run_once()` and `wait_for_sends()` and moves `now` on itself.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        send: Sender | None = None,
        now: Callable[[], datetime] = utcnow,
        wait: Callable[[float], object] | None = None,
        rng: random.Random | None = None,
        parallel: int = 4,
        idle: float = 2.0,
        lease: timedelta = LEASE,
        owner: str | None = None,
    ) -> None:
        self._sessions = sessions
        self._send: Sender = send or post_json
        self._now = now
        self._rng = rng or random.Random()  # jitter, not a secret
        self._parallel = parallel
        self._idle = idle
        self._lease = lease
        self.owner = owner or worker_name()
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._sending = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._wait = wait or self._wait_for_wake
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed_attempts = 0

    def start(self) -> None:
        """Run the worker in a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hitl-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; sends still running after `timeout` are left to their lease."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if not self.wait_for_sends(max(0.0, deadline - time.monotonic())):
            # Sends still running: their events go to the next worker now, not after the lease
            # (a receiver may get one twice, which at least once allows).
            try:
                with self._sessions.begin() as session:
                    release_claims(session, self.owner)
            except SQLAlchemyError:
                logger.warning("could not give back the webhook events in flight; their lease will")
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def wait_for_sends(self, timeout: float | None = None) -> bool:
        """Block until no send is in flight; False if some still are after `timeout` seconds."""
        with self._done:
            return self._done.wait_for(lambda: self._sending == 0, timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # thread boundary: the worker must outlive a database hiccup
                logger.exception("webhook round failed; retrying")
                self._stop.wait(self._idle)

    def _wait_for_wake(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def step(self) -> int:
        """One round, then a pause (none when more may be due at once); returns sends started."""
        started = self.run_once()
        with self._lock:
            full = self._sending >= self._parallel
        self._wait(self._idle if full or started == 0 else 0.0)
        return started

    def run_once(self) -> int:
        """Claim due events for the free send slots and start sending them; returns how many."""
        with self._lock:
            free = self._parallel - self._sending
        if free <= 0 or self._stop.is_set():
            return 0
        with self._sessions.begin() as session:
            jobs = claim_due(
                session, now=self._now(), owner=self.owner, limit=free, lease=self._lease
            )
        if not jobs:
            return 0
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self._parallel, thread_name_prefix="hitl-webhook-send"
                )
            pool = self._pool
            self._sending += len(jobs)
        for job in jobs:
            pool.submit(self._deliver_then_free, job)
        return len(jobs)

    def _deliver_then_free(self, job: Job) -> None:
        try:
            self._deliver(job)
        except Exception:  # thread boundary: the lease hands the event to a later round
            logger.exception("webhook delivery %s of %s failed", job.delivery_id, job.task_name)
        finally:
            with self._done:
                self._sending -= 1
                self._done.notify_all()
            self._wake.set()

    def _deliver(self, job: Job) -> None:
        body = job.body.encode()
        headers = signed_headers(job.secret, body, delivery_id=job.delivery_id, at=self._now())
        error = self._send(job.url, body, headers)
        now = self._now()
        with self._sessions.begin() as session:
            if error is None:
                mark_delivered(session, job, owner=self.owner, now=now)
            else:
                state = mark_failed_attempt(
                    session, job, owner=self.owner, error=error, now=now, rng=self._rng
                )
        with self._lock:
            if error is None:
                self.delivered += 1
                return
            self.failed_attempts += 1
        if state == DeliveryState.FAILED:
            logger.warning(
                "webhook of task %s gave up on item %d event %d (delivery %s) after %d "
                "attempts: %s",
                job.task_name,
                job.item_id,
                job.sequence,
                job.delivery_id,
                job.attempts + 1,
                error,
            )
        else:
            logger.info(
                "webhook of task %s: item %d event %d not delivered (%s); will retry",
                job.task_name,
                job.item_id,
                job.sequence,
                error,
            )
