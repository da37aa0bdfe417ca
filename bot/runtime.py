"""The serve process: services → Slack client → Bolt app → poster → HTTP server, in one place."""

import logging
import math
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import uvicorn
from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk.errors import SlackApiError

from bot.errors import HitlError
from bot.metrics import CountersCollector
from bot.posting_hours import PostingRules
from bot.registry import ModelRefresher, load_active_models
from bot.scheduler import NightlyRetrain
from bot.server import ClickQueue, build_http_app
from bot.services import Services, build_services
from bot.settings import Settings
from bot.slack.app import build_bolt_app, listener_pool
from bot.slack.context import SlackDeps, WorkspaceClients, make_web_client
from bot.slack.followups import Followups
from bot.slack.install import installation_store, oauth_settings
from bot.slack.messages import message_for
from bot.slack.poster import Poster
from bot.slack.reporting import publish_failure, publish_result
from bot.webhooks import WebhookWorker

logger = logging.getLogger(__name__)


class SlackSetupError(HitlError):
    """Slack credentials are missing or refused."""

    exit_code = 2


class ModelWarmup:
    """Loads every task's active model at start, so the first request does not pay for it."""

    def __init__(self) -> None:
        self.state = "loading"  # then "ready", or "failed" (an artifact refused, no database)
        self.loaded = 0

    def run(self, services: Services) -> None:
        """Load the models; the state says how it went (a thread's boundary: never raises)."""
        started = time.monotonic()
        try:
            with services.sessions.begin() as session:
                loaded, active = load_active_models(session, services.registry)
        except Exception:  # a thread's boundary: readiness reports it, the log says why
            logger.exception("loading the active models failed")
            self.state = "failed"
            return
        self.loaded = loaded
        self.state = "ready" if loaded == active else "failed"
        logger.info(
            "loaded %d of %d active models in %.1f s", loaded, active, time.monotonic() - started
        )

    def as_dict(self) -> dict[str, Any]:
        """What `/readyz` shows of the models."""
        return {"loaded": self.loaded, "state": self.state}


