"""Events: the App Home tab shows every task's stats."""

from typing import Any

from slack_bolt import BoltContext

from bot import tasks as task_ops
from bot.slack import blocks
from bot.slack.context import deps_of
from bot.slack.messages import stats_view
from bot.stats import task_stats


def on_app_home_opened(event: dict[str, Any], context: BoltContext) -> None:
    """Publish the Home tab: every task's stats."""
    if event.get("tab", "home") != "home":
        return
    deps = deps_of(context)
    with deps.services.sessions.begin() as session:
        views = [stats_view(task_stats(session, t)) for t in task_ops.list_tasks(session)]
    deps.client.views_publish(user_id=event["user"], view=blocks.home_view(views))
