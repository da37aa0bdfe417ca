"""`hitl demo --web`: the demo's review channel as a web page on 127.0.0.1 that you click.

The page draws what the Slack stand-in holds for the review channel the way Slack would, roughly:
header, section, context, divider and actions blocks; mrkdwn with bold, italics, code, mentions,
links and dates; buttons and static selects with their options and option groups; the chart the
retrain uploads; the replies only you see. A click or a `/hitl` command typed on the page goes
to this server, which sends the bot the signed request Slack would send (`SlackUser`), so the bot
cannot tell the page from Slack.

Safety, because a page on localhost is reachable from every site the browser visits:

* the server listens on 127.0.0.1 only and answers only requests whose Host header names it
  (a DNS-rebound name gets 421 and never sees the page or its token);
* everything rendered is HTML-escaped first; markup is added around escaped text only, links
  only for http(s) URLs; the Content-Security-Policy allows scripts, styles and images from
  this origin only, and no framing;
* a POST needs the random token the page carries (`X-Demo-Token`), a JSON body, and an Origin
  (when the browser sends one) of this server; a custom header plus JSON means another site's
  form or script cannot even send it without a CORS preflight, which is never granted.
"""

import contextlib
import hmac
import html
import http.server
import json
import random
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bot.demo.run import (
    CHANNEL,
    REVIEWERS,
    TASK,
    DemoPlan,
    DemoSummary,
    Streamed,
    find_choice,
    finish_demo,
    plan_demo,
    prompt_item,
    stream_items,
    wire_demo_bot,
)
from bot.demo.simulator import Delivery, SlackUser
from bot.demo.standin import SlackStandIn
from bot.demo.wiring import WiredBot
from bot.errors import BadInputError
from bot.states import AnswerKind, AnswerSource
from bot.storage.schema import Answer, Item, Task

JsonDict = dict[str, Any]

WEB_USER = "U0YOU0001"
WEB_USER_NAME = "you"
MAX_BODY = 16_384
MAX_ENTRIES = 300  # the newest messages shown; a very long demo keeps the page light
REVIEWER_PACE = 4.0  # seconds between two answers of one simulated reviewer in web mode
POST_TIMEOUT = 10.0

_STATIC = {
    "/static/web.css": ("web_page.css", "text/css; charset=utf-8"),
    "/static/web.js": ("web_page.js", "text/javascript; charset=utf-8"),
}
_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif"})
_SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)

# --- mrkdwn and Block Kit, drawn as HTML ------------------------------------------------------

EMOJI = {
    "arrow_down": "⬇️",
    "arrow_up": "⬆️",
    "bar_chart": "📊",
    "chart_with_upwards_trend": "📈",
    "level_slider": "🎚️",
    "mag": "🔍",
    "pencil2": "✏️",
    "robot_face": "🤖",
    "rocket": "🚀",
    "seedling": "🌱",
    "shield": "🛡️",
    "tada": "🎉",
    "warning": "⚠️",
    "white_check_mark": "✅",
    "x": "❌",
    "zzz": "💤",
}
_EMOJI_CODE = re.compile(r":([a-z0-9_+-]+):")
_ANGLE_MARKUP = re.compile(r"<([^<>]*)>")
_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w])")
_STRIKE = re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])")


def esc(text: object) -> str:
    """HTML-escaped text, quotes included (safe in element content and quoted attributes)."""
    return html.escape(str(text), quote=True)


