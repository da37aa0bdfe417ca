"""The user simulator sends what Slack sends: signed, in Slack's shapes, retried like Slack."""

import http.server
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier

from bot.demo.simulator import SlackUser, sign
from bot.demo.standin import SlackStandIn

SECRET = "test-signing-secret"
TOKEN = "xoxb-simulator-test"
CHANNEL = "C0REVIEW1"


@dataclass(frozen=True)
class Seen:
    """One request as the bot double received it."""

    headers: dict[str, str]
    body: str
    signature_ok: bool

    def form(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(self.body, keep_blank_values=True))

    def payload(self) -> dict[str, Any]:
        loaded = json.loads(self.form()["payload"])
        assert isinstance(loaded, dict)
        return loaded


Reply = Callable[[Seen], tuple[int, dict[str, str]]]


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 64  # the default 5 drops connections when a dozen people click at once


class BotDouble:
    """A tiny HTTP app in the bot's place: checks signatures with slack_sdk, records, answers."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.delays: list[float] = []  # seconds to wait before answering the n-th request
        self.reply: Reply = lambda seen: (200, {})
        self._lock = threading.Lock()
        verifier = SignatureVerifier(SECRET)
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                headers = dict(self.headers.items())
                seen = Seen(headers, body, verifier.is_valid_request(body, headers))
                with double._lock:
                    double.seen.append(seen)
                    delay = double.delays.pop(0) if double.delays else 0.0
                time.sleep(delay)
                status, extra = double.reply(seen) if seen.signature_ok else (401, {})
                try:
                    self.send_response(status)
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the simulator stopped waiting, as Slack does

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/slack/events"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def wait_for(self, count: int, timeout: float = 3.0) -> list[Seen]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.seen) >= count:
                    return list(self.seen)
            time.sleep(0.01)
        raise AssertionError(f"the bot double saw {len(self.seen)} requests, not {count}")


@pytest.fixture
def bot() -> Iterator[BotDouble]:
    double = BotDouble()
    yield double
    double.close()


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn(TOKEN, rate_limit_per_channel=None) as standin:
        yield standin


def label_prompt(slack: SlackStandIn) -> dict[str, Any]:
    """A review prompt posted through the stand-in, as it is stored there."""
    blocks = [
        {"type": "section", "text": {"type": "plain_text", "text": "my card was charged twice"}},
        {
            "type": "actions",
            "block_id": "labels",
            "elements": [
                {
                    "type": "button",
                    "action_id": "hitl_label:0",
                    "text": {"type": "plain_text", "text": "refund"},
                    "value": "17:0",
                    "style": "primary",
                },
                {
                    "type": "static_select",
                    "action_id": "hitl_label_menu:0",
                    "placeholder": {"type": "plain_text", "text": "Other label"},
                    "option_groups": [
                        {
                            "label": {"type": "plain_text", "text": "Cards"},
                            "options": [
                                {
                                    "text": {"type": "plain_text", "text": "card lost"},
                                    "value": "17:1",
                                },
                                {
                                    "text": {"type": "plain_text", "text": "card fee"},
                                    "value": "17:2",
                                },
                            ],
                        }
                    ],
                },
            ],
        },
    ]
    client = WebClient(token=TOKEN, base_url=slack.api_url)
    posted = client.chat_postMessage(
        channel=CHANNEL, text="Review item 17", blocks=cast(Any, blocks)
    )
    return slack.message(CHANNEL, posted["ts"])


def reviewer(bot: BotDouble, **options: Any) -> SlackUser:
    return SlackUser(bot.url, SECRET, user_id="U0ALICE01", user_name="alice", **options)


def test_sign_is_slacks_v0_signature() -> None:
    """The signature is the one slack_sdk computes and Bolt checks."""
    expected = SignatureVerifier(SECRET).generate_signature(timestamp="1700000000", body="a=b")
    assert sign(SECRET, "1700000000", "a=b") == expected


# --- clicks and menus -----------------------------------------------------------------------


def test_click_button_sends_a_signed_block_actions_payload(
    bot: BotDouble, slack: SlackStandIn
) -> None:
    """A click is form-encoded payload=<json> with every field Slack sends for block_actions."""
    message = label_prompt(slack)
    delivery = reviewer(bot, standin=slack).click_button(message, "hitl_label:0", value="17:0")

    assert delivery.ok and delivery.status == 200 and delivery.attempts == 1
    (seen,) = bot.seen
    assert delivery.response_url == seen.payload()["response_url"]
    assert seen.signature_ok
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert set(seen.form()) == {"payload"}
    payload = seen.payload()
    assert payload["type"] == "block_actions"
    assert payload["user"] == {
        "id": "U0ALICE01",
        "username": "alice",
        "name": "alice",
        "team_id": slack.team_id,
    }
    assert payload["api_app_id"] == slack.app_id
    assert payload["token"]
    assert payload["container"] == {
        "type": "message",
        "message_ts": message["ts"],
        "channel_id": CHANNEL,
        "is_ephemeral": False,
    }
    assert payload["trigger_id"].count(".") == 2
    assert payload["team"] == {"id": slack.team_id, "domain": slack.team_domain}
    assert payload["channel"] == {"id": CHANNEL, "name": CHANNEL.lower()}
    assert payload["message"] == {k: v for k, v in message.items() if k != "history"}
    assert payload["response_url"].startswith(f"{slack.base_url}/response/")
    assert payload["state"] == {"values": {}}
    (action,) = payload["actions"]
    assert float(action.pop("action_ts")) > 0
    assert action == {
        "action_id": "hitl_label:0",
        "block_id": "labels",
        "text": {"type": "plain_text", "text": "refund"},
        "value": "17:0",
        "type": "button",
        "style": "primary",
    }


def test_a_click_needs_the_button_in_the_message(bot: BotDouble, slack: SlackStandIn) -> None:
    """Missing buttons, other values and menus are refused before anything is sent."""
    message = label_prompt(slack)
    user = reviewer(bot, standin=slack)
    with pytest.raises(LookupError):
        user.click_button(message, "hitl_label:9")
    with pytest.raises(ValueError, match="sends '17:0'"):
        user.click_button(message, "hitl_label:0", value="17:3")
    with pytest.raises(LookupError, match="not a button"):
        user.click_button(message, "hitl_label_menu:0")
    with pytest.raises(ValueError, match="pass channel_id"):
        reviewer(bot).click_button(message, "hitl_label:0")  # no stand-in to ask
    assert bot.seen == []


def test_a_forged_value_goes_through_the_payload_builder(
    bot: BotDouble, slack: SlackStandIn
) -> None:
    """To test a tampered click, edit the payload and send it yourself."""
    user = reviewer(bot, standin=slack)
    payload = user.button_click_payload(label_prompt(slack), "hitl_label:0")
    payload["actions"][0]["value"] = "99999999999999999999:0"
    assert user.send_interaction(payload).ok
    assert bot.seen[0].payload()["actions"][0]["value"] == "99999999999999999999:0"


def test_select_option_sends_the_chosen_option(bot: BotDouble, slack: SlackStandIn) -> None:
    """A menu choice (here from an option group) arrives as a static_select action."""
    message = label_prompt(slack)
    delivery = reviewer(bot, standin=slack).select_option(message, "hitl_label_menu:0", "17:2")

    assert delivery.ok
    (action,) = bot.seen[0].payload()["actions"]
    assert action["type"] == "static_select"
    assert action["action_id"] == "hitl_label_menu:0" and action["block_id"] == "labels"
    assert action["selected_option"] == {
        "text": {"type": "plain_text", "text": "card fee"},
        "value": "17:2",
    }
    with pytest.raises(LookupError, match="no option"):
        reviewer(bot, standin=slack).select_option(message, "hitl_label_menu:0", "17:9")


# --- commands and events --------------------------------------------------------------------


def test_slash_command_sends_slacks_form_fields(bot: BotDouble, slack: SlackStandIn) -> None:
    """Exactly the fields Slack posts for a slash command, with a stand-in response URL."""
    user = reviewer(bot, standin=slack)
    assert user.slash_command("threshold refunds 0.9", channel_id=CHANNEL).ok

    form = bot.seen[0].form()
    assert set(form) == {
        "token",
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "user_id",
        "user_name",
        "command",
        "text",
        "api_app_id",
        "is_enterprise_install",
        "response_url",
        "trigger_id",
    }
    assert form["command"] == "/hitl" and form["text"] == "threshold refunds 0.9"
    assert (form["user_id"], form["user_name"]) == ("U0ALICE01", "alice")
    assert (form["team_id"], form["channel_id"]) == (slack.team_id, CHANNEL)
    assert form["is_enterprise_install"] == "false"
    assert form["response_url"].startswith(f"{slack.base_url}/response/")
    assert user.slash_command("help").response_url != form["response_url"]


def test_event_envelope_and_app_home_opened(bot: BotDouble, slack: SlackStandIn) -> None:
    """Events come in JSON event_callback envelopes, unique event_ids; App Home carries the view."""
    WebClient(token=TOKEN, base_url=slack.api_url).views_publish(
        user_id="U0ALICE01",
        view={
            "type": "home",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}],
        },
    )
    user = reviewer(bot, standin=slack)
    assert user.app_home_opened().ok
    assert user.event({"type": "app_mention", "user": "U0ALICE01", "text": "hi"}).ok

    first, second = (json.loads(seen.body) for seen in bot.seen)
    assert bot.seen[0].headers["Content-Type"] == "application/json"
    assert first["type"] == "event_callback"
    assert (first["team_id"], first["api_app_id"]) == (slack.team_id, slack.app_id)
    assert first["event_id"].startswith("Ev") and first["event_id"] != second["event_id"]
    assert isinstance(first["event_time"], int)
    assert first["authorizations"][0]["user_id"] == slack.bot_user_id
    event = first["event"]
    assert (event["type"], event["user"], event["tab"]) == ("app_home_opened", "U0ALICE01", "home")
    assert event["view"]["blocks"][0]["text"]["text"] == "hi"
    assert second["event"]["event_ts"]


def test_stale_or_forged_requests_fail_verification(bot: BotDouble) -> None:
    """An old timestamp or a wrong secret is what Bolt's verifier rejects (401)."""
    user = reviewer(bot)
    stale = user.slash_command("help", timestamp=int(time.time()) - 6 * 60)
    forged = user.slash_command("help", forge_signature=True)
    fine = user.slash_command("help")
    behind = reviewer(bot, clock=lambda: time.time() - 600, retry_delays=(0.0,))
    old_clock = behind.event({"type": "app_home_opened", "user": "U0ALICE01"})
    assert (stale.status, stale.attempts, stale.error) == (401, 1, "http_error")
    assert (forged.status, forged.error) == (401, "http_error")
    assert fine.ok and fine.error is None
    assert (old_clock.status, old_clock.attempts) == (401, 4)  # events are retried on errors
    assert [seen.signature_ok for seen in bot.seen] == [False, False, True] + [False] * 4
    assert int(bot.seen[0].headers["X-Slack-Request-Timestamp"]) < time.time() - 300
    assert fine.response_url is not None and fine.response_url.startswith(
        "https://hooks.slack.com/commands/"
    )


