"""End to end over real HTTP: prompts, clicks, answers, signatures, slash commands, App Home."""

import json
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from sqlalchemy import select

from bot.demo.standin import ApiCall
from bot.slack import ids
from bot.storage.schema import Answer, AuditLog, Item, Task
from tests.bot.slack.conftest import ADMIN, CHANNEL, Bot, wait_for


def texts_of(message: dict[str, Any]) -> str:
    """Every text in a message's blocks, joined (for 'the message shows X' checks)."""
    return json.dumps(message.get("blocks"), ensure_ascii=False)


def buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for block in message["blocks"]:
        for element in block.get("elements") or []:
            if element.get("type") == "button":
                found[element["text"]["text"]] = element
    return found


def answers(bot: Bot) -> list[Answer]:
    with bot.runtime.services.sessions.begin() as session:
        query = select(Answer).where(Answer.user_id != "import").order_by(Answer.id)
        return list(session.scalars(query))


def label_button(message: dict[str, Any], label: str) -> dict[str, Any]:
    return next(b for text, b in buttons(message).items() if text.startswith(label))


def updates_of(bot: Bot, ts: str) -> list[ApiCall]:
    """The chat.update calls the bot made on message `ts`: the last step of handling a click."""
    return [call for call in bot.slack.calls("chat.update") if call.params.get("ts") == ts]


def clicks_handled(bot: Bot) -> list[int]:
    """One entry per click whose follow-up Slack calls (redraw, replies) are done."""
    followups = bot.runtime.deps.followups
    assert followups is not None
    return list(range(followups.completed))


def test_prompt_is_posted_with_label_buttons_and_skip(bot: Bot) -> None:
    (routed,) = bot.submit("the staff were lovely")
    assert routed["route"] == "review"
    (message,) = bot.prompts(1)
    shown = buttons(message)
    assert {"positive", "negative"} <= {text.split(" ")[0] for text in shown}
    assert any(b["action_id"] == ids.ACTION_SKIP for b in shown.values())
    assert "the staff were lovely" in texts_of(message)
    assert message["text"]  # notification fallback


def test_click_stores_answer_and_updates_message(bot: Bot) -> None:
    (routed,) = bot.submit("rude and cold")
    (message,) = bot.prompts(1)
    button = label_button(message, "negative")
    result = bot.user("U0ANNA001").click_button(
        message, button["action_id"], value=button["value"], channel_id=CHANNEL
    )
    assert result.status == 200
    stored = wait_for(lambda: answers(bot), 1)
    assert [(a.user_id, a.label, a.item_id) for a in stored] == [
        ("U0ANNA001", "negative", routed["item_id"])
    ]

    def updated() -> list[dict[str, Any]]:
        current = bot.slack.message(CHANNEL, message["ts"])
        return [current] if current and "U0ANNA001" in texts_of(current) else []

    (after,) = wait_for(updated, 1)
    assert "negative" in texts_of(after)
    assert any(b["action_id"] == ids.ACTION_CHANGE for b in buttons(after).values())
    assert not any(
        b["action_id"].startswith(ids.ACTION_LABEL + ":") for b in buttons(after).values()
    )
    status = bot.api.get(f"/api/tasks/reviews/items/%23{routed['item_id']}").json()["item"]
    assert (status["final_label"], status["label_source"]) == ("negative", "person")


def test_same_click_delivered_twice_stores_one_answer(bot: Bot) -> None:
    bot.submit("not sure about this one")
    (message,) = bot.prompts(1)
    button = label_button(message, "positive")
    person = bot.user("U0BEN0001")
    for _ in range(2):
        person.click_button(message, button["action_id"], value=button["value"], channel_id=CHANNEL)
    wait_for(lambda: clicks_handled(bot), 2)  # both deliveries fully handled
    assert len(updates_of(bot, message["ts"])) >= 1
    assert [(a.user_id, a.label, a.is_current) for a in answers(bot)] == [
        ("U0BEN0001", "positive", True)
    ]


