"""`hitl demo`: the whole loop on a laptop, with a Slack stand-in and simulated reviewers.

A SQLite database (kept afterwards, to explore with the other commands), a task from the
shipped BANKING77 subset, a small labelled seed and a first model; the bot and the stand-in on
127.0.0.1; a stream of items through the HTTP API; reviewers answering the prompts by clicking
the buttons (true labels, a little noise); then the retrain job, its report and its chart.
"""

import csv
import io
import random
import shlex
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from bot import tasks as task_ops
from bot.demo.client import post_json
from bot.demo.simulator import SlackUser
from bot.demo.standin import SlackStandIn
from bot.demo.wiring import WiredBot, wire_bot
from bot.report import format_report_text, render_chart
from bot.slack import ids
from bot.training import retrain_task, version_history

CHANNEL = "C0DEMO01"
TASK = "banking-demo"
REVIEWERS = ("U0ALICE01", "U0BOBBY02", "U0CAROL03")
API_TOKEN = "demo-token"
BATCH = 20


@dataclass(frozen=True)
class DemoSummary:
    """The figures `hitl demo` prints at the end, and where it left its database and chart."""

    items: int
    auto: int
    auto_correct: int
    answers: int
    wrong_answers: int
    version_before: int | None
    version_after: int | None
    accuracy_before: float | None
    accuracy_after: float | None
    report: str
    seconds: float
    database: Path
    chart: Path

    @property
    def database_url(self) -> str:
        """The URL the other commands take as HITL_DATABASE_URL to explore the demo's data."""
        return database_url(self.database)

    def explore_commands(self) -> list[str]:
        """Shell commands that look at what the demo left behind."""
        env = f"HITL_DATABASE_URL={shlex.quote(self.database_url)}"
        return [
            f"{env} hitl stats {TASK}",
            f"{env} hitl report {TASK}",
            f"{env} hitl export {TASK} items.csv",
        ]


def database_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file (relative paths stay relative to the directory)."""
    return f"sqlite:///{path.as_posix()}"


def demo_rows() -> list[tuple[str, str]]:
    """The shipped subset: (text, label) rows."""
    data = resources.files("bot.demo.data").joinpath("banking77_demo.csv").read_text("utf-8")
    return [(row["text"], row["label"]) for row in csv.DictReader(io.StringIO(data))]


def find_choice(message: dict[str, Any], item_id: int, label_index: int) -> tuple[str, str, str]:
    """Where a label sits in a prompt: ("button" | "select", action_id, value)."""
    wanted = ids.encode_choice(item_id, label_index)
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if element.get("type") == "button" and element.get("value") == wanted:
                return "button", str(element["action_id"]), wanted
            if element.get("type") == "static_select":
                options = list(element.get("options") or [])
                for group in element.get("option_groups") or []:
                    options += group.get("options") or []
                if any(option.get("value") == wanted for option in options):
                    return "select", str(element["action_id"]), wanted
    raise LookupError(f"label #{label_index} of item {item_id} is not offered in the message")


def prompt_item(message: dict[str, Any]) -> int | None:
    """The item id of an open review prompt (None for other messages)."""
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if element.get("action_id") == ids.ACTION_SKIP:
                return ids.decode_item(str(element.get("value")))
    return None


def run_demo(
    *,
    database: Path,
    items: int = 600,
    seed_per_label: int = 5,
    noise: float = 0.05,
    rate: float = 20.0,
    threshold: float = 0.8,
    random_seed: int = 7,
    progress: Callable[[int, int], None] | None = None,
    featurizer: str = "tfidf",
) -> DemoSummary:
    """Run the demo end to end and return its summary.

    `database` (and its -wal/-shm files) is replaced; the chart of the last retrain is written
    beside it with the suffix .png.
    """
    started = time.monotonic()
    rng = random.Random(random_seed)
    plan = plan_demo(database, items=items, seed_per_label=seed_per_label, rng=rng)
    with wire_demo_bot(plan, threshold=threshold, rate=rate, featurizer=featurizer) as bot:
        streamed = stream_items(bot, plan)
        truth, auto = streamed.truth, streamed.auto
        answers, wrong = _review(
            bot.slack,
            bot.events_url,
            bot.secret,
            truth,
            plan.labels,
            rng=rng,
            noise=noise,
            expected=len(truth) - auto,
            progress=progress,
            done_before=auto,
        )
        return finish_demo(
            bot, plan, streamed, answers=answers, wrong_answers=wrong, started=started
        )


@dataclass(frozen=True)
class DemoPlan:
    """What a demo run will use: its files, the task's labels, the seed and the item stream."""

    database: Path
    chart: Path
    labels: list[str]
    seed: list[tuple[str, str]]
    stream: list[tuple[str, str]]


@dataclass(frozen=True)
class Streamed:
    """The items sent in: each item id's true label index, and the automatic answers."""

    truth: dict[int, int]
    auto: int
    auto_correct: int


