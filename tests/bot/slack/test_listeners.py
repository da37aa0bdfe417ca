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
from bot.states import LabelSource, Route
from bot.storage.schema import Answer, AuditLog, Item, Prediction, ReviewPrompt, utcnow

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
    assert [t["text"] for t in told] == [actions.DELETED_ITEM] * 2


def test_an_item_id_beyond_32_bits_is_a_missing_item(harness: Harness) -> None:
    actions.on_skip(Ack(), harness.body("U0ANNA"), {"value": str(2**31)}, harness.context())
    (told,) = harness.client.named("chat_postEphemeral")
    assert told["text"] == actions.DELETED_ITEM


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


# --- trust: several votes, escalation, spot checks and their alarm, new commands ---------------


def set_task(harness: Harness, **values: Any) -> None:
    """Change task columns directly (what the trust commands and retrains would set)."""
    with harness.deps.services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        for key, value in values.items():
            setattr(task, key, value)


def click(harness: Harness, user: str, label_index: int, *, item_id: int | None = None) -> None:
    value = ids.encode_choice(item_id or harness.item_id, label_index)
    actions.on_label_button(Ack(), harness.body(user), {"value": value}, harness.context())


def spot_check_item(
    harness: Harness, *, text: str, guess: str, ts: str, confidence: float = 0.7
) -> int:
    """An item the model answered and sent for a spot check, its prompt posted."""
    services = harness.deps.services
    now = utcnow()
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        item = Item(
            task_id=task.id,
            text=text,
            source="api",
            submitted_at=now,
            route=Route.AUTO,
            final_label=guess,
            final_source=LabelSource.MODEL,
            resolved_at=now,
            spot_check=True,
        )
        session.add(item)
        session.flush()
        session.add(
            Prediction(
                item_id=item.id,
                label=guess,
                confidence=confidence,
                probabilities=None,
                route=Route.AUTO,
                created_at=now,
            )
        )
        outbox.enqueue(session, [item.id], channel=CHANNEL, now=now)
        item_id = item.id
    post_prompt(services, item_id, ts)
    return item_id


def test_with_two_votes_the_first_click_keeps_the_prompt_open(harness: Harness) -> None:
    """One answer of two: buttons stay, the count shows, the clicker hears one more is needed."""
    set_task(harness, votes_required=2)
    click(harness, "U0ANNA", 1)
    (update,) = harness.client.named("chat_update")
    assert "1 of 2 agreeing answers so far" in _texts(update)
    assert ids.label_action_id(0) in _texts(update) and ids.ACTION_CHANGE not in _texts(update)
    # Who chose what stays hidden until the item resolves: no label outside the buttons.
    assert "negative" not in repr([b for b in update["blocks"] if b["type"] != "actions"])
    (told,) = harness.client.named("chat_postEphemeral")
    assert told["user"] == "U0ANNA" and "1 more agreeing answer is needed" in told["text"]
    click(harness, "U0BOB", 1)
    answered = harness.client.named("chat_update")[-1]
    assert ids.ACTION_CHANGE in _texts(answered)
    assert "<@U0BOB> and <@U0ANNA>" in _texts(answered)
    assert len(harness.client.named("chat_postEphemeral")) == 1  # the resolving click: no note
    with harness.deps.services.sessions.begin() as session:
        item = session.get(Item, harness.item_id)
        assert item is not None and (item.final_label, item.final_source) == ("negative", "person")


def test_disagreement_is_escalated_once_and_an_admin_decides(harness: Harness) -> None:
    set_task(harness, votes_required=2)
    click(harness, "U0ANNA", 0)
    click(harness, "U0BOB", 1)
    (escalation,) = harness.client.named("chat_postMessage")
    assert escalation["channel"] == CHANNEL and escalation["thread_ts"] == TS
    assert escalation["reply_broadcast"] is True  # in the prompt's thread, shown in the channel
    shown = _texts(escalation)
    assert f"<@{ADMIN}>: please decide" in shown and "so-so" in shown
    assert "*<@U0ANNA>*\\npositive" in shown and "*<@U0BOB>*\\nnegative" in shown
    told = harness.client.named("chat_postEphemeral")[-1]
    assert told["user"] == "U0BOB" and "admins were asked to decide" in told["text"]
    assert "Reviewers disagree" in _texts(harness.client.named("chat_update")[-1])
    click(harness, "U0CARL", 0)  # a third reviewer agreeing with the first: 2 of 2, resolved
    assert len(harness.client.named("chat_postMessage")) == 1  # escalated once only
    with harness.deps.services.sessions.begin() as session:
        item = session.get(Item, harness.item_id)
        assert item is not None and item.final_label == "positive"