def unescape_slack(text: str) -> str:
    """Slack's three entities back to characters (`&amp;` last, so `&amp;lt;` stays `&lt;`)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _emoji(escaped: str) -> str:
    return _EMOJI_CODE.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), escaped)


def _inline(raw: str) -> str:
    """Text between `<…>` markup: entities undone, escaped, then simple emphasis added."""
    text = _emoji(esc(unescape_slack(raw)))
    parts = _CODE.split(text)  # odd positions are code spans: no emphasis inside them
    for number, part in enumerate(parts):
        if number % 2:
            parts[number] = f"<code>{part}</code>"
        else:
            part = _BOLD.sub(r"<b>\1</b>", part)
            part = _ITALIC.sub(r"<i>\1</i>", part)
            parts[number] = _STRIKE.sub(r"<s>\1</s>", part)
    return "".join(parts).replace("\n", "<br>")


def _markup(inner: str) -> str:
    """One `<…>`: a mention, a channel, a special mention, a date or a link."""
    target, _, label = inner.partition("|")
    shown = unescape_slack(label)
    if target.startswith("@"):
        return f'<span class="mention">@{esc(shown or target[1:])}</span>'
    if target.startswith("#"):
        return f'<span class="mention">#{esc(shown or target[1:].lower())}</span>'
    if target.startswith("!date^"):
        return f'<span class="date">{esc(shown or target)}</span>'
    if target.startswith("!subteam^"):
        return f'<span class="mention">@{esc(shown or "group")}</span>'
    if target.startswith("!"):
        return f'<span class="mention">@{esc(target[1:])}</span>'
    url = unescape_slack(target)
    if urllib.parse.urlsplit(url).scheme in ("http", "https"):
        return (
            f'<a href="{esc(url)}" rel="noopener noreferrer nofollow" target="_blank">'
            f"{esc(shown or url)}</a>"
        )
    return esc(shown or url)


def render_mrkdwn(text: str) -> str:
    """Slack mrkdwn as safe HTML: `&lt;` shows as `<`, and nothing in `text` becomes a tag."""
    out: list[str] = []
    position = 0
    for found in _ANGLE_MARKUP.finditer(text):
        out.append(_inline(text[position : found.start()]))
        out.append(_markup(found.group(1)))
        position = found.end()
    out.append(_inline(text[position:]))
    return "".join(out)


def render_text(obj: Any) -> str:
    """A text object: mrkdwn rendered, plain_text literal (emoji only when it asks for them)."""
    if not isinstance(obj, dict):
        return ""
    text = str(obj.get("text", ""))
    if obj.get("type") == "mrkdwn":
        return render_mrkdwn(text)
    shown = esc(text)
    if obj.get("emoji", True) is not False:
        shown = _emoji(shown)
    return shown.replace("\n", "<br>")


def _action_attrs(element: JsonDict) -> str:
    return f'data-action="{esc(element.get("action_id", ""))}"'


def _button(element: JsonDict) -> str:
    style = element.get("style")
    css = "btn" + (f" btn-{style}" if style in ("primary", "danger") else "")
    value = element.get("value")
    value_attr = f' data-value="{esc(value)}"' if isinstance(value, str) else ""
    if element.get("url"):
        return f'<span class="{css}">{render_text(element.get("text"))} ↗</span>'
    return (
        f'<button type="button" class="{css}" {_action_attrs(element)}{value_attr}>'
        f"{render_text(element.get('text'))}</button>"
    )


def _option(option: JsonDict) -> str:
    text = option.get("text")
    label = str(text.get("text", "")) if isinstance(text, dict) else ""
    return f'<option value="{esc(option.get("value", ""))}">{esc(label)}</option>'


def _select(element: JsonDict) -> str:
    placeholder = element.get("placeholder")
    prompt = str(placeholder.get("text", "")) if isinstance(placeholder, dict) else "Select…"
    parts = [f'<option value="" disabled selected>{esc(prompt)}</option>']
    parts += [_option(o) for o in element.get("options") or [] if isinstance(o, dict)]
    for group in element.get("option_groups") or []:
        if not isinstance(group, dict):
            continue
        label = group.get("label")
        name = str(label.get("text", "")) if isinstance(label, dict) else ""
        options = "".join(_option(o) for o in group.get("options") or [] if isinstance(o, dict))
        parts.append(f'<optgroup label="{esc(name)}">{options}</optgroup>')
    return f'<select class="menu" {_action_attrs(element)}>{"".join(parts)}</select>'


def render_element(element: Any) -> str:
    """An interactive element: a button, a static select or overflow menu, or a stand-in note."""
    if not isinstance(element, dict):
        return ""
    kind = element.get("type")
    if kind == "button":
        return _button(element)
    if kind in ("static_select", "overflow"):
        return _select(element)
    if kind == "image":
        return f'<span class="alt">[image: {esc(element.get("alt_text", ""))}]</span>'
    return f'<span class="alt">[{esc(kind)} not shown here]</span>'


def render_block(block: Any) -> str:
    """One Block Kit block as HTML (unknown kinds are left out, as an old client would)."""
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind == "header":
        return f'<div class="b-header">{render_text(block.get("text"))}</div>'
    if kind == "divider":
        return '<hr class="b-divider">'
    if kind == "markdown":
        return f'<div class="b-section">{render_mrkdwn(str(block.get("text", "")))}</div>'
    if kind == "section":
        body = ""
        if block.get("text") is not None:
            body += f'<div class="b-text">{render_text(block["text"])}</div>'
        fields = [f'<div class="b-field">{render_text(f)}</div>' for f in block.get("fields") or []]
        if fields:
            body += f'<div class="b-fields">{"".join(fields)}</div>'
        accessory = block.get("accessory")
        side = f'<div class="b-accessory">{render_element(accessory)}</div>' if accessory else ""
        return f'<div class="b-section"><div class="b-main">{body}</div>{side}</div>'
    if kind == "context":
        parts = []
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("type") == "image":
                parts.append(render_element(element))
            else:
                parts.append(f"<span>{render_text(element)}</span>")
        return f'<div class="b-context">{"".join(parts)}</div>'
    if kind == "actions":
        elements = "".join(render_element(e) for e in block.get("elements") or [])
        return f'<div class="b-actions">{elements}</div>'
    if kind == "image":
        return f'<div class="b-context">[image: {esc(block.get("alt_text", ""))}]</div>'
    return ""


def _clock(ts: str) -> str:
    try:
        return datetime.fromtimestamp(float(ts)).strftime("%H:%M:%S")
    except ValueError:
        return ""


def render_message(message: JsonDict, *, bot_name: str = "hitl-bot") -> str:
    """A channel message: who, when, "(edited)", then its blocks (or its text without blocks)."""
    ts = str(message.get("ts", ""))
    blocks = message.get("blocks") or []
    body = "".join(render_block(b) for b in blocks) if blocks else ""
    if not body:
        body = f'<div class="b-text">{render_mrkdwn(str(message.get("text", "")))}</div>'
    edited = ' <span class="edited">(edited)</span>' if message.get("edited") else ""
    state = ""
    item = prompt_item(message)
    if item is not None:
        state = f' data-open-item="{item}"'
    return _frame(
        ts,
        body,
        who=bot_name,
        app=True,
        extra=edited,
        css="msg",
        attrs=f'{state} data-ts="{esc(ts)}"',
    )


def render_ephemeral(ephemeral: JsonDict, *, bot_name: str = "hitl-bot") -> str:
    """A reply only the person sees (a command's answer, a click's note)."""
    ts = str(ephemeral.get("message_ts", ""))
    blocks = ephemeral.get("blocks") or []
    body = "".join(render_block(b) for b in blocks)
    if not body:
        body = f'<div class="b-text">{render_mrkdwn(str(ephemeral.get("text", "")))}</div>'
    note = '<div class="only-you">👁 Only visible to you</div>'
    return _frame(ts, note + body, who=bot_name, app=True, extra="", css="msg ephemeral", attrs="")


def render_file(record: JsonDict, *, ts: str) -> str:
    """A shared file: images inline from this server, anything else by name."""
    title = esc(record.get("title") or record.get("name") or "file")
    file_id = urllib.parse.quote(str(record.get("id", "")), safe="")
    if record.get("mimetype") in _IMAGE_TYPES:
        body = (
            f'<div class="file-title">{title}</div>'
            f'<img class="file-image" src="/files/{file_id}" alt="{title}">'
        )
    else:
        body = f'<div class="file-title">📎 <a href="/files/{file_id}">{title}</a></div>'
    return _frame(ts, body, who="hitl-bot", app=True, extra="", css="msg file", attrs="")


def _frame(ts: str, body: str, *, who: str, app: bool, extra: str, css: str, attrs: str) -> str:
    badge = ' <span class="app">APP</span>' if app else ""
    return (
        f'<div class="{css}"{attrs}><div class="avatar">h</div><div class="content">'
        f'<div class="meta"><b class="who">{esc(who)}</b>{badge} '
        f'<span class="time">{esc(_clock(ts))}</span>{extra}</div>{body}</div></div>'
    )


def _version(message: JsonDict) -> str:
    edited = message.get("edited")
    stamp = edited.get("ts") if isinstance(edited, dict) else ""
    return f"{message.get('ts')}:{stamp}:{len(message.get('history') or [])}"


def channel_feed(slack: SlackStandIn, *, channel: str, user: str) -> JsonDict:
    """What the page shows: every message, shared file and own ephemeral, oldest first."""
    entries: list[tuple[str, str, str, str]] = []  # (ts, key, version, html)
    messages = slack.messages(channel)
    open_items = 0
    for message in messages:
        ts = str(message["ts"])
        open_items += prompt_item(message) is not None
        entries.append((ts, f"m{ts}", _version(message), render_message(message)))
    for record in slack.files(channel):
        for share in (record.get("shares") or {}).get("public", {}).get(channel, []):
            ts = str(share.get("ts", ""))
            entries.append((ts, f"f{record['id']}", "1", render_file(record, ts=ts)))
    for ephemeral in slack.ephemerals(channel, user):
        ts = str(ephemeral.get("message_ts", ""))
        entries.append((ts, f"e{ts}", "1", render_ephemeral(ephemeral)))
    entries.sort(key=lambda entry: float(entry[0] or 0))
    hidden = max(0, len(entries) - MAX_ENTRIES)
    return {
        "entries": [
            {"key": key, "version": version, "html": body}
            for _, key, version, body in entries[hidden:]
        ],
        "hidden": hidden,
        "open": open_items,
        "messages": len(messages),
    }


# --- the server --------------------------------------------------------------------------------


@dataclass
class WebState:
    """What the page's server needs: the stand-in, the person who clicks, and the page token."""

    slack: SlackStandIn
    person: SlackUser
    channel: str
    task: str
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    origins: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()