# --- Slack's 3-second timeout and retries ---------------------------------------------------


def test_a_slow_event_is_retried_with_slacks_retry_headers(bot: BotDouble) -> None:
    """Not acked in time: the same body again, X-Slack-Retry-Num 1, reason http_timeout."""
    bot.delays = [1.0]
    delivery = reviewer(bot, ack_timeout=0.3).event(
        {"type": "app_home_opened", "user": "U0ALICE01"}
    )

    assert delivery.ok and delivery.attempts == 2 and delivery.error is None
    assert 0.3 <= delivery.elapsed < 1.0
    first, retry = bot.wait_for(2)
    assert first.body == retry.body and first.signature_ok and retry.signature_ok
    assert "X-Slack-Retry-Num" not in first.headers
    assert retry.headers["X-Slack-Retry-Num"] == "1"
    assert retry.headers["X-Slack-Retry-Reason"] == "http_timeout"


def test_event_retries_stop_after_three(bot: BotDouble) -> None:
    """Never acked in time: four attempts in all, numbered 1-3, then the delivery gives up."""
    bot.delays = [0.5] * 4
    user = reviewer(bot, ack_timeout=0.15, retry_delays=(0.0,))
    delivery = user.event({"type": "app_home_opened", "user": "U0ALICE01"})

    assert (delivery.status, delivery.attempts, delivery.error) == (None, 4, "http_timeout")
    seen = bot.wait_for(4)
    assert [s.headers.get("X-Slack-Retry-Num") for s in seen] == [None, "1", "2", "3"]


