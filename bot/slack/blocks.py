"""Block Kit builders: pure functions from small frozen inputs to message and view dicts.

No I/O and no Slack client here; listeners, the poster and the reporting code call these and
send the result. Every builder stays inside Slack's documented limits (Block Kit reference):
50 blocks per message and 100 per view, 3000 characters per section text, 10 fields of 2000
characters per section, 25 elements per actions block, 75 characters per button or option text,
150 per placeholder or header, 100 options per static select.

Untrusted text (item texts, labels, external ids, report summaries) is shown two ways:

* as a `plain_text` text object wherever a block accepts one (the item text, buttons, options,
  the label of an answer). Slack renders plain text literally: `*bold*` stays `*bold*` and
  `<!channel>` is neither a mention nor a ping. mrkdwn has no way to escape `*`, `_`, `~` or
  backquotes, which is why the item text is never put in a mrkdwn object.
* inside mrkdwn only after `escape` (`&`, `<`, `>` and nothing else, as Slack documents), so it
  can never form a mention, link or date; it may still render bold or italic.

Lengths are measured conservatively, as UTF-16 code units of the escaped text: an emoji counts
twice and `&` five times. Slack stores plain text escaped, and we do not rely on which of the
two forms its limits count, so a text that fits here fits there.
"""

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.report import (
    Comparison,
    HoldoutMetrics,
    LivePrecision,
    RecentTraffic,
    RetrainReport,
    ThresholdFigures,
    Traffic,
    report_lines,
)
from bot.slack import ids
from bot.states import RunStatus

Block = dict[str, Any]
Message = dict[str, Any]

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
SECTION_TEXT_LIMIT = 3000
MAX_FIELDS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_CONTEXT_ELEMENTS = 10
ELEMENT_TEXT_LIMIT = 75  # button text, option text
PLACEHOLDER_LIMIT = 150
HEADER_LIMIT = 150
MAX_SELECT_OPTIONS = 100
LABEL_BUTTONS = 5

_ELLIPSIS = "…"
_FALLBACK_SNIPPET = 100
_USER_ID = re.compile(r"[A-Z0-9]{2,40}")
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,30}")
_ESCAPED_COST = {"&": 5, "<": 4, ">": 4}
_OPEN_MARKUP = re.compile(r"(&[a-z]*|<[^>]*)$")  # an entity or `<…>` cut before its end


# --- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptInput:
    """What a review message shows about one item.

    `labels` is the task's full ordered label set; `ranked_labels` the same labels ordered by
    model probability, best first (empty when the task has no model yet). A spot check shows
    none of the model's answer: no guess, no confidence, buttons in the task's label order.
    """

    task_name: str
    item_id: int
    external_id: str | None
    text: str
    labels: tuple[str, ...]
    ranked_labels: tuple[str, ...]
    guess: str | None
    confidence: float | None
    model_version: int | None
    spot_check: bool = False
    votes_needed: int = 1  # agreeing answers that resolve the item
    answers_so_far: int = 0  # label answers given so far (who chose what is not shown)
    escalated: bool = False  # reviewers disagreed; an admin's answer decides


@dataclass(frozen=True)
class TaskSummary:
    """One line of `/hitl tasks`."""

    name: str
    labels_count: int
    channel: str | None
    threshold: float | None  # None: a target precision the evidence cannot support yet
    active_model_version: int | None
    queue_length: int
    target_precision: float | None = None


@dataclass(frozen=True)
class StatsView:
    """A task's figures as `/hitl stats` and the App Home show them."""

    task_name: str
    threshold: float | None  # None: nothing is automated yet (see target_precision)
    items_today: int
    items_7d: int
    auto_share_7d: float | None
    review_queue: int
    answers_today: int
    answers_7d: int
    labels_stored: int
    labels_breakdown: str  # "3 from Slack by 2 people, 10 imported"
    median_answer_seconds: float | None
    top_reviewers: tuple[tuple[str, int], ...]
    model_version: int | None
    model_metrics: Mapping[str, float] = field(default_factory=dict)
    last_report_summary: str | None = None
    # Set while Slack refuses the bot's token or the task's channel: why, since when, what to do.
    posting_blocked: str | None = None
    posting_since: datetime | None = None
    posting_hint: str | None = None
    prompts_failed: int = 0  # refused by Slack as malformed
    # Trust: the target precision (None: threshold set by hand), the lower bound behind the
    # chosen threshold, whether anything is automated and why, the spot checks' measure of
    # the automatic answers, how many agreeing answers resolve an item.
    target_precision: float | None = None
    precision_lower_bound: float | None = None
    automating: bool = True
    threshold_reason: str | None = None
    auto_precision: LivePrecision | None = None
    spot_check_rate: float = 0.0
    votes_required: int = 1
    precision_alarm: bool = False  # spot checks put the automatic answers below the target


@dataclass(frozen=True)
class PreviewView:
    """What a threshold would do to recent traffic (`/hitl threshold … preview`)."""

    task_name: str
    threshold: float
    current_threshold: float | None  # None: nothing is automated now
    model_version: int
    items: int
    days: int
    review_share: float | None  # None: no items in the window
    review_per_day: float
    auto_per_day: float
    auto_precision: LivePrecision  # expected, from held-out answers above the threshold


@dataclass(frozen=True)
class ReviewerLine:
    """One reviewer's figures (`/hitl stats reviewers`)."""

    user: str
    answers: int
    skips: int
    resolved: int  # label answers on items people decided
    agreed_final: int  # of those, how many gave the final label
    agree_final_interval: tuple[float, float] | None
    spot_checks: int
    confirmed_model: int  # spot checks where they gave the model's label


@dataclass(frozen=True)
class ReviewersView:
    """Every reviewer of a task and the team's agreement."""

    task_name: str
    reviewers: tuple[ReviewerLine, ...]
    agreement_measure: str | None  # "cohen_kappa", "krippendorff_alpha", or None
    agreement_value: float | None
    agreement_items: int
    agreement_raters: int


# --- text helpers -----------------------------------------------------------------------------


