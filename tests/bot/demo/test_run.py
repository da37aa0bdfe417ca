"""`hitl demo` end to end, small: every item is resolved, and what it leaves behind is usable."""

import json
import re
import shlex
from pathlib import Path

import pytest

from bot import cli
from bot.demo.run import TASK, demo_rows, run_demo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_demo_subset_is_shipped_with_ten_intents() -> None:
    rows = demo_rows()
    assert len(rows) == 800
    assert len({label for _, label in rows}) == 10


def test_small_demo_resolves_every_item_and_retrains(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    summary = run_demo(
        database=tmp_path / "demo.db",
        items=40,
        seed_per_label=4,
        rate=50.0,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert summary.items == 40
    assert summary.auto + summary.answers == 40
    assert summary.version_before == 1
    # The second model is promoted only if it is no worse on the evaluation: either is honest.
    if summary.version_after == 2:
        assert "model v1 → v2 promoted" in summary.report
    else:
        assert summary.version_after == 1 and "kept v1" in summary.report
    # Calibrated at a threshold of 0.8: automatic answers are right at least 80 % of the time.
    assert summary.auto > 0 and summary.auto_correct >= 0.8 * summary.auto
    if summary.answers:
        assert seen[-1] == (40, 40)
    assert summary.chart == tmp_path / "demo.png"
    assert summary.chart.read_bytes().startswith(PNG_MAGIC)


def test_demo_command_leaves_a_database_and_chart_that_the_printed_commands_explore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HITL_DATABASE_URL", raising=False)
    # A previous run's files (here: garbage) are replaced, not reused.
    for leftover in ("hitl-demo.db", "hitl-demo.db-wal", "hitl-demo.db-shm", "hitl-demo.png"):
        (tmp_path / leftover).write_bytes(b"not from this run")

    code = cli.main(["demo", "--items", "20", "--seed-per-label", "4", "--rate", "50"])
    printed = capsys.readouterr().out
    assert code == 0, printed

    assert (tmp_path / "hitl-demo.db").stat().st_size > 0
    assert (tmp_path / "hitl-demo.png").read_bytes().startswith(PNG_MAGIC)
    commands = [line.strip() for line in printed.splitlines() if "HITL_DATABASE_URL=" in line]
    assert [shlex.split(c)[1:3] for c in commands] == [
        ["hitl", "stats"],
        ["hitl", "report"],
        ["hitl", "export"],
    ]
    setting, _, *stats_args = shlex.split(commands[0])
    assert setting == "HITL_DATABASE_URL=sqlite:///hitl-demo.db"
    answers_line = re.search(r"answers from reviewers: (\d+)", printed)
    assert answers_line is not None
    monkeypatch.setenv("HITL_DATABASE_URL", setting.partition("=")[2])
    cli.services.cache_clear()
    try:
        assert cli.main([*stats_args, "--json"]) == 0
        stats = json.loads(capsys.readouterr().out)
        assert (stats["task"], stats["items"], stats["review_queue"]) == (TASK, 20, 0)
        # reviewers answer review prompts (Slack answers) and spot checks of automatic answers
        answered = stats["answers"] + stats["labels_by_source"]["spot_check"]
        assert stats["auto"] + stats["review"] == 20 and answered == int(answers_line[1])
        assert cli.main(shlex.split(commands[1])[2:]) == 0
        assert "v1" in capsys.readouterr().out.splitlines()[0]  # the report's headline
    finally:
        cli.services.cache_clear()
