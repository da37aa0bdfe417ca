"""`hitl demo`: the whole loop on a laptop, with a Slack stand-in and simulated reviewers.

A temporary SQLite database, a task from the shipped BANKING77 subset, a small labelled seed
and a first model; the bot and the stand-in on 127.0.0.1; a stream of items through the HTTP
API; reviewers answering the prompts by clicking the buttons (true labels, a little noise);
then the retrain job and its report.
"""

import csv
import io
import random
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from bot import tasks as task_ops
from bot.answers import import_examples
from bot.ingest import IncomingItem
from bot.report import format_report_text
from bot.runtime import build_runtime, free_port
from bot.services import build_services
from bot.settings import Settings
from bot.slack import ids
from bot.slack.simulator import SlackUser
from bot.slack.standin import SlackStandIn
from bot.training import retrain_task

CHANNEL = "C0DEMO01"
TASK = "banking-demo"
REVIEWERS = ("U0ALICE01", "U0BOBBY02", "U0CAROL03")


@dataclass(frozen=True)
class DemoSummary:
    """The figures `hitl demo` prints at the end."""

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


def demo_rows() -> list[tuple[str, str]]:
    """The shipped subset: (text, label) rows."""
    data = resources.files("bot.demo_data").joinpath("banking77_demo.csv").read_text("utf-8")
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
    items: int = 600,
    seed_per_label: int = 5,
    noise: float = 0.05,
    rate: float = 20.0,
    threshold: float = 0.8,
    random_seed: int = 7,
    progress: Callable[[int, int], None] | None = None,
) -> DemoSummary:
    """Run the demo end to end and return its summary."""
    started = time.monotonic()
    rng = random.Random(random_seed)
    rows = demo_rows()
    labels = sorted({label for _, label in rows})
    rng.shuffle(rows)
    seed: list[tuple[str, str]] = []
    for label in labels:
        seed += [r for r in rows if r[1] == label][:seed_per_label]
    seeded = set(seed)
    stream = [r for r in rows if r not in seeded][:items]

    with (
        tempfile.TemporaryDirectory(prefix="hitl-demo-") as folder,
        SlackStandIn(bot_token="xoxb-demo", rate_limit_per_channel=rate) as slack,
    ):
        secret = secrets.token_hex(16)
        settings = Settings(
            _env_file=None,
            database_url=f"sqlite:///{Path(folder) / 'demo.db'}",
            slack_bot_token="xoxb-demo",
            slack_signing_secret=secret,
            slack_api_url=slack.api_url,
            api_token="demo-token",
            admins=REVIEWERS[0],
        )
        services = build_services(settings)
        with services.sessions.begin() as session:
            task = task_ops.create_task(session, TASK, labels, channel=CHANNEL, threshold=threshold)
            import_examples(
                session,
                task,
                [IncomingItem(t, label=lab) for t, lab in seed],
                max_chars=settings.max_text_chars,
            )
        first = retrain_task(
            services.sessions, TASK, registry=services.registry, settings=settings, trigger="demo"
        )
        runtime = build_runtime(
            settings,
            services=services,
            host="127.0.0.1",
            port=free_port(),
            poster_interval=1.0 / rate,
        )
        runtime.start(schedule=False)
        truth: dict[int, int] = {}
        auto = auto_correct = 0
        try:
            with httpx.Client(
                base_url=runtime.url, timeout=30, headers={"Authorization": "Bearer demo-token"}
            ) as api:
                for start in range(0, len(stream), 20):
                    batch = stream[start : start + 20]
                    body = {
                        "items": [
                            {"id": f"demo-{start + i}", "text": t} for i, (t, _) in enumerate(batch)
                        ]
                    }
                    answer = api.post(f"/api/tasks/{TASK}/items", json=body).raise_for_status()
                    for result, (_, label) in zip(answer.json()["items"], batch, strict=True):
                        truth[result["item_id"]] = labels.index(label)
                        if result["route"] == "auto":
                            auto += 1
                            auto_correct += result["label"] == label
            answers, wrong = _review(
                slack,
                runtime.url,
                secret,
                truth,
                labels,
                rng=rng,
                noise=noise,
                expected=len(truth) - auto,
                progress=progress,
                done_before=auto,
            )
        finally:
            runtime.stop()
        second = retrain_task(
            services.sessions,
            TASK,
            registry=services.registry,
            settings=settings,
            trigger="demo",
            force=True,
        )
        services.engine.dispose()

    def accuracy(report: dict[str, Any]) -> float | None:
        new = (report.get("holdout") or {}).get("new") or {}
        return new.get("accuracy")

    return DemoSummary(
        items=len(stream),
        auto=auto,
        auto_correct=auto_correct,
        answers=answers,
        wrong_answers=wrong,
        version_before=first.version,
        version_after=second.version,
        accuracy_before=accuracy(first.report),
        accuracy_after=accuracy(second.report),
        report=format_report_text(second.report),
        seconds=time.monotonic() - started,
    )


def _review(
    slack: SlackStandIn,
    bot_url: str,
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
    """Click every prompt as it arrives; returns (answers given, deliberately wrong ones)."""
    people = [
        SlackUser(f"{bot_url}/slack/events", secret, user_id=u, user_name=u.lower(), standin=slack)
        for u in REVIEWERS
    ]
    answered: set[int] = set()
    wrong = 0
    lock = threading.Lock()
    deadline = time.monotonic() + timeout
    total = done_before + expected
    while len(answered) < expected and time.monotonic() < deadline:
        fresh = False
        for message in slack.messages(CHANNEL):
            item_id = prompt_item(message)
            if item_id is None or item_id in answered or item_id not in truth:
                continue
            index = truth[item_id]
            if rng.random() < noise:
                index = rng.randrange(len(labels))
                wrong += index != truth[item_id]
            kind, action_id, value = find_choice(message, item_id, index)
            person = rng.choice(people)
            if kind == "button":
                person.click_button(message, action_id, value=value, channel_id=CHANNEL)
            else:
                person.select_option(message, action_id, value, channel_id=CHANNEL)
            with lock:
                answered.add(item_id)
            fresh = True
            if progress is not None:
                progress(done_before + len(answered), total)
        if not fresh:
            time.sleep(0.05)
    return len(answered), wrong
