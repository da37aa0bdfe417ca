"""Outbound webhooks: events written with each result, signed like Slack, delivered at least once
in order per item, with backoff; the claim logic on SQLite and PostgreSQL; `hitl task webhook`.

Deliveries go over real HTTP to a receiver on 127.0.0.1 that checks every signature, and that
can answer 500 or be down (connection refused) and come back. Time is a fake clock.
"""

import contextlib
import hashlib
import hmac
import http.server
import itertools
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import select, update

from bot import tasks as task_ops
from bot import webhooks
from bot.answers import get_item, import_examples, record_answer
from bot.errors import BadInputError
from bot.ingest import IncomingItem
from bot.queries import item_details
from bot.registry import store_model
from bot.routing import submit
from bot.services import Services
from bot.states import DeliveryState, ModelStatus
from bot.storage.schema import AuditLog, Item, WebhookDelivery, utcnow
from bot.trust import set_spot_check_rate, set_votes_required
from model import train
from tests.bot.conftest import Hitl
from tests.conftest import TINY

LABELS = ["positive", "negative"]


# --- the receiver --------------------------------------------------------------------------------


@dataclass
class Received:
    """One request the receiver got."""

    delivery_id: str
    timestamp: int
    body: dict[str, Any]
    signed: bool  # the signature matched the body and timestamp under the receiver's secret
    answered: int


