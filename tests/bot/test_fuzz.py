"""Property: whatever arrives at the two public endpoints, the answer is never a 5xx, a refused
request gets the 4xx that names its fault and changes nothing, and a malformed or forged click on
a real prompt is acked but stores nothing. Run against a real server on 127.0.0.1."""

import json
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from slack_sdk import WebClient
from sqlalchemy import func, select

from bot import outbox
from bot import tasks as task_ops
from bot.demo.standin import SlackStandIn
from bot.ingest import IncomingItem
from bot.routing import submit
from bot.server import build_http_app, is_ssl_check
from bot.services import Services
from bot.slack import ids
from bot.slack.app import build_bolt_app
from bot.slack.context import SlackDeps
from bot.storage.schema import Answer, Item, Prediction, ReviewPrompt, utcnow
from tests.bot.conftest import SECRET, TOKEN, Client, Dispatches, serving, signed_headers

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
ITEM = st.dictionaries(
    st.sampled_from(["text", "id", "label", "extra"]),
    JSON_LEAVES | st.text(alphabet=st.characters(codec=None), max_size=30),
    max_size=3,
)
ITEMS_BODIES = (
    st.binary(max_size=200)
    | JSON_VALUES.map(lambda value: json.dumps(value).encode())
    | st.lists(ITEM, max_size=4).map(
        lambda items: json.dumps({"items": items}, ensure_ascii=True).encode()
    )
)
# What a header value may hold: visible Latin-1, spaces and tabs (no line breaks).
HEADER_CHARACTERS = st.characters(codec="latin-1", exclude_categories=["Cc"]) | st.sampled_from(
    " \t"
)
SLACK_PAYLOADS = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["block_actions", "view_submission", "shortcut", "x"]),
        "user": st.one_of(st.fixed_dictionaries({"id": st.text(max_size=12)}), JSON_LEAVES),
        "actions": st.lists(
            st.fixed_dictionaries(
                {
                    "action_id": st.sampled_from(
                        ["hitl_label:0", "hitl_skip", "hitl_change", "hitl_override", "nope"]
                    ),
                    "value": st.one_of(st.text(max_size=25), JSON_LEAVES),
                }
            ),
            max_size=2,
        ),
        "container": JSON_VALUES,
    }
)
SLACK_BODIES = (
    st.binary(max_size=200)
    | SLACK_PAYLOADS.map(lambda p: ("payload=" + quote(json.dumps(p))).encode())
    | JSON_VALUES.map(lambda v: ("payload=" + quote(json.dumps(v))).encode())
    | st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5).map(
        lambda form: "&".join(f"{quote(k)}={quote(v)}" for k, v in form.items()).encode()
    )
)


def _counts(services: Services) -> tuple[int, ...]:
    """Rows of every table a request could write: items, answers, predictions, prompts."""
    with services.sessions.begin() as session:
        return tuple(
            int(session.scalar(select(func.count()).select_from(table)) or 0)
            for table in (Item, Answer, Prediction, ReviewPrompt)
        )


def _fault(body: bytes) -> int | None:
    """The status the items API owes a body, from its shape alone: 400 for bytes that are not
    JSON, 422 for JSON of the wrong shape; None when only the contents can be wrong."""
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return 400
    if not isinstance(parsed, dict) or not isinstance(parsed.get("items"), list):
        return 422
    for entry in parsed["items"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
            return 422
        external_id = entry.get("id")
        if isinstance(external_id, bool) or not isinstance(external_id, str | int | None):
            return 422
    return None


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=ITEMS_BODIES)
def test_items_api_never_5xx_and_refusals_change_nothing(
    served: tuple[Services, Client, Dispatches], body: bytes
) -> None:
    services, client, _ = served
    before = _counts(services)
    reply = client.post(
        "/api/tasks/reviews/items",
        content=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert reply.status_code < 500, reply.text
    payload: Any = reply.json()
    assert isinstance(payload, dict) and "ok" in payload
    fault = _fault(body)
    if fault is not None:
        assert reply.status_code == fault, (body, reply.text)
    else:  # well-formed: stored, or refused for its contents (an empty text, a repeated id)
        assert reply.status_code in (200, 400, 409), reply.text
    if reply.status_code != 200:
        assert payload["ok"] is False and _counts(services) == before


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    authorization=st.one_of(
        st.just(f"Bearer {TOKEN}"),
        st.text(alphabet=HEADER_CHARACTERS, max_size=30),
        st.text(alphabet=HEADER_CHARACTERS, max_size=12).map(lambda t: f"Bearer {TOKEN}{t}"),
    ),
    task=st.one_of(st.just("reviews"), st.text(alphabet="abcdefgh-_.%", min_size=1, max_size=12)),
)
def test_items_api_refuses_a_wrong_token_or_task_before_reading_anything(
    served: tuple[Services, Client, Dispatches], authorization: str, task: str
) -> None:
    """401 for a missing or wrong token, 404 for an unknown task; nothing stored either way."""
    services, client, _ = served
    before = _counts(services)
    reply = client.post(
        f"/api/tasks/{quote(task, safe='')}/items",
        content=json.dumps({"items": [{"text": "a fine text"}]}).encode(),
        headers={"Authorization": authorization, "Content-Type": "application/json"},
    )
    # HTTP drops the spaces around a header value.
    if authorization.strip(" \t") != f"Bearer {TOKEN}":
        assert reply.status_code == 401, reply.text
    elif task != "reviews":
        assert reply.status_code == 404, reply.text
    else:
        assert reply.status_code == 200, reply.text
    if reply.status_code != 200:
        assert reply.json()["ok"] is False and _counts(services) == before


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=SLACK_BODIES, sign=st.booleans())
def test_slack_endpoint_never_5xx_and_stores_no_answer(
    served: tuple[Services, Client, Dispatches], body: bytes, sign: bool
) -> None:
    services, client, _ = served
    headers = (
        signed_headers(body) if sign else {"Content-Type": "application/x-www-form-urlencoded"}
    )
    reply = client.post("/slack/events", content=body, headers=headers)
    assert reply.status_code < 500, reply.text
    if not sign and not is_ssl_check(body):  # Slack's certificate probe needs no signature
        assert reply.status_code == 401
    assert _counts(services) == (0, 0, 0, 0)


