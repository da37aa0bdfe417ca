"""The `hitl` command line: tasks, import, submit, retrain, stats, threshold, export."""

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TextIO, TypeVar

import typer
import typer.core
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from bot import outbox, webhooks
from bot import tasks as task_ops
from bot.answers import import_examples
from bot.errors import BadInputError, HitlError, NotFoundError
from bot.export import export_format, export_rows, write_export
from bot.ingest import parse_csv, read_source
from bot.posting_hours import PostingRules
from bot.queue import posted_today, queue_summary, set_daily_budget, waiting_items
from bot.registry import is_pruned, model_versions, pin_model
from bot.report import format_report_text
from bot.reviewers import ReviewerReport, reviewer_report
from bot.routing import Routed, submit
from bot.services import Services, build_services
from bot.settings import Settings
from bot.stats import task_stats
from bot.storage.db import upgrade
from bot.storage.schema import utcnow
from bot.training import latest_report, retrain_task
from bot.trust import (
    Preview,
    live_precision,
    preview,
    set_spot_check_rate,
    set_target_precision,
    set_votes_required,
    threshold_state,
)
from model.features import DEFAULT_FEATURIZER, FEATURIZERS, featurizer_available


def examples(*lines: str) -> str:
    """A help epilog listing example command lines, kept as written (no rewrapping)."""
    # "\b" on a line of its own tells click to print the next paragraph as it is.
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


_HELP_OPTIONS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    help="hitl: a human-in-the-loop text classifier that lives in Slack.\n\n"
    "Start with `hitl demo` (no Slack account needed), or create a task, import labelled "
    "examples, retrain and submit new items. `hitl COMMAND --help` explains each command.",
    epilog=examples(
        "hitl demo",
        "hitl task create tickets --labels billing,bug,feature --channel C0123ABCD",
        "hitl import tickets labelled.csv",
        "hitl retrain tickets",
        "hitl submit tickets new.csv --json",
        "hitl stats tickets",
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings=_HELP_OPTIONS,
    # Plain help, not rich markup: rich would drop text in [brackets] and reflow the examples.
    rich_markup_mode=None,
)
task_app = typer.Typer(
    help="Create, inspect and change tasks.\n\n"
    "A task is an ordered label set, a Slack review channel and a confidence threshold.",
    epilog=examples(
        "hitl task create tickets --labels billing,bug,feature --channel C0123ABCD",
        "hitl task list",
        "hitl task labels tickets --add refund",
    ),
    no_args_is_help=True,
    context_settings=_HELP_OPTIONS,
    rich_markup_mode=None,
)
db_app = typer.Typer(
    help="Database schema.",
    epilog=examples("hitl db upgrade"),
    no_args_is_help=True,
    context_settings=_HELP_OPTIONS,
    rich_markup_mode=None,
)
app.add_typer(task_app, name="task")
app.add_typer(db_app, name="db")

TaskName = Annotated[
    str, typer.Argument(metavar="NAME", help="The task's name; `hitl task list` shows them.")
]
if TYPE_CHECKING:
    FeaturizerName = str
else:
    # A Literal of the registered names: --help lists them and typer refuses any other.
    FeaturizerName = Literal[tuple(FEATURIZERS)]
ExportFormat = Literal["csv", "jsonl"]
CHUNK_ROWS = 2000  # rows per import/submit call inside the one transaction; paces the bar
_Row = TypeVar("_Row")


@cache
def services() -> Services:
    """Built on first use so that `hitl --help` touches no database."""
    return build_services(Settings())