def test_after_an_escalation_the_admins_answer_settles_it(harness: Harness) -> None:
    set_task(harness, votes_required=3)
    click(harness, "U0ANNA", 0)
    click(harness, "U0BOB", 1)
    click(harness, ADMIN, 1)
    with harness.deps.services.sessions.begin() as session:
        item = session.get(Item, harness.item_id)
        assert item is not None and (item.final_label, item.final_source) == ("negative", "person")
    answered = harness.client.named("chat_update")[-1]
    assert f"by <@{ADMIN}> and <@U0BOB>" in _texts(answered)


def test_a_spot_check_prompt_opens_and_a_person_decides(harness: Harness) -> None:
    item_id = spot_check_item(harness, text="fine I guess", guess="positive", ts=TS + "1")
    body = harness.body("U0ANNA")
    body["container"]["message_ts"] = TS + "1"
    value = ids.encode_choice(item_id, 1)
    actions.on_label_button(Ack(), body, {"value": value}, harness.context())
    with harness.deps.services.sessions.begin() as session:
        answer = session.scalars(select(Answer).where(Answer.item_id == item_id)).one()
        assert (answer.label, answer.source) == ("negative", "spot_check")
    update = harness.client.named("chat_update")[-1]
    assert "negative" in _texts(update) and ids.ACTION_CHANGE in _texts(update)


def test_a_stale_override_of_an_open_spot_check_does_not_name_the_models_answer(
    harness: Harness,
) -> None:
    ts = "1700000003.000100"
    item_id = spot_check_item(harness, text="hidden", guess="positive", ts=ts)
    body = harness.body("U0ANNA")
    body["container"]["message_ts"] = ts
    actions.on_reopen(Ack(), body, {"value": ids.encode_item(item_id)}, harness.context())
    (reopened,) = harness.client.named("chat_update")
    assert "was:" not in _texts(reopened) and "Spot check" in _texts(reopened)


def test_contradicting_a_very_sure_model_asks_a_second_person(harness: Harness) -> None:
    """The model was 97 % sure: one person saying otherwise does not overturn it alone."""
    set_task(harness, threshold=0.6)
    ts = "1700000002.000100"
    item_id = spot_check_item(harness, text="sure thing", guess="positive", ts=ts, confidence=0.97)
    for user in ("U0ANNA", "U0BOB"):
        body = harness.body(user)
        body["container"]["message_ts"] = ts
        value = ids.encode_choice(item_id, 1)
        actions.on_label_button(Ack(), body, {"value": value}, harness.context())
        if user == "U0ANNA":
            (told,) = harness.client.named("chat_postEphemeral")
            assert "very sure of a different label" in told["text"]
            update = harness.client.named("chat_update")[-1]
            assert "1 of 2 agreeing answers so far" in _texts(update)
            assert "97" not in _texts(update) and "Spot check" in _texts(update)
            with harness.deps.services.sessions.begin() as session:
                item = session.get(Item, item_id)
                assert item is not None and item.final_source == "model"
    with harness.deps.services.sessions.begin() as session:
        item = session.get(Item, item_id)
        assert item is not None and (item.final_label, item.final_source) == ("negative", "person")


def test_spot_checks_below_the_target_alert_the_channel_once(harness: Harness) -> None:
    """Precision mode at 95 %: two spot checks the model got wrong put it below the target."""
    set_task(
        harness,
        target_precision=0.95,
        precision_lower_bound=0.96,
        threshold=0.6,
        threshold_evidence={"reason": "evidence"},
    )
    items = [
        spot_check_item(harness, text=f"text {n}", guess="positive", ts=f"1700000001.00000{n}")
        for n in range(3)
    ]
    for n, item_id in enumerate(items):
        body = harness.body(f"U0P{n}")
        body["container"]["message_ts"] = f"1700000001.00000{n}"
        value = ids.encode_choice(item_id, 1)  # "negative": the model was wrong
        actions.on_label_button(Ack(), body, {"value": value}, harness.context())
        # One wrong answer of one is not yet evidence; two are (95 % interval 0-84 %).
        assert len(harness.client.named("chat_postMessage")) == (0 if n == 0 else 1)
    (alert,) = harness.client.named("chat_postMessage")
    assert alert["channel"] == CHANNEL
    shown = _texts(alert)
    assert "fall short of the target precision" in shown
    assert "0 % [0-84.2 %] right on 2 spot checks" in shown and "target of 95 %" in shown
    assert "will be raised at the next retrain" in shown and "/hitl threshold reviews" in shown
    with harness.deps.services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        assert task.precision_alert_at is not None
        alarms = session.scalars(select(AuditLog).where(AuditLog.field == "precision_alert"))
        assert len(alarms.all()) == 1


