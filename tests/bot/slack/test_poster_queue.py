"""The poster and the review queue: ranked order, daily budgets, quiet hours, the daily digest,
re-posts of unanswered prompts and redraws after an import.

The poster runs against the Slack stand-in over real HTTP on a controlled clock that starts at a
chosen local time; a test moves the clock and calls `run_once` (or `step`, whose pause moves the
clock), so a day passes in milliseconds. That nothing was posted is read from the stand-in after
the round that would have posted it has finished (`wait_for_sends`).
"""

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot import queue
from bot import tasks as task_ops
from bot.answers import import_examples
from bot.demo.standin import SlackStandIn
from bot.ingest import IncomingItem
from bot.outbox import due_heads, mark_answered
from bot.posting_hours import PostingHours, PostingRules
from bot.review import item_view
from bot.routing import submit
from bot.services import Services
from bot.slack.context import make_web_client
from bot.slack.messages import message_for
from bot.slack.poster import Poster
from bot.storage.schema import ReviewPrompt
from bot.training import retrain_task

TOKEN = "xoxb-queue-test"
CHANNEL = "C0QUEUE01"
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")

# A small two-label world in which mixed texts are uncertain: each training text has two words
# of its label and one of the other.
POSITIVE = ["great", "lovely", "wonderful", "kind", "fantastic", "delicious", "friendly", "superb"]
NEGATIVE = ["awful", "rude", "cold", "dirty", "terrible", "slow", "noisy", "bland"]
THINGS = ["food", "staff", "service", "room", "music", "table", "evening", "wine"]
NEAR_DUPLICATES = [
    "great food and rude staff again",
    "great food and rude staff today",
    "great food and rude staff",
]
DIFFERENT = "kind wine, slow evening"


def mixed_reviews() -> list[tuple[str, str]]:
    rng = random.Random(0)
    rows = []
    for own, other, label in ((POSITIVE, NEGATIVE, "positive"), (NEGATIVE, POSITIVE, "negative")):
        for _ in range(40):
            a, b = rng.sample(own, 2)
            x, y, z = rng.sample(THINGS, 3)
            rows.append((f"{a} {x}, {b} {y}, {rng.choice(other)} {z}", label))
    return rows


