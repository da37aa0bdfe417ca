"""Events: the App Home tab shows every task's stats; a revoked workspace stops being posted to."""

import logging
from typing import Any

from slack_bolt import BoltContext

from bot import outbox
from bot import tasks as task_ops
from bot.slack import blocks
from bot.slack.context import SlackDeps, deps_of
from bot.slack.messages import stats_view
from bot.states import PostingScope
from bot.stats import task_stats
from bot.storage.schema import utcnow

logger = logging.getLogger(__name__)

# Slack's events for an installation that is gone (Bolt's token revocation listeners delete it
# from the installation store).
REVOCATION_EVENTS = frozenset({"app_uninstalled", "tokens_revoked"})


def on_app_home_opened(event: dict[str, Any], context: BoltContext) -> None:
    """Publish the Home tab: the stats of every task of the workspace."""
    if event.get("tab", "home") != "home":
        return
    deps = deps_of(context)
    with deps.services.sessions.begin() as session:
        views = [
            stats_view(task_stats(session, t))
            for t in task_ops.list_tasks(session, team_id=deps.team_id)
        ]
    deps.client.views_publish(user_id=event["user"], view=blocks.home_view(views))


def pause_revoked_workspace(deps: SlackDeps, body: dict[str, Any], *, team_id: str | None) -> None:
    """`app_uninstalled`, or `tokens_revoked` of the bot's token: stop posting to that workspace.

    Its prompts wait (nothing is lost) under a workspace posting block whose reason is the
    event; installing the app again lifts it. A repeated event changes nothing.
    """
    if body.get("type") != "event_callback" or not team_id:
        return
    event = body.get("event") or {}
    kind = event.get("type")
    if kind not in REVOCATION_EVENTS:
        return
    if kind == "tokens_revoked" and not (event.get("tokens") or {}).get("bot"):
        return  # only user tokens: the bot token still posts
    with deps.services.sessions.begin() as session:
        new = outbox.block_posting(
            session, PostingScope.WORKSPACE, channel=team_id, reason=str(kind), now=utcnow()
        )
    if new:
        logger.warning(
            "posting to workspace %s stopped: %s; prompts wait until the app is installed again",
            team_id,
            kind,
        )