def run(harness: Harness, text: str, user: str = "U0ANNA") -> str:
    """`/hitl <text>` as `user`; the last reply, as text."""
    replies: list[dict[str, Any]] = []
    commands.on_hitl_command(
        Ack(),
        {"text": text, "user_id": user},
        cast(Any, lambda **kwargs: replies.append(kwargs)),
        harness.context(),
    )
    return repr(replies[-1])


def test_target_precision_command_is_for_admins_and_says_why_nothing_is_automated(
    harness: Harness,
) -> None:
    assert "only admins" in run(harness, "threshold reviews precision 95%")
    reply = run(harness, "threshold reviews precision 95%", ADMIN)
    assert "target precision of *95 %*" in reply and "Nothing is automated yet" in reply
    (announced,) = harness.client.named("chat_postMessage")
    assert announced["channel"] == CHANNEL and "95 %" in _texts(announced)
    with harness.deps.services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        assert task.target_precision == pytest.approx(0.95)
    assert "aims for 95 % precision: nothing is automated yet" in run(harness, "threshold")
    assert "out of range" in run(harness, "threshold precision 100%", ADMIN)
    # A hand-set threshold leaves precision mode again, and says from what it changed.
    assert "nothing automated → 0.8" in run(harness, "threshold 0.8", ADMIN)


def test_preview_without_a_model_says_so_and_changes_nothing(harness: Harness) -> None:
    for text in ("threshold reviews 0.5 preview", "threshold preview 0.5"):
        assert "has no model yet" in run(harness, text)
    assert "not a number" in run(harness, "threshold reviews preview abc")
    with harness.deps.services.sessions.begin() as session:
        assert task_ops.get_task(session, "reviews").threshold == pytest.approx(0.9)


def test_spot_checks_and_votes_commands(harness: Harness) -> None:
    assert "*2 %* of automatic answers" in run(harness, "spot-checks")
    assert "only admins" in run(harness, "spot-checks reviews 5%")
    assert "2 % → *5 %*" in run(harness, "spot-checks reviews 5%", ADMIN)
    assert "out of range" in run(harness, "spot-checks 150%", ADMIN)
    assert "Votes of *reviews*: *1*" in run(harness, "votes")
    assert "only admins" in run(harness, "votes 2")
    assert "1 → *2*" in run(harness, "votes reviews 2", ADMIN)
    assert "between 1 and 10" in run(harness, "votes 11", ADMIN)
    with harness.deps.services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        assert task.spot_check_rate == pytest.approx(0.05) and task.votes_required == 2


def test_stats_reviewers_shows_people_and_agreement(harness: Harness) -> None:
    set_task(harness, votes_required=2)
    click(harness, "U0ANNA", 0)
    click(harness, "U0BOB", 0)
    reply = run(harness, "stats reviewers")
    assert "<@U0ANNA>: 1 answer" in reply and "<@U0BOB>: 1 answer" in reply
    assert "Team agreement" in reply
    assert "Reviewers: reviews" in run(harness, "stats reviewers reviews")


def test_stats_and_tasks_in_precision_mode(harness: Harness) -> None:
    run(harness, "threshold precision 95%", ADMIN)
    stats = run(harness, "stats")
    assert "not automating yet (target 95 % precision)" in stats
    assert "*Spot checks*" in stats and "*Votes per item*" in stats
    assert "not automating yet (target 95 % precision)" in run(harness, "tasks")


def test_budget_command_is_for_admins_audited_and_refuses_bad_numbers(harness: Harness) -> None:
    assert "Daily prompt budget of *reviews*: *no limit*" in run(harness, "budget")
    assert "only admins" in run(harness, "budget reviews 20")
    assert "not a whole number" in run(harness, "budget abc", ADMIN)
    assert "got -1" in run(harness, "budget reviews -1", ADMIN)
    assert "no limit → *20 a day*" in run(harness, "budget reviews 20", ADMIN)
    assert "(1 prompt posted today)" in run(harness, "budget")  # the harness posted one
    with harness.deps.services.sessions.begin() as session:
        assert task_ops.get_task(session, "reviews").daily_budget == 20
        audit = session.scalars(select(AuditLog).where(AuditLog.field == "daily_budget")).all()
        assert [(a.actor, a.old_value, a.new_value) for a in audit] == [(ADMIN, "None", "20")]
    assert "20 a day → *no limit*" in run(harness, "budget none", ADMIN)
