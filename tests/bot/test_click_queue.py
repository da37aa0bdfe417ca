"""Clicks acknowledged as soon as they are verified and queued (`bot.server.ClickQueue`): the
answer does not wait for a listener thread; anything that is not a well-formed click still goes
through Bolt in the request; a full queue falls back to that too."""

import json
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr
from slack_bolt import Ack, App
from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient

from bot.server import ClickQueue, build_http_app, is_click, read_slack_body
from bot.services import Services
from bot.settings import Settings
from tests.bot.conftest import SECRET, Client, serving, signed_headers

FORM = "application/x-www-form-urlencoded"


def click_body(**changes: Any) -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": "U0CLICK01"},
        "actions": [{"action_id": "hitl_label:0", "value": "1:0", "type": "button"}],
        "container": {"channel_id": "C0Q0000001", "message_ts": "1.000001"},
        **changes,
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (click_body(), True),
        (click_body(actions=[]), False),
        (click_body(actions=[{"value": "no action id"}]), False),
        (click_body(user="U0NOTADICT"), False),
        (click_body(type="view_submission"), False),
        (urlencode({"command": "/hitl", "text": "stats"}).encode(), False),
        (b'{"type": "event_callback"}', False),
        (b"payload=%7Bnot json", False),
    ],
)
def test_only_a_well_formed_click_is_a_click(body: bytes, expected: bool) -> None:
    content_type = "application/json" if body.startswith(b"{") else FORM
    payload, _ = read_slack_body(body, content_type)
    assert (payload is not None and is_click(payload)) is expected


class Listener:
    """A click listener that acks only when the test lets it (a busy listener pool)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.acked = threading.Event()

    def __call__(self, ack: Ack) -> None:
        self.started.set()
        self.release.wait(10)
        ack()
        self.acked.set()


@pytest.fixture
def queued_app(sqlite_services: Services) -> Iterator[tuple[Client, Listener, ClickQueue]]:
    settings = Settings(
        _env_file=None,
        database_url=sqlite_services.settings.database_url,
        slack_signing_secret=SecretStr(SECRET),
    )
    services = Services(
        settings=settings,
        engine=sqlite_services.engine,
        sessions=sqlite_services.sessions,
        registry=sqlite_services.registry,
    )
    bolt = App(
        signing_secret=SECRET,
        client=WebClient(base_url="http://127.0.0.1:9/"),
        # No Slack here: the request's workspace is known without asking auth.test.
        authorize=lambda **_: AuthorizeResult(
            enterprise_id=None, team_id="T0TEST001", bot_token="xoxb-test", bot_user_id="U0BOT0001"
        ),
    )
    listener = Listener()
    bolt.action(re.compile(".*"))(listener)
    clicks = ClickQueue(workers=2)
    with serving(build_http_app(services, bolt_app=bolt, clicks=clicks)) as port:
        yield Client(port), listener, clicks
    listener.release.set()
    clicks.stop(10)


def test_a_click_is_answered_before_its_listener_acks(
    queued_app: tuple[Client, Listener, ClickQueue],
) -> None:
    client, listener, clicks = queued_app
    body = click_body()
    reply = client.request("POST", "/slack/events", content=body, headers=signed_headers(body))
    assert reply.status_code == 200
    # Answered while the listener has not acked (in Bolt's own path the answer waits for it).
    assert listener.started.wait(10) and not listener.acked.is_set()
    listener.release.set()
    assert listener.acked.wait(10) and clicks.stop(10)


def test_anything_but_a_click_still_goes_through_bolt_in_the_request(
    queued_app: tuple[Client, Listener, ClickQueue],
) -> None:
    client, listener, _ = queued_app
    body = click_body(actions=[])  # signed, but no action: Bolt cannot handle it
    reply = client.request("POST", "/slack/events", content=body, headers=signed_headers(body))
    assert reply.status_code == 400
    assert not listener.started.is_set()


def test_a_forged_click_is_never_queued(queued_app: tuple[Client, Listener, ClickQueue]) -> None:
    client, listener, clicks = queued_app
    body = click_body()
    forged = {**signed_headers(body), "X-Slack-Signature": "v0=" + "0" * 64}
    reply = client.request("POST", "/slack/events", content=body, headers=forged)
    assert reply.status_code == 401
    assert clicks.stop(10) and not listener.started.is_set()


def test_a_full_queue_takes_no_more_and_stop_waits_for_the_queued() -> None:
    queue = ClickQueue(workers=1, limit=2)
    release = threading.Event()
    ran: list[int] = []

    def first() -> None:
        release.wait(10)
        ran.append(1)

    assert queue.take(first)
    assert queue.take(lambda: ran.append(2))
    assert not queue.take(lambda: ran.append(3))  # full: the caller handles it itself
    assert not queue.stop(0.01)  # the first is still running
    assert not queue.take(lambda: ran.append(4))  # stopped: takes nothing more
    release.set()
    assert queue.stop(10) and ran == [1, 2]
