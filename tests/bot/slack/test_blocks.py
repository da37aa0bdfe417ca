"""Block Kit builders: values shown, Slack's limits kept, every label reachable and decodable."""

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot.demo.standin import validate_blocks
from bot.report import Comparison, LabelMove, LivePrecision, Movers, RetrainReport, ThresholdFigures
from bot.slack import blocks, ids
from bot.states import RunStatus
from tests.bot.test_report import sample_report

# Slack's documented limits (Block Kit reference), written out here rather than imported from
# the module under test.
MESSAGE_BLOCKS, VIEW_BLOCKS = 50, 100
SECTION_TEXT, FIELD_TEXT, FIELDS = 3000, 2000, 10
ACTIONS_ELEMENTS, CONTEXT_ELEMENTS = 25, 10
BUTTON_TEXT, OPTION_TEXT, OPTION_VALUE, BUTTON_VALUE = 75, 75, 150, 2000
PLACEHOLDER, HEADER, ACTION_ID, SELECT_OPTIONS = 150, 150, 255, 100

WHEN = datetime(2025, 3, 4, 13, 37, tzinfo=UTC)


def slack_len(text_object: dict[str, Any]) -> int:
    """The larger of the ways Slack might count: UTF-16 units, of the escaped text if plain."""
    text = text_object["text"]
    if text_object["type"] == "plain_text":
        text = blocks.escape(text)
    return len(text.encode("utf-16-le")) // 2


def prompt(
    labels: tuple[str, ...],
    *,
    ranked: tuple[str, ...] = (),
    text: str = "my card was charged twice",
    guess: str | None = None,
    confidence: float | None = None,
    version: int | None = None,
    external_id: str | None = None,
    item_id: int = 42,
) -> blocks.PromptInput:
    return blocks.PromptInput(
        task_name="tickets",
        item_id=item_id,
        external_id=external_id,
        text=text,
        labels=labels,
        ranked_labels=ranked,
        guess=guess,
        confidence=confidence,
        model_version=version,
    )


def modelled(labels: tuple[str, ...], *, text: str = "refund please") -> blocks.PromptInput:
    """A prompt whose model ranks the labels in reverse task order, at 62 %."""
    ranked = tuple(reversed(labels))
    return prompt(labels, ranked=ranked, text=text, guess=ranked[0], confidence=0.62, version=3)