def test_event_errors_are_retried_unless_the_bot_says_no_retry(bot: BotDouble) -> None:
    """A 5xx is retried with reason http_error; X-Slack-No-Retry: 1 stops that."""
    answers = iter([(500, {}), (200, {}), (503, {"X-Slack-No-Retry": "1"})])
    bot.reply = lambda seen: next(answers)
    user = reviewer(bot, retry_delays=(0.0,))
    retried = user.event({"type": "app_home_opened", "user": "U0ALICE01"})
    refused = user.event({"type": "app_home_opened", "user": "U0ALICE01"})

    assert (retried.status, retried.attempts) == (200, 2)
    assert bot.seen[1].headers["X-Slack-Retry-Reason"] == "http_error"
    assert (refused.status, refused.attempts, refused.error) == (503, 1, None)


def test_a_slow_click_is_not_retried_unless_asked(bot: BotDouble, slack: SlackStandIn) -> None:
    """Slack shows the user an error instead of retrying a click; retry_interactions retries."""
    message = label_prompt(slack)
    bot.delays = [0.6, 0.6]
    slow = reviewer(bot, standin=slack, ack_timeout=0.2).click_button(message, "hitl_label:0")
    assert (slow.status, slow.attempts, slow.error) == (None, 1, "http_timeout")

    user = reviewer(bot, standin=slack, ack_timeout=0.2, retry_interactions=True)
    retried = user.click_button(message, "hitl_label:0")
    assert retried.ok and retried.attempts == 2
    seen = bot.wait_for(3)
    assert [s.headers.get("X-Slack-Retry-Num") for s in seen] == [None, None, "1"]