@dataclass
class Receiver:
    """A webhook receiver: verifies signatures as the README shows, records every request,
    answers `status`; `down()` closes its port (connection refused), `up()` opens it again."""

    secret: str = ""
    status: int = 200
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    server: http.server.ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/hitl?source=test"

    def up(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                stamp = self.headers["X-Hitl-Request-Timestamp"]
                base = f"v0:{stamp}:".encode() + raw
                expected = (
                    "v0=" + hmac.new(receiver.secret.encode(), base, hashlib.sha256).hexdigest()
                )
                signed = hmac.compare_digest(expected, self.headers["X-Hitl-Signature"])
                assert self.path == "/hooks/hitl?source=test"
                assert self.headers["Content-Type"] == "application/json"
                receiver.requests.append(
                    Received(
                        self.headers["X-Hitl-Delivery"],
                        int(stamp),
                        json.loads(raw),
                        signed,
                        receiver.status,
                    )
                )
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def accepted(self) -> list[Received]:
        """The requests it took (2xx), in arrival order."""
        return [r for r in self.requests if 200 <= r.answered < 300]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    made.up()
    yield made
    made.down()


class Clock:
    """Fake time for the worker: it moves only when a test moves it."""

    def __init__(self) -> None:
        self.at = utcnow()

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


class NoJitter(random.Random):
    """Every wait at its full length, so that schedules are exact."""

    def random(self) -> float:
        return 0.0


def make_worker(services: Services, clock: Clock, **kwargs: Any) -> webhooks.WebhookWorker:
    return webhooks.WebhookWorker(
        services.sessions, now=clock.now, wait=lambda _: None, rng=NoJitter(), **kwargs
    )


def drain(worker: webhooks.WebhookWorker) -> int:
    """Run rounds until nothing more is due now; returns how many sends were made."""
    sent = 0
    while started := worker.run_once():
        sent += started
        assert worker.wait_for_sends(10)
    return sent


def hooked_task(services: Services, receiver: Receiver, *, name: str = "t") -> None:
    """Task `name` with a webhook to `receiver`, which learns the secret."""
    with services.sessions.begin() as session:
        task = task_ops.create_task(session, name, LABELS, threshold=0.01, channel="C0REVIEW")
        secret = webhooks.set_webhook(session, task, receiver.url, actor="test")
    assert secret is not None
    receiver.secret = secret


def import_rows(
    services: Services, rows: Sequence[tuple[str, str, str]], *, task: str = "t"
) -> None:
    """(external id, text, label) rows through `hitl import`'s path."""
    with services.sessions.begin() as session:
        import_examples(
            session,
            task_ops.get_task(session, task),
            [IncomingItem(text, label=label, external_id=key) for key, text, label in rows],
            max_chars=10_000,
        )


def submit_texts(
    services: Services, texts: Sequence[tuple[str, str]], *, rng: random.Random | None = None
) -> list[int]:
    """(external id, text) items submitted to task `t`; returns their item ids."""
    with services.sessions.begin() as session:
        routed = submit(
            session,
            task_ops.get_task(session, "t"),
            [IncomingItem(text, external_id=key) for key, text in texts],
            registry=services.registry,
            max_chars=10_000,
            rng=rng,
        )
    return [r.item_id for r in routed]


def answer(services: Services, item_id: int, user: str, label: str) -> None:
    with services.sessions.begin() as session:
        record_answer(session, get_item(session, item_id, lock=True), user, label=label)


def with_model(services: Services) -> None:
    """Task `t` gets an active model of TINY; at threshold 0.01 it answers everything."""
    classifier = train([t for t, _ in TINY], [lab for _, lab in TINY], labels=LABELS)
    with services.sessions.begin() as session:
        store_model(
            session,
            task_ops.get_task(session, "t"),
            classifier,
            registry=services.registry,
            status=ModelStatus.ACTIVE,
            train_size=len(TINY),
            metrics={"auto_labels": LABELS},
        )


def deliveries(services: Services) -> list[WebhookDelivery]:
    with services.sessions.begin() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


# --- pure parts ----------------------------------------------------------------------------------


def test_the_signature_is_slacks_scheme_so_slacks_own_verifier_accepts_it() -> None:
    body = json.dumps({"event": "item.resolved", "final_label": "é"}).encode()
    headers = webhooks.signed_headers("k" * 64, body, delivery_id="d1", at=utcnow())
    verifier = SignatureVerifier("k" * 64)
    stamp, signature = headers["X-Hitl-Request-Timestamp"], headers["X-Hitl-Signature"]
    assert verifier.is_valid(body, stamp, signature)
    assert not verifier.is_valid(body + b" ", stamp, signature)
    assert not SignatureVerifier("x" * 64).is_valid(body, stamp, signature)
    assert headers["X-Hitl-Delivery"] == "d1"
    assert headers["Content-Type"] == "application/json"


def test_retries_wait_10_s_doubling_up_to_an_hour_shortened_by_at_most_half() -> None:
    full = [webhooks.retry_delay(n, rng=NoJitter()) for n in range(1, 12)]
    assert full == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
    assert webhooks.retry_delay(10_000, rng=NoJitter()) == 3600
    rng = random.Random(7)
    for attempts in range(1, 20):
        top = min(10 * 2 ** (attempts - 1), 3600)
        assert top / 2 <= webhooks.retry_delay(attempts, rng=rng) <= top


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "must start with https://"),
        ("example.com/hook", "must start with https://"),
        ("https://", "has no host"),
        ("https://user:pw@example.com/h", "must not hold a user or password"),
        ("https://example.com:99999/h", "not a valid URL"),
        ("https://exa mple.com/h", "spaces or non-ASCII"),
        ("https://example.com/ü", "spaces or non-ASCII"),
        ("https://example.com/h#x", "#fragment"),
        ("https://example.com/" + "a" * 2000, "over 2000 characters"),
        ("  ", "empty"),
    ],
)
def test_bad_urls_are_refused_with_what_to_do(url: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        webhooks.validate_webhook_url(url)


def test_good_urls_are_kept_as_given() -> None:
    for url in ("https://example.com/h?a=1", "http://127.0.0.1:8080/", "https://[::1]:9/x"):
        assert webhooks.validate_webhook_url(f" {url} ") == url


# --- events written with each result -------------------------------------------------------------


def test_no_webhook_no_events(sqlite_services: Services) -> None:
    with sqlite_services.sessions.begin() as session:
        task_ops.create_task(session, "t", LABELS, threshold=0.8)
    import_rows(sqlite_services, [("a", "fine", "positive")])
    assert deliveries(sqlite_services) == []


def test_every_way_an_item_resolves_writes_an_event_with_its_source(
    sqlite_services: Services, receiver: Receiver
) -> None:
    """The model, a person, a person changing their answer, a spot check's correction, a vote,
    a reopening and an import: one event each, numbered per item, as the item was then."""
    services = sqlite_services
    hooked_task(services, receiver)
    import_rows(services, [("imp-1", "the food was wonderful", "positive")])
    (cold,) = submit_texts(services, [("cold-1", "no model yet")])  # to a person: no event
    assert len(deliveries(services)) == 1
    answer(services, cold, "U0ANA", "negative")
    answer(services, cold, "U0ANA", "positive")  # a change of mind: a correction
    with_model(services)
    with services.sessions.begin() as session:
        set_spot_check_rate(session, task_ops.get_task(session, "t"), 1.0, actor="test")
    (auto,) = submit_texts(services, [("auto-1", "what a lovely evening")])
    answer(services, auto, "U0BEA", "negative")  # the spot check corrects the model
    with services.sessions.begin() as session:
        set_votes_required(session, task_ops.get_task(session, "t"), 2, actor="test")
        set_spot_check_rate(session, task_ops.get_task(session, "t"), 0.0, actor="test")
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "t")
        task.threshold = 1.0  # nothing automatic: the next item goes to two people
    (voted,) = submit_texts(services, [("vote-1", "rude staff")])
    answer(services, voted, "U0ANA", "negative")  # one vote: nothing yet
    answer(services, voted, "U0BEA", "negative")  # two agree: resolved
    answer(services, voted, "U0BEA", "positive")  # the agreement is gone: reopened

    bodies = [json.loads(d.body) for d in deliveries(services)]
    summary = [(b["id"], b["sequence"], b["event"], b["final_label"], b["source"]) for b in bodies]
    auto_label = bodies[3]["predicted_label"]
    assert summary == [
        ("imp-1", 1, "item.resolved", "positive", "import"),
        ("cold-1", 1, "item.resolved", "negative", "person"),
        ("cold-1", 2, "item.resolved", "positive", "person"),
        ("auto-1", 1, "item.resolved", auto_label, "model"),
        ("auto-1", 2, "item.resolved", "negative", "spot_check"),
        ("vote-1", 1, "item.resolved", "negative", "person"),
        ("vote-1", 2, "item.reopened", None, None),
    ]
    assert bodies[1]["answered_by"] == "U0ANA" and bodies[1]["label_source"] == "person"
    model_event = bodies[3]
    assert model_event["label_source"] == "model" and model_event["answered_by"] is None
    assert 0 < model_event["confidence"] <= 1 and model_event["model_version"] == 1
    assert bodies[6]["status"] == "waiting_for_review"
    assert all(b["task"] == "t" for b in bodies)
    assert len({b["delivery_id"] for b in bodies}) == len(bodies)
    assert all(json.loads(d.body)["delivery_id"] == d.delivery_id for d in deliveries(services))


