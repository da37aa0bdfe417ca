"""Faults a deployment meets, each forced on purpose: a replica killed with SIGKILL mid-send, the
database restarted under traffic, Slack answering 500s and 429s for a minute, two replicas
catching up the same nightly retrain.

The replica tests run real `hitl serve` processes (the image's command) against PostgreSQL and
the Slack stand-in, and wait on what they can observe (rows, messages, counters) with a deadline,
never on fixed sleeps. The database restart runs a private, throwaway PostgreSQL cluster: the
shared server stays up for every other test.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from slack_sdk import WebClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot import tasks as task_ops
from bot.answers import import_examples
from bot.demo.simulator import FORM, SlackUser, sign
from bot.demo.standin import SlackStandIn
from bot.ingest import IncomingItem
from bot.routing import submit
from bot.runtime import free_port
from bot.services import Services
from bot.slack.context import make_web_client
from bot.slack.messages import message_for
from bot.slack.poster import PROMPT_EVENT, Poster
from bot.states import PromptState, RunStatus
from bot.storage.db import make_engine, make_sessionmaker, upgrade
from bot.storage.schema import Answer, ModelVersion, RetrainRun, ReviewPrompt, Task, utcnow
from tests.bot.slack.test_poster import FakeClock
from tests.conftest import POSTGRES_URL, TINY
from tests.serve_processes import (
    API_TOKEN,
    SIGNING_SECRET,
    ServeProcess,
    first_label_button,
    fresh_database,
    serve_env,
    start_serve,
)

T = TypeVar("T")
LEASE_SECONDS = 2.0
NIGHTLY_TASK = "nightly"


def wait_until(check: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll `check` until it returns something other than None/False; fail with `what`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}")
        time.sleep(0.05)


def api(replica: ServeProcess) -> httpx.Client:
    """The items API of `replica`, with the bearer token."""
    return httpx.Client(
        base_url=replica.url, timeout=10.0, headers={"Authorization": f"Bearer {API_TOKEN}"}
    )


def prompt_messages(slack: SlackStandIn, channel: str) -> list[dict[str, Any]]:
    """The review prompts Slack holds in `channel` (messages carrying the prompt metadata)."""
    return [
        message
        for message in slack.messages(channel)
        if (message.get("metadata") or {}).get("event_type") == PROMPT_EVENT
    ]


def item_of(message: dict[str, Any]) -> int:
    """The item id a prompt message carries in its metadata."""
    return int(message["metadata"]["event_payload"]["item_id"])


def click_first_label(
    replica: ServeProcess, slack: SlackStandIn, message: dict[str, Any], *, channel: str, user: str
) -> int:
    """Click the message's first label button as `user`, signed as Slack signs; the status."""
    person = SlackUser(f"{replica.url}/slack/events", SIGNING_SECRET, user_id=user, standin=slack)
    action = first_label_button(message)
    delivery = person.click_button(
        message, action["action_id"], value=action["value"], channel_id=channel
    )
    assert delivery.status is not None, delivery.error
    return delivery.status


# --- two replicas on one database ---------------------------------------------------------


@dataclass
class Replicas:
    """Two `hitl serve` processes on one PostgreSQL database, each with its own bot token."""

    sessions: sessionmaker[Session]
    slack: SlackStandIn
    processes: list[ServeProcess]
    tokens: list[str]
    slot: datetime


def retrain_outcomes(replica: ServeProcess) -> dict[str, float]:
    """The replica's `hitl_retrain_runs_total` by outcome, from its /metrics."""
    body = httpx.get(f"{replica.url}/metrics", timeout=5.0).text
    found = re.findall(r'^hitl_retrain_runs_total\{outcome="([^"]+)"\} ([0-9.e+]+)$', body, re.M)
    return {outcome: float(value) for outcome, value in found}


