""" "Send to hitl": a Slack message becomes an item; its sender hears the model, then the answer.

End to end over real HTTP: signed shortcut and view_submission payloads as Slack sends them,
the stand-in playing views.open and the response URL.
"""

import json
from typing import Any

from sqlalchemy import select

from bot.demo.standin import StandInRefusal
from bot.slack import ids
from bot.storage.schema import Item
from tests.bot.slack.conftest import CHANNEL, Bot, wait_for

SENDER = "U0SENDER1"
ORIGIN = "C0GENERAL1"
MESSAGE_TS = "1700000123.000200"


def _capture_views(bot: Bot) -> list[dict[str, Any]]:
    opened: list[dict[str, Any]] = []

    def views_open(params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("trigger_id"):
            raise StandInRefusal("invalid_trigger_id")
        view = params["view"]
        opened.append(view if isinstance(view, dict) else json.loads(view))
        return {"view": {"id": f"V{len(opened):08d}", **opened[-1]}}

    bot.slack.register_method("views.open", views_open)
    return opened


def _shortcut(bot: Bot, text: str) -> str:
    """Use the message shortcut on a message whose text Slack escaped; returns the response URL."""
    response_url = bot.slack.new_response_url(ORIGIN, SENDER)
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    payload = {
        "type": "message_action",
        "callback_id": ids.SHORTCUT_SEND,
        "trigger_id": "1234.5678.abcdef",
        "response_url": response_url,
        "team": {"id": "T0TEAM001", "domain": "acme"},
        "user": {"id": SENDER, "name": "sender"},
        "channel": {"id": ORIGIN, "name": "general"},
        "message_ts": MESSAGE_TS,
        "message": {"type": "message", "user": "U0AUTHOR1", "text": escaped, "ts": MESSAGE_TS},
    }
    delivery = bot.user(SENDER).send_interaction(payload)
    assert delivery.status == 200
    return response_url


def _submit_view(bot: Bot, view: dict[str, Any], task: str) -> Any:
    payload = {
        "type": "view_submission",
        "team": {"id": "T0TEAM001", "domain": "acme"},
        "user": {"id": SENDER, "name": "sender"},
        "view": {
            **view,
            "id": "V00000001",
            "state": {
                "values": {
                    ids.BLOCK_SEND_TASK: {
                        ids.ACTION_SEND_TASK: {
                            "type": "static_select",
                            "selected_option": {
                                "text": {"type": "plain_text", "text": task},
                                "value": task,
                            },
                        }
                    }
                }
            },
        },
    }
    return bot.user(SENDER).send_interaction(payload)


def _items(bot: Bot) -> list[Item]:
    with bot.runtime.services.sessions.begin() as session:
        return list(session.scalars(select(Item).where(Item.source == "slack")))


def test_a_message_sent_to_a_task_is_classified_and_its_sender_hears_the_answer(
    bot: Bot,
) -> None:
    opened = _capture_views(bot)
    text = "the food was cold & the <staff> rude"
    response_url = _shortcut(bot, text)
    (view,) = wait_for(lambda: opened, 1)
    assert view["callback_id"] == ids.VIEW_SEND
    submitted = _submit_view(bot, view, "reviews")
    assert submitted.status == 200
    (item,) = _items(bot)
    # The item is the text as written (Slack's escaping undone), tied to the message.
    assert (item.text, item.external_id, item.requested_by) == (
        text,
        f"slack:{ORIGIN}:{MESSAGE_TS}",
        SENDER,
    )
    (reply,) = wait_for(lambda: bot.slack.response_url_posts(response_url), 1)
    assert "Sent to reviews" in reply["text"] and reply["response_type"] == "ephemeral"
    # The fixture's threshold is 0.99: the item went to review; a reviewer answers it.
    assert "went to review" in reply["text"]
    (prompt,) = bot.prompts(1)
    button = next(
        element
        for block in prompt["blocks"]
        for element in block.get("elements") or []
        if element.get("type") == "button" and "negative" in str(element.get("text"))
    )
    bot.user("U0REVIEW1").click_button(
        prompt, button["action_id"], value=button["value"], channel_id=CHANNEL
    )
    # The first ephemeral there is the reply through the response URL; then the answer.
    notices = wait_for(lambda: bot.slack.ephemerals(channel=ORIGIN, user=SENDER), 2)
    assert "<@U0REVIEW1> labelled your message" in notices[-1]["text"]
    assert "*negative*" in notices[-1]["text"]


def test_sending_the_same_message_twice_makes_one_item(bot: Bot) -> None:
    opened = _capture_views(bot)
    for _ in range(2):
        _shortcut(bot, "so-so evening")
    views = wait_for(lambda: opened, 2)
    for view in views:
        assert _submit_view(bot, view, "reviews").status == 200
    assert len(_items(bot)) == 1


def test_an_unknown_task_is_an_error_in_the_modal_and_nothing_is_stored(bot: Bot) -> None:
    opened = _capture_views(bot)
    _shortcut(bot, "great staff")
    (view,) = wait_for(lambda: opened, 1)
    answer = _submit_view(bot, view, "nope")
    assert answer.status == 200
    body = answer.json()
    assert body["response_action"] == "errors"
    assert "no task named 'nope'" in body["errors"][ids.BLOCK_SEND_TASK]
    assert _items(bot) == []


def test_a_forged_metadata_is_refused(bot: Bot) -> None:
    view = {"type": "modal", "callback_id": ids.VIEW_SEND, "private_metadata": "{not json"}
    answer = _submit_view(bot, view, "reviews")
    assert answer.json()["response_action"] == "errors"
    assert _items(bot) == []
