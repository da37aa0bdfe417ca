"""A running bot against the Slack stand-in: what `hitl demo` and the end-to-end tests start.

Settings for the stand-in → services → task → seed import → first retrain → runtime → start, in
that order, and stopped again in reverse when the `with` block ends.
"""

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from bot import tasks as task_ops
from bot.answers import import_examples
from bot.demo.standin import SlackStandIn
from bot.ingest import IncomingItem
from bot.runtime import Runtime, build_runtime, free_port
from bot.services import Services, build_services
from bot.settings import Settings
from bot.training import RetrainResult, retrain_task


@dataclass(frozen=True)
class WiredBot:
    """A started bot, the stand-in it talks to, and what a simulated Slack needs to reach it."""

    runtime: Runtime
    slack: SlackStandIn
    secret: str
    services: Services
    first_model: RetrainResult | None

    @property
    def events_url(self) -> str:
        """Where Slack sends clicks, commands and events."""
        return f"{self.runtime.url}/slack/events"


@contextmanager
def wire_bot(
    database_url: str,
    *,
    task: str,
    labels: Sequence[str],
    channel: str,
    threshold: float,
    rate: float,
    api_token: str,
    seed: Sequence[tuple[str, str]] = (),
    admins: str = "",
    bot_token: str = "xoxb-standin",
    trigger: str = "cli",
    featurizer: str = "tfidf",
) -> Iterator[WiredBot]:
    """Start a stand-in and a bot with one task; with `seed` (text, label) rows, a first model.

    `rate` is the messages per second per channel the stand-in allows, and the poster's pace.
    """
    secret = secrets.token_hex(16)
    with SlackStandIn(bot_token=bot_token, rate_limit_per_channel=rate) as slack:
        settings = Settings(
            _env_file=None,
            database_url=database_url,
            slack_bot_token=bot_token,
            slack_signing_secret=secret,
            slack_api_url=slack.api_url,
            api_token=api_token,
            admins=admins,
            # The demo's channel shows prompts only, at any hour: no quiet hours, no digest.
            quiet_hours="",
            digest_hour=None,
        )
        services = build_services(settings)
        try:
            with services.sessions.begin() as session:
                created = task_ops.create_task(
                    session,
                    task,
                    labels,
                    channel=channel,
                    threshold=threshold,
                    featurizer=featurizer,
                )
                if seed:
                    import_examples(
                        session,
                        created,
                        [IncomingItem(text, label=label) for text, label in seed],
                        max_chars=settings.max_text_chars,
                    )
            first_model = None
            if seed:
                first_model = retrain_task(
                    services.sessions,
                    task,
                    registry=services.registry,
                    settings=settings,
                    trigger=trigger,
                )
            runtime = build_runtime(
                settings,
                services=services,
                host="127.0.0.1",
                port=free_port(),
                poster_interval=1.0 / rate,
            )
            runtime.start(schedule=False)
            try:
                yield WiredBot(runtime, slack, secret, services, first_model)
            finally:
                runtime.stop()
        finally:
            services.engine.dispose()