class Clock:
    """Time that moves only when told (or when the poster pauses)."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.seconds = 0.0

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)

    def set(self, moment: datetime) -> None:
        """Move on to `moment` (never back)."""
        seconds = (moment - self.start).total_seconds()
        assert seconds >= self.seconds
        self.seconds = seconds


@dataclass
class Bench:
    services: Services
    slack: SlackStandIn
    clock: Clock
    poster: Poster
    rules: PostingRules

    def make_poster(self, rules: PostingRules | None = None) -> Poster:
        """A poster (a new one: as after a restart) on the clock, paced at one a second."""
        self.rules = rules or self.rules
        self.poster = Poster(
            self.services.sessions,
            make_web_client(TOKEN, base_url=self.slack.api_url, retries=False),
            message_for,
            min_interval=1.0,
            clock=self.clock.monotonic,
            now=self.clock.now,
            wait=self.wait,
            rules=self.rules,
        )
        return self.poster

    def wait(self, seconds: float) -> None:
        assert self.poster.wait_for_sends(10.0)
        self.clock.seconds += seconds

    def round(self) -> int:
        """One round at the current time, its sends finished."""
        started = self.poster.run_once()
        assert self.poster.wait_for_sends(10.0)
        return started

    def submit(self, *texts: str, ids: list[str] | None = None) -> None:
        with self.services.sessions.begin() as session:
            task = task_ops.get_task(session, "reviews")
            submit(
                session,
                task,
                [
                    IncomingItem(text, external_id=ids[k] if ids else None)
                    for k, text in enumerate(texts)
                ],
                registry=self.services.registry,
                max_chars=1000,
                now=self.clock.now(),
            )

    def messages(self) -> list[dict[str, Any]]:
        return self.slack.messages(CHANNEL)

    def prompt_texts(self) -> list[str]:
        """The item texts of the review prompts in the channel, in posting order."""
        return [item_text(m) for m in self.messages() if is_prompt(m)]

    def post_all(self, *, rounds: int = 200) -> None:
        """Step (at least once) until no prompt is pending or being sent."""
        for _ in range(rounds):
            self.poster.step()
            if not {"pending", "sending"} & set(statuses(self.services)):
                return
        raise AssertionError(f"still {statuses(self.services)}")

    def set_budget(self, value: str) -> None:
        with self.services.sessions.begin() as session:
            task = task_ops.get_task(session, "reviews")
            queue.set_daily_budget(session, task, value, actor="test")


def is_prompt(message: dict[str, Any]) -> bool:
    return (message.get("metadata") or {}).get("event_type") == "hitl_prompt"


def item_text(message: dict[str, Any]) -> str:
    return str(message["blocks"][1]["text"]["text"])


def has_buttons(message: dict[str, Any]) -> bool:
    return any(block["type"] == "actions" for block in message.get("blocks") or [])


def statuses(services: Services) -> list[str]:
    with services.sessions.begin() as session:
        return list(session.scalars(select(ReviewPrompt.status).order_by(ReviewPrompt.id)))


@pytest.fixture
def bench(sqlite_services: Services) -> Iterator[Bench]:
    """A task (no model yet: every item to a person), a stand-in and a poster on a clock that
    starts at 18:00 in New York, where the day is checked."""
    with sqlite_services.sessions.begin() as session:
        task_ops.create_task(
            session, "reviews", ["positive", "negative"], channel=CHANNEL, threshold=0.99
        )
    clock = Clock(datetime(2026, 3, 2, 18, 0, tzinfo=NEW_YORK).astimezone(UTC))
    with SlackStandIn(TOKEN, rate_limit_per_channel=None) as slack:
        rules = PostingRules(hours=PostingHours(NEW_YORK))
        bench = Bench(sqlite_services, slack, clock, None, rules)  # type: ignore[arg-type]  # made next
        bench.make_poster()
        yield bench
        bench.poster.stop()


def at(
    zone: ZoneInfo, day: tuple[int, int, int], hour: int, minute: int = 0, second: int = 0
) -> datetime:
    """A local time in `zone`, as UTC."""
    return datetime(*day, hour, minute, second, tzinfo=zone).astimezone(UTC)


# --- order ----------------------------------------------------------------------------------


def test_the_different_uncertain_item_is_asked_before_near_duplicates(bench: Bench) -> None:
    """Three near-duplicate uncertain items and one different uncertain one: after the first
    near-duplicate comes the different one, although it is a little less uncertain."""
    with bench.services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        import_examples(
            session,
            task,
            [IncomingItem(t, label=label) for t, label in mixed_reviews()],
            max_chars=1000,
        )
    result = retrain_task(
        bench.services.sessions,
        "reviews",
        registry=bench.services.registry,
        settings=bench.services.settings,
    )
    assert result.version == 1
    bench.submit(*NEAR_DUPLICATES, DIFFERENT)
    with bench.services.sessions.begin() as session:
        queued = dict(session.execute(select(ReviewPrompt.item_id, ReviewPrompt.priority)).all())
    uncertainty = [queued[k] for k in sorted(queued)]
    # Queued by uncertainty alone, the different item would come last.
    assert min(uncertainty[:3]) > uncertainty[3] > 0.5, uncertainty
    most_uncertain = NEAR_DUPLICATES[uncertainty.index(max(uncertainty))]

    assert queue.rerank_all(bench.services.sessions, bench.services.registry, now=bench.clock.now())
    bench.post_all()
    first, second, *rest = bench.prompt_texts()
    assert (first, second) == (most_uncertain, DIFFERENT)
    assert sorted(rest) == sorted(set(NEAR_DUPLICATES) - {first})


def test_without_a_model_prompts_keep_arrival_order(bench: Bench) -> None:
    texts = [f"item {k}" for k in range(4)]
    bench.submit(*texts)
    queue.rerank_all(bench.services.sessions, bench.services.registry, now=bench.clock.now())
    bench.post_all()
    assert bench.prompt_texts() == texts


def test_age_eventually_wins_over_uncertainty(bench: Bench) -> None:
    """A surer item waits behind more uncertain ones queued two hours later; four days old, it
    goes before fresh uncertain ones."""
    with bench.services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        rows = [IncomingItem(t, label=label) for t, label in mixed_reviews()]
        import_examples(session, task, rows, max_chars=1000)
    retrain_task(
        bench.services.sessions,
        "reviews",
        registry=bench.services.registry,
        settings=bench.services.settings,
    )
    surer = "wonderful table, cold service"
    bench.submit(surer)

    def heads() -> list[tuple[str, float]]:
        """Text and priority of the next prompt, after a re-rank."""
        queue.rerank_all(bench.services.sessions, bench.services.registry, now=bench.clock.now())
        with bench.services.sessions.begin() as session:
            return [(item_view(session, h.item_id).text, h.priority) for h in due_heads(session)]

    bench.clock.set(bench.clock.now() + timedelta(hours=2))
    bench.submit(*NEAR_DUPLICATES)
    ((text, priority),) = heads()
    assert text in NEAR_DUPLICATES and priority < 1.0
    with bench.services.sessions.begin() as session:  # people answer those
        asked = session.scalars(select(ReviewPrompt.item_id).order_by(ReviewPrompt.id)).all()
        for item_id in asked[1:]:
            mark_answered(session, item_id, now=bench.clock.now())
    bench.clock.set(bench.clock.now() + timedelta(days=4))
    bench.submit(*NEAR_DUPLICATES, DIFFERENT)
    ((text, priority),) = heads()
    # Four days add 4/3 to its score: more than any fresh item's uncertainty (at most 1).
    assert text == surer and priority > 4 / 3


# --- daily budget ---------------------------------------------------------------------------


def test_the_budget_holds_the_rest_until_the_next_local_day(bench: Bench) -> None:
    """Budget 2 at 18:00 in New York: two go out; at 20:00 (a new day in UTC, not in New York)
    the rest still wait, and the next local day they go out, two of them."""
    bench.set_budget("2")
    texts = [f"item {k}" for k in range(5)]
    bench.submit(*texts)
    for _ in range(20):
        bench.poster.step()
    assert bench.prompt_texts() == texts[:2]
    assert statuses(bench.services) == ["posted"] * 2 + ["pending"] * 3
    # Held back, the poster looks again once a second, not at every tick.
    assert bench.poster.pause() == pytest.approx(1.0)

    bench.clock.set(at(NEW_YORK, (2026, 3, 2), 20, 0))  # 01:00 UTC on March 3
    assert bench.round() == 0
    bench.clock.set(at(NEW_YORK, (2026, 3, 2), 23, 59))
    assert bench.round() == 0
    assert bench.prompt_texts() == texts[:2]

    bench.clock.set(at(NEW_YORK, (2026, 3, 3), 0, 0))
    for _ in range(20):
        bench.poster.step()
    assert bench.prompt_texts() == texts[:4]
    assert statuses(bench.services) == ["posted"] * 4 + ["pending"]


def test_a_budget_removed_lets_the_rest_go(bench: Bench) -> None:
    bench.set_budget("1")
    bench.submit("item 0", "item 1")
    for _ in range(10):
        bench.poster.step()
    assert bench.prompt_texts() == ["item 0"]
    bench.set_budget("none")
    bench.post_all()
    assert bench.prompt_texts() == ["item 0", "item 1"]


# --- quiet hours ----------------------------------------------------------------------------


def test_nothing_is_posted_in_quiet_hours_and_everything_after(bench: Bench) -> None:
    bench.make_poster(PostingRules(hours=PostingHours(BERLIN, (22, 7))))
    bench.clock.set(at(BERLIN, (2026, 3, 5), 23, 0))
    bench.submit("item 0", "item 1")
    assert bench.round() == 0
    # Eight hours to go: the poster waits a minute at a time instead of polling.
    assert bench.poster.pause() == pytest.approx(60.0)
    before = bench.clock.seconds
    for _ in range(5):
        bench.poster.step()
    assert bench.clock.seconds - before == pytest.approx(300.0)
    assert bench.messages() == [] and statuses(bench.services) == ["pending", "pending"]

    bench.clock.set(at(BERLIN, (2026, 3, 6), 6, 59, 30))
    assert bench.round() == 0
    assert bench.poster.pause() == pytest.approx(30.0)
    bench.poster.step()  # waits the 30 s: 07:00
    bench.post_all()
    assert bench.prompt_texts() == ["item 0", "item 1"]
    assert (
        bench.poster.stats.post_times[0]
        >= (at(BERLIN, (2026, 3, 6), 7, 0) - bench.clock.start).total_seconds()
    )


# --- daily digest ---------------------------------------------------------------------------


def test_the_digest_is_posted_once_a_day_after_quiet_hours(bench: Bench) -> None:
    rules = PostingRules(hours=PostingHours(BERLIN, (22, 10)), digest_hour=9)
    bench.make_poster(rules)
    bench.clock.set(at(BERLIN, (2026, 3, 6), 1, 0))
    bench.submit("item 0", "item 1", "item 2")
    bench.set_budget("2")
    bench.clock.set(at(BERLIN, (2026, 3, 6), 9, 0))  # digest time, but quiet until 10
    assert bench.round() == 0 and bench.messages() == []

    bench.clock.set(at(BERLIN, (2026, 3, 6), 10, 0))
    for _ in range(10):
        bench.poster.step()
    digests = [m for m in bench.messages() if not is_prompt(m)]
    assert len(digests) == 1 and bench.poster.stats.digests == 1
    text = repr(digests[0]["blocks"])
    assert "3 items* are waiting" in text and "the oldest has waited 9.0 h" in text

    bench.clock.set(at(BERLIN, (2026, 3, 6), 15, 0))
    bench.round()
    bench.make_poster()  # a restart: the database says the digest of today went out
    bench.clock.set(at(BERLIN, (2026, 3, 6), 16, 0))
    bench.round()
    assert len([m for m in bench.messages() if not is_prompt(m)]) == 1

    bench.clock.set(at(BERLIN, (2026, 3, 7), 10, 0))
    bench.round()
    assert len([m for m in bench.messages() if not is_prompt(m)]) == 2


def test_no_digest_when_nothing_waits(bench: Bench) -> None:
    bench.make_poster(PostingRules(hours=PostingHours(BERLIN), digest_hour=9))
    bench.clock.set(at(BERLIN, (2026, 3, 6), 9, 30))
    bench.round()
    assert bench.messages() == []


# --- re-posts and redraws -------------------------------------------------------------------


def test_an_unanswered_prompt_is_posted_again_once(bench: Bench) -> None:
    bench.make_poster(PostingRules(hours=PostingHours(NEW_YORK), repost_after=timedelta(hours=24)))
    bench.submit("item 0")
    bench.post_all()
    (first,) = bench.messages()
    bench.clock.set(bench.clock.now() + timedelta(hours=23))
    bench.round()
    assert len(bench.messages()) == 1

    bench.clock.set(bench.clock.now() + timedelta(hours=2))
    bench.post_all()  # its first round queues the re-post, and sends it
    old, new = bench.messages()
    assert old["ts"] == first["ts"] and not has_buttons(old)
    assert "Asked again below" in repr(old["blocks"]) and "item 0" in repr(old["blocks"])
    assert has_buttons(new) and item_text(new) == "item 0"
    with bench.services.sessions.begin() as session:
        view = item_view(session, 1)
        assert (view.channel, view.message_ts) == (CHANNEL, new["ts"])  # clicks go to the new one
    assert bench.poster.stats.reposts == 1

    bench.clock.set(bench.clock.now() + timedelta(days=3))
    bench.round()
    assert len(bench.messages()) == 2 and statuses(bench.services) == ["posted"]


def test_an_imported_answer_redraws_the_posted_message(bench: Bench) -> None:
    bench.submit("item 0", "item 1", ids=["t-0", "t-1"])
    bench.post_all()
    with bench.services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        import_examples(
            session,
            task,
            [IncomingItem("item 0", external_id="t-0", label="negative")],
            max_chars=99,
        )
    bench.clock.set(bench.clock.now() + timedelta(seconds=20))
    bench.round()
    answered, waiting = bench.messages()
    assert "Answered" in repr(answered["blocks"]) and "negative" in repr(answered["blocks"])
    assert "Answered" not in repr(waiting["blocks"])
    assert bench.poster.stats.redraws == 1
    with bench.services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        assert [w.external_id for w in queue.waiting_items(session, task)] == ["t-1"]
    bench.clock.set(bench.clock.now() + timedelta(seconds=20))
    bench.round()
    assert bench.poster.stats.redraws == 1  # once