def escape(text: str) -> str:
    """`text` made inert for mrkdwn: `&`, `<` and `>` become entities, nothing else changes."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _char_cost(char: str) -> int:
    return _ESCAPED_COST.get(char) or (2 if ord(char) > 0xFFFF else 1)


def _cost(text: str) -> int:
    """Conservative length: UTF-16 code units of the escaped text."""
    return sum(_char_cost(char) for char in text)


def _prefix(text: str, budget: int) -> str:
    """The longest prefix of `text` whose cost is at most `budget`."""
    total = 0
    for position, char in enumerate(text):
        total += _char_cost(char)
        if total > budget:
            return text[:position]
    return text


def _fit(text: str, limit: int) -> str:
    """`text`, or its start plus "…", within `limit`."""
    if _cost(text) <= limit:
        return text
    return _prefix(text, limit - _cost(_ELLIPSIS)).rstrip() + _ELLIPSIS


def _more_note(count: int) -> str:
    return f"\n{_ELLIPSIS} ({count:,} more character{'' if count == 1 else 's'})"


def _fit_with_note(text: str, limit: int) -> str:
    """`text`, or as much as fits with a visible note of how much was cut."""
    if _cost(text) <= limit:
        return text
    # The note for the whole length is the longest the note can be; reserve room for it.
    kept = _prefix(text, limit - _cost(_more_note(len(text)))).rstrip()
    return kept + _more_note(len(text) - len(kept))


def _nonblank(text: str, placeholder: str = "(empty)") -> str:
    # Slack rejects empty text objects.
    return text if text.strip() else placeholder


def _plain(text: str, *, literal: bool = False) -> Block:
    """A plain_text object; `literal` keeps `:shortcodes:` of untrusted text as typed."""
    obj: Block = {"type": "plain_text", "text": _nonblank(text)}
    if literal:
        obj["emoji"] = False
    return obj


def _mrkdwn(text: str) -> Block:
    return {"type": "mrkdwn", "text": _nonblank(text)}


def _utf16_len(text: str) -> int:
    return sum(2 if ord(char) > 0xFFFF else 1 for char in text)


def _fit_markup(text: str, limit: int) -> str:
    """Escaped mrkdwn `text`, or its start plus "…", within `limit` UTF-16 code units.

    A cut never ends inside an entity (`&amp;`) or a `<…>` mention, link or date.
    """
    if _utf16_len(text) <= limit:
        return text
    budget, total, end = limit - _utf16_len(_ELLIPSIS), 0, len(text)
    for position, char in enumerate(text):
        total += 2 if ord(char) > 0xFFFF else 1
        if total > budget:
            end = position
            break
    return _OPEN_MARKUP.sub("", text[:end]).rstrip() + _ELLIPSIS


def _section(text: str) -> Block:
    """A mrkdwn section; callers escape untrusted parts and should stay under the limit."""
    return {"type": "section", "text": _mrkdwn(_fit_markup(text, SECTION_TEXT_LIMIT))}


def _fields_section(fields: Sequence[Block], *, text: str | None = None) -> Block:
    block: Block = {"type": "section", "fields": list(fields[:MAX_FIELDS])}
    if text is not None:
        block["text"] = _mrkdwn(text)
    return block


def _field(title: str, value: str) -> Block:
    """A mrkdwn field: bold title, value below (both already safe)."""
    return _mrkdwn(f"*{title}*\n{value}")


def _context(*elements: Block) -> Block:
    return {"type": "context", "elements": list(elements[:MAX_CONTEXT_ELEMENTS])}


def _header(text: str) -> Block:
    return {"type": "header", "text": _plain(_fit(text, HEADER_LIMIT), literal=True)}


def _button(text: str, action_id: str, value: str) -> Block:
    return {
        "type": "button",
        "action_id": action_id,
        "text": _plain(_fit(text, ELEMENT_TEXT_LIMIT), literal=True),
        "value": value,
    }


def _percent(share: float) -> str:
    return f"{share * 100:.0f} %"


def _precise(share: float) -> str:
    """`95 %`, `97.5 %`: one decimal where it says something (targets, precisions, rates)."""
    return f"{share * 100:.1f}".removesuffix(".0") + " %"


def _with_interval(estimate: float | None, low: float, high: float) -> str:
    """`92 % [85-96 %]`: an estimate with its 95 % interval."""
    shown = _precise(estimate) if estimate is not None else "n/a"
    return f"{shown} [{_precise(low).removesuffix(' %')}-{_precise(high)}]"


def _live_line(live: LivePrecision | None, *, unit: str = "spot checks") -> str:
    """`92 % [85-96 %] right on 60 spot checks`, or that none were answered yet."""
    if live is None or live.n == 0 or live.estimate is None:
        return f"no {unit} answered yet"
    return f"{_with_interval(live.estimate, live.low, live.high)} right on {live.n:,} {unit}"


def _confidence(confidence: float) -> str:
    # Floored, so an item below a 100 % threshold never shows as "100 %"; the epsilon keeps
    # 0.29 (stored as 0.28999…) at 29.
    return f"{math.floor(confidence * 100 + 1e-9)} %"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def mention(user_id: str | None) -> str:
    """`<@U…>` for a Slack user id; anything else (e.g. "import") as escaped text."""
    if not user_id:
        return "someone"
    if _USER_ID.fullmatch(user_id):
        return f"<@{user_id}>"
    return escape(_fit(user_id, 80))


def _channel(channel: str | None) -> str:
    if not channel:
        return "no channel"
    if _CHANNEL_ID.fullmatch(channel):
        return f"<#{channel}>"
    return escape(_fit(channel, 80))


def _slack_date(moment: datetime) -> str:
    """Slack date formatting: shown in the reader's time zone, UTC text as the fallback."""
    if moment.tzinfo is None:  # SQLite hands back naive datetimes; we store UTC
        moment = moment.replace(tzinfo=UTC)
    stamp = int(moment.timestamp())
    fallback = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{stamp}^{{date_short_pretty}} {{time}}|{fallback}>"


def _model_name(version: int | None) -> str:
    return f"model v{version}" if version is not None else "the model"


def _task(name: str) -> str:
    return escape(_fit(name, 100))


# --- review prompts ---------------------------------------------------------------------------


def review_prompt(p: PromptInput) -> Message:
    """The review message of an open item: its text, the model's guess, a way to pick any label.

    Label plan: buttons for the model's five most likely labels (the first five of the task's
    order when there is no model), then the remaining labels in task order in static selects of
    at most 100 options each ("Other label…"), then Skip. Several selects rather than
    `option_groups` (documented as "a maximum of 100 option groups with a maximum of 100
    options", which does not say whether 100 options per group or in all) or an
    `external_select` (a round trip to us per keystroke and one more listener that must answer
    within 3 seconds). A task has at most 1000 labels: 5 buttons, 10 menus and Skip, 16
    elements in one actions block of the 25 allowed. Values carry label indexes, never labels.

    A spot check (`p.spot_check`) asks the same question without any of the model's answer:
    no guess, no confidence, the first five labels of the task's order as buttons, so the
    person's label measures the automatic answer instead of echoing it. When an item needs
    several agreeing answers the prompt says how many it has, never who chose what.
    """
    return _prompt(p, note=None)


def change_prompt(
    p: PromptInput, *, answered_by: str | None, previous_label: str | None = None
) -> Message:
    """The review message re-opened to change an answer (`answered_by` None: the model's)."""
    who = (
        f":pencil2: Changing the answer of {mention(answered_by)}"
        if answered_by
        else ":pencil2: Overriding the model's answer"
    )
    elements = [_mrkdwn(who)]
    if previous_label is not None:
        elements.append(_plain(f"was: {_fit(previous_label, 200)}", literal=True))
    return _prompt(p, note=_context(*elements))


def _prompt(p: PromptInput, *, note: Block | None) -> Message:
    blocks: list[Block] = [] if note is None else [note]
    kind = "Spot check" if p.spot_check else "Review needed"
    blocks.append(_context(_mrkdwn(f":mag: *{kind}* · {_task(p.task_name)}")))
    blocks.append(_item_text(p.text))
    details = [_plain(_guess_line(p), literal=True), _item_ref(p)]
    votes = _votes_line(p)
    if votes is not None:
        details.append(_plain(votes))
    blocks.append(_context(*details))
    blocks.extend(_label_actions(p, room=MAX_MESSAGE_BLOCKS - len(blocks)))
    return {"text": _review_fallback(p), "blocks": blocks}


