"""The Slack stand-in over real HTTP: WebClient gets Slack's answers, limits and faults."""

import re
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.webhook import WebhookClient

from bot.demo.standin import SlackStandIn, validate_blocks

TOKEN = "xoxb-standin-test"
CHANNEL = "C0REVIEW1"
USER = "U0ALICE01"
SLACK_TS = re.compile(r"[0-9]{10}\.[0-9]{6}")


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    """A stand-in without the rate limit, for tests that are not about it."""
    with SlackStandIn(TOKEN, rate_limit_per_channel=None) as standin:
        yield standin


def client_for(standin: SlackStandIn, *handlers: Any) -> WebClient:
    """A WebClient on the stand-in with exactly these retry handlers (none: errors surface)."""
    return WebClient(token=TOKEN, base_url=standin.api_url, retry_handlers=list(handlers))


@pytest.fixture
def client(slack: SlackStandIn) -> WebClient:
    return client_for(slack)


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(action_id: str, text: str = "Yes", value: str = "1") -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text},
        "value": value,
    }


def select(action_id: str, options: int) -> dict[str, Any]:
    return {
        "type": "static_select",
        "action_id": action_id,
        "placeholder": {"type": "plain_text", "text": "Other label"},
        "options": [
            {"text": {"type": "plain_text", "text": f"label {n}"}, "value": f"1:{n}"}
            for n in range(options)
        ],
    }


def api_error(call: Callable[[], object]) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        call()
    return caught.value


# --- the Web API basics ---------------------------------------------------------------------


def test_auth_test_names_the_bot_and_the_team() -> None:
    """auth.test answers with the configured team, bot user and bot ids."""
    with SlackStandIn(TOKEN, team_id="T0TEAM", bot_user_id="U0HITL", bot_id="B0HITL") as slack:
        answer = client_for(slack).auth_test()
    assert answer["ok"] is True
    assert (answer["team_id"], answer["user_id"], answer["bot_id"]) == (
        "T0TEAM",
        "U0HITL",
        "B0HITL",
    )


def test_missing_token_is_not_authed_and_a_wrong_one_invalid_auth(slack: SlackStandIn) -> None:
    """Like Slack: HTTP 200 with ok=false; the token may come as a header or a form field."""
    url = slack.api_url + "auth.test"
    with httpx.Client() as http:
        missing = http.post(url)
        wrong = http.post(url, headers={"Authorization": "Bearer xoxb-wrong"})
        as_field = http.post(url, data={"token": TOKEN})
    assert (missing.status_code, missing.json()) == (200, {"ok": False, "error": "not_authed"})
    assert (wrong.status_code, wrong.json()) == (200, {"ok": False, "error": "invalid_auth"})
    assert as_field.json()["ok"] is True


def test_unknown_method_is_refused(slack: SlackStandIn, client: WebClient) -> None:
    """A method the stand-in does not speak answers unknown_method (HTTP 404)."""
    error = api_error(lambda: client.api_call("chat.scheduleMessage", json={"channel": CHANNEL}))
    assert error.response.status_code == 404
    assert error.response["error"] == "unknown_method"


def test_posted_message_is_stored_with_slack_style_ts(
    slack: SlackStandIn, client: WebClient
) -> None:
    """chat.postMessage stores text and blocks; ts values are unique and increasing."""
    blocks = [section("*Is this a refund?*"), {"type": "actions", "elements": [button("yes")]}]
    first = client.chat_postMessage(channel=CHANNEL, text="review me", blocks=blocks)
    second = client.chat_postMessage(channel=CHANNEL, text="and me", thread_ts=first["ts"])

    assert first["channel"] == CHANNEL and SLACK_TS.fullmatch(first["ts"])
    assert float(second["ts"]) > float(first["ts"])
    stored = slack.messages(CHANNEL)
    assert [m["text"] for m in stored] == ["review me", "and me"]
    assert stored[0]["ts"] == first["ts"] and stored[0]["user"] == slack.bot_user_id
    assert stored[0]["blocks"][1]["elements"][0]["action_id"] == "yes"
    # Slack fills in the block_ids a message leaves out; clicks carry them.
    assert all(block["block_id"] for block in stored[0]["blocks"])
    assert stored[1]["thread_ts"] == first["ts"]
    assert first["message"]["blocks"] == stored[0]["blocks"]
    assert slack.channel_of(first["ts"]) == CHANNEL


