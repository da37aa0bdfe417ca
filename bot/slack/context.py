"""What Slack listeners are handed: the services plus the Web API client of the workspace."""

import dataclasses
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.http_retry import RetryHandler
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.oauth.installation_store import InstallationStore

from bot.services import Services
from bot.slack.followups import Followups
from bot.slack.pacing import CallObserver, ObservedWebClient, PacedWebClient, Pacer


class WorkspaceClients:
    """Web API clients by Slack workspace.

    Single-workspace mode has one bot token: every workspace gets `default`. With an
    installation store (multi-workspace mode) each workspace's bot token is looked up there,
    and each token gets one client (made by `make`), kept so that its pacing is shared.
    """

    def __init__(
        self,
        default: WebClient,
        *,
        store: InstallationStore | None = None,
        make: Callable[[str], WebClient] | None = None,
    ) -> None:
        self.default = default
        self.store = store
        self._make = make
        self._lock = threading.Lock()
        self._by_token: dict[str, WebClient] = {}

    @property
    def multi_workspace(self) -> bool:
        """True when tokens come from the installation store."""
        return self.store is not None

    def for_token(self, token: str | None) -> WebClient:
        """The client of a bot token (the default client for the default token or none)."""
        if token is None or self._make is None or token == self.default.token:
            return self.default
        with self._lock:
            client = self._by_token.get(token)
            if client is None:
                client = self._by_token[token] = self._make(token)
            return client

    def for_team(self, team_id: str | None) -> WebClient | None:
        """The client with the bot token of workspace `team_id`; None when it is not installed."""
        if self.store is None:
            return self.default
        if team_id is None:
            return None
        bot = self.store.find_bot(enterprise_id=None, team_id=team_id)
        if bot is None or not bot.bot_token:
            return None
        return self.for_token(bot.bot_token)


@dataclass(frozen=True)
class SlackDeps:
    """Dependencies of every listener; built once in the composition root.

    In a listener, `client` is the client of the request's workspace and `team_id` the
    workspace (None in single-workspace mode, where every task is shown): see `deps_of`.
    """

    services: Services
    client: WebClient
    background: Executor
    clients: WorkspaceClients | None = None
    team_id: str | None = None
    # Where the Slack calls that follow a click run (None: on the listener thread, in tests).
    followups: Followups | None = None

    def client_for_team(self, team_id: str | None) -> WebClient | None:
        """The client that posts to workspace `team_id` (None when it is not installed)."""
        return self.client if self.clients is None else self.clients.for_team(team_id)


def make_web_client(
    token: str | None,
    *,
    base_url: str,
    timeout: float = 10,
    retries: bool = True,
    tier_scale: float | None = None,
    observer: CallObserver | None = None,
) -> WebClient:
    """A Web API client that retries rate limits, 5xx answers and dropped connections.

    `retries=False` is for the poster, which schedules its own retries per channel: a client
    that slept through one channel's Retry-After would hold up every other channel.

    With `tier_scale` the client paces every call by its method's rate limit tier (Slack's rates
    times `tier_scale`; 1.0 for Slack itself), interactive calls first, and retries each 429
    after its Retry-After until it goes through (`bot.slack.pacing`). `observer` hears of every
    call sent (the metrics of `/metrics`).
    """
    paced = tier_scale is not None
    handlers: list[RetryHandler] = []
    if retries:
        handlers = [
            ConnectionErrorRetryHandler(max_retry_count=3),
            ServerErrorRetryHandler(max_retry_count=3),
        ]
        if not paced:  # the pacer retries 429s itself, without holding its lock
            handlers.insert(1, RateLimitErrorRetryHandler(max_retry_count=3))
    options: dict[str, Any] = {
        "token": token,
        "base_url": base_url,
        # urllib takes fractional seconds; slack_sdk only annotates the timeout as int.
        "timeout": timeout,
        "retry_handlers": handlers,
    }
    if tier_scale is None:
        return ObservedWebClient(observer=observer, **options)
    return PacedWebClient(pacer=Pacer(scale=tier_scale), observer=observer, **options)


# Where the middleware in `bot.slack.listeners.register` puts the deps in Bolt's context.
DEPS_KEY = "hitl_deps"


def deps_of(context: Mapping[str, Any]) -> SlackDeps:
    """The bot's dependencies from a listener's Bolt context, with the client Bolt put in the
    context for the request's workspace and, in multi-workspace mode, its team ID."""
    deps = context[DEPS_KEY]
    if not isinstance(deps, SlackDeps):
        raise TypeError("the Bolt context carries no SlackDeps; register listeners with register()")
    client = context.get("client")
    if not isinstance(client, WebClient):
        return deps
    multi = deps.clients is not None and deps.clients.multi_workspace
    # A request that names no workspace sees no task ("" matches none), never every task.
    team_id = str(context.get("team_id") or "") if multi else None
    return dataclasses.replace(deps, client=client, team_id=team_id)