def elements_of(block_list: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for block in block_list:
        if block["type"] == "actions":
            yield from block["elements"]


def text_objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every text object anywhere in a block tree."""
    if isinstance(node, dict):
        if node.get("type") in ("plain_text", "mrkdwn") and "text" in node:
            yield node
        for value in node.values():
            yield from text_objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from text_objects(value)


def assert_valid(block_list: list[dict[str, Any]], *, max_blocks: int = MESSAGE_BLOCKS) -> None:
    """Check every limit we rely on, then let slack_sdk's own models validate each block."""
    assert 1 <= len(block_list) <= max_blocks
    action_ids = [e["action_id"] for e in elements_of(block_list)]
    assert len(action_ids) == len(set(action_ids)), "action_ids repeat within a message"
    for block in block_list:
        kind = block["type"]
        if kind == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                assert 1 <= slack_len(block["text"]) <= SECTION_TEXT
            fields = block.get("fields", [])
            assert len(fields) <= FIELDS
            assert all(1 <= slack_len(f) <= FIELD_TEXT for f in fields)
        elif kind == "actions":
            assert 1 <= len(block["elements"]) <= ACTIONS_ELEMENTS
        elif kind == "context":
            assert 1 <= len(block["elements"]) <= CONTEXT_ELEMENTS
            assert all(1 <= slack_len(e) <= SECTION_TEXT for e in block["elements"])
        elif kind == "header":
            assert block["text"]["type"] == "plain_text"
            assert 1 <= slack_len(block["text"]) <= HEADER
        else:
            assert kind == "divider"
    for element in elements_of(block_list):
        assert len(element["action_id"]) <= ACTION_ID
        if element["type"] == "button":
            assert element["text"]["type"] == "plain_text"
            assert 1 <= slack_len(element["text"]) <= BUTTON_TEXT
            assert len(element["value"]) <= BUTTON_VALUE
        else:
            assert element["type"] == "static_select"
            assert 1 <= slack_len(element["placeholder"]) <= PLACEHOLDER
            assert 1 <= len(element["options"]) <= SELECT_OPTIONS
            for option in element["options"]:
                assert option["text"]["type"] == "plain_text"
                assert 1 <= slack_len(option["text"]) <= OPTION_TEXT
                assert len(option["value"]) <= OPTION_VALUE
    for block in block_list:
        Block.parse(block).validate_json()  # type: ignore[union-attr]  # parse of a dict is a Block
    for text_object in text_objects(block_list):
        if text_object["type"] == "mrkdwn":
            assert_inert(text_object["text"])


# What we put inside <…> on purpose: user and channel mentions, dates. Anything else is a bug.
_CONTROL = re.compile(r"<(?:@[A-Z0-9]+|#[A-Z0-9]+|!date\^\d+\^[^|<>]+\|[^<>]+)>")
_ENTITY = re.compile(r"&(?:amp|lt|gt);")


def assert_inert(mrkdwn: str) -> None:
    """No `&`, `<` or `>` in mrkdwn except entities and our own mentions and dates."""
    rest = _ENTITY.sub("", _CONTROL.sub("", mrkdwn))
    assert not set("&<>") & set(rest), f"unescaped control character in {mrkdwn!r}"


def choices(message: dict[str, Any]) -> list[tuple[str, str, tuple[int, int]]]:
    """(kind, shown text, decoded value) of every label button and menu option."""
    found = []
    for element in elements_of(message["blocks"]):
        if ids.LABEL_ACTION_PATTERN.match(element["action_id"]):
            found.append(("button", element["text"]["text"], ids.decode_choice(element["value"])))
        elif ids.LABEL_MENU_PATTERN.match(element["action_id"]):
            for option in element["options"]:
                decoded = ids.decode_choice(option["value"])
                found.append(("option", option["text"]["text"], decoded))
    return found


def all_text(message: dict[str, Any]) -> str:
    return "\n".join(t["text"] for t in text_objects(message["blocks"]))


# --- ids --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("item_id", "label_index"), [(0, 0), (1, 2), (42, 999), (10**18 - 1, 7)])
def test_choice_round_trips(item_id: int, label_index: int) -> None:
    """encode_choice and decode_choice are inverse for any item id and label index."""
    assert ids.decode_choice(ids.encode_choice(item_id, label_index)) == (item_id, label_index)


@pytest.mark.parametrize(
    "garbage",
    ["", "1", "1:", ":1", "1:2:3", "-1:2", "1:-2", "01:2", "1:02", "a:b", "1:2\n", " 1:2",
     "1|2", "١:٢", "1.0:2", "1" * 19 + ":2", "{\"item\": 1}"],
)  # fmt: skip
def test_decode_choice_refuses_garbage(garbage: str) -> None:
    """Anything encode_choice cannot produce is a ValueError, including non-ASCII digits."""
    with pytest.raises(ValueError):
        ids.decode_choice(garbage)


def test_decode_choice_refuses_non_strings() -> None:
    """A missing value (None) from a payload is a ValueError, not a TypeError."""
    with pytest.raises(ValueError):
        ids.decode_choice(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("garbage", ["", "x", "-3", "03", "4:1", "7 ", "١٢"])
def test_decode_item_refuses_garbage(garbage: str) -> None:
    """Skip/Change/Override values decode only from encode_item's output."""
    with pytest.raises(ValueError):
        ids.decode_item(garbage)
    assert ids.decode_item(ids.encode_item(1234)) == 1234


@pytest.mark.parametrize("bad", [-1, True, 10**18])
def test_encode_refuses_impossible_numbers(bad: int) -> None:
    """Negative, boolean and oversized numbers are refused when encoding."""
    with pytest.raises(ValueError):
        ids.encode_choice(bad, 0)
    with pytest.raises(ValueError):
        ids.encode_item(bad)


def test_action_patterns_match_only_their_own_ids() -> None:
    """The label-button pattern never matches a menu id or the fixed action ids, and back."""
    assert ids.LABEL_ACTION_PATTERN.match(ids.label_action_id(12))
    assert ids.LABEL_MENU_PATTERN.match(ids.label_menu_action_id(3))
    others = [ids.label_menu_action_id(0), ids.ACTION_SKIP, ids.ACTION_CHANGE, ids.ACTION_LABEL]
    assert not any(ids.LABEL_ACTION_PATTERN.match(other) for other in others)
    assert not ids.LABEL_MENU_PATTERN.match(ids.label_action_id(0))
    assert not ids.LABEL_MENU_PATTERN.match(ids.ACTION_LABEL_MENU)


# --- review prompt ----------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 5, 6, 77, 105, 250, 1000])
@pytest.mark.parametrize("with_model", [True, False])
def test_every_label_is_reachable_exactly_once(count: int, with_model: bool) -> None:
    """Each label has one button or one option whose value decodes to (item, its index)."""
    labels = tuple(f"label {n:04d}" for n in range(count))
    message = blocks.review_prompt(modelled(labels) if with_model else prompt(labels))
    assert_valid(message["blocks"])
    found = choices(message)
    assert sorted(index for _, _, (_, index) in found) == list(range(count))
    assert {item for _, _, (item, _) in found} == {42}
    assert all(shown == labels[index] for _, shown, (_, index) in found)
    buttons = [c for c in found if c[0] == "button"]
    assert len(buttons) == min(5, count)
    menus = [e for e in elements_of(message["blocks"]) if e["type"] == "static_select"]
    assert len(menus) == -(-(count - len(buttons)) // SELECT_OPTIONS)


def test_buttons_follow_the_model_ranking() -> None:
    """With a model, the buttons are its five best labels, best first; the rest in task order."""
    labels = tuple("abcdefgh")
    ranked = ("g", "c", "h", "a", "e", "b", "d", "f")
    message = blocks.review_prompt(
        prompt(labels, ranked=ranked, guess="g", confidence=0.4, version=2)
    )
    found = choices(message)
    assert [shown for kind, shown, _ in found if kind == "button"] == ["g", "c", "h", "a", "e"]
    assert [shown for kind, shown, _ in found if kind == "option"] == ["b", "d", "f"]
    assert "Model's guess: g · 40 % · model v2" in all_text(message)


def test_without_a_model_the_first_labels_get_buttons() -> None:
    """No model: "no model yet", and the first five labels of the task order are buttons."""
    labels = tuple(f"l{n}" for n in range(9))
    message = blocks.review_prompt(prompt(labels))
    buttons = [shown for kind, shown, _ in choices(message) if kind == "button"]
    assert buttons == ["l0", "l1", "l2", "l3", "l4"]
    assert "no model yet" in all_text(message).lower()
    assert "%" not in all_text(message)


def test_skip_button_carries_the_item_id() -> None:
    """Skip is the last element and its value decodes to the item id."""
    message = blocks.review_prompt(prompt(("yes", "no"), item_id=9876))
    last = list(elements_of(message["blocks"]))[-1]
    assert last["action_id"] == ids.ACTION_SKIP
    assert ids.decode_item(last["value"]) == 9876


def test_item_text_is_literal_and_cannot_ping() -> None:
    """`<!channel>`, `*bold*` and `<@U1>` are shown as typed, in a plain_text object only."""
    text = "Hey <!channel> and <@U0123> look: *bold* _it_ `code` & <https://x.y|link>"
    message = blocks.review_prompt(prompt(("a", "b"), text=text))
    assert_valid(message["blocks"])
    item_objects = [t for t in text_objects(message["blocks"]) if t["text"] == text]
    assert [t["type"] for t in item_objects] == ["plain_text"]
    mrkdwn = [t["text"] for t in text_objects(message["blocks"]) if t["type"] == "mrkdwn"]
    assert not any("<!channel>" in t or "<@U0123>" in t for t in mrkdwn)
    assert message["text"].startswith("Review needed in tickets: Hey &lt;!channel&gt; and ")
    assert "<!" not in message["text"] and "<@" not in message["text"]


def test_long_text_is_cut_with_a_visible_note() -> None:
    """A 10,000-character text keeps its start, says how much was cut, and fits 3000."""
    text = "".join(chr(ord("a") + n % 26) for n in range(10_000))
    message = blocks.review_prompt(prompt(("a", "b"), text=text))
    assert_valid(message["blocks"])
    shown = message["blocks"][1]["text"]["text"]
    kept, note = shown.split("\n")
    assert text.startswith(kept)
    assert note == f"… ({10_000 - len(kept):,} more characters)"
    assert 2900 < len(shown) <= SECTION_TEXT
    assert all(slack_len(t) <= SECTION_TEXT for t in text_objects(message["blocks"]))


@pytest.mark.parametrize("unit", ["😀", "&", "<>", "日本語", "مرحبا"])
def test_long_text_of_wide_or_escaped_characters_fits(unit: str) -> None:
    """Emoji (two UTF-16 units) and characters Slack escapes still fit the 3000 limit."""
    message = blocks.review_prompt(prompt(("a", "b"), text=unit * 5000))
    assert_valid(message["blocks"])
    assert "more characters)" in message["blocks"][1]["text"]["text"]


def test_short_text_is_not_cut() -> None:
    """A text that fits is shown whole, without a note."""
    text = "x" * 2999
    message = blocks.review_prompt(prompt(("a", "b"), text=text))
    assert message["blocks"][1]["text"]["text"] == text


@pytest.mark.parametrize(
    "label",
    [
        "請求に関する問題",
        "🚀 launch / 🐛 bug",
        "استرداد الأموال",
        "a|b|c",
        "x & y <z>",
        "*bold* <!here>",
        "長" * 200,
        "🙂" * 200,
    ],
)
def test_unicode_and_separator_labels_survive(label: str) -> None:
    """Any label is shown (cut to 75 when long) and its value decodes back to that label."""
    labels = ("other", label, *(f"filler {n}" for n in range(10)))
    message = blocks.review_prompt(
        prompt(labels, ranked=(label, "other"), guess=label, confidence=0.3, version=1)
    )
    assert_valid(message["blocks"])
    found = choices(message)
    ours = [(shown, index) for _, shown, (_, index) in found if labels[index] == label]
    assert len(ours) == 1
    shown, index = ours[0]
    assert labels[index] == label
    assert shown == label or (shown.endswith("…") and label.startswith(shown[:-1]))


def test_long_labels_in_menus_are_cut_to_75() -> None:
    """Option texts and the multi-menu placeholders stay within Slack's limits."""
    labels = tuple(f"{n:03d} " + "ラベル" * 70 for n in range(240))
    message = blocks.review_prompt(prompt(labels))
    assert_valid(message["blocks"])
    placeholders = [
        e["placeholder"]["text"]
        for e in elements_of(message["blocks"])
        if e["type"] == "static_select"
    ]
    assert len(placeholders) == 3
    assert placeholders[0].startswith("Other label: 005 ")


def test_one_menu_is_called_other_label() -> None:
    """With up to 100 remaining labels there is one menu, "Other label…"."""
    message = blocks.review_prompt(prompt(tuple(f"l{n}" for n in range(50))))
    menus = [e for e in elements_of(message["blocks"]) if e["type"] == "static_select"]
    assert [m["placeholder"]["text"] for m in menus] == ["Other label…"]


def test_absurd_label_counts_still_give_a_valid_message() -> None:
    """Far past the 1000-label cap the message keeps to 50 blocks and says labels are missing."""
    labels = tuple(str(n) for n in range(120_000))
    message = blocks.review_prompt(prompt(labels))
    assert len(message["blocks"]) <= MESSAGE_BLOCKS
    assert "more labels cannot be shown" in all_text(message)
    assert list(elements_of(message["blocks"]))[-1]["action_id"] == ids.ACTION_SKIP


def test_item_reference_prefers_the_external_id() -> None:
    """The external id is shown when present, else the internal #id."""
    with_external = blocks.review_prompt(prompt(("a", "b"), external_id="TCK-77"))
    assert "Item TCK-77" in all_text(with_external)
    internal = blocks.review_prompt(prompt(("a", "b"), item_id=5))
    assert "Item #5" in all_text(internal)


def test_confidence_is_floored_to_a_percentage() -> None:
    """0.999 shows as 99 %, never 100 %, and 0.29 as 29 %."""
    high = blocks.review_prompt(prompt(("a", "b"), ranked=("a", "b"), guess="a", confidence=0.999))
    assert "99 %" in all_text(high)
    low = blocks.review_prompt(prompt(("a", "b"), ranked=("a", "b"), guess="a", confidence=0.29))
    assert "29 %" in all_text(low)


def test_fallback_text_is_short_and_single_line() -> None:
    """The notification text is the task and the first 100 characters, on one line."""
    message = blocks.review_prompt(prompt(("a", "b"), text="line one\nline two " + "z" * 500))
    assert message["text"].startswith("Review needed in tickets: line one line two zzz")
    assert message["text"].endswith("…")
    assert len(message["text"]) <= len("Review needed in tickets: ") + 101


def test_task_name_is_escaped_in_mrkdwn() -> None:
    """A task name can never form a mention in the mrkdwn parts."""
    data = blocks.PromptInput("<!here>", 1, None, "t", ("a", "b"), (), None, None, None)
    message = blocks.review_prompt(data)
    assert "&lt;!here&gt;" in all_text(message)
    assert "<!here>" not in all_text(message)


def test_change_prompt_names_whose_answer_changes() -> None:
    """Re-opening shows who answered and what, above the usual label buttons."""
    message = blocks.change_prompt(
        modelled(("a", "b", "c")), answered_by="U0ABC", previous_label="b"
    )
    assert_valid(message["blocks"])
    first = message["blocks"][0]
    assert first["elements"][0]["text"] == ":pencil2: Changing the answer of <@U0ABC>"
    assert first["elements"][1]["text"] == "was: b"
    assert len(choices(message)) == 3
    model = blocks.change_prompt(modelled(("a", "b")), answered_by=None)
    assert "Overriding the model's answer" in all_text(model)


# --- answered prompt --------------------------------------------------------------------------


def test_answered_prompt_shows_label_person_time_and_guess() -> None:
    """A person's answer: label, mention, Slack date, the model's guess, one Change button."""
    data = modelled(("billing", "bug", "feature"))  # the model guessed "feature"
    message = blocks.answered_prompt(data, label="bug", user_id="U123", answered_at=WHEN)
    assert_valid(message["blocks"])
    fields = message["blocks"][2]["fields"]
    assert fields[0] == {"type": "plain_text", "text": "Label: bug", "emoji": False}
    stamp = int(WHEN.timestamp())
    assert fields[1]["text"] == (
        f"by <@U123> · <!date^{stamp}^{{date_short_pretty}} {{time}}|2025-03-04 13:37 UTC>"
    )
    assert "Model v3 guessed feature at 62 %: the answer differs." in all_text(message)
    elements = list(elements_of(message["blocks"]))
    assert [e["action_id"] for e in elements] == [ids.ACTION_CHANGE]
    assert ids.decode_item(elements[0]["value"]) == 42
    assert choices(message) == []
    assert message["text"] == "tickets: bug, answered by <@U123>"


def test_answered_prompt_says_when_the_model_agreed() -> None:
    """Same label as the guess: "agreed"."""
    data = modelled(("billing", "bug", "feature"))
    message = blocks.answered_prompt(data, label="feature", user_id="U1", answered_at=WHEN)
    assert "Model v3 guessed feature at 62 %: agreed." in all_text(message)


def test_answered_prompt_without_a_model() -> None:
    """No guess: the message says there was no model yet."""
    message = blocks.answered_prompt(prompt(("a", "b")), label="a", user_id="U1", answered_at=WHEN)
    assert "no model yet" in all_text(message)


def test_answered_by_model_offers_override() -> None:
    """Resolved by the model: "resolved by model v8 at 93 %" and an Override button."""
    data = prompt(("a", "b"), ranked=("b", "a"), guess="b", confidence=0.93, version=8)
    message = blocks.answered_prompt(data, label="b", user_id="", answered_at=WHEN, by_model=True)
    assert_valid(message["blocks"])
    assert "resolved by model v8 at 93 % · <!date^" in all_text(message)
    elements = list(elements_of(message["blocks"]))
    assert [e["action_id"] for e in elements] == [ids.ACTION_OVERRIDE]
    assert ids.decode_item(elements[0]["value"]) == 42


def test_naive_and_offset_times_mean_the_same_instant() -> None:
    """A naive datetime is UTC (as SQLite returns it); an offset one is converted."""
    data = prompt(("a", "b"))
    naive = blocks.answered_prompt(
        data, label="a", user_id="U1", answered_at=WHEN.replace(tzinfo=None)
    )
    shifted = blocks.answered_prompt(
        data, label="a", user_id="U1", answered_at=WHEN.astimezone(timezone(timedelta(hours=5)))
    )
    assert naive["blocks"][2] == shifted["blocks"][2]
    assert f"<!date^{int(WHEN.timestamp())}^" in naive["blocks"][2]["fields"][1]["text"]


def test_odd_user_ids_are_not_turned_into_mentions() -> None:
    """Only Slack-shaped user ids become <@…>; anything else is escaped text."""
    message = blocks.answered_prompt(
        prompt(("a", "b")), label="a", user_id="<!channel>", answered_at=WHEN
    )
    assert "by &lt;!channel&gt;" in all_text(message)


# --- commands and App Home --------------------------------------------------------------------


def stats(**changes: Any) -> blocks.StatsView:
    values: dict[str, Any] = {
        "task_name": "tickets",
        "threshold": 0.8,
        "items_today": 12,
        "items_7d": 1530,
        "auto_share_7d": 0.645,
        "review_queue": 7,
        "answers_today": 3,
        "answers_7d": 41,
        "labels_stored": 1052,
        "labels_breakdown": "52 from Slack by 3 people, 1000 imported",
        "median_answer_seconds": 250.0,
        "top_reviewers": (("U1", 20), ("U2", 9)),
        "model_version": 8,
        "model_metrics": {"accuracy": 0.912, "macro_f1": 0.873, "ece": 0.021, "holdout_size": 300},
        "last_report_summary": "v8 promoted: macro-F1 0.85 → 0.87 <!channel>",
    }
    values.update(changes)
    return blocks.StatsView(**values)


def field_texts(message_blocks: list[dict[str, Any]]) -> list[str]:
    return [f["text"] for b in message_blocks for f in b.get("fields", [])]


def test_stats_blocks_show_the_figures() -> None:
    """Traffic, answers and model quality appear as short fields."""
    message = blocks.stats_blocks(stats())
    assert_valid(message["blocks"])
    fields = field_texts(message["blocks"])
    for expected in (
        "*Threshold*\n0.8",
        "*Waiting for review*\n7",
        "*Items*\n12 today\n1,530 in 7 days",
        "*Automatic (7 days)*\n64 %",
        "*Answers*\n3 today\n41 in 7 days",
        "*Labels stored*\n1,052: 52 from Slack by 3 people, 1000 imported",
        "*Median answer time*\n4 min",
        "*Model*\nv8",
        "*Accuracy*\n91 %",
        "*Macro-F1*\n0.87",
        "*Calibration error*\n0.021",
        "*Measured on*\n300 items",
    ):
        assert expected in fields
    text = all_text(message)
    assert "<@U1> 20, <@U2> 9" in text
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text


def test_stats_blocks_without_model_or_traffic() -> None:
    """No model and no data: "none yet" and "n/a" instead of numbers."""
    message = blocks.stats_blocks(
        stats(
            auto_share_7d=None,
            median_answer_seconds=None,
            model_version=None,
            model_metrics={},
            top_reviewers=(),
            last_report_summary=None,
        )
    )
    assert_valid(message["blocks"])
    fields = field_texts(message["blocks"])
    assert "*Automatic (7 days)*\nn/a" in fields
    assert "*Model*\nnone yet: every item goes to review" in fields
    assert "Top reviewers" not in all_text(message)


def test_home_view_fits_100_blocks_and_says_what_is_left() -> None:
    """Eighty tasks: a valid home view of at most 100 blocks that names how many are missing."""
    view = blocks.home_view([stats(task_name=f"task{n}") for n in range(80)])
    assert view["type"] == "home"
    assert_valid(view["blocks"], max_blocks=VIEW_BLOCKS)
    shown = sum(
        "*task" in t["text"] for t in text_objects(view["blocks"]) if "threshold" in t["text"]
    )
    assert f"…and {80 - shown} more tasks" in all_text(view)


def test_home_view_of_a_few_tasks_shows_them_all() -> None:
    """Two tasks: both appear with their fields; no task: a hint to create one."""
    view = blocks.home_view([stats(), stats(task_name="reviews", model_version=None)])
    assert_valid(view["blocks"], max_blocks=VIEW_BLOCKS)
    text = all_text(view)
    assert "*tickets* · threshold 0.8" in text and "*reviews* · threshold 0.8" in text
    assert "more tasks" not in text
    empty = blocks.home_view([])
    assert "No tasks yet" in all_text(empty)


def test_tasks_blocks_list_each_task() -> None:
    """Name, channel link, label count, threshold, model and queue of each task."""
    message = blocks.tasks_blocks(
        [
            blocks.TaskSummary("tickets", 77, "C0123ABCD", 0.8, 8, 12),
            blocks.TaskSummary("reviews", 3, None, 0.95, None, 0),
        ]
    )
    assert_valid(message["blocks"])
    text = all_text(message)
    assert "*tickets* · <#C0123ABCD>\n77 labels · threshold 0.8 · model v8 · 12 waiting" in text
    assert "*reviews* · no channel\n3 labels · threshold 0.95 · no model · 0 waiting" in text


def test_tasks_blocks_stay_within_50_blocks() -> None:
    """Thousands of tasks: at most 50 blocks, and the reply says how many were left out."""
    many = [blocks.TaskSummary(f"task{n:05d}", 3, "C0123ABCD", 0.8, 1, 0) for n in range(5000)]
    message = blocks.tasks_blocks(many)
    assert_valid(message["blocks"])
    match = re.search(r"…and ([\d,]+) more tasks", all_text(message))
    assert match is not None
    listed = all_text(message).count("labels · threshold")
    assert listed + int(match.group(1).replace(",", "")) == 5000
    assert blocks.tasks_blocks([])["blocks"][0]["text"]["text"].startswith("No tasks yet")


def test_help_lists_every_subcommand() -> None:
    """`/hitl help` names each command word with its usage."""
    message = blocks.help_blocks()
    assert_valid(message["blocks"])
    text = all_text(message)
    for word in ids.COMMAND_WORDS:
        assert f"`{ids.SLASH_COMMAND} {word}" in text
    assert "`/hitl threshold [task] [value]`" in text


def test_threshold_announcement() -> None:
    """Who changed which threshold from what to what, and what it means for the channel."""
    up = blocks.threshold_changed_blocks("tickets", 0.8, new=0.9, user_id="U42")
    assert_valid(up["blocks"])
    assert up["blocks"][0]["text"]["text"] == (
        ":level_slider: <@U42> changed the threshold of *tickets* from *0.8* to *0.9*."
    )
    assert "More items will come here" in all_text(up)
    down = blocks.threshold_changed_blocks("tickets", 0.9, new=0.7, user_id="U42")
    assert "Fewer items will come here" in all_text(down)
    assert up["text"] == "Threshold of tickets: 0.8 → 0.9"


def test_ephemeral_text_is_one_section() -> None:
    """A reply is one mrkdwn section with the same fallback text, cut to 3000."""
    message = blocks.ephemeral_text("Threshold of *tickets* is 0.8.")
    assert message == {
        "text": "Threshold of *tickets* is 0.8.",
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "Threshold of *tickets* is 0.8."},
            }
        ],
    }
    assert_valid(blocks.ephemeral_text("x" * 5000)["blocks"])