class _WebServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, state: WebState) -> None:
        super().__init__(("127.0.0.1", port), _WebHandler)
        self.state = state


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _WebHandler(http.server.BaseHTTPRequestHandler):
    server: _WebServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        try:
            self._check_host()
            path = urllib.parse.urlsplit(self.path).path
            state = self.server.state
            if path == "/":
                self._send(200, _page(state).encode(), "text/html; charset=utf-8")
            elif path in _STATIC:
                name, content_type = _STATIC[path]
                body = resources.files("bot.demo").joinpath(name).read_bytes()
                self._send(200, body, content_type)
            elif path == "/favicon.ico":
                self._send(204, b"", "image/x-icon")
            elif path == "/api/channel":
                feed = channel_feed(state.slack, channel=state.channel, user=state.person.user_id)
                self._json(200, feed)
            elif path.startswith("/files/"):
                self._file(urllib.parse.unquote(path.removeprefix("/files/")))
            else:
                raise _Refused(404, "not found")
        except _Refused as refused:
            self._json(refused.status, {"ok": False, "error": refused.message})

    def do_POST(self) -> None:
        try:
            self._check_host()
            payload = self._checked_body()
            path = urllib.parse.urlsplit(self.path).path
            if path == "/api/click":
                self._json(200, self._click(payload))
            elif path == "/api/command":
                self._json(200, self._command(payload))
            else:
                raise _Refused(404, "not found")
        except _Refused as refused:
            self._json(refused.status, {"ok": False, "error": refused.message})

    # --- checks ---------------------------------------------------------------------------

    def _check_host(self) -> None:
        # Against DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own name.
        if self.headers.get("Host", "") not in self.server.state.hosts:
            raise _Refused(421, "unknown host; open the URL the demo printed")

    def _checked_body(self) -> JsonDict:
        state = self.server.state
        origin = self.headers.get("Origin")
        if origin is not None and origin not in state.origins:
            raise _Refused(403, "cross-origin request refused")
        if self.headers.get("Sec-Fetch-Site") not in (None, "same-origin"):
            raise _Refused(403, "cross-site request refused")
        token = self.headers.get("X-Demo-Token", "")
        if not hmac.compare_digest(token.encode(), state.token.encode()):
            raise _Refused(403, "missing or wrong page token; reload the page")
        if self.headers.get_content_type() != "application/json":
            raise _Refused(415, "send JSON")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError as exc:
            raise _Refused(411, "Content-Length required") from exc
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            raise _Refused(413, "body too large")
        try:
            payload = json.loads(self.rfile.read(length))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _Refused(400, "the body is not JSON") from exc
        if not isinstance(payload, dict):
            raise _Refused(400, "the body must be a JSON object")
        return payload

    # --- actions --------------------------------------------------------------------------

    def _click(self, payload: JsonDict) -> JsonDict:
        state = self.server.state
        ts, action_id, value = (payload.get(k) for k in ("ts", "action_id", "value"))
        if not all(isinstance(v, str) and v for v in (ts, action_id, value)):
            raise _Refused(400, "ts, action_id and value are required strings")
        assert isinstance(ts, str) and isinstance(action_id, str) and isinstance(value, str)
        try:
            message = state.slack.message(state.channel, ts)
        except KeyError as exc:
            raise _Refused(404, "that message is gone") from exc
        kind = _element_kind(message, action_id)
        if kind is None:
            raise _Refused(409, "that message has changed; look again")
        try:
            if kind == "button":
                delivery = state.person.click_button(
                    message, action_id, value=value, channel_id=state.channel
                )
            else:
                delivery = state.person.select_option(
                    message, action_id, value, channel_id=state.channel
                )
        except (LookupError, ValueError) as exc:
            raise _Refused(409, "that choice is not in the message any more") from exc
        return _delivered(delivery)

    def _command(self, payload: JsonDict) -> JsonDict:
        state = self.server.state
        text = payload.get("text")
        if not isinstance(text, str) or len(text) > 2000:
            raise _Refused(400, "text must be a string of at most 2000 characters")
        delivery = state.person.slash_command(text.strip(), channel_id=state.channel)
        return _delivered(delivery)

    # --- answers --------------------------------------------------------------------------

    def _file(self, file_id: str) -> None:
        state = self.server.state
        for record in state.slack.files(state.channel):
            if record.get("id") == file_id:
                mimetype = str(record.get("mimetype"))
                if mimetype in _IMAGE_TYPES:
                    self._send(200, bytes(record.get("content") or b""), mimetype)
                else:
                    self._send(
                        200,
                        bytes(record.get("content") or b""),
                        "application/octet-stream",
                        extra=(("Content-Disposition", "attachment"),),
                    )
                return
        raise _Refused(404, "no such file in this channel")

    def _json(self, status: int, payload: JsonDict) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        self._send(status, body, "application/json; charset=utf-8")

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        *,
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (*_SECURITY_HEADERS, *extra):
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # the demo's terminal shows its progress, not an access log