def _votes_line(p: PromptInput) -> str | None:
    """How far the item is from resolving, when it needs more than one answer."""
    if p.escalated:
        return (
            f"Reviewers disagree ({p.answers_so_far:,} answers): an admin's answer decides, "
            f"or {p.votes_needed:,} matching answers."
        )
    if p.votes_needed <= 1:
        return None
    return f"{p.answers_so_far:,} of {p.votes_needed:,} agreeing answers so far."


def _item_text(text: str) -> Block:
    body = _fit_with_note(_nonblank(text, "(empty text)"), SECTION_TEXT_LIMIT)
    return {"type": "section", "text": _plain(body, literal=True)}


def _item_ref(p: PromptInput) -> Block:
    if p.external_id:
        return _plain(f"Item {_fit(p.external_id, 200)}", literal=True)
    return _plain(f"Item #{p.item_id}")


def _guess_line(p: PromptInput) -> str:
    if p.spot_check:
        return (
            "Spot check of an automatic answer: pick the label you think is right. "
            "The model's answer is hidden so that it cannot sway you."
        )
    if p.guess is None:
        return "No model yet: the buttons follow the task's label order."
    line = f"Model's guess: {_fit(p.guess, 200)}"
    if p.confidence is not None:
        line += f" · {_confidence(p.confidence)}"
    if p.model_version is not None:
        line += f" · model v{p.model_version}"
    return line


def _review_fallback(p: PromptInput) -> str:
    snippet = " ".join(p.text.split())
    if len(snippet) > _FALLBACK_SNIPPET:
        snippet = snippet[:_FALLBACK_SNIPPET].rstrip() + _ELLIPSIS
    kind = "Spot check" if p.spot_check else "Review needed"
    return f"{kind} in {_task(p.task_name)}: {escape(snippet)}"


def _button_labels(p: PromptInput) -> list[int]:
    """Indexes of the labels that get a button: the model's ranking, topped up in task order."""
    index: dict[str, int] = {}
    for position, label in enumerate(p.labels):
        index.setdefault(label, position)
    preferred: tuple[str, ...] = p.ranked_labels or ((p.guess,) if p.guess else ())
    if p.spot_check:  # the order would give the model's answer away
        preferred = ()
    chosen: list[int] = []
    for label in (*preferred, *p.labels):
        found = index.get(label)
        if found is not None and found not in chosen:
            chosen.append(found)
            if len(chosen) == LABEL_BUTTONS:
                break
    return chosen


def _label_menu(p: PromptInput, number: int, indexes: list[int], *, of: int) -> Block:
    if of == 1:
        placeholder = "Other label…"
    else:
        first, last = p.labels[indexes[0]], p.labels[indexes[-1]]
        placeholder = f"Other label: {_fit(first, 60)} to {_fit(last, 60)}"
    return {
        "type": "static_select",
        "action_id": ids.label_menu_action_id(number),
        "placeholder": _plain(_fit(placeholder, PLACEHOLDER_LIMIT), literal=True),
        "options": [
            {
                "text": _plain(_fit(p.labels[i], ELEMENT_TEXT_LIMIT), literal=True),
                "value": ids.encode_choice(p.item_id, i),
            }
            for i in indexes
        ],
    }


def _label_actions(p: PromptInput, *, room: int) -> list[Block]:
    """Actions blocks with label buttons, label menus and Skip, in at most `room` blocks."""
    top = _button_labels(p)
    shown = set(top)
    rest = [i for i in range(len(p.labels)) if i not in shown]
    chunks = [rest[k : k + MAX_SELECT_OPTIONS] for k in range(0, len(rest), MAX_SELECT_OPTIONS)]
    note: Block | None = None
    # Only reachable far beyond the 1000 labels a task may have; keep the message valid anyway.
    capacity = (room - 1) * MAX_ACTIONS_ELEMENTS - len(top) - 1
    if len(chunks) > capacity:
        hidden = sum(len(chunk) for chunk in chunks[capacity:])
        chunks = chunks[:capacity]
        note = _context(_plain(f"{hidden:,} more labels cannot be shown in one message."))
    elements = [
        _button(p.labels[i], ids.label_action_id(i), ids.encode_choice(p.item_id, i)) for i in top
    ]
    elements += [_label_menu(p, n, chunk, of=len(chunks)) for n, chunk in enumerate(chunks)]
    elements.append(_button("Skip", ids.ACTION_SKIP, ids.encode_item(p.item_id)))
    blocks = [
        {"type": "actions", "elements": elements[k : k + MAX_ACTIONS_ELEMENTS]}
        for k in range(0, len(elements), MAX_ACTIONS_ELEMENTS)
    ]
    return blocks if note is None else [*blocks, note]


def answered_prompt(
    p: PromptInput,
    *,
    label: str,
    user_id: str,
    answered_at: datetime,
    by_model: bool = False,
    agreed_by: Sequence[str] = (),
) -> Message:
    """The message of a decided item: the label, who and when, and a Change/Override button.

    `agreed_by` are the other people whose answers gave the same label (several votes).
    """
    when = _slack_date(answered_at)
    shown_label = _fit(label, 200)
    if by_model:
        head = f":robot_face: *Resolved by the model* · {_task(p.task_name)}"
        at = f" at {_confidence(p.confidence)}" if p.confidence is not None else ""
        who = f"resolved by {_model_name(p.model_version)}{at} · {when}"
        button = _button("Override", ids.ACTION_OVERRIDE, ids.encode_item(p.item_id))
        context = _context(_item_ref(p))
        by = f"resolved by {_model_name(p.model_version)}{at}"
    else:
        head = f":white_check_mark: *Answered* · {_task(p.task_name)}"
        agreeing = [mention(other) for other in agreed_by[:MAX_FIELDS] if other != user_id]
        also = f" and {', '.join(agreeing)}" if agreeing else ""
        who = f"by {mention(user_id)}{also} · {when}"
        button = _button("Change", ids.ACTION_CHANGE, ids.encode_item(p.item_id))
        context = _context(_plain(_verdict(p, label), literal=True), _item_ref(p))
        by = f"answered by {mention(user_id)}"
    blocks: list[Block] = [
        _context(_mrkdwn(head)),
        _item_text(p.text),
        _fields_section([_plain(f"Label: {shown_label}", literal=True), _mrkdwn(who)]),
        context,
        {"type": "actions", "elements": [button]},
    ]
    return {"text": f"{_task(p.task_name)}: {escape(shown_label)}, {by}", "blocks": blocks}


def _verdict(p: PromptInput, label: str) -> str:
    """What the model had guessed, and whether the person agreed with it."""
    if p.guess is None:
        return "The model had no guess (no model yet)."
    confidence = f" at {_confidence(p.confidence)}" if p.confidence is not None else ""
    agreed = "agreed" if p.guess == label else "the answer differs"
    guessed = f"{_model_name(p.model_version).capitalize()} guessed {_fit(p.guess, 200)}"
    return f"{guessed}{confidence}: {agreed}."


# --- command replies --------------------------------------------------------------------------


def ephemeral_text(text: str) -> Message:
    """A one-section reply; `text` is mrkdwn, so callers escape untrusted parts with `escape`."""
    return {"text": _fit(text, SECTION_TEXT_LIMIT), "blocks": [_section(text)]}