@dataclass
class Runtime:
    """A running bot: HTTP server in a thread, the poster, and what they share."""

    services: Services
    deps: SlackDeps
    bolt: App
    poster: Poster
    host: str
    port: int
    socket_mode: bool = False
    listeners: ThreadPoolExecutor | None = None
    nightly: NightlyRetrain | None = None
    server: uvicorn.Server | None = None
    socket_handler: SocketModeHandler | None = None
    threads: list[threading.Thread] = field(default_factory=list)
    models: ModelWarmup = field(default_factory=ModelWarmup)
    webhooks: WebhookWorker | None = None
    # Set on SIGTERM: `/readyz` answers 503 "draining" so that load balancers stop sending.
    draining: threading.Event = field(default_factory=threading.Event)
    refresher: ModelRefresher | None = None
    clicks: ClickQueue | None = None

    def __post_init__(self) -> None:
        stats = self.poster.stats
        self.services.metrics.watch(
            "prompts",
            CountersCollector(
                "hitl_prompts",
                "Review prompts posted to Slack, failed, or blocked (token or channel refused).",
                "outcome",
                lambda: {"posted": stats.posted, "failed": stats.errors, "blocked": stats.blocked},
            ),
        )

    @property
    def url(self) -> str:
        """Base URL of the HTTP server."""
        return f"http://{self.host}:{self.port}"

    def health(self) -> dict[str, Any]:
        """What `/healthz` reports beside the database: posting to Slack, the Socket Mode link."""
        return {"posting": self.poster.health(), "socket": {"state": self.socket_state()}}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether this process may take traffic (models loaded, scheduler running when it
        runs one, posting not blocked), and each part for `/readyz`."""
        posting = self.poster.health()
        scheduler = self.scheduler_state()
        ready = (
            self.models.state == "ready"
            and scheduler in ("running", "off")
            and posting.get("state") == "ok"
        )
        parts = {"models": self.models.as_dict(), "scheduler": scheduler, "posting": posting}
        if self.draining.is_set():
            return False, {"state": "draining", **parts}
        return ready, parts

    def scheduler_state(self) -> str:
        """`running` or `stopped` when this process schedules the nightly retrain; else `off`."""
        if self.nightly is None:
            return "off"
        return "running" if self.nightly.scheduler.running else "stopped"

    def socket_state(self) -> str:
        """`connected` or `disconnected` in Socket Mode (slack_sdk reconnects by itself); `off`."""
        if not self.socket_mode:
            return "off"
        handler = self.socket_handler
        return (
            "connected" if handler is not None and handler.client.is_connected() else "disconnected"
        )

    def start(self, *, schedule: bool = True) -> "Runtime":
        """Start the poster, the nightly job and the HTTP server; returns once serving.

        In Socket Mode the Slack connection comes first: a refused app token stops the start
        before anything else runs. A connection that drops later is reopened by slack_sdk.
        """
        if self.socket_mode:
            self.socket_handler = self._open_socket()
        warmup = threading.Thread(
            target=self.models.run, args=(self.services,), name="hitl-models", daemon=True
        )
        # From now on a model promoted elsewhere is loaded by the refresher, in the background.
        self.services.registry.defer_loads()
        warmup.start()
        self.threads.append(warmup)
        self.refresher = ModelRefresher(
            self.services.sessions,
            self.services.registry,
            interval=self.services.settings.model_refresh_seconds,
        )
        self.refresher.start()
        self.poster.start()
        # Results out: each resolved item POSTed to its task's webhook, if it has one.
        self.webhooks = WebhookWorker(self.services.sessions)
        self.webhooks.start()
        if schedule:
            deps = self.deps
            self.nightly = NightlyRetrain(
                self.services,
                on_result=lambda result: publish_result(deps, result),
                on_failure=lambda task, channel, reason: publish_failure(
                    deps, task, channel, reason
                ),
            )
            self.nightly.start()
        if not self.socket_mode:
            # Clicks are acknowledged once verified and queued, and handled right after.
            self.clicks = ClickQueue()
        config = uvicorn.Config(
            build_http_app(
                self.services,
                bolt_app=None if self.socket_mode else self.bolt,
                on_review=self.poster.wake,
                health=self.health,
                readiness=self.readiness,
                clicks=self.clicks,
            ),
            host=self.host,
            port=self.port,
            log_level="warning",
            # uvicorn's records go to the root logger, in HITL_LOG_FORMAT like every other line;
            # the access lines are ours (bot.logs), with the request id.
            log_config=None,
            access_log=False,
            # Requests in flight at a SIGTERM get the whole shutdown budget to finish.
            timeout_graceful_shutdown=math.ceil(self.services.settings.shutdown_seconds),
        )
        self.server = uvicorn.Server(config)
        thread = threading.Thread(target=self.server.run, name="hitl-http", daemon=True)
        thread.start()
        self.threads.append(thread)
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise SlackSetupError(f"the HTTP server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        return self

    def _open_socket(self) -> SocketModeHandler:
        token = self.services.settings.slack_app_token
        assert token is not None  # checked in build_runtime
        handler = SocketModeHandler(self.bolt, token.get_secret_value())
        try:
            handler.connect()  # type: ignore[no-untyped-call]  # bolt leaves connect() unannotated
        except SlackApiError as exc:
            close_socket(handler)  # its threads run from construction on
            raise SlackSetupError(
                f"Slack refused the app token ({exc.response.get('error')}); check SLACK_APP_TOKEN"
            ) from None
        except OSError as exc:
            close_socket(handler)
            url = self.services.settings.slack_api_url
            raise SlackSetupError(f"cannot reach Slack at {url}: {exc}") from None
        return handler

    def stop(self, *, grace: float | None = None) -> None:
        """Stop taking work, finish what is in flight within `grace` seconds (default
        HITL_SHUTDOWN_SECONDS), give back what is left, then stop the jobs.

        `/readyz` says "draining" first; the poster stops claiming at once and, while the HTTP
        server finishes its requests and acked listener work finishes, waits for its sends,
        then releases the prompts it still holds (pending again, unconfirmed).
        """
        budget = self.services.settings.shutdown_seconds if grace is None else grace
        deadline = time.monotonic() + budget
        self.draining.set()
        if self.socket_handler is not None:
            # First, so no envelope arrives while the listener pool shuts down; without it the
            # handler's threads outlive us and Slack keeps sending to a socket that acks nothing.
            close_socket(self.socket_handler)
            self.socket_handler = None
        # In its own thread: sends in flight and HTTP requests in flight share one budget.
        posting = threading.Thread(
            target=self.poster.stop, args=(budget,), name="hitl-poster-stop", daemon=True
        )
        posting.start()
        if self.server is not None:
            self.server.should_exit = True
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        # Clicks acknowledged and queued are handled, within the budget.
        left = max(0.0, deadline - time.monotonic())
        if self.clicks is not None and not self.clicks.stop(left):
            logger.warning("stopping with acknowledged clicks still queued")
        if self.listeners is not None:
            self.listeners.shutdown(wait=True)  # clicks already acked finish their work
        if self.deps.followups is not None:  # and what Slack shows after them, in the budget
            self.deps.followups.stop(max(0.0, deadline - time.monotonic()))
        # A moment past the budget: after its wait the poster gives its claims back.
        posting.join(max(0.0, deadline - time.monotonic()) + 2.0)
        if self.webhooks is not None:
            self.webhooks.stop()
        if self.refresher is not None:
            self.refresher.stop()
        if self.nightly is not None:
            self.nightly.stop()
        self.deps.background.shutdown(wait=False, cancel_futures=True)


def close_socket(handler: SocketModeHandler) -> None:
    """Close the Socket Mode connection and join every thread of the handler."""
    client = handler.client
    # close() joins the message processor, which waits up to 1 s on an empty queue before it
    # looks at `closed` again; set the flag first and wake it with None, the "nothing" message
    # it skips, so closing takes milliseconds instead.
    client.closed = True
    client.message_queue.put(None)
    handler.close()  # type: ignore[no-untyped-call]  # bolt leaves close() unannotated


def _has_secret(settings: Settings) -> bool:
    """Whether a signing secret is set: an empty one verifies nothing (anyone can sign)."""
    secret = settings.slack_signing_secret
    return secret is not None and bool(secret.get_secret_value().strip())


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def build_runtime(
    settings: Settings,
    *,
    services: Services | None = None,
    host: str | None = None,
    port: int | None = None,
    poster_interval: float = 1.0,
    socket_mode: bool = False,
) -> Runtime:
    """Check the Slack credentials and wire every part of the serve process."""
    if settings.multi_workspace:
        return _build_multi_workspace(
            settings,
            services=services,
            host=host,
            port=port,
            poster_interval=poster_interval,
            socket_mode=socket_mode,
        )
    if settings.slack_bot_token is None:
        raise SlackSetupError("SLACK_BOT_TOKEN is not set; see README 'Set up in Slack'")
    if socket_mode and settings.slack_app_token is None:
        raise SlackSetupError("Socket Mode needs SLACK_APP_TOKEN (xapp-…, scope connections:write)")
    if not _has_secret(settings) and not socket_mode:
        raise SlackSetupError("SLACK_SIGNING_SECRET is not set; see README 'Set up in Slack'")
    services = services or build_services(settings)
    client = make_web_client(
        settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        # Paced by Slack's method tiers, scaled like the poster's pace (1 s: Slack's own).
        tier_scale=1.0 / poster_interval,
        observer=services.metrics.observe_slack_call,
    )
    try:
        identity = client.auth_test()
    except SlackApiError as exc:
        raise SlackSetupError(
            f"Slack refused the bot token ({exc.response.get('error')}); check SLACK_BOT_TOKEN"
        ) from None
    except OSError as exc:
        raise SlackSetupError(f"cannot reach Slack at {settings.slack_api_url}: {exc}") from None
    logger.info("connected to Slack as %s in %s", identity.get("user"), identity.get("team"))
    deps = SlackDeps(
        services=services,
        client=client,
        background=ThreadPoolExecutor(max_workers=2, thread_name_prefix="hitl-job"),
        followups=Followups(),
        clients=WorkspaceClients(client),
    )
    secret = settings.slack_signing_secret
    listeners = listener_pool()
    bolt = build_bolt_app(
        deps, signing_secret=secret.get_secret_value() if secret else "", listeners=listeners
    )
    poster_client = make_web_client(
        settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        retries=False,
        observer=services.metrics.observe_slack_call,
    )
    poster = Poster(
        services.sessions,
        poster_client,
        message_for,
        min_interval=poster_interval,
        rules=PostingRules.from_settings(settings),
        lease=timedelta(seconds=settings.claim_lease_seconds),
        shared_pacing=True,
    )
    return Runtime(
        services=services,
        deps=deps,
        bolt=bolt,
        poster=poster,
        host=host or settings.host,
        port=settings.port if port is None else port,
        socket_mode=socket_mode,
        listeners=listeners,
    )


def _build_multi_workspace(
    settings: Settings,
    *,
    services: Services | None,
    host: str | None,
    port: int | None,
    poster_interval: float,
    socket_mode: bool,
) -> Runtime:
    """The serve process for many workspaces: OAuth install flow, a bot token per workspace
    from the installation store (no SLACK_BOT_TOKEN), HTTP only."""
    if settings.slack_signing_secret is None or not _has_secret(settings):
        raise SlackSetupError("SLACK_SIGNING_SECRET is not set; see README 'Set up in Slack'")
    if socket_mode or settings.slack_app_token is not None:
        raise SlackSetupError(
            "Socket Mode serves one workspace; unset SLACK_APP_TOKEN to serve many workspaces "
            "(SLACK_CLIENT_ID, SLACK_CLIENT_SECRET), or unset those two"
        )
    services = services or build_services(settings)
    base_url = settings.slack_api_url
    store = installation_store(settings, services.engine)
    # No token of its own: the OAuth flow calls oauth.v2.access with it, and Bolt gives each
    # request the token of its workspace.
    observer = services.metrics.observe_slack_call
    client = make_web_client(None, base_url=base_url, observer=observer)
    clients = WorkspaceClients(
        client,
        store=store,
        make=lambda token: make_web_client(
            token, base_url=base_url, tier_scale=1.0 / poster_interval, observer=observer
        ),
    )
    deps = SlackDeps(
        services=services,
        client=client,
        background=ThreadPoolExecutor(max_workers=2, thread_name_prefix="hitl-job"),
        followups=Followups(),
        clients=clients,
    )
    listeners = listener_pool()
    bolt = build_bolt_app(
        deps,
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        listeners=listeners,
        oauth=oauth_settings(
            settings, store=store, engine=services.engine, sessions=services.sessions
        ),
    )
    poster_clients = WorkspaceClients(
        make_web_client(None, base_url=base_url, retries=False, observer=observer),
        store=store,
        make=lambda token: make_web_client(
            token, base_url=base_url, retries=False, observer=observer
        ),
    )
    poster = Poster(
        services.sessions,
        poster_clients.default,
        message_for,
        min_interval=poster_interval,
        client_for=poster_clients.for_team,
        rules=PostingRules.from_settings(settings),
        lease=timedelta(seconds=settings.claim_lease_seconds),
        shared_pacing=True,
    )
    logger.info("serving many Slack workspaces; each installs the app at /slack/install")
    return Runtime(
        services=services,
        deps=deps,
        bolt=bolt,
        poster=poster,
        host=host or settings.host,
        port=settings.port if port is None else port,
        listeners=listeners,
    )