# --- retrain report ---------------------------------------------------------------------------


def test_report_message_shows_the_figures_within_slack_limits() -> None:
    message = blocks.report_blocks(sample_report())
    assert_valid(message["blocks"])
    shown = all_text(message)
    for figure in (
        "model v7 → v8 promoted",
        "0.710 → 0.780",
        "+0.07",
        "41% → 55%",
        "81% → 86% [82-89%] on 300 answers",
        "0.780 → 0.840 [0.80-0.87]",
        "120\n100 from Slack by 4 people\n20 imported",
        "12 waiting items",
    ):
        assert figure in shown, figure
    assert message["blocks"][0]["text"]["text"] == "Retrain: tickets <&>"  # plain text: literal
    assert "refund &lt;b&gt;" in shown and "<b>" not in shown
    assert message["text"].startswith("model v7 → v8 promoted; new labels since the last model")


@pytest.mark.parametrize("status", [RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.COLD])
def test_reports_without_figures_are_the_headline_alone(status: RunStatus) -> None:
    report = RetrainReport("t <x>", status, f"t <x>: {status.value}")
    message = blocks.report_blocks(report)
    assert_valid(message["blocks"])
    assert len(message["blocks"]) == 2
    assert message["text"] == f"t &lt;x&gt;: t &lt;x&gt;: {status.value}"