def help_blocks() -> Message:
    """`/hitl help`: every subcommand with its usage."""
    command = ids.SLASH_COMMAND
    usage = [
        (ids.CMD_TASKS, "", "every task: labels, channel, threshold, model, queue"),
        (ids.CMD_STATS, " [task]", "traffic, answers, model quality and spot checks of a task"),
        (
            ids.CMD_STATS,
            f" {ids.ARG_REVIEWERS} [task]",
            "per reviewer: answers, agreement with the final label, spot checks; "
            "and the team's agreement",
        ),
        (
            ids.CMD_THRESHOLD,
            " [task] [value]",
            "show the threshold, or set it (admins; 0 < value ≤ 1, `85%` works too)",
        ),
        (
            ids.CMD_THRESHOLD,
            f" [task] {ids.ARG_PRECISION} 95%",
            "aim for a precision instead: the threshold is chosen from the evidence (admins)",
        ),
        (
            ids.CMD_THRESHOLD,
            f" [task] 0.85 {ids.ARG_PREVIEW}",
            "what a threshold would do to recent items; changes nothing, anyone may run it",
        ),
        (
            ids.CMD_SPOT_CHECKS,
            " [task] [share]",
            "show or set the share of automatic answers a person checks too (admins; `2%`)",
        ),
        (
            ids.CMD_VOTES,
            " [task] [n]",
            "show or set how many agreeing answers resolve an item (admins; 1 to 10)",
        ),
        (
            ids.CMD_BUDGET,
            " [task] [n]",
            "show or set how many prompts a task posts a day (admins; `none` for no limit)",
        ),
        (ids.CMD_RETRAIN, " [task]", "train and measure a new model now (admins)"),
        (ids.CMD_HELP, "", "this list"),
    ]
    lines = [f"`{command} {word}{args}`\n{escape(what)}" for word, args, what in usage]
    words = dict.fromkeys(word for word, _, _ in usage)
    return {
        "text": f"{command} commands: " + ", ".join(words),
        "blocks": [
            _header("hitl: human-in-the-loop labelling"),
            _section("\n\n".join(lines)),
            _context(
                _mrkdwn(
                    "Review prompts arrive in each task's channel: click the right label, or "
                    "Skip. `[task]` may be left out when there is only one task."
                )
            ),
        ],
    }


def tasks_blocks(tasks: Sequence[TaskSummary]) -> Message:
    """`/hitl tasks`: one short entry per task."""
    if not tasks:
        return ephemeral_text("No tasks yet. Create one with `hitl task create NAME --labels a,b`.")
    blocks: list[Block] = [_header(f"Tasks ({len(tasks)})")]
    text = ""
    shown = 0
    for task in tasks:
        model = f"model v{task.active_model_version}" if task.active_model_version else "no model"
        entry = (
            f"*{_task(task.name)}* · {_channel(task.channel)}\n"
            f"{task.labels_count:,} labels · "
            f"{_threshold_short(task.threshold, task.target_precision)} · {model} · "
            f"{task.queue_length:,} waiting"
        )
        if text and _cost(text) + _cost(entry) + 2 > SECTION_TEXT_LIMIT:
            if len(blocks) >= MAX_MESSAGE_BLOCKS - 2:  # keep room for this section and a note
                break
            blocks.append(_section(text))
            text = ""
        text = f"{text}\n\n{entry}" if text else entry
        shown += 1
    blocks.append(_section(text))
    if shown < len(tasks):
        blocks.append(_context(_plain(f"…and {len(tasks) - shown:,} more tasks.")))
    return {"text": f"{len(tasks)} tasks", "blocks": blocks}


def _threshold_short(threshold: float | None, target: float | None) -> str:
    """`threshold 0.8`, `threshold 0.87 for 95 % precision`, or `not automating yet (…)`."""
    if target is None:
        return f"threshold {threshold:g}" if threshold is not None else "no threshold"
    if threshold is None:
        return f"not automating yet (target {_precise(target)} precision)"
    return f"threshold {threshold:.4g} for {_precise(target)} precision"


def _threshold_field(s: StatsView) -> str:
    """The threshold, and with a target precision the evidence behind it (or why there is none)."""
    if s.target_precision is None:
        return f"{s.threshold:g}" if s.threshold is not None else "n/a"
    target = _precise(s.target_precision)
    reason = escape(_fit(s.threshold_reason, 300)) if s.threshold_reason else ""
    if s.threshold is None or not s.automating:
        return f"not automating yet (target {target} precision)" + (f"\n{reason}" if reason else "")
    bound = (
        f"\nprecision ≥ {_precise(s.precision_lower_bound)} on held-out answers"
        if s.precision_lower_bound is not None
        else ""
    )
    return f"{s.threshold:.4g} for {target} precision{bound}"


def _trust_fields(s: StatsView) -> list[Block]:
    """Spot checks and votes: how the automatic answers hold up, and how items resolve."""
    live = _live_line(s.auto_precision)
    target = f"\ntarget {_precise(s.target_precision)}" if s.target_precision is not None else ""
    votes = (
        "the first answer decides"
        if s.votes_required <= 1
        else f"{s.votes_required:,} agreeing answers decide"
    )
    return [
        _field("Spot checks", f"{_precise(s.spot_check_rate)} of automatic answers"),
        _field("Automatic answers, checked", f"{live}{target}"),
        _field("Votes per item", votes),
    ]


def _precision_warning(s: StatsView) -> str | None:
    """The alarm line: spot checks put the automatic answers below the target precision."""
    if not s.precision_alarm or s.target_precision is None:
        return None
    return (
        f":rotating_light: *Spot checks put the automatic answers below the target* "
        f"({_live_line(s.auto_precision)} against {_precise(s.target_precision)}). "
        "The threshold is raised at the next retrain; admins can raise it now with "
        f"`{ids.SLASH_COMMAND} {ids.CMD_THRESHOLD} {_task(s.task_name)} VALUE`."
    )


def _traffic_fields(s: StatsView) -> list[Block]:
    auto = _percent(s.auto_share_7d) if s.auto_share_7d is not None else "n/a"
    median = _duration(s.median_answer_seconds) if s.median_answer_seconds is not None else "n/a"
    return [
        _field("Threshold", _threshold_field(s)),
        _field("Waiting for review", f"{s.review_queue:,}"),
        _field("Items", f"{s.items_today:,} today\n{s.items_7d:,} in 7 days"),
        _field("Automatic (7 days)", auto),
        _field("Answers", f"{s.answers_today:,} today\n{s.answers_7d:,} in 7 days"),
        _field("Labels stored", f"{s.labels_stored:,}: {s.labels_breakdown}"),
        _field("Median answer time", median),
    ]


_METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("Accuracy", "percent"),
    "macro_f1": ("Macro-F1", "{:.2f}"),
    "ece": ("Calibration error", "{:.3f}"),
    "holdout_size": ("Measured on", "{:,.0f} items"),
}


def _model_fields(s: StatsView) -> list[Block]:
    if s.model_version is None:
        return [_field("Model", "none yet: every item goes to review")]
    fields = [_field("Model", f"v{s.model_version}")]
    for key, (title, form) in _METRICS.items():
        value = s.model_metrics.get(key)
        if value is None and key == "holdout_size":
            value = s.model_metrics.get("n")
        if value is not None:
            fields.append(
                _field(title, _percent(value) if form == "percent" else form.format(value))
            )
    return fields


def _reviewers(s: StatsView) -> str:
    return ", ".join(f"{mention(user)} {count:,}" for user, count in s.top_reviewers[:5])


