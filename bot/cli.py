"""The `hitl` command line: tasks, import, submit, retrain, stats, threshold, export."""

import json
import sys
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from bot import tasks as task_ops
from bot.answers import import_examples
from bot.errors import BadInputError, HitlError, NotFoundError
from bot.export import export_format, export_rows, write_export
from bot.ingest import parse_csv, read_source
from bot.report import format_report_text
from bot.routing import submit
from bot.services import Services, build_services
from bot.settings import Settings
from bot.stats import task_stats
from bot.storage.db import upgrade
from bot.training import latest_run, retrain_task

app = typer.Typer(
    help="hitl: a human-in-the-loop text classifier that lives in Slack.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
task_app = typer.Typer(help="Create and inspect tasks.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(task_app, name="task")
app.add_typer(db_app, name="db")


@cache
def services() -> Services:
    """Built on first use so that `hitl --help` touches no database."""
    return build_services(Settings())


def echo_json(value: Any) -> None:
    """Print one JSON document on one line."""
    typer.echo(json.dumps(value, ensure_ascii=False, default=str))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema (also done automatically at start)."""
    svc = build_services(Settings(), migrate=False)
    upgrade(svc.engine)
    typer.echo("database schema is up to date")


@task_app.command("create")
def task_create(
    name: str,
    labels: Annotated[str | None, typer.Option(help="Comma-separated labels, in order.")] = None,
    labels_file: Annotated[
        Path | None, typer.Option(help="A UTF-8 file with one label per line.")
    ] = None,
    channel: Annotated[
        str | None, typer.Option(help="Slack channel ID for review prompts.")
    ] = None,
    threshold: Annotated[
        str | None, typer.Option(help="Confidence needed to accept automatically (0-1].")
    ] = None,
    features: Annotated[str, typer.Option(help="Featurizer for this task's model.")] = "tfidf",
) -> None:
    """Create a task with an ordered label set."""
    if (labels is None) == (labels_file is None):
        raise BadInputError("give the labels with exactly one of --labels or --labels-file")
    label_list = (
        task_ops.read_labels_file(labels_file)
        if labels_file
        else task_ops.parse_labels(labels or "")
    )
    svc = services()
    value = task_ops.parse_threshold(threshold) if threshold else svc.settings.default_threshold
    with svc.sessions.begin() as session:
        task = task_ops.create_task(
            session, name, label_list, channel=channel, threshold=value, featurizer=features
        )
        typer.echo(
            f"created task {task.name!r}: {len(task.labels)} labels, threshold {task.threshold:g}"
            + (f", channel {task.channel}" if task.channel else ", no channel yet")
        )


@task_app.command("list")
def task_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
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


@task_app.command("show")
def task_show(name: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a task's settings and labels."""
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name)
        info = {
            "name": task.name,
            "labels": list(task.labels),
            "channel": task.channel,
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


@app.command("import")
def import_command(
    name: str, file: Annotated[str, typer.Argument(help="CSV with text,label[,id]; - for stdin.")]
) -> None:
    """Import labelled examples as answers by `import`."""
    svc = services()
    source, data = read_source(file)
    with svc.sessions.begin() as session:
        task = task_ops.get_task(session, name)
        rows = parse_csv(
            source,
            data,
            require_label=True,
            labels=task.labels,
            max_chars=svc.settings.max_text_chars,
        )
        outcome = import_examples(session, task, rows, max_chars=svc.settings.max_text_chars)
    typer.echo(
        f"imported {len(rows)} rows into {name!r}: {outcome.items_created} new items, "
        f"{outcome.answers_written} answers written, {outcome.unchanged} unchanged"
    )


@app.command("submit")
def submit_command(
    name: str,
    file: Annotated[str, typer.Argument(help="CSV with text[,id]; - for stdin.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per item.")] = False,
) -> None:
    """Classify unlabelled items and route them by confidence."""
    svc = services()
    source, data = read_source(file)
    rows = parse_csv(source, data, require_label=False, max_chars=svc.settings.max_text_chars)
    with svc.sessions.begin() as session:
        task = task_ops.get_task(session, name)
        results = submit(
            session,
            task,
            rows,
            registry=svc.registry,
            max_chars=svc.settings.max_text_chars,
            source="cli",
        )
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


@app.command("retrain")
def retrain_command(
    name: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    force: Annotated[bool, typer.Option(help="Train even without new answers.")] = False,
) -> None:
    """Run the retrain job now: train, compare with the active model, promote if no worse."""
    svc = services()
    result = retrain_task(
        svc.sessions,
        name,
        registry=svc.registry,
        settings=svc.settings,
        trigger="cli",
        force=force,
    )
    if as_json:
        echo_json(
            {
                "status": result.status,
                "version": result.version,
                "old_version": result.old_version,
                "report": result.report,
            }
        )
        return
    typer.echo(format_report_text(result.report))


@app.command("report")
def report_command(
    name: str,
    version: Annotated[int | None, typer.Option(help="The run that produced model vN.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show the latest retrain report of a task (or the one that produced --version N)."""
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name)
        run = latest_run(session, task, version=version)
        if run is None or run.report is None:
            which = f" for model v{version}" if version else ""
            raise NotFoundError(f"no retrain report{which} for {name!r}; run `hitl retrain {name}`")
        report = dict(run.report)
    if as_json:
        echo_json(report)
        return
    typer.echo(format_report_text(report))


@app.command("stats")
def stats_command(name: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Items, routing, answers, queue and the active model of a task."""
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
        f"answers by people {stats.answers} (7 days: {stats.answers_7d}); imported {stats.imported}"
    )


@app.command("threshold")
def threshold_command(
    name: str,
    value: Annotated[str | None, typer.Argument(help="New threshold, 0 < value ≤ 1.")] = None,
) -> None:
    """Show or set a task's confidence threshold (changes are audited)."""
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name, lock=value is not None)
        if value is None:
            typer.echo(f"{task.threshold:g}")
            return
        old = task_ops.set_threshold(session, task, value, actor=_actor())
        typer.echo(f"{name}: threshold {old:g} → {task.threshold:g}")


@app.command("export")
def export_command(
    name: str,
    file: Annotated[str, typer.Argument(help="Output .csv or .jsonl; - for stdout.")],
    fmt: Annotated[str | None, typer.Option("--format", help="csv or jsonl")] = None,
) -> None:
    """Write every item with its final label and who (model or person) gave it."""
    chosen = export_format(file, fmt)
    with services().sessions.begin() as session:
        task = task_ops.get_task(session, name)
        if file == "-":
            count = write_export(export_rows(session, task), sys.stdout, fmt=chosen)
        else:
            with _atomic_write(Path(file)) as out:
                count = write_export(export_rows(session, task), out, fmt=chosen)
    if file != "-":
        typer.echo(f"exported {count} items to {file}", err=True)


@app.command("demo")
def demo_command(
    items: Annotated[int, typer.Option(min=20, max=750, help="Items to stream in.")] = 600,
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
) -> None:
    """Run the whole loop with a Slack stand-in and simulated reviewers; no Slack account needed."""
    from bot.demo import run_demo

    typer.echo(
        "hitl demo: BANKING77 subset (CC BY 4.0, Casanueva et al. 2020), a Slack stand-in on "
        f"127.0.0.1 at {rate:g} msg/s (real Slack: about 1 per channel), 3 simulated reviewers",
        err=True,
    )
    with typer.progressbar(length=items, label="items resolved", file=sys.stderr) as bar:
        seen = [0]

        def progress(done: int, total: int) -> None:
            bar.update(max(0, done - seen[0]))
            seen[0] = max(seen[0], done)

        summary = run_demo(
            items=items, seed_per_label=seed_per_label, noise=noise, rate=rate, progress=progress
        )
        bar.update(items - seen[0])

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
        f"took {summary.seconds:.0f} s\n\n--- retrain report ---\n{summary.report}"
    )


@app.command("serve")
def serve_command(
    socket: Annotated[
        bool, typer.Option("--socket", help="Use Socket Mode (also when SLACK_APP_TOKEN is set).")
    ] = False,
    host: Annotated[str | None, typer.Option(help="Default HITL_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Default HITL_PORT.")] = None,
) -> None:
    """Run the bot: Slack requests, the items API, the prompt poster and the nightly retrain."""
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


def main(argv: list[str] | None = None, *, stderr: TextIO | None = None) -> int:
    """Entry point: run the CLI and turn user errors into one line and an exit code."""
    err = stderr or sys.stderr
    try:
        app(args=argv, standalone_mode=False)
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
    except typer.Abort:
        return 1
    except Exception as exc:  # click's usage errors arrive here when standalone_mode is off
        import click

        if isinstance(exc, click.ClickException):
            exc.show(file=err)
            return exc.exit_code
        raise
    return 0


def run() -> None:
    """Console-script entry: exit with `main`'s code."""
    raise SystemExit(main())


if __name__ == "__main__":
    run()
