"""`hitl serve` seen from outside: readiness that names the failing part, Prometheus metrics
that move by exactly what happened, JSON log lines carrying the request id the response names.

Every test talks to a real uvicorn server on 127.0.0.1 over http.client.
"""

import http.client
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from bot import outbox
from bot import tasks as task_ops
from bot.answers import import_examples
from bot.demo.simulator import SlackUser
from bot.demo.standin import SlackStandIn
from bot.ingest import IncomingItem
from bot.logs import log_handler, sane_request_id
from bot.metrics import DatabaseCollector
from bot.runtime import Runtime, build_runtime, free_port
from bot.server import build_http_app
from bot.services import Services, build_services
from bot.settings import Settings
from bot.slack import ids
from bot.states import PostingScope
from bot.storage.schema import WebhookDelivery, utcnow
from bot.webhooks import set_webhook
from tests.bot.conftest import TOKEN, serving

SECRET = "observed-signing-secret"
CHANNEL = "C0REVIEWS"
READY_PARTS = {
    "models": {"loaded": 0, "state": "ready"},
    "scheduler": "off",
    "posting": {"state": "ok"},
}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def call(
    port: int, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body or None, headers=headers or {})
        response = connection.getresponse()
        return Answer(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read().decode(),
        )
    finally:
        connection.close()