def test_an_event_has_the_items_api_shape_without_the_history(
    sqlite_services: Services, receiver: Receiver
) -> None:
    services = sqlite_services
    hooked_task(services, receiver)
    (item_id,) = submit_texts(services, [("x-1", "terrible, cold and late")])
    answer(services, item_id, "U0ANA", "negative")
    (event,) = [json.loads(d.body) for d in deliveries(services)]
    with services.sessions.begin() as session:
        shown = item_details(session, task_ops.get_task(session, "t"), "x-1")
    del shown["answers"]
    envelope = {"event", "delivery_id", "sequence", "task", "source"}
    assert set(event) == set(shown) | envelope
    assert {key: event[key] for key in shown} == shown


def test_a_retrain_resolving_queued_items_writes_model_events(
    sqlite_services: Services, receiver: Receiver
) -> None:
    from bot.training import retrain_task

    services = sqlite_services
    hooked_task(services, receiver)
    import_rows(services, [(f"seed-{k}", text, label) for k, (text, label) in enumerate(TINY * 2)])
    submit_texts(services, [("q-1", "the staff were lovely"), ("q-2", "awful, cold food")])
    before = len(deliveries(services))
    retrain_task(
        services.sessions, "t", registry=services.registry, settings=services.settings, force=True
    )
    events = [json.loads(d.body) for d in deliveries(services)[before:]]
    assert sorted(e["id"] for e in events) == ["q-1", "q-2"]
    assert all(e["source"] == "model" and e["route"] == "review" for e in events)


