"""The `hitl` command line, end to end on a SQLite file: the documented workflow and its errors."""

import csv
import io
import json
import os
import random
import subprocess
import sys
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import typer.main
from sqlalchemy import create_engine, text

from bot import cli
from model.features import FEATURIZERS


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> str:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def banking_files(tmp_path: Path, banking77: list[tuple[str, str]]) -> Iterator[dict[str, str]]:
    rng = random.Random(3)
    rows = banking77[:10003]
    labels = sorted({label for _, label in rows})
    chosen = set(labels[:12])
    subset = [r for r in rows if r[1] in chosen]
    rng.shuffle(subset)
    train, fresh = subset[:900], subset[900:1300]
    (tmp_path / "labels.txt").write_text("\n".join(sorted(chosen)), encoding="utf-8")
    yield {
        "labels": str(tmp_path / "labels.txt"),
        "train": write_csv(tmp_path / "train.csv", ["text", "label"], [list(r) for r in train]),
        "items": write_csv(
            tmp_path / "items.csv", ["id", "text"], [[f"n{i}", t] for i, (t, _) in enumerate(fresh)]
        ),
        "truth": json.dumps({f"n{i}": label for i, (_, label) in enumerate(fresh)}),
    }


def test_full_workflow_on_banking77(hitl, banking_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """create → import → retrain → submit --json → stats --json → export, with real accuracy."""
    code, out, _ = hitl(
        "task",
        "create",
        "bank",
        "--labels-file",
        banking_files["labels"],
        "--threshold",
        "0.7",
        "--channel",
        "C0BANK1",
    )
    assert code == 0 and "12 labels" in out
    code, out, _ = hitl("import", "bank", banking_files["train"])
    assert code == 0 and "900 new items" in out
    code, out, _ = hitl("retrain", "bank", "--json")
    retrained = json.loads(out)
    assert (
        code == 0
        and retrained["version"] == 1
        and retrained["report"]["evaluation"] == "cross-fitted (5 folds)"
    )
    assert retrained["report"]["holdout"]["new"]["accuracy"] > 0.8
    code, out, _ = hitl("submit", "bank", banking_files["items"], "--json")
    results = [json.loads(line) for line in out.splitlines()]
    truth = json.loads(banking_files["truth"])
    assert code == 0 and len(results) == 400
    auto = [r for r in results if r["route"] == "auto"]
    assert all(r["confidence"] >= 0.7 for r in auto)
    assert all(r["confidence"] < 0.7 for r in results if r["route"] == "review")
    assert len(auto) > 200
    assert sum(truth[r["id"]] == r["label"] for r in auto) / len(auto) > 0.9
    code, out, _ = hitl("stats", "bank", "--json")
    stats = json.loads(out)
    assert (stats["items"], stats["auto"], stats["imported"]) == (400, len(auto), 900)
    assert stats["model_version"] == 1 and stats["threshold"] == 0.7
    code, _, err = hitl("export", "bank", str(tmp_path / "out.csv"))
    assert code == 0 and "exported 1300 items" in err
    with (tmp_path / "out.csv").open(encoding="utf-8") as handle:
        exported = list(csv.DictReader(handle))
    model_rows = [r for r in exported if r["label_source"] == "model"]
    assert len(model_rows) == len(auto)


def test_submit_summary_before_any_model(hitl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hitl("task", "create", "t", "--labels", "a,b")
    items = write_csv(tmp_path / "i.csv", ["text"], [["one"], ["two"]])
    code, out, _ = hitl("submit", "t", items)
    assert code == 0
    assert "no model yet" in out and "0 auto (0%), 2 review" in out


def test_import_error_is_one_line_exit_2_and_writes_nothing(hitl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hitl("task", "create", "t", "--labels", "a,b")
    rows = [["fine", "a"]] * 810 + [["odd", "x"]]
    path = write_csv(tmp_path / "bad.csv", ["text", "label"], rows)
    code, out, err = hitl("import", "t", path)
    assert code == 2
    assert err == "error: line 812: unknown label 'x'; known labels: a, b\n"
    code, out, _ = hitl("stats", "t", "--json")
    assert json.loads(out)["imported"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["threshold", "t", "abc"], "threshold 'abc' is not a number"),
        (["threshold", "t", "1.5"], "out of range"),
        (["task", "create", "u", "--labels", "a"], "at least two labels"),
        (["task", "create", "u", "--labels", "a,a"], "given twice"),
        (["task", "create", "u", "--labels", "a,b", "--channel", "#general"], "channel ID"),
        (["task", "create", "bad name", "--labels", "a,b"], "not valid"),
        (["stats", "nope"], "no task named 'nope'; known tasks: t"),
        (["import", "t", "missing.csv"], "cannot read missing.csv"),
        (["export", "t", "out.txt"], "cannot tell the format"),
    ],
)
def test_bad_input_exits_2_with_one_line(hitl, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    hitl("task", "create", "t", "--labels", "a,b")
    code, _, err = hitl(*args)
    assert code == 2
    assert message in err and err.count("\n") == 1


def test_threshold_show_set_and_audit(hitl) -> None:  # type: ignore[no-untyped-def]
    hitl("task", "create", "t", "--labels", "a,b", "--threshold", "0.9")
    assert hitl("threshold", "t")[1] == "0.9\n"
    code, out, _ = hitl("threshold", "t", "0.75")
    assert code == 0 and "0.9 → 0.75" in out
    assert hitl("threshold", "t")[1] == "0.75\n"


def test_invalid_setting_is_reported(hitl, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HITL_DEFAULT_THRESHOLD", "abc")
    code, _, err = hitl("task", "list")
    assert code == 2 and err.startswith("error: invalid setting: default_threshold")


def test_export_jsonl_to_stdout(hitl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hitl("task", "create", "t", "--labels", "a,b")
    hitl("submit", "t", write_csv(tmp_path / "i.csv", ["id", "text"], [["x1", "héllo"]]))
    code, out, _ = hitl("export", "t", "-", "--format", "jsonl")
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert (row["id"], row["text"], row["label_source"], row["route"]) == (
        "x1",
        "héllo",
        "pending",
        "review",
    )


# --- usage errors: one short message, the usage line, exit 2, never a traceback ---------------


@pytest.mark.parametrize(
    ("args", "message", "usage"),
    [
        (["stats"], "error: missing argument", "Usage: hitl stats [OPTIONS]"),
        (["nope"], "error: no such command 'nope'", "Usage: hitl [OPTIONS] COMMAND"),
        (["demo", "--items", "5"], "error: invalid value for '--items'", "Usage: hitl demo"),
        (
            ["export", "t", "x.csv", "--format", "xml"],
            "error: invalid value for '--format': Value error, 'xml' is not one of 'csv', 'jsonl'",
            "Usage: hitl export",
        ),
        (
            ["task", "create", "t", "--features", "bag"],
            "error: invalid value for '--features': Value error, 'bag' is not one of 'tfidf'",
            "Usage: hitl task create",
        ),
        (["submit", "t", "x.csv", "--jsn"], "error: no such option", "Usage: hitl submit"),
    ],
)
def test_usage_error_is_short_with_usage_line_and_exit_2(  # type: ignore[no-untyped-def]
    hitl, args: list[str], message: str, usage: str
) -> None:
    code, out, err = hitl(*args)
    lines = err.splitlines()
    assert code == 2 and out == ""
    assert lines[0].startswith(message)
    assert lines[1].startswith(usage)
    assert lines[2] == f"Try '{usage.split(' [')[0].removeprefix('Usage: ')} --help' for help."
    assert len(lines) == 3 and "Traceback" not in err


@pytest.mark.parametrize("args", [[], ["task"], ["db"]])
def test_group_alone_prints_its_help_to_stdout_and_exits_2(hitl, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    code, out, err = hitl(*args)
    assert code == 2 and err == ""
    assert out.startswith(f"Usage: {' '.join(['hitl', *args])} [OPTIONS] COMMAND")
    assert "Commands:" in out and "Examples:" in out


def run_hitl_process(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m bot.cli ARGS` in a child process, on a SQLite file of its own."""
    env = {**os.environ, "HITL_DATABASE_URL": f"sqlite:///{tmp_path / 'proc.db'}"}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "stdout_start", "stderr_start"),
    [
        ([], "Usage: hitl [OPTIONS] COMMAND", ""),
        (["stats"], "", "error: missing argument"),
        (["frobnicate"], "", "error: no such command 'frobnicate'"),
        (["demo", "--items", "5"], "", "error: invalid value for '--items'"),
    ],
)
def test_usage_errors_in_a_real_process_exit_2_without_traceback(
    tmp_path: Path, args: list[str], stdout_start: str, stderr_start: str
) -> None:
    done = run_hitl_process(tmp_path, *args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stdout.startswith(stdout_start) and done.stderr.startswith(stderr_start)
    assert not (tmp_path / "proc.db").exists()  # a usage error touches no database


def test_help_in_a_real_process_exits_0(tmp_path: Path) -> None:
    done = run_hitl_process(tmp_path, "submit", "--help")
    assert done.returncode == 0 and done.stderr == ""
    assert "hitl submit tickets new.csv --json" in done.stdout


# --- --help is the reference: examples on every command, help on every parameter -------------


def all_commands() -> list[tuple[tuple[str, ...], Any]]:
    """Every command and group of `hitl`, with its path of command words."""
    found: list[tuple[tuple[str, ...], Any]] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(cli.app), ())
    return found


COMMANDS = all_commands()
COMMAND_IDS = [" ".join(path) or "hitl" for path, _ in COMMANDS]


def test_the_walk_finds_every_documented_command() -> None:
    paths = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "task", "task create", "task channel", "task labels", "db upgrade"} <= paths
    assert {"import", "submit", "retrain", "report", "stats", "export", "demo", "serve"} <= paths


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=COMMAND_IDS)
def test_help_exits_0_and_ends_with_examples(hitl, path: tuple[str, ...], command: Any) -> None:  # type: ignore[no-untyped-def]
    code, out, err = hitl(*path, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"Usage: {' '.join(['hitl', *path])} ")
    examples = out.rstrip().rsplit("Examples:", 1)[1].splitlines()[1:]
    assert examples and all(line.startswith("    ") for line in examples)
    assert any(f"hitl {' '.join(path)}".rstrip() in line for line in examples)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=COMMAND_IDS)
def test_every_parameter_has_help(path: tuple[str, ...], command: Any) -> None:
    undocumented = [param.name for param in command.params if not (param.help or "").strip()]
    assert undocumented == []


def test_json_flags_say_what_they_print(hitl) -> None:  # type: ignore[no-untyped-def]
    for path in (["task", "list"], ["task", "show"], ["task", "labels"], ["submit"]):
        out = hitl(*path, "--help")[1]
        described = out.split("--json", 1)[1].split("\n  -", 1)[0]
        assert "Print" in described and "JSON" in described, path


def test_choices_are_listed_in_help(hitl) -> None:  # type: ignore[no-untyped-def]
    assert "--features <tfidf|embeddings>" in hitl("task", "create", "--help")[1]
    assert "--format <csv|jsonl>" in hitl("export", "--help")[1]
    assert "--install-completion" in hitl("--help")[1]


def test_features_choices_come_from_the_registry() -> None:
    assert typing.get_args(cli.FeaturizerName) == tuple(FEATURIZERS)


# --- progress on stderr, only for terminals --------------------------------------------------


class FakeTerminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def numbered_items(tmp_path: Path, count: int, prefix: str = "n") -> str:
    rows = [[f"{prefix}{i}", f"text number {i}"] for i in range(count)]
    return write_csv(tmp_path / f"{prefix}{count}.csv", ["id", "text"], rows)


def test_submit_on_a_terminal_draws_a_bar_on_stderr_and_pure_json_on_stdout(  # type: ignore[no-untyped-def]
    hitl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hitl("task", "create", "t", "--labels", "a,b")
    terminal = FakeTerminal()
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", terminal)
        code, out, _ = hitl("submit", "t", numbered_items(tmp_path, 5), "--json")
    assert code == 0
    assert [json.loads(line)["id"] for line in out.splitlines()] == [f"n{i}" for i in range(5)]
    drawn = terminal.getvalue()
    assert "submitting to t" in drawn and "100%" in drawn


def test_without_a_terminal_nothing_is_drawn(hitl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hitl("task", "create", "t", "--labels", "a,b")
    code, out, err = hitl("submit", "t", numbered_items(tmp_path, 5), "--json")
    assert code == 0 and err == ""
    assert [json.loads(line)["route"] for line in out.splitlines()] == ["review"] * 5
    code, _, err = hitl("export", "t", str(tmp_path / "out.csv"))
    assert code == 0 and err == f"exported 5 items to {tmp_path / 'out.csv'}\n"


def test_import_and_export_on_a_terminal_draw_their_bars(  # type: ignore[no-untyped-def]
    hitl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hitl("task", "create", "t", "--labels", "a,b")
    labelled = write_csv(tmp_path / "l.csv", ["text", "label"], [["x", "a"], ["y", "b"]])
    terminal = FakeTerminal()
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", terminal)
        assert hitl("import", "t", labelled)[0] == 0
        code, out, _ = hitl("export", "t", "-", "--format", "jsonl")
    assert code == 0 and [json.loads(line)["text"] for line in out.splitlines()] == ["x", "y"]
    drawn = terminal.getvalue()
    assert "importing into t" in drawn and "exporting t" in drawn


@pytest.fixture
def recorded_progress(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Replace the bar by a recorder of its total and every advance; chunks of 3 rows."""
    calls: list[object] = []

    @contextmanager
    def recorder(total: int, *, label: str) -> Iterator[Callable[[int], None]]:
        calls.append(("total", total))
        yield calls.append

    monkeypatch.setattr(cli, "progress_bar", recorder)
    monkeypatch.setattr(cli, "CHUNK_ROWS", 3)
    return calls


def test_submit_and_import_advance_per_chunk_export_per_row(  # type: ignore[no-untyped-def]
    hitl, tmp_path: Path, recorded_progress: list[object]
) -> None:
    hitl("task", "create", "t", "--labels", "a,b")
    code, out, _ = hitl("submit", "t", numbered_items(tmp_path, 7), "--json")
    assert code == 0 and len(out.splitlines()) == 7
    assert recorded_progress == [("total", 7), 3, 3, 1]
    recorded_progress.clear()
    rows = [[f"n{i}", "text", "a"] for i in range(4)] + [["", "fresh", "b"]]
    code, out, _ = hitl("import", "t", write_csv(tmp_path / "l.csv", ["id", "text", "label"], rows))
    assert code == 0 and "1 new items, 5 answers written" in out
    assert recorded_progress == [("total", 5), 3, 2]
    recorded_progress.clear()
    assert hitl("export", "t", "-", "--format", "csv")[0] == 0
    assert recorded_progress == [("total", 8)] + [1] * 8


def test_a_conflict_in_a_later_chunk_writes_nothing(  # type: ignore[no-untyped-def]
    hitl, tmp_path: Path, recorded_progress: list[object]
) -> None:
    """Chunks share one transaction: row 7's conflict undoes rows 1-6 too."""
    hitl("task", "create", "t", "--labels", "a,b")
    hitl("submit", "t", write_csv(tmp_path / "old.csv", ["id", "text"], [["n6", "old text"]]))
    code, out, err = hitl("submit", "t", numbered_items(tmp_path, 7))
    assert code == 2 and out == ""
    assert err == (
        "error: line 8: id 'n6' was submitted before with a different text; use a new id\n"
    )
    assert json.loads(hitl("stats", "t", "--json")[1])["items"] == 1


def test_an_id_twice_in_one_file_is_refused_across_chunks(  # type: ignore[no-untyped-def]
    hitl, tmp_path: Path, recorded_progress: list[object]
) -> None:
    hitl("task", "create", "t", "--labels", "a,b")
    rows = [[f"n{i}", f"text {i}"] for i in range(5)] + [["n0", "again"]]
    code, _, err = hitl("submit", "t", write_csv(tmp_path / "d.csv", ["id", "text"], rows))
    assert code == 2 and err == "error: line 7: id 'n0' is already used by line 2\n"
    assert recorded_progress == []  # refused before the first write
    assert json.loads(hitl("stats", "t", "--json")[1])["items"] == 0


def test_stage_progress_shows_stages_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with cli.stage_progress("retraining t") as show:
        show("gathering")
        show("training")
    shown = terminal.getvalue()
    assert "retraining t: gathering…" in shown and "retraining t: training…" in shown
    assert shown.endswith("\n") and "retraining t: done in" in shown.splitlines()[-1]


def test_stage_progress_clears_its_line_on_error(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with pytest.raises(RuntimeError), cli.stage_progress("retraining t") as show:
        show("training")
        raise RuntimeError("boom")
    assert terminal.getvalue().endswith("\r\x1b[K") and "done" not in terminal.getvalue()


def test_stage_progress_is_silent_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    with cli.stage_progress("retraining t") as show:
        show("training")
    assert pipe.getvalue() == ""


# --- task channel and task labels --------------------------------------------------------------


def audit_fields(tmp_path: Path) -> list[tuple[str, str | None, str | None]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT field, old_value, new_value FROM audit_log ORDER BY id")
            )
            return [(field, old, new) for field, old, new in rows if field != "task"]
    finally:
        engine.dispose()


def test_task_channel_show_set_and_clear(hitl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hitl("task", "create", "t", "--labels", "a,b")
    assert hitl("task", "channel", "t") == (0, "none\n", "")
    assert hitl("task", "channel", "t", "C0NEW1") == (0, "t: channel none → C0NEW1\n", "")
    assert hitl("task", "channel", "t") == (0, "C0NEW1\n", "")
    assert hitl("task", "channel", "t", "None") == (0, "t: channel C0NEW1 → none\n", "")
    hitl("task", "channel", "t", "C0NEW2")
    assert hitl("task", "channel", "t", "--clear") == (0, "t: channel C0NEW2 → none\n", "")
    assert json.loads(hitl("task", "show", "t", "--json")[1])["channel"] is None
    assert [(f, old, new) for f, old, new in audit_fields(tmp_path)] == [
        ("channel", None, "C0NEW1"),
        ("channel", "C0NEW1", None),
        ("channel", None, "C0NEW2"),
        ("channel", "C0NEW2", None),
    ]


def test_task_labels_list_add_and_json(hitl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hitl("task", "create", "t", "--labels", "billing,bug")
    assert hitl("task", "labels", "t") == (0, "billing\nbug\n", "")
    code, out, _ = hitl("task", "labels", "t", "--add", "refund", "--add", "account closure")
    assert (code, out) == (0, "t: added refund, account closure; 4 labels now\n")
    code, out, _ = hitl("task", "labels", "t", "--json")
    assert json.loads(out) == ["billing", "bug", "refund", "account closure"]
    assert audit_fields(tmp_path) == [
        (
            "labels",
            '["billing", "bug"]',
            '["billing", "bug", "refund", "account closure"]',
        )
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["task", "channel", "nope", "C0NEW1"], "error: no task named 'nope'; known tasks: t"),
        (["task", "channel", "t", "#general"], "is not a Slack channel ID"),
        (["task", "channel", "t", "C0NEW1", "--clear"], "either a CHANNEL_ID or --clear"),
        (["task", "labels", "nope", "--add", "x"], "error: no task named 'nope'; known tasks: t"),
        (["task", "labels", "t", "--add", "bug"], "task 't' already has the label 'bug'"),
        (["task", "labels", "t", "--add", "x", "--add", "x"], "label 'x' is given twice"),
        (["task", "labels", "t", "--add", ""], "labels must not be empty"),
    ],
)
def test_task_setting_errors_exit_2_in_one_line_and_change_nothing(  # type: ignore[no-untyped-def]
    hitl, tmp_path: Path, args: list[str], message: str
) -> None:
    hitl("task", "create", "t", "--labels", "billing,bug", "--channel", "C0OLD1")
    code, out, err = hitl(*args)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1
    shown = json.loads(hitl("task", "show", "t", "--json")[1])
    assert (shown["labels"], shown["channel"]) == (["billing", "bug"], "C0OLD1")
    assert audit_fields(tmp_path) == []


def test_task_create_with_a_workspace_shows_it(hitl) -> None:  # type: ignore[no-untyped-def]
    """`--team T…` is stored and shown by `hitl task show` (text and JSON)."""
    code, out, _ = hitl(
        "task",
        "create",
        "tickets",
        "--labels",
        "a,b",
        "--channel",
        "C0REVIEW1",
        "--team",
        "T0ACME001",
    )
    assert code == 0
    assert "workspace T0ACME001" in out
    code, out, _ = hitl("task", "show", "tickets")
    assert "workspace: T0ACME001" in out.splitlines()
    code, out, _ = hitl("task", "show", "tickets", "--json")
    assert json.loads(out)["workspace"] == "T0ACME001"


def test_task_create_refuses_a_bad_workspace_id(hitl) -> None:  # type: ignore[no-untyped-def]
    code, _, err = hitl("task", "create", "tickets", "--labels", "a,b", "--team", "acme")
    assert code != 0
    assert "is not a Slack team ID" in err
    assert hitl("task", "list", "--json")[1].strip() == "[]"


def test_task_create_needs_a_workspace_when_serving_many(  # type: ignore[no-untyped-def]
    hitl, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SLACK_CLIENT_ID and SLACK_CLIENT_SECRET set, --team is required."""
    monkeypatch.setenv("SLACK_CLIENT_ID", "1111.2222")
    monkeypatch.setenv("SLACK_CLIENT_SECRET", "secret")
    code, _, err = hitl("task", "create", "tickets", "--labels", "a,b")
    assert code != 0
    assert "--team" in err
    code, _, _ = hitl("task", "create", "tickets", "--labels", "a,b", "--team", "T0ACME001")
    assert code == 0
