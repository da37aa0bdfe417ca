"""Fixtures for tests that talk to the bot's HTTP app over real sockets."""

import hashlib
import hmac
import http.client
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr
from slack_bolt import App
from slack_sdk import WebClient

from bot import cli
from bot import tasks as task_ops
from bot.demo.standin import SlackStandIn
from bot.runtime import free_port
from bot.server import build_http_app
from bot.services import Services
from bot.slack.app import build_bolt_app
from bot.slack.context import SlackDeps

SECRET = "s3cret-signing"
TOKEN = "api-token"


def signed_headers(body: bytes, *, timestamp: str | None = None) -> dict[str, str]:
    """Headers Slack would send with `body` (v0 signature over the raw bytes)."""
    stamp = timestamp or str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0=" + digest.hexdigest(),
        "Content-Type": "application/x-www-form-urlencoded",
    }


class Dispatches:
    """Counts the requests that reached Bolt."""

    def __init__(self, app: App) -> None:
        self.count = 0
        original = app.dispatch

        def counting(request: Any) -> Any:
            self.count += 1
            return original(request)

        app.dispatch = counting  # type: ignore[method-assign,assignment]  # a counting spy


def http_app(
    services: Services, *, slack_url: str = "http://127.0.0.1:9/"
) -> tuple[Any, Dispatches]:
    """The bot's HTTP app; its Web API calls go to `slack_url` (by default, nowhere)."""
    deps = SlackDeps(
        services=services,
        client=WebClient(token="xoxb-test", base_url=slack_url),
        background=ThreadPoolExecutor(max_workers=1),
    )
    bolt = build_bolt_app(deps, signing_secret=SECRET)
    return build_http_app(services, bolt_app=bolt), Dispatches(bolt)


@dataclass
class Reply:
    status_code: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class Client:
    """Plain HTTP to the server under test."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(
        self, method: str, path: str, *, content: bytes = b"", headers: dict[str, str] | None = None
    ) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=content or None, headers=headers or {})
            response = connection.getresponse()
            return Reply(response.status, response.read().decode("utf-8", "replace"))
        finally:
            connection.close()

    def post(self, path: str, *, content: bytes, headers: dict[str, str]) -> Reply:
        return self.request("POST", path, content=content, headers=headers)

    def get(self, path: str, *, headers: dict[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers)


@contextmanager
def serving(app: Any) -> Iterator[int]:
    """Run `app` on a free port in a thread; yields the port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def served(sqlite_services: Services) -> Iterator[tuple[Services, Client, Dispatches]]:
    settings = sqlite_services.settings.model_copy(
        update={"slack_signing_secret": SecretStr(SECRET), "api_token": SecretStr(TOKEN)}
    )
    services = Services(
        settings=settings,
        engine=sqlite_services.engine,
        sessions=sqlite_services.sessions,
        registry=sqlite_services.registry,
    )
    with services.sessions.begin() as session:
        task_ops.create_task(session, "reviews", ["positive", "negative"], threshold=0.8)
    with SlackStandIn(bot_token="xoxb-test") as slack:
        app, dispatches = http_app(services, slack_url=slack.api_url)
        with serving(app) as port:
            yield services, Client(port), dispatches


Hitl = Callable[..., tuple[int, str, str]]


@pytest.fixture
def hitl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Hitl]:
    """Run `hitl ARGS...` in-process on a SQLite file in `tmp_path` (also the working
    directory); returns (exit code, stdout, stderr)."""
    yield from cli_on(f"sqlite:///{tmp_path / 'cli.db'}", tmp_path, monkeypatch, capsys)


def cli_on(
    database_url: str,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Hitl]:
    """`hitl ARGS...` in-process on `database_url`, run in `folder`; (exit code, stdout,
    stderr). For a fixture to yield from."""
    monkeypatch.setenv("HITL_DATABASE_URL", database_url)
    monkeypatch.chdir(folder)
    cli.services.cache_clear()

    def run(*args: str) -> tuple[int, str, str]:
        err = io.StringIO()
        code = cli.main(list(args), stderr=err)
        captured = capsys.readouterr()
        return code, captured.out, err.getvalue() + captured.err

    yield run
    if cli.services.cache_info().currsize:
        cli.services().engine.dispose()  # PostgreSQL connections would outlive the test
    cli.services.cache_clear()