def test_events_are_written_on_postgresql_too(services: Services, receiver: Receiver) -> None:
    hooked_task(services, receiver)
    import_rows(services, [("a", "fine", "positive"), ("b", "bad", "negative")])
    (item_id,) = submit_texts(services, [("c", "meh")])
    answer(services, item_id, "U0ANA", "negative")
    answer(services, item_id, "U0ANA", "positive")
    rows = deliveries(services)
    assert [(json.loads(r.body)["id"], r.sequence) for r in rows] == [
        ("a", 1),
        ("b", 1),
        ("c", 1),
        ("c", 2),
    ]


# --- delivery ------------------------------------------------------------------------------------


def test_events_are_delivered_signed_in_order_per_item(
    sqlite_services: Services, receiver: Receiver
) -> None:
    services = sqlite_services
    hooked_task(services, receiver)
    import_rows(services, [("a", "fine", "positive"), ("b", "bad", "negative")])
    (item_id,) = submit_texts(services, [("c", "meh")])
    for label in ("negative", "positive", "negative"):
        answer(services, item_id, "U0ANA", label)
    clock = Clock()
    worker = make_worker(services, clock, parallel=4)
    assert drain(worker) == 5
    got = receiver.accepted
    assert all(r.signed for r in got)
    assert all(r.timestamp == int(clock.at.timestamp()) for r in got)
    assert [(r.body["id"], r.body["final_label"]) for r in got if r.body["id"] == "c"] == [
        ("c", "negative"),
        ("c", "positive"),
        ("c", "negative"),
    ]
    assert sorted(r.body["id"] for r in got) == ["a", "b", "c", "c", "c"]
    rows = deliveries(services)
    assert {r.status for r in rows} == {DeliveryState.DELIVERED}
    assert all(r.attempts == 1 and r.delivered_at == clock.at for r in rows)
    assert sorted(r.delivery_id for r in got) == sorted(r.delivery_id for r in rows)


def test_a_receiver_that_was_down_gets_everything_again_with_the_same_keys(
    sqlite_services: Services, receiver: Receiver
) -> None:
    """Refused connections and 500s are retried after the backoff with the same delivery id;
    an item's second event waits for its first."""
    services = sqlite_services
    hooked_task(services, receiver)
    (item_id,) = submit_texts(services, [("c", "meh")])
    answer(services, item_id, "U0ANA", "negative")
    answer(services, item_id, "U0ANA", "positive")
    clock = Clock()
    worker = make_worker(services, clock)

    receiver.status = 500
    assert drain(worker) == 1  # the first event fails; the second waits behind it
    first_try = receiver.requests[-1]
    assert first_try.signed and first_try.body["sequence"] == 1
    assert drain(worker) == 0  # not due before its backoff
    clock.advance(10)
    receiver.down()
    assert drain(worker) == 1  # connection refused
    (row, waiting) = deliveries(services)
    assert (row.status, row.attempts, waiting.attempts) == ("pending", 2, 0)
    assert row.last_error is not None and "ConnectionRefusedError" in row.last_error
    assert row.next_attempt_at == clock.at + timedelta(seconds=20)

    receiver.up()
    receiver.status = 200
    clock.advance(20)
    assert drain(worker) == 2
    got = receiver.accepted
    assert [r.body["sequence"] for r in got] == [1, 2]
    assert got[0].delivery_id == first_try.delivery_id  # the idempotency key survives retries
    assert all(r.signed for r in receiver.requests)
    assert [r.status for r in deliveries(services)] == ["delivered", "delivered"]