@pytest.mark.parametrize("unit", ["&", "<", ">", "&<>", "a&"])
def test_report_text_full_of_entities_is_cut_between_entities(unit: str) -> None:
    """Labels, headline and reason far past every budget: cut before escaping, never inside."""
    long = unit * 4000
    report = sample_report(
        headline=long,
        reason=long,
        movers=Movers(
            gains=tuple(LabelMove(long + str(i), 0.1, 0.9) for i in range(3)),
            losses=tuple(LabelMove(str(i) + long, 0.9, 0.1) for i in range(3)),
        ),
    )
    message = blocks.report_blocks(report)
    assert_valid(message["blocks"])  # every mrkdwn text inert: a split `&amp;` leaves a bare `&`
    mrkdwn = [t["text"] for t in text_objects(message["blocks"]) if t["type"] == "mrkdwn"]
    for text in [message["text"], *mrkdwn]:
        assert not re.search(r"&(?!amp;|lt;|gt;)", text), text[-40:]
    movers = next(
        b for b in message["blocks"] if "Labels that moved" in b.get("text", {}).get("text", "")
    )
    assert movers["text"]["text"].count("F1 ") == 6  # every mover kept its figures
    cut = [text for text in mrkdwn if blocks.escape(unit) * 3 in text]
    assert len(cut) == 3 and all("…" in text for text in cut)  # headline, movers, reason


