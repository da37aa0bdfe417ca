"""A Slack Web API stand-in: a real HTTP server on 127.0.0.1 for end-to-end tests and the demo.

It speaks enough of the Web API for this bot, over real HTTP, so `slack_sdk.WebClient` and Bolt
run unchanged against `SlackStandIn.api_url`:

* `POST /api/<method>` with form, JSON or query-string parameters and the token as
  `Authorization: Bearer` or a `token` parameter. Like Slack, a refused call is HTTP 200 with
  `{"ok": false, "error": ...}`; only unknown methods (404), rate limits (429) and injected
  faults change the status.
* methods: auth.test, chat.postMessage, chat.update, chat.postEphemeral, views.publish,
  files.getUploadURLExternal (+ the upload itself), files.completeUploadExternal,
  conversations.info, conversations.history (newest first, `oldest`/`latest`/`inclusive`,
  `limit` and `cursor`; message `metadata` only with `include_all_metadata`, as Slack does).
* Slack's documented limits with Slack's error names (Block Kit reference, method pages): 50
  blocks per message and 100 per view, 3000 characters per text object, 75 per button or option
  text, 100 options per select, unique `action_id`s and `block_id`s, 40,000 characters of
  message text (`invalid_blocks`, `msg_too_long`, `no_text`, `channel_not_found`).
* Block Kit as strictly as Slack's schemas: no property an object does not define ("invalid
  additional property", e.g. `emoji` on a mrkdwn text), no whitespace-only text, and each
  element only in the blocks that take it (no button in a context block, no image in actions).
* about one `chat.postMessage` per second per channel (a token bucket), over it HTTP 429 with an
  integer `Retry-After` and `{"ok": false, "error": "ratelimited"}`; every other method by its
  rate limit tier (`METHOD_TIERS`: Tier 3 is 50 calls a minute, Tier 4 100), one minute's calls
  as the burst, times `tier_scale` (by default as much faster than Slack as the channel rate).
* many workspaces: `issue_code(team_id)` mints an OAuth `code` that `oauth.v2.access` (with the
  stand-in's `client_id` and `client_secret`, as HTTP Basic auth or parameters) trades once for a
  new bot token of that workspace, answered in Slack's shape (`access_token`, `token_type`,
  `scope`, `bot_user_id`, `app_id`, `team`, `enterprise`, `authed_user`). Every issued token is
  accepted, `auth.test` answers with its workspace, and each call records the token it used
  (`ApiCall.token`, `calls_with_token`); `revoke_team(team_id)` makes a workspace's tokens
  `token_revoked`.
* channel membership: the bot is in every channel until `remove_bot(channel)`; then posting,
  updating, ephemerals, history and file shares there answer `not_in_channel`.
* response URLs (`new_response_url`) that take the JSON Bolt's `respond()` sends: ephemeral by
  default, `response_type: in_channel`, `replace_original`, `delete_original`; five uses each.

Faults on demand: `fail_next` (HTTP 5xx), `rate_limit_storm` (429s), `set_down` (the listening
socket is really closed, so clients get "connection refused"), `set_latency` (every request,
before it is handled) and `delay_replies` (one method, optionally one channel: the call takes
effect, then its answer comes late, like a Slack that stored a message and timed out the client
anyway). Everything the bot
sent can be read back, thread-safely, with `messages`, `ephemerals`, `views`, `files`, `calls` and
`response_url_posts`; every read returns copies.

It is a stand-in, not a Slack clone: there are no users or permissions, and sharing a file does
not add a message to the channel.
"""

import base64
import contextlib
import copy
import http.server
import json
import math
import mimetypes
import re
import secrets
import string
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_MESSAGE_TEXT = 40_000
MAX_TEXT_OBJECT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_CONTEXT_ELEMENTS = 10
MAX_ELEMENT_TEXT = 75  # button text, option text, option group label
MAX_OPTION_VALUE = 150
MAX_BUTTON_VALUE = 2000
MAX_URL = 3000
MAX_PLACEHOLDER = 150
MAX_HEADER_TEXT = 150
MAX_SELECT_OPTIONS = 100
MAX_OVERFLOW_OPTIONS = 5
MAX_CHOICE_OPTIONS = 10  # checkboxes, radio buttons
MAX_ID = 255  # action_id, block_id
MAX_MARKDOWN_BLOCK = 12_000
MAX_ALT_TEXT = 2000
RESPONSE_URL_USES = 5
RESPONSE_URL_LIFETIME = 30 * 60.0

DEFAULT_CHANNEL_PATTERN = re.compile(r"[CGD][A-Z0-9]{2,}")
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
# Parameters Slack takes as JSON, which form-encoded calls send as a JSON string.
_JSON_PARAMS = ("blocks", "attachments", "files", "view", "metadata")
_ID_ALPHABET = string.ascii_uppercase + string.digits
_BLOCK_ID_ALPHABET = string.ascii_letters + string.digits
_SERVER_ERRORS = {500: "internal_error", 502: "bad_gateway", 503: "service_unavailable"}

_BLOCK_WORDS = "actions context divider file header image input markdown rich_text section video"
_ELEMENT_WORDS = (
    "button checkboxes datepicker datetimepicker email_text_input file_input image number_input"
    " overflow plain_text_input radio_buttons rich_text_input timepicker url_text_input"
    " workflow_button"
)
_BLOCK_TYPES = frozenset(_BLOCK_WORDS.split())
_SELECT_TYPES = frozenset(
    f"{prefix}{kind}_select"
    for prefix in ("", "multi_")
    for kind in ("static", "external", "users", "conversations", "channels")
)
_OPTION_SELECTS = frozenset({"static_select", "multi_static_select"})
_ELEMENT_TYPES = _SELECT_TYPES | frozenset(_ELEMENT_WORDS.split())
# Where each element may go (the "compatible elements" of each block in the Block Kit reference).
_INTERACTIVE = _SELECT_TYPES | frozenset(
    [
        "button",
        "checkboxes",
        "datepicker",
        "overflow",
        "radio_buttons",
        "timepicker",
        "workflow_button",
    ]
)
_IN_ACTIONS = _INTERACTIVE | frozenset({"datetimepicker", "rich_text_input"})
_IN_ACCESSORY = _INTERACTIVE | frozenset({"image"})
_IN_INPUT = _SELECT_TYPES | frozenset(
    [
        "checkboxes",
        "datepicker",
        "datetimepicker",
        "email_text_input",
        "file_input",
        "number_input",
        "plain_text_input",
        "radio_buttons",
        "rich_text_input",
        "timepicker",
        "url_text_input",
    ]
)