def test_the_backoff_schedule_and_giving_up_after_a_day(
    sqlite_services: Services, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    services = sqlite_services
    hooked_task(services, receiver)
    import_rows(services, [("a", "fine", "positive")])
    clock = Clock()
    start = clock.at
    tries: list[datetime] = []

    def refuse(url: str, body: bytes, headers: Any) -> str:
        tries.append(clock.at)
        return "HTTP 503"

    worker = make_worker(services, clock, send=refuse)
    with caplog.at_level(logging.INFO, logger="bot.webhooks"):
        while True:
            drain(worker)
            (row,) = deliveries(services)
            if row.status != DeliveryState.PENDING:
                break
            clock.at = row.next_attempt_at
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(tries)]
    assert gaps[:11] == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
    assert set(gaps[9:]) == {3600}
    assert row.status == DeliveryState.FAILED and row.attempts == len(tries)
    assert tries[-1] - start <= timedelta(days=1) < tries[-1] - start + timedelta(hours=1)
    assert row.last_error == "HTTP 503"
    gave_up = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(gave_up) == 1 and "gave up on item" in gave_up[0].getMessage()
    assert receiver.secret not in caplog.text


def test_a_failed_event_no_longer_holds_back_the_next(
    sqlite_services: Services, receiver: Receiver
) -> None:
    services = sqlite_services
    hooked_task(services, receiver)
    (item_id,) = submit_texts(services, [("c", "meh")])
    answer(services, item_id, "U0ANA", "negative")
    answer(services, item_id, "U0ANA", "positive")
    with services.sessions.begin() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.sequence == 1)
            .values(status=DeliveryState.FAILED)
        )
    assert drain(make_worker(services, Clock())) == 1
    assert [r.body["sequence"] for r in receiver.accepted] == [2]


def test_removing_the_webhook_cancels_what_is_pending(
    sqlite_services: Services, receiver: Receiver
) -> None:
    services = sqlite_services
    hooked_task(services, receiver)
    import_rows(services, [("a", "fine", "positive")])
    with services.sessions.begin() as session:
        assert webhooks.remove_webhook(session, task_ops.get_task(session, "t"), actor="x") == 1
    assert drain(make_worker(services, Clock())) == 0
    assert [r.status for r in deliveries(services)] == ["cancelled"]
    import_rows(services, [("b", "bad", "negative")])
    assert len(deliveries(services)) == 1


def test_a_rotated_secret_signs_the_retries(sqlite_services: Services, receiver: Receiver) -> None:
    services = sqlite_services
    hooked_task(services, receiver)
    import_rows(services, [("a", "fine", "positive")])
    with services.sessions.begin() as session:
        receiver.secret = webhooks.rotate_webhook_secret(
            session, task_ops.get_task(session, "t"), actor="x"
        )
    drain(make_worker(services, Clock()))
    assert [r.signed for r in receiver.requests] == [True]


def test_the_worker_thread_delivers_and_stops(
    sqlite_services: Services, receiver: Receiver
) -> None:
    services = sqlite_services
    hooked_task(services, receiver)
    import_rows(services, [("a", "fine", "positive")])
    worker = webhooks.WebhookWorker(services.sessions, idle=0.05)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not receiver.accepted and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.stop()
    assert len(receiver.accepted) == 1 and receiver.accepted[0].signed
    assert worker.delivered == 1


def test_a_stopping_worker_gives_back_the_events_it_still_sends(
    sqlite_services: Services, receiver: Receiver
) -> None:
    services = sqlite_services
    hooked_task(services, receiver)
    import_rows(services, [("a", "fine", "positive")])
    release = threading.Event()

    def stuck(url: str, body: bytes, headers: Any) -> None:
        release.wait(5)

    clock = Clock()
    worker = make_worker(services, clock, send=stuck)
    assert worker.run_once() == 1
    worker.stop(timeout=0.1)
    (row,) = deliveries(services)
    assert (row.status, row.claimed_by, row.lease_until) == ("pending", None, None)
    release.set()
    assert worker.wait_for_sends(5)
    assert deliveries(services)[0].status == "pending"  # its late outcome no longer counts
    assert drain(make_worker(services, clock)) == 1
    assert [r.body["id"] for r in receiver.accepted] == ["a"]


# --- a receiver cannot hold the worker up --------------------------------------------------------