class InlineExecutor(Executor):
    """Runs each listener in the calling thread: the request's answer comes after all of the
    listener's work, so "nothing was stored" can be checked right after it."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> "Future[Any]":
        done: Future[Any] = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the future, as a pool would
            done.set_exception(exc)
        return done


CHANNEL = "C0FUZZ001"
MESSAGE_TS = "1700000000.000100"


@pytest.fixture
def posted_prompt(sqlite_services: Services) -> Iterator[tuple[Services, Client, int]]:
    """A served bot whose one review item has a prompt posted in CHANNEL at MESSAGE_TS;
    listeners run inline. Yields the services, a client and the item's id."""
    services = Services(
        settings=sqlite_services.settings.model_copy(
            update={"slack_signing_secret": SecretStr(SECRET)}
        ),
        engine=sqlite_services.engine,
        sessions=sqlite_services.sessions,
        registry=sqlite_services.registry,
    )
    with services.sessions.begin() as session:
        task = task_ops.create_task(
            session, "clicks", ["positive", "negative"], channel=CHANNEL, threshold=0.8
        )
        routed = submit(
            session,
            task,
            [IncomingItem("is this fine?")],
            registry=services.registry,
            max_chars=100,
        )
        prompt_id = session.scalars(select(ReviewPrompt.id)).one()
        outbox.mark_posted(session, prompt_id, channel=CHANNEL, ts=MESSAGE_TS, now=utcnow())
    with SlackStandIn(bot_token="xoxb-test") as slack:
        deps = SlackDeps(
            services=services,
            client=WebClient(token="xoxb-test", base_url=slack.api_url),
            background=InlineExecutor(),
        )
        bolt = build_bolt_app(deps, signing_secret=SECRET, listeners=InlineExecutor())  # type: ignore[arg-type]  # any Executor will do
        with serving(build_http_app(services, bolt_app=bolt)) as port:
            yield services, Client(port), routed[0].item_id


def _forged(item_id: int) -> st.SearchStrategy[tuple[str, str, str, str]]:
    """(action_id, value, channel, message_ts) of a click that must store nothing: a label
    or Skip click on the real prompt with one part wrong."""
    good_value = ids.encode_choice(item_id, 0)

    def not_this_item(value: str) -> bool:
        try:
            return ids.decode_choice(value)[0] != item_id
        except ValueError:
            try:
                return ids.decode_item(value) != item_id
            except ValueError:
                return True

    bad_value = (
        st.text(max_size=24) | st.integers(0, 10**20).map(str) | st.just(f"{item_id + 1}:0")
    ).filter(not_this_item)
    bad_index = st.integers(2, 10**18).map(lambda index: f"{item_id}:{index}")
    other = st.text(alphabet="CDGU0123456789ABZ.", max_size=20)
    label = "hitl_label:0"
    return st.one_of(
        st.tuples(
            st.sampled_from([label, "hitl_skip"]), bad_value, st.just(CHANNEL), st.just(MESSAGE_TS)
        ),
        st.tuples(st.just(label), bad_index, st.just(CHANNEL), st.just(MESSAGE_TS)),
        st.tuples(
            st.just(label),
            st.just(good_value),
            other.filter(lambda c: c != CHANNEL),
            st.just(MESSAGE_TS),
        ),
        st.tuples(
            st.just(label),
            st.just(good_value),
            st.just(CHANNEL),
            other.filter(lambda t: t != MESSAGE_TS),
        ),
    )


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_forged_click_on_a_real_prompt_is_acked_and_stores_nothing(
    posted_prompt: tuple[Services, Client, int], data: st.DataObject
) -> None:
    """A signed click whose value names another item, a label that does not exist, or whose
    message is not the prompt's: Slack gets its 200, and no answer is stored."""
    services, client, item_id = posted_prompt
    action_id, value, channel, message_ts = data.draw(_forged(item_id))
    assume(action_id != "hitl_skip" or value != ids.encode_item(item_id))
    payload = {
        "type": "block_actions",
        "user": {"id": "U0FUZZ001", "username": "fuzz"},
        "team": {"id": "T0001", "domain": "hitl-test"},
        "api_app_id": "A0HITL",
        "container": {"type": "message", "channel_id": channel, "message_ts": message_ts},
        "channel": {"id": channel},
        "message": {"ts": message_ts, "text": "prompt"},
        "actions": [{"action_id": action_id, "block_id": "b", "type": "button", "value": value}],
        "trigger_id": "1.2.3",
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    before = _counts(services)
    reply = client.post("/slack/events", content=body, headers=signed_headers(body))
    assert reply.status_code == 200, reply.text
    assert _counts(services) == before
