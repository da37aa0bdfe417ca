"""Replicas under load: items/s, clicks/s and ack latency of real `hitl serve` processes on
PostgreSQL, then a check that nothing was lost or duplicated.

Starts `--replicas` (2) `hitl serve` processes on a fresh PostgreSQL database (created here and
dropped at the end, even on Ctrl-C) against the Slack stand-in, run in this process at Slack's
real pace (one message a second per channel, method tiers as Slack's). Each of `--channels`
tasks has a model trained on banking77 texts of forty intents. For `--seconds` it sends item
submissions through the items API (`--submitters` at a time, one item per request) and signed
label clicks on the posted prompts (`--concurrency` at a time), both round-robin over the
replicas like a load balancer; a click is a new person's first answer while fresh prompts last,
otherwise a repeat of an earlier click (Slack retries and double clicks). `/healthz` is timed
alongside under the same load: the click p99 is printed as a ratio against it.

Then it checks the database and the stand-in: every acknowledged submission stored once, every
acknowledged click's answer stored once, every posted prompt in Slack exactly once; it prints
`lost` and `duplicated` and exits 1 if either is not 0.

    python bench/load.py [--seconds 20] [--concurrency 100] [--replicas 2]
"""

import argparse
import csv
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness lives in tests/
from sqlalchemy import func, select

from bot import tasks as task_ops
from bot.answers import import_examples
from bot.demo.simulator import FORM, SlackUser, sign
from bot.demo.standin import SlackStandIn
from bot.ingest import IncomingItem
from bot.services import build_services
from bot.settings import Settings
from bot.slack.poster import DUPLICATE_EVENT, PROMPT_EVENT
from bot.states import Route
from bot.storage.schema import Answer, Item, ReviewPrompt
from bot.training import retrain_task
from tests.conftest import find_banking77
from tests.serve_processes import (
    API_TOKEN,
    SIGNING_SECRET,
    ServeProcess,
    first_label_button,
    fresh_database,
    serve_env,
    start_serve,
)

GOAL_P99_MS = 200.0
# High enough that a good share of banking77 texts goes to a person.
THRESHOLD = 0.9
INTENTS = 40
SEED_PER_INTENT = 15
DEFAULT_ADMIN_URL = os.environ.get(
    "HITL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def percentile(values: list[float], share: float) -> float:
    """The `share` quantile (nearest rank); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


class Connections:
    """One keep-alive HTTP connection per replica, for one thread."""

    def __init__(self, ports: list[int]) -> None:
        self._ports = ports
        self._open: dict[int, http.client.HTTPConnection] = {}

    def request(
        self, replica: int, method: str, path: str, *, body: str = "", headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """(status, body); a dropped keep-alive connection is opened again once."""
        for attempt in (1, 2):
            connection = self._open.get(replica)
            if connection is None:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", self._ports[replica], timeout=30
                )
                self._open[replica] = connection
            try:
                connection.request(method, path, body=body or None, headers=headers)
                response = connection.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.HTTPException):
                connection.close()
                del self._open[replica]
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close every connection."""
        for connection in self._open.values():
            connection.close()


@dataclass
class Click:
    """A prompt to click: its item, the person who answers it and the signed-later body."""

    item_id: int
    user: str
    body: str


@dataclass
class Tally:
    """What the load threads saw; lists are appended from many threads (atomic in CPython)."""

    submit_ms: list[float] = field(default_factory=list)
    click_ms: list[float] = field(default_factory=list)
    health_ms: list[float] = field(default_factory=list)
    stored_ids: list[str] = field(default_factory=list)  # external ids acked with 200
    review_ids: list[str] = field(default_factory=list)  # ... and routed to review
    clicked: list[tuple[int, str]] = field(default_factory=list)  # (item, user) acked
    errors: Counter[str] = field(default_factory=Counter)


class ClickSource:
    """Fresh prompts from the stand-in (first answers) and earlier clicks (repeats)."""

    def __init__(self, slack: SlackStandIn, channels: list[str], events_url: str) -> None:
        self._slack = slack
        self._channels = channels
        self._events_url = events_url
        self._lock = threading.Lock()
        self._seen: set[int] = set()
        self._fresh: list[tuple[Click, str]] = []
        self._done: list[Click] = []
        self._people = itertools.count()

    def refresh(self) -> None:
        """Pick up prompts posted since the last look."""
        found = []
        for channel in self._channels:
            for message in self._slack.messages(channel):
                metadata = message.get("metadata") or {}
                if metadata.get("event_type") != PROMPT_EVENT:
                    continue
                item_id = int(metadata["event_payload"]["item_id"])
                with self._lock:
                    if item_id in self._seen:
                        continue
                    self._seen.add(item_id)
                found.append((self._click_for(message, channel, item_id), channel))
        with self._lock:
            self._fresh.extend(found)

    def _click_for(self, message: dict[str, Any], channel: str, item_id: int) -> Click:
        user = f"U0LOAD{next(self._people):05d}"
        person = SlackUser(self._events_url, SIGNING_SECRET, user_id=user, standin=self._slack)
        action = first_label_button(message)
        payload = person.button_click_payload(
            message, action["action_id"], value=action["value"], channel_id=channel
        )
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        return Click(item_id, user, body)

    def next(self) -> tuple[Click, bool] | None:
        """The next click and whether it is a first answer; None before any prompt is up."""
        with self._lock:
            if self._fresh:
                click, _ = self._fresh.pop(0)
                return click, True
            if self._done:
                return random.choice(self._done), False
        return None

    def answered(self, click: Click) -> None:
        """A first click was acked: later clicks may repeat it."""
        with self._lock:
            self._done.append(click)


def seed_rows() -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """The intents, training rows and the texts to submit (the rest of those intents)."""
    with find_banking77().open(encoding="utf-8", newline="") as handle:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(handle)]
    intents = sorted({label for _, label in rows})[:INTENTS]
    chosen = [row for row in rows if row[1] in intents]
    random.Random(7).shuffle(chosen)
    seed: list[tuple[str, str]] = []
    rest: list[tuple[str, str]] = []
    per_intent: Counter[str] = Counter()
    for text, label in chosen:
        if per_intent[label] < SEED_PER_INTENT:
            per_intent[label] += 1
            seed.append((text, label))
        else:
            rest.append((text, label))
    return intents, seed, rest


