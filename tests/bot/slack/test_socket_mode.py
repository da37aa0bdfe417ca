"""Socket Mode end to end: the bot's builtin slack_sdk client against a websocket stand-in.

Envelopes are pushed over a real websocket and must be acknowledged by envelope_id within
Slack's 3 seconds; what they ask for (a command's answer, a stored click, a Home tab) must happen.
"""

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot import tasks as task_ops
from bot.answers import import_examples
from bot.demo.simulator import SlackUser
from bot.demo.standin import SlackStandIn
from bot.ingest import IncomingItem
from bot.runtime import Runtime, SlackSetupError, build_runtime, free_port
from bot.services import Services, build_services
from bot.settings import Settings
from bot.slack import ids
from bot.storage.schema import Answer
from bot.training import retrain_task
from tests.bot.slack.conftest import CHANNEL, Bot, wait_for
from tests.bot.slack.socket_mode_standin import SLACK_ACK_TIMEOUT, SocketConnection, SocketModeSlack
from tests.conftest import TINY

JsonDict = dict[str, Any]

USER = "U0SOCK001"
API_TOKEN = "api-secret"


@dataclass
class SocketBot:
    """A bot in Socket Mode, the stand-in behind it, and its first websocket connection."""

    runtime: Runtime
    slack: SlackStandIn
    socket_mode: SocketModeSlack
    services: Services
    api: httpx.Client
    threads_before: set[threading.Thread]
    stopped: bool = field(default=False)

    @property
    def connection(self) -> SocketConnection:
        """The connection the bot opened at start."""
        return self.socket_mode.wait_for_connection(1)

    def stop(self) -> None:
        """Stop the bot once."""
        if not self.stopped:
            self.stopped = True
            self.runtime.stop()


def threads_left(before: set[threading.Thread], *, timeout: float = 5.0) -> list[str]:
    """Names of threads not in `before` still alive after waiting up to `timeout` for them.

    The stand-ins' own request threads end a moment after their answer is sent; a thread of
    the bot that was not joined stays, and is named here.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = [t.name for t in threading.enumerate() if t not in before]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def settings_for(database_url: str, api_url: str, *, app_token: str) -> Settings:
    """Settings of a Socket Mode bot: no signing secret, Web API calls to `api_url`."""
    return Settings(
        _env_file=None,
        database_url=database_url,
        slack_bot_token="xoxb-test",
        slack_app_token=app_token,
        slack_api_url=api_url,
        api_token=API_TOKEN,
        digest_hour=None,  # the channel shows prompts only, whatever the hour
    )


@pytest.fixture
def socket_bot(tmp_path: Path) -> Iterator[SocketBot]:
    """A trained bot connected over Socket Mode; stopped afterwards."""
    with (
        SlackStandIn(bot_token="xoxb-test", rate_limit_per_channel=50.0) as slack,
        SocketModeSlack(slack) as socket_mode,
    ):
        settings = settings_for(
            f"sqlite:///{tmp_path / 'bot.db'}", socket_mode.api_url, app_token=socket_mode.app_token
        )
        services = build_services(settings)
        with services.sessions.begin() as session:
            task = task_ops.create_task(
                session, "reviews", ["positive", "negative"], channel=CHANNEL, threshold=0.99
            )
            seed = [IncomingItem(text, label=label) for text, label in TINY]
            import_examples(session, task, seed, max_chars=settings.max_text_chars)
        retrain_task(services.sessions, "reviews", registry=services.registry, settings=settings)
        threads_before = set(threading.enumerate())
        runtime = build_runtime(
            settings,
            services=services,
            host="127.0.0.1",
            port=free_port(),
            poster_interval=0.02,
            socket_mode=True,
        ).start(schedule=False)
        bot = SocketBot(
            runtime,
            slack,
            socket_mode,
            services,
            httpx.Client(
                base_url=runtime.url, timeout=10, headers={"Authorization": f"Bearer {API_TOKEN}"}
            ),
            threads_before,
        )
        try:
            yield bot
        finally:
            bot.api.close()
            bot.stop()
            services.engine.dispose()


def slash_command(slack: SlackStandIn, text: str) -> JsonDict:
    """A `slash_commands` envelope's payload: the form fields of `/hitl <text>`, as JSON."""
    return {
        "token": "legacy-verification-token",
        "team_id": slack.team_id,
        "team_domain": slack.team_domain,
        "channel_id": CHANNEL,
        "channel_name": CHANNEL.lower(),
        "user_id": USER,
        "user_name": USER.lower(),
        "command": ids.SLASH_COMMAND,
        "text": text,
        "api_app_id": slack.app_id,
        "is_enterprise_install": "false",
        "response_url": slack.new_response_url(CHANNEL, USER),
        "trigger_id": f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}",
    }


def app_home_opened(slack: SlackStandIn) -> JsonDict:
    """An `events_api` envelope's payload: the Events API callback of opening the Home tab."""
    now = time.time()
    return {
        "token": "legacy-verification-token",
        "team_id": slack.team_id,
        "api_app_id": slack.app_id,
        "event": {
            "type": "app_home_opened",
            "user": USER,
            "channel": "D" + USER[1:],
            "tab": "home",
            "event_ts": f"{now:.6f}",
        },
        "type": "event_callback",
        "event_id": "Ev" + secrets.token_hex(5).upper(),
        "event_time": int(now),
        "authorizations": [
            {"team_id": slack.team_id, "user_id": slack.bot_user_id, "is_bot": True}
        ],
        "is_ext_shared_channel": False,
    }


