"""A simulated Slack user: sends the bot the signed HTTP requests Slack sends on their behalf.

Clicks and menu choices arrive as form-encoded `payload=<json>` (`block_actions`), slash commands
as form fields, events as a JSON Events API envelope; each is signed with the app's signing secret
(`X-Slack-Request-Timestamp`, `X-Slack-Signature: v0=<hex HMAC-SHA256>`) and posted to the bot's
request URL. Payload shapes follow Slack's interaction, slash command and Events API references
and bolt-python's own test fixtures.

Slack waits 3 seconds for the answer. An event that is not answered in time, that cannot be
delivered, or that gets a non-2xx answer is sent again, up to three times, with
`X-Slack-Retry-Num` and `X-Slack-Retry-Reason` (a fresh timestamp and signature each time;
Slack waits about 1 and 5 minutes before the later retries, here shortened to `retry_delays`).
A click or a command is never retried by Slack: the user sees an error instead, and the result
says `error="http_timeout"`; `retry_interactions=True` retries them too, to test idempotency.

A click's payload carries the message as Slack stores it, text HTML-escaped: in `message.text`
and in the text objects of `message.blocks`, `&`, `<` and `>` arrive as `&amp;`, `&lt;` and
`&gt;` (mrkdwn and the message text keep their entities and `<@U…>`, `<#C…>`, `<!…>` and link
markup as they are; plain text is escaped whole).

With a `SlackStandIn`, the payloads carry response URLs the stand-in serves, and a click on a
message the stand-in holds finds its channel by itself. One `SlackUser` may be used from many
threads: each request has its own connection.
"""

import hashlib
import hmac
import http.client
import json
import re
import secrets
import string
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.demo.client import HttpAnswer, post
from bot.demo.standin import SlackStandIn

JsonDict = dict[str, Any]

SLACK_ACK_TIMEOUT = 3.0
SLACK_RETRIES = 3
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

_ID_ALPHABET = string.ascii_uppercase + string.digits


def sign(signing_secret: str, timestamp: str, body: str) -> str:
    """Slack's v0 request signature of `body` sent at `timestamp`."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Delivery:
    """What one request Slack sent got back from the bot, after any retries.

    `status` is the HTTP status, None when no answer came in time or at all; `headers` have
    lower-case names; `elapsed` runs from the first attempt to the last answer or give-up;
    `error` is None on success, else why the last attempt failed, in Slack's
    X-Slack-Retry-Reason words: http_timeout, connection_failed, http_error. `response_url` is
    the one the request carried (clicks and commands).
    """

    status: int | None
    body: str
    headers: dict[str, str]
    elapsed: float
    attempts: int
    error: str | None
    response_url: str | None = None

    @property
    def ok(self) -> bool:
        """True when the bot acknowledged in time with a 2xx."""
        return self.status is not None and 200 <= self.status < 300

    def json(self) -> Any:
        """The answer's body parsed as JSON."""
        return json.loads(self.body)