def test_form_encoded_call_with_blocks_as_a_json_string(slack: SlackStandIn) -> None:
    """Form bodies carry blocks as a JSON string, and the token as a field."""
    with httpx.Client() as http:
        answer = http.post(
            slack.api_url + "chat.postMessage",
            data={
                "token": TOKEN,
                "channel": CHANNEL,
                "blocks": '[{"type": "section", "text": {"type": "plain_text", "text": "hi"}}]',
            },
        ).json()
        broken = http.post(
            slack.api_url + "chat.postMessage",
            data={"token": TOKEN, "channel": CHANNEL, "blocks": "[{not json"},
        ).json()
    assert answer["ok"] is True
    assert slack.message(CHANNEL, answer["ts"])["blocks"][0]["text"]["text"] == "hi"
    assert broken == {"ok": False, "error": "invalid_blocks_format"}


def test_update_replaces_text_keeps_blocks_and_records_history(
    slack: SlackStandIn, client: WebClient
) -> None:
    """chat.update without blocks keeps them (as Slack does); the old version goes to history."""
    posted = client.chat_postMessage(channel=CHANNEL, text="v1", blocks=[section("first")])
    updated = client.chat_update(channel=CHANNEL, ts=posted["ts"], text="v2")
    client.chat_update(channel=CHANNEL, ts=posted["ts"], text="v3", blocks=[section("third")])

    assert updated["ts"] == posted["ts"] and updated["text"] == "v2"
    assert updated["message"]["blocks"][0]["text"]["text"] == "first"
    stored = slack.message(CHANNEL, posted["ts"])
    assert stored["text"] == "v3"
    assert stored["blocks"][0]["text"]["text"] == "third"
    assert [old["text"] for old in stored["history"]] == ["v1", "v2"]
    assert stored["edited"]["user"] == slack.bot_user_id
    assert len(slack.messages(CHANNEL)) == 1


def test_update_of_a_message_that_does_not_exist(client: WebClient) -> None:
    """An unknown ts answers message_not_found."""
    error = api_error(lambda: client.chat_update(channel=CHANNEL, ts="1700000000.000100", text="x"))
    assert error.response["error"] == "message_not_found"


# --- Slack's limits -------------------------------------------------------------------------


def actions(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "actions", "elements": list(elements)}