def catch_up_done(replicas: Replicas, tasks: int) -> dict[str, float] | None:
    """Both replicas' retrain outcomes, summed, once each has gone through every task."""
    per_replica = [retrain_outcomes(process) for process in replicas.processes]
    if any(sum(outcomes.values()) < tasks for outcomes in per_replica):
        return None
    total: dict[str, float] = {}
    for outcomes in per_replica:
        for outcome, count in outcomes.items():
            total[outcome] = total.get(outcome, 0.0) + count
    return total


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Two replicas started at the same moment, on a fresh database with one task that has
    labelled examples; their retrain schedule's last slot was two minutes ago, so both catch it
    up at start. A prompt claimed by a dead replica is taken over after `LEASE_SECONDS`."""
    folder = tmp_path_factory.mktemp("replicas")
    now = utcnow()
    slot = (now - timedelta(minutes=2)).replace(second=0, microsecond=0)
    with (
        fresh_database(POSTGRES_URL, prefix="hitl_faults") as url,
        SlackStandIn(bot_token="xoxb-test", rate_limit_per_channel=None) as slack,
    ):
        engine = make_engine(url)
        upgrade(engine)
        sessions = make_sessionmaker(engine)
        with sessions.begin() as session:
            task = task_ops.create_task(
                session, NIGHTLY_TASK, ["positive", "negative"], threshold=0.8
            )
            import_examples(
                session, task, [IncomingItem(t, label=label) for t, label in TINY], max_chars=1000
            )
        # The second replica posts with a second token of the same workspace, so the stand-in's
        # call log tells the replicas apart.
        code = slack.issue_code(slack.team_id)
        second = WebClient(base_url=slack.api_url).oauth_v2_access(
            client_id=slack.client_id, client_secret=slack.client_secret, code=code
        )
        tokens = ["xoxb-test", str(second["access_token"])]
        processes: list[ServeProcess] = []
        try:
            for index, token in enumerate(tokens):
                env = serve_env(
                    url,
                    slack.api_url,
                    SLACK_BOT_TOKEN=token,
                    HITL_RETRAIN_CRON=f"{slot.minute} {slot.hour} * * *",
                    HITL_TIMEZONE="UTC",
                    HITL_CLAIM_LEASE_SECONDS=str(LEASE_SECONDS),
                )
                processes.append(start_serve(f"replica{index}", env, folder=folder))
            for process in processes:
                process.wait_healthy()
            yield Replicas(sessions, slack, processes, tokens, slot)
        finally:
            for process in processes:
                process.stop()
            engine.dispose()


def test_two_replicas_catch_up_a_missed_retrain_once_per_task(replicas: Replicas) -> None:
    """Both replicas start after a missed slot and both catch it up: the task is retrained
    once (one replica trains, the other finds the slot claimed), with one run row and one
    model version."""
    outcomes = wait_until(
        lambda: catch_up_done(replicas, tasks=1), timeout=60, what="both replicas' catch-up"
    )
    assert outcomes == {RunStatus.PROMOTED.value: 1.0, RunStatus.CLAIMED.value: 1.0}
    with replicas.sessions.begin() as session:
        task_id = session.scalar(select(Task.id).where(Task.name == NIGHTLY_TASK))
        runs = session.scalars(select(RetrainRun).where(RetrainRun.task_id == task_id)).all()
        versions = session.scalar(
            select(func.count()).select_from(ModelVersion).where(ModelVersion.task_id == task_id)
        )
    assert [(run.scheduled_for, run.status, run.trigger) for run in runs] == [
        (replicas.slot, RunStatus.PROMOTED.value, "schedule")
    ]
    pids = {str(process.pid) for process in replicas.processes}
    assert runs[0].claimed_by.rsplit(":", 1)[1] in pids
    assert versions == 1


def test_a_replica_killed_mid_send_leaves_every_prompt_posted_once(replicas: Replicas) -> None:
    """SIGKILL of the replica whose chat.postMessage is in flight (Slack stored the message, the
    answer had not come back): after the lease the other replica takes the prompt over, finds
    the message instead of posting it again, posts everything submitted before and after the
    kill once each, and stores the clicks it is sent."""
    slack, sessions = replicas.slack, replicas.sessions
    wait_until(lambda: catch_up_done(replicas, tasks=1), timeout=60, what="the catch-up")
    channels = {"kill_a": "C0KILLA01", "kill_b": "C0KILLB01"}
    # Created after the catch-up, so no retrain report lands in these channels.
    with sessions.begin() as session:
        for name, channel in channels.items():
            task_ops.create_task(
                session, name, ["positive", "negative"], channel=channel, threshold=0.8
            )
    slack.delay_replies("chat.postMessage", 5.0, channel=channels["kill_a"], count=1)
    submitted: list[int] = []
    for index, process in enumerate(replicas.processes):
        submitted += submit_items(process, channels, f"before {index}")

    def stuck_call() -> str | None:
        calls = slack.calls("chat.postMessage")
        first = [c for c in calls if c.params.get("channel") == channels["kill_a"]]
        return first[0].token if first else None

    token = str(wait_until(stuck_call, timeout=30, what="a send to kill_a"))
    victim = replicas.processes[replicas.tokens.index(token)]
    survivor = next(p for p in replicas.processes if p is not victim)
    victim.kill()
    submitted += submit_items(survivor, channels, "after")  # traffic goes on

    def all_posted() -> bool:
        with sessions.begin() as session:
            states = session.scalars(
                select(ReviewPrompt.status).where(ReviewPrompt.item_id.in_(submitted))
            ).all()
        return len(states) == len(submitted) and set(states) == {PromptState.POSTED}

    wait_until(all_posted, timeout=LEASE_SECONDS + 30, what="every prompt posted")
    posted = {channel: prompt_messages(slack, channel) for channel in channels.values()}
    messages = [(channel, m) for channel, found in posted.items() for m in found]
    assert sorted(item_of(m) for _, m in messages) == sorted(submitted)  # each item once
    with sessions.begin() as session:
        query = select(ReviewPrompt.item_id, ReviewPrompt.message_ts)
        stored = dict(session.execute(query.where(ReviewPrompt.item_id.in_(submitted))).all())
    assert stored == {item_of(m): m["ts"] for _, m in messages}
    # The prompt in flight at the kill was found in the history, not posted again.
    survivor_token = replicas.tokens[replicas.processes.index(survivor)]
    lookups = slack.calls_with_token(survivor_token, "conversations.history")
    assert [call.params["channel"] for call in lookups] == [channels["kill_a"]]

    # No answer lost: every click the survivor acks is stored, once.
    clicks = {item_of(m): f"U0CLICK{item_of(m):03d}" for _, m in messages}
    for channel, message in messages:
        user = clicks[item_of(message)]
        assert click_first_label(survivor, slack, message, channel=channel, user=user) == 200

    def answers() -> dict[tuple[int, str], int] | None:
        with sessions.begin() as session:
            rows = session.execute(
                select(Answer.item_id, Answer.user_id, func.count())
                .where(Answer.item_id.in_(submitted))
                .group_by(Answer.item_id, Answer.user_id)
            ).all()
        found = {(int(r[0]), str(r[1])): int(r[2]) for r in rows}
        return found if len(found) == len(clicks) else None

    assert wait_until(answers, timeout=15, what="every click stored") == {
        (item, user): 1 for item, user in clicks.items()
    }


def submit_items(replica: ServeProcess, channels: dict[str, str], tag: str) -> list[int]:
    """Two items for each task of `channels` through `replica`'s items API; their ids."""
    ids: list[int] = []
    with api(replica) as client:
        for name in channels:
            body = {"items": [{"text": f"{name} {tag} {n}"} for n in range(2)]}
            reply = client.post(f"/api/tasks/{name}/items", json=body)
            assert reply.status_code == 200, reply.text
            ids += [item["item_id"] for item in reply.json()["items"]]
    return ids