def _posting_warning(s: StatsView) -> str | None:
    """Why prompts do not reach the channel, and what to do; None while they do."""
    lines = []
    if s.posting_blocked is not None:
        since = f" since {_slack_date(s.posting_since)}" if s.posting_since else ""
        lines.append(
            f":warning: *Prompts are not posted*{since}: Slack says `{escape(s.posting_blocked)}`."
            " They wait and go out by themselves once posting works again."
        )
        if s.posting_hint:
            lines.append(f"To fix: {escape(s.posting_hint)}.")
    if s.prompts_failed:
        lines.append(
            f":x: {s.prompts_failed:,} prompts were refused by Slack as malformed;"
            f" `hitl prompts retry {escape(_fit(s.task_name, 80))}` sends them again after a fix."
        )
    return "\n".join(lines) or None


def stats_blocks(s: StatsView) -> Message:
    """`/hitl stats`: traffic, answers and the model, in short fields that read well on a phone."""
    warnings = [w for w in (_precision_warning(s), _posting_warning(s)) if w]
    blocks: list[Block] = [
        _header(f"Stats: {_fit(s.task_name, 100)}"),
        *(_section(warning) for warning in warnings),
        _fields_section(_traffic_fields(s)),
        _fields_section(_model_fields(s)),
        _fields_section(_trust_fields(s)),
    ]
    if s.top_reviewers:
        blocks.append(_section(f"*Top reviewers (7 days)*\n{_reviewers(s)}"))
    if s.last_report_summary:
        blocks.append(_context(_mrkdwn(escape(_fit(s.last_report_summary, 2000)))))
    queue = f"{s.review_queue:,} waiting"
    if s.posting_blocked is not None:
        queue += f", posting stopped ({escape(s.posting_blocked)})"
    if s.precision_alarm:
        queue += ", spot checks below the target precision"
    return {"text": f"Stats of {_task(s.task_name)}: {queue}", "blocks": blocks}


def home_view(stats: Sequence[StatsView]) -> dict[str, Any]:
    """The App Home tab: every task's figures, as many as a view's 100 blocks allow."""
    blocks: list[Block] = [
        _header("hitl-bot"),
        _context(
            _mrkdwn(f"Every task at a glance. `{ids.SLASH_COMMAND} help` lists the commands.")
        ),
    ]
    if not stats:
        blocks.append(
            _section("No tasks yet. Create one with `hitl task create NAME --labels a,b`.")
        )
        return {"type": "home", "blocks": blocks}
    for position, s in enumerate(stats):
        task_blocks = _home_task(s)
        # Keep one block free for the "more tasks" note unless this is the last task.
        reserve = 0 if position == len(stats) - 1 else 1
        if len(blocks) + len(task_blocks) + reserve > MAX_VIEW_BLOCKS:
            left = len(stats) - position
            blocks.append(
                _context(
                    _mrkdwn(
                        f"…and {left:,} more tasks: `{ids.SLASH_COMMAND} {ids.CMD_STATS} NAME`."
                    )
                )
            )
            break
        blocks.extend(task_blocks)
    return {"type": "home", "blocks": blocks}


def _home_task(s: StatsView) -> list[Block]:
    model = _model_fields(s)
    fields = _traffic_fields(s)[1:] + model[: MAX_FIELDS - 5]
    head = f"*{_task(s.task_name)}* · {_threshold_short(s.threshold, s.target_precision)}"
    blocks: list[Block] = [{"type": "divider"}, _fields_section(fields, text=head)]
    notes = []
    warning = _precision_warning(s)
    if warning:
        notes.append(_mrkdwn(warning))
    if s.top_reviewers:
        notes.append(_mrkdwn(f"Top reviewers (7 days): {_reviewers(s)}"))
    if s.last_report_summary:
        notes.append(_mrkdwn(escape(_fit(s.last_report_summary, 2000))))
    if notes:
        blocks.append(_context(*notes))
    return blocks


def threshold_changed_blocks(
    task_name: str, old: float | None, *, new: float, user_id: str
) -> Message:
    """The channel announcement of a threshold change, saying what it means for reviewers.

    `old` None: nothing was automated before (a target precision the evidence did not support).
    """
    task = _task(task_name)
    before = f"{old:g}" if old is not None else "nothing automated"
    headline = (
        f":level_slider: {mention(user_id)} changed the threshold of *{task}* "
        f"from *{before}* to *{new:g}*."
    )
    if old is not None and new > old:
        meaning = "More items will come here for review; the model answers fewer on its own."
    elif old is None or new < old:
        meaning = "Fewer items will come here for review; the model answers more on its own."
    else:
        meaning = "Nothing changes."
    return {
        "text": f"Threshold of {task}: {before} → {new:g}",
        "blocks": [_section(headline), _context(_plain(meaning))],
    }


def threshold_shown_blocks(
    task_name: str,
    threshold: float | None,
    *,
    target: float | None = None,
    lower_bound: float | None = None,
    reason: str | None = None,
) -> Message:
    """`/hitl threshold [task]`: the threshold, and with a target precision its evidence."""
    task = _task(task_name)
    if target is None:
        shown = f"{threshold:g}" if threshold is not None else "not set"
        return ephemeral_text(f"Threshold of *{task}* is {shown}.")
    why = f" {escape(_fit(reason, 500))}." if reason else ""
    head = f"*{task}* aims for {_precise(target)} precision:"
    if threshold is None:
        return ephemeral_text(f"{head} nothing is automated yet.{why}")
    bound = (
        f" (precision ≥ {_precise(lower_bound)} on held-out answers)"
        if lower_bound is not None
        else ""
    )
    return ephemeral_text(f"{head} threshold {threshold:.4g}{bound}.{why}")


def target_precision_blocks(
    task_name: str,
    target: float,
    *,
    threshold: float | None,
    lower_bound: float | None,
    reason: str | None,
    user_id: str,
) -> Message:
    """A target precision was set: the threshold it chose and its evidence, or why none yet.

    The reply to the admin and the channel's announcement are the same message.
    """
    task = _task(task_name)
    headline = (
        f":dart: {mention(user_id)} set a target precision of *{_precise(target)}* for *{task}*."
    )
    if threshold is not None:
        bound = (
            f" (precision ≥ {_precise(lower_bound)} on held-out answers)"
            if lower_bound is not None
            else ""
        )
        what = f"Threshold *{threshold:.4g}*{bound}: the model answers what it is that sure of."
        short = f"threshold {threshold:.4g}"
    else:
        what = (
            "*Nothing is automated yet*: every item comes here for review until the evidence "
            "supports the target."
        )
        short = "nothing automated yet"
    notes = [_plain("The threshold is chosen again from the evidence after every retrain.")]
    if reason:
        notes.insert(0, _plain(_fit(reason, 500), literal=True))
    return {
        "text": f"Target precision of {task}: {_precise(target)}, {short}",
        "blocks": [_section(f"{headline}\n{what}"), _context(*notes)],
    }


def _per_day(count: float) -> str:
    return f"{count:,.1f}".removesuffix(".0") if count < 10 else f"{count:,.0f}"