OVER_THE_LIMIT: dict[str, tuple[dict[str, Any], str]] = {
    "51 blocks": ({"blocks": [section("x")] * 51}, "invalid_blocks"),
    "section text of 3001": ({"blocks": [section("x" * 3001)]}, "invalid_blocks"),
    "context text of 3001": (
        {"blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "x" * 3001}]}]},
        "invalid_blocks",
    ),
    "button text of 76": ({"blocks": [actions(button("b", text="x" * 76))]}, "invalid_blocks"),
    "101 options": ({"blocks": [actions(select("menu", 101))]}, "invalid_blocks"),
    "duplicate action_id": (
        {"blocks": [actions(button("same")), actions(button("same"))]},
        "invalid_blocks",
    ),
    "duplicate block_id": (
        {"blocks": [{**section("a"), "block_id": "b1"}, {**section("b"), "block_id": "b1"}]},
        "invalid_blocks",
    ),
    "unknown block type": ({"blocks": [{"type": "carousel"}]}, "invalid_blocks"),
    "block without type": ({"blocks": [{"text": "hi"}]}, "invalid_blocks"),
    "section without text": ({"blocks": [{"type": "section"}]}, "invalid_blocks"),
    "empty actions": ({"blocks": [actions()]}, "invalid_blocks"),
    "mrkdwn button text": (
        {"blocks": [actions({**button("b"), "text": {"type": "mrkdwn", "text": "*b*"}})]},
        "invalid_blocks",
    ),
    "text of 40001": ({"text": "x" * 40_001}, "msg_too_long"),
}


@pytest.mark.parametrize("case", list(OVER_THE_LIMIT))
def test_over_the_limit_messages_get_slacks_error(
    case: str, slack: SlackStandIn, client: WebClient
) -> None:
    """Each documented limit, broken by one, is refused with Slack's error name; nothing stored."""
    message, expected = OVER_THE_LIMIT[case]
    message = {"text": "fallback", **message}
    error = api_error(lambda: client.chat_postMessage(channel=CHANNEL, **message))
    assert error.response.status_code == 200
    assert error.response["error"] == expected
    assert slack.messages(CHANNEL) == []


def test_a_message_without_text_or_blocks_is_no_text(slack: SlackStandIn) -> None:
    """Neither text nor blocks: no_text (sent raw, as slack_sdk warns before sending it)."""
    with httpx.Client() as http:
        answer = http.post(
            slack.api_url + "chat.postMessage",
            json={"channel": CHANNEL, "text": ""},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert answer.json() == {"ok": False, "error": "no_text"}
    assert slack.calls("chat.postMessage")[0].error == "no_text"


def test_messages_exactly_at_the_limits_are_accepted(
    slack: SlackStandIn, client: WebClient
) -> None:
    """50 blocks, 3000-character texts, 75-character buttons, 100 options, 40,000 characters."""
    blocks = [section("x" * 3000)] * 48 + [
        actions(button("b", text="y" * 75)),
        actions(select("menu", 100)),
    ]
    client.chat_postMessage(channel=CHANNEL, text="z" * 40_000, blocks=blocks)
    assert len(slack.messages(CHANNEL)[0]["blocks"]) == 50


def test_invalid_blocks_say_where(client: WebClient) -> None:
    """The refusal carries a response_metadata message pointing at the broken field."""
    error = api_error(
        lambda: client.chat_postMessage(
            channel=CHANNEL, text="fallback", blocks=[section("ok"), section("")]
        )
    )
    assert error.response["error"] == "invalid_blocks"
    assert "/blocks/1/text" in error.response["response_metadata"]["messages"][0]


def test_validate_blocks_is_usable_on_its_own() -> None:
    """validate_blocks: None for good blocks, a reason for bad ones, views allow 100 blocks."""
    assert validate_blocks([section("fine")]) is None
    assert "51 blocks" in str(validate_blocks([section("x")] * 51))
    assert validate_blocks([section("x")] * 100, max_blocks=100) is None


def test_unknown_channels_are_not_found() -> None:
    """By default any well-formed channel ID exists; with an allowlist only those do."""
    with SlackStandIn(TOKEN, channels={"C0KNOWN1"}) as slack:
        client = client_for(slack)
        client.chat_postMessage(channel="C0KNOWN1", text="hi")
        error = api_error(lambda: client.chat_postMessage(channel="C0OTHER1", text="hi"))
    assert error.response["error"] == "channel_not_found"
    with SlackStandIn(TOKEN) as slack:
        error = api_error(lambda: client_for(slack).chat_postMessage(channel="general", text="x"))
    assert error.response["error"] == "channel_not_found"


# --- rate limits and faults -----------------------------------------------------------------


def test_post_message_over_the_rate_gets_429_with_retry_after() -> None:
    """About one message per second per channel after a small burst; other channels are free."""
    with SlackStandIn(TOKEN, rate_limit_per_channel=1.0, burst=2) as slack:
        client = client_for(slack)
        client.chat_postMessage(channel=CHANNEL, text="1")
        client.chat_postMessage(channel=CHANNEL, text="2")
        error = api_error(lambda: client.chat_postMessage(channel=CHANNEL, text="3"))
        client.chat_postMessage(channel="C0OTHER1", text="elsewhere")
        assert error.response.status_code == 429
        assert error.response["error"] == "ratelimited"
        retry_after = error.response.headers["Retry-After"]
        assert retry_after.isdigit() and int(retry_after) >= 1
        assert slack.rate_limited_count == 1
        assert [m["text"] for m in slack.messages(CHANNEL)] == ["1", "2"]
        assert [c.status for c in slack.calls("chat.postMessage")] == [200, 200, 429, 200]


def test_rate_limit_handler_retries_through_a_storm() -> None:
    """slack_sdk's RateLimitErrorRetryHandler waits out Retry-After and the message goes through."""
    with SlackStandIn(TOKEN) as slack:
        slack.rate_limit_storm(1)
        client = client_for(slack, RateLimitErrorRetryHandler(max_retry_count=2))
        started = time.monotonic()
        answer = client.chat_postMessage(channel=CHANNEL, text="patient")
        waited = time.monotonic() - started
        assert answer["ok"] is True
        assert [c.status for c in slack.calls("chat.postMessage")] == [429, 200]
        assert waited >= 1.0  # Retry-After: 1
        assert slack.rate_limited_count == 1
        assert [m["text"] for m in slack.messages(CHANNEL)] == ["patient"]


def test_fail_next_answers_server_errors_then_recovers(slack: SlackStandIn) -> None:
    """Injected 5xx reach the client; ServerErrorRetryHandler retries through one of them."""
    slack.fail_next(1, status=503)
    error = api_error(lambda: client_for(slack).chat_postMessage(channel=CHANNEL, text="x"))
    assert error.response.status_code == 503
    assert client_for(slack).chat_postMessage(channel=CHANNEL, text="after")["ok"] is True

    slack.fail_next(1)
    patient = client_for(slack, ServerErrorRetryHandler(max_retry_count=1))
    assert patient.chat_postMessage(channel=CHANNEL, text="retried")["ok"] is True
    assert [c.status for c in slack.calls("chat.postMessage")] == [503, 200, 500, 200]
    assert [m["text"] for m in slack.messages(CHANNEL)] == ["after", "retried"]


def test_down_refuses_connections_and_comes_back_on_the_same_port(slack: SlackStandIn) -> None:
    """While down the port is closed (connection refused); back up, same URL, data kept."""
    client = client_for(slack)
    client.chat_postMessage(channel=CHANNEL, text="before")
    url = slack.api_url
    slack.set_down(True)
    assert slack.is_down
    with pytest.raises(urllib.error.URLError) as caught:
        client.chat_postMessage(channel=CHANNEL, text="lost")
    assert isinstance(caught.value.reason, ConnectionRefusedError)

    slack.set_down(False)
    assert slack.api_url == url and not slack.is_down
    client.chat_postMessage(channel=CHANNEL, text="after")
    assert [m["text"] for m in slack.messages(CHANNEL)] == ["before", "after"]


def test_latency_delays_every_answer(slack: SlackStandIn, client: WebClient) -> None:
    """set_latency holds each answer back; set it to 0 and answers are quick again."""
    slack.set_latency(0.3)
    started = time.monotonic()
    client.auth_test()
    assert time.monotonic() - started >= 0.3
    slack.set_latency(0)
    started = time.monotonic()
    client.auth_test()
    assert time.monotonic() - started < 0.3


def test_delay_replies_answers_one_method_late_after_it_took_effect(slack: SlackStandIn) -> None:
    """A delayed chat.postMessage stores the message at once; the client times out anyway."""
    quick = client_for(slack)
    impatient = WebClient(token=TOKEN, base_url=slack.api_url, timeout=0.3)  # type: ignore[arg-type]  # urllib takes float seconds
    slack.delay_replies("chat.postMessage", 0.6, channel=CHANNEL, count=1)
    with pytest.raises(TimeoutError):
        impatient.chat_postMessage(channel=CHANNEL, text="late")
    assert [m["text"] for m in slack.messages(CHANNEL)] == ["late"]  # Slack has it regardless
    started = time.monotonic()
    quick.auth_test()  # other methods answer at once
    quick.chat_postMessage(channel="C0OTHER01", text="other channel")
    quick.chat_postMessage(channel=CHANNEL, text="the count is used up")
    assert time.monotonic() - started < 0.3
    slack.delay_replies("auth.test", 0.3)
    started = time.monotonic()
    quick.auth_test()
    assert time.monotonic() - started >= 0.3
    slack.delay_replies("auth.test", 0)
    started = time.monotonic()
    quick.auth_test()
    assert time.monotonic() - started < 0.3


def test_history_returns_metadata_only_when_asked(slack: SlackStandIn, client: WebClient) -> None:
    metadata = {"event_type": "hitl_prompt", "event_payload": {"prompt_id": 7, "item_id": 3}}
    posted = client.chat_postMessage(channel=CHANNEL, text="prompt", metadata=metadata)
    assert slack.message(CHANNEL, posted["ts"])["metadata"] == metadata
    plain = client.conversations_history(channel=CHANNEL)
    assert [m["text"] for m in plain["messages"]] == ["prompt"]
    assert "metadata" not in plain["messages"][0]
    full = client.conversations_history(channel=CHANNEL, include_all_metadata=True)
    assert full["messages"][0]["metadata"] == metadata
    assert "history" not in full["messages"][0]  # the stand-in's own record stays inside
    duplicate = {"event_type": "hitl_prompt_duplicate", "event_payload": {"prompt_id": 7}}
    client.chat_update(channel=CHANNEL, ts=posted["ts"], text="dup", blocks=[], metadata=duplicate)
    assert slack.message(CHANNEL, posted["ts"])["metadata"] == duplicate
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel=CHANNEL, text="x", metadata={"event_payload": {}})
    assert caught.value.response["error"] == "invalid_metadata_schema"


def test_history_is_newest_first_bounded_by_oldest_and_paged_by_limit(
    slack: SlackStandIn, client: WebClient
) -> None:
    stamps = [client.chat_postMessage(channel=CHANNEL, text=f"m{i}")["ts"] for i in range(5)]
    client.chat_postMessage(channel=CHANNEL, text="reply", thread_ts=stamps[0])
    everything = client.conversations_history(channel=CHANNEL)
    assert [m["text"] for m in everything["messages"]] == ["m4", "m3", "m2", "m1", "m0"]
    assert everything["has_more"] is False
    first = client.conversations_history(channel=CHANNEL, oldest=stamps[1], limit=2)
    assert [m["text"] for m in first["messages"]] == ["m4", "m3"]  # oldest itself excluded
    assert first["has_more"] is True
    cursor = first["response_metadata"]["next_cursor"]
    rest = client.conversations_history(channel=CHANNEL, oldest=stamps[1], limit=2, cursor=cursor)
    assert [m["text"] for m in rest["messages"]] == ["m2"]
    assert rest["has_more"] is False and rest["response_metadata"]["next_cursor"] == ""
    inclusive = client.conversations_history(channel=CHANNEL, oldest=stamps[3], inclusive=True)
    assert [m["text"] for m in inclusive["messages"]] == ["m4", "m3"]


# --- other surfaces -------------------------------------------------------------------------


def test_files_upload_v2_stores_the_file_for_the_channel(
    slack: SlackStandIn, client: WebClient
) -> None:
    """Three steps (get URL, upload bytes, complete) end with the bytes shared to the channel."""
    png = b"\x89PNG\r\n\x1a\nchart bytes"
    answer = client.files_upload_v2(channel=CHANNEL, content=png, filename="chart.png")

    stored = slack.files(CHANNEL)
    assert len(stored) == 1
    assert stored[0]["id"] == answer["file"]["id"]
    assert (stored[0]["name"], stored[0]["title"]) == ("chart.png", "chart.png")
    assert stored[0]["content"] == png and stored[0]["size"] == len(png)
    assert stored[0]["mimetype"] == "image/png"
    assert CHANNEL in answer["file"]["shares"]["public"]
    assert slack.files("C0ELSEWH1") == []
    methods = [c.method for c in slack.calls()]
    assert methods == ["files.getUploadURLExternal", "files.completeUploadExternal"]


def test_completing_an_upload_that_never_happened(client: WebClient) -> None:
    """An unknown file id cannot be completed."""
    error = api_error(
        lambda: client.files_completeUploadExternal(
            files=[{"id": "F0NOPE", "title": "x"}], channel_id=CHANNEL
        )
    )
    assert error.response["error"] == "file_not_found"


def test_ephemeral_messages_are_kept_per_channel_and_user(
    slack: SlackStandIn, client: WebClient
) -> None:
    """chat.postEphemeral answers a message_ts and is readable by channel and by user."""
    answer = client.chat_postEphemeral(channel=CHANNEL, user=USER, text="only you")
    client.chat_postEphemeral(channel=CHANNEL, user="U0BOBBY02", text="only bob")

    assert SLACK_TS.fullmatch(answer["message_ts"])
    mine = slack.ephemerals(CHANNEL, USER)
    assert [(e["text"], e["message_ts"]) for e in mine] == [("only you", answer["message_ts"])]
    assert len(slack.ephemerals(CHANNEL)) == 2
    assert slack.messages(CHANNEL) == []


def test_views_publish_keeps_each_users_home_tab(slack: SlackStandIn, client: WebClient) -> None:
    """views.publish keeps each user's current view and history; over 100 blocks is refused."""
    client.views_publish(user_id=USER, view={"type": "home", "blocks": [section("v1")]})
    answer = client.views_publish(user_id=USER, view={"type": "home", "blocks": [section("v2")]})
    error = api_error(
        lambda: client.views_publish(
            user_id=USER, view={"type": "home", "blocks": [section("x")] * 101}
        )
    )
    history = slack.view_history(USER)
    assert [v["blocks"][0]["text"]["text"] for v in history] == ["v1", "v2"]
    assert slack.views(USER) == history[-1] == answer["view"]
    assert answer["view"]["id"] == history[0]["id"]
    assert error.response["error"] == "invalid_arguments"
    assert slack.views("U0SOMEONE") is None and slack.view_history("U0SOMEONE") == []


def test_conversations_info(client: WebClient) -> None:
    """conversations.info describes any known channel."""
    answer = client.conversations_info(channel=CHANNEL)
    assert answer["channel"]["id"] == CHANNEL and answer["channel"]["is_channel"] is True


def test_calls_log_method_params_status_and_time(slack: SlackStandIn, client: WebClient) -> None:
    """Every call is logged with its parameters (token removed), status and error."""
    before = time.time()
    client.chat_postMessage(channel=CHANNEL, text="logged")
    api_error(lambda: client.chat_postMessage(channel="nowhere", text="lost"))
    posts = slack.calls("chat.postMessage")
    assert [(c.status, c.error, c.ok) for c in posts] == [
        (200, None, True),
        (200, "channel_not_found", False),
    ]
    assert posts[0].params == {"channel": CHANNEL, "text": "logged"}
    assert before <= posts[0].at <= time.time()
    assert slack.calls("auth.test") == []


# --- response URLs --------------------------------------------------------------------------


def test_response_url_replaces_the_original_message(slack: SlackStandIn, client: WebClient) -> None:
    """replace_original rewrites the message the click came from, as Bolt's respond() sends it."""
    posted = client.chat_postMessage(channel=CHANNEL, text="pick one", blocks=[section("?")])
    url = slack.new_response_url(CHANNEL, USER, message_ts=posted["ts"])
    answer = WebhookClient(url).send(
        text="answered", blocks=[section("thanks")], replace_original=True
    )
    assert (answer.status_code, answer.body) == (200, "ok")
    stored = slack.message(CHANNEL, posted["ts"])
    assert stored["text"] == "answered"
    assert stored["blocks"][0]["text"]["text"] == "thanks"
    assert slack.response_url_posts(url)[0]["replace_original"] is True


def test_response_url_is_ephemeral_by_default_and_can_post_in_channel(
    slack: SlackStandIn,
) -> None:
    """Without options a response is ephemeral to the user; in_channel posts a message."""
    url = slack.new_response_url(CHANNEL, USER)
    WebhookClient(url).send(text="just for you")
    WebhookClient(url).send(text="for everyone", response_type="in_channel")
    assert [e["text"] for e in slack.ephemerals(CHANNEL, USER)] == ["just for you"]
    assert slack.ephemerals(CHANNEL, USER)[0]["via"] == "response_url"
    assert [m["text"] for m in slack.messages(CHANNEL)] == ["for everyone"]


def test_response_url_deletes_and_wears_out(slack: SlackStandIn, client: WebClient) -> None:
    """delete_original removes the message; a response URL takes five posts, then used_url."""
    posted = client.chat_postMessage(channel=CHANNEL, text="short-lived")
    url = slack.new_response_url(CHANNEL, USER, message_ts=posted["ts"])
    webhook = WebhookClient(url)
    assert webhook.send_dict({"delete_original": True}).status_code == 200
    assert slack.messages(CHANNEL) == []
    for _ in range(4):
        assert webhook.send(text="again").status_code == 200
    worn = webhook.send(text="once too often")
    assert (worn.status_code, worn.body) == (404, "used_url")
    assert len(slack.response_url_posts(url)) == 5


def test_response_url_refuses_bad_content(slack: SlackStandIn) -> None:
    """The same block limits apply to responses; the error comes back as the body."""
    url = slack.new_response_url(CHANNEL, USER)
    answer = WebhookClient(url).send(text="x", blocks=[section("x" * 3001)])
    assert (answer.status_code, answer.body) == (400, "invalid_blocks")
    assert slack.ephemerals() == []


# --- concurrency ----------------------------------------------------------------------------


def test_concurrent_posts_get_unique_increasing_ts(slack: SlackStandIn) -> None:
    """Many threads posting at once: every message stored once, every ts unique."""
    channels = [f"C0PAR{n:04d}" for n in range(8)]
    answers: list[str] = []
    lock = threading.Lock()

    def post(channel: str) -> None:
        client = client_for(slack)
        for number in range(5):
            ts = client.chat_postMessage(channel=channel, text=f"{channel}-{number}")["ts"]
            with lock:
                answers.append(ts)

    threads = [threading.Thread(target=post, args=(c,)) for c in channels]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == len(set(answers)) == 40
    for channel in channels:
        stored = slack.messages(channel)
        assert [m["text"] for m in stored] == [f"{channel}-{n}" for n in range(5)]
        assert [m["ts"] for m in stored] == sorted(m["ts"] for m in stored)


def test_wait_for_messages_returns_once_they_arrive(slack: SlackStandIn) -> None:
    """wait_for_messages blocks until enough messages are stored, or times out."""
    timer = threading.Timer(
        0.1, lambda: client_for(slack).chat_postMessage(channel=CHANNEL, text="x")
    )
    timer.start()
    try:
        assert [m["text"] for m in slack.wait_for_messages(CHANNEL, 1, timeout=5)] == ["x"]
    finally:
        timer.join()
    with pytest.raises(TimeoutError):
        slack.wait_for_messages(CHANNEL, 2, timeout=0.1)


# --- as strict as Slack ----------------------------------------------------------------------


def mrkdwn(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text, **extra}


def plain(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, **extra}


@pytest.mark.parametrize(
    ("block", "where", "why"),
    [
        (
            {"type": "section", "text": mrkdwn("hi", emoji=True)},
            "/blocks/0/text",
            "invalid additional property: emoji",
        ),
        (
            {"type": "section", "text": plain("hi", verbatim=True)},
            "/blocks/0/text",
            "invalid additional property: verbatim",
        ),
        (
            {"type": "section", "text": mrkdwn("hi"), "colour": "red"},
            "/blocks/0",
            "invalid additional property: colour",
        ),
        (
            {"type": "actions", "elements": [{**button("a"), "label": "x"}]},
            "/blocks/0/elements/0",
            "invalid additional property: label",
        ),
        (
            {"type": "actions", "elements": [{**select("m", 1), "emoji": True}]},
            "/blocks/0/elements/0",
            "invalid additional property: emoji",
        ),
        (
            {
                "type": "actions",
                "elements": [
                    {
                        **select("m", 1),
                        "options": [{"text": plain("a"), "value": "1", "selected": True}],
                    }
                ],
            },
            "/blocks/0/elements/0/options/0",
            "invalid additional property: selected",
        ),
        (
            {"type": "section", "text": plain("hi", emoji="no")},
            "/blocks/0/text/emoji",
            "must be a boolean",
        ),
    ],
)
def test_unknown_properties_are_invalid_additional_properties(
    client: WebClient, block: dict[str, Any], where: str, why: str
) -> None:
    """Slack's schemas define every property; any other one is refused, naming it."""
    error = api_error(lambda: client.chat_postMessage(channel=CHANNEL, text="x", blocks=[block]))
    assert error.response["error"] == "invalid_blocks"
    assert error.response["response_metadata"]["messages"] == [f"[ERROR] {where}: {why}"]


@pytest.mark.parametrize(
    "block",
    [
        {"type": "section", "text": mrkdwn(" \n\t ")},
        {"type": "section", "fields": [mrkdwn("ok"), plain("   ")]},
        {"type": "context", "elements": [plain("\u00a0")]},
        {"type": "header", "text": plain("  ")},
        {"type": "actions", "elements": [button("a", text=" ")]},
        {"type": "markdown", "text": "  "},
    ],
)
def test_whitespace_only_text_is_refused(client: WebClient, block: dict[str, Any]) -> None:
    error = api_error(lambda: client.chat_postMessage(channel=CHANNEL, text="x", blocks=[block]))
    assert error.response["error"] == "invalid_blocks"
    assert "more than whitespace" in error.response["response_metadata"]["messages"][0]


IMAGE: dict[str, Any] = {"type": "image", "image_url": "https://example.com/a.png", "alt_text": "a"}


@pytest.mark.parametrize(
    ("block", "why"),
    [
        ({"type": "context", "elements": [button("a")]}, "not 'button'"),
        ({"type": "actions", "elements": [IMAGE]}, "a image cannot go in a actions block"),
        (
            {"type": "actions", "elements": [{"type": "plain_text_input", "action_id": "t"}]},
            "a plain_text_input cannot go in a actions block",
        ),
        (
            {"type": "section", "text": mrkdwn("x"), "accessory": {"type": "file_input"}},
            "a file_input cannot go in a section block",
        ),
        (
            {"type": "input", "label": plain("x"), "element": button("a")},
            "a button cannot go in a input block",
        ),
    ],
)
def test_elements_only_go_in_blocks_that_take_them(
    client: WebClient, block: dict[str, Any], why: str
) -> None:
    error = api_error(lambda: client.chat_postMessage(channel=CHANNEL, text="x", blocks=[block]))
    assert error.response["error"] == "invalid_blocks"
    assert why in error.response["response_metadata"]["messages"][0]


def test_what_slack_takes_is_still_taken(client: WebClient) -> None:
    """Images in context and as an accessory, selects in actions, emoji flags on plain text."""
    blocks: list[dict[str, Any]] = [
        {"type": "context", "elements": [IMAGE, plain("a", emoji=False), mrkdwn("*b*")]},
        {"type": "section", "text": mrkdwn("c", verbatim=True), "accessory": IMAGE},
        {"type": "actions", "elements": [button("a"), select("m", 3)]},
        {"type": "section", "text": plain("d"), "accessory": button("b")},
    ]
    assert validate_blocks(blocks) is None
    client.chat_postMessage(channel=CHANNEL, text="x", blocks=blocks)


def test_views_refuse_unknown_view_properties(client: WebClient) -> None:
    view = {"type": "home", "blocks": [section("x")], "title": plain("Home")}
    error = api_error(lambda: client.views_publish(user_id=USER, view=view))
    assert error.response["error"] == "invalid_arguments"
    assert (
        "invalid additional property: title" in error.response["response_metadata"]["messages"][0]
    )


def test_a_bot_removed_from_a_channel_is_not_in_channel(
    slack: SlackStandIn, client: WebClient
) -> None:
    """Member of every channel at first; removed, it cannot post, edit or read there."""
    ts = client.chat_postMessage(channel=CHANNEL, text="before")["ts"]
    slack.remove_bot(CHANNEL)
    assert not slack.is_member(CHANNEL) and slack.is_member("C0OTHER1")
    refused = [
        lambda: client.chat_postMessage(channel=CHANNEL, text="x"),
        lambda: client.chat_update(channel=CHANNEL, ts=ts, text="x"),
        lambda: client.chat_postEphemeral(channel=CHANNEL, user=USER, text="x"),
        lambda: client.conversations_history(channel=CHANNEL),
    ]
    for call in refused:
        assert api_error(call).response["error"] == "not_in_channel"
    assert client.conversations_info(channel=CHANNEL)["channel"]["is_member"] is False
    client.chat_postMessage(channel="C0OTHER1", text="elsewhere")
    slack.invite_bot(CHANNEL)
    client.chat_update(channel=CHANNEL, ts=ts, text="after")
    assert slack.message(CHANNEL, ts)["text"] == "after"


class StepClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("method", "per_minute"),
    [
        ("chat.update", 50),
        ("conversations.history", 50),
        ("conversations.info", 50),
        ("chat.postEphemeral", 100),
        ("views.publish", 100),
        ("auth.test", 100),
        ("files.getUploadURLExternal", 100),
        ("files.completeUploadExternal", 100),
    ],
)
def test_every_method_has_its_rate_tier(method: str, per_minute: int) -> None:
    """A minute's calls as a burst, then 429 with Retry-After until the bucket refills."""
    clock = StepClock()
    with SlackStandIn(TOKEN, rate_limit_per_channel=None, tier_scale=1.0, clock=clock) as slack:
        assert slack.method_rate(method) == per_minute
    # A tenth of Slack's speed keeps the burst short: 5 calls a minute for Tier 3, 10 for Tier 4.
    slow = per_minute // 10
    with SlackStandIn(TOKEN, rate_limit_per_channel=None, tier_scale=0.1, clock=clock) as slack:
        for _ in range(slow):
            httpx.post(f"{slack.api_url}{method}", data={"token": TOKEN})
        over = httpx.post(f"{slack.api_url}{method}", data={"token": TOKEN})
        assert over.status_code == 429 and over.json()["error"] == "ratelimited"
        assert int(over.headers["Retry-After"]) == 60 // slow
        clock.now += 60 / slow
        again = httpx.post(f"{slack.api_url}{method}", data={"token": TOKEN})
        assert again.status_code == 200
        assert slack.rate_limited_count == 1


