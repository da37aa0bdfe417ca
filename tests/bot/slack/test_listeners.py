"""Each listener called directly with fakes: no HTTP, no Bolt dispatch, no thread pools."""

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from slack_bolt import BoltContext
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from bot import outbox
from bot import tasks as task_ops
from bot.ingest import IncomingItem
from bot.routing import submit
from bot.services import Services
from bot.settings import Settings
from bot.slack import ids
from bot.slack.context import DEPS_KEY, SlackDeps
from bot.slack.listeners import actions, commands, events
from bot.storage.schema import Answer, ReviewPrompt, utcnow

CHANNEL = "C0REVIEW1"
ADMIN = "U0ADMIN01"
TS = "1700000000.000100"


def post_prompt(services: Services, item_id: int, ts: str, channel: str = CHANNEL) -> None:
    """Mark an item's prompt as posted in `channel` at `ts`, as the poster would."""
    with services.sessions.begin() as session:
        (prompt_id,) = session.scalars(
            select(ReviewPrompt.id).where(ReviewPrompt.item_id == item_id)
        ).all()
        outbox.claim(session, prompt_id, now=utcnow())
        outbox.mark_posted(session, prompt_id, channel=channel, ts=ts, now=utcnow())


@dataclass
class FakeClient:
    """Records every Web API call a listener makes."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __getattr__(self, method: str) -> Callable[..., dict[str, Any]]:
        def call(**kwargs: Any) -> dict[str, Any]:
            self.calls.append((method, kwargs))
            return {"ok": True}

        return call

    def named(self, method: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == method]


class InlineExecutor:
    """Runs submitted work at once, so a test sees its effects without waiting."""

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


class _FakeAck:
    """Counts acknowledgements (Bolt's Ack does more; listeners only call it)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.count += 1


# Listeners are annotated with Bolt's Ack and Respond; the fakes only need to be callable.
Ack: Any = _FakeAck


@dataclass
class Harness:
    deps: SlackDeps
    client: FakeClient
    item_id: int

    def context(self) -> BoltContext:
        return BoltContext({DEPS_KEY: self.deps})

    def body(self, user: str) -> dict[str, Any]:
        return {
            "type": "block_actions",
            "user": {"id": user},
            "container": {"channel_id": CHANNEL, "message_ts": TS},
        }


@pytest.fixture
def harness(sqlite_services: Services) -> Iterator[Harness]:
    settings = Settings(
        _env_file=None, database_url=sqlite_services.settings.database_url, admins=ADMIN
    )
    services = Services(
        settings=settings,
        engine=sqlite_services.engine,
        sessions=sqlite_services.sessions,
        registry=sqlite_services.registry,
    )
    with services.sessions.begin() as session:
        task = task_ops.create_task(
            session, "reviews", ["positive", "negative"], channel=CHANNEL, threshold=0.9
        )
        (routed,) = submit(
            session, task, [IncomingItem("so-so")], registry=services.registry, max_chars=100
        )
    post_prompt(services, routed.item_id, TS)
    client = FakeClient()
    deps = SlackDeps(services=services, client=client, background=InlineExecutor())  # type: ignore[arg-type]
    yield Harness(deps=deps, client=client, item_id=routed.item_id)


def _answers(harness: Harness) -> list[tuple[str, str | None, bool]]:
    with harness.deps.services.sessions.begin() as session:
        rows = session.query(Answer).order_by(Answer.id).all()
        return [(a.user_id, a.label, a.is_current) for a in rows]


def _texts(message: dict[str, Any]) -> str:
    return repr(message.get("blocks"))


def test_label_button_acks_stores_and_redraws_the_message(harness: Harness) -> None:
    ack = Ack()
    value = ids.encode_choice(harness.item_id, 1)
    actions.on_label_button(ack, harness.body("U0ANNA"), {"value": value}, harness.context())
    assert ack.count == 1
    assert _answers(harness) == [("U0ANNA", "negative", True)]
    (update,) = harness.client.named("chat_update")
    assert update["channel"] == CHANNEL and update["ts"] == TS
    assert "negative" in _texts(update) and ids.ACTION_CHANGE in _texts(update)


def test_label_menu_reads_the_selected_option(harness: Harness) -> None:
    value = ids.encode_choice(harness.item_id, 0)
    action = {"selected_option": {"value": value}}
    actions.on_label_menu(Ack(), harness.body("U0ANNA"), action, harness.context())
    assert _answers(harness) == [("U0ANNA", "positive", True)]


def test_a_second_person_is_told_who_answered_and_nothing_changes(harness: Harness) -> None:
    for user, index in (("U0ANNA", 1), ("U0BOB", 0)):
        value = ids.encode_choice(harness.item_id, index)
        actions.on_label_button(Ack(), harness.body(user), {"value": value}, harness.context())
    assert _answers(harness) == [("U0ANNA", "negative", True)]
    (told,) = harness.client.named("chat_postEphemeral")
    assert told["user"] == "U0BOB" and "<@U0ANNA>" in told["text"]


def test_change_shows_the_change_prompt_to_the_person_who_answered(harness: Harness) -> None:
    value = ids.encode_choice(harness.item_id, 1)
    actions.on_label_button(Ack(), harness.body("U0ANNA"), {"value": value}, harness.context())
    ack = Ack()
    change = {"value": ids.encode_item(harness.item_id)}
    actions.on_reopen(ack, harness.body("U0ANNA"), change, harness.context())
    assert ack.count == 1
    reopened = harness.client.named("chat_update")[-1]
    assert "Changing the answer of <@U0ANNA>" in _texts(reopened)
    assert "was: negative" in _texts(reopened)
    assert ids.label_action_id(0) in _texts(reopened)


def test_change_by_someone_else_is_refused_with_a_reason(harness: Harness) -> None:
    value = ids.encode_choice(harness.item_id, 1)
    actions.on_label_button(Ack(), harness.body("U0ANNA"), {"value": value}, harness.context())
    change = {"value": ids.encode_item(harness.item_id)}
    actions.on_reopen(Ack(), harness.body("U0BOB"), change, harness.context())
    (told,) = harness.client.named("chat_postEphemeral")
    assert "Only <@U0ANNA> can change it" in told["text"]
    assert len(harness.client.named("chat_update")) == 1  # only the first click's redraw


def test_skip_is_recorded_and_the_person_told(harness: Harness) -> None:
    skip = {"value": ids.encode_item(harness.item_id)}
    actions.on_skip(Ack(), harness.body("U0ANNA"), skip, harness.context())
    assert _answers(harness) == [("U0ANNA", None, True)]
    (told,) = harness.client.named("chat_postEphemeral")
    assert told["text"].startswith("Skipped")


def test_a_forged_value_stores_nothing(harness: Harness) -> None:
    ack = Ack()
    actions.on_label_button(ack, harness.body("U0ANNA"), {"value": "1:x"}, harness.context())
    assert ack.count == 1 and _answers(harness) == [] and harness.client.calls == []


def test_threshold_command_is_for_admins_and_announced(harness: Harness) -> None:
    replies: list[dict[str, Any]] = []

    def reply(**kwargs: Any) -> None:
        replies.append(kwargs)

    respond: Any = reply

    command = {"text": "threshold reviews 0.7", "user_id": "U0ANNA"}
    commands.on_hitl_command(Ack(), command, respond, harness.context())
    assert "only admins" in repr(replies[-1])
    command = {"text": "threshold reviews 70%", "user_id": ADMIN}
    commands.on_hitl_command(Ack(), command, respond, harness.context())
    assert "0.9 → 0.7" in repr(replies[-1])
    (announced,) = harness.client.named("chat_postMessage")
    assert announced["channel"] == CHANNEL
    with harness.deps.services.sessions.begin() as session:
        assert task_ops.get_task(session, "reviews").threshold == pytest.approx(0.7)


def test_unknown_subcommand_shows_help(harness: Harness) -> None:
    replies: list[dict[str, Any]] = []
    commands.on_hitl_command(
        Ack(),
        {"text": "frobnicate", "user_id": "U0ANNA"},
        cast(Any, lambda **kwargs: replies.append(kwargs)),
        harness.context(),
    )
    assert all(word in repr(replies[-1]) for word in ids.COMMAND_WORDS)


def test_app_home_publishes_every_task(harness: Harness) -> None:
    events.on_app_home_opened({"user": "U0ANNA", "tab": "home"}, harness.context())
    (published,) = harness.client.named("views_publish")
    assert published["user_id"] == "U0ANNA" and "reviews" in repr(published["view"])
    events.on_app_home_opened({"user": "U0ANNA", "tab": "messages"}, harness.context())
    assert len(harness.client.named("views_publish")) == 1


def test_a_click_naming_another_tasks_item_is_refused(harness: Harness) -> None:
    """A signed click whose value names an item that is not in the clicked message."""
    services = harness.deps.services
    with services.sessions.begin() as session:
        other = task_ops.create_task(
            session, "other", ["x", "y"], channel="C0OTHER01", threshold=0.9
        )
        (routed,) = submit(
            session, other, [IncomingItem("elsewhere")], registry=services.registry, max_chars=100
        )
    post_prompt(services, routed.item_id, "1700000000.000900", channel="C0OTHER01")
    value = ids.encode_choice(routed.item_id, 0)
    actions.on_label_button(Ack(), harness.body("U0ANNA"), {"value": value}, harness.context())
    assert _answers(harness) == []
    assert harness.client.named("chat_update") == []
    (told,) = harness.client.named("chat_postEphemeral")
    assert "does not belong to this message" in told["text"]


def test_skip_and_override_of_a_missing_item_tell_the_person(harness: Harness) -> None:
    for listener in (actions.on_skip, actions.on_reopen):
        ack = Ack()
        listener(ack, harness.body("U0ANNA"), {"value": "987654"}, harness.context())
        assert ack.count == 1
    told = harness.client.named("chat_postEphemeral")
    assert [t["text"] for t in told] == ["Nothing was changed: no item #987654"] * 2


def test_an_item_id_beyond_32_bits_is_a_missing_item(harness: Harness) -> None:
    actions.on_skip(Ack(), harness.body("U0ANNA"), {"value": str(2**31)}, harness.context())
    (told,) = harness.client.named("chat_postEphemeral")
    assert told["text"] == f"Nothing was changed: no item #{2**31}"


def test_a_click_while_the_database_is_down_is_not_lost_in_silence(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(actions, "answer_click", down)
    value = ids.encode_choice(harness.item_id, 1)
    ack = Ack()
    actions.on_label_button(ack, harness.body("U0ANNA"), {"value": value}, harness.context())
    assert ack.count == 1
    (told,) = harness.client.named("chat_postEphemeral")
    assert "Not saved" in told["text"] and "click again" in told["text"]
    # The prompt is left as it was, buttons and all, so the click can be repeated.
    assert harness.client.named("chat_update") == []
    assert _answers(harness) == []


def test_hostile_labels_and_names_are_shown_literally(harness: Harness) -> None:
    """A label or task name that looks like a mention pings nobody in any reply."""
    services = harness.deps.services
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        task_ops.add_labels(session, task, ["<!channel> & <@U0BOSS>"], actor="test")
    for user, index in (("U0ANNA", 2), ("U0BOB", 0)):
        value = ids.encode_choice(harness.item_id, index)
        actions.on_label_button(Ack(), harness.body(user), {"value": value}, harness.context())
    (told,) = harness.client.named("chat_postEphemeral")
    assert "&lt;!channel&gt; &amp; &lt;@U0BOSS&gt;" in told["text"]
    assert "<!channel>" not in told["text"] and "<@U0BOSS>" not in told["text"]
    replies: list[dict[str, Any]] = []
    command = {"text": "stats <!here>", "user_id": "U0ANNA"}
    commands.on_hitl_command(
        Ack(), command, cast(Any, lambda **kw: replies.append(kw)), harness.context()
    )
    assert "&lt;!here&gt;" in repr(replies[-1]) and "<!here>" not in repr(replies[-1])


def test_a_failed_retrain_is_announced_with_the_reason_escaped(harness: Harness) -> None:
    from bot.slack.reporting import publish_failure

    publish_failure(harness.deps, "reviews", CHANNEL, "label <!channel> has 1 answer")
    (posted,) = harness.client.named("chat_postMessage")
    assert posted["text"] == ":x: label &lt;!channel&gt; has 1 answer"


def test_a_click_against_an_unreachable_database_tells_the_person(harness: Harness) -> None:
    """A real outage: the services point at a PostgreSQL port where nothing listens."""
    from bot.services import build_services

    down = build_services(
        Settings(_env_file=None, database_url="postgresql+psycopg://nobody@127.0.0.1:9/gone"),
        migrate=False,
    )
    deps = SlackDeps(services=down, client=harness.client, background=InlineExecutor())  # type: ignore[arg-type]
    context = BoltContext({DEPS_KEY: deps})
    ack = Ack()
    value = ids.encode_choice(harness.item_id, 1)
    actions.on_label_button(ack, harness.body("U0ANNA"), {"value": value}, context)
    down.engine.dispose()
    assert ack.count == 1
    (told,) = harness.client.named("chat_postEphemeral")
    assert told["text"].startswith(":warning: Not saved") and "click again" in told["text"]
    assert harness.client.named("chat_update") == []