# Every property each object defines; Slack refuses any other one ("invalid additional property").
_TEXT_KEYS = {
    "plain_text": frozenset({"type", "text", "emoji"}),
    "mrkdwn": frozenset({"type", "text", "verbatim"}),
}
_BLOCK_KEYS: dict[str, frozenset[str]] = {
    kind: frozenset({"type", "block_id", *keys.split()})
    for kind, keys in {
        "actions": "elements",
        "context": "elements",
        "divider": "",
        "file": "external_id source",
        "header": "text",
        "image": "image_url slack_file alt_text title",
        "input": "label element dispatch_action hint optional",
        "markdown": "text",
        "rich_text": "elements",
        "section": "text fields accessory expand",
        "video": "alt_text author_name description provider_icon_url provider_name title"
        " title_url thumbnail_url video_url",
    }.items()
}
_SELECT_KEYS = "placeholder confirm focus_on_load"
_MULTI_KEYS = f"{_SELECT_KEYS} max_selected_items"
_INPUT_KEYS = "initial_value dispatch_action_config focus_on_load placeholder"
_ELEMENT_KEYS: dict[str, frozenset[str]] = {
    kind: frozenset({"type", *(() if kind == "image" else ("action_id",)), *keys.split()})
    for kind, keys in {
        "button": "text url value style confirm accessibility_label",
        "checkboxes": "options initial_options confirm focus_on_load",
        "datepicker": "initial_date confirm focus_on_load placeholder",
        "datetimepicker": "initial_date_time confirm focus_on_load",
        "email_text_input": _INPUT_KEYS,
        "file_input": "filetypes max_files",
        "image": "image_url slack_file alt_text",
        "number_input": f"is_decimal_allowed min_value max_value {_INPUT_KEYS}",
        "overflow": "options confirm",
        "plain_text_input": f"multiline min_length max_length {_INPUT_KEYS}",
        "radio_buttons": "options initial_option confirm focus_on_load",
        "rich_text_input": _INPUT_KEYS,
        "timepicker": "initial_time timezone confirm focus_on_load placeholder",
        "url_text_input": _INPUT_KEYS,
        "workflow_button": "text workflow style accessibility_label",
        "static_select": f"options option_groups initial_option {_SELECT_KEYS}",
        "multi_static_select": f"options option_groups initial_options {_MULTI_KEYS}",
        "external_select": f"initial_option min_query_length {_SELECT_KEYS}",
        "multi_external_select": f"initial_options min_query_length {_MULTI_KEYS}",
        "users_select": f"initial_user {_SELECT_KEYS}",
        "multi_users_select": f"initial_users {_MULTI_KEYS}",
        "conversations_select": "initial_conversation default_to_current_conversation"
        f" response_url_enabled filter {_SELECT_KEYS}",
        "multi_conversations_select": "initial_conversations default_to_current_conversation"
        f" filter {_MULTI_KEYS}",
        "channels_select": f"initial_channel response_url_enabled {_SELECT_KEYS}",
        "multi_channels_select": f"initial_channels {_MULTI_KEYS}",
    }.items()
}
_OPTION_KEYS = frozenset({"text", "value", "description", "url"})
_OPTION_GROUP_KEYS = frozenset({"label", "options"})
_HOME_VIEW_KEYS = frozenset({"type", "blocks", "private_metadata", "callback_id", "external_id"})

# Web API rate limit tiers (docs: "Rate limits"): requests per minute, per method and workspace.
TIER_PER_MINUTE = {1: 1.0, 2: 20.0, 3: 50.0, 4: 100.0}
# Each served method's tier, from its reference page. chat.postMessage is "special": about one
# message per second per channel, limited by `rate_limit_per_channel` instead.
METHOD_TIERS = {
    "auth.test": 4,
    "chat.update": 3,
    "chat.postEphemeral": 4,
    "views.publish": 4,
    "files.getUploadURLExternal": 4,
    "files.completeUploadExternal": 4,
    "conversations.info": 3,
    "conversations.history": 3,
}
DEFAULT_TIER = 3


@dataclass(frozen=True)
class ApiCall:
    """One Web API request as the stand-in answered it."""

    method: str
    params: JsonDict
    status: int
    error: str | None
    at: float
    token: str | None = None  # the token the call was made with (None for oauth.v2.access)

    @property
    def ok(self) -> bool:
        """True when Slack would have answered `"ok": true`."""
        return self.status == 200 and self.error is None


