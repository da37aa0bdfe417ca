"""Property: whatever arrives at the two public endpoints, the answer is never a 5xx, and a
refused request changes nothing. Run against a real server on 127.0.0.1."""

import json
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot.server import is_ssl_check
from bot.services import Services
from bot.storage.schema import Answer, Item
from tests.bot.conftest import TOKEN, Client, Dispatches, signed_headers

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


def _counts(services: Services) -> tuple[int, int]:
    with services.sessions.begin() as session:
        items = session.scalar(select(func.count()).select_from(Item)) or 0
        answers = session.scalar(select(func.count()).select_from(Answer)) or 0
    return int(items), int(answers)


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
    if reply.status_code != 200:
        assert payload["ok"] is False and _counts(services) == before


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
    assert _counts(services) == (0, 0)