def echo_json(value: Any) -> None:
    """Print one JSON document on one line."""
    typer.echo(json.dumps(value, ensure_ascii=False, default=str))


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@contextmanager
def progress_bar(total: int, *, label: str) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`, drawing a bar on stderr only when stderr is a terminal.

    Pipes, files and CI logs get nothing, and stdout never does, so `--json` stays pure JSON.
    """
    stream = sys.stderr
    if not _is_terminal(stream):
        yield lambda steps: None
        return
    # Redraw at most ~500 times however many rows there are.
    with typer.progressbar(
        length=total, label=label, file=stream, update_min_steps=max(1, total // 500)
    ) as bar:
        yield bar.update


@contextmanager
def stage_progress(label: str) -> Iterator[Callable[[str], None]]:
    """Yield `show(stage)`, keeping the current stage on one stderr line when it is a terminal.

    Meant for `retrain_task(..., progress=show)`, which names stages such as "training".
    """
    stream = sys.stderr
    if not _is_terminal(stream):
        yield lambda stage: None
        return
    started = time.monotonic()

    def show(stage: str) -> None:
        stream.write(f"\r\x1b[K{label}: {stage}… ({time.monotonic() - started:.0f} s)")
        stream.flush()

    finished = False
    try:
        yield show
        finished = True
    finally:
        # On failure only clear the line, so that the error message starts clean.
        done = f"{label}: done in {time.monotonic() - started:.0f} s\n" if finished else ""
        stream.write(f"\r\x1b[K{done}")
        stream.flush()


def _chunks(rows: list[_Row], size: int) -> Iterator[list[_Row]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _advancing(rows: Iterable[_Row], advance: Callable[[int], None]) -> Iterator[_Row]:
    for row in rows:
        yield row
        advance(1)


@db_app.command(
    "upgrade",
    epilog=examples("hitl db upgrade", "HITL_DATABASE_URL=sqlite:///x.db hitl db upgrade"),
)
def db_upgrade() -> None:
    """Create or upgrade the schema (also done automatically at start)."""
    svc = build_services(Settings(), migrate=False)
    upgrade(svc.engine)
    typer.echo("database schema is up to date")


@task_app.command(
    "create",
    epilog=examples(
        "hitl task create tickets --labels billing,bug,feature --channel C0123ABCD",
        "hitl task create reviews --labels-file labels.txt --threshold 85%",
    ),
)
def task_create(
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="Name of the new task: up to 80 letters, digits, '_', '-' or '.'.",
        ),
    ],
    labels: Annotated[
        str | None,
        typer.Option(help="Comma-separated labels, in the order the review buttons show them."),
    ] = None,
    labels_file: Annotated[
        Path | None,
        typer.Option(help="A UTF-8 file with one label per line (for labels with commas)."),
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option(
            help="Slack channel ID (C…) for review prompts; set later with `hitl task channel`."
        ),
    ] = None,
    threshold: Annotated[
        str | None,
        typer.Option(
            help="Confidence needed to accept a prediction automatically: above 0, at most 1 "
            "(0.8 or 80%). Default: HITL_DEFAULT_THRESHOLD, 0.8."
        ),
    ] = None,
    features: Annotated[
        FeaturizerName,
        typer.Option(
            help="Featurizer for this task's model; embeddings (sentence embeddings beside "
            "tfidf) needs `pip install 'hitl-bot[embeddings]'`."
        ),
    ] = DEFAULT_FEATURIZER,
    team: Annotated[
        str | None,
        typer.Option(
            help="Slack workspace ID (T…) of the channel; required when the app serves many "
            "workspaces (SLACK_CLIENT_ID and SLACK_CLIENT_SECRET set)."
        ),
    ] = None,
) -> None:
    """Create a task with an ordered label set."""
    if (labels is None) == (labels_file is None):
        raise BadInputError("give the labels with exactly one of --labels or --labels-file")
    team_id = task_ops.validate_team(team)
    label_list = (
        task_ops.read_labels_file(labels_file)
        if labels_file
        else task_ops.parse_labels(labels or "")
    )
    svc = services()
    if team_id is None and svc.settings.multi_workspace:
        raise BadInputError(
            "the app serves many workspaces: name the task's workspace with --team T…"
        )
    value = task_ops.parse_threshold(threshold) if threshold else svc.settings.default_threshold
    # Some featurizers need an extra or a model file: refuse now, not at the first retrain.
    missing = featurizer_available(features)
    if missing is not None:
        raise BadInputError(f"cannot use --features {features}: {missing}")
    with svc.sessions.begin() as session:
        task = task_ops.create_task(
            session,
            name,
            label_list,
            channel=channel,
            threshold=value,
            featurizer=features,
            team_id=team_id,
        )
        typer.echo(
            f"created task {task.name!r}: {len(task.labels)} labels, threshold {task.threshold:g}"
            + (f", channel {task.channel}" if task.channel else ", no channel yet")
            + (f", workspace {task.team_id}" if task.team_id else "")
        )


@task_app.command("list", epilog=examples("hitl task list", "hitl task list --json"))
def task_list(
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON array of {name, labels (count), threshold, channel}.",
        ),
    ] = False,
) -> None:
    """List tasks."""
    with services().sessions.begin() as session:
        found = task_ops.list_tasks(session)
        rows = [
            {
                "name": t.name,
                "labels": len(t.labels),
                "threshold": t.threshold,
                "channel": t.channel,
            }
            for t in found
        ]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        typer.echo("no tasks yet; create one with `hitl task create NAME --labels a,b`")
    for row in rows:
        typer.echo(
            f"{row['name']}\t{row['labels']} labels\tthreshold {row['threshold']:g}\t"
            f"{row['channel'] or '-'}"
        )


@task_app.command(
    "show", epilog=examples("hitl task show tickets", "hitl task show tickets --json")
)
def task_show(
    name: TaskName,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object: name, labels, channel, workspace, threshold, "
            "daily_budget (null: no limit), features, webhook (its URL; null: none), "
            "created_at.",
        ),
    ] = False,
) -> None:
    """Show a task's settings and labels."""
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name)
        info = {
            "name": task.name,
            "labels": list(task.labels),
            "channel": task.channel,
            "workspace": task.team_id,
            "threshold": task.threshold,
            "daily_budget": task.daily_budget,
            "features": task.featurizer,
            "webhook": task.webhook_url,
            "created_at": task.created_at.isoformat(),
        }
    if as_json:
        echo_json(info)
        return
    for key, value in info.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        typer.echo(f"{key}: {shown if shown is not None else '-'}")


@task_app.command(
    "channel",
    epilog=examples(
        "hitl task channel tickets C0123ABCD",
        "hitl task channel tickets --clear",
        "hitl task channel tickets",
    ),
)
def task_channel(
    name: TaskName,
    channel: Annotated[
        str | None,
        typer.Argument(
            metavar="CHANNEL_ID",
            help="Slack channel ID (C…, from the channel's details in Slack), or `none` to "
            "remove it. Leave out to show the current channel.",
        ),
    ] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove the channel: prompts wait until one is set.")
    ] = False,
) -> None:
    """Show or set a task's Slack review channel.

    Review prompts are posted there; every change is written to the audit log.
    """
    if clear and channel is not None:
        raise BadInputError("give either a CHANNEL_ID or --clear, not both")
    new = None if clear or (channel or "").strip().lower() == "none" else channel
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name, lock=True)
        old = task.channel
        if channel is None and not clear:
            typer.echo(old or "none")
            return
        task_ops.set_channel(session, task, new, actor=_actor())
        typer.echo(f"{name}: channel {old or 'none'} → {task.channel or 'none'}")


@task_app.command(
    "labels",
    epilog=examples(
        "hitl task labels tickets",
        "hitl task labels tickets --add refund --add 'account closure'",
        "hitl task labels tickets --json",
    ),
)
def task_labels(
    name: TaskName,
    add: Annotated[
        list[str] | None,
        typer.Option(
            "--add",
            metavar="LABEL",
            help="Append a label (repeat for more). Labels are only ever appended: existing "
            "ones keep their place, since Slack buttons refer to labels by position.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the task's labels as one JSON array, in order.")
    ] = False,
) -> None:
    """List a task's labels, or append new ones.

    New labels go at the end; every change is written to the audit log.
    """
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name, lock=bool(add))
        labels = (
            task_ops.add_labels(session, task, add, actor=_actor()) if add else list(task.labels)
        )
    if as_json:
        echo_json(labels)
    elif add:
        typer.echo(f"{name}: added {', '.join(add)}; {len(labels)} labels now")
    else:
        typer.echo("\n".join(labels))


@task_app.command(
    "spot-checks",
    epilog=examples(
        "hitl task spot-checks tickets",
        "hitl task spot-checks tickets 0.02",
        "hitl task spot-checks tickets 5%",
    ),
)
def task_spot_checks(
    name: TaskName,
    share: Annotated[
        str | None,
        typer.Argument(
            metavar="SHARE",
            help="Share of automatic answers also sent to a person, 0 to 1 (0.02 or 2%; 0 "
            "turns spot checks off). Leave out to show it.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help='One JSON object: {"task", "spot_check_rate", "auto_precision"}.'
        ),
    ] = False,
) -> None:
    """Show or set the share of automatic answers that a person checks.

    Spot checks are posted without the model's guess; their answers measure the precision of
    the automatic answers (`hitl stats`) and correct the ones that were wrong.
    """
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name, lock=share is not None)
        old = task.spot_check_rate
        if share is not None:
            set_spot_check_rate(session, task, share, actor=_actor())
        live = live_precision(session, task)
        rate = task.spot_check_rate
    if as_json:
        echo_json({"task": name, "spot_check_rate": rate, "auto_precision": live.to_json()})
    elif share is not None:
        typer.echo(f"{name}: spot checks {old:.1%} → {rate:.1%} of automatic answers")
    else:
        typer.echo(f"{rate:g}")


@task_app.command("votes", epilog=examples("hitl task votes tickets", "hitl task votes tickets 2"))
def task_votes(
    name: TaskName,
    votes: Annotated[
        str | None,
        typer.Argument(
            metavar="N",
            help="Agreeing answers that resolve an item (1 to 10); disagreement goes to the "
            "admins. Leave out to show it.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='One JSON object: {"task", "votes_required"}.')
    ] = False,
) -> None:
    """Show or set how many reviewers must agree before an item is resolved."""
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name, lock=votes is not None)
        old = task.votes_required
        if votes is not None:
            set_votes_required(session, task, votes, actor=_actor())
        new = task.votes_required
    if as_json:
        echo_json({"task": name, "votes_required": new})
    elif votes is not None:
        typer.echo(f"{name}: votes required {old} → {new}")
    else:
        typer.echo(str(new))


@task_app.command(
    "budget",
    epilog=examples(
        "hitl task budget tickets",
        "hitl task budget tickets 50",
        "hitl task budget tickets none --json",
    ),
    # So that a negative number reaches the check (and its message) instead of being an option.
    context_settings={**_HELP_OPTIONS, "ignore_unknown_options": True},
)
def task_budget(
    name: TaskName,
    budget: Annotated[
        str | None,
        typer.Argument(
            metavar="N",
            help="Prompts the task may post a day (a whole number from 1), or `none` (also "
            "`unlimited`, `off`) for no limit. Leave out to show it.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help='One JSON object: {"task", "daily_budget" (null: none), "posted_today"}.'
        ),
    ] = False,
) -> None:
    """Show or set how many review prompts a task posts a day.

    The day is in HITL_TIMEZONE. Prompts beyond the budget stay queued and ranked, and go out
    the next day; the default is no limit. Every change is written to the audit log.
    """
    svc = services()
    hours = PostingRules.from_settings(svc.settings).hours
    with svc.sessions.begin() as session:
        task = task_ops.get_task(session, name, lock=budget is not None)
        old = task.daily_budget
        if budget is not None:
            set_daily_budget(session, task, budget, actor=_actor())
        new = task.daily_budget
        today = posted_today(session, task, hours=hours, now=utcnow())
    if as_json:
        echo_json({"task": name, "daily_budget": new, "posted_today": today})
    elif budget is not None:
        typer.echo(f"{name}: daily budget {_budget_text(old)} → {_budget_text(new)}")
    else:
        typer.echo(f"{_budget_text(new)} ({today} posted today)")


def _budget_text(budget: int | None) -> str:
    return "none" if budget is None else f"{budget} a day"


@task_app.command(
    "webhook",
    epilog=examples(
        "hitl task webhook tickets https://example.com/hooks/hitl",
        "hitl task webhook tickets",
        "hitl task webhook tickets --rotate-secret",
        "hitl task webhook tickets none",
    ),
)
def task_webhook(
    name: TaskName,
    url: Annotated[
        str | None,
        typer.Argument(
            metavar="URL",
            help="Where to POST each resolved item's result (https:// or http://), or `none` "
            "to stop. Leave out to show the webhook and its deliveries.",
        ),
    ] = None,
    rotate_secret: Annotated[
        bool,
        typer.Option("--rotate-secret", help="Make a new signing secret (printed once)."),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='One JSON object: {"task", "url" (null: none), "secret" (only when a new one '
            'was made, else null), "deliveries": {"pending", "delivered", "failed", '
            '"cancelled"}, "last_error"}.',
        ),
    ] = False,
) -> None:
    """Show or set the URL a task's results are POSTed to, signed, as items resolve.

    Each result (by the model, a person, a spot check, a vote or an import; again on a later
    correction) is sent as JSON with an X-Hitl-Signature header, retried for a day until the
    receiver answers 2xx. The signing secret is made with the first URL and printed once;
    keep it where the receiver can read it. Every change is written to the audit log.
    """
    remove = url is not None and url.strip().lower() in ("none", "off")
    changes = url is not None or rotate_secret
    if remove and rotate_secret:
        raise BadInputError("give either `none` or --rotate-secret, not both")
    secret: str | None = None
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name, lock=changes)
        old = task.webhook_url
        if remove:
            webhooks.remove_webhook(session, task, actor=_actor())
        elif url is not None:
            secret = webhooks.set_webhook(
                session, task, url, actor=_actor(), rotate_secret=rotate_secret
            )
        elif rotate_secret:
            secret = webhooks.rotate_webhook_secret(session, task, actor=_actor())
        state = webhooks.webhook_state(session, task)
    if as_json:
        echo_json({"task": name, "url": state["url"], "secret": secret, **state})
        return
    if changes:
        typer.echo(f"{name}: webhook {old or 'none'} → {state['url'] or 'none'}")
        if secret is not None:
            typer.echo(f"signing secret (shown once): {secret}")
        return
    deliveries = state["deliveries"]
    typer.echo(state["url"] or "none")
    typer.echo(", ".join(f"{count} {status}" for status, count in deliveries.items()))
    if state["last_error"]:
        typer.echo(f"last error: {state['last_error']}")


@task_app.command(
    "models",
    epilog=examples(
        "hitl task models tickets",
        "hitl task models tickets --pin 7",
        "hitl task models tickets --unpin 7 --json",
    ),
)
def task_models(
    name: TaskName,
    pin: Annotated[
        int | None,
        typer.Option(
            "--pin",
            metavar="VERSION",
            help="Keep this version's model file when old ones are pruned.",
        ),
    ] = None,
    unpin: Annotated[
        int | None,
        typer.Option("--unpin", metavar="VERSION", help="Let this version be pruned again."),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON array of {version, status, created_at, train_size, pinned, pruned}.",
        ),
    ] = False,
) -> None:
    """List a task's model versions; pin one so that pruning keeps it.

    Only the active version, the last HITL_KEEP_MODELS that served and pinned ones keep their
    model file; rejected candidates keep their report only.
    """
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name)
        for version, pinned in ((pin, True), (unpin, False)):
            if version is not None:
                pin_model(session, task, version, pinned=pinned, actor=_actor())
        rows = [
            {
                "version": row.version,
                "status": row.status,
                "created_at": row.created_at.isoformat(),
                "train_size": row.train_size,
                "pinned": row.pinned,
                "pruned": is_pruned(row),
            }
            for row in model_versions(session, task)
        ]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        typer.echo(f"{name}: no model yet")
    for row in rows:
        flags = (
            [str(row["status"])]
            + (["pinned"] if row["pinned"] else [])
            + (["pruned"] if row["pruned"] else [])
        )
        typer.echo(
            f"v{row['version']}  {str(row['created_at'])[:16]}  {row['train_size']:>7} answers  "
            + ", ".join(flags)
        )


@task_app.command(
    "delete",
    epilog=examples("hitl task delete tickets", "hitl task delete tickets --yes --json"),
)
def task_delete(
    name: TaskName,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask; needed when stdin is not a terminal.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON object: the task and the rows deleted."),
    ] = False,
) -> None:
    """Delete a task and everything of it: items, answers, prompts, models, retrain runs.

    Cannot be undone; `hitl export` first keeps the labels. The deletion is written to the
    audit log. Prompts already in Slack stay there; a click on one says the item was deleted.
    """
    from bot import retention

    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name, lock=True)
        found = retention.footprint(session, task)
        _confirm(
            f"Delete task {name} and its {found.items} items, {found.answers} answers, "
            f"{found.models} models?",
            yes=yes,
        )
        removed = retention.delete_task(session, task, actor=_actor())
    if as_json:
        echo_json({"task": name, "deleted": removed.as_dict()})
    else:
        typer.echo(
            f"deleted task {name}: {removed.items} items, {removed.answers} answers, "
            f"{removed.model_versions} models"
        )


@task_app.command(
    "purge",
    epilog=examples(
        "hitl task purge tickets --before 2024-01-01 --export old.jsonl",
        "hitl task purge tickets --before 2024-01-01T00:00:00+00:00 --yes --json",
    ),
)
def task_purge(
    name: TaskName,
    before: Annotated[
        str,
        typer.Option(
            "--before",
            metavar="DATE",
            help="Delete items submitted before this ISO date or datetime (HITL_TIMEZONE "
            "unless it has an offset).",
        ),
    ],
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            metavar="FILE",
            help="First write those items with their labels and answers here (.csv or .jsonl, "
            "as `hitl export`); nothing is deleted unless it was written in full.",
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask; needed when stdin is not a terminal.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON object: the task, the cutoff, rows deleted."),
    ] = False,
) -> None:
    """Delete a task's items submitted before a date, with their answers and prompts.

    The task, its models and its settings stay. Everything happens in one transaction, and
    the purge is written to the audit log.
    """
    from bot import retention
    from bot.posting_hours import parse_time_zone

    svc = services()
    zone = parse_time_zone(svc.settings.timezone)
    cutoff = retention.parse_before(before, zone=zone, now=utcnow())
    chosen = export_format(str(export), None) if export is not None else None
    with svc.sessions.begin() as session:
        task = task_ops.get_task(session, name, lock=True)
        found = retention.footprint(session, task, before=cutoff)
        _confirm(
            f"Delete {found.items} items of task {name} submitted before {cutoff.isoformat()}, "
            f"with their {found.answers} answers"
            + (f" and {found.open_prompts} open review prompts" if found.open_prompts else "")
            + "?",
            yes=yes,
        )
        exported = None
        if export is not None and chosen is not None:
            # In the purge's transaction: the file holds exactly the items deleted below.
            with _atomic_write(export) as out:
                rows = export_rows(session, task, submitted_before=cutoff)
                exported = write_export(rows, out, fmt=chosen)
        removed = retention.purge_items(session, task, before=cutoff, actor=_actor())
    if as_json:
        echo_json(
            {
                "task": name,
                "before": cutoff.isoformat(),
                "exported": exported,
                "deleted": removed.as_dict(),
            }
        )
        return
    if exported is not None:
        typer.echo(f"exported {exported} items to {export}", err=True)
    typer.echo(
        f"{name}: deleted {removed.items} items submitted before {cutoff.isoformat()} "
        f"({removed.answers} answers, {removed.review_prompts} prompts)"
    )


def _confirm(question: str, *, yes: bool) -> None:
    """Ask on a terminal; without one, refuse unless --yes was given (nothing is changed)."""
    if yes:
        return
    if not _is_terminal(sys.stdin):
        raise BadInputError(f"{question.rstrip('?')}: not without --yes (stdin is no terminal)")
    if not typer.confirm(question, default=False, err=True):
        raise typer.Abort()


@app.command(
    "import",
    epilog=examples("hitl import tickets labelled.csv", "cat labelled.csv | hitl import tickets -"),
)
def import_command(
    name: TaskName,
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE",
            help="UTF-8 CSV with a header row and columns text,label (and optionally id); "
            "- reads stdin. A row with a known id records a new answer for that item.",
        ),
    ],
) -> None:
    """Import labelled examples as answers by `import`.

    The whole file is checked first: a bad row is named by its line and nothing is stored.
    """
    svc = services()
    max_chars = svc.settings.max_text_chars
    source, data = read_source(file)
    created = written = unchanged = 0
    with svc.sessions.begin() as session:
        task = task_ops.get_task(session, name)
        # parse_csv checks the whole file first, so an error names its line before any write;
        # the chunks share this one transaction, so a later failure still stores nothing.
        rows = parse_csv(source, data, require_label=True, labels=task.labels, max_chars=max_chars)
        now = utcnow()
        with progress_bar(len(rows), label=f"importing into {name}") as advance:
            for chunk in _chunks(rows, CHUNK_ROWS):
                outcome = import_examples(session, task, chunk, max_chars=max_chars, now=now)
                created += outcome.items_created
                written += outcome.answers_written
                unchanged += outcome.unchanged
                advance(len(chunk))
    typer.echo(
        f"imported {len(rows)} rows into {name!r}: {created} new items, "
        f"{written} answers written, {unchanged} unchanged"
    )


@app.command(
    "submit",
    epilog=examples(
        "hitl submit tickets new.csv",
        "hitl submit tickets new.csv --json > routed.jsonl",
    ),
)
def submit_command(
    name: TaskName,
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE",
            help="UTF-8 CSV with a header row and a text column (and optionally id); "
            "- reads stdin. An id sent before with the same text returns the stored result.",
        ),
    ],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object per item, one per line: item_id, id, label, "
            "confidence, route (auto or review), model_version, duplicate.",
        ),
    ] = False,
) -> None:
    """Classify new items and route them by confidence.

    Items the model is sure of (confidence at or above the task's threshold) are labelled
    automatically; the rest go to the task's Slack channel for a person to answer.
    """
    svc = services()
    max_chars = svc.settings.max_text_chars
    source, data = read_source(file)
    # parse_csv checks the whole batch (check_batch), so an id used twice in the file is refused
    # even when its two rows would land in different chunks.
    rows = parse_csv(source, data, require_label=False, max_chars=max_chars)
    results: list[Routed] = []
    with svc.sessions.begin() as session:
        task = task_ops.get_task(session, name)
        now = utcnow()
        with progress_bar(len(rows), label=f"submitting to {name}") as advance:
            for chunk in _chunks(rows, CHUNK_ROWS):
                results += submit(
                    session,
                    task,
                    chunk,
                    registry=svc.registry,
                    max_chars=max_chars,
                    source="cli",
                    now=now,
                )
                advance(len(chunk))
        state = threshold_state(task)
    if state["automating"]:
        rule = f"threshold {state['threshold']:g}"
    else:
        rule = f"target precision {state['target_precision']:.1%}: nothing automated yet"
    if as_json:
        for result in results:
            echo_json(result.as_dict())
        return
    auto = sum(r.route == "auto" for r in results)
    duplicates = sum(r.duplicate for r in results)
    version = next((r.model_version for r in results if r.model_version), None)
    model = f"model v{version}" if version else "no model yet: every item goes to review"
    typer.echo(
        f"submitted {len(results)} items to {name!r} ({model}, {rule}): "
        f"{auto} auto ({auto / len(results):.0%}), {len(results) - auto} review"
        + (f"; {duplicates} already known" if duplicates else "")
    )


@app.command(
    "retrain", epilog=examples("hitl retrain tickets", "hitl retrain tickets --force --json")
)
def retrain_command(
    name: TaskName,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='One JSON object: {"status", "version", "old_version", "report"}; the report '
            "in the same form as `hitl report --json`.",
        ),
    ] = False,
    force: Annotated[bool, typer.Option(help="Train even without new answers.")] = False,
) -> None:
    """Run the retrain job now: train, compare with the active model, promote if no worse."""
    svc = services()
    with stage_progress(f"retraining {name}") as show:
        result = retrain_task(
            svc.sessions,
            name,
            registry=svc.registry,
            settings=svc.settings,
            trigger="cli",
            force=force,
            progress=show,
        )
    if as_json:
        echo_json(
            {
                "status": result.status.value,
                "version": result.version,
                "old_version": result.old_version,
                "report": result.report.to_json(),
            }
        )
        return
    typer.echo(format_report_text(result.report))


@app.command(
    "report", epilog=examples("hitl report tickets", "hitl report tickets --version 3 --json")
)
def report_command(
    name: TaskName,
    version: Annotated[int | None, typer.Option(help="The run that produced model vN.")] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="The stored report as one JSON object (status, headline, new_labels, holdout, "
            "recent, movers, reason…).",
        ),
    ] = False,
) -> None:
    """Show the latest retrain report of a task (or the one that produced --version N)."""
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name)
        report = latest_report(session, task, version=version)
        if report is None:
            which = f" for model v{version}" if version else ""
            raise NotFoundError(f"no retrain report{which} for {name!r}; run `hitl retrain {name}`")
    if as_json:
        echo_json(report.to_json())
        return
    typer.echo(format_report_text(report))


@app.command(
    "stats",
    epilog=examples(
        "hitl stats tickets", "hitl stats tickets --json", "hitl stats tickets --reviewers --json"
    ),
)
def stats_command(
    name: TaskName,
    reviewers: Annotated[
        bool,
        typer.Option(
            "--reviewers",
            help="Per person: answers, agreement with the final label and with spot checks; "
            "and the team's agreement (Cohen's kappa for two raters, Krippendorff's alpha "
            "for more).",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object: items, auto, review, review_queue, labels_by_source "
            "(slack, import, spot_check, total, people), model_version, model_metrics, "
            "posting (state, reason, since), prompts_failed, target_precision, threshold, "
            "precision_lower_bound, auto_precision (estimate, low, high, n)…; with "
            "--reviewers: reviewers […] and agreement {measure, value}",
        ),
    ] = False,
) -> None:
    """Items, routing, stored labels by source, queue and the active model of a task."""
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name)
        if reviewers:
            team = reviewer_report(session, task)
        else:
            stats = task_stats(session, task)
    if reviewers:
        if as_json:
            echo_json(team.as_dict())
        else:
            typer.echo(reviewers_text(team))
        return
    if as_json:
        echo_json(stats.as_dict())
        return
    model = (
        f"v{stats.model_version} (accuracy {stats.model_metrics.get('accuracy', 0):.3f}, "
        f"macro-F1 {stats.model_metrics.get('macro_f1', 0):.3f}, "
        f"{stats.model_metrics.get('evaluation', '?')})"
        if stats.model_version
        else "none yet"
    )
    share = f"{stats.auto / stats.items:.0%}" if stats.items else "-"
    if stats.target_precision is None:
        threshold = f"threshold {stats.threshold:g} (set by hand)"
    elif stats.automating:
        threshold = (
            f"target precision {stats.target_precision:.1%}: threshold {stats.threshold:.4g}, "
            f"precision ≥ {stats.precision_lower_bound:.3f}"
        )
    else:
        threshold = f"target precision {stats.target_precision:.1%}: nothing automated yet"
    live = stats.auto_precision
    checks = (
        f"spot checks: {live.estimate:.1%} right (95% interval {live.low:.1%}-{live.high:.1%}, "
        f"n={live.n}) at {stats.spot_check_rate:.1%} of automatic answers"
        if live.n and live.estimate is not None
        else f"spot checks: none answered yet ({stats.spot_check_rate:.1%} of automatic answers)"
    )
    typer.echo(
        f"task {stats.task}: {threshold}, model {model}\n"
        f"items {stats.items}: {stats.auto} auto ({share}), {stats.review} review, "
        f"{stats.review_queue} waiting\n"
        + f"labels stored {stats.label_counts.total}: {stats.label_counts.breakdown()}"
        + f" (Slack answers in 7 days: {stats.answers_7d:,})\n"
        + checks
    )
    if stats.precision_alarm:
        typer.echo(
            "warning: spot checks put the automatic answers below the target precision; "
            "the threshold is raised at the next retrain"
        )
    elif stats.target_precision is not None and not stats.automating and stats.threshold_reason:
        typer.echo(f"why: {stats.threshold_reason}")
    posting = stats.posting
    if posting["state"] == "ok":
        typer.echo("posting: ok")
    else:
        reason = str(posting["reason"])
        hint = outbox.POSTING_HINTS.get(reason, "check the app's permissions in Slack")
        typer.echo(f"posting: blocked since {posting['since']} ({reason}): prompts wait; {hint}")
    if stats.prompts_failed:
        typer.echo(
            f"{stats.prompts_failed} prompts refused by Slack as malformed; "
            f"`hitl prompts retry {stats.task}` sends them again"
        )


prompts_app = typer.Typer(
    help="Review prompts in the outbox.",
    epilog=examples("hitl prompts retry tickets"),
    no_args_is_help=True,
    context_settings=_HELP_OPTIONS,
    rich_markup_mode=None,
)
app.add_typer(prompts_app, name="prompts")


@prompts_app.command(
    "retry", epilog=examples("hitl prompts retry tickets", "hitl prompts retry tickets --json")
)
def prompts_retry(
    name: TaskName,
    as_json: Annotated[
        bool,
        typer.Option("--json", help='Print one JSON object: {"task": …, "requeued": N}.'),
    ] = False,
) -> None:
    """Send again the prompts of a task that Slack refused as malformed (after a fix).

    They go out before the task's waiting prompts; the re-queue is written to the audit log.
    Prompts held back by a refused token or channel are not failed: they go out by themselves.
    """
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name)
        requeued = outbox.requeue_failed(session, task, actor=_actor(), now=utcnow())
    if as_json:
        echo_json({"task": name, "requeued": requeued})
        return
    typer.echo(f"{name}: {requeued} failed prompts re-queued")


@app.command(
    "queue",
    epilog=examples(
        "hitl queue tickets",
        "hitl queue tickets --limit 10",
        "hitl queue tickets --limit 0 --json > waiting.jsonl",
    ),
)
def queue_command(
    name: TaskName,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", min=0, metavar="N", help="Show the first N items; 0 shows all of them."
        ),
    ] = 50,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per item, one per line: id (your id, as in the CSV), item_id "
            "(ours), text, predicted_label, confidence, priority.",
        ),
    ] = False,
) -> None:
    """The items waiting for a person, in the order they are asked.

    First those already posted in the channel and not answered yet (longest there first), then
    the ones not posted yet in the order the bot will post them: most uncertain first, spread
    so that near-duplicates do not come together, older ones rising by a third of a point a
    day. An answer from `hitl import` (same id) takes an item off the queue, as a click does.
    """
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name)
        waiting = waiting_items(session, task, limit=limit or None)
        total = queue_summary(session, task).waiting
    if as_json:
        for entry in waiting:
            echo_json(entry.as_dict())
        return
    if not waiting:
        typer.echo(f"{name}: nothing waits for a person")
        return
    typer.echo(f"{'#':>4}  {'id':<16} {'state':<7} {'priority':>8} {'guess':<20} text")
    for position, entry in enumerate(waiting, start=1):
        ref = entry.external_id if entry.external_id is not None else f"#{entry.item_id}"
        guess = "-"
        if entry.predicted_label is not None and entry.confidence is not None:
            guess = f"{entry.predicted_label[:14]} {entry.confidence:.0%}"
        text = " ".join(entry.text.split())
        typer.echo(
            f"{position:>4}  {ref[:16]:<16} {'posted' if entry.posted else 'queued':<7} "
            f"{entry.priority:>8.3f} {guess:<20} {text[:60] + ('…' if len(text) > 60 else '')}"
        )
    if total > len(waiting):
        typer.echo(f"… and {total - len(waiting):,} more (--limit 0 shows all)")


@app.command(
    "threshold",
    epilog=examples(
        "hitl threshold tickets",
        "hitl threshold tickets 0.85",
        "hitl threshold tickets 85%",
        "hitl threshold tickets --precision 0.95",
        "hitl threshold tickets 0.85 --preview --json",
    ),
)
def threshold_command(
    name: TaskName,
    value: Annotated[
        str | None,
        typer.Argument(
            metavar="VALUE",
            help="New threshold, above 0 and at most 1 (0.85 or 85%). Leave out to show it.",
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            "--precision",
            help="Target precision instead of a threshold (0.95 or 95%): the threshold is "
            "chosen so that automatic answers reach it with 90% confidence, and re-chosen "
            "after every retrain.",
        ),
    ] = None,
    show_preview: Annotated[
        bool,
        typer.Option(
            "--preview",
            help="Show what VALUE would do to recent traffic without changing anything.",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object: mode, target_precision, threshold, precision_lower_bound, "
            "automating, reason; with --preview: review_share, review_per_day, "
            "auto_precision {estimate, low, high, n}…",
        ),
    ] = False,
) -> None:
    """Show or set a task's confidence threshold, or a target precision.

    Lower means less work for people and more wrong automatic labels. With --precision the
    bot picks the lowest threshold whose automatic answers reach the target on held-out
    answers; until the evidence supports the target, items keep going to people. Every
    change is written to the audit log.
    """
    if precision is not None and value is not None:
        raise BadInputError("give either a threshold or --precision, not both")
    if show_preview and value is None:
        raise BadInputError(
            "--preview needs a threshold to try, e.g. `hitl threshold T 0.85 --preview`"
        )
    svc = services()
    with svc.sessions.begin() as session:
        task = task_ops.get_task(session, name, lock=value is not None or precision is not None)
        if show_preview:
            assert value is not None
            result = preview(
                session,
                task,
                value,
                registry=svc.registry,
                days=svc.settings.report_window_days,
            )
            if as_json:
                echo_json(result.as_dict())
                return
            typer.echo(preview_text(result))
            return
        if value is None and precision is None:
            state = threshold_state(task)
            if as_json:
                echo_json({"task": name, **state})
            elif state["mode"] == "manual":
                typer.echo(f"{task.threshold:g}")
            else:
                typer.echo(threshold_text(name, state))
            return
        old = task.threshold
        if precision is not None:
            set_target_precision(session, task, precision, actor=_actor())
        else:
            assert value is not None
            task_ops.set_threshold(session, task, value, actor=_actor())
        state = threshold_state(task)
    if as_json:
        echo_json({"task": name, "old_threshold": old, **state})
    elif state["mode"] == "manual":
        typer.echo(f"{name}: threshold {old:g} → {state['threshold']:g}")
    else:
        typer.echo(threshold_text(name, state))


def reviewers_text(team: ReviewerReport) -> str:
    """One line per reviewer, then the team's agreement."""
    lines = [f"task {team.task}: {len(team.reviewers)} reviewers"]
    for r in team.reviewers:
        agree = "-" if r.agree_final is None else f"{r.agree_final:.0%}"
        spot = (
            f"{r.spot_checks} spot checks, {r.agree_model_on_spot_checks:.0%} confirmed the model"
            if r.spot_checks and r.agree_model_on_spot_checks is not None
            else "no spot checks"
        )
        lines.append(
            f"{r.user}: {r.answers} answers, {r.skips} skips, agrees with the final label "
            f"{agree} of {r.resolved}; {spot}"
        )
    a = team.agreement
    if a.measure is None:
        lines.append("team agreement: no item has answers from two people yet")
    else:
        value = "undefined" if a.value is None else f"{a.value:.3f}"
        name = "Cohen's kappa" if a.measure == "cohen_kappa" else "Krippendorff's alpha"
        lines.append(f"team agreement: {name} {value} on {a.items} items, {a.raters} raters")
    return "\n".join(lines)


def threshold_text(name: str, state: dict[str, Any]) -> str:
    """`tickets: target precision 95%: threshold 0.87 (precision ≥ 0.953 with 90% confidence)`."""
    head = f"{name}: target precision {state['target_precision']:.1%}"
    if state["automating"]:
        return (
            f"{head}: threshold {state['threshold']:.4g} (precision ≥ "
            f"{state['precision_lower_bound']:.3f} with {state['confidence_level']:.0%} "
            f"confidence)\n{state['reason']}"
        )
    return f"{head}: nothing is automated yet\n{state['reason']}"


def preview_text(result: Preview) -> str:
    """The what-if in a few lines."""
    if result.review_share is None:
        return (
            f"{result.task}: no items in the last {result.days} days to preview threshold "
            f"{result.threshold:g} on"
        )
    estimate = result.auto_precision
    precision = (
        f"{estimate['estimate']:.1%} (95% interval {estimate['low']:.1%}-{estimate['high']:.1%}, "
        f"{estimate['n']} held-out answers)"
        if estimate.get("estimate") is not None
        else "unknown (no held-out answers above this threshold)"
    )
    return (
        f"{result.task} at threshold {result.threshold:g} (model v{result.model_version}, "
        f"{result.items} items in {result.days} days; now "
        + (
            f"{result.current_threshold:g}"
            if result.current_threshold is not None
            else "nothing automated"
        )
        + ")\n"
        f"to people: {result.review_share:.1%} ≈ {result.review_per_day:.1f} items a day\n"
        f"automatic: {1 - result.review_share:.1%} ≈ {result.auto_per_day:.1f} items a day, "
        f"precision {precision}\n"
        "nothing was changed"
    )


@app.command(
    "export",
    epilog=examples(
        "hitl export tickets results.csv",
        "hitl export tickets - --format jsonl | head",
    ),
)
def export_command(
    name: TaskName,
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE",
            help="Output file, .csv or .jsonl (the format follows the name unless --format is "
            "given); - writes stdout. Written in full or not at all.",
        ),
    ],
    fmt: Annotated[
        ExportFormat | None,
        typer.Option("--format", help="Output format; needed for - or other file names."),
    ] = None,
) -> None:
    """Export every item with its final label.

    Each row also says who gave the label (model or person), the model's prediction and its
    confidence.
    """
    chosen = export_format(file, fmt)
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name)
        total = task_ops.item_count(session, task)
        with progress_bar(total, label=f"exporting {name}") as advance:
            rows = _advancing(export_rows(session, task), advance)
            if file == "-":
                count = write_export(rows, sys.stdout, fmt=chosen)
            else:
                with _atomic_write(Path(file)) as out:
                    count = write_export(rows, out, fmt=chosen)
    if file != "-":
        typer.echo(f"exported {count} items to {file}", err=True)


@app.command(
    "demo",
    epilog=examples(
        "hitl demo",
        "hitl demo --items 200 --noise 0.1 --db /tmp/demo.db",
        "hitl demo --web --port 8080 --reviewers 1",
    ),
)
def demo_command(
    items: Annotated[
        int | None,
        typer.Option(min=20, max=750, help="Items to stream in. Default: 600; 100 with --web."),
    ] = None,
    seed_per_label: Annotated[
        int, typer.Option(min=3, max=40, help="Labelled examples per label to start from.")
    ] = 5,
    noise: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of deliberately wrong answers.")
    ] = 0.05,
    rate: Annotated[
        float,
        typer.Option(min=1.0, max=100.0, help="Messages per second the stand-in allows."),
    ] = 20.0,
    db: Annotated[
        Path,
        typer.Option(
            "--db", help="SQLite file the demo leaves behind (replaced), chart beside it."
        ),
    ] = Path("hitl-demo.db"),
    web: Annotated[
        bool,
        typer.Option(
            "--web",
            help="Serve the review channel as a page on 127.0.0.1 where you click the answers; "
            "runs until Ctrl-C, then retrains and prints the summary.",
        ),
    ] = False,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="With --web: the page's port (0: a free one)."),
    ] = None,
    reviewers: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=3,
            help="With --web: simulated reviewers answering beside you, one answer every "
            "few seconds each. Default: 0.",
        ),
    ] = None,
    features: Annotated[
        FeaturizerName,
        typer.Option(help="The task's featurizer; embeddings needs the [embeddings] extra."),
    ] = DEFAULT_FEATURIZER,
) -> None:
    """Run the whole loop with a Slack stand-in and simulated reviewers; no Slack account needed."""
    from bot.demo.run import DemoSummary, run_demo

    if not web and (port is not None or reviewers is not None):
        raise typer.BadParameter("--port and --reviewers go with --web", param_hint="--web")
    missing = featurizer_available(features)
    if missing is not None:
        raise BadInputError(f"cannot use --features {features}: {missing}")
    summary: DemoSummary
    if web:
        import threading

        from bot.demo.web import start_web_demo

        typer.echo(
            "hitl demo --web: BANKING77 subset (CC BY 4.0, Casanueva et al. 2020), a Slack "
            f"stand-in on 127.0.0.1, {reviewers or 0} simulated reviewers beside you",
            err=True,
        )
        with start_web_demo(
            database=db,
            items=items or 100,
            seed_per_label=seed_per_label,
            noise=noise,
            rate=rate,
            reviewers=reviewers or 0,
            port=port or 0,
            featurizer=features,
        ) as demo:
            typer.echo(
                f"open {demo.url} in a browser: click the answers, type /hitl commands; "
                "Ctrl-C ends the demo, retrains and prints the summary"
            )
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                typer.echo("\nstopping; retraining on every answer…", err=True)
            summary = demo.finish()
    else:
        total = items or 600
        typer.echo(
            "hitl demo: BANKING77 subset (CC BY 4.0, Casanueva et al. 2020), a Slack stand-in on "
            f"127.0.0.1 at {rate:g} msg/s (real Slack: about 1 per channel), 3 simulated "
            "reviewers",
            err=True,
        )
        with progress_bar(total, label="items resolved") as advance:
            seen = [0]

            def progress(done: int, total: int) -> None:
                advance(max(0, done - seen[0]))
                seen[0] = max(seen[0], done)

            summary = run_demo(
                database=db,
                items=total,
                seed_per_label=seed_per_label,
                noise=noise,
                rate=rate,
                progress=progress,
                featurizer=features,
            )
            advance(total - seen[0])

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    auto_accuracy = summary.auto_correct / summary.auto if summary.auto else None
    typer.echo(
        f"\nitems: {summary.items}; routed automatically: {summary.auto} "
        f"({summary.auto / summary.items:.0%}), accuracy of automatic labels "
        f"{pct(auto_accuracy)}\n"
        f"answers from reviewers: {summary.answers} ({summary.wrong_answers} deliberately wrong)\n"
        f"model before: v{summary.version_before} (accuracy {pct(summary.accuracy_before)}); "
        f"after: v{summary.version_after} (accuracy {pct(summary.accuracy_after)})\n"
        f"took {summary.seconds:.0f} s\n\n--- retrain report ---\n{summary.report}\n\n"
        f"database: {summary.database}; chart of the last retrain: {summary.chart}\n"
        "explore it:\n" + "\n".join(f"  {line}" for line in summary.explore_commands())
    )


@app.command(
    "serve",
    epilog=examples(
        "hitl serve --port 3000",
        "SLACK_APP_TOKEN=xapp-... hitl serve --socket",
    ),
)
def serve_command(
    socket: Annotated[
        bool, typer.Option("--socket", help="Use Socket Mode (also when SLACK_APP_TOKEN is set).")
    ] = False,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on. Default: HITL_HOST, 0.0.0.0.")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on. Default: HITL_PORT, 3000.")
    ] = None,
) -> None:
    """Run the bot: Slack, the items API and the jobs.

    Serves Slack requests and the items API, posts review prompts and retrains nightly.
    """
    import logging
    import os
    import signal
    import threading

    from bot.logs import configure_logging
    from bot.runtime import build_runtime

    settings = Settings()
    configure_logging(settings.log_format)
    runtime = build_runtime(
        settings, host=host, port=port, socket_mode=socket or settings.slack_app_token is not None
    )
    stopped = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stopped.is_set():
            # A second signal while draining: the operator wants out now, whatever is left
            # (claims still held end with their lease).
            os.write(2, b"hitl: stopping at once\n")
            os._exit(128 + signum)
        stopped.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    runtime.start()
    mode = (
        "Socket Mode" if runtime.socket_mode else f"HTTP, Slack posts to {runtime.url}/slack/events"
    )
    typer.echo(f"hitl serving on {runtime.url} ({mode}); Ctrl-C stops", err=True)
    stopped.wait()
    typer.echo(
        f"hitl stopping: finishing work in flight (at most {settings.shutdown_seconds:g} s; "
        "Ctrl-C again stops at once)",
        err=True,
    )
    runtime.stop()
    typer.echo("hitl stopped", err=True)
    # Everything was stopped or given back above. A thread still running is a send or a job
    # past the budget, and Python joins pool threads at exit, which would hold the process
    # until the network gives up: leave now, as a process boundary may.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@contextmanager
def _atomic_write(path: Path) -> Any:
    """Write to a temporary file beside `path` and rename it into place only on success."""
    temporary = path.with_name(f".{path.name}.partial")
    try:
        with temporary.open("w", encoding="utf-8", newline="") as out:
            yield out
        temporary.replace(path)
    except OSError as exc:
        raise BadInputError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        temporary.unlink(missing_ok=True)


def _actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@cache
def _click_exceptions() -> dict[str, tuple[Any, ...]]:
    """Usage-error, abort and exit classes of the click that typer runs on, and of real click.

    typer vendors its own copy of click (`typer._click`, since 0.2x), whose exceptions are not
    `click`'s; an `except click.UsageError` would miss them, so both are looked up.
    """
    modules: list[Any] = [getattr(typer.core, "_click", None), getattr(typer.core, "click", None)]
    try:
        import click

        modules.append(click)
    except ImportError:  # typer without the real click installed
        pass
    found: dict[str, list[Any]] = {
        name: [] for name in ("NoArgsIsHelpError", "UsageError", "ClickException", "Abort", "Exit")
    }
    found["Abort"].append(typer.Abort)
    found["Exit"].append(typer.Exit)
    for module in modules:
        for name, classes in found.items():
            cls = getattr(getattr(module, "exceptions", None), name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in classes:
                classes.append(cls)
    return {name: tuple(classes) for name, classes in found.items()}


def _usage_error(exc: Any) -> str:
    """'error: …', then the usage line and where to read more."""
    message = str(exc.format_message()).removesuffix(".")
    lines = [f"error: {message[:1].lower()}{message[1:]}"]
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        lines.append(ctx.get_usage())
        if ctx.command.get_help_option(ctx) is not None:
            names = ctx.help_option_names
            option = "--help" if "--help" in names else names[0]
            lines.append(f"Try '{ctx.command_path} {option}' for help.")
    return "\n".join(lines)


def main(argv: list[str] | None = None, *, stderr: TextIO | None = None) -> int:
    """Entry point: run the CLI and turn user errors into one line and an exit code."""
    err = stderr or sys.stderr
    click_errors = _click_exceptions()
    try:
        result = app(args=argv, standalone_mode=False, prog_name="hitl")
    except HitlError as exc:
        print(f"error: {exc}", file=err)
        return exc.exit_code
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        print(f"error: invalid setting: {problems}", file=err)
        return 2
    except OperationalError as exc:
        print(f"error: database unavailable: {exc.orig}", file=err)
        return 1
    except click_errors["NoArgsIsHelpError"] as exc:  # `hitl` or `hitl task` alone
        # Plain help arrives as the message; rich help would already be on stdout.
        if help_text := exc.format_message():
            typer.echo(help_text)
        return 2
    except click_errors["UsageError"] as exc:
        print(_usage_error(exc), file=err)
        return 2
    except click_errors["ClickException"] as exc:
        print(f"error: {exc.format_message()}", file=err)
        return int(exc.exit_code)
    except click_errors["Abort"]:
        print("aborted", file=err)
        return 1
    except click_errors["Exit"] as exc:
        return int(exc.exit_code)
    # Without standalone mode, typer returns the code of an exit such as --help's (or 130 for
    # Ctrl-C); commands themselves return None.
    return result if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry: exit with `main`'s code."""
    raise SystemExit(main())


if __name__ == "__main__":
    run()