@pytest.fixture
def raw_server() -> Iterator[tuple[socket.socket, int]]:
    """A listening socket whose peers the test answers by hand (or not at all)."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server, server.getsockname()[1]
    server.close()


def serve_once(server: socket.socket, reply: Any) -> threading.Thread:
    def run() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)
            with contextlib.suppress(OSError):  # the client hung up, as it should
                reply(connection)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_huge_answer_is_not_read(raw_server: tuple[socket.socket, int]) -> None:
    server, port = raw_server

    def huge(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 500 Oops\r\nContent-Length: 300000000\r\n\r\n")
        chunk = b"x" * 65536
        for _ in range(4600):  # 300 MB, if anyone read it
            connection.sendall(chunk)

    thread = serve_once(server, huge)
    started = time.monotonic()
    error = webhooks.post_json(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=5, deadline=5)
    assert time.monotonic() - started < 2
    assert error is not None and error.startswith("HTTP 500: xxxx") and len(error) <= 300
    thread.join(5)


def test_a_silent_receiver_times_out(raw_server: tuple[socket.socket, int]) -> None:
    server, port = raw_server
    release = threading.Event()
    thread = serve_once(server, lambda _: release.wait(5))
    started = time.monotonic()
    error = webhooks.post_json(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=0.3, deadline=5)
    assert time.monotonic() - started < 2
    assert error is not None and "timed out" in error
    release.set()
    thread.join(5)


def test_a_trickling_receiver_is_cut_at_the_deadline(raw_server: tuple[socket.socket, int]) -> None:
    server, port = raw_server
    release = threading.Event()

    def trickle(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\n")
        while not release.wait(0.05):
            connection.sendall(b"X-Slow: 1\r\n")

    thread = serve_once(server, trickle)
    started = time.monotonic()
    error = webhooks.post_json(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=0.3, deadline=0.5)
    assert time.monotonic() - started < 2
    assert error == "no answer within 0.5 s"
    release.set()
    thread.join(5)


def test_redirects_are_not_followed(raw_server: tuple[socket.socket, int]) -> None:
    server, port = raw_server

    def moved(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n")

    thread = serve_once(server, moved)
    assert webhooks.post_json(f"http://127.0.0.1:{port}/", b"{}", {}) == "HTTP 302"
    thread.join(5)


# --- claims: SQLite and PostgreSQL ---------------------------------------------------------------


def two_events_and_another_item(services: Services, receiver: Receiver) -> None:
    hooked_task(services, receiver)
    (item_id,) = submit_texts(services, [("c", "meh")])
    answer(services, item_id, "U0ANA", "negative")
    answer(services, item_id, "U0ANA", "positive")
    import_rows(services, [("d", "fine", "positive")])


def test_a_claim_holds_rows_until_its_lease_ends_and_keeps_order_per_item(
    services: Services, receiver: Receiver
) -> None:
    two_events_and_another_item(services, receiver)
    now = utcnow()
    lease = timedelta(seconds=60)
    with services.sessions.begin() as session:
        first = webhooks.claim_due(session, now=now, owner="A", limit=10, lease=lease)
    # The item's second event waits for its first; the other item's goes at once.
    assert sorted((j.item_id, j.sequence) for j in first) == [(1, 1), (2, 1)]
    with services.sessions.begin() as session:
        assert webhooks.claim_due(session, now=now, owner="B", limit=10, lease=lease) == []
    later = now + lease
    with services.sessions.begin() as session:  # A died: its lease ended, B takes over
        taken = webhooks.claim_due(session, now=later, owner="B", limit=10, lease=lease)
        assert sorted(j.row_id for j in taken) == sorted(j.row_id for j in first)
    with services.sessions.begin() as session:  # A's late answer no longer counts
        assert not webhooks.mark_delivered(session, first[0], owner="A", now=later)
        job = next(j for j in taken if j.item_id == 1)
        assert webhooks.mark_delivered(session, job, owner="B", now=later)
    with services.sessions.begin() as session:
        after = webhooks.claim_due(session, now=later, owner="C", limit=10, lease=lease)
    assert [(j.item_id, j.sequence) for j in after] == [(1, 2)]


def test_concurrent_claims_on_postgresql_skip_each_others_rows(
    services: Services, receiver: Receiver
) -> None:
    if services.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serves one process: its transactions do not overlap")
    hooked_task(services, receiver)
    import_rows(services, [(f"k{n}", f"text {n}", "positive") for n in range(6)])
    now = utcnow()
    with services.sessions.begin() as first, services.sessions.begin() as second:
        a = webhooks.claim_due(first, now=now, owner="A", limit=4)
        # A has not committed: its rows are locked, and B takes the others without waiting.
        b = webhooks.claim_due(second, now=now, owner="B", limit=4)
    assert len(a) == 4 and len(b) == 2
    assert not {j.row_id for j in a} & {j.row_id for j in b}


# --- the command ---------------------------------------------------------------------------------


def test_hitl_task_webhook_sets_shows_rotates_and_removes(hitl: Hitl) -> None:
    assert hitl("task", "create", "t", "--labels", "a,b")[0] == 0
    code, out, _ = hitl("task", "webhook", "t", "https://example.com/h", "--json")
    assert code == 0
    shown = json.loads(out)
    assert set(shown) == {"task", "url", "secret", "deliveries", "last_error"}
    assert shown["url"] == "https://example.com/h" and len(shown["secret"]) == 64
    secret = shown["secret"]
    code, out, _ = hitl("task", "webhook", "t")
    assert code == 0 and out.splitlines()[0] == "https://example.com/h"
    assert "0 pending, 0 delivered, 0 failed" in out and secret not in out
    code, out, _ = hitl("task", "webhook", "t", "https://example.com/new", "--json")
    assert json.loads(out)["secret"] is None  # a new URL keeps the secret
    code, out, _ = hitl("task", "webhook", "t", "--rotate-secret")
    assert code == 0 and "signing secret (shown once): " in out and secret not in out
    code, out, _ = hitl("task", "show", "t", "--json")
    assert json.loads(out)["webhook"] == "https://example.com/new"
    code, out, _ = hitl("task", "webhook", "t", "none")
    assert code == 0 and out.strip() == "t: webhook https://example.com/new → none"
    assert json.loads(hitl("task", "webhook", "t", "--json")[1])["url"] is None


def test_the_audit_log_records_webhook_changes_but_never_the_secret(hitl: Hitl) -> None:
    hitl("task", "create", "t", "--labels", "a,b")
    secret = json.loads(hitl("task", "webhook", "t", "https://example.com/h", "--json")[1])[
        "secret"
    ]
    hitl("task", "webhook", "t", "none")
    from bot import cli

    with cli.services().sessions.begin() as session:
        entries = session.scalars(select(AuditLog).order_by(AuditLog.id)).all()
        trail = [(e.field, e.old_value, e.new_value) for e in entries if "webhook" in e.field]
    assert trail == [
        ("webhook_url", "None", "'https://example.com/h'"),
        ("webhook_secret", "None", "'(new secret)'"),
        ("webhook_url", "'https://example.com/h'", "None"),
        ("webhook_secret", "'(secret)'", "None"),
    ]
    assert all(secret not in str(value) for row in trail for value in row)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["t", "ftp://example.com/h"], "must start with https://"),
        (["t", "https://"], "has no host"),
        (["nope", "https://example.com/h"], "no task named 'nope'"),
        (["t", "--rotate-secret"], "has no webhook"),
        (["t", "none", "--rotate-secret"], "not both"),
    ],
)
def test_hitl_task_webhook_errors_are_one_line_exit_2_and_change_nothing(
    hitl: Hitl, args: list[str], message: str
) -> None:
    hitl("task", "create", "t", "--labels", "a,b")
    code, out, err = hitl("task", "webhook", *args)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1
    assert json.loads(hitl("task", "webhook", "t", "--json")[1])["url"] is None
    from bot import cli

    with cli.services().sessions.begin() as session:
        assert session.scalar(select(Item.id)) is None
        fields = [e.field for e in session.scalars(select(AuditLog))]
    assert fields == ["task"]