def test_two_people_clicking_at_once_resolve_once_and_the_other_is_told(bot: Bot) -> None:
    bot.submit("hmm")
    (message,) = bot.prompts(1)
    first, second = label_button(message, "positive"), label_button(message, "negative")
    people = [(bot.user("U0CARA001"), first), (bot.user("U0DAN0001"), second)]
    threads = [
        threading.Thread(
            target=p.click_button,
            args=(message, b["action_id"]),
            kwargs={"value": b["value"], "channel_id": CHANNEL},
        )
        for p, b in people
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(lambda: clicks_handled(bot), 2)  # both clicks fully handled
    stored = answers(bot)
    assert len(stored) == 1
    winner = stored[0].user_id
    loser = "U0DAN0001" if winner == "U0CARA001" else "U0CARA001"
    told = wait_for(lambda: bot.slack.ephemerals(channel=CHANNEL, user=loser), 1)
    assert "Already labelled" in json.dumps(told[-1]) and winner in json.dumps(told[-1])


@pytest.mark.parametrize("forgery", ["bad_signature", "stale"])
def test_forged_or_stale_requests_get_401_and_store_nothing(bot: Bot, forgery: str) -> None:
    bot.submit("whatever")
    (message,) = bot.prompts(1)
    button = label_button(message, "positive")
    person = bot.user("U0EVE0001")
    kwargs: dict[str, Any] = {"value": button["value"], "channel_id": CHANNEL}
    if forgery == "stale":
        kwargs["timestamp"] = int(time.time()) - 6 * 60
    else:
        kwargs["forge_signature"] = True
    result = person.click_button(message, button["action_id"], **kwargs)
    assert result.status == 401
    # A genuine click after it: once the bot has handled that one, a forged answer would show.
    bot.user("U0FRED001").click_button(
        message, button["action_id"], value=button["value"], channel_id=CHANNEL
    )
    wait_for(lambda: updates_of(bot, message["ts"]), 1)
    assert [a.user_id for a in answers(bot)] == ["U0FRED001"]
    assert len(updates_of(bot, message["ts"])) == 1  # the forged click did not reach a listener


def test_item_text_with_mentions_and_markup_shows_literally(bot: Bot) -> None:
    bot.submit("<!channel> *bold* & <@U123> _x_")
    (message,) = bot.prompts(1)
    text_objects = [
        block["text"]
        for block in message["blocks"]
        if block.get("type") == "section"
        and "text" in block
        and "<!channel>" in block["text"]["text"]
    ]
    assert text_objects and text_objects[0]["type"] == "plain_text"
    assert "*bold*" in text_objects[0]["text"]


def test_skip_leaves_the_item_open(bot: Bot) -> None:
    bot.submit("skip me")
    (message,) = bot.prompts(1)
    skip = next(b for b in buttons(message).values() if b["action_id"] == ids.ACTION_SKIP)
    bot.user("U0FAY0001").click_button(
        message, ids.ACTION_SKIP, value=skip["value"], channel_id=CHANNEL
    )
    stored = wait_for(lambda: answers(bot), 1)
    assert [(a.kind, a.label) for a in stored] == [("skip", None)]
    with bot.runtime.services.sessions.begin() as session:
        item = session.scalars(select(Item).where(Item.source == "api")).one()
        assert item.final_source is None


def test_api_requires_the_bearer_token_and_checks_the_body(bot: Bot) -> None:
    url = "/api/tasks/reviews/items"
    assert (
        bot.api.post(url, json={"items": []}, headers={"Authorization": "Bearer no"}).status_code
        == 401
    )
    bad = bot.api.post(url, json={"items": [{"text": ""}]})
    assert bad.status_code == 400 and bad.json()["error"] == "item 1: empty text"
    assert bot.api.post(url, content=b"{not json").status_code == 400
    assert bot.api.post("/api/tasks/nope/items", json={"items": [{"text": "x"}]}).status_code == 404
    assert bot.api.get("/healthz").json() == {
        "ok": True,
        "database": "ok",
        "posting": {"state": "ok"},
        "socket": {"state": "off"},
    }


def command(bot: Bot, user: str, text: str) -> str:
    """Type `/hitl <text>` as `user`; returns everything the bot answered to the response_url."""
    result = bot.user(user).slash_command(text, channel_id=CHANNEL)
    assert result.status == 200
    assert result.response_url is not None
    url = result.response_url
    replies = wait_for(lambda: bot.slack.response_url_posts(url), 1)
    return json.dumps(replies, ensure_ascii=False)


@pytest.mark.parametrize("text", ["help", "", "frobnicate"])
def test_help_for_help_empty_and_unknown(bot: Bot, text: str) -> None:
    reply = command(bot, "U0GUS0001", text)
    for word in ("stats", "threshold", "retrain", "tasks"):
        assert word in reply


def test_tasks_and_stats_commands(bot: Bot) -> None:
    bot.submit("a thing")
    assert "reviews" in command(bot, "U0GUS0001", "tasks")
    reply = command(bot, "U0GUS0001", "stats")
    assert "reviews" in reply and "0.99" in reply


def test_threshold_admin_sets_others_refused_bad_values_change_nothing(bot: Bot) -> None:
    assert "0.99" in command(bot, "U0GUS0001", "threshold")
    assert "only admins" in command(bot, "U0GUS0001", "threshold 0.5")
    assert "not a number" in command(bot, ADMIN, "threshold abc")
    assert "out of range" in command(bot, ADMIN, "threshold 1.5")
    assert "0.99 → 0.7" in command(bot, ADMIN, "threshold reviews 0.7")
    with bot.runtime.services.sessions.begin() as session:
        task = session.scalars(select(Task)).one()
        audit = session.scalars(select(AuditLog).where(AuditLog.field == "threshold")).all()
    assert task.threshold == pytest.approx(0.7)
    assert [(a.actor, a.new_value) for a in audit] == [(ADMIN, "0.7")]
    announced = wait_for(
        lambda: [m for m in bot.slack.messages(CHANNEL) if "0.7" in json.dumps(m)], 1
    )
    assert ADMIN in json.dumps(announced[0])


def test_retrain_command_posts_the_report_and_chart(bot: Bot) -> None:
    assert "only admins" in command(bot, "U0GUS0001", "retrain")
    assert "Retraining" in command(bot, ADMIN, "retrain")
    reports = wait_for(
        lambda: [m for m in bot.slack.messages(CHANNEL) if "Retrain" in json.dumps(m)],
        1,
        timeout=60,
    )
    # The same answers train the same model again: equal macro-F1 is "no worse", so promoted.
    assert "model v1 → v2 promoted" in json.dumps(reports[0], ensure_ascii=False)
    files = wait_for(lambda: bot.slack.files(channel=CHANNEL), 1, timeout=30)
    assert files[0]["title"].startswith("reviews")


def test_app_home_shows_every_task(bot: Bot) -> None:
    bot.user("U0HAL0001").app_home_opened()
    views = wait_for(lambda: [v for v in [bot.slack.views("U0HAL0001")] if v], 1)
    assert views[0]["type"] == "home" and "reviews" in json.dumps(views[0])


def test_change_reopens_for_the_answerer_only_and_keeps_history(bot: Bot) -> None:
    bot.submit("so-so")
    (message,) = bot.prompts(1)
    anna = bot.user("U0ANNA001")
    button = label_button(message, "positive")
    anna.click_button(message, button["action_id"], value=button["value"], channel_id=CHANNEL)

    def current(predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        found = bot.slack.message(CHANNEL, message["ts"])
        return [found] if found is not None and predicate(found) else []

    def has_change(m: dict[str, Any]) -> bool:
        return any(b["action_id"] == ids.ACTION_CHANGE for b in buttons(m).values())

    (answered,) = wait_for(lambda: current(has_change), 1)
    change = next(b for b in buttons(answered).values() if b["action_id"] == ids.ACTION_CHANGE)
    bot.user("U0BEN0001").click_button(
        answered, ids.ACTION_CHANGE, value=change["value"], channel_id=CHANNEL
    )
    wait_for(lambda: bot.slack.ephemerals(channel=CHANNEL, user="U0BEN0001"), 1)
    anna.click_button(answered, ids.ACTION_CHANGE, value=change["value"], channel_id=CHANNEL)
    (reopened,) = wait_for(lambda: current(lambda m: not has_change(m)), 1)
    other = label_button(reopened, "negative")
    anna.click_button(reopened, other["action_id"], value=other["value"], channel_id=CHANNEL)
    wait_for(lambda: [a for a in answers(bot) if a.label == "negative"], 1)
    assert [(a.label, a.is_current) for a in answers(bot)] == [
        ("positive", False),
        ("negative", True),
    ]


def test_retrain_resolves_waiting_prompts_and_updates_their_messages(tmp_path: Any) -> None:
    """After a first model is promoted, prompts it is now sure about say so, with Override."""
    from contextlib import contextmanager

    from bot import tasks as task_ops
    from bot.answers import import_examples
    from bot.ingest import IncomingItem
    from tests.bot.slack.conftest import start_bot
    from tests.conftest import TINY

    with contextmanager(start_bot)(tmp_path, rate=50.0, trained=False) as cold:
        with cold.runtime.services.sessions.begin() as session:
            task = task_ops.get_task(session, "reviews")
            task.threshold = 0.5
        cold.submit("wonderful lovely kind staff", "the worst rude dirty awful meal")
        prompts = cold.prompts(2)
        with cold.runtime.services.sessions.begin() as session:
            import_examples(
                session,
                task_ops.get_task(session, "reviews"),
                [IncomingItem(t, label=lab) for t, lab in TINY],
                max_chars=1000,
            )
        assert "Retraining" in command(cold, ADMIN, "retrain")

        def overridable() -> list[dict[str, Any]]:
            current = [cold.slack.message(CHANNEL, p["ts"]) for p in prompts]
            return [
                m
                for m in current
                if any(b["action_id"] == ids.ACTION_OVERRIDE for b in buttons(m).values())
            ]

        # The report is posted once the retrain has stored its work; message updates follow it.
        wait_for(
            lambda: [m for m in cold.slack.messages(CHANNEL) if "Retrain" in json.dumps(m)],
            1,
            timeout=60,
        )
        with cold.runtime.services.sessions.begin() as session:
            resolved = session.scalars(select(Item).where(Item.final_source == "model")).all()
        assert resolved
        updated = wait_for(overridable, len(resolved))
        assert len(updated) == len(resolved)
        assert all("model v1" in texts_of(message) for message in updated)


# --- trust over real HTTP: spot checks, votes, escalation, the precision alarm, commands -------


def configure(bot: Bot, **values: Any) -> None:
    """Set task columns directly, as the trust commands or a retrain would."""
    with bot.runtime.services.sessions.begin() as session:
        task = session.scalars(select(Task)).one()
        for key, value in values.items():
            setattr(task, key, value)


def current(bot: Bot, ts: str, predicate: Callable[[dict[str, Any]], bool]) -> list[Any]:
    found = bot.slack.message(CHANNEL, ts)
    return [found] if predicate(found) else []


def click_label(bot: Bot, user: str, message: dict[str, Any], label: str) -> None:
    button = label_button(message, label)
    bot.user(user).click_button(
        message, button["action_id"], value=button["value"], channel_id=CHANNEL
    )


def test_a_spot_check_prompt_shows_nothing_of_the_models_answer(bot: Bot) -> None:
    """Blocks and notification text carry no guess and no confidence; buttons in task order."""
    configure(bot, threshold=0.01, spot_check_rate=1.0)
    (routed,) = bot.submit("rude and cold")
    assert (routed["route"], routed["spot_check"], routed["label"]) == ("auto", True, "negative")
    (message,) = bot.prompts(1)
    shown = json.dumps({"text": message["text"], "blocks": message["blocks"]}, ensure_ascii=False)
    confidence = f"{int(routed['confidence'] * 100)}"
    assert "%" not in shown and f"{confidence} " not in shown and "0.5" not in shown
    assert "guess" not in shown.lower() and "model says" not in shown.lower()
    assert "model v" not in shown.lower()
    assert message["text"].startswith("Spot check in reviews: rude and cold")
    order = [
        b["text"]["text"]
        for b in buttons(message).values()
        if b["action_id"].startswith(ids.ACTION_LABEL + ":")
    ]
    assert order == ["positive", "negative"]  # the task's order, not the model's ranking
    click_label(bot, "U0ANNA001", message, "positive")
    answered = wait_for(
        lambda: current(bot, message["ts"], lambda m: "U0ANNA001" in texts_of(m)), 1
    )
    assert "positive" in texts_of(answered[0])
    stored = answers(bot)
    assert [(a.label, a.source) for a in stored] == [("positive", "spot_check")]


def test_two_agreeing_votes_resolve_and_the_first_keeps_the_prompt_open(bot: Bot) -> None:
    assert "1 → *2*" in command(bot, ADMIN, "votes 2")
    (routed,) = bot.submit("hmm")
    (message,) = bot.prompts(1)
    click_label(bot, "U0ANNA001", message, "negative")
    (waiting,) = wait_for(
        lambda: current(bot, message["ts"], lambda m: "1 of 2 agreeing" in texts_of(m)), 1
    )
    assert label_button(waiting, "positive") and label_button(waiting, "negative")
    told = wait_for(lambda: bot.slack.ephemerals(channel=CHANNEL, user="U0ANNA001"), 1)
    assert "1 more agreeing answer is needed" in json.dumps(told[-1])
    click_label(bot, "U0BEN0001", waiting, "negative")
    (answered,) = wait_for(
        lambda: current(
            bot,
            message["ts"],
            lambda m: any(b["action_id"] == ids.ACTION_CHANGE for b in buttons(m).values()),
        ),
        1,
    )
    assert "U0BEN0001" in texts_of(answered) and "U0ANNA001" in texts_of(answered)
    status = bot.api.get(f"/api/tasks/reviews/items/%23{routed['item_id']}").json()["item"]
    assert (status["final_label"], status["label_source"]) == ("negative", "person")


def test_a_disagreement_goes_to_the_admins_who_decide(bot: Bot) -> None:
    configure(bot, votes_required=2)
    (routed,) = bot.submit("so-so")
    (message,) = bot.prompts(1)
    click_label(bot, "U0ANNA001", message, "positive")
    wait_for(lambda: current(bot, message["ts"], lambda m: "1 of 2" in texts_of(m)), 1)
    click_label(bot, "U0BEN0001", message, "negative")
    escalations = wait_for(
        lambda: [m for m in bot.slack.messages(CHANNEL) if "Reviewers disagree" in m["text"]], 1
    )
    (escalation,) = escalations
    assert escalation["thread_ts"] == message["ts"]
    shown = texts_of(escalation)
    assert f"<@{ADMIN}>" in shown and "so-so" in shown
    assert "<@U0ANNA001>*\\npositive" in shown and "<@U0BEN0001>*\\nnegative" in shown
    (reopened,) = wait_for(
        lambda: current(bot, message["ts"], lambda m: "Reviewers disagree" in texts_of(m)), 1
    )
    click_label(bot, ADMIN, reopened, "negative")
    wait_for(lambda: current(bot, message["ts"], lambda m: ADMIN in texts_of(m)), 1)
    status = bot.api.get(f"/api/tasks/reviews/items/%23{routed['item_id']}").json()["item"]
    assert (status["final_label"], status["answered_by"]) == ("negative", ADMIN)


def test_spot_checks_that_contradict_the_model_raise_the_alarm_in_precision_mode(
    bot: Bot,
) -> None:
    configure(
        bot,
        target_precision=0.95,
        precision_lower_bound=0.96,
        threshold=0.01,
        spot_check_rate=1.0,
        threshold_evidence={"reason": "set for the test"},
    )
    routed = bot.submit("hmm", "whatever")
    assert all(r["route"] == "auto" and r["spot_check"] for r in routed)
    assert all(r["confidence"] < 0.9 for r in routed)  # else a second opinion would be asked
    prompts = bot.prompts(2)
    by_text = {m["text"]: m for m in prompts}
    for n, r in enumerate(routed):
        message = next(m for t, m in by_text.items() if ("hmm" if n == 0 else "whatever") in t)
        wrong = "positive" if r["label"] == "negative" else "negative"
        click_label(bot, f"U0P{n}00001", message, wrong)
        wait_for(partial(current, bot, message["ts"], lambda m: "Change" in texts_of(m)), 1)
    alarms = wait_for(
        lambda: [m for m in bot.slack.messages(CHANNEL) if "fall short" in texts_of(m)], 1
    )
    assert "right on 2 spot checks" in texts_of(alarms[0])
    assert "target of 95 %" in texts_of(alarms[0])
    reply = command(bot, "U0GUS0001", "stats")
    assert "below the target" in reply


def test_trust_commands_over_http(bot: Bot) -> None:
    bot.submit("the food was lovely", "rude staff", "hmm")
    reply = command(bot, "U0GUS0001", "threshold reviews 0.5 preview")
    assert "What if" in reply and "Expected precision" in reply and "changes nothing" in reply
    assert "What if" in command(bot, "U0GUS0001", "threshold preview 0.5")
    with bot.runtime.services.sessions.begin() as session:
        assert session.scalars(select(Task)).one().threshold == pytest.approx(0.99)
    assert "only admins" in command(bot, "U0GUS0001", "threshold precision 95%")
    reply = command(bot, ADMIN, "threshold reviews precision 95%")
    assert "target precision of *95 %*" in reply
    assert "Nothing is automated yet" in reply or "Threshold *" in reply
    assert "*2 %* of automatic answers" in command(bot, "U0GUS0001", "spot-checks")
    assert "2 % → *10 %*" in command(bot, ADMIN, "spot-checks reviews 10%")
    assert "Reviewers: reviews" in command(bot, "U0GUS0001", "stats reviewers")
    help_text = command(bot, "U0GUS0001", "help")
    for usage in (
        "threshold [task] precision 95%",
        "threshold [task] 0.85 preview",
        "spot-checks",
        "votes",
        "stats reviewers",
    ):
        assert usage in help_text, usage


def test_budget_over_signed_requests_admin_sets_others_refused(bot: Bot) -> None:
    assert "no limit" in command(bot, "U0GUS0001", "budget")
    assert "only admins" in command(bot, "U0GUS0001", "budget 5")
    assert "not a whole number" in command(bot, ADMIN, "budget five")
    assert "→ *5 a day*" in command(bot, ADMIN, "budget reviews 5")
    with bot.runtime.services.sessions.begin() as session:
        task = session.scalars(select(Task)).one()
        audit = session.scalars(select(AuditLog).where(AuditLog.field == "daily_budget")).all()
    assert task.daily_budget == 5
    assert [(a.actor, a.new_value) for a in audit] == [(ADMIN, "5")]
