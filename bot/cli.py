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

from bot import outbox
from bot import tasks as task_ops
from bot.answers import import_examples
from bot.errors import BadInputError, HitlError, NotFoundError
from bot.export import export_format, export_rows, write_export
from bot.ingest import parse_csv, read_source
from bot.report import format_report_text
from bot.routing import Routed, submit
from bot.services import Services, build_services
from bot.settings import Settings
from bot.stats import task_stats
from bot.storage.db import upgrade
from bot.storage.schema import utcnow
from bot.training import latest_report, retrain_task
from model.features import DEFAULT_FEATURIZER, FEATURIZERS


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
        FeaturizerName, typer.Option(help="Featurizer for this task's model.")
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
            help="Print one JSON object: name, labels, channel, workspace, threshold, features, "
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
            "features": task.featurizer,
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
        threshold = task.threshold
    if as_json:
        for result in results:
            echo_json(result.as_dict())
        return
    auto = sum(r.route == "auto" for r in results)
    duplicates = sum(r.duplicate for r in results)
    version = next((r.model_version for r in results if r.model_version), None)
    model = f"model v{version}" if version else "no model yet: every item goes to review"
    typer.echo(
        f"submitted {len(results)} items to {name!r} ({model}, threshold {threshold:g}): "
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


@app.command("stats", epilog=examples("hitl stats tickets", "hitl stats tickets --json"))
def stats_command(
    name: TaskName,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object: items, auto, review, review_queue, labels_by_source "
            "(slack, import, spot_check, total, people), model_version, model_metrics, "
            "posting (state, reason, since), prompts_failed…",
        ),
    ] = False,
) -> None:
    """Items, routing, stored labels by source, queue and the active model of a task."""
    with services().sessions.begin() as session:
        stats = task_stats(session, task_ops.get_task(session, name))
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
    typer.echo(
        f"task {stats.task}: threshold {stats.threshold:g}, model {model}\n"
        f"items {stats.items}: {stats.auto} auto ({share}), {stats.review} review, "
        f"{stats.review_queue} waiting\n"
        + f"labels stored {stats.label_counts.total}: {stats.label_counts.breakdown()}"
        + f" (Slack answers in 7 days: {stats.answers_7d:,})"
    )
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
    "threshold",
    epilog=examples(
        "hitl threshold tickets", "hitl threshold tickets 0.85", "hitl threshold tickets 85%"
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
) -> None:
    """Show or set a task's confidence threshold.

    Lower means less work for people and more wrong automatic labels; `hitl stats` shows both
    sides. Every change is written to the audit log.
    """
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name, lock=value is not None)
        if value is None:
            typer.echo(f"{task.threshold:g}")
            return
        old = task_ops.set_threshold(session, task, value, actor=_actor())
        typer.echo(f"{name}: threshold {old:g} → {task.threshold:g}")


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
) -> None:
    """Run the whole loop with a Slack stand-in and simulated reviewers; no Slack account needed."""
    from bot.demo.run import DemoSummary, run_demo

    if not web and (port is not None or reviewers is not None):
        raise typer.BadParameter("--port and --reviewers go with --web", param_hint="--web")
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
    import signal
    import threading

    from bot.runtime import build_runtime

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings()
    runtime = build_runtime(
        settings, host=host, port=port, socket_mode=socket or settings.slack_app_token is not None
    )
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    runtime.start()
    mode = (
        "Socket Mode" if runtime.socket_mode else f"HTTP, Slack posts to {runtime.url}/slack/events"
    )
    typer.echo(f"hitl serving on {runtime.url} ({mode}); Ctrl-C stops", err=True)
    stopped.wait()
    runtime.stop()


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
