"""Alembic migrations: up to head, down to nothing and up again, keeping data on the way up."""

from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from sqlalchemy import MetaData, inspect, text

from bot.storage.db import MIGRATIONS, alembic_config, current_revision, make_engine, upgrade

# The newest revision in bot/storage/migrations (one head: the history never branches).
HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()


def test_upgrade_downgrade_upgrade(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO task (name, labels, threshold, featurizer, created_at, updated_at) "
                "VALUES ('t', '[\"a\", \"b\"]', 0.8, 'tfidf', '2026-01-01', '2026-01-01')"
            )
        )
    upgrade(engine, "0002")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO item (task_id, text, source, submitted_at) "
                "VALUES (1, 'x', 'import', '2026-01-01')"
            )
        )
        for user in ("import", "U0ALICE01"):
            connection.execute(
                text(
                    "INSERT INTO answer (item_id, user_id, kind, label, created_at, is_current) "
                    f"VALUES (1, '{user}', 'label', 'a', '2026-01-01', {int(user == 'import')})"
                )
            )
    upgrade(engine)
    assert current_revision(engine) == HEAD
    with engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM task")).scalar_one() == "t"
        sources = connection.execute(text("SELECT user_id, source FROM answer ORDER BY id")).all()
    # Answers stored before sources existed: imports are recognised by their user, the rest
    # came from Slack.
    assert [tuple(row) for row in sources] == [("import", "import"), ("U0ALICE01", "slack")]
    assert "retrain_run" in inspect(engine).get_table_names()
    command.downgrade(alembic_config(engine), "base")
    assert current_revision(engine) is None
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(engine)
    assert current_revision(engine) == HEAD
    engine.dispose()


def test_oauth_tables_match_slack_sdk_stores(tmp_path: Path) -> None:
    """Migration 0007 creates exactly the tables of slack_sdk's SQLAlchemy stores."""
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine)
    metadata = MetaData()
    expected = [
        SQLAlchemyInstallationStore.build_installations_table(metadata, "slack_installations"),
        SQLAlchemyInstallationStore.build_bots_table(metadata, "slack_bots"),
        SQLAlchemyOAuthStateStore.build_oauth_states_table(metadata, "slack_oauth_states"),
    ]
    found = inspect(engine)
    for table in expected:
        columns = {c["name"]: c for c in found.get_columns(table.name)}
        assert list(columns) == [c.name for c in table.columns], table.name
        for column in table.columns:
            stored = columns[column.name]
            assert isinstance(stored["type"], type(column.type)), column
            assert getattr(stored["type"], "length", None) == getattr(column.type, "length", None)
            assert stored["nullable"] == (column.nullable and not column.primary_key), column
        indexes = {i["name"]: i["column_names"] for i in found.get_indexes(table.name)}
        assert indexes == {i.name: [c.name for c in i.columns] for i in table.indexes}
    assert "team_id" in {c["name"] for c in found.get_columns("task")}
    engine.dispose()
