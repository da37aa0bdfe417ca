"""The message shortcut "Send to hitl": any Slack message becomes an item of a task.

The shortcut opens a modal to pick the task; the message's text, channel and timestamp travel
in the modal's private metadata. On submit the item is classified like any other (its id is
`slack:<channel>:<ts>`, so sending the same message twice is a safe replay), the sender hears at
once what the model said, and, when it went to review, hears the answer when a reviewer gives it.
"""

import html
import json
import logging
from typing import Any

from slack_bolt import Ack, BoltContext, Respond
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bot import tasks as task_ops
from bot.errors import HitlError
from bot.ingest import IncomingItem
from bot.routing import Routed, submit
from bot.slack import blocks, ids
from bot.slack.context import SlackDeps, deps_of
from bot.storage.db import in_transaction

logger = logging.getLogger(__name__)

# Slack caps a view's private_metadata at 3,000 characters.
METADATA_LIMIT = 3000


def on_send_to_task(
    ack: Ack, shortcut: dict[str, Any], respond: Respond, context: BoltContext
) -> None:
    """Open the task picker for the message the shortcut was used on."""
    ack()
    deps = deps_of(context)
    message = shortcut.get("message") or {}
    # Slack sends message text with &, < and > escaped; the item is the text as written.
    text = html.unescape(str(message.get("text") or ""))
    if not text.strip():
        _reply(respond, "That message has no text to classify.")
        return
    metadata = json.dumps(
        {
            "c": str((shortcut.get("channel") or {}).get("id") or ""),
            "ts": str(message.get("ts") or shortcut.get("message_ts") or ""),
            "t": text,
            "r": str(shortcut.get("response_url") or ""),
        },
        ensure_ascii=False,
    )
    if len(metadata) > METADATA_LIMIT:
        _reply(respond, "That message is too long to send from Slack; use the items API.")
        return
    with deps.services.sessions.begin() as session:
        names = [task.name for task in task_ops.list_tasks(session, team_id=deps.team_id)]
    if not names:
        _reply(respond, "There are no tasks yet; create one with `hitl task create`.")
        return
    view = blocks.send_to_task_view(names, preview=text, metadata=metadata)
    try:
        deps.client.views_open(trigger_id=shortcut["trigger_id"], view=view)
    except SlackApiError:
        logger.exception("could not open the Send to hitl modal")
        _reply(respond, "Could not open the task picker; please try again.")


def on_send_submitted(
    ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext
) -> None:
    """Classify the message as an item of the chosen task, then tell the sender."""
    deps = deps_of(context)
    user = str((body.get("user") or {}).get("id") or "")
    try:
        sent = _parse_metadata(str(view.get("private_metadata") or ""))
        task_name = _chosen_task(view)
        routed, channel = in_transaction(
            deps.services.sessions, lambda session: _submit(deps, session, task_name, sent, user)
        )
    except HitlError as exc:
        ack(response_action="errors", errors={ids.BLOCK_SEND_TASK: str(exc)[:150]})
        return
    except DBAPIError:
        logger.exception("Send to hitl: the database failed")
        ack(
            response_action="errors",
            errors={ids.BLOCK_SEND_TASK: "The database is unavailable; nothing was sent."},
        )
        return
    ack()
    reply = blocks.sent_to_task_reply(
        task_name,
        route=routed.route,
        label=routed.label,
        confidence=routed.confidence,
        model_version=routed.model_version,
        channel=channel,
    )
    tell_sender(deps, user, reply, channel=sent.get("c"), response_url=sent.get("r"))


def tell_sender(
    deps: SlackDeps,
    user: str,
    message: dict[str, Any],
    *,
    channel: str | None = None,
    response_url: str | None = None,
) -> None:
    """An ephemeral note to `user`: through the shortcut's response URL, else in `channel` if
    the bot may post there, else in a direct message."""
    if response_url:
        try:
            sent = WebhookClient(response_url, timeout=5).send(
                response_type="ephemeral", replace_original=False, **message
            )
            if sent.status_code == 200:
                return
            logger.info("response URL answered %d; trying another way", sent.status_code)
        except (OSError, ValueError):
            logger.info("response URL unreachable; trying another way", exc_info=True)
    try:
        if channel:
            deps.client.chat_postEphemeral(channel=channel, user=user, **message)
            return
    except SlackApiError as exc:
        logger.info("ephemeral reply refused (%s); sending a direct message", exc.response["error"])
    try:
        deps.client.chat_postMessage(channel=user, **message)
    except SlackApiError:
        logger.exception("could not tell %s about their item", user)


def origin_channel(external_id: str | None) -> str | None:
    """The channel a message sent with the shortcut came from (its id is `slack:C…:ts`)."""
    if not external_id or not external_id.startswith("slack:"):
        return None
    channel = external_id.split(":")[1]
    return channel or None


def _submit(
    deps: SlackDeps, session: Session, task_name: str, sent: dict[str, str], user: str
) -> tuple[Routed, str | None]:
    task = task_ops.get_task(session, task_name, team_id=deps.team_id)
    (routed,) = submit(
        session,
        task,
        [IncomingItem(sent["t"], external_id=f"slack:{sent['c']}:{sent['ts']}")],
        registry=deps.services.registry,
        max_chars=deps.services.settings.max_text_chars,
        source="slack",
        requested_by=user,
    )
    return routed, task.channel


def _parse_metadata(raw: str) -> dict[str, str]:
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), str) for k in ["c", "ts", "t", "r"]
    ):
        raise HitlError("This form is out of date; use the shortcut on the message again.")
    return {key: str(data[key]) for key in ("c", "ts", "t", "r")}


def _chosen_task(view: dict[str, Any]) -> str:
    values = ((view.get("state") or {}).get("values") or {}).get(ids.BLOCK_SEND_TASK) or {}
    selected = (values.get(ids.ACTION_SEND_TASK) or {}).get("selected_option") or {}
    name = selected.get("value")
    if not isinstance(name, str) or not name:
        raise HitlError("Choose a task.")
    return name


def _reply(respond: Respond, text: str) -> None:
    respond(response_type="ephemeral", replace_original=False, **blocks.ephemeral_text(text))
