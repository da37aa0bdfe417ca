"""Real `hitl serve` processes for the fault tests and the load benchmark: started in HTTP mode
with a clean environment, waited for, stopped, or killed with SIGKILL."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.runtime import free_port
from bot.slack.ids import ACTION_LABEL

# The hitl console script of the environment running the tests.
HITL = str(Path(sys.executable).with_name("hitl"))
SIGNING_SECRET = "fault-signing-secret"
API_TOKEN = "fault-api-token"


def first_label_button(message: dict[str, Any]) -> dict[str, Any]:
    """The first label button of a prompt message (its action_id and value)."""
    return next(
        element
        for block in message["blocks"]
        for element in block.get("elements") or []
        if str(element.get("action_id", "")).startswith(f"{ACTION_LABEL}:")
    )


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without Slack or HITL settings, plus `overrides`."""
    kept = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HITL_", "SLACK_")) or key == "HITL_DATASETS_DIR"
    }
    return {**kept, **overrides}


@dataclass
class ServeProcess:
    """One `hitl serve` on 127.0.0.1:`port`; its output goes to `log`."""

    name: str
    port: int
    process: "subprocess.Popen[bytes]"
    log: Path

    @property
    def url(self) -> str:
        """Base URL of its HTTP server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.process.pid

    def output(self) -> str:
        """What it has logged so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Return once `/healthz` answers 200; fail with its log if it stopped or took too long."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} stopped at start:\n{self.output()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/healthz").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not healthy in {timeout}s:\n{self.output()}")
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, claims and connections are left as they are."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not stop in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def start_serve(name: str, env: dict[str, str], *, folder: Path) -> ServeProcess:
    """Start `hitl serve` with `env` on a free port (not waiting for it); log in `folder`."""
    port = free_port()
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [HITL, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own process group: a Ctrl-C meant for the caller reaches the caller only, which
            # then stops it in order.
            start_new_session=True,
        )
    return ServeProcess(name, port, process, log)


def serve_env(database_url: str, slack_api_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a replica: the shared database, signing key and secrets; no quiet
    hours or digest, so prompts go out at any hour."""
    defaults = {
        "HITL_DATABASE_URL": database_url,
        "HITL_MODEL_SIGNING_KEY": "fault-model-key-" + "k" * 32,
        "HITL_API_TOKEN": API_TOKEN,
        "HITL_QUIET_HOURS": "",
        "HITL_DIGEST_HOUR": "off",
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack_api_url,
    }
    return clean_env(**{**defaults, **overrides})


@contextlib.contextmanager
def fresh_database(admin_url: str, *, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of `admin_url`, dropped afterwards (its
    connections closed first, so a killed replica's do not keep it)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