class SlackUser:
    """One person in the workspace, clicking, choosing, typing commands and opening App Home."""

    def __init__(
        self,
        events_url: str,
        signing_secret: str,
        *,
        user_id: str = "U0TESTER1",
        user_name: str = "tester",
        standin: SlackStandIn | None = None,
        team_id: str | None = None,
        team_domain: str | None = None,
        api_app_id: str | None = None,
        verification_token: str = "legacy-verification-token",
        default_channel: str = "C0GENERAL",
        ack_timeout: float = SLACK_ACK_TIMEOUT,
        max_retries: int = SLACK_RETRIES,
        retry_delays: Sequence[float] = (0.0, 1.0, 5.0),
        retry_interactions: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ack_timeout <= 0:
            raise ValueError("ack_timeout must be positive")
        if max_retries < 0:
            raise ValueError("max_retries cannot be negative")
        self.events_url = events_url
        self.user_id = user_id
        self.user_name = user_name
        self.standin = standin
        self.team_id = team_id or (standin.team_id if standin else "T0001")
        self.team_domain = team_domain or (standin.team_domain if standin else "hitl-test")
        self.api_app_id = api_app_id or (standin.app_id if standin else "A0HITL")
        self.default_channel = default_channel
        self._secret = signing_secret
        self._verification_token = verification_token
        self._ack_timeout = ack_timeout
        self._max_retries = max_retries
        self._retry_delays = tuple(retry_delays) or (0.0,)
        self._retry_interactions = retry_interactions
        self._clock = clock

    # --- clicks and menus -------------------------------------------------------------------

    def click_button(
        self,
        message: JsonDict,
        action_id: str,
        *,
        value: str | None = None,
        channel_id: str | None = None,
        user_id: str | None = None,
        user_name: str | None = None,
        timestamp: int | None = None,
        forge_signature: bool = False,
    ) -> Delivery:
        """Click the button `action_id` of `message` (LookupError if the message has none).

        `timestamp` (unix seconds) replaces the current time in the signed headers, to send a
        stale request; `forge_signature` signs with the wrong secret. Both work on every sender.
        """
        payload = self.button_click_payload(
            message,
            action_id,
            value=value,
            channel_id=channel_id,
            user_id=user_id,
            user_name=user_name,
        )
        return self.send_interaction(payload, timestamp=timestamp, forge_signature=forge_signature)

    def select_option(
        self,
        message: JsonDict,
        action_id: str,
        option_value: str,
        *,
        channel_id: str | None = None,
        user_id: str | None = None,
        user_name: str | None = None,
        timestamp: int | None = None,
        forge_signature: bool = False,
    ) -> Delivery:
        """Choose the option worth `option_value` in the static select `action_id` of `message`."""
        payload = self.option_select_payload(
            message,
            action_id,
            option_value,
            channel_id=channel_id,
            user_id=user_id,
            user_name=user_name,
        )
        return self.send_interaction(payload, timestamp=timestamp, forge_signature=forge_signature)

    def button_click_payload(
        self,
        message: JsonDict,
        action_id: str,
        *,
        value: str | None = None,
        channel_id: str | None = None,
        user_id: str | None = None,
        user_name: str | None = None,
    ) -> JsonDict:
        """The block_actions payload of a click, to send as is or to tamper with first."""
        block_id, button = _find_element(message, action_id)
        if button.get("type") != "button":
            raise LookupError(f"{action_id!r} is a {button.get('type')}, not a button")
        if value is not None and value != button.get("value"):
            raise ValueError(
                f"button {action_id!r} sends {button.get('value')!r}, not {value!r}; "
                "to forge a value, edit the payload of button_click_payload"
            )
        action: JsonDict = {
            "action_id": action_id,
            "block_id": block_id,
            "text": _copy_json(button["text"]),
            "type": "button",
            "action_ts": _slack_ts(self._clock()),
        }
        if "value" in button:
            action["value"] = button["value"]
        if "style" in button:
            action["style"] = button["style"]
        return self._block_actions(message, action, channel_id, user_id, user_name)

    def option_select_payload(
        self,
        message: JsonDict,
        action_id: str,
        option_value: str,
        *,
        channel_id: str | None = None,
        user_id: str | None = None,
        user_name: str | None = None,
    ) -> JsonDict:
        """The block_actions payload of choosing an option of a static select."""
        block_id, menu = _find_element(message, action_id)
        if menu.get("type") != "static_select":
            raise LookupError(f"{action_id!r} is a {menu.get('type')}, not a static_select")
        options = list(menu.get("options") or [])
        for group in menu.get("option_groups") or []:
            options += group.get("options") or []
        chosen = next((o for o in options if o.get("value") == option_value), None)
        if chosen is None:
            raise LookupError(f"menu {action_id!r} offers no option worth {option_value!r}")
        action: JsonDict = {
            "type": "static_select",
            "action_id": action_id,
            "block_id": block_id,
            "selected_option": {"text": _copy_json(chosen["text"]), "value": chosen["value"]},
            "action_ts": _slack_ts(self._clock()),
        }
        if "placeholder" in menu:
            action["placeholder"] = _copy_json(menu["placeholder"])
        return self._block_actions(message, action, channel_id, user_id, user_name)

    def send_interaction(
        self, payload: JsonDict, *, timestamp: int | None = None, forge_signature: bool = False
    ) -> Delivery:
        """Post an interaction payload the way Slack does: form-encoded `payload=<json>`."""
        body = urllib.parse.urlencode({"payload": json.dumps(payload, separators=(",", ":"))})
        return self.post_signed(
            body,
            content_type=FORM,
            retry=self._retry_interactions,
            timestamp=timestamp,
            forge_signature=forge_signature,
            response_url=payload.get("response_url"),
        )

    # --- commands and events ----------------------------------------------------------------

    def slash_command(
        self,
        text: str,
        *,
        command: str = "/hitl",
        channel_id: str | None = None,
        channel_name: str | None = None,
        user_id: str | None = None,
        user_name: str | None = None,
        timestamp: int | None = None,
        forge_signature: bool = False,
    ) -> Delivery:
        """Type `<command> <text>` in a channel."""
        channel = channel_id or self.default_channel
        user = user_id or self.user_id
        fields = {
            "token": self._verification_token,
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel,
            "channel_name": channel_name or _channel_name(channel),
            "user_id": user,
            "user_name": user_name or self.user_name,
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": self._response_url(channel, user, None, kind="commands"),
            "trigger_id": self._trigger_id(),
        }
        return self.post_signed(
            urllib.parse.urlencode(fields),
            content_type=FORM,
            retry=self._retry_interactions,
            timestamp=timestamp,
            forge_signature=forge_signature,
            response_url=fields["response_url"],
        )

    def event(
        self,
        event: JsonDict,
        *,
        event_id: str | None = None,
        timestamp: int | None = None,
        forge_signature: bool = False,
    ) -> Delivery:
        """Deliver `event` in an Events API envelope (Slack retries these)."""
        now = self._clock()
        inner = _copy_json(event)
        inner.setdefault("event_ts", _slack_ts(now))
        envelope = {
            "token": self._verification_token,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.api_app_id,
            "event": inner,
            "type": "event_callback",
            "event_id": event_id or "Ev" + _random_id(10),
            "event_time": int(now),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.standin.bot_user_id if self.standin else "U0BOT",
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": "4-" + secrets.token_urlsafe(24),
        }
        return self.post_signed(
            json.dumps(envelope),
            content_type=JSON,
            retry=True,
            timestamp=timestamp,
            forge_signature=forge_signature,
        )

    def app_home_opened(self, *, user_id: str | None = None, tab: str = "home") -> Delivery:
        """Open the app's Home tab (or Messages tab); carries the published view if there is one."""
        user = user_id or self.user_id
        event: JsonDict = {
            "type": "app_home_opened",
            "user": user,
            "channel": "D" + user[1:],
            "tab": tab,
        }
        if tab == "home" and self.standin is not None:
            current = self.standin.views(user)
            if current is not None:
                event["view"] = current
        return self.event(event)

    # --- the wire ---------------------------------------------------------------------------

    def post_signed(
        self,
        body: str,
        *,
        content_type: str,
        retry: bool,
        timestamp: int | None = None,
        forge_signature: bool = False,
        response_url: str | None = None,
    ) -> Delivery:
        """Sign and post `body`; with `retry`, resend it like Slack when the bot fails to ack."""
        started = time.monotonic()
        retries = self._max_retries if retry else 0
        attempts = 0
        reason: str | None = None
        while True:
            headers = self._signed_headers(body, content_type, timestamp, forge_signature)
            if attempts and reason is not None:
                headers["X-Slack-Retry-Num"] = str(attempts)
                headers["X-Slack-Retry-Reason"] = reason
            attempts += 1
            response: HttpAnswer | None = None
            try:
                response = post(self.events_url, body.encode(), headers, timeout=self._ack_timeout)
            except TimeoutError:
                reason = "http_timeout"
            except (OSError, http.client.HTTPException):  # refused, reset, closed early
                reason = "connection_failed"
            else:
                if response.ok or response.headers.get("x-slack-no-retry") == "1":
                    return _delivery(response, started, attempts, None, response_url)
                reason = "http_error"
            if attempts > retries:
                return _delivery(response, started, attempts, reason, response_url)
            time.sleep(self._retry_delays[min(attempts - 1, len(self._retry_delays) - 1)])

    def _signed_headers(
        self, body: str, content_type: str, timestamp: int | None, forge: bool
    ) -> dict[str, str]:
        stamp = str(int(self._clock()) if timestamp is None else int(timestamp))
        secret = self._secret + "-forged" if forge else self._secret
        return {
            "Content-Type": content_type,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": sign(secret, stamp, body),
        }

    # --- payload parts ----------------------------------------------------------------------

    def _block_actions(
        self,
        message: JsonDict,
        action: JsonDict,
        channel_id: str | None,
        user_id: str | None,
        user_name: str | None,
    ) -> JsonDict:
        ts = message.get("ts")
        if not isinstance(ts, str):
            raise ValueError("the message has no ts: pass the message as Slack stored it")
        channel = channel_id or message.get("channel")
        if channel is None and self.standin is not None:
            channel = self.standin.channel_of(ts)
        if not isinstance(channel, str):
            raise ValueError(f"cannot tell the channel of message {ts}: pass channel_id")
        user = user_id or self.user_id
        name = user_name or (self.user_name if user == self.user_id else user.lower())
        shown = {key: _copy_json(value) for key, value in message.items() if key != "history"}
        if isinstance(shown.get("text"), str):
            shown["text"] = escape_markup(shown["text"])
        if isinstance(shown.get("blocks"), list):
            shown["blocks"] = [_escape_texts(block) for block in shown["blocks"]]
        return {
            "type": "block_actions",
            "user": {"id": user, "username": name, "name": name, "team_id": self.team_id},
            "api_app_id": self.api_app_id,
            "token": self._verification_token,
            "container": {
                "type": "message",
                "message_ts": ts,
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "trigger_id": self._trigger_id(),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": _channel_name(channel)},
            "message": shown,
            "state": {"values": {}},
            "response_url": self._response_url(channel, user, ts, kind="actions"),
            "actions": [action],
        }

    def _response_url(self, channel: str, user: str, message_ts: str | None, *, kind: str) -> str:
        if self.standin is not None:
            return self.standin.new_response_url(channel, user, message_ts=message_ts)
        return (
            f"https://hooks.slack.com/{kind}/{self.team_id}/"
            f"{secrets.randbelow(10**13)}/{secrets.token_urlsafe(18)}"
        )

    def _trigger_id(self) -> str:
        stamp = f"{int(self._clock())}{secrets.randbelow(1000):03d}"
        return f"{stamp}.{secrets.randbelow(10**13)}.{secrets.token_hex(16)}"


# Slack's control sequences in message text: mentions, channels, specials, dates and links.
_MARKUP = re.compile(r"<(?:[@#!][^<>]*|(?:https?|mailto):[^<>]*)>")
_ENTITY = re.compile(r"&(?!(?:amp|lt|gt);)")


def escape_plain(text: str) -> str:
    """Plain text as Slack stores and sends it back: `&`, `<` and `>` as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_markup(text: str) -> str:
    """Message text or mrkdwn as Slack sends it back: entities and `<…>` markup stay as they
    are, any other `&`, `<` or `>` becomes an entity."""
    parts: list[str] = []
    position = 0
    for found in _MARKUP.finditer(text):
        parts.append(_escape_loose(text[position : found.start()]))
        parts.append(found.group())
        position = found.end()
    parts.append(_escape_loose(text[position:]))
    return "".join(parts)


def _escape_loose(text: str) -> str:
    return _ENTITY.sub("&amp;", text).replace("<", "&lt;").replace(">", "&gt;")


def _escape_texts(value: Any) -> Any:
    """A copy of a block with every text object's text escaped as Slack sends it."""
    if isinstance(value, list):
        return [_escape_texts(item) for item in value]
    if not isinstance(value, dict):
        return value
    escaped = {key: _escape_texts(item) for key, item in value.items()}
    kind, text = value.get("type"), value.get("text")
    if kind == "plain_text" and isinstance(text, str):
        escaped["text"] = escape_plain(text)
    elif kind == "mrkdwn" and isinstance(text, str):
        escaped["text"] = escape_markup(text)
    return escaped


def _copy_json(value: Any) -> Any:
    # What Slack sends is a fresh parse: never share a dict with the caller's message.
    return json.loads(json.dumps(value))


def _find_element(message: JsonDict, action_id: str) -> tuple[str, JsonDict]:
    for block in message.get("blocks") or []:
        candidates = list(block.get("elements") or []) if block.get("type") == "actions" else []
        if isinstance(block.get("accessory"), dict):
            candidates.append(block["accessory"])
        for element in candidates:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return str(block.get("block_id", "")), element
    raise LookupError(
        f"the message {message.get('ts')} has no element with action_id {action_id!r}"
    )


def _delivery(
    response: HttpAnswer | None,
    started: float,
    attempts: int,
    error: str | None,
    response_url: str | None,
) -> Delivery:
    elapsed = time.monotonic() - started
    if response is None:
        return Delivery(None, "", {}, elapsed, attempts, error, response_url)
    return Delivery(
        response.status,
        response.text,
        dict(response.headers),
        elapsed,
        attempts,
        error,
        response_url,
    )


def _slack_ts(seconds: float) -> str:
    return f"{seconds:.6f}"


def _channel_name(channel: str) -> str:
    return "directmessage" if channel.startswith("D") else channel.lower()


def _random_id(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))
