"""The deployment files: Dockerfile, compose.yaml and deploy/, checked without a Docker engine.

The files are parsed and their structure asserted; the commands the containers run (the image's
ENTRYPOINT with each service's command, and the HEALTHCHECK) are run for real on this machine,
against SQLite and PostgreSQL.
"""

import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from bot.demo.standin import SlackStandIn
from bot.runtime import free_port
from bot.server import MAX_BODY_BYTES
from bot.settings import Settings
from bot.storage.db import current_revision, make_engine
from tests.conftest import POSTGRES_URL

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
BOTS = ("bot1", "bot2")
REQUIRED_SECRETS = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "HITL_MODEL_SIGNING_KEY",
    "HITL_API_TOKEN",
)
# The hitl console script of the environment running the tests, as the image installs it.
HITL = str(Path(sys.executable).with_name("hitl"))


# --- parsing -------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip() + " "
            continue
        keyword, _, arguments = pending.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage: what the image that runs is made of."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def exec_form(arguments: str) -> list[str]:
    """A JSON-array (exec form) argument list; shell form is refused."""
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), f"not exec form: {arguments}"
    return [str(part) for part in parsed]


def one(stage: list[tuple[str, str]], keyword: str) -> str:
    """The arguments of the stage's last `keyword` instruction (the one Docker uses)."""
    found = [arguments for k, arguments in stage if k == keyword]
    assert found, f"no {keyword} in the final stage"
    return found[-1]


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK's command, exec form, as the container runs it."""
    arguments = one(final_stage(), "HEALTHCHECK")
    _, _, command = arguments.partition("CMD ")
    return exec_form(command)


def container_command(service: str) -> list[str]:
    """ENTRYPOINT plus the service's command: the process compose starts for `service`."""
    stage = final_stage()
    entrypoint = exec_form(one(stage, "ENTRYPOINT"))
    command = compose()["services"][service].get("command") or exec_form(one(stage, "CMD"))
    return [*entrypoint, *command]


def compose() -> dict[str, Any]:
    """compose.yaml, anchors and merge keys resolved."""
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def nginx_upstream_servers() -> set[tuple[str, int]]:
    """(host, port) of every `server` line inside the nginx upstream block."""
    conf = NGINX_CONF.read_text(encoding="utf-8")
    block = re.search(r"upstream\s+(\w+)\s*\{(.*?)\}", conf, re.DOTALL)
    assert block is not None, "no upstream block in deploy/nginx.conf"
    assert f"proxy_pass http://{block.group(1)};" in conf
    return {
        (host, int(port)) for host, port in re.findall(r"server\s+([\w.-]+):(\d+)", block.group(2))
    }


# --- the Dockerfile ------------------------------------------------------------------------


def test_image_is_slim_python_311_or_newer() -> None:
    """Every stage starts from an official slim Python image of a supported version."""
    bases = [
        arguments.split()[0]
        for keyword, arguments in dockerfile_instructions()
        if keyword == "FROM"
    ]
    assert bases
    for base in bases:
        match = re.fullmatch(r"python:3\.(\d+)-slim", base)
        assert match is not None and int(match.group(1)) >= 11, base


def test_image_installs_the_project_with_the_postgres_extra() -> None:
    """pip installs '.[postgres]' without a cache; the sources it needs are copied in."""
    runs = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    assert any("'.[postgres]'" in run and "--no-cache-dir" in run for run in installs), installs
    copied = {
        source
        for keyword, arguments in dockerfile_instructions()
        if keyword == "COPY" and not arguments.startswith("--from")
        for source in arguments.split()[:-1]
    }
    assert {"pyproject.toml", "README.md", "bot", "model"} <= copied
    ignored = ENV_EXAMPLE.parent.parent.joinpath(".dockerignore").read_text(encoding="utf-8")
    patterns = {line.strip() for line in ignored.splitlines() if not line.startswith("#")}
    assert copied.isdisjoint(patterns)
    assert {".git", ".env", "**/*.db", "**/*.key", "tests"} <= patterns