def preview_blocks(v: PreviewView) -> Message:
    """`/hitl threshold … preview`: what a threshold would do to recent items; changes nothing."""
    task = _task(v.task_name)
    now = (
        f"now {v.current_threshold:g}"
        if v.current_threshold is not None
        else "nothing is automated now"
    )
    head = (
        f":crystal_ball: *What if* the threshold of *{task}* were *{v.threshold:g}*? "
        f"({now}; model v{v.model_version}, {v.items:,} items in the last {v.days:,} days)"
    )
    blocks: list[Block] = [_section(head)]
    if v.review_share is None:
        blocks.append(_section(f"No items in the last {v.days:,} days to try it on."))
        summary = "no recent items"
    else:
        live = v.auto_precision
        expected = (
            f"{_with_interval(live.estimate, live.low, live.high)}\n"
            f"on {live.n:,} held-out answers above it"
            if live.n and live.estimate is not None
            else "unknown: no held-out answers above this threshold"
        )
        blocks.append(
            _fields_section(
                [
                    _field(
                        "To people",
                        f"{_percent(v.review_share)} · ≈ {_per_day(v.review_per_day)} a day",
                    ),
                    _field(
                        "Automatic",
                        f"{_percent(1 - v.review_share)} · ≈ {_per_day(v.auto_per_day)} a day",
                    ),
                    _field("Expected precision of automatic answers", expected),
                ]
            )
        )
        summary = f"{_percent(v.review_share)} to people"
    blocks.append(
        _context(
            _mrkdwn(
                "A preview changes nothing. Admins set it with "
                f"`{ids.SLASH_COMMAND} {ids.CMD_THRESHOLD} {task} {v.threshold:g}`."
            )
        )
    )
    return {"text": f"Preview of {task} at {v.threshold:g}: {summary}", "blocks": blocks}


def spot_checks_blocks(
    task_name: str,
    rate: float,
    *,
    old: float | None = None,
    live: LivePrecision | None = None,
) -> Message:
    """`/hitl spot-checks`: the share of automatic answers a person checks (`old`: a change)."""
    task = _task(task_name)
    change = f"{_precise(old)} → *{_precise(rate)}*" if old is not None else f"*{_precise(rate)}*"
    head = f"Spot checks of *{task}*: {change} of automatic answers."
    return ephemeral_text(
        f"{head} Each is also shown to a person, without the model's answer.\n"
        f"Measured so far: {_live_line(live)}."
    )


def votes_blocks(task_name: str, votes: int, *, old: int | None = None) -> Message:
    """`/hitl votes`: how many agreeing answers resolve an item (`old`: a change)."""
    task = _task(task_name)
    change = f"{old:,} → *{votes:,}*" if old is not None else f"*{votes:,}*"
    if votes <= 1:
        meaning = "the first answer resolves an item."
    else:
        meaning = (
            f"an item is resolved once {votes:,} people give the same label; "
            "when they disagree, the admins are asked to decide."
        )
    return ephemeral_text(f"Votes of *{task}*: {change}: {meaning}")


def _budget(budget: int | None) -> str:
    return "no limit" if budget is None else f"{budget:,} a day"


def budget_blocks(
    task_name: str,
    budget: int | None,
    *,
    posted_today: int,
    old: int | None = None,
    changed: bool = False,
) -> Message:
    """`/hitl budget`: the prompts a task may post a day (`changed`: from `old`)."""
    task = _task(task_name)
    shown = f"*{_budget(budget)}*"
    change = f"{_budget(old)} → {shown}" if changed else shown
    if budget is None:
        meaning = "every item that needs a person is posted as soon as the pace allows."
    else:
        meaning = (
            "prompts beyond it wait, still ranked, and go out the next day "
            f"({_plural(posted_today, 'prompt')} posted today)."
        )
    return ephemeral_text(f"Daily prompt budget of *{task}*: {change}: {meaning}")


def digest_blocks(
    task_name: str,
    *,
    waiting: int,
    in_channel: int,
    oldest_since: datetime | None,
    now: datetime,
) -> Message:
    """The daily digest in a task's channel: how many items wait for a person, and how long
    the oldest has waited."""
    task = _task(task_name)
    are = "is" if waiting == 1 else "are"
    head = f":hourglass_flowing_sand: *{_plural(waiting, 'item')}* {are} waiting for an answer"
    details = []
    if oldest_since is not None:
        waited = max(0.0, (now - oldest_since).total_seconds())
        details.append(f"the oldest has waited {_duration(waited)}")
    queued = waiting - in_channel
    if in_channel and queued:
        details.append(f"{in_channel:,} in this channel, {queued:,} still to come")
    elif queued:
        details.append("none posted yet")
    text = head + (f" ({'; '.join(details)})" if details else "") + "."
    return {
        "text": f"{task}: {_plural(waiting, 'item')} waiting for an answer",
        "blocks": [
            _context(_mrkdwn(f":mag: *Daily digest* · {task}")),
            _section(text),
            _context(
                _mrkdwn(
                    "The most useful ones are asked first; scroll up to answer those already "
                    f"here. `{ids.SLASH_COMMAND} {ids.CMD_STATS} {task}` shows more."
                )
            ),
        ],
    }


def reposted_pointer(task_name: str, text: str, *, moved_to: str | None = None) -> Message:
    """The old message of a prompt that was posted again: no buttons, a pointer to the new one
    (below, or in the channel `moved_to` when the task's channel changed); its thread stays."""
    task = _task(task_name)
    where = f"in {_channel(moved_to)}" if moved_to else "below"
    return {
        "text": f"{task}: still waiting, asked again {where}",
        "blocks": [
            _context(_mrkdwn(f":arrow_down: *Asked again {where}* · {task}")),
            {"type": "section", "text": _plain(_fit(_nonblank(text, "(empty text)"), 300))},
        ],
    }


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _reviewer_entry(r: ReviewerLine) -> str:
    skips = f", {_plural(r.skips, 'skip')}" if r.skips else ""
    if r.resolved:
        interval = (
            f" [{_precise(r.agree_final_interval[0]).removesuffix(' %')}-"
            f"{_precise(r.agree_final_interval[1])}]"
            if r.agree_final_interval
            else ""
        )
        final = (
            f"gave the final label {_percent(r.agreed_final / r.resolved)}{interval} "
            f"of {r.resolved:,} times"
        )
    else:
        final = "no item they answered is decided yet"
    checks = (
        f"{_plural(r.spot_checks, 'spot check')}, confirmed the model in "
        f"{_percent(r.confirmed_model / r.spot_checks)}"
        if r.spot_checks
        else "no spot checks"
    )
    return f"{mention(r.user)}: {_plural(r.answers, 'answer')}{skips} · {final} · {checks}"


_AGREEMENT_NAMES = {"cohen_kappa": "Cohen's kappa", "krippendorff_alpha": "Krippendorff's alpha"}


