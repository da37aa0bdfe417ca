"""The `hitl` command line, end to end on a SQLite file: the documented workflow and its errors."""

import csv
import io
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import cli


@pytest.fixture
def hitl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run `hitl ARGS...` in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("HITL_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.chdir(tmp_path)
    cli.services.cache_clear()

    def run(*args: str) -> tuple[int, str, str]:
        err = io.StringIO()
        code = cli.main(list(args), stderr=err)
        captured = capsys.readouterr()
        return code, captured.out, err.getvalue() + captured.err

    yield run
    cli.services.cache_clear()


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
        code == 0 and retrained["version"] == 1 and retrained["report"]["evaluation"] == "holdout"
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