def submit(port: int, texts: list[str]) -> Answer:
    body = json.dumps({"items": [{"text": t} for t in texts]}).encode()
    return call(
        port,
        "POST",
        "/api/tasks/reviews/items",
        body=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of `/metrics`: (name, sorted labels) → value."""
    answer = call(port, "GET", "/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def logged(out: io.StringIO, request_id: str) -> list[dict[str, Any]]:
    """The JSON log lines of one request; waits for the access line, written once the
    response has gone out."""
    wait_for(lambda: f'"request_id": "{request_id}"' in out.getvalue())
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return [line for line in lines if line.get("request_id") == request_id]


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[tuple[Runtime, SlackStandIn]]:
    with SlackStandIn(bot_token="xoxb-observed") as slack:
        settings = Settings(
            _env_file=None,
            database_url=f"sqlite:///{tmp_path / 'bot.db'}",
            slack_bot_token="xoxb-observed",
            slack_signing_secret=SECRET,
            slack_api_url=slack.api_url,
            api_token=TOKEN,
            digest_hour=None,
            model_key_file=tmp_path / "model.key",
        )
        services = build_services(settings)
        with services.sessions.begin() as session:
            task_ops.create_task(
                session, "reviews", ["positive", "negative"], channel=CHANNEL, threshold=0.8
            )
        running = build_runtime(
            settings, services=services, host="127.0.0.1", port=free_port(), poster_interval=0.02
        )
        running.start(schedule=False)
        try:
            yield running, slack
        finally:
            running.stop()
            services.engine.dispose()


def test_readyz_is_200_with_every_part_once_the_models_are_loaded(
    runtime: tuple[Runtime, SlackStandIn],
) -> None:
    running, _ = runtime
    wait_for(lambda: running.models.state != "loading")
    answer = call(running.port, "GET", "/readyz")
    assert (answer.status, answer.json()) == (200, {"ok": True, "database": "ok", **READY_PARTS})
    assert call(running.port, "GET", "/healthz").json()["ok"] is True


def test_readyz_is_503_naming_posting_while_a_channel_is_blocked(
    runtime: tuple[Runtime, SlackStandIn],
) -> None:
    running, _ = runtime
    wait_for(lambda: running.models.state != "loading")
    with running.services.sessions.begin() as session:
        outbox.block_posting(
            session, PostingScope.CHANNEL, channel=CHANNEL, reason="not_in_channel", now=utcnow()
        )
    answer = call(running.port, "GET", "/readyz")
    assert answer.status == 503
    body = answer.json()
    assert (body["ok"], body["database"], body["models"]) == (False, "ok", READY_PARTS["models"])
    assert body["posting"]["state"] == "blocked"
    assert body["posting"]["channels"][CHANNEL]["reason"] == "not_in_channel"
    # Liveness is not readiness: the process is alive and answers.
    assert call(running.port, "GET", "/healthz").status == 200


def test_readyz_and_metrics_while_the_database_is_unreachable() -> None:
    settings = Settings(
        _env_file=None,
        database_url="postgresql+psycopg://nobody@127.0.0.1:9/secret_db_name",
        api_token=TOKEN,
    )
    services = build_services(settings, migrate=False)
    app = build_http_app(services, bolt_app=None, readiness=lambda: (True, READY_PARTS))
    with serving(app) as port:
        answer = call(port, "GET", "/readyz")
        assert answer.status == 503
        assert answer.json() == {"ok": False, "database": "unavailable", **READY_PARTS}
        assert "secret_db_name" not in answer.text
        scraped = samples(port)
    assert scraped[("hitl_database_up", ())] == 0
    assert not any(name.startswith("hitl_queue_waiting") for name, _ in scraped)
    services.engine.dispose()


def test_metrics_count_submitted_items_posted_prompts_and_a_signed_click(
    runtime: tuple[Runtime, SlackStandIn],
) -> None:
    running, slack = runtime
    port = running.port
    answer = submit(port, ["one", "two", "three"])
    assert answer.status == 200, answer.text
    items = answer.json()["items"]
    assert [item["route"] for item in items] == ["review"] * 3

    wait_for(lambda: len(slack.messages(CHANNEL)) == 3)
    wait_for(lambda: samples(port).get(("hitl_prompts_total", (("outcome", "posted"),))) == 3)
    scraped = samples(port)
    assert scraped[("hitl_items_total", (("route", "review"), ("task", "reviews")))] == 3
    assert scraped[("hitl_queue_waiting", (("task", "reviews"),))] == 3
    assert scraped[("hitl_prompts_total", (("outcome", "blocked"),))] == 0
    assert scraped[("hitl_slack_api_calls_total", (("method", "chat.postMessage"),))] == len(
        slack.calls("chat.postMessage")
    )
    assert scraped[("hitl_database_up", ())] == 1
    assert ("hitl_model_version", (("task", "reviews"),)) not in scraped  # no model yet
    assert ("hitl_auto_precision", (("task", "reviews"),)) not in scraped
    assert ("hitl_answers_total", (("source", "slack"),)) not in scraped

    first = items[0]["item_id"]
    (message,) = [
        m for m in slack.messages(CHANNEL) if ids.encode_choice(first, 0) in json.dumps(m)
    ]
    user = SlackUser(f"{running.url}/slack/events", SECRET, standin=slack)
    for _ in range(2):  # the second click is a retry: stored once
        delivery = user.click_button(
            message, ids.label_action_id(0), value=ids.encode_choice(first, 0), channel_id=CHANNEL
        )
        assert delivery.status == 200
        wait_for(lambda: samples(port).get(("hitl_answers_total", (("source", "slack"),))) == 1)
    wait_for(lambda: samples(port)[("hitl_queue_waiting", (("task", "reviews"),))] == 2)
    scraped = samples(port)
    assert scraped[("hitl_answers_total", (("source", "slack"),))] == 1
    assert scraped[("hitl_slack_ack_seconds_count", ())] == 2
    assert scraped[("hitl_items_total", (("route", "review"), ("task", "reviews")))] == 3


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every `bot` log record at info and above, as JSON lines in a buffer."""
    out = io.StringIO()
    handler = log_handler("json", stream=out)
    bot_logger = logging.getLogger("bot")
    level = bot_logger.level
    bot_logger.addHandler(handler)
    bot_logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        bot_logger.removeHandler(handler)
        bot_logger.setLevel(level)


def test_json_log_lines_carry_the_request_id_the_response_returned(
    runtime: tuple[Runtime, SlackStandIn], json_log: io.StringIO
) -> None:
    running, _ = runtime
    answer = submit(running.port, ["a text that must not be logged"])
    assert answer.status == 200
    rid = answer.headers["x-request-id"]
    assert sane_request_id(rid) == rid and len(rid) == 32
    mine = logged(json_log, rid)
    assert [line["message"] for line in mine] == ["POST /api/tasks/reviews/items 200"]
    assert mine[0]["level"] == "INFO" and mine[0]["logger"] == "bot.logs"
    assert set(mine[0]) == {"ts", "level", "logger", "message", "request_id"}
    assert "must not be logged" not in json_log.getvalue()


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [
        ("req-42.abc_DEF", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("has space", False),
        ("semi;colon", False),
    ],
)
def test_a_sane_client_request_id_is_echoed_and_any_other_replaced(
    runtime: tuple[Runtime, SlackStandIn], json_log: io.StringIO, sent: str, echoed: bool
) -> None:
    running, _ = runtime
    answer = call(running.port, "GET", "/api/tasks/reviews/items/x", headers={"X-Request-ID": sent})
    assert answer.status == 401  # no token: refused, and still traced
    rid = answer.headers["x-request-id"]
    assert (rid == sent) is echoed
    assert sane_request_id(rid) == rid
    assert [line["message"] for line in logged(json_log, rid)] == [
        "GET /api/tasks/reviews/items/x 401"
    ]


def test_text_log_lines_carry_the_request_id_too(runtime: tuple[Runtime, SlackStandIn]) -> None:
    running, _ = runtime
    out = io.StringIO()
    handler = log_handler("text", stream=out)
    bot_logger = logging.getLogger("bot.logs")
    level = bot_logger.level
    bot_logger.addHandler(handler)
    bot_logger.setLevel(logging.INFO)
    try:
        call(running.port, "GET", "/api/tasks/reviews/items/x", headers={"X-Request-ID": "t-1"})
        wait_for(lambda: "[t-1]" in out.getvalue())
    finally:
        bot_logger.removeHandler(handler)
        bot_logger.setLevel(level)
    assert " INFO bot.logs [t-1]: GET /api/tasks/reviews/items/x 401" in out.getvalue()


def test_the_log_format_setting_is_checked() -> None:
    assert Settings(_env_file=None, log_format=" JSON ").log_format == "json"
    with pytest.raises(ValueError, match="text or json"):
        Settings(_env_file=None, log_format="xml")


def test_metrics_count_webhook_events_by_task_and_state(sqlite_services: Services) -> None:
    with sqlite_services.sessions.begin() as session:
        hooked = task_ops.create_task(session, "hooked", ["a", "b"], threshold=0.9)
        task_ops.create_task(session, "plain", ["a", "b"], threshold=0.9)
        set_webhook(session, hooked, "https://example.com/hook", actor="test")
    for name in ("hooked", "plain"):
        with sqlite_services.sessions.begin() as session:
            import_examples(
                session,
                task_ops.get_task(session, name),
                [IncomingItem(f"{name} {n}", label="a") for n in range(3)],
                max_chars=100,
            )
    with sqlite_services.sessions.begin() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.sequence == 1, WebhookDelivery.item_id == 1)
            .values(status="failed")
        )
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(sqlite_services.sessions))
    scraped = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    events = {key: value for key, value in scraped.items() if key[0] == "hitl_webhook_events"}
    assert events == {
        ("hitl_webhook_events", (("state", "pending"), ("task", "hooked"))): 2,
        ("hitl_webhook_events", (("state", "failed"), ("task", "hooked"))): 1,
    }
