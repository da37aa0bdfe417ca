"""Slack signature checks cannot be turned off: every way of getting them wrong is a 401, with
every settings combination, and no setting or environment variable skips them."""

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr
from slack_bolt.middleware.request_verification import RequestVerification
from slack_sdk import WebClient

from bot.runtime import SlackSetupError, build_runtime
from bot.server import build_http_app
from bot.services import Services
from bot.settings import Settings
from bot.slack.app import build_bolt_app
from bot.slack.context import SlackDeps
from tests.bot.conftest import SECRET, Client, Dispatches, serving

BODY = urlencode(
    {"payload": json.dumps({"type": "block_actions", "user": {"id": "U1"}, "actions": []})}
).encode()
# Names someone might try to turn verification off with; none of them may work.
SWITCHES = (
    "SLACK_VERIFICATION_TOKEN",
    "SLACK_SKIP_VERIFICATION",
    "SLACK_REQUEST_VERIFICATION_ENABLED",
    "HITL_SKIP_SIGNATURE",
    "HITL_VERIFY_SIGNATURES",
    "HITL_INSECURE",
    "HITL_DEBUG",
    "HITL_TESTING",
)


def headers(secret: str, *, timestamp: int | None = None, body: bytes = BODY) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0=" + digest.hexdigest(),
        "Content-Type": "application/x-www-form-urlencoded",
    }


def forged_requests() -> dict[str, dict[str, str]]:
    """Every way a request can fail the check, by name."""
    now = int(time.time())
    return {
        "no headers": {"Content-Type": "application/x-www-form-urlencoded"},
        "wrong secret": headers("not-the-secret"),
        "empty secret": headers(""),
        "stale timestamp": headers(SECRET, timestamp=now - 6 * 60),
        "future timestamp": headers(SECRET, timestamp=now + 6 * 60),
        "other body": headers(SECRET, body=BODY + b"&x=1"),
        "not a number": {**headers(SECRET), "X-Slack-Request-Timestamp": "soon"},
        "no signature": {k: v for k, v in headers(SECRET).items() if k != "X-Slack-Signature"},
    }


@pytest.fixture(params=[None, "", SECRET], ids=["secret unset", "secret empty", "secret set"])
def app_with_secret(
    request: pytest.FixtureRequest,
    sqlite_services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Client, Dispatches]]:
    """The HTTP app with the signing secret unset, empty or set, and every would-be switch in
    the environment."""
    for name in SWITCHES:
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "")
    secret = request.param
    settings = Settings(
        _env_file=None,
        database_url=sqlite_services.settings.database_url,
        slack_signing_secret=None if secret is None else SecretStr(secret),
    )
    services = Services(
        settings=settings,
        engine=sqlite_services.engine,
        sessions=sqlite_services.sessions,
        registry=sqlite_services.registry,
    )
    deps = SlackDeps(
        services=services,
        client=WebClient(token="xoxb-test", base_url="http://127.0.0.1:9/"),
        background=ThreadPoolExecutor(max_workers=1),
    )
    bolt = build_bolt_app(deps, signing_secret=secret or "")
    dispatches = Dispatches(bolt)
    with serving(build_http_app(services, bolt_app=bolt)) as port:
        yield Client(port), dispatches
    deps.background.shutdown()


def test_every_unsigned_or_badly_signed_request_is_401(
    app_with_secret: tuple[Client, Dispatches],
) -> None:
    client, dispatches = app_with_secret
    for name, sent in forged_requests().items():
        reply = client.post("/slack/events", content=BODY, headers=sent)
        assert reply.status_code == 401, name
        assert reply.json() == {"ok": False, "error": "invalid or missing Slack signature"}, name
    assert dispatches.count == 0


def test_without_a_secret_even_a_request_signed_with_the_empty_secret_is_401(
    app_with_secret: tuple[Client, Dispatches],
) -> None:
    """An empty secret is not a secret: a signature anyone can compute proves nothing."""
    client, dispatches = app_with_secret
    reply = client.post("/slack/events", content=BODY, headers=headers(""))
    assert reply.status_code == 401
    assert dispatches.count == 0


def test_a_correct_signature_reaches_bolt_only_with_the_secret_set(
    app_with_secret: tuple[Client, Dispatches], request: pytest.FixtureRequest
) -> None:
    client, dispatches = app_with_secret
    reply = client.post("/slack/events", content=BODY, headers=headers(SECRET))
    secret_set = request.node.callspec.params["app_with_secret"] == SECRET
    assert (reply.status_code != 401) == secret_set
    assert dispatches.count == (1 if secret_set else 0)


def test_bolt_verifies_requests_too() -> None:
    """Behind our own check, Bolt's request verification stays on (defence in depth)."""
    deps = SlackDeps(
        services=None,  # type: ignore[arg-type]  # the app is only built, never dispatched
        client=WebClient(token="xoxb-test", base_url="http://127.0.0.1:9/"),
        background=ThreadPoolExecutor(max_workers=1),
    )
    bolt = build_bolt_app(deps, signing_secret=SECRET)
    assert any(isinstance(m, RequestVerification) for m in bolt._middleware_list)
    deps.background.shutdown()


@pytest.mark.parametrize("secret", [None, "", "   "])
def test_serve_refuses_to_start_without_a_signing_secret(
    secret: str | None, tmp_path: Path
) -> None:
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
        slack_bot_token=SecretStr("xoxb-test"),
        slack_signing_secret=None if secret is None else SecretStr(secret),
    )
    with pytest.raises(SlackSetupError, match="SLACK_SIGNING_SECRET is not set"):
        build_runtime(settings)


def test_no_setting_can_switch_verification_off() -> None:
    """Settings hold no knob that sounds like skipping the check (a new one must not)."""
    suspicious = ("verif", "insecure", "unsigned", "signature", "no_sign", "disable")
    names = [name.lower() for name in Settings.model_fields]
    assert [n for n in names if any(word in n for word in suspicious)] == []