def prepare(url: str, channels: list[str], key: str) -> None:
    """Migrate, create a task per channel and train its first model."""
    intents, seed, _ = seed_rows()
    settings = Settings(_env_file=None, database_url=url, model_signing_key=key)
    services = build_services(settings)
    try:
        started = time.perf_counter()
        for number, channel in enumerate(channels):
            name = f"load{number}"
            with services.sessions.begin() as session:
                task = task_ops.create_task(
                    session, name, intents, channel=channel, threshold=THRESHOLD
                )
                import_examples(
                    session,
                    task,
                    [IncomingItem(text, label=label) for text, label in seed],
                    max_chars=settings.max_text_chars,
                )
            retrain_task(
                services.sessions,
                name,
                registry=services.registry,
                settings=settings,
                trigger="cli",
            )
        print(
            f"{len(channels)} tasks, {len(intents)} intents, {len(seed)} examples each; "
            f"trained in {time.perf_counter() - started:.1f} s"
        )
    finally:
        services.engine.dispose()


@contextmanager
def replicas_running(
    count: int, url: str, slack: SlackStandIn, key: str, folder: Path
) -> Iterator[list[ServeProcess]]:
    """`count` replicas started together; stopped (SIGTERM, then SIGKILL) on the way out."""
    processes: list[ServeProcess] = []
    try:
        for index in range(count):
            env = serve_env(url, slack.api_url, HITL_MODEL_SIGNING_KEY=key)
            processes.append(start_serve(f"replica{index}", env, folder=folder))
        for process in processes:
            process.wait_healthy()
        yield processes
    finally:
        for process in processes:
            process.stop()