def test_section_backstop_never_splits_an_entity() -> None:
    escaped = blocks.escape("&" * 3000)
    section = blocks._section(escaped)
    text = section["text"]["text"]
    assert text.endswith("…") and len(text) <= SECTION_TEXT
    assert text[:-1] == "&amp;" * ((len(text) - 1) // 5)


# --- trust: spot checks, votes, escalation, target precision -----------------------------------


def spot_check(labels: tuple[str, ...], *, text: str = "refund please") -> blocks.PromptInput:
    """A spot check of an item the model answered at 97 %, ranking labels in reverse order."""
    return replace(modelled(labels, text=text), confidence=0.97, spot_check=True)


def test_a_spot_check_hides_the_models_answer() -> None:
    """No guess, no confidence, no model version; the buttons follow the task's label order."""
    labels = ("billing", "bug", "feature", "refund", "login", "other", "spam")
    data = spot_check(labels)
    assert data.guess == "spam" and data.ranked_labels[0] == "spam"
    message = blocks.review_prompt(data)
    assert_valid(message["blocks"])
    shown = all_text(message) + "\n" + message["text"]
    assert "%" not in shown and "97" not in shown
    assert "guess" not in shown.lower() and "model v" not in shown.lower()
    assert "Spot check" in shown and message["text"].startswith("Spot check in tickets: ")
    buttons = [text for kind, text, _ in choices(message) if kind == "button"]
    assert buttons == list(labels[:5])
    assert [text for kind, text, _ in choices(message) if kind == "option"] == ["other", "spam"]


def test_a_change_of_a_spot_check_keeps_the_model_hidden() -> None:
    """Re-opening a spot check for a change shows no guess either."""
    message = blocks.change_prompt(spot_check(("a", "b", "c")), answered_by="U0ABC")
    assert "97" not in all_text(message) and "guess" not in all_text(message).lower()
    assert [text for kind, text, _ in choices(message)] == ["a", "b", "c"]


def test_an_item_waiting_for_votes_says_how_many_it_has_not_which() -> None:
    """ "1 of 2 agreeing answers so far", buttons kept, and no label named as someone's pick."""
    message = blocks.review_prompt(replace(modelled(("a", "b")), votes_needed=2, answers_so_far=1))
    assert_valid(message["blocks"])
    assert "1 of 2 agreeing answers so far." in all_text(message)
    assert len(choices(message)) == 2
    single = blocks.review_prompt(modelled(("a", "b")))
    assert "answers so far" not in all_text(single)


def test_an_escalated_item_says_an_admin_decides() -> None:
    data = replace(modelled(("a", "b")), votes_needed=2, answers_so_far=2, escalated=True)
    text = all_text(blocks.review_prompt(data))
    assert "Reviewers disagree (2 answers): an admin's answer decides" in text


def test_an_answer_several_people_agreed_on_names_them() -> None:
    message = blocks.answered_prompt(
        modelled(("a", "b")),
        label="a",
        user_id="U0BOB",
        answered_at=WHEN,
        agreed_by=("U0ANN", "U0BOB"),
    )
    assert "by <@U0BOB> and <@U0ANN> · <!date^" in all_text(message)


def test_escalation_mentions_the_admins_and_shows_each_answer() -> None:
    """Admins as mentions, the item text as plain text, person → label side by side."""
    data = prompt(("a <b>", "c"), text="is <!channel> a or c?", external_id="T-9")
    message = blocks.escalation_blocks(
        data, answers=[("U0ANN", "a <b>"), ("U0BOB", "c")], admins=["U0ADM2", "U0ADM1"]
    )
    assert_valid(message["blocks"])
    text = all_text(message)
    assert "<@U0ADM1> <@U0ADM2>: please decide by answering the prompt" in text
    assert "*<@U0ANN>*\na &lt;b&gt;" in field_texts(message["blocks"])
    assert "*<@U0BOB>*\nc" in field_texts(message["blocks"])
    item = [t for t in text_objects(message["blocks"]) if t["text"] == "is <!channel> a or c?"]
    assert [t["type"] for t in item] == ["plain_text"]
    assert "Item T-9" in text
    assert "<@U0ADM1>" in message["text"]


def test_escalation_without_admins_says_so() -> None:
    data = replace(prompt(("a", "b")), votes_needed=3)
    message = blocks.escalation_blocks(data, answers=[("U0A", "a"), ("U0B", "b")], admins=[])
    text = all_text(message)
    assert "No admins are set (`HITL_ADMINS`)" in text
    assert "resolves once 3 answers agree" in text


def test_escalation_of_many_answers_keeps_ten_fields() -> None:
    answers = [(f"U0R{n:02d}", f"label {n}") for n in range(14)]
    message = blocks.escalation_blocks(prompt(("a",)), answers=answers, admins=["U0A"])
    fields = field_texts(message["blocks"])
    assert len(fields) == 10 and fields[-1] == "*…*\nand 5 more"


def test_precision_alert_gives_the_figures_and_what_to_do() -> None:
    message = blocks.precision_alert_blocks(
        "tickets", LivePrecision(0.5, 0.12, 0.88, 8), target=0.95, threshold=0.8
    )
    assert_valid(message["blocks"])
    text = all_text(message)
    assert "50 % [12-88 %] right on 8 spot checks" in text
    assert "against a target of 95 %" in text
    assert "The threshold (0.8 now) will be raised at the next retrain" in text
    assert "`/hitl threshold tickets VALUE`" in text
    assert message["text"] == "Spot checks of tickets: 50 % right, target 95 %"


def test_threshold_shown_by_hand_or_for_a_target() -> None:
    by_hand = blocks.threshold_shown_blocks("tickets", 0.8)
    assert by_hand["text"] == "Threshold of *tickets* is 0.8."
    chosen = blocks.threshold_shown_blocks(
        "tickets", 0.8712, target=0.95, lower_bound=0.953, reason="a <b>"
    )
    assert chosen["text"] == (
        "*tickets* aims for 95 % precision: threshold 0.8712 "
        "(precision ≥ 95.3 % on held-out answers). a &lt;b&gt;."
    )
    waiting = blocks.threshold_shown_blocks("tickets", None, target=0.99)
    assert waiting["text"] == "*tickets* aims for 99 % precision: nothing is automated yet."


def test_target_precision_reply_shows_threshold_and_bound_or_why_not() -> None:
    chosen = blocks.target_precision_blocks(
        "tickets", 0.95, threshold=0.87, lower_bound=0.953, reason="reason <x>", user_id="U0A"
    )
    text = all_text(chosen)
    assert "<@U0A> set a target precision of *95 %* for *tickets*." in text
    assert "Threshold *0.87* (precision ≥ 95.3 % on held-out answers)" in text
    assert "reason <x>" in text  # plain text: shown literally
    refused = blocks.target_precision_blocks(
        "tickets", 0.975, threshold=None, lower_bound=None, reason=None, user_id="U0A"
    )
    assert "*97.5 %*" in all_text(refused)
    assert "*Nothing is automated yet*" in all_text(refused)
    assert refused["text"] == "Target precision of tickets: 97.5 %, nothing automated yet"


def preview_view(**changes: Any) -> blocks.PreviewView:
    values: dict[str, Any] = {
        "task_name": "tickets",
        "threshold": 0.85,
        "current_threshold": 0.9,
        "model_version": 4,
        "items": 700,
        "days": 7,
        "review_share": 0.3,
        "review_per_day": 30.0,
        "auto_per_day": 70.0,
        "auto_precision": LivePrecision(0.961, 0.94, 0.976, 800),
    }
    values.update(changes)
    return blocks.PreviewView(**values)


def test_preview_shows_work_and_expected_precision_and_changes_nothing() -> None:
    message = blocks.preview_blocks(preview_view())
    assert_valid(message["blocks"])
    text = all_text(message)
    assert "*What if* the threshold of *tickets* were *0.85*? (now 0.9; model v4" in text
    assert "*To people*\n30 % · ≈ 30 a day" in field_texts(message["blocks"])
    assert "*Automatic*\n70 % · ≈ 70 a day" in field_texts(message["blocks"])
    assert "96.1 % [94-97.6 %]\non 800 held-out answers above it" in text
    assert "A preview changes nothing" in text
    empty = blocks.preview_blocks(preview_view(review_share=None, items=0))
    assert "No items in the last 7 days" in all_text(empty)
    unknown = blocks.preview_blocks(preview_view(auto_precision=LivePrecision(None, 0, 1, 0)))
    assert "unknown: no held-out answers above this threshold" in all_text(unknown)


def test_spot_check_and_votes_replies() -> None:
    changed = blocks.spot_checks_blocks(
        "tickets", 0.05, old=0.02, live=LivePrecision(0.9, 0.8, 0.96, 70)
    )
    assert "Spot checks of *tickets*: 2 % → *5 %* of automatic answers." in all_text(changed)
    assert "90 % [80-96 %] right on 70 spot checks" in all_text(changed)
    shown = blocks.spot_checks_blocks("tickets", 0.025)
    assert "*2.5 %*" in all_text(shown) and "no spot checks answered yet" in all_text(shown)
    votes = blocks.votes_blocks("tickets", 2, old=1)
    assert "Votes of *tickets*: 1 → *2*: an item is resolved once 2 people" in all_text(votes)
    assert "first answer resolves" in all_text(blocks.votes_blocks("tickets", 1))


def test_budget_replies() -> None:
    changed = blocks.budget_blocks("tickets", 50, posted_today=3, old=None, changed=True)
    assert "Daily prompt budget of *tickets*: no limit → *50 a day*" in all_text(changed)
    assert "go out the next day (3 prompts posted today)" in all_text(changed)
    shown = blocks.budget_blocks("tickets", None, posted_today=0)
    assert "*no limit*: every item that needs a person is posted" in all_text(shown)


def test_digest_says_how_many_wait_and_for_how_long() -> None:
    digest = blocks.digest_blocks(
        "tickets", waiting=14, in_channel=9, oldest_since=WHEN - timedelta(hours=30), now=WHEN
    )
    text = all_text(digest)
    assert "*14 items* are waiting for an answer (the oldest has waited 30.0 h" in text
    assert "9 in this channel, 5 still to come" in text
    assert digest["text"] == "tickets: 14 items waiting for an answer"
    assert_slack_accepts(digest["blocks"])
    one = blocks.digest_blocks("t", waiting=1, in_channel=1, oldest_since=WHEN, now=WHEN)
    assert "*1 item* is waiting for an answer (the oldest has waited 0 s)." in all_text(one)
    hostile = blocks.digest_blocks(
        HOSTILE[:80], waiting=2, in_channel=0, oldest_since=None, now=WHEN
    )
    assert "<!channel>" not in json.dumps(hostile) and "none posted yet" in all_text(hostile)
    assert_slack_accepts(hostile["blocks"])


def test_the_pointer_left_by_a_repost_has_no_buttons() -> None:
    pointer = blocks.reposted_pointer("tickets", HOSTILE)
    assert [block["type"] for block in pointer["blocks"]] == ["context", "section"]
    assert "Asked again below* · tickets" in all_text(pointer)
    moved = blocks.reposted_pointer("tickets", "a text", moved_to="C0OTHER01")
    assert "Asked again in <#C0OTHER01>" in all_text(moved)
    assert pointer["blocks"][1]["text"]["type"] == "plain_text"
    assert len(pointer["blocks"][1]["text"]["text"]) <= 300
    assert_slack_accepts(pointer["blocks"])


def reviewers_view(*, count: int) -> blocks.ReviewersView:
    people = tuple(
        blocks.ReviewerLine(
            user=f"U0R{n:04d}",
            answers=100 - n % 100,
            skips=n % 3,
            resolved=40,
            agreed_final=38,
            agree_final_interval=(0.83, 0.99),
            spot_checks=n % 5,
            confirmed_model=n % 5 // 2,
        )
        for n in range(count)
    )
    return blocks.ReviewersView("tickets", people, "cohen_kappa", 0.8123, 30, 2)


def test_reviewers_show_each_person_and_the_team() -> None:
    message = blocks.reviewers_blocks(reviewers_view(count=3))
    assert_valid(message["blocks"])
    text = all_text(message)
    assert (
        "<@U0R0001>: 99 answers, 1 skip · gave the final label 95 % [83-99 %] of 40 times"
        " · 1 spot check, confirmed the model in 0 %"
    ) in text
    assert "<@U0R0000>: 100 answers · " in text and "no spot checks" in text
    assert "*Team agreement*: Cohen's kappa 0.81 on 30 items" in text


def test_hundreds_of_reviewers_fit_one_message() -> None:
    message = blocks.reviewers_blocks(reviewers_view(count=2000))
    assert_valid(message["blocks"])
    match = re.search(r"…and ([\d,]+) more reviewers", all_text(message))
    assert match is not None
    listed = all_text(message).count("<@U0R")
    assert listed + int(match.group(1).replace(",", "")) == 2000
    assert "Team agreement" in all_text(message)


def test_the_clicker_hears_why_the_item_is_still_open() -> None:
    assert "1 more agreeing answer is needed" in blocks.votes_waiting_text(needed=2, agreeing=1)
    assert "2 more agreeing answers are needed" in blocks.votes_waiting_text(needed=3, agreeing=1)
    sure = blocks.votes_waiting_text(needed=2, agreeing=1, second_opinion=True)
    assert "very sure of a different label" in sure and "second person" in sure
    assert "admins" in blocks.votes_waiting_text(needed=2, agreeing=1, escalated=True)


def precision_stats(**changes: Any) -> blocks.StatsView:
    values: dict[str, Any] = {
        "threshold": 0.87,
        "target_precision": 0.95,
        "precision_lower_bound": 0.953,
        "automating": True,
        "threshold_reason": "690 of 700 held-out answers above 0.870 were right",
        "auto_precision": LivePrecision(0.9, 0.8, 0.96, 60),
        "spot_check_rate": 0.02,
        "votes_required": 2,
    }
    values.update(changes)
    return stats(**values)


def test_stats_in_precision_mode_show_target_threshold_bound_and_spot_checks() -> None:
    message = blocks.stats_blocks(precision_stats())
    assert_valid(message["blocks"])
    fields = field_texts(message["blocks"])
    assert "*Threshold*\n0.87 for 95 % precision\nprecision ≥ 95.3 % on held-out answers" in fields
    assert "*Spot checks*\n2 % of automatic answers" in fields
    assert "*Automatic answers, checked*\n90 % [80-96 %] right on 60 spot checks\ntarget 95 %" in (
        fields
    )
    assert "*Votes per item*\n2 agreeing answers decide" in fields
    assert "below the target" not in all_text(message)


def test_stats_say_why_nothing_is_automated() -> None:
    message = blocks.stats_blocks(
        precision_stats(threshold=None, automating=False, threshold_reason="not enough <x>")
    )
    assert_valid(message["blocks"])
    assert (
        "*Threshold*\nnot automating yet (target 95 % precision)\nnot enough &lt;x&gt;"
        in field_texts(message["blocks"])
    )
    home = blocks.home_view([precision_stats(threshold=None, automating=False)])
    assert "*tickets* · not automating yet (target 95 % precision)" in all_text(home)
    listed = blocks.tasks_blocks([blocks.TaskSummary("t", 2, None, None, 1, 0, 0.95)])
    assert "2 labels · not automating yet (target 95 % precision) · model v1" in all_text(listed)


def test_stats_warn_when_spot_checks_fall_below_the_target() -> None:
    message = blocks.stats_blocks(
        precision_stats(auto_precision=LivePrecision(0.5, 0.2, 0.8, 10), precision_alarm=True)
    )
    assert_valid(message["blocks"])
    warning = message["blocks"][1]["text"]["text"]
    assert warning.startswith(":rotating_light: *Spot checks put the automatic answers below")
    assert "50 % [20-80 %] right on 10 spot checks against 95 %" in warning
    assert "`/hitl threshold tickets VALUE`" in warning
    assert "spot checks below the target precision" in message["text"]
    home = blocks.home_view([precision_stats(precision_alarm=True)])
    assert "below the target" in all_text(home)


def test_threshold_announcement_from_nothing_automated() -> None:
    message = blocks.threshold_changed_blocks("t", None, new=0.9, user_id="U0A")
    assert "from *nothing automated* to *0.9*" in all_text(message)
    assert "Fewer items will come here" in all_text(message)


def threshold_figures(**changes: Any) -> ThresholdFigures:
    values: dict[str, Any] = {
        "target_precision": 0.95,
        "threshold": 0.8,
        "precision_lower_bound": 0.953,
        "evidence": 1200,
        "reason": "690 of 700 held-out answers above 0.800 were right",
    }
    values.update(changes)
    return ThresholdFigures(**values)


def test_report_shows_intervals_the_paired_comparison_target_and_spot_checks() -> None:
    message = blocks.report_blocks(sample_report())
    fields = field_texts(message["blocks"])
    assert len(fields) <= FIELDS
    assert "*Accuracy (holdout)*\n81% → 86% [82-89%] on 300 answers" in fields
    assert (
        "*Paired on the same 300 answers*\nv7 81% → v8 86%\ndifference +2.0 to +8.0 points\n"
        "McNemar p = 0.017: 25 right only by v8, 10 only by v7"
    ) in fields
    assert (
        "*Target precision 95%*\nthreshold 0.8, precision ≥ 95.3%\n"
        "690 of 700 held-out answers above 0.800 were right; precision ≥ 0.953"
    ) in fields
    assert "*Spot checks*\n96% [90-99%] right on 60 checks" in fields


def test_report_fields_without_trust_figures_or_a_threshold() -> None:
    """Older reports: no interval, comparison or target; a missing threshold is said so."""
    report = sample_report(
        comparison=None,
        threshold_choice=threshold_figures(threshold=None, precision_lower_bound=None),
        auto_precision=None,
        threshold=None,
    )
    fields = field_texts(blocks.report_blocks(report)["blocks"])
    assert any(f.startswith("*Automatic (no threshold yet)*") for f in fields)
    assert any(f.startswith("*Target precision 95%*\nnothing automated yet") for f in fields)
    assert not any("Paired" in f or "Spot checks" in f for f in fields)
    paired = sample_report(
        comparison=Comparison(50, 0.9, 0.9, None, 0, 0, 1.0), threshold_choice=None
    )
    assert "McNemar p = 1: 0 right only by v8" in "\n".join(
        field_texts(blocks.report_blocks(paired)["blocks"])
    )


# --- what Slack itself would say ---------------------------------------------------------------

HOSTILE = (
    "<!channel> <@U0BOSS> *bold* _it_ ~s~ `c` &amp; & < > :skull: \u202e\u0000 \U0001f600 " * 60
)
MANY_LABELS = tuple(f"label {n} <&>" for n in range(230))


def assert_slack_accepts(blocks_out: list[dict[str, Any]], *, max_blocks: int = 50) -> None:
    """slack_sdk's models parse each block back to the same JSON and validate it, and the
    stand-in (strict as Slack: no unknown properties, no blank text) has nothing to refuse."""
    parsed = Block.parse_all(blocks_out)
    assert len(parsed) == len(blocks_out)
    for model, block in zip(parsed, blocks_out, strict=True):
        model.validate_json()
        # A property the SDK does not know would be dropped here: Slack would refuse it.
        assert model.to_dict() == block
    assert validate_blocks(blocks_out, max_blocks=max_blocks) is None


def _prompts() -> dict[str, dict[str, Any]]:
    few, many = ("refund", "bug"), MANY_LABELS
    answered_at = WHEN
    return {
        "few labels, no model": blocks.review_prompt(prompt(few)),
        "few labels, modelled": blocks.review_prompt(modelled(few)),
        "many labels": blocks.review_prompt(modelled(many)),
        "1000 labels": blocks.review_prompt(modelled(tuple(f"l{n}" for n in range(1000)))),
        "long text": blocks.review_prompt(modelled(few, text="word " * 5000)),
        "hostile text and labels": blocks.review_prompt(
            prompt(
                (HOSTILE[:300], " ", "&" * 200),
                text=HOSTILE,
                external_id=HOSTILE[:250],
                guess=" ",
                confidence=0.5,
            )
        ),
        "blank text": blocks.review_prompt(prompt(few, text=" \n\t ")),
        "answered": blocks.answered_prompt(
            modelled(many, text=HOSTILE), label=HOSTILE, user_id="U0ALICE", answered_at=answered_at
        ),
        "resolved by the model": blocks.answered_prompt(
            modelled(few), label="refund", user_id="model", answered_at=answered_at, by_model=True
        ),
        "change": blocks.change_prompt(
            modelled(many, text=HOSTILE), answered_by="U0ALICE", previous_label=HOSTILE
        ),
        "override": blocks.change_prompt(modelled(few), answered_by=None),
        "help": blocks.help_blocks(),
        "tasks": blocks.tasks_blocks(
            [blocks.TaskSummary(HOSTILE[:200], 3, "C0123ABCD", 0.8, 2, 5)]
            + [blocks.TaskSummary(f"t{n}", 3, None, 0.5, None, 0) for n in range(300)]
        ),
        "no tasks": blocks.tasks_blocks([]),
        "stats": blocks.stats_blocks(stats()),
        "hostile stats": blocks.stats_blocks(
            stats(task_name=HOSTILE[:300], last_report_summary=HOSTILE, labels_breakdown=" ")
        ),
        "bare stats": blocks.stats_blocks(
            stats(model_version=None, model_metrics={}, top_reviewers=(), last_report_summary=None)
        ),
        "report": blocks.report_blocks(sample_report()),
        "hostile report": blocks.report_blocks(
            sample_report(headline=HOSTILE, reason=HOSTILE, task=HOSTILE[:200])
        ),
        "skipped report": blocks.report_blocks(
            RetrainReport("t", RunStatus.SKIPPED, "t: nothing new")
        ),
        "threshold up": blocks.threshold_changed_blocks("t <&>", 0.5, new=0.9, user_id="U0A"),
        "threshold same": blocks.threshold_changed_blocks("t", 0.5, new=0.5, user_id="import"),
        "ephemeral": blocks.ephemeral_text("Not saved &amp; please click again"),
        "spot check": blocks.review_prompt(spot_check(MANY_LABELS, text=HOSTILE)),
        "waiting for votes": blocks.review_prompt(
            replace(modelled(few), votes_needed=3, answers_so_far=2)
        ),
        "escalated": blocks.review_prompt(
            replace(modelled(few), votes_needed=2, answers_so_far=2, escalated=True)
        ),
        "answered by several": blocks.answered_prompt(
            modelled(few),
            label="refund",
            user_id="U0ALICE",
            answered_at=answered_at,
            agreed_by=("U0BOB", "U0ALICE", HOSTILE[:50]),
        ),
        "escalation": blocks.escalation_blocks(
            prompt(MANY_LABELS, text=HOSTILE, external_id=HOSTILE[:250]),
            answers=[(f"U0R{n}", HOSTILE[:300]) for n in range(25)],
            admins=["U0ADMIN", HOSTILE[:30]],
        ),
        "escalation without admins": blocks.escalation_blocks(
            prompt(few), answers=[("U0A", "refund"), ("U0B", "bug")], admins=[]
        ),
        "precision alert": blocks.precision_alert_blocks(
            HOSTILE[:200], LivePrecision(0.5, 0.1, 0.9, 8), target=0.95, threshold=0.8
        ),
        "target precision": blocks.target_precision_blocks(
            HOSTILE[:200],
            0.95,
            threshold=0.87,
            lower_bound=0.953,
            reason=HOSTILE,
            user_id="U0ADMIN",
        ),
        "target not supported": blocks.target_precision_blocks(
            "t", 0.99, threshold=None, lower_bound=None, reason=None, user_id="U0ADMIN"
        ),
        "preview": blocks.preview_blocks(preview_view()),
        "preview without items": blocks.preview_blocks(
            preview_view(items=0, review_share=None, current_threshold=None)
        ),
        "spot checks": blocks.spot_checks_blocks(
            HOSTILE[:200], 0.02, old=0.05, live=LivePrecision(0.9, 0.8, 0.96, 70)
        ),
        "votes": blocks.votes_blocks(HOSTILE[:200], 2, old=1),
        "threshold shown": blocks.threshold_shown_blocks(
            HOSTILE[:200], 0.9, target=0.95, lower_bound=0.951, reason=HOSTILE
        ),
        "reviewers": blocks.reviewers_blocks(reviewers_view(count=500)),
        "no reviewers": blocks.reviewers_blocks(reviewers_view(count=0)),
        "precision stats": blocks.stats_blocks(precision_stats(task_name=HOSTILE[:300])),
        "stats not automating": blocks.stats_blocks(
            precision_stats(threshold=None, automating=False, threshold_reason=HOSTILE)
        ),
        "report with no threshold": blocks.report_blocks(
            sample_report(threshold=None, threshold_choice=threshold_figures(threshold=None))
        ),
        "report with hostile reason": blocks.report_blocks(
            sample_report(threshold_choice=threshold_figures(reason=HOSTILE))
        ),
    }


@pytest.mark.parametrize("name", list(_prompts()))
def test_slack_sdk_models_accept_every_message(name: str) -> None:
    message = _prompts()[name]
    assert message["text"].strip()
    assert_slack_accepts(message["blocks"])


@pytest.mark.parametrize("tasks", [0, 1, 3, 60])
def test_slack_sdk_view_model_accepts_the_app_home(tasks: int) -> None:
    view = blocks.home_view(
        [stats(task_name=f"{HOSTILE[:40]} {n}", last_report_summary=HOSTILE) for n in range(tasks)]
    )
    model = View(**view)
    model.validate_json()
    assert model.to_dict() == view
    assert_slack_accepts(view["blocks"], max_blocks=VIEW_BLOCKS)