def reviewers_blocks(v: ReviewersView) -> Message:
    """`/hitl stats reviewers`: each person's figures, then how well the team agrees."""
    blocks: list[Block] = [_header(f"Reviewers: {_fit(v.task_name, 100)}")]
    if v.agreement_measure is None:
        team = "no item has answers from two people yet"
    else:
        name = _AGREEMENT_NAMES.get(v.agreement_measure, escape(v.agreement_measure))
        value = (
            f"{v.agreement_value:.2f}"
            if v.agreement_value is not None
            else "undefined (one label throughout)"
        )
        team = (
            f"{name} {value} on {_plural(v.agreement_items, 'item')} answered by two or more "
            f"people ({v.agreement_raters:,} in all)"
        )
    text, shown = "", 0
    for reviewer in v.reviewers:
        entry = _reviewer_entry(reviewer)
        if text and _utf16_len(text) + _utf16_len(entry) + 1 > SECTION_TEXT_LIMIT:
            if len(blocks) >= MAX_MESSAGE_BLOCKS - 3:  # room for this section, a note, the team
                break
            blocks.append(_section(text))
            text = ""
        text = f"{text}\n{entry}" if text else entry
        shown += 1
    blocks.append(_section(text or "No answers from people yet."))
    if shown < len(v.reviewers):
        blocks.append(_context(_plain(f"…and {len(v.reviewers) - shown:,} more reviewers.")))
    blocks.append(_section(f"*Team agreement*: {team}"))
    return {"text": f"Reviewers of {_task(v.task_name)}: {len(v.reviewers):,}", "blocks": blocks}


# --- several votes, escalation and spot-check alarms ------------------------------------------


def votes_waiting_text(
    *, needed: int, agreeing: int, second_opinion: bool = False, escalated: bool = False
) -> str:
    """What the clicker is told when their answer was stored but does not resolve the item."""
    if escalated:
        return (
            ":scales: Saved. Reviewers disagree on this item, so the admins were asked to decide."
        )
    if second_opinion:
        return (
            ":eyes: Thanks, saved. The model was very sure of a different label, so a second "
            "person is asked before the answer counts."
        )
    more = max(needed - agreeing, 1)
    answers = "answer is" if more == 1 else "answers are"
    return (
        f":hourglass_flowing_sand: Thanks, saved: {more:,} more agreeing {answers} needed "
        "before the item is resolved."
    )


_ESCALATION_ANSWERS_SHOWN = MAX_FIELDS - 1  # and one field for "…and N more"


def escalation_blocks(
    p: PromptInput, *, answers: Sequence[tuple[str, str]], admins: Sequence[str]
) -> Message:
    """Reviewers disagree: ask the admins to decide, with the item and each person's answer."""
    task = _task(p.task_name)
    asked = " ".join(mention(admin) for admin in sorted(admins)[:20])
    if asked:
        ask = f"{asked}: please decide by answering the prompt; an admin's answer settles it."
    else:
        ask = (
            "No admins are set (`HITL_ADMINS`), so nobody was asked to decide: the item "
            f"resolves once {p.votes_needed:,} answers agree."
        )
    fields = [
        _field(mention(user), escape(_fit(label, 300)))
        for user, label in answers[:_ESCALATION_ANSWERS_SHOWN]
    ]
    if len(answers) > _ESCALATION_ANSWERS_SHOWN:
        fields.append(_field("…", f"and {len(answers) - _ESCALATION_ANSWERS_SHOWN:,} more"))
    blocks: list[Block] = [
        _context(_mrkdwn(f":scales: *Reviewers disagree* · {task}")),
        _section(ask),
        _item_text(p.text),
        _context(_item_ref(p)),
    ]
    if fields:
        blocks.append(_fields_section(fields))
    who = asked or "no admins are set"
    return {"text": f"Reviewers disagree on an item of {task}: {who}", "blocks": blocks}


def precision_alert_blocks(
    task_name: str, live: LivePrecision, *, target: float, threshold: float | None = None
) -> Message:
    """Spot checks put the automatic answers below the target precision: tell the channel."""
    task = _task(task_name)
    now = f" ({threshold:g} now)" if threshold is not None else ""
    body = (
        f":rotating_light: *Spot checks of {task} fall short of the target precision.* "
        f"Checked by people, the automatic answers were {_live_line(live)}, against a target "
        f"of {_precise(target)}.\nThe threshold{now} will be raised at the next retrain. "
        f"Admins can raise it now with `{ids.SLASH_COMMAND} {ids.CMD_THRESHOLD} {task} VALUE` "
        f"(try `{ids.SLASH_COMMAND} {ids.CMD_THRESHOLD} {task} VALUE {ids.ARG_PREVIEW}` first)."
    )
    estimate = _precise(live.estimate) if live.estimate is not None else "n/a"
    return {
        "text": f"Spot checks of {task}: {estimate} right, target {_precise(target)}",
        "blocks": [_section(body)],
    }


# --- retrain report ---------------------------------------------------------------------------

_REPORT_ICONS = {
    RunStatus.PROMOTED: ":rocket:",
    RunStatus.KEPT: ":shield:",
    RunStatus.SKIPPED: ":zzz:",
    RunStatus.COLD: ":seedling:",
    RunStatus.FAILED: ":x:",
}
# Raw-text budgets for the untrusted parts of the report (labels, the headline and the reason,
# which quote task names and error messages): escaped, each character may become five, and
# the sections still fit Slack's 3000 characters without a cut.
_MOVER_LABEL_LIMIT = 80
_HEADLINE_LIMIT = 500
_REASON_LIMIT = 500
_MOVERS_SHOWN = 3


def _arrow(old: float | None, new: float | None, *, pct: bool = False) -> str:
    def show(value: float | None) -> str:
        if value is None:
            return "n/a"
        return f"{value:.0%}" if pct else f"{value:.3f}"

    return show(new) if old is None else f"{show(old)} → {show(new)}"


def _new_labels_field(report: RetrainReport) -> str:
    counts = report.new_labels
    if counts is None:
        return f"{report.new_answers:,} from {report.answerers:,} people"
    lines = [
        f"{counts.total:,}",
        f"{counts.slack:,} from Slack by {counts.people:,} people",
        f"{counts.imported:,} imported",
    ]
    if counts.spot_check:
        lines.append(f"{counts.spot_check:,} spot checks")
    return "\n".join(lines)


def _ci(interval: tuple[float, float] | None, *, pct: bool) -> str:
    """` [83-87%]` (or ` [0.80-0.87]`) after a figure; nothing without an interval."""
    if interval is None:
        return ""
    low, high = interval
    if pct:
        return f" [{low * 100:.0f}-{high:.0%}]"
    return f" [{low:.2f}-{high:.2f}]"


def _comparison_field(report: RetrainReport, c: Comparison) -> Block:
    """Both models on the same answers: accuracies, the difference's interval, McNemar's p."""
    old = f"v{report.old_version}" if report.old_version is not None else "old"
    new = f"v{report.new_version}" if report.new_version is not None else "new"

    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0%}"

    lines = [f"{old} {show(c.old_accuracy)} → {new} {show(c.new_accuracy)}"]
    if c.difference is not None:
        low, high = c.difference
        lines.append(f"difference {low * 100:+.1f} to {high * 100:+.1f} points")
    p = "< 0.001" if c.p_value < 0.001 else f"= {c.p_value:.3f}".rstrip("0").rstrip(".")
    lines.append(f"McNemar p {p}: {c.new_only:,} right only by {new}, {c.old_only:,} only by {old}")
    return _field(f"Paired on the same {c.n:,} answers", "\n".join(lines))