class _ApiError(Exception):
    """A refusal in Slack's words: the error name, the HTTP status and any extra headers."""

    def __init__(
        self,
        error: str,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.headers = headers or {}
        self.detail = detail


class _Invalid(Exception):
    """Block Kit that Slack would refuse; the message says where and why."""


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class _Bucket:
    tokens: float
    updated: float


class StandInRefusal(Exception):
    """Raised by a registered method's handler: Slack answers `{"ok": false, "error": …}`."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclass
class _MethodError:
    method: str
    error: str
    channel: str | None
    remaining: int | None


@dataclass
class _ReplyDelay:
    method: str
    seconds: float
    channel: str | None
    remaining: int | None


@dataclass
class _PendingUpload:
    filename: str
    length: int
    alt_txt: str | None
    content: bytes | None = None


@dataclass
class _ResponseUrl:
    channel: str
    user: str
    message_ts: str | None
    created: float
    uses: int = 0
    posts: list[JsonDict] = field(default_factory=list)


def validate_blocks(blocks: Any, *, max_blocks: int = MAX_MESSAGE_BLOCKS) -> str | None:
    """None if Slack would accept these blocks, else the reason it would answer invalid_blocks."""
    try:
        _check_blocks(blocks, max_blocks)
    except _Invalid as exc:
        return str(exc)
    return None


def _check_blocks(blocks: Any, max_blocks: int) -> None:
    if not isinstance(blocks, list):
        raise _Invalid("blocks must be an array")
    if len(blocks) > max_blocks:
        raise _Invalid(f"{len(blocks)} blocks; at most {max_blocks} are allowed")
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    for index, block in enumerate(blocks):
        where = f"/blocks/{index}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _Invalid(f"{where}: a block must be an object with a type")
        kind = block["type"]
        if kind not in _BLOCK_TYPES:
            raise _Invalid(f"{where}: unknown block type {kind!r}")
        _check_keys(block, _BLOCK_KEYS[kind], where)
        block_id = block.get("block_id")
        if block_id is not None:
            _check_string(block_id, MAX_ID, f"{where}/block_id")
            if block_id in block_ids:
                raise _Invalid(f"{where}/block_id: {block_id!r} is used twice")
            block_ids.add(block_id)
        _BLOCK_CHECKS.get(kind, _no_check)(block, where, action_ids)


def _no_check(block: JsonDict, where: str, action_ids: set[str]) -> None:
    return None


def _check_section(block: JsonDict, where: str, action_ids: set[str]) -> None:
    text, fields = block.get("text"), block.get("fields")
    if text is None and fields is None:
        raise _Invalid(f"{where}: a section needs text or fields")
    if text is not None:
        _check_text(text, MAX_TEXT_OBJECT, f"{where}/text")
    if fields is not None:
        _check_list(fields, 1, MAX_FIELDS, f"{where}/fields")
        for number, item in enumerate(fields):
            _check_text(item, MAX_FIELD_TEXT, f"{where}/fields/{number}")
    if block.get("accessory") is not None:
        here = f"{where}/accessory"
        _check_element(block["accessory"], here, action_ids, allowed=_IN_ACCESSORY, host="section")


def _check_header(block: JsonDict, where: str, action_ids: set[str]) -> None:
    _check_text(block.get("text"), MAX_HEADER_TEXT, f"{where}/text", plain_only=True)


def _check_actions(block: JsonDict, where: str, action_ids: set[str]) -> None:
    elements = _check_list(block.get("elements"), 1, MAX_ACTIONS_ELEMENTS, f"{where}/elements")
    for number, element in enumerate(elements):
        here = f"{where}/elements/{number}"
        _check_element(element, here, action_ids, allowed=_IN_ACTIONS, host="actions")


def _check_context(block: JsonDict, where: str, action_ids: set[str]) -> None:
    elements = _check_list(block.get("elements"), 1, MAX_CONTEXT_ELEMENTS, f"{where}/elements")
    for number, element in enumerate(elements):
        here = f"{where}/elements/{number}"
        kind = element.get("type") if isinstance(element, dict) else None
        if kind == "image":
            _check_keys(element, _ELEMENT_KEYS["image"], here)
            _check_image(element, here)
        elif kind in _TEXT_KEYS or not isinstance(kind, str):
            _check_text(element, MAX_TEXT_OBJECT, here)
        else:
            raise _Invalid(f"{here}: a context block takes text objects and images, not {kind!r}")


def _check_image_block(block: JsonDict, where: str, action_ids: set[str]) -> None:
    _check_image(block, where)
    if block.get("title") is not None:
        _check_text(block["title"], MAX_ALT_TEXT, f"{where}/title", plain_only=True)


def _check_markdown(block: JsonDict, where: str, action_ids: set[str]) -> None:
    _check_string(block.get("text"), MAX_MARKDOWN_BLOCK, f"{where}/text")
    _check_not_blank(block["text"], f"{where}/text")


def _check_input(block: JsonDict, where: str, action_ids: set[str]) -> None:
    _check_text(block.get("label"), MAX_ALT_TEXT, f"{where}/label", plain_only=True)
    here = f"{where}/element"
    _check_element(block.get("element"), here, action_ids, allowed=_IN_INPUT, host="input")


def _check_rich_text(block: JsonDict, where: str, action_ids: set[str]) -> None:
    if not isinstance(block.get("elements"), list):
        raise _Invalid(f"{where}/elements: must be an array")


_BLOCK_CHECKS: dict[str, Callable[[JsonDict, str, set[str]], None]] = {
    "section": _check_section,
    "header": _check_header,
    "actions": _check_actions,
    "context": _check_context,
    "image": _check_image_block,
    "markdown": _check_markdown,
    "input": _check_input,
    "rich_text": _check_rich_text,
}


def _check_element(
    element: Any, where: str, action_ids: set[str], *, allowed: frozenset[str], host: str
) -> None:
    if not isinstance(element, dict) or element.get("type") not in _ELEMENT_TYPES:
        kind = element.get("type") if isinstance(element, dict) else None
        raise _Invalid(f"{where}: unknown element type {kind!r}")
    if element["type"] not in allowed:
        raise _Invalid(f"{where}: a {element['type']} cannot go in a {host} block")
    _check_keys(element, _ELEMENT_KEYS[element["type"]], where)
    action_id = element.get("action_id")
    if action_id is not None:
        _check_string(action_id, MAX_ID, f"{where}/action_id")
        if action_id in action_ids:
            raise _Invalid(f"{where}/action_id: {action_id!r} is used twice in one message")
        action_ids.add(action_id)
    kind = element["type"]
    if kind == "button":
        _check_text(element.get("text"), MAX_ELEMENT_TEXT, f"{where}/text", plain_only=True)
        if element.get("value") is not None:
            _check_string(element["value"], MAX_BUTTON_VALUE, f"{where}/value")
        if element.get("url") is not None:
            _check_string(element["url"], MAX_URL, f"{where}/url")
        if element.get("style") not in (None, "primary", "danger"):
            raise _Invalid(f"{where}/style: must be primary or danger")
    elif kind == "image":
        _check_image(element, where)
    elif kind == "overflow":
        _check_options(element.get("options"), MAX_OVERFLOW_OPTIONS, f"{where}/options")
    elif kind in ("checkboxes", "radio_buttons"):
        options = element.get("options")
        _check_options(options, MAX_CHOICE_OPTIONS, f"{where}/options", plain_only=False)
    elif kind in _OPTION_SELECTS:
        _check_static_select(element, where)
    if element.get("placeholder") is not None:
        placeholder = element["placeholder"]
        _check_text(placeholder, MAX_PLACEHOLDER, f"{where}/placeholder", plain_only=True)


def _check_static_select(element: JsonDict, where: str) -> None:
    options, groups = element.get("options"), element.get("option_groups")
    if (options is None) == (groups is None):
        raise _Invalid(f"{where}: a static select needs options or option_groups, not both")
    offered: list[JsonDict] = []
    if options is not None:
        _check_options(options, MAX_SELECT_OPTIONS, f"{where}/options")
        offered = list(options)
    else:
        groups = _check_list(groups, 1, MAX_SELECT_OPTIONS, f"{where}/option_groups")
        for number, group in enumerate(groups):
            here = f"{where}/option_groups/{number}"
            if not isinstance(group, dict):
                raise _Invalid(f"{here}: must be an object")
            _check_keys(group, _OPTION_GROUP_KEYS, here)
            _check_text(group.get("label"), MAX_ELEMENT_TEXT, f"{here}/label", plain_only=True)
            _check_options(group.get("options"), MAX_SELECT_OPTIONS, f"{here}/options")
            offered += group["options"]
    initial = element.get("initial_option")
    if initial is not None and initial not in offered:
        raise _Invalid(f"{where}/initial_option: must be one of the options")


def _check_options(options: Any, most: int, where: str, *, plain_only: bool = True) -> None:
    _check_list(options, 1, most, where)
    for number, option in enumerate(options):
        here = f"{where}/{number}"
        if not isinstance(option, dict):
            raise _Invalid(f"{here}: an option must be an object")
        _check_keys(option, _OPTION_KEYS, here)
        _check_text(option.get("text"), MAX_ELEMENT_TEXT, f"{here}/text", plain_only=plain_only)
        _check_string(option.get("value"), MAX_OPTION_VALUE, f"{here}/value")


def _check_image(image: JsonDict, where: str) -> None:
    _check_string(image.get("alt_text"), MAX_ALT_TEXT, f"{where}/alt_text")
    if image.get("image_url") is None and image.get("slack_file") is None:
        raise _Invalid(f"{where}: an image needs image_url or slack_file")
    if image.get("image_url") is not None:
        _check_string(image["image_url"], MAX_URL, f"{where}/image_url")


def _check_text(obj: Any, most: int, where: str, *, plain_only: bool = False) -> None:
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict) or obj.get("type") not in allowed:
        raise _Invalid(f"{where}: must be a text object of type {' or '.join(allowed)}")
    _check_keys(obj, _TEXT_KEYS[obj["type"]], where)
    for flag in ("emoji", "verbatim"):
        if flag in obj and not isinstance(obj[flag], bool):
            raise _Invalid(f"{where}/{flag}: must be a boolean")
    _check_string(obj.get("text"), most, f"{where}/text")
    _check_not_blank(obj["text"], f"{where}/text")


def _check_keys(obj: JsonDict, known: frozenset[str], where: str) -> None:
    """Slack's JSON schemas allow no property an object does not define."""
    for key in obj:
        if key not in known:
            raise _Invalid(f"{where}: invalid additional property: {key}")


def _check_not_blank(text: str, where: str) -> None:
    # Slack trims text before it counts the "at least 1 character" minimum.
    if not text.strip():
        raise _Invalid(f"{where}: must contain more than whitespace")


def _check_string(value: Any, most: int, where: str) -> None:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"{where}: must be a non-empty string")
    if len(value) > most:
        raise _Invalid(f"{where}: {len(value)} characters; at most {most} are allowed")