def _element_kind(message: JsonDict, action_id: str) -> str | None:
    for block in message.get("blocks") or []:
        elements = list(block.get("elements") or []) if block.get("type") == "actions" else []
        if isinstance(block.get("accessory"), dict):
            elements.append(block["accessory"])
        for element in elements:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                kind = element.get("type")
                return str(kind) if kind in ("button", "static_select") else None
    return None


def _delivered(delivery: Delivery) -> JsonDict:
    if delivery.ok:
        return {"ok": True}
    reason = delivery.error or f"HTTP {delivery.status}"
    return {"ok": False, "error": f"the bot did not acknowledge ({reason})"}


def _page(state: WebState) -> str:
    template = resources.files("bot.demo").joinpath("web_page.html").read_text("utf-8")
    values = {
        "token": esc(state.token),
        "channel": esc(state.channel.lower()),
        "task": esc(state.task),
        "user": esc(state.person.user_name),
        "user_id": esc(state.person.user_id),
    }
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template)


# --- simulated reviewers at a human pace ---------------------------------------------------------


class PacedReviewers:
    """Simulated reviewers who answer open prompts one at a time, a few seconds apart each."""

    def __init__(
        self,
        people: Sequence[SlackUser],
        slack: SlackStandIn,
        truth: Mapping[int, int],
        labels: int,
        *,
        noise: float,
        pace: float,
        rng: random.Random,
    ) -> None:
        self._people = list(people)
        self._slack = slack
        self._truth = truth
        self._labels = labels
        self._noise = noise
        self._pace = pace
        self._rng = rng
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hitl-web-reviewers", daemon=True)
        self.wrong = 0

    def start(self) -> "PacedReviewers":
        """Start answering (nothing happens without reviewers)."""
        if self._people:
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering; returns once no click is in flight."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(POST_TIMEOUT)

    def _run(self) -> None:
        # N reviewers together answer N prompts per `pace` seconds, the oldest open prompt first.
        interval = self._pace / len(self._people)
        turn = 0
        while not self._stop.wait(interval):
            for message in self._slack.messages(CHANNEL):
                item_id = prompt_item(message)
                if item_id is None or item_id not in self._truth:
                    continue
                index = self._truth[item_id]
                if self._rng.random() < self._noise:
                    index = self._rng.randrange(self._labels)
                    self.wrong += index != self._truth[item_id]
                person = self._people[turn % len(self._people)]
                turn += 1
                kind, action_id, value = find_choice(message, item_id, index)
                if kind == "button":
                    person.click_button(message, action_id, value=value, channel_id=CHANNEL)
                else:
                    person.select_option(message, action_id, value, channel_id=CHANNEL)
                break