def run_load(
    processes: list[ServeProcess],
    source: ClickSource,
    texts: list[str],
    *,
    tasks: int,
    seconds: float,
    concurrency: int,
    submitters: int,
) -> tuple[Tally, float]:
    """Submissions, clicks and health probes for `seconds`; returns what they saw and the
    time it took."""
    ports = [p.port for p in processes]
    tally = Tally()
    stop = threading.Event()
    numbers = itertools.count()
    auth = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}

    def submitter(worker: int) -> None:
        connections = Connections(ports)
        try:
            for turn in itertools.count(worker):
                if stop.is_set():
                    return
                number = next(numbers)
                external_id = f"load-{number}"
                body = json.dumps(
                    {"items": [{"id": external_id, "text": texts[number % len(texts)]}]}
                )
                started = time.perf_counter()
                try:
                    status, answer = connections.request(
                        turn % len(ports),
                        "POST",
                        f"/api/tasks/load{number % tasks}/items",
                        body=body,
                        headers=auth,
                    )
                except OSError as exc:
                    tally.errors[f"submit {type(exc).__name__}"] += 1
                    continue
                tally.submit_ms.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    tally.errors[f"submit HTTP {status}"] += 1
                    continue
                tally.stored_ids.append(external_id)
                if json.loads(answer)["items"][0]["route"] == Route.REVIEW:
                    tally.review_ids.append(external_id)
        finally:
            connections.close()

    def clicker(worker: int) -> None:
        connections = Connections(ports)
        try:
            for turn in itertools.count(worker):
                if stop.is_set():
                    return
                chosen = source.next()
                if chosen is None:
                    stop.wait(0.05)
                    continue
                click, first = chosen
                stamp = str(int(time.time()))
                headers = {
                    "Content-Type": FORM,
                    "X-Slack-Request-Timestamp": stamp,
                    "X-Slack-Signature": sign(SIGNING_SECRET, stamp, click.body),
                }
                started = time.perf_counter()
                try:
                    status, _ = connections.request(
                        turn % len(ports), "POST", "/slack/events", body=click.body, headers=headers
                    )
                except OSError as exc:
                    tally.errors[f"click {type(exc).__name__}"] += 1
                    continue
                tally.click_ms.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    # Bolt answers 404 when no listener called ack() within 3 s.
                    reason = "not acked in 3 s (404)" if status == 404 else f"HTTP {status}"
                    tally.errors[f"click {reason}"] += 1
                    continue
                tally.clicked.append((click.item_id, click.user))
                if first:
                    source.answered(click)
        finally:
            connections.close()

    def prober() -> None:
        connections = Connections(ports)
        try:
            for turn in itertools.count():
                if stop.wait(0.05):
                    return
                started = time.perf_counter()
                try:
                    status, _ = connections.request(
                        turn % len(ports), "GET", "/healthz", headers={}
                    )
                except OSError:
                    status = 0
                if status == 200:
                    tally.health_ms.append((time.perf_counter() - started) * 1000)
                else:
                    tally.errors[f"healthz HTTP {status}"] += 1
        finally:
            connections.close()

    def watcher() -> None:
        while not stop.wait(0.2):
            source.refresh()

    threads = [threading.Thread(target=watcher), threading.Thread(target=prober)]
    threads += [threading.Thread(target=submitter, args=(i,)) for i in range(submitters)]
    threads += [threading.Thread(target=clicker, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    try:
        stop.wait(seconds)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return tally, time.perf_counter() - started


def run_bursts(
    processes: list[ServeProcess], source: ClickSource, *, bursts: int, size: int, tally: Tally
) -> list[float]:
    """`bursts` times, `size` signed clicks released at the same instant (as many people
    clicking at once), a second apart; returns each click's ack time in ms. Bodies are signed
    and connections opened before the release, so the time is the bot's, not the sender's."""
    ports = [p.port for p in processes]
    times: list[float] = []
    for _ in range(bursts):
        chosen = [source.next() for _ in range(size)]
        clicks = [c for c in chosen if c is not None]
        if not clicks:
            break
        gate = threading.Barrier(len(clicks))

        def one(index: int, click: Click, first: bool, gate: threading.Barrier) -> None:
            replica = index % len(ports)
            connection = http.client.HTTPConnection("127.0.0.1", ports[replica], timeout=30)
            stamp = str(int(time.time()))
            headers = {
                "Content-Type": FORM,
                "X-Slack-Request-Timestamp": stamp,
                "X-Slack-Signature": sign(SIGNING_SECRET, stamp, click.body),
            }
            try:
                connection.connect()
                gate.wait()
                started = time.perf_counter()
                connection.request("POST", "/slack/events", body=click.body, headers=headers)
                response = connection.getresponse()
                response.read()
                took = (time.perf_counter() - started) * 1000
            except (OSError, http.client.HTTPException, threading.BrokenBarrierError) as exc:
                tally.errors[f"burst click {type(exc).__name__}"] += 1
                return
            finally:
                connection.close()
            if response.status != 200:
                tally.errors[f"burst click HTTP {response.status}"] += 1
                return
            times.append(took)
            tally.clicked.append((click.item_id, click.user))
            if first:
                source.answered(click)

        threads = [
            threading.Thread(target=one, args=(index, click, first, gate))
            for index, (click, first) in enumerate(clicks)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(1.0)  # the replicas finish the burst's work before the next one
    return times


@dataclass
class Check:
    """What the database and the stand-in hold after the run."""

    lost: Counter[str] = field(default_factory=Counter)
    duplicated: Counter[str] = field(default_factory=Counter)
    posted: int = 0
    waiting: int = 0


def settle_and_check(
    url: str, slack: SlackStandIn, channels: list[str], tally: Tally, *, timeout: float = 30.0
) -> Check:
    """Wait (up to `timeout`) for acked clicks to be stored and sends in flight to end, then
    count what was lost or duplicated."""
    services = build_services(Settings(_env_file=None, database_url=url), migrate=False)
    clicked = set(tally.clicked)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with services.sessions.begin() as session:
                answers = Counter(
                    {
                        (int(item), str(user)): int(count)
                        for item, user, count in session.execute(
                            select(Answer.item_id, Answer.user_id, func.count())
                            .where(Answer.user_id.like("U0LOAD%"))
                            .group_by(Answer.item_id, Answer.user_id)
                        )
                    }
                )
                sending = session.scalar(
                    select(func.count())
                    .select_from(ReviewPrompt)
                    .where(ReviewPrompt.status == "sending")
                )
            if (clicked <= set(answers) and not sending) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        check = Check()
        check.lost["answers"] = len(clicked - set(answers))
        check.duplicated["answers"] = sum(1 for count in answers.values() if count > 1)

        with services.sessions.begin() as session:
            items = Counter(
                {
                    str(external_id): int(count)
                    for external_id, count in session.execute(
                        select(Item.external_id, func.count())
                        .where(Item.external_id.like("load-%"))
                        .group_by(Item.external_id)
                    )
                }
            )
            prompts = session.execute(
                select(Item.external_id, ReviewPrompt.item_id, ReviewPrompt.message_ts).join(
                    Item, Item.id == ReviewPrompt.item_id
                )
            ).all()
        check.lost["items"] = len(set(tally.stored_ids) - set(items))
        check.duplicated["items"] = sum(1 for count in items.values() if count > 1)
        with_prompt = {str(external_id) for external_id, _, _ in prompts}
        check.lost["prompts queued"] = len(set(tally.review_ids) - with_prompt)

        in_slack: Counter[int] = Counter()
        for channel in channels:
            for message in slack.messages(channel):
                metadata = message.get("metadata") or {}
                if metadata.get("event_type") in (PROMPT_EVENT, DUPLICATE_EVENT):
                    in_slack[int(metadata["event_payload"]["item_id"])] += 1
        posted = {int(item_id) for _, item_id, ts in prompts if ts is not None}
        check.posted = len(posted)
        check.waiting = len(prompts) - len(posted)
        check.lost["prompts posted"] = len(posted - set(in_slack))
        check.duplicated["prompts posted"] = sum(1 for count in in_slack.values() if count > 1)
        return check
    finally:
        services.engine.dispose()


def posting_rate(slack: SlackStandIn, channels: list[str]) -> tuple[float, int]:
    """The busiest channel's most messages within any one second, and the 429s answered to
    chat.postMessage."""
    calls = slack.calls("chat.postMessage")
    busiest = 0
    for channel in channels:
        times = sorted(c.at for c in calls if c.ok and c.params.get("channel") == channel)
        for i, at in enumerate(times):
            within = sum(1 for later in times[i:] if later - at < 1.0)
            busiest = max(busiest, within)
    return float(busiest), sum(1 for c in calls if c.status == 429)


def report(
    tally: Tally,
    elapsed: float,
    check: Check,
    slack: SlackStandIn,
    channels: list[str],
    *,
    burst_ms: list[float],
    burst_size: int,
) -> bool:
    """Print the figures; True when nothing was lost or duplicated."""
    clicks_p99 = percentile(tally.click_ms, 0.99)
    health_p99 = percentile(tally.health_ms, 0.99)
    print(
        f"items: {len(tally.stored_ids) / elapsed:.1f}/s ({len(tally.stored_ids)} stored, "
        f"{len(tally.review_ids)} to review); submit p50 "
        f"{percentile(tally.submit_ms, 0.5):.0f} ms, p99 {percentile(tally.submit_ms, 0.99):.0f} ms"
    )
    print(
        f"clicks, sustained (each sender clicks again at once): {len(tally.click_ms) / elapsed:.1f}"
        f"/s; ack p50 {percentile(tally.click_ms, 0.5):.0f} ms, p99 {clicks_p99:.0f} ms"
    )
    burst_p99 = percentile(burst_ms, 0.99)
    goal = "met" if burst_p99 <= GOAL_P99_MS else "NOT met"
    print(
        f"clicks, {burst_size} people clicking at the same instant ({len(burst_ms)} acks over "
        f"the bursts): ack p50 {percentile(burst_ms, 0.5):.0f} ms, p99 {burst_p99:.0f} ms "
        f"(goal: p99 <= {GOAL_P99_MS:.0f} ms: {goal})"
    )
    print(f"answers: {len(set(tally.clicked))} distinct, {len(tally.clicked)} clicks acked")
    print(
        f"/healthz under the same load: p50 {percentile(tally.health_ms, 0.5):.0f} ms, "
        f"p99 {health_p99:.0f} ms; click ack p99 = {clicks_p99 / health_p99:.1f} x /healthz p99"
    )
    errors = ", ".join(f"{name} {count}" for name, count in sorted(tally.errors.items()))
    print(f"errors: {sum(tally.errors.values())}" + (f" ({errors})" if errors else ""))
    busiest, limited = posting_rate(slack, channels)
    print(
        f"prompts: {check.posted} posted, {check.waiting} waiting for their turn; busiest "
        f"channel {busiest:.0f} messages in one second (Slack allows about 1); "
        f"chat.postMessage 429s: {limited}"
    )
    lost, duplicated = sum(check.lost.values()), sum(check.duplicated.values())
    print(f"lost {lost}" + (f" ({_nonzero(check.lost)})" if lost else ""))
    print(f"duplicated {duplicated}" + (f" ({_nonzero(check.duplicated)})" if duplicated else ""))
    return lost == 0 and duplicated == 0


def _nonzero(counts: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items() if count)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def main() -> int:
    """Run the load, print the figures, exit 1 if anything was lost or duplicated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=100, help="clicks in flight")
    parser.add_argument("--submitters", type=int, default=8, help="submissions in flight")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--channels", type=int, default=4, help="tasks, one channel each")
    parser.add_argument(
        "--bursts", type=int, default=5, help="then: this many bursts of --concurrency clicks"
    )
    parser.add_argument("--postgres-url", default=DEFAULT_ADMIN_URL, help="server to use")
    parser.add_argument(
        "--keep-logs", type=Path, default=None, help="copy the replicas' logs into this folder"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    key = "load-model-key-" + os.urandom(16).hex()
    channels = [f"C0LOAD{n:03d}" for n in range(args.channels)]
    _, _, rest = seed_rows()
    texts = [text for text, _ in rest]
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hitl-load-")))
        url = stack.enter_context(fresh_database(args.postgres_url, prefix="hitl_load"))
        slack = stack.enter_context(SlackStandIn(bot_token="xoxb-test", rate_limit_per_channel=1.0))
        prepare(url, channels, key)
        processes = stack.enter_context(replicas_running(args.replicas, url, slack, key, folder))
        print(
            f"{args.replicas} replicas up; {args.seconds:g} s of load: {args.submitters} "
            f"submissions and {args.concurrency} clicks in flight"
        )
        source = ClickSource(slack, channels, f"{processes[0].url}/slack/events")
        tally, elapsed = run_load(
            processes,
            source,
            texts,
            tasks=len(channels),
            seconds=args.seconds,
            concurrency=args.concurrency,
            submitters=args.submitters,
        )
        source.refresh()
        burst_ms = run_bursts(
            processes, source, bursts=args.bursts, size=args.concurrency, tally=tally
        )
        check = settle_and_check(url, slack, channels, tally)
        ok = report(
            tally, elapsed, check, slack, channels, burst_ms=burst_ms, burst_size=args.concurrency
        )
        if args.keep_logs is not None:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in folder.glob("*.log"):
                shutil.copy(log, args.keep_logs / log.name)
        return 0 if ok else 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
