"""Log lines as text or JSON (`HITL_LOG_FORMAT`), each carrying the id of the HTTP request it
was written in.

The request id comes from the caller's `X-Request-ID` when it is a sane token, else it is made
here; it lives in a context variable for the request's duration (Starlette's thread pool copies
the context, so work done there carries it too) and goes back in the response's `X-Request-ID`.
"""

import json
import logging
import re
import secrets
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Final, TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOG_FORMATS: Final = ("text", "json")
HEADER: Final = "X-Request-ID"
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
# Probes come every few seconds: their lines would drown the rest at info.
QUIET_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})

request_id: ContextVar[str | None] = ContextVar("hitl_request_id", default=None)
logger = logging.getLogger(__name__)


def sane_request_id(given: str | None) -> str:
    """`given` when it is up to 64 of [A-Za-z0-9._-], else a new random id."""
    if given is not None and _SANE_ID.fullmatch(given):
        return given
    return secrets.token_hex(16)


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (or "-" outside a request) on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record; only adds `request_id`."""
        record.request_id = request_id.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, request_id, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, str] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid and rid != "-":
            line["request_id"] = rid
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


def log_handler(log_format: str, *, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing `log_format` lines ("text" or "json") with request ids to `stream`
    (stderr by default)."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    json_lines = log_format == "json"
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(log_format: str, *, level: int = logging.INFO) -> None:
    """Send every log record of the process to stderr in `log_format`."""
    logging.basicConfig(level=level, handlers=[log_handler(log_format)], force=True)


class RequestIdMiddleware:
    """ASGI middleware: a request id in the context, in the response header and in one access
    line per request (at debug for the probes)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        rid = sane_request_id(given)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                message["headers"] = [*headers, (b"x-request-id", rid.encode())]
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope.get("path", "")
            # The path only: a query string could hold a secret (an OAuth code).
            logger.log(
                logging.DEBUG if path in QUIET_PATHS else logging.INFO,
                "%s %s %d",
                scope.get("method", ""),
                path,
                status,
            )
            request_id.reset(token)