# --- the database restarted under traffic ---------------------------------------------------


@dataclass
class PrivateCluster:
    """A throwaway PostgreSQL cluster of this test's own, stopped and started at will."""

    folder: Path
    port: int
    bin_dir: Path

    @property
    def url(self) -> str:
        """The URL of its `postgres` database over TCP."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on the cluster (as the postgres user when we are root)."""
        run_as_owner([str(self.bin_dir / "pg_ctl"), "-D", str(self.folder / "data"), *args])

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off"
        )
        self.pg_ctl("-o", options, "-l", str(self.folder / "log"), "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop it: `fast` ends every connection, as a restart does."""
        self.pg_ctl("-m", mode, "-w", "-t", "30", "stop")


def run_as_owner(argv: list[str]) -> None:
    """Run a PostgreSQL server program; initdb and postgres refuse root, so as `postgres`."""
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


def postgres_bin_dir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory, if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    on_path = shutil.which("initdb")
    if found:
        return found[-1].parent
    return Path(on_path).parent if on_path else None


@pytest.fixture
def private_cluster() -> Iterator[PrivateCluster]:
    """A fresh cluster on a free port, its socket in its own folder; removed afterwards."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server programs (initdb, pg_ctl) installed")
    folder = Path(tempfile.mkdtemp(prefix="hitl-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    cluster = PrivateCluster(folder, free_port(), bin_dir)
    try:
        run_as_owner(
            [
                *(str(bin_dir / "initdb"), "-D", str(folder / "data")),
                *("-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"),
            ]
        )
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class Timed:
    status: int | None  # None: no answer within the client's timeout
    seconds: float


def timed(request: Callable[[], httpx.Response]) -> Timed:
    """The status of `request()` and how long it took; a timeout is a status of None."""
    started = time.monotonic()
    try:
        status: int | None = request().status_code
    except httpx.TimeoutException:
        status = None
    return Timed(status, time.monotonic() - started)


def signed_click(replica: ServeProcess, *, item_id: int, channel: str) -> httpx.Response:
    """A signed click on a label button of `item_id` (no message needed: it is refused or
    stored after the ack, which is what is timed)."""
    payload = {
        "type": "block_actions",
        "user": {"id": "U0OUTAGE1", "username": "outage"},
        "team": {"id": "T0001", "domain": "hitl-test"},
        "api_app_id": "A0HITL",
        "container": {"type": "message", "channel_id": channel, "message_ts": "1.000001"},
        "channel": {"id": channel},
        "actions": [
            {
                "action_id": "hitl_label:0",
                "block_id": "b",
                "type": "button",
                "value": f"{item_id}:0",
            }
        ],
        "trigger_id": "1.2.3",
    }
    body = urllib.parse.urlencode({"payload": json.dumps(payload)})
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": FORM,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": sign(SIGNING_SECRET, stamp, body),
    }
    return httpx.post(f"{replica.url}/slack/events", content=body, headers=headers, timeout=10)


def test_a_database_restart_answers_503_fast_and_recovers_by_itself(
    private_cluster: PrivateCluster, tmp_path: Path
) -> None:
    """While PostgreSQL is down the items API, /healthz and /readyz answer 503 within seconds
    (never 500, never a hang) and a click is still acked, its person told; once it is back the
    same process stores items and posts prompts again, without a restart."""
    channel = "C0OUTAGE1"
    engine = make_engine(private_cluster.url)
    upgrade(engine)
    with make_sessionmaker(engine).begin() as session:
        task_ops.create_task(
            session, "outage", ["positive", "negative"], channel=channel, threshold=0.8
        )
    engine.dispose()
    with SlackStandIn(bot_token="xoxb-test", rate_limit_per_channel=None) as slack:
        replica = start_serve(
            "outage", serve_env(private_cluster.url, slack.api_url), folder=tmp_path
        )
        try:
            replica.wait_healthy()
            with api(replica) as client:
                first = client.post("/api/tasks/outage/items", json={"items": [{"text": "one"}]})
                assert first.status_code == 200, first.text
                item_id = first.json()["items"][0]["item_id"]
                wait_until(lambda: prompt_messages(slack, channel), timeout=15, what="a prompt")

                private_cluster.stop()
                down = {
                    "submit": timed(
                        lambda: client.post(
                            "/api/tasks/outage/items", json={"items": [{"text": "two"}]}
                        )
                    ),
                    "item": timed(lambda: client.get(f"/api/tasks/outage/items/{item_id}")),
                    "healthz": timed(lambda: client.get("/healthz")),
                    "readyz": timed(lambda: client.get("/readyz")),
                    "submit again": timed(
                        lambda: client.post(
                            "/api/tasks/outage/items", json={"items": [{"text": "two"}]}
                        )
                    ),
                    "click": timed(lambda: signed_click(replica, item_id=item_id, channel=channel)),
                }
                statuses = {name: t.status for name, t in down.items()}
                assert statuses == {
                    "submit": 503,
                    "item": 503,
                    "healthz": 503,
                    "readyz": 503,
                    "submit again": 503,
                    "click": 200,  # Slack needs the ack; the person hears it was not saved
                }, replica.output()[-3000:]
                assert max(t.seconds for t in down.values()) < 5.0, down
                assert (
                    "database is unavailable"
                    in client.post(
                        "/api/tasks/outage/items", json={"items": [{"text": "two"}]}
                    ).json()["error"]
                )
                wait_until(
                    lambda: [e for e in slack.ephemerals(channel) if "Not saved" in e["text"]],
                    timeout=10,
                    what="the clicker told the answer was not saved",
                )

                private_cluster.start()
                seen: list[int | None] = []

                def stored() -> bool:
                    result = timed(
                        lambda: client.post(
                            "/api/tasks/outage/items", json={"items": [{"text": "three"}]}
                        )
                    )
                    seen.append(result.status)
                    return result.status == 200

                wait_until(stored, timeout=20, what="a submission after the restart")
                assert set(seen) <= {200, 503}, seen
                assert client.get("/readyz").status_code == 200
                wait_until(
                    lambda: len(prompt_messages(slack, channel)) >= 2,
                    timeout=15,
                    what="the poster posting again",
                )
            assert replica.process.poll() is None  # the same process throughout
        finally:
            replica.stop()


# --- Slack failing for a minute -------------------------------------------------------------


def test_a_minute_of_slack_500s_and_429s_then_every_prompt_once(sqlite_services: Services) -> None:
    """For one minute (of the poster's clock) Slack answers chat.postMessage with 429s carrying
    Retry-After and, mixed in, 500s and 503s; afterwards every prompt of three channels is
    posted exactly once, in order per channel, and each 429's Retry-After was honoured."""
    channels = {f"faults{n}": f"C0FAULTS{n}" for n in range(3)}
    texts = {name: [f"{name} item {i}" for i in range(4)] for name in channels}
    retry_after = 7
    clock = FakeClock()
    services = sqlite_services
    with services.sessions.begin() as session:
        for name, channel in channels.items():
            task = task_ops.create_task(
                session, name, ["positive", "negative"], channel=channel, threshold=0.9
            )
            submit(
                session,
                task,
                [IncomingItem(t) for t in texts[name]],
                registry=services.registry,
                max_chars=1000,
                now=clock.now(),
            )
    with SlackStandIn("xoxb-faults", rate_limit_per_channel=None) as slack:
        waits: list[Callable[[float], None]] = []
        poster = Poster(
            services.sessions,
            make_web_client("xoxb-faults", base_url=slack.api_url, timeout=5, retries=False),
            message_for,
            min_interval=1.0,
            clock=clock.monotonic,
            now=clock.now,
            wait=lambda seconds: waits[0](seconds),
        )

        def wait(seconds: float) -> None:
            assert poster.wait_for_sends(10.0)
            clock.sleep(seconds)

        waits.append(wait)
        slack.rate_limit_storm(10**6, retry_after=retry_after)
        injected: list[int] = []

        def server_error(status: int) -> None:
            # One at a time: an error nobody called for yet would outlast the minute.
            answered = [c for c in slack.calls() if c.status >= 500]
            if len(answered) == len(injected):
                slack.fail_next(1, status=status)
                injected.append(status)

        for second in range(0, 60, 5):  # server errors, mixed in with the 429s
            clock.at(second, lambda: server_error(500))
            clock.at(second + 2.5, lambda: server_error(503))
        clock.at(60, lambda: slack.rate_limit_storm(0))
        began = time.monotonic()
        try:
            for _ in range(5000):
                with services.sessions.begin() as session:
                    states = session.scalars(select(ReviewPrompt.status)).all()
                if set(states) == {PromptState.POSTED}:
                    break
                poster.step()
        finally:
            poster.stop()
        elapsed = time.monotonic() - began

    assert set(states) == {PromptState.POSTED}, states
    for name, channel in channels.items():
        posted = prompt_messages(slack, channel)
        assert [text_of(m) for m in posted] == texts[name]  # once each, in order
    assert min(poster.stats.post_times) >= 60.0  # nothing got through during the minute
    refused = [c.status for c in slack.calls("chat.postMessage") if not c.ok]
    assert refused.count(429) == poster.stats.rate_limited >= 3
    assert refused.count(500) + refused.count(503) >= 5
    # Each 429 paused its channel for the Retry-After: at most one try per channel per 7 s.
    assert refused.count(429) <= len(channels) * (60 // retry_after + 1)
    assert retry_after in poster.stats.retry_delays
    assert elapsed < 15.0, elapsed  # a minute of Slack trouble, in seconds of real time


def text_of(message: dict[str, Any]) -> str:
    """The item text a prompt message shows (the texts here all start with "faults")."""
    for block in message["blocks"]:
        text = block.get("text") or {}
        if text.get("type") == "plain_text" and str(text.get("text")).startswith("faults"):
            return str(text["text"])
    raise AssertionError(f"no item text in {message['blocks']}")