def _threshold_choice_field(choice: ThresholdFigures) -> Block:
    """Precision mode: the threshold the evidence supports, its bound, and why."""
    target = f"{choice.target_precision * 100:.1f}".removesuffix(".0") + "%"
    if choice.threshold is None:
        value = "nothing automated yet"
    else:
        value = f"threshold {choice.threshold:.4g}"
        if choice.precision_lower_bound is not None:
            value += f", precision ≥ {choice.precision_lower_bound:.1%}"
        if choice.raised_by_spot_checks:
            value += "\nraised: spot checks fell short of the target"
    # 300 raw characters escape to at most 1,500: the field stays under Slack's 2,000.
    reason = escape(_fit(choice.reason, 300)) if choice.reason else ""
    return _field(f"Target precision {target}", value + (f"\n{reason}" if reason else ""))


def _spot_check_field(live: LivePrecision) -> Block:
    """How the automatic answers held up when people checked them."""
    if live.n == 0 or live.estimate is None:
        return _field("Spot checks", "none answered yet")
    return _field(
        "Spot checks",
        f"{live.estimate:.0%} [{live.low * 100:.0f}-{live.high:.0%}] right on {live.n:,} checks",
    )


def _report_fields(report: RetrainReport) -> list[Block]:
    recent = report.recent or RecentTraffic()
    old_t = recent.old or Traffic(None, None, 0.0, ())
    new_t = recent.new or Traffic(None, None, 0.0, ())
    holdout_old = report.holdout.old if report.holdout else None
    holdout_new = report.holdout.new if report.holdout else None
    old_h, new_h = holdout_old or HoldoutMetrics(), holdout_new or HoldoutMetrics()
    gain = recent.confidence_gain
    size = new_h.n or report.holdout_size or 0
    # Older rows say "holdout" or nothing; newer ones how, e.g. "cross-fitted (5 folds)".
    how = report.evaluation or ("holdout" if report.holdout_size else "cross-validation")
    measured = escape(_fit(how, 60))
    on = f" on {size:,} answers" if size else ""
    automatic = (
        f"Automatic at {report.threshold:g}"
        if report.threshold is not None
        else "Automatic (no threshold yet)"
    )
    fields = [
        _field("New labels", _new_labels_field(report)),
        _field(
            f"Confidence ({recent.items:,} recent items)",
            _arrow(old_t.mean_confidence, new_t.mean_confidence)
            + (f"  ({gain:+.2f})" if gain is not None else ""),
        ),
        _field(
            automatic,
            _arrow(old_t.auto_share, new_t.auto_share, pct=True)
            + f"\n≈ {new_t.auto_per_day:.0f} of {recent.items_per_day:.0f} items a day",
        ),
        _field(
            f"Accuracy ({measured})",
            _arrow(old_h.accuracy, new_h.accuracy, pct=True)
            + _ci(new_h.accuracy_ci, pct=True)
            + on,
        ),
        _field(
            "Macro-F1",
            _arrow(old_h.macro_f1, new_h.macro_f1) + _ci(new_h.macro_f1_ci, pct=False),
        ),
        _field("Calibration error (ECE)", _arrow(old_h.ece, new_h.ece)),
    ]
    if report.comparison is not None and report.comparison.n:
        fields.append(_comparison_field(report, report.comparison))
    if report.threshold_choice is not None:
        fields.append(_threshold_choice_field(report.threshold_choice))
    if report.auto_precision is not None:
        fields.append(_spot_check_field(report.auto_precision))
    return fields


def _movers_section(report: RetrainReport) -> Block | None:
    lines = [
        f"{icon} {escape(_fit(move.label, _MOVER_LABEL_LIMIT))}: F1 {move.old:.2f} → {move.new:.2f}"
        for moves, icon in (
            (report.movers.gains, ":arrow_up:"),
            (report.movers.losses, ":arrow_down:"),
        )
        for move in moves[:_MOVERS_SHOWN]
    ]
    if not lines:
        return None
    return _section("*Labels that moved most*\n" + "\n".join(lines))


def report_blocks(report: RetrainReport) -> Message:
    """The retrain report: headline, what changed for the team, the evidence, the decision."""
    headline = escape(_fit(report.headline, _HEADLINE_LIMIT))
    icon = _REPORT_ICONS.get(report.status, ":bar_chart:")
    blocks: list[Block] = [
        _header(f"Retrain: {_fit(report.task, 100)}"),
        _section(f"{icon} *{headline}*"),
    ]
    if not report.has_figures:
        return {"text": f"{_task(report.task)}: {headline}", "blocks": blocks}
    blocks.append(_fields_section(_report_fields(report)))
    movers = _movers_section(report)
    if movers is not None:
        blocks.append(movers)
    notes = []
    if report.queue_resolved:
        notes.append(f"{report.queue_resolved:,} waiting items were resolved by the new model.")
    if report.reason:
        notes.append(f"Decision: {escape(_fit(report.reason, _REASON_LIMIT))}.")
    if notes:
        blocks.append(_context(_mrkdwn(" ".join(notes))))
    summary = "; ".join(report_lines(report)[:3])
    return {"text": escape(_fit(summary, SECTION_TEXT_LIMIT)), "blocks": blocks}


# --- "Send to hitl" (message shortcut) ----------------------------------------------------------


def send_to_task_view(task_names: Sequence[str], *, preview: str, metadata: str) -> dict[str, Any]:
    """The modal of the "Send to hitl" shortcut: the message's start and a task to send it to.

    `metadata` (at most 3,000 characters, Slack's limit) comes back with the submission.
    """
    options = [
        {"text": _plain(_fit(name, ELEMENT_TEXT_LIMIT), literal=True), "value": name}
        for name in task_names[:MAX_SELECT_OPTIONS]
    ]
    return {
        "type": "modal",
        "callback_id": ids.VIEW_SEND,
        "title": _plain("Send to hitl"),
        "submit": _plain("Send"),
        "close": _plain("Cancel"),
        "private_metadata": metadata,
        "blocks": [
            _section(f">{escape(_fit(' '.join(preview.split()), 300))}"),
            {
                "type": "input",
                "block_id": ids.BLOCK_SEND_TASK,
                "label": _plain("Task"),
                "element": {
                    "type": "static_select",
                    "action_id": ids.ACTION_SEND_TASK,
                    "placeholder": _plain("Choose a task"),
                    "options": options,
                    **({"initial_option": options[0]} if len(options) == 1 else {}),
                },
            },
        ],
    }


def sent_to_task_reply(
    task_name: str,
    *,
    route: str,
    label: str | None,
    confidence: float,
    model_version: int | None,
    channel: str | None,
) -> Message:
    """What the person who sent a message to a task is told at once."""
    if label is None:
        verdict = "There is no model yet, so a person will label it"
    else:
        verdict = (
            f"{_model_name(model_version)} says *{escape(_fit(label, 200))}* "
            f"at {_confidence(confidence)}"
        )
    if route == "auto":
        what = f"{verdict}: confident enough, so that is its answer."
    else:
        where = f" in {_channel(channel)}" if channel else ""
        what = (
            f"{verdict}: below the threshold, so it went to review{where}. "
            "You will hear the answer."
        )
    return ephemeral_text(f":inbox_tray: Sent to {_task(task_name)}. {what}")


def reviewer_answered_notice(task_name: str, *, label: str, user_id: str, text: str) -> Message:
    """The message the sender gets when a reviewer has labelled what they sent."""
    quote = escape(_fit(" ".join(text.split()), 200))
    return ephemeral_text(
        f":white_check_mark: {mention(user_id)} labelled your message for {_task(task_name)} "
        f"as *{escape(_fit(label, 200))}*:\n>{quote}"
    )