def test_image_runs_as_a_fixed_non_root_user() -> None:
    """The final stage switches to a numeric uid other than 0, which owns the work directory."""
    stage = final_stage()
    user = one(stage, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, user
    assert f"--uid {uid}" in " ".join(arguments for keyword, arguments in stage if keyword == "RUN")
    environment = " ".join(arguments for keyword, arguments in stage if keyword == "ENV")
    # No home: the model key file has a writable place of its own.
    assert "HITL_MODEL_KEY_FILE=/var/lib/hitl/" in environment
    assert one(stage, "WORKDIR") == "/var/lib/hitl"
    assert "PYTHONDONTWRITEBYTECODE=1" in environment
    assert "PYTHONUNBUFFERED=1" in environment


def test_image_serves_on_the_exposed_port_by_default() -> None:
    """ENTRYPOINT hitl, CMD serve, and EXPOSE is the port `hitl serve` listens on by default."""
    stage = final_stage()
    assert exec_form(one(stage, "ENTRYPOINT")) == ["hitl"]
    assert exec_form(one(stage, "CMD")) == ["serve"]
    assert one(stage, "EXPOSE") == str(Settings(_env_file=None).port) == "3000"
    assert "HEALTHCHECK" in dict(stage)
    assert healthcheck_command()[:2] == ["python", "-c"]


# --- compose.yaml and the proxy ------------------------------------------------------------


def test_replicas_get_longer_to_stop_than_they_take_to_drain() -> None:
    services = compose()["services"]
    drain = Settings(_env_file=None).shutdown_seconds
    for name in ("bot1", "bot2"):
        grace = services[name]["stop_grace_period"]
        assert grace.endswith("s") and float(grace[:-1]) > drain, name


def test_compose_has_postgres_a_migration_two_replicas_and_a_proxy() -> None:
    """The services, and the order they start in: postgres → migrate (once) → bots → proxy."""
    services = compose()["services"]
    assert set(services) == {"postgres", "migrate", *BOTS, "proxy"}

    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16-alpine"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])
    assert "pgdata" in compose()["volumes"]

    migrate = services["migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}

    for name in BOTS:
        bot = services[name]
        assert bot["command"] == ["serve"]
        assert bot["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
        assert bot["image"] == migrate["image"]
        assert bot["environment"] == migrate["environment"]

    proxy = services["proxy"]
    assert proxy["image"] == "nginx:alpine"
    assert proxy["depends_on"] == {name: {"condition": "service_healthy"} for name in BOTS}
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in proxy["volumes"]
    assert [port.rsplit(":", 1)[1] for port in proxy["ports"]] == ["80"]
    assert re.search(r"listen\s+80;", NGINX_CONF.read_text(encoding="utf-8"))


def test_compose_requires_every_secret_and_shares_one_signing_key() -> None:
    """Secrets are `${VAR:?message}` (compose stops without them); HTTP mode, never Socket."""
    environment = compose()["services"]["bot1"]["environment"]
    for name in REQUIRED_SECRETS:
        assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", environment[name]), environment[name]
    assert "${POSTGRES_PASSWORD:?" in environment["HITL_DATABASE_URL"]
    # Even an empty SLACK_APP_TOKEN would switch the bot to Socket Mode.
    assert not {"SLACK_APP_TOKEN", "SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET"} & set(environment)


def test_compose_database_url_names_the_postgres_service() -> None:
    """The URL is the psycopg 3 form the project expects, for the user and database created."""
    services = compose()["services"]
    url = make_url(services["bot1"]["environment"]["HITL_DATABASE_URL"])
    postgres = services["postgres"]["environment"]
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port) == ("postgres", 5432)
    assert url.username == postgres["POSTGRES_USER"]
    assert url.database == postgres["POSTGRES_DB"]


def test_env_example_lists_every_variable_compose_reads() -> None:
    """Each `${VAR…}` of compose.yaml has a line in deploy/env.example."""
    lines = COMPOSE.read_text(encoding="utf-8").splitlines()
    used = {
        name
        for line in lines
        if not line.lstrip().startswith("#")
        for name in re.findall(r"\$\{(\w+)", line)
    }
    listed = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert {"POSTGRES_PASSWORD", *REQUIRED_SECRETS} <= used
    assert used == listed


def test_proxy_balances_both_replicas_on_the_app_port() -> None:
    """nginx's upstream is exactly bot1 and bot2 on the exposed port, with the headers forwarded."""
    port = int(one(final_stage(), "EXPOSE"))
    assert nginx_upstream_servers() == {(name, port) for name in BOTS}
    conf = NGINX_CONF.read_text(encoding="utf-8")
    for header in ("Host $host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Request-ID"):
        assert f"proxy_set_header {header}" in conf


def test_proxy_body_limit_matches_the_items_api() -> None:
    """nginx refuses exactly what the app would refuse: bodies over the items API's cap."""
    match = re.search(r"client_max_body_size\s+(\d+)m;", NGINX_CONF.read_text(encoding="utf-8"))
    assert match is not None
    assert int(match.group(1)) * 1024 * 1024 == MAX_BODY_BYTES


# --- the container's commands, run here ----------------------------------------------------


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without Slack or HITL settings, plus `overrides`."""
    kept = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HITL_", "SLACK_")) or key == "HITL_DATASETS_DIR"
    }
    return {**kept, **overrides}


def run(command: list[str], *, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a container command with the venv's `hitl`; fail with its output when it fails."""
    argv = [HITL, *command[1:]] if command[0] == "hitl" else command
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{shlex.join(command)}: {done.stderr}"
    return done


def test_serve_help_names_the_host_and_port_it_listens_on(tmp_path: Path) -> None:
    """`hitl serve --help`, the image's default command with --help, documents host and port."""
    done = run([*container_command("bot1"), "--help"], env=clean_env(), cwd=tmp_path)
    assert "--host" in done.stdout and "HITL_HOST" in done.stdout
    assert "--port" in done.stdout and "HITL_PORT" in done.stdout


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL schema (not migrated), dropped afterwards."""
    schema = f"hitl_deploy_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is not reachable ({exc}); start it first")
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def schema_snapshot(url: str) -> tuple[str | None, dict[str, list[str]]]:
    """The Alembic revision and every table's columns."""
    engine = make_engine(url)
    try:
        inspector = inspect(engine)
        tables = {
            name: [c["name"] for c in inspector.get_columns(name)]
            for name in inspector.get_table_names()
        }
        return current_revision(engine), tables
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrate_service_creates_the_schema_and_a_second_run_changes_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The `migrate` service's command on an empty database makes every table; run again (the
    next deploy) it keeps the schema and the data."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'hitl.db'}"
    else:
        url = request.getfixturevalue("postgres_database")
    env = clean_env(HITL_DATABASE_URL=url, HITL_MODEL_SIGNING_KEY="k" * 32)
    migrate = container_command("migrate")
    assert migrate == ["hitl", "db", "upgrade"]

    assert run(migrate, env=env, cwd=tmp_path).stdout.strip() == "database schema is up to date"
    revision, tables = schema_snapshot(url)
    assert revision is not None
    assert {"task", "item", "answer", "model_version", "review_prompt", "alembic_version"} <= set(
        tables
    )
    run(["hitl", "task", "create", "tickets", "--labels", "a,b"], env=env, cwd=tmp_path)

    run(migrate, env=env, cwd=tmp_path)
    assert schema_snapshot(url) == (revision, tables)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT name FROM task")).scalars().all() == ["tickets"]
    finally:
        engine.dispose()


def healthcheck(port: int, *, cwd: Path) -> int:
    """Exit code of the image's HEALTHCHECK command run against 127.0.0.1:`port`."""
    command = healthcheck_command()
    argv = [sys.executable if command[0] == "python" else command[0], *command[1:]]
    done = subprocess.run(
        argv, env=clean_env(HITL_PORT=str(port)), cwd=cwd, capture_output=True, timeout=30
    )
    return done.returncode


def test_healthcheck_passes_on_a_running_bot_and_fails_when_it_stops(tmp_path: Path) -> None:
    """The HEALTHCHECK exits 0 against a real `hitl serve` (the image's command), and non-zero
    once nothing listens on the port."""
    port = free_port()
    with SlackStandIn(bot_token="xoxb-test") as slack:
        env = clean_env(
            HITL_DATABASE_URL=f"sqlite:///{tmp_path / 'hitl.db'}",
            HITL_HOST="127.0.0.1",
            HITL_PORT=str(port),
            HITL_MODEL_SIGNING_KEY=secrets.token_hex(32),
            HITL_API_TOKEN="api-token",
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_SIGNING_SECRET="signing-secret",
            SLACK_API_URL=slack.api_url,
        )
        serve = container_command("bot1")
        assert serve == ["hitl", "serve"]
        process = subprocess.Popen(
            [HITL, *serve[1:]],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            status = healthcheck(port, cwd=tmp_path)
            while status != 0 and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
                status = healthcheck(port, cwd=tmp_path)
            assert process.poll() is None, f"hitl serve stopped: {process.communicate()[1]}"
            assert status == 0
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
    assert healthcheck(port, cwd=tmp_path) != 0
    assert healthcheck(free_port(), cwd=tmp_path) != 0