def plan_demo(database: Path, *, items: int, seed_per_label: int, rng: random.Random) -> DemoPlan:
    """Shuffle the subset into a seed and a stream; remove a previous run's files."""
    rows = demo_rows()
    labels = sorted({label for _, label in rows})
    rng.shuffle(rows)
    seed: list[tuple[str, str]] = []
    for label in labels:
        seed += [r for r in rows if r[1] == label][:seed_per_label]
    seeded = set(seed)
    stream = [r for r in rows if r not in seeded][:items]
    chart = database.with_suffix(".png")
    for stale in (database, Path(f"{database}-wal"), Path(f"{database}-shm"), chart):
        stale.unlink(missing_ok=True)
    database.parent.mkdir(parents=True, exist_ok=True)
    return DemoPlan(database, chart, labels, seed, stream)


def wire_demo_bot(
    plan: DemoPlan,
    *,
    threshold: float,
    rate: float,
    admins: str = REVIEWERS[0],
    featurizer: str = "tfidf",
) -> AbstractContextManager[WiredBot]:
    """The demo's bot against a stand-in: the task, its seed and a first model."""
    return wire_bot(
        database_url(plan.database),
        task=TASK,
        labels=plan.labels,
        channel=CHANNEL,
        threshold=threshold,
        rate=rate,
        api_token=API_TOKEN,
        seed=plan.seed,
        admins=admins,
        bot_token="xoxb-demo",
        trigger="demo",
        featurizer=featurizer,
    )


def stream_items(bot: WiredBot, plan: DemoPlan) -> Streamed:
    """Send the stream through the items API in batches, as a client would."""
    truth: dict[int, int] = {}
    auto = auto_correct = 0
    stream = plan.stream
    for start in range(0, len(stream), BATCH):
        batch = stream[start : start + BATCH]
        body = {"items": [{"id": f"demo-{start + i}", "text": t} for i, (t, _) in enumerate(batch)]}
        answer = post_json(f"{bot.runtime.url}/api/tasks/{TASK}/items", body, token=API_TOKEN)
        for result, (_, label) in zip(answer["items"], batch, strict=True):
            truth[result["item_id"]] = plan.labels.index(label)
            if result["route"] == "auto":
                auto += 1
                auto_correct += result["label"] == label
    return Streamed(truth, auto, auto_correct)


def finish_demo(
    bot: WiredBot,
    plan: DemoPlan,
    streamed: Streamed,
    *,
    answers: int,
    wrong_answers: int,
    started: float,
) -> DemoSummary:
    """Stop the bot, retrain on every answer, write the chart and sum the run up."""
    bot.runtime.stop()  # every acknowledged click is stored before the retrain reads them
    services = bot.services
    second = retrain_task(
        services.sessions,
        TASK,
        registry=services.registry,
        settings=services.settings,
        trigger="demo",
        force=True,
    )
    with services.sessions.begin() as session:
        history = version_history(session, task_ops.get_task(session, TASK))
    plan.chart.write_bytes(render_chart(second.report, history))
    first = bot.first_model
    return DemoSummary(
        items=len(plan.stream),
        auto=streamed.auto,
        auto_correct=streamed.auto_correct,
        answers=answers,
        wrong_answers=wrong_answers,
        version_before=first.version if first else None,
        version_after=second.version,
        accuracy_before=first.report.new_accuracy if first else None,
        accuracy_after=second.report.new_accuracy,
        report=format_report_text(second.report),
        seconds=time.monotonic() - started,
        database=plan.database,
        chart=plan.chart,
    )


def _review(
    slack: SlackStandIn,
    events_url: str,
    secret: str,
    truth: dict[int, int],
    labels: list[str],
    *,
    rng: random.Random,
    noise: float,
    expected: int,
    progress: Callable[[int, int], None] | None,
    done_before: int,
    timeout: float = 90.0,
) -> tuple[int, int]:
    """Click every prompt as it arrives; returns (answers given, deliberately wrong ones).

    A click counts once the bot acknowledged it, or once its prompt shows an answer. One not
    acknowledged (a timeout on a busy machine) is sent again while the prompt is open, the same
    person choosing the same label.
    """
    people = [
        SlackUser(events_url, secret, user_id=u, user_name=u.lower(), standin=slack)
        for u in REVIEWERS
    ]
    planned: dict[int, tuple[SlackUser, int]] = {}
    answered: set[int] = set()
    wrong = 0
    deadline = time.monotonic() + timeout
    total = done_before + expected
    while len(answered) < expected and time.monotonic() < deadline:
        fresh = False
        messages = slack.messages(CHANNEL)
        still_open = {prompt_item(message) for message in messages}
        for late in sorted(planned.keys() - answered - still_open):
            answered.add(late)  # its click was not acknowledged in time, but was handled
            fresh = True
            if progress is not None:
                progress(done_before + len(answered), total)
        for message in messages:
            item_id = prompt_item(message)
            if item_id is None or item_id in answered or item_id not in truth:
                continue
            if item_id not in planned:
                index = truth[item_id]
                if rng.random() < noise:
                    index = rng.randrange(len(labels))
                    wrong += index != truth[item_id]
                planned[item_id] = (rng.choice(people), index)
            person, index = planned[item_id]
            kind, action_id, value = find_choice(message, item_id, index)
            if kind == "button":
                delivery = person.click_button(message, action_id, value=value, channel_id=CHANNEL)
            else:
                delivery = person.select_option(message, action_id, value, channel_id=CHANNEL)
            if delivery.ok:
                answered.add(item_id)
                fresh = True
                if progress is not None:
                    progress(done_before + len(answered), total)
        if not fresh:
            time.sleep(0.05)
    return len(answered), wrong