def label_click(bot: SocketBot, message: JsonDict, label: str) -> JsonDict:
    """An `interactive` envelope's payload: `USER` clicks the button of `label` on `message`."""
    person = SlackUser("http://127.0.0.1:9/unused", "unused", user_id=USER, standin=bot.slack)
    for block in message["blocks"]:
        for element in block.get("elements") or []:
            if element.get("type") == "button" and element["text"]["text"].startswith(label):
                return person.button_click_payload(message, element["action_id"])
    raise LookupError(f"no button for {label!r}")


def answers(bot: SocketBot) -> list[tuple[str, str | None, int]]:
    """(user, label, item) of every answer given in Slack."""
    with bot.services.sessions.begin() as session:
        stored = session.scalars(select(Answer).where(Answer.user_id != "import"))
        return [(a.user_id, a.label, a.item_id) for a in stored]


def response_text(bot: SocketBot, payload: JsonDict) -> str:
    """Everything the bot posted to the payload's response URL, as one string."""
    posts = wait_for(lambda: bot.slack.response_url_posts(payload["response_url"]), 1)
    return json.dumps(posts, ensure_ascii=False)


def test_bot_connects_at_start_and_health_says_connected(socket_bot: SocketBot) -> None:
    connection = socket_bot.connection
    assert socket_bot.socket_mode.connections_opened == 1
    assert not connection.closed
    health = socket_bot.api.get("/healthz").json()
    assert health["socket"] == {"state": "connected"}
    assert health["ok"] is True


@pytest.mark.parametrize(
    ("words", "expected"),
    [("help", "/hitl stats [task]"), ("stats", "reviews")],
)
def test_slash_command_is_acked_in_time_and_answered_via_response_url(
    socket_bot: SocketBot, words: str, expected: str
) -> None:
    payload = slash_command(socket_bot.slack, words)
    ack = socket_bot.connection.deliver("slash_commands", payload, accepts_response_payload=True)
    assert ack.elapsed < SLACK_ACK_TIMEOUT
    assert expected in response_text(socket_bot, payload)


def test_label_click_is_acked_and_stores_the_answer(socket_bot: SocketBot) -> None:
    response = socket_bot.api.post(
        "/api/tasks/reviews/items", json={"items": [{"text": "rude and cold"}]}
    )
    (routed,) = response.json()["items"]
    assert routed["route"] == "review"
    (message,) = socket_bot.slack.wait_for_messages(CHANNEL, 1)
    ack = socket_bot.connection.deliver("interactive", label_click(socket_bot, message, "negative"))
    assert ack.elapsed < SLACK_ACK_TIMEOUT
    assert wait_for(lambda: answers(socket_bot), 1) == [(USER, "negative", routed["item_id"])]


def test_app_home_opened_is_acked_and_publishes_the_home_tab(socket_bot: SocketBot) -> None:
    ack = socket_bot.connection.deliver("events_api", app_home_opened(socket_bot.slack))
    assert ack.elapsed < SLACK_ACK_TIMEOUT
    (view,) = wait_for(lambda: socket_bot.slack.view_history(USER), 1)
    assert "reviews" in json.dumps(view["blocks"])


@pytest.mark.parametrize("reason", ["refresh_requested", "warning"])
def test_disconnect_message_makes_the_bot_reconnect_and_keep_acking(
    socket_bot: SocketBot, reason: str
) -> None:
    first = socket_bot.connection
    first.request_disconnect(reason)
    second = socket_bot.socket_mode.wait_for_connection(2)
    assert socket_bot.socket_mode.connections_opened == 2
    assert first.wait_closed(), "the bot kept the old connection open"
    payload = slash_command(socket_bot.slack, "help")
    ack = second.deliver("slash_commands", payload, accepts_response_payload=True)
    assert ack.elapsed < SLACK_ACK_TIMEOUT
    assert "/hitl tasks" in response_text(socket_bot, payload)
    assert socket_bot.api.get("/healthz").json()["socket"] == {"state": "connected"}
    assert first.unexpected_messages() == second.unexpected_messages() == []


def test_stop_closes_the_connection_and_leaves_no_thread_behind(socket_bot: SocketBot) -> None:
    connection = socket_bot.connection
    socket_bot.stop()
    assert connection.wait_closed(), "Slack still sees a live connection after stop()"
    assert threads_left(socket_bot.threads_before) == []
    assert socket_bot.runtime.health()["socket"] == {"state": "disconnected"}


def test_health_says_disconnected_when_slack_drops_the_socket_and_refuses_a_new_one(
    socket_bot: SocketBot,
) -> None:
    socket_bot.socket_mode.refuse_connections("internal_error")
    socket_bot.connection.close()
    assert socket_bot.connection.wait_closed()
    deadline = time.monotonic() + 5
    while socket_bot.runtime.socket_state() != "disconnected" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert socket_bot.api.get("/healthz").json()["socket"] == {"state": "disconnected"}


def test_refused_app_token_stops_the_start_and_leaves_no_thread(tmp_path: Path) -> None:
    with (
        SlackStandIn(bot_token="xoxb-test") as slack,
        SocketModeSlack(slack, app_token="xapp-1-right") as socket_mode,
    ):
        settings = settings_for(
            f"sqlite:///{tmp_path / 'bot.db'}", socket_mode.api_url, app_token="xapp-1-wrong"
        )
        before = set(threading.enumerate())
        runtime = build_runtime(settings, host="127.0.0.1", port=free_port(), socket_mode=True)
        try:
            with pytest.raises(SlackSetupError, match="invalid_auth"):
                runtime.start(schedule=False)
            assert socket_mode.connections() == []
            assert threads_left(before) == []
        finally:
            runtime.services.engine.dispose()


def test_health_says_off_in_http_mode(bot: Bot) -> None:
    assert bot.api.get("/healthz").json()["socket"] == {"state": "off"}