# --- the whole web demo -------------------------------------------------------------------------


@dataclass
class WebDemo:
    """A running web demo: the page's URL and everything behind it."""

    url: str
    token: str
    bot: WiredBot
    plan: DemoPlan
    streamed: Streamed
    person: SlackUser
    reviewers: PacedReviewers
    started: float
    _server: _WebServer
    _summary: DemoSummary | None = None

    def answers(self) -> int:
        """Items answered in Slack (by anyone) so far."""
        with self.bot.services.sessions.begin() as session:
            query = (
                select(func.count(func.distinct(Answer.item_id)))
                .join(Item, Item.id == Answer.item_id)
                .join(Task, Task.id == Item.task_id)
                .where(
                    Task.name == TASK,
                    Answer.source == AnswerSource.SLACK,
                    Answer.kind == AnswerKind.LABEL,
                )
            )
            return int(session.scalar(query) or 0)

    def finish(self) -> DemoSummary:
        """Stop the page and the reviewers, retrain on every answer and sum the run up."""
        if self._summary is None:
            self.stop_page()
            answers = self.answers()
            self._summary = finish_demo(
                self.bot,
                self.plan,
                self.streamed,
                answers=answers,
                wrong_answers=self.reviewers.wrong,
                started=self.started,
            )
        return self._summary

    def stop_page(self) -> None:
        """Stop serving the page and stop the simulated reviewers."""
        self.reviewers.stop()
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def start_web_demo(
    *,
    database: Path,
    items: int = 100,
    seed_per_label: int = 5,
    noise: float = 0.05,
    rate: float = 20.0,
    threshold: float = 0.8,
    reviewers: int = 0,
    reviewer_pace: float = REVIEWER_PACE,
    port: int = 0,
    random_seed: int = 7,
    featurizer: str = "tfidf",
) -> Iterator[WebDemo]:
    """Start the bot, the stand-in, the items, the page (and `reviewers` simulated people).

    The page is served on 127.0.0.1:`port` (0: a free port); you answer as an admin, so
    `/hitl retrain` works from the page. Leaving the block stops everything; call
    `WebDemo.finish()` inside it for the retrain and the summary.
    """
    if reviewers < 0 or reviewers > len(REVIEWERS):
        raise ValueError(f"reviewers must be between 0 and {len(REVIEWERS)}")
    started = time.monotonic()
    rng = random.Random(random_seed)
    plan = plan_demo(database, items=items, seed_per_label=seed_per_label, rng=rng)
    admins = f"{REVIEWERS[0]},{WEB_USER}"
    with wire_demo_bot(
        plan, threshold=threshold, rate=rate, admins=admins, featurizer=featurizer
    ) as bot:
        person = SlackUser(
            bot.events_url,
            bot.secret,
            user_id=WEB_USER,
            user_name=WEB_USER_NAME,
            standin=bot.slack,
            default_channel=CHANNEL,
        )
        state = WebState(bot.slack, person, CHANNEL, TASK)
        try:
            server = _WebServer(port, state)
        except OSError as exc:
            raise BadInputError(
                f"cannot serve the page on 127.0.0.1:{port} ({exc.strerror}); "
                "pick another --port, or 0 for a free one"
            ) from exc
        bound = int(server.server_address[1])
        state.hosts = frozenset({f"127.0.0.1:{bound}", f"localhost:{bound}"})
        state.origins = frozenset(f"http://{host}" for host in state.hosts)
        thread = threading.Thread(target=server.serve_forever, name="hitl-web", daemon=True)
        thread.start()
        people = [
            SlackUser(bot.events_url, bot.secret, user_id=u, user_name=u.lower(), standin=bot.slack)
            for u in REVIEWERS[:reviewers]
        ]
        demo: WebDemo | None = None
        try:
            streamed = stream_items(bot, plan)
            paced = PacedReviewers(
                people,
                bot.slack,
                streamed.truth,
                len(plan.labels),
                noise=noise,
                pace=reviewer_pace,
                rng=rng,
            ).start()
            demo = WebDemo(
                url=f"http://127.0.0.1:{bound}/",
                token=state.token,
                bot=bot,
                plan=plan,
                streamed=streamed,
                person=person,
                reviewers=paced,
                started=started,
                _server=server,
            )
            yield demo
        finally:
            if demo is not None:
                demo.reviewers.stop()
            server.shutdown()
            server.server_close()
