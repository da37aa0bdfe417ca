"""Events: the App Home tab shows every task's stats."""

import logging
from typing import Any

from slack_bolt import App

from bot import tasks as task_ops
from bot.slack import blocks
from bot.slack.context import SlackDeps
from bot.slack.messages import stats_view
from bot.stats import task_stats

logger = logging.getLogger(__name__)


def register(app: App, deps: SlackDeps) -> None:
    """Attach the event listeners to `app`."""

    @app.event("app_home_opened")
    def home_opened(event: dict[str, Any]) -> None:
        if event.get("tab", "home") != "home":
            return
        with deps.services.sessions.begin() as session:
            views = [stats_view(task_stats(session, t)) for t in task_ops.list_tasks(session)]
        deps.client.views_publish(user_id=event["user"], view=blocks.home_view(views))