def _check_list(value: Any, least: int, most: int, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Invalid(f"{where}: must be an array")
    if not least <= len(value) <= most:
        raise _Invalid(f"{where}: {len(value)} items; {least} to {most} are allowed")
    return value


def _slack_id(prefix: str, length: int = 10) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _fill_ids(blocks: list[JsonDict]) -> list[JsonDict]:
    """A copy of the blocks with the block_ids and action_ids Slack invents for missing ones."""
    filled = copy.deepcopy(blocks)
    for block in filled:
        block.setdefault("block_id", "".join(secrets.choice(_BLOCK_ID_ALPHABET) for _ in range(5)))
        elements = list(block.get("elements") or []) if block["type"] == "actions" else []
        for key in ("accessory", "element"):
            if isinstance(block.get(key), dict):
                elements.append(block[key])
        for element in elements:
            if isinstance(element, dict) and element.get("type") in _ELEMENT_TYPES - {"image"}:
                element.setdefault(
                    "action_id", "".join(secrets.choice(_BLOCK_ID_ALPHABET) for _ in range(5))
                )
    return filled


def _flag(value: Any) -> bool:
    """A boolean parameter as Slack reads it: true, "true" and "1" are true."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


def _metadata(params: JsonDict) -> JsonDict | None:
    """A message's `metadata` parameter checked as Slack does: event_type and event_payload."""
    metadata = params.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise _ApiError("invalid_metadata_format")
    event_type, payload = metadata.get("event_type"), metadata.get("event_payload")
    if not isinstance(event_type, str) or not event_type or not isinstance(payload, dict):
        raise _ApiError(
            "invalid_metadata_schema", detail="metadata needs event_type and an event_payload"
        )
    return {"event_type": event_type, "event_payload": copy.deepcopy(payload)}


def _within(ts: float, oldest: float, latest: float, *, inclusive: bool) -> bool:
    """Whether a message's ts falls between the bounds (the bounds count only if inclusive)."""
    return oldest < ts < latest or (inclusive and ts in (oldest, latest))


def _ts_param(value: Any, default: float) -> float:
    """A Slack ts bound (`oldest`, `latest`) as seconds; `default` when absent."""
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise _ApiError("invalid_ts_oldest") from exc


def _json_reply(status: int, payload: JsonDict, headers: dict[str, str] | None = None) -> _Reply:
    body = json.dumps(payload).encode("utf-8")
    return _Reply(status, body, headers=tuple((headers or {}).items()))


def _text_reply(status: int, text: str) -> _Reply:
    return _Reply(status, text.encode("utf-8"), content_type="text/plain; charset=utf-8")


def _parse_params(query: str, content_type: str, body: bytes) -> JsonDict:
    params: JsonDict = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    mime = content_type.split(";")[0].strip().lower()
    if mime == "application/json" and body.strip():
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise _ApiError("invalid_json") from exc
        if not isinstance(data, dict):
            raise _ApiError("invalid_json")
        params.update(data)
    elif body.strip():
        try:
            form = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError as exc:
            raise _ApiError("invalid_form_data") from exc
        params.update(form)
    for key in _JSON_PARAMS:
        if isinstance(params.get(key), str):
            # Left a string when it is not JSON: the method answers invalid_blocks_format.
            with contextlib.suppress(ValueError):
                params[key] = json.loads(params[key])
    return params


class _Server(http.server.ThreadingHTTPServer):
    """The listening socket, with a way back to the stand-in that owns it."""

    # The default backlog of 5 drops connections when a few threads call at once, and the
    # client's SYN retry then costs a full second.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], standin: "SlackStandIn") -> None:
        self.standin = standin
        super().__init__(address, _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "SlackStandIn/1"

    def do_POST(self) -> None:
        """Answer a POST: Web API call, file upload or response URL."""
        self._answer()

    def do_GET(self) -> None:
        """Answer a GET the way Slack does for Web API methods: parameters in the query."""
        self._answer()

    def _answer(self) -> None:
        server = self.server
        assert isinstance(server, _Server)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        reply = server.standin._dispatch(
            self.path,
            content_type=self.headers.get("Content-Type", ""),
            authorization=self.headers.get("Authorization", ""),
            body=body,
        )
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout test); nothing left to tell it

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: every call is in `SlackStandIn.calls()` instead."""


class SlackStandIn:
    """Slack's Web API on 127.0.0.1, with Slack's limits, rate limits and injectable faults."""

    def __init__(
        self,
        bot_token: str = "xoxb-test",
        *,
        rate_limit_per_channel: float | None = 1.0,
        burst: int = 2,
        team_id: str = "T0001",
        team_domain: str = "hitl-test",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        app_id: str = "A0HITL",
        channels: Iterable[str] | None = None,
        tier_scale: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = "1111.2222",
        client_secret: str = "standin-client-secret",
    ) -> None:
        if rate_limit_per_channel is not None and rate_limit_per_channel <= 0:
            raise ValueError("rate_limit_per_channel must be positive, or None for no limit")
        if tier_scale is not None and tier_scale <= 0:
            raise ValueError("tier_scale must be positive, or None to follow the channel rate")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.bot_token = bot_token
        self.rate_limit_per_channel = rate_limit_per_channel
        self.burst = burst
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.client_id = client_id
        self.client_secret = client_secret
        # Every bot token the stand-in accepts, with its workspace; OAuth adds more.
        self._tokens: dict[str, str] = {bot_token: team_id}
        self._revoked: set[str] = set()
        self._team_names: dict[str, str] = {team_id: team_domain}
        self._codes: dict[str, str] = {}
        self._current_token: str | None = None
        self._allowed_channels = frozenset(channels) if channels is not None else None
        # A stand-in allowing 20 messages a second per channel is a Slack 20 times as fast as
        # the real one (1 a second): its method tiers are 20 times as generous too.
        self.tier_scale = tier_scale if tier_scale is not None else rate_limit_per_channel
        self._clock = clock
        self._left_channels: set[str] = set()
        self._method_tiers: dict[str, int] = dict(METHOD_TIERS)
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._started = False
        self._server_lock = threading.Lock()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._messages: dict[str, list[JsonDict]] = {}
        self._ephemerals: list[JsonDict] = []
        self._views: dict[str, list[JsonDict]] = {}
        self._uploads: dict[str, _PendingUpload] = {}
        self._files: list[JsonDict] = []
        self._responses: dict[str, _ResponseUrl] = {}
        self._calls: list[ApiCall] = []
        self._buckets: dict[str, _Bucket] = {}
        self._method_buckets: dict[str, _Bucket] = {}
        self._failures: list[int] = []
        self._storm = 0
        self._storm_retry_after = 1
        self._latency = 0.0
        self._reply_delays: list[_ReplyDelay] = []
        self._method_errors: list[_MethodError] = []
        self._rate_limited = 0
        self._last_ts = 0
        self._methods: dict[str, Callable[[JsonDict], JsonDict]] = {
            "auth.test": self._auth_test,
            "oauth.v2.access": self._oauth_access,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "views.publish": self._publish_view,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
            "conversations.info": self._conversation_info,
            "conversations.history": self._conversation_history,
        }

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> "SlackStandIn":
        """Listen on host:port (port 0 picks a free one) and serve in a daemon thread."""
        with self._server_lock:
            if self._started:
                raise RuntimeError("the Slack stand-in is already running")
            self._listen()
            self._started = True
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket; stored data stays readable."""
        with self._server_lock:
            self._close()
            self._started = False

    def __enter__(self) -> "SlackStandIn":
        """Start, for `with SlackStandIn() as slack:`."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop at the end of the `with` block."""
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port (fixed at the first start, kept across set_down)."""
        if not self._started:
            raise RuntimeError("start the Slack stand-in first")
        return self._port

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://{self._host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The Web API root with its trailing slash, for `WebClient(base_url=...)`."""
        return f"{self.base_url}/api/"

    def _listen(self) -> None:
        server = _Server((self._host, self._port), self)
        self._port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"slack-standin-{self._port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def _close(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()  # closes the socket and waits for requests in flight
        if thread is not None:
            thread.join()

    # --- fault injection --------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer the next `count` Web API calls with HTTP `status` (a 5xx)."""
        if not 500 <= status <= 599:
            raise ValueError(f"fail_next injects server errors (5xx), not {status}")
        with self._lock:
            self._failures += [status] * count

    def fail_method(
        self,
        method: str,
        error: str | None,
        *,
        channel: str | None = None,
        count: int | None = None,
    ) -> None:
        """Answer `method` (to `channel` only, if given) as Slack refuses: `{"ok": false,
        "error": error}` with HTTP 200, nothing stored. `count` limits it to the next that many
        calls; None keeps refusing until `fail_method(method, None)` clears it."""
        with self._lock:
            if error is None:
                self._method_errors = [e for e in self._method_errors if e.method != method]
            else:
                self._method_errors.append(_MethodError(method, error, channel, count))

    def _method_error(self, method: str, params: JsonDict) -> str | None:
        for refusal in self._method_errors:
            if refusal.method != method or refusal.channel not in (None, params.get("channel")):
                continue
            if refusal.remaining is not None:
                refusal.remaining -= 1
                if refusal.remaining <= 0:
                    self._method_errors.remove(refusal)
            return refusal.error
        return None

    def register_method(
        self, method: str, handler: Callable[[JsonDict], JsonDict], *, tier: int = DEFAULT_TIER
    ) -> None:
        """Serve one more Web API method: `handler(params)` runs with the stand-in's lock held
        and returns the fields of an ok answer, or raises `StandInRefusal(error)`. `tier` is
        its rate limit tier (1 to 4, as on the method's reference page)."""
        if tier not in TIER_PER_MINUTE:
            raise ValueError(f"tier must be one of {sorted(TIER_PER_MINUTE)}, not {tier}")
        with self._lock:
            self._methods[method] = handler
            self._method_tiers[method] = tier

    def issue_code(self, team_id: str, *, team_name: str | None = None) -> str:
        """An OAuth `code` for an installation in workspace `team_id` (what Slack appends to
        the redirect URL once a person approves); `oauth.v2.access` takes it once."""
        code = f"code-{secrets.token_hex(8)}"
        with self._lock:
            self._team_names.setdefault(team_id, team_name or team_id.lower())
            self._codes[code] = team_id
        return code

    def tokens_of(self, team_id: str) -> list[str]:
        """Every bot token issued for workspace `team_id` (and not revoked)."""
        with self._lock:
            return [t for t, team in self._tokens.items() if team == team_id]

    def revoke_team(self, team_id: str) -> None:
        """Revoke every token of a workspace (an uninstall): calls with them say token_revoked."""
        with self._lock:
            for token in self.tokens_of(team_id):
                del self._tokens[token]
                self._revoked.add(token)

    def calls_with_token(self, token: str, method: str | None = None) -> list[ApiCall]:
        """Every call made with `token` (optionally only to `method`)."""
        return [call for call in self.calls(method) if call.token == token]

    def remove_bot(self, channel: str) -> None:
        """Take the bot out of `channel`: calls that need membership answer `not_in_channel`."""
        with self._lock:
            self._left_channels.add(channel)

    def invite_bot(self, channel: str) -> None:
        """Make the bot a member of `channel` again (it is a member of every channel at first)."""
        with self._lock:
            self._left_channels.discard(channel)

    def is_member(self, channel: str) -> bool:
        """Whether the bot is in `channel` (every channel, until `remove_bot`)."""
        with self._lock:
            return channel not in self._left_channels

    def method_rate(self, method: str) -> float | None:
        """Calls a minute the stand-in allows `method` (its tier times `tier_scale`), or None.

        chat.postMessage has no tier here: it is limited per channel (`rate_limit_per_channel`).
        """
        if self.tier_scale is None or method == "chat.postMessage":
            return None
        with self._lock:
            tier = self._method_tiers.get(method, DEFAULT_TIER)
        return TIER_PER_MINUTE[tier] * self.tier_scale

    def rate_limit_storm(self, count: int, *, retry_after: int = 1) -> None:
        """Answer the next `count` chat.postMessage calls with 429, whatever the bucket says."""
        with self._lock:
            self._storm = count
            self._storm_retry_after = max(1, int(retry_after))

    def set_down(self, down: bool) -> None:
        """Close the listening socket (clients get connection refused), or reopen the same port."""
        with self._server_lock:
            if not self._started:
                raise RuntimeError("start the Slack stand-in first")
            if down:
                self._close()
            elif self._server is None:
                self._listen()

    @property
    def is_down(self) -> bool:
        """True while set_down(True) keeps the port closed."""
        return self._started and self._server is None

    def set_latency(self, seconds: float) -> None:
        """Wait this long before answering any request."""
        if seconds < 0:
            raise ValueError("latency cannot be negative")
        with self._lock:
            self._latency = seconds

    def delay_replies(
        self,
        method: str,
        seconds: float,
        *,
        channel: str | None = None,
        count: int | None = None,
    ) -> None:
        """Answer `method` (to `channel` only, if given) `seconds` late, after it took effect.

        `count` limits it to the next that many such calls; None delays them until
        `delay_replies(method, 0)` clears every delay of `method`.
        """
        if seconds < 0:
            raise ValueError("a delay cannot be negative")
        with self._lock:
            if seconds == 0:
                self._reply_delays = [d for d in self._reply_delays if d.method != method]
            else:
                self._reply_delays.append(_ReplyDelay(method, seconds, channel, count))

    def _reply_delay(self, method: str, params: JsonDict) -> float:
        with self._lock:
            for delay in self._reply_delays:
                if delay.method != method or delay.channel not in (None, params.get("channel")):
                    continue
                if delay.remaining is not None:
                    delay.remaining -= 1
                    if delay.remaining <= 0:
                        self._reply_delays.remove(delay)
                return delay.seconds
        return 0.0

    # --- inspection -------------------------------------------------------------------------

    def messages(self, channel: str) -> list[JsonDict]:
        """Every message posted to `channel`, oldest first (thread replies carry thread_ts).

        Each is the message as Slack would show it (type, user, bot_id, text, blocks, ts, edited)
        plus `history`: the earlier versions an update replaced, oldest first.
        """
        with self._lock:
            return copy.deepcopy(self._messages.get(channel, []))

    def message(self, channel: str, ts: str) -> JsonDict:
        """The message `ts` of `channel`; KeyError if there is none."""
        with self._lock:
            found = self._find(channel, ts)
            if found is None:
                raise KeyError(f"no message {ts} in {channel}")
            return copy.deepcopy(found)

    def channel_of(self, ts: str) -> str | None:
        """The channel holding message `ts`, if any."""
        with self._lock:
            for channel, stored in self._messages.items():
                if any(message["ts"] == ts for message in stored):
                    return channel
        return None

    def wait_for_messages(
        self, channel: str, count: int, *, timeout: float = 5.0
    ) -> list[JsonDict]:
        """Block until `channel` holds at least `count` messages; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._messages.get(channel, [])) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    have = len(self._messages.get(channel, []))
                    raise TimeoutError(
                        f"{channel} has {have} messages after {timeout}s, not {count}"
                    )
                self._changed.wait(left)
            return copy.deepcopy(self._messages[channel])

    def ephemerals(self, channel: str | None = None, user: str | None = None) -> list[JsonDict]:
        """Ephemeral messages (chat.postEphemeral and response URLs), filtered by channel/user."""
        with self._lock:
            return [
                copy.deepcopy(item)
                for item in self._ephemerals
                if (channel is None or item["channel"] == channel)
                and (user is None or item["user"] == user)
            ]

    def views(self, user: str) -> JsonDict | None:
        """The Home tab `user` sees now (the last views.publish for them), or None."""
        with self._lock:
            published = self._views.get(user)
            return copy.deepcopy(published[-1]) if published else None

    def view_history(self, user: str) -> list[JsonDict]:
        """Every Home tab published for `user`, oldest first."""
        with self._lock:
            return copy.deepcopy(self._views.get(user, []))

    def files(self, channel: str | None = None) -> list[JsonDict]:
        """Completed uploads, bytes under "content"; only those shared to `channel` if given."""
        with self._lock:
            return [
                copy.deepcopy(record)
                for record in self._files
                if channel is None or channel in record["channels"]
            ]

    def calls(self, method: str | None = None) -> list[ApiCall]:
        """Every Web API call answered so far, optionally only those to `method`."""
        with self._lock:
            return [call for call in self._calls if method is None or call.method == method]

    @property
    def rate_limited_count(self) -> int:
        """How many 429s the stand-in has answered."""
        with self._lock:
            return self._rate_limited

    def new_response_url(self, channel: str, user: str, *, message_ts: str | None = None) -> str:
        """Mint a response URL like the one in a click or command payload."""
        response_id = secrets.token_hex(12)
        with self._lock:
            self._responses[response_id] = _ResponseUrl(channel, user, message_ts, time.monotonic())
        return f"{self.base_url}/response/{response_id}"

    def response_url_posts(self, url_or_id: str) -> list[JsonDict]:
        """The JSON bodies posted to a response URL, in order."""
        response_id = url_or_id.rstrip("/").rsplit("/", 1)[-1]
        with self._lock:
            record = self._responses.get(response_id)
            if record is None:
                raise KeyError(f"no response URL {url_or_id}")
            return copy.deepcopy(record.posts)

    # --- HTTP -------------------------------------------------------------------------------

    def _dispatch(self, path: str, *, content_type: str, authorization: str, body: bytes) -> _Reply:
        with self._lock:
            latency = self._latency
        if latency:
            time.sleep(latency)
        parts = urllib.parse.urlsplit(path)
        route, _, rest = parts.path.lstrip("/").partition("/")
        if route == "api" and rest:
            reply, params = self._api(rest, parts.query, content_type, authorization, body)
            late = self._reply_delay(rest, params)
            if late:
                time.sleep(late)  # outside the lock: other calls go on meanwhile
            return reply
        if route == "upload" and rest:
            return self._upload(rest, body)
        if route == "response" and rest:
            return self._respond(rest, body)
        return _text_reply(404, "not found")

    def _api(
        self, method: str, query: str, content_type: str, authorization: str, body: bytes
    ) -> tuple[_Reply, JsonDict]:
        params: JsonDict = {}
        try:
            params = _parse_params(query, content_type, body)
            token = params.pop("token", None)
            with self._lock:
                if self._failures:
                    status = self._failures.pop(0)
                    raise _ApiError(_SERVER_ERRORS.get(status, "fatal_error"), status=status)
            scheme, _, credentials = authorization.partition(" ")
            if method == "oauth.v2.access":  # client credentials instead of a token
                self._check_client(params, scheme, credentials)
                token = None
            else:
                if scheme.lower() == "bearer" and credentials.strip():
                    token = credentials.strip()
                if not token:
                    raise _ApiError("not_authed")
                with self._lock:
                    if token in self._revoked:
                        raise _ApiError("token_revoked")
                    if token not in self._tokens:
                        raise _ApiError("invalid_auth")
            handler = self._methods.get(method)
            if handler is None:
                raise _ApiError("unknown_method", status=404)
            with self._changed:
                self._take_method_token(method)
                refused = self._method_error(method, params)
                if refused is not None:
                    raise _ApiError(refused)
                self._current_token = token
                try:
                    result = handler(params)
                except StandInRefusal as refusal:
                    raise _ApiError(refusal.error) from None
                # Logged before waking anyone: a test that sees the message also sees the call.
                self._log(method, params, 200, None, token)
                self._changed.notify_all()
        except _ApiError as refusal:
            self._log(method, params, refusal.status, refusal.error, token)
            payload: JsonDict = {"ok": False, "error": refusal.error}
            if refusal.detail:
                payload["response_metadata"] = {"messages": [f"[ERROR] {refusal.detail}"]}
            return _json_reply(refusal.status, payload, refusal.headers), params
        return _json_reply(200, {"ok": True, **result}), params

    def _log(
        self, method: str, params: JsonDict, status: int, error: str | None, token: Any = None
    ) -> None:
        token = token if isinstance(token, str) else None
        with self._lock:
            self._calls.append(
                ApiCall(method, copy.deepcopy(params), status, error, time.time(), token)
            )

    def _check_client(self, params: JsonDict, scheme: str, credentials: str) -> None:
        """oauth.v2.access authenticates the app: HTTP Basic `client_id:client_secret`, or both
        as parameters."""
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        if scheme.lower() == "basic" and credentials.strip():
            try:
                decoded = base64.b64decode(credentials.strip()).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise _ApiError("invalid_client_id") from None
            client_id, _, client_secret = decoded.partition(":")
        if client_id != self.client_id:
            raise _ApiError("invalid_client_id")
        if client_secret != self.client_secret:
            raise _ApiError("bad_client_secret")

    # --- Web API methods (called with the lock held) ----------------------------------------

    def _auth_test(self, params: JsonDict) -> JsonDict:
        team_id = self._tokens.get(self._current_token or "", self.team_id)
        domain = self._team_names.get(team_id, self.team_domain)
        return {
            "url": f"https://{domain}.slack.com/",
            "team": domain,
            "user": "hitl",
            "team_id": team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _oauth_access(self, params: JsonDict) -> JsonDict:
        team_id = self._codes.pop(str(params.get("code") or ""), None)
        if team_id is None:
            raise StandInRefusal("invalid_code")
        token = f"xoxb-{team_id.lower()}-{secrets.token_hex(8)}"
        self._tokens[token] = team_id
        return {
            "access_token": token,
            "token_type": "bot",
            "scope": "chat:write,commands,files:write,channels:history,groups:history",
            "bot_user_id": self.bot_user_id,
            "app_id": self.app_id,
            "team": {"name": self._team_names[team_id], "id": team_id},
            "enterprise": None,
            "authed_user": {"id": "U0INSTALL"},
            "is_enterprise_install": False,
        }

    def _post_message(self, params: JsonDict) -> JsonDict:
        channel = self._member_channel(params.get("channel"))
        self._take_token(channel)
        message = self._new_message(params)
        self._messages.setdefault(channel, []).append(message)
        return {"channel": channel, "ts": message["ts"], "message": _public(message)}

    def _update(self, params: JsonDict) -> JsonDict:
        channel = self._member_channel(params.get("channel"))
        message = self._find(channel, str(params.get("ts") or ""))
        if message is None:
            raise _ApiError("message_not_found")
        has_blocks = params.get("blocks") is not None
        text = params.get("text")
        if text is None and not has_blocks and params.get("attachments") is None:
            raise _ApiError("no_text")
        # Slack keeps the old blocks when an update leaves `blocks` out, and the old text too.
        new_text = str(text) if text is not None else message.get("text", "")
        new_blocks = params["blocks"] if has_blocks else message.get("blocks")
        self._check_content(new_text, new_blocks, params.get("attachments"))
        metadata = _metadata(params)
        self._replace(message, new_text, new_blocks)
        if metadata is not None:
            message["metadata"] = metadata
        return {
            "channel": channel,
            "ts": message["ts"],
            "text": message["text"],
            "message": _public(message),
        }

    def _post_ephemeral(self, params: JsonDict) -> JsonDict:
        channel = self._member_channel(params.get("channel"))
        user = params.get("user")
        if not isinstance(user, str) or not _USER_ID.fullmatch(user):
            raise _ApiError("user_not_found")
        text = str(params.get("text") or "")
        blocks = params.get("blocks")
        self._check_content(text, blocks, params.get("attachments"))
        message_ts = self._next_ts()
        self._ephemerals.append(
            {
                "channel": channel,
                "user": user,
                "text": text,
                "blocks": _fill_ids(blocks) if blocks else [],
                "message_ts": message_ts,
                "thread_ts": params.get("thread_ts"),
                "via": "chat.postEphemeral",
            }
        )
        return {"message_ts": message_ts}

    def _publish_view(self, params: JsonDict) -> JsonDict:
        user = params.get("user_id")
        if not isinstance(user, str) or not _USER_ID.fullmatch(user):
            raise _ApiError("invalid_arguments", detail="user_id must be a user ID")
        view = params.get("view")
        if not isinstance(view, dict) or view.get("type") != "home":
            raise _ApiError("invalid_arguments", detail="view must be an object of type home")
        unknown = sorted(set(view) - _HOME_VIEW_KEYS)
        if unknown:
            detail = f"/view: invalid additional property: {unknown[0]}"
            raise _ApiError("invalid_arguments", detail=detail)
        reason = validate_blocks(view.get("blocks"), max_blocks=MAX_VIEW_BLOCKS)
        if reason is not None:
            raise _ApiError("invalid_arguments", detail=reason)
        published = self._views.setdefault(user, [])
        expected_hash = params.get("hash")
        if expected_hash and published and published[-1]["hash"] != expected_hash:
            raise _ApiError("hash_conflict")
        record = {
            "id": published[-1]["id"] if published else _slack_id("V"),
            "team_id": self.team_id,
            "type": "home",
            "blocks": _fill_ids(view["blocks"]),
            "private_metadata": str(view.get("private_metadata", "")),
            "callback_id": str(view.get("callback_id", "")),
            "external_id": str(view.get("external_id", "")),
            "hash": f"{time.time():.6f}.{secrets.token_hex(4)}",
            "app_id": self.app_id,
            "bot_id": self.bot_id,
            "user_id": user,
        }
        published.append(record)
        return {"view": copy.deepcopy(record)}

    def _get_upload_url(self, params: JsonDict) -> JsonDict:
        filename = params.get("filename")
        try:
            length = int(params.get("length", ""))
        except (TypeError, ValueError):
            length = -1
        if not isinstance(filename, str) or not filename or length < 0:
            raise _ApiError("invalid_arguments", detail="filename and length are required")
        file_id = _slack_id("F")
        alt_txt = params.get("alt_txt")
        self._uploads[file_id] = _PendingUpload(filename, length, alt_txt)
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _complete_upload(self, params: JsonDict) -> JsonDict:
        entries = params.get("files")
        if not isinstance(entries, list) or not entries:
            raise _ApiError("invalid_arguments", detail="files must be a non-empty array")
        shared: list[str] = []
        if params.get("channel_id"):
            shared.append(self._member_channel(params["channel_id"]))
        for channel in str(params.get("channels") or "").split(","):
            if channel.strip():
                shared.append(self._member_channel(channel.strip()))
        pending: list[tuple[JsonDict, _PendingUpload]] = []
        for entry in entries:
            upload = self._uploads.get(str(entry.get("id"))) if isinstance(entry, dict) else None
            if upload is None or upload.content is None:
                raise _ApiError("file_not_found")  # never issued, or its bytes never arrived
            pending.append((entry, upload))
        answered = []
        for entry, upload in pending:
            del self._uploads[entry["id"]]
            share_ts = self._next_ts()
            record: JsonDict = {
                "id": entry["id"],
                "name": upload.filename,
                "title": str(entry.get("title") or upload.filename),
                "mimetype": mimetypes.guess_type(upload.filename)[0] or "application/octet-stream",
                "size": len(upload.content or b""),
                "user": self.bot_user_id,
                "created": int(time.time()),
                "channels": list(shared),
                "shares": {"public": {channel: [{"ts": share_ts}] for channel in shared}},
                "initial_comment": params.get("initial_comment"),
                "thread_ts": params.get("thread_ts"),
                "alt_txt": upload.alt_txt,
            }
            self._files.append({**record, "content": upload.content})
            answered.append(record)
        return {"files": copy.deepcopy(answered)}

    def _conversation_history(self, params: JsonDict) -> JsonDict:
        channel = self._member_channel(params.get("channel"))
        oldest = _ts_param(params.get("oldest"), 0.0)
        latest = _ts_param(params.get("latest"), math.inf)
        inclusive = _flag(params.get("inclusive"))
        try:
            limit = int(params.get("limit") or 100)
            offset = int(params.get("cursor") or 0)
        except ValueError as exc:
            raise _ApiError("invalid_arguments", detail="limit and cursor must be numbers") from exc
        if limit < 1 or offset < 0:
            raise _ApiError("invalid_limit" if limit < 1 else "invalid_cursor")
        limit = min(limit, 999)
        with_metadata = _flag(params.get("include_all_metadata"))
        in_range = [
            message
            for message in reversed(self._messages.get(channel, []))
            # Thread replies live in conversations.replies; history shows their parents only.
            if message.get("thread_ts") in (None, message["ts"])
            and _within(float(message["ts"]), oldest, latest, inclusive=inclusive)
        ]
        page = in_range[offset : offset + limit]
        more = offset + limit < len(in_range)
        shown = []
        for message in page:
            public = _public(message)
            if not with_metadata:
                public.pop("metadata", None)
            shown.append(public)
        return {
            "messages": shown,
            "has_more": more,
            "pin_count": 0,
            "response_metadata": {"next_cursor": str(offset + limit) if more else ""},
        }

    def _conversation_info(self, params: JsonDict) -> JsonDict:
        channel = self._channel(params.get("channel"))
        return {
            "channel": {
                "id": channel,
                "name": channel.lower(),
                "is_channel": channel.startswith("C"),
                "is_private": channel.startswith("G"),
                "is_im": channel.startswith("D"),
                "is_member": channel not in self._left_channels,
            }
        }

    # --- helpers (lock held) ----------------------------------------------------------------

    def _channel(self, value: Any) -> str:
        if not isinstance(value, str):
            raise _ApiError("channel_not_found")
        if self._allowed_channels is not None:
            known = value in self._allowed_channels
        else:
            known = DEFAULT_CHANNEL_PATTERN.fullmatch(value) is not None
        if not known:
            raise _ApiError("channel_not_found")
        return value

    def _take_token(self, channel: str) -> None:
        if self._storm > 0:
            self._storm -= 1
            self._rate_limited += 1
            retry_after = str(self._storm_retry_after)
            raise _ApiError("ratelimited", status=429, headers={"Retry-After": retry_after})
        rate = self.rate_limit_per_channel
        if rate is None:
            return
        now = self._clock()
        bucket = self._buckets.setdefault(channel, _Bucket(float(self.burst), now))
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        self._rate_limited += 1
        wait = max(1, math.ceil((1.0 - bucket.tokens) / rate))
        raise _ApiError("ratelimited", status=429, headers={"Retry-After": str(wait)})

    def _take_method_token(self, method: str) -> None:
        """The method's tier as a token bucket holding one minute's calls: bursts are welcome
        (the tiers' own words) and the long-run rate is the tier's."""
        per_minute = self.method_rate(method)
        if per_minute is None:
            return
        now = self._clock()
        bucket = self._method_buckets.setdefault(method, _Bucket(per_minute, now))
        bucket.tokens = min(per_minute, bucket.tokens + (now - bucket.updated) * per_minute / 60)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        self._rate_limited += 1
        wait = max(1, math.ceil((1.0 - bucket.tokens) * 60 / per_minute))
        raise _ApiError("ratelimited", status=429, headers={"Retry-After": str(wait)})

    def _member_channel(self, value: Any) -> str:
        """A known channel the bot is a member of; else channel_not_found / not_in_channel."""
        channel = self._channel(value)
        if channel in self._left_channels:
            raise _ApiError("not_in_channel")
        return channel

    def _check_content(self, text: str, blocks: Any, attachments: Any) -> None:
        if not text and not blocks and not attachments:
            raise _ApiError("no_text")
        if len(text) > MAX_MESSAGE_TEXT:
            raise _ApiError("msg_too_long")
        if isinstance(blocks, str):
            raise _ApiError("invalid_blocks_format")
        if blocks is not None:
            reason = validate_blocks(blocks)
            if reason is not None:
                raise _ApiError("invalid_blocks", detail=reason)

    def _new_message(self, params: JsonDict) -> JsonDict:
        text = str(params.get("text") or "")
        blocks = params.get("blocks")
        self._check_content(text, blocks, params.get("attachments"))
        message: JsonDict = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "text": text,
            "ts": self._next_ts(),
        }
        if blocks:
            message["blocks"] = _fill_ids(blocks)
        if params.get("thread_ts"):
            message["thread_ts"] = str(params["thread_ts"])
        metadata = _metadata(params)
        if metadata is not None:
            message["metadata"] = metadata
        message["history"] = []
        return message

    def _replace(self, message: JsonDict, text: str, blocks: Any) -> None:
        earlier: JsonDict = {
            key: copy.deepcopy(message[key]) for key in ("text", "blocks") if key in message
        }
        message["history"].append({**earlier, "replaced_at": self._next_ts()})
        message["text"] = text
        if blocks:
            message["blocks"] = _fill_ids(blocks)
        else:
            message.pop("blocks", None)
        message["edited"] = {"user": self.bot_user_id, "ts": message["history"][-1]["replaced_at"]}

    def _find(self, channel: str, ts: str) -> JsonDict | None:
        for message in self._messages.get(channel, []):
            if message["ts"] == ts:
                return message
        return None

    def _next_ts(self) -> str:
        # Slack's ts: seconds and microseconds; unique and increasing across the workspace here.
        self._last_ts = max(int(time.time() * 1_000_000), self._last_ts + 1)
        seconds, micros = divmod(self._last_ts, 1_000_000)
        return f"{seconds}.{micros:06d}"

    # --- uploads and response URLs ----------------------------------------------------------

    def _upload(self, file_id: str, body: bytes) -> _Reply:
        with self._lock:
            upload = self._uploads.get(file_id)
            if upload is None:
                return _text_reply(404, "upload URL not found")
            upload.content = bytes(body)
        return _text_reply(200, f"OK - {len(body)}")

    def _respond(self, response_id: str, body: bytes) -> _Reply:
        try:
            payload = json.loads(body or b"null")
        except (UnicodeDecodeError, ValueError):
            payload = None
        if not isinstance(payload, dict):
            return _text_reply(400, "invalid_payload")
        with self._changed:
            record = self._responses.get(response_id)
            if record is None or time.monotonic() - record.created > RESPONSE_URL_LIFETIME:
                return _text_reply(404, "expired_url")
            if record.uses >= RESPONSE_URL_USES:
                return _text_reply(404, "used_url")
            record.uses += 1
            record.posts.append(copy.deepcopy(payload))
            try:
                self._apply_response(record, payload)
            except _ApiError as refusal:
                return _text_reply(400, refusal.error)
            self._changed.notify_all()
        return _text_reply(200, "ok")

    def _apply_response(self, record: _ResponseUrl, payload: JsonDict) -> None:
        original = self._find(record.channel, record.message_ts) if record.message_ts else None
        if _flag(payload.get("delete_original")):
            if original is not None:
                self._messages[record.channel].remove(original)
            return
        text = str(payload.get("text") or "")
        blocks = payload.get("blocks")
        self._check_content(text, blocks, payload.get("attachments"))
        if _flag(payload.get("replace_original")) and original is not None:
            self._replace(original, text, blocks)
        elif payload.get("response_type") == "in_channel":
            message = self._new_message(payload)
            self._messages.setdefault(record.channel, []).append(message)
        else:
            self._ephemerals.append(
                {
                    "channel": record.channel,
                    "user": record.user,
                    "text": text,
                    "blocks": _fill_ids(blocks) if blocks else [],
                    "message_ts": self._next_ts(),
                    "thread_ts": payload.get("thread_ts"),
                    "via": "response_url",
                }
            )


def _public(message: JsonDict) -> JsonDict:
    """The message as Slack returns it: without the stand-in's own `history`."""
    return {key: copy.deepcopy(value) for key, value in message.items() if key != "history"}
