"""Graceful shutdown of a real `hitl serve` process on SIGTERM, against the Slack stand-in.

In flight at the signal: a slow items request (its body still arriving), a post that Slack
answers within the budget, and one it answers long after. The request completes, the first
post is recorded, the second prompt is given back (pending, unconfirmed), the process exits 0
within HITL_SHUTDOWN_SECONDS, and a later poster finds the given-back message in Slack instead
of posting it twice.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from slack_sdk import WebClient
from sqlalchemy import select

from bot import outbox
from bot import tasks as task_ops
from bot.demo.standin import SlackStandIn
from bot.runtime import Runtime, free_port
from bot.services import build_services
from bot.settings import Settings
from bot.slack.messages import message_for
from bot.slack.poster import PROMPT_EVENT, Poster
from bot.states import PromptState
from bot.storage.schema import Item, ReviewPrompt, Task, utcnow
from tests.bot.test_observability import READY_PARTS, call, wait_for
from tests.bot.test_observability import runtime as runtime  # a fixture, by name

HITL = str(Path(sys.executable).with_name("hitl"))
FAST, SLOW = "C0FAST0001", "C0SLOW0001"
SHUTDOWN_SECONDS = 3.0
TOKEN = "api-token"


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without Slack or HITL settings, plus `overrides`."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("HITL_", "SLACK_"))}
    return {**kept, **overrides}


def wait_until(check: Callable[[], object], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"waited {timeout}s for {what}"
        time.sleep(0.05)


def prompts_in(slack: SlackStandIn, channel: str) -> list[dict[str, Any]]:
    """The review prompts in `channel` (the nightly catch-up may post its report there too)."""
    return [
        message
        for message in slack.messages(channel)
        if (message.get("metadata") or {}).get("event_type") == PROMPT_EVENT
    ]


def start_request(port: int, body: bytes, *, sent: int) -> socket.socket:
    """A POST to the items API whose body has only its first `sent` bytes sent so far."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (
        "POST /api/tasks/fast/items HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    connection.sendall(head.encode() + body[:sent])
    return connection


def read_response(connection: socket.socket) -> tuple[int, dict[str, object]]:
    """Status and JSON body of the (one) response on `connection`."""
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def test_sigterm_finishes_work_in_flight_and_loses_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hitl.db'}"
    services = build_services(Settings(_env_file=None, database_url=url))
    with services.sessions.begin() as session:
        for name, channel in (("fast", FAST), ("slow", SLOW)):
            task_ops.create_task(session, name, ["yes", "no"], channel=channel, threshold=0.8)
    port = free_port()
    with SlackStandIn(bot_token="xoxb-test") as slack:
        # Each message is stored at once; Slack's answer comes after the delay.
        slack.delay_replies("chat.postMessage", 1.0, channel=FAST)
        slack.delay_replies("chat.postMessage", 60.0, channel=SLOW)
        env = clean_env(
            HITL_DATABASE_URL=url,
            HITL_HOST="127.0.0.1",
            HITL_PORT=str(port),
            HITL_MODEL_SIGNING_KEY=secrets.token_hex(32),
            HITL_API_TOKEN=TOKEN,
            HITL_SHUTDOWN_SECONDS=str(SHUTDOWN_SECONDS),
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_SIGNING_SECRET="signing-secret",
            SLACK_API_URL=slack.api_url,
        )
        process = subprocess.Popen(
            [HITL, "serve"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            api = httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=10,
            )

            def serving() -> bool:
                assert process.poll() is None, process.communicate()[1]
                try:
                    return api.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(serving, timeout=30, what="hitl serve to answer /healthz")
            for name in ("fast", "slow"):
                reply = api.post(f"/api/tasks/{name}/items", json={"items": [{"text": "hm"}]})
                assert reply.json()["items"][0]["route"] == "review"
            # Both posts are in Slack and neither answer has come back: both sends in flight.
            wait_until(
                lambda: prompts_in(slack, FAST) and prompts_in(slack, SLOW),
                timeout=10,
                what="both prompts to reach Slack",
            )
            body = json.dumps({"items": [{"id": "late", "text": "arrives while draining"}]})
            request = start_request(port, body.encode(), sent=10)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            request.sendall(body.encode()[10:])
            status, answered = read_response(request)
            request.close()
            api.close()
            _, stderr = process.communicate(timeout=SHUTDOWN_SECONDS + 10)
            took = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert status == 200, answered
        assert process.returncode == 0, stderr
        assert took < SHUTDOWN_SECONDS + 3, f"took {took:.1f}s to stop: {stderr}"
        assert "hitl stopping" in stderr

        with services.sessions.begin() as session:
            prompts = {
                name: (prompt.status, prompt.message_ts, prompt.unconfirmed_since)
                for name, prompt in session.execute(
                    select(Task.name, ReviewPrompt)
                    .join(Item, Item.id == ReviewPrompt.item_id)
                    .join(Task, Task.id == Item.task_id)
                    .where(Item.external_id.is_(None))
                )
            }
            late = session.scalars(
                select(ReviewPrompt.status)
                .join(Item, Item.id == ReviewPrompt.item_id)
                .where(Item.external_id == "late")
            ).one()
        (fast_message,) = prompts_in(slack, FAST)
        assert prompts["fast"][:2] == (PromptState.POSTED, fast_message["ts"])
        # Past the budget: given back, marked so that the next poster looks in Slack first.
        assert prompts["slow"][0] == PromptState.PENDING
        assert prompts["slow"][2] is not None
        assert late == PromptState.PENDING  # stored, and waits for the next poster

        # The next poster waits until a send abandoned in flight has settled, then finds the
        # slow prompt's message and does not post it again.
        slack.delay_replies("chat.postMessage", 0)
        settled = timedelta(seconds=outbox.GIVE_BACK_SETTLE + 1)
        poster = Poster(
            services.sessions,
            WebClient(token="xoxb-test", base_url=slack.api_url),
            message_for,
            min_interval=0.01,
            now=lambda: utcnow() + settled,
        )
        poster.run_once()
        assert poster.wait_for_sends(10)
        (slow_message,) = prompts_in(slack, SLOW)
        with services.sessions.begin() as session:
            slow = session.scalars(select(ReviewPrompt).where(ReviewPrompt.channel == SLOW)).one()
            assert (slow.status, slow.message_ts) == (PromptState.POSTED, slow_message["ts"])
        assert poster.stats.found == 1
    services.engine.dispose()


def test_readyz_says_draining_as_soon_as_the_shutdown_begins(
    request: pytest.FixtureRequest,
) -> None:
    running: Runtime = request.getfixturevalue("runtime")[0]
    wait_for(lambda: running.models.state != "loading")
    assert call(running.port, "GET", "/readyz").status == 200
    running.draining.set()  # the first thing `Runtime.stop` does
    answer = call(running.port, "GET", "/readyz")
    assert answer.status == 503
    body = answer.json()
    assert (body["ok"], body["state"], body["database"]) == (False, "draining", "ok")
    assert {key: body[key] for key in READY_PARTS} == READY_PARTS
