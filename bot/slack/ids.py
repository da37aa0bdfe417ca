"""Every Slack identifier in one place: the slash command, its words, action_ids, button values.

Buttons and menus of one message cannot share an `action_id`, so label buttons and label menus
carry a shared prefix and a number (`hitl_label:17`, `hitl_label_menu:0`); listeners register
with the compiled patterns below (`app.action(LABEL_ACTION_PATTERN)`).

A button or option `value` never holds a label: labels may be up to 200 characters of any
script and contain any separator, while an option value is capped at 150 characters. The value
is `"<item_id>:<label_index>"` (decimal, ASCII digits, no sign or leading zero), the index into the
task's ordered label set. A task's labels are fixed when it is created, so an index means the
same label for as long as the message lives (should editing ever come, append only).
"""

import re
from typing import Final

SLASH_COMMAND: Final = "/hitl"
CMD_HELP: Final = "help"
CMD_TASKS: Final = "tasks"
CMD_STATS: Final = "stats"
CMD_THRESHOLD: Final = "threshold"
CMD_RETRAIN: Final = "retrain"
CMD_SPOT_CHECKS: Final = "spot-checks"
CMD_VOTES: Final = "votes"
CMD_BUDGET: Final = "budget"
# Words inside a subcommand: `threshold [task] precision 95%`, `threshold [task] 0.85 preview`
# (or `preview 0.85`), `stats reviewers [task]`.
ARG_PRECISION: Final = "precision"
ARG_PREVIEW: Final = "preview"
ARG_REVIEWERS: Final = "reviewers"

# Every slash command the app registers (the manifest test checks each one is declared).
SLASH_COMMANDS: Final = (SLASH_COMMAND,)
# Subcommand words of `/hitl`, in the order `/hitl help` lists them.
COMMAND_WORDS: Final = (
    CMD_TASKS,
    CMD_STATS,
    CMD_THRESHOLD,
    CMD_SPOT_CHECKS,
    CMD_VOTES,
    CMD_BUDGET,
    CMD_RETRAIN,
    CMD_HELP,
)

ACTION_LABEL: Final = "hitl_label"
ACTION_LABEL_MENU: Final = "hitl_label_menu"
ACTION_SKIP: Final = "hitl_skip"
ACTION_CHANGE: Final = "hitl_change"
ACTION_OVERRIDE: Final = "hitl_override"

# The message shortcut "Send to hitl" and the modal it opens to pick a task.
SHORTCUT_SEND: Final = "hitl_send_to_task"
VIEW_SEND: Final = "hitl_send_to_task_modal"
BLOCK_SEND_TASK: Final = "hitl_task_block"
ACTION_SEND_TASK: Final = "hitl_task_choice"

LABEL_ACTION_PATTERN: Final = re.compile(rf"^{ACTION_LABEL}:[0-9]+$")
LABEL_MENU_PATTERN: Final = re.compile(rf"^{ACTION_LABEL_MENU}:[0-9]+$")

# Bounded so a forged value cannot make us parse a huge number; 18 digits fit a BIGINT id.
_NUMBER = r"(0|[1-9][0-9]{0,17})"
_CHOICE = re.compile(rf"{_NUMBER}:{_NUMBER}")
_ITEM = re.compile(_NUMBER)


def label_action_id(label_index: int) -> str:
    """The action_id of the button for label number `label_index` (unique within a message)."""
    return f"{ACTION_LABEL}:{_non_negative(label_index, 'label_index')}"


def label_menu_action_id(menu_number: int) -> str:
    """The action_id of the `menu_number`-th "Other label" menu of a message."""
    return f"{ACTION_LABEL_MENU}:{_non_negative(menu_number, 'menu_number')}"


def encode_choice(item_id: int, label_index: int) -> str:
    """The button/option value meaning "item `item_id` gets label number `label_index`"."""
    return f"{_non_negative(item_id, 'item_id')}:{_non_negative(label_index, 'label_index')}"


def decode_choice(value: str) -> tuple[int, int]:
    """`(item_id, label_index)` from an `encode_choice` value; ValueError on anything else."""
    match = _CHOICE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not a label choice: {str(value)[:40]!r}")
    return int(match.group(1)), int(match.group(2))


def encode_item(item_id: int) -> str:
    """The value of a Skip, Change or Override button: the item id."""
    return str(_non_negative(item_id, "item_id"))


def decode_item(value: str) -> int:
    """The item id from a value made by `encode_item`; ValueError on anything else."""
    match = _ITEM.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not an item id: {str(value)[:40]!r}")
    return int(match.group(1))


def _non_negative(number: int, name: str) -> int:
    # bool is an int subclass; True as an item id is a bug, not a 1.
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {number!r}")
    if number >= 10**18:
        raise ValueError(f"{name} {number} is too large to encode")
    return number