def test_an_unreachable_bot_is_connection_failed() -> None:
    """Nothing listening: every attempt fails to connect, and the delivery says so."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    user = SlackUser(f"http://127.0.0.1:{port}/slack/events", SECRET, retry_delays=(0.0,))
    delivery = user.event({"type": "app_home_opened", "user": "U0TESTER1"})
    assert (delivery.status, delivery.attempts, delivery.error) == (
        None,
        4,
        "connection_failed",
    )


# --- together -------------------------------------------------------------------------------


def test_many_people_click_at_once(bot: BotDouble, slack: SlackStandIn) -> None:
    """One simulator per person or one for all: concurrent clicks all arrive, all signed."""
    message = label_prompt(slack)
    user = reviewer(bot, standin=slack)
    results: list[bool] = []

    def click(number: int) -> None:
        delivery = user.click_button(message, "hitl_label:0", user_id=f"U0PERSON{number:02d}")
        results.append(delivery.ok)

    threads = [threading.Thread(target=click, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 12
    assert all(seen.signature_ok for seen in bot.seen)
    assert {s.payload()["user"]["id"] for s in bot.seen} == {f"U0PERSON{n:02d}" for n in range(12)}


def test_a_bot_can_answer_a_click_through_the_response_url(
    bot: BotDouble, slack: SlackStandIn
) -> None:
    """End to end: the bot answers a click via the response URL and the stored message changes."""

    def answer(seen: Seen) -> tuple[int, dict[str, str]]:
        payload = seen.payload()
        with httpx.Client() as http:
            http.post(
                payload["response_url"],
                json={"replace_original": True, "text": f"labelled by <@{payload['user']['id']}>"},
            ).raise_for_status()
        return 200, {}

    bot.reply = answer
    message = label_prompt(slack)
    assert reviewer(bot, standin=slack).click_button(message, "hitl_label:0").ok
    stored = slack.message(CHANNEL, message["ts"])
    assert stored["text"] == "labelled by <@U0ALICE01>"
    assert [old["text"] for old in stored["history"]] == ["Review item 17"]


def test_the_clicked_message_arrives_html_escaped_as_slack_sends_it(
    bot: BotDouble, slack: SlackStandIn
) -> None:
    """`&`, `<`, `>` come as entities in message.text and block texts; markup stays markup."""
    client = WebClient(token=TOKEN, base_url=slack.api_url)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "plain_text", "text": "Tom & Jerry <b>1 > 0</b>"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "<@U0ALICE01> & &amp; a<b"}]},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": "go",
                    "text": {"type": "plain_text", "text": "R&D"},
                    "value": "1",
                }
            ],
        },
    ]
    ts = client.chat_postMessage(
        channel=CHANNEL, text="Review: Tom & Jerry <!here> &lt;x&gt; 2 > 1", blocks=blocks
    )["ts"]
    stored = slack.message(CHANNEL, str(ts))
    reviewer(bot, standin=slack).click_button(stored, "go")
    shown = bot.seen[0].payload()["message"]
    assert shown["text"] == "Review: Tom &amp; Jerry <!here> &lt;x&gt; 2 &gt; 1"
    section, context, actions = shown["blocks"]
    assert section["text"]["text"] == "Tom &amp; Jerry &lt;b&gt;1 &gt; 0&lt;/b&gt;"
    assert context["elements"][0]["text"] == "<@U0ALICE01> &amp; &amp; a&lt;b"
    assert actions["elements"][0]["text"]["text"] == "R&amp;D"
    # The stand-in keeps what the bot sent; only the payload is escaped.
    assert slack.message(CHANNEL, str(ts))["blocks"][0]["text"]["text"].startswith("Tom & Jerry")