def test_tiers_follow_the_channel_rate_unless_told() -> None:
    """A stand-in 20 times as fast as Slack per channel is 20 times as fast per method too."""
    with SlackStandIn(TOKEN, rate_limit_per_channel=20.0) as fast:
        assert fast.method_rate("chat.update") == 1000
        assert fast.method_rate("chat.postMessage") is None  # limited per channel instead
    with SlackStandIn(TOKEN, rate_limit_per_channel=None) as unlimited:
        assert unlimited.method_rate("chat.update") is None
    with SlackStandIn(TOKEN, rate_limit_per_channel=None, tier_scale=2.0) as scaled:
        scaled.register_method("reactions.add", lambda params: {}, tier=2)
        assert scaled.method_rate("reactions.add") == 40


def test_oauth_code_is_traded_once_for_a_workspace_token(slack: SlackStandIn) -> None:
    """oauth.v2.access answers in Slack's shape; the token works and auth.test names its team."""
    oauth = WebClient(base_url=slack.api_url)
    code = slack.issue_code("T0OTHER01", team_name="other")
    answer = oauth.oauth_v2_access(
        client_id=slack.client_id, client_secret=slack.client_secret, code=code
    )
    token = answer["access_token"]
    assert token.startswith("xoxb-")
    assert answer["token_type"] == "bot"
    assert answer["team"] == {"name": "other", "id": "T0OTHER01"}
    assert answer["bot_user_id"] == slack.bot_user_id
    assert answer["app_id"] == slack.app_id
    assert slack.tokens_of("T0OTHER01") == [token]
    identity = WebClient(token=token, base_url=slack.api_url).auth_test()
    assert identity["team_id"] == "T0OTHER01"
    assert WebClient(token=TOKEN, base_url=slack.api_url).auth_test()["team_id"] == slack.team_id
    assert [call.method for call in slack.calls_with_token(token)] == ["auth.test"]
    with pytest.raises(SlackApiError) as reused:
        oauth.oauth_v2_access(
            client_id=slack.client_id, client_secret=slack.client_secret, code=code
        )
    assert reused.value.response["error"] == "invalid_code"


def test_oauth_needs_the_client_credentials(slack: SlackStandIn) -> None:
    oauth = WebClient(base_url=slack.api_url)
    code = slack.issue_code("T0OTHER01")
    with pytest.raises(SlackApiError) as refused:
        oauth.oauth_v2_access(client_id=slack.client_id, client_secret="wrong", code=code)
    assert refused.value.response["error"] == "bad_client_secret"
    assert slack.tokens_of("T0OTHER01") == []


def test_revoked_workspace_tokens_are_refused(slack: SlackStandIn) -> None:
    oauth = WebClient(base_url=slack.api_url)
    code = slack.issue_code("T0OTHER01")
    token = oauth.oauth_v2_access(
        client_id=slack.client_id, client_secret=slack.client_secret, code=code
    )["access_token"]
    slack.revoke_team("T0OTHER01")
    with pytest.raises(SlackApiError) as refused:
        WebClient(token=token, base_url=slack.api_url).auth_test()
    assert refused.value.response["error"] == "token_revoked"
    assert WebClient(token=TOKEN, base_url=slack.api_url).auth_test()["ok"]
