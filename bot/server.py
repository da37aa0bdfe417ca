"""The HTTP side of `hitl serve`: Slack's requests, the items API, health, readiness and metrics."""

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from slack_bolt.request.internals import parse_body
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from bot.errors import (
    BadInputError,
    ConflictError,
    HitlError,
    NotFoundError,
    SchemaError,
    UnavailableError,
)
from bot.ingest import IncomingItem
from bot.logs import RequestIdMiddleware
from bot.metrics import CONTENT_TYPE
from bot.queries import item_details
from bot.routing import submit
from bot.services import Services
from bot.slack.install import INSTALL_PATH, REDIRECT_PATH
from bot.storage.db import in_transaction
from bot.tasks import get_task

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
# Slack's own requests are a few kilobytes; anything near this is not from Slack.
MAX_SLACK_BODY_BYTES = 1024 * 1024
MAX_ITEMS_PER_REQUEST = 10_000
# Slack's replay window: a request older (or newer) than this is refused.
SIGNATURE_MAX_AGE = 5 * 60


class BodyTooLarge(Exception):
    """The request body passed its cap while it was being read."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=status)


def _status_for(exc: HitlError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, UnavailableError):
        return 503
    if isinstance(exc, SchemaError):
        return 422
    return 400


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body, read as it streams in and abandoned as soon as it passes `limit`.

    A Content-Length over the cap is refused before reading anything; a chunked body (or one
    whose Content-Length lies) is cut off at the cap, so memory never holds more than that.
    """
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def parse_items_body(raw: bytes) -> list[IncomingItem]:
    """`{"items": [{"id": "...", "text": "..."}]}` into items; a BadInputError for a body that
    is not JSON, a SchemaError (422) for JSON of the wrong shape."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, or a 5,000-digit number
        raise BadInputError(f"body is not valid JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise BadInputError("body is not valid JSON: nested too deeply") from None
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise SchemaError('body must be an object with a list "items"')
    entries = body["items"]
    if len(entries) > MAX_ITEMS_PER_REQUEST:
        raise SchemaError(f"at most {MAX_ITEMS_PER_REQUEST} items per request")
    items: list[IncomingItem] = []
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
            raise SchemaError(f'item {index}: needs a string "text"')
        external_id = entry.get("id")
        # bool is an int in Python: `true` would be stored as the id "True".
        if external_id is not None and (
            isinstance(external_id, bool) or not isinstance(external_id, str | int)
        ):
            raise SchemaError(f'item {index}: "id" must be a string or an integer')
        items.append(
            IncomingItem(
                text=entry["text"], external_id=None if external_id is None else str(external_id)
            )
        )
    return items


def slack_signature_valid(
    secret: bytes, raw: bytes, *, timestamp: str | None, signature: str | None, now: float
) -> bool:
    """Slack's v0 signature over the raw bytes, sent within the last five minutes."""
    if not timestamp or not signature or not timestamp.isascii() or not timestamp.isdigit():
        return False
    if len(timestamp) > 12 or abs(now - int(timestamp)) > SIGNATURE_MAX_AGE:
        return False
    base = b"v0:" + timestamp.encode() + b":" + raw
    expected = "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


def is_ssl_check(raw: bytes) -> bool:
    """Slack's `ssl_check=1&token=…` probe (a short form body, nothing else)."""
    if len(raw) > 1024 or b"ssl_check=" not in raw:
        return False
    try:
        form = parse_qs(raw.decode("ascii"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return False
    return form.get("ssl_check") == ["1"] and "payload" not in form and "command" not in form


def check_slack_body(raw: bytes, content_type: str | None) -> str | None:
    """What is wrong with a signed Slack body that Bolt could not parse, or None when fine."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "body is not valid UTF-8"
    try:
        parsed = parse_body(text, content_type)
        if isinstance(parsed, dict) and "payload" in parsed:
            parsed = json.loads(parsed["payload"])
    except (ValueError, RecursionError, TypeError):
        return "body is not a Slack payload"
    # Every request Slack sends names what it is: a `type` (events, interactions, url
    # verification), a `command`, or an `ssl_check`.
    if not isinstance(parsed, dict) or not any(
        k in parsed for k in ("type", "command", "ssl_check")
    ):
        return "body is not a Slack payload"
    return None


def build_http_app(
    services: Services,
    *,
    bolt_app: App | None,
    on_review: Callable[[], None] | None = None,
    health: Callable[[], dict[str, Any]] | None = None,
    readiness: Callable[[], tuple[bool, dict[str, Any]]] | None = None,
) -> ASGIApp:
    """The ASGI application; `bolt_app` is None when Slack talks to us over Socket Mode.

    `health` adds the serve process's own parts (posting, Socket Mode) to `/healthz`;
    `readiness` says whether the process's own parts (models, scheduler, posting) are ready,
    and shows them in `/readyz`. Both must answer fast and never raise.
    """
    settings = services.settings
    secret = settings.slack_signing_secret
    # An empty secret is no secret: anyone could sign with it, so it verifies nothing.
    signing_secret = secret.get_secret_value().encode() if secret else None
    if not signing_secret:
        signing_secret = None

    def authorized(request: Request) -> Response | None:
        token = settings.api_token.get_secret_value() if settings.api_token else ""
        if not token:
            return _error(503, "the items API is disabled; set HITL_API_TOKEN to enable it")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return _error(401, "missing or wrong bearer token")
        return None

    def signed(raw: bytes, request: Request) -> bool:
        if signing_secret is None:
            return False
        return slack_signature_valid(
            signing_secret,
            raw,
            timestamp=request.headers.get("x-slack-request-timestamp"),
            signature=request.headers.get("x-slack-signature"),
            now=time.time(),
        )

    async def slack_events(request: Request) -> Response:
        started = time.perf_counter()
        try:
            return await handle_slack(request)
        finally:
            services.metrics.slack_ack.observe(time.perf_counter() - started)

    async def handle_slack(request: Request) -> Response:
        if bolt_app is None:
            return _error(404, "Socket Mode is on; Slack does not send requests here")
        try:
            raw = await read_capped(request, MAX_SLACK_BODY_BYTES)
        except BodyTooLarge:
            return _error(413, "body too large for a Slack request")
        if is_ssl_check(raw):
            # Slack's certificate probe: answered with an empty 200, as Bolt does; it changes
            # nothing and reaches no listener, so it needs no signature.
            return Response(status_code=200)
        # The signature is checked before anything parses the body: unsigned bytes are only
        # ever hashed.
        if not signed(raw, request):
            return _error(401, "invalid or missing Slack signature")
        problem = check_slack_body(raw, request.headers.get("content-type"))
        if problem is not None:
            return _error(400, problem)
        # Bolt's dispatch blocks until the listener acks; keep it off the event loop.
        try:
            response = await run_in_threadpool(bolt_app.dispatch, to_bolt_request(request, raw))
        except Exception:  # a signed payload Bolt cannot handle (e.g. a click with no action)
            logger.exception("Bolt could not handle a signed request")
            return _error(400, "could not process this Slack request")
        return to_starlette_response(response)

    async def oauth_install(request: Request) -> Response:
        flow = bolt_app.oauth_flow if bolt_app is not None else None
        if flow is None:
            return _error(404, "not installable: set SLACK_CLIENT_ID and SLACK_CLIENT_SECRET")
        bolt_request = to_bolt_request(request, b"")
        return to_starlette_response(
            await run_in_threadpool(flow.handle_installation, bolt_request)
        )

    async def oauth_redirect(request: Request) -> Response:
        flow = bolt_app.oauth_flow if bolt_app is not None else None
        if flow is None:
            return _error(404, "not installable: set SLACK_CLIENT_ID and SLACK_CLIENT_SECRET")
        # Bolt checks the state (our state store and the browser's cookie) before it trades
        # the code for a token.
        bolt_request = to_bolt_request(request, b"")
        return to_starlette_response(await run_in_threadpool(flow.handle_callback, bolt_request))

    async def post_items(request: Request) -> Response:
        refused = authorized(request)
        if refused is not None:
            return refused
        try:
            raw = await read_capped(request, MAX_BODY_BYTES)
        except BodyTooLarge:
            return _error(
                413, f"body over {MAX_BODY_BYTES // (1024 * 1024)} MB; send smaller batches"
            )
        try:
            items = parse_items_body(raw)
            results = await run_in_threadpool(_submit, request.path_params["task"], items)
        except HitlError as exc:
            return _error(_status_for(exc), str(exc))
        except DBAPIError as exc:
            return _database_error(exc)
        task_name = request.path_params["task"]
        for result in results:
            services.metrics.items.labels(task=task_name, route=result["route"]).inc()
        if on_review is not None and any(r["route"] == "review" for r in results):
            on_review()
        return JSONResponse({"ok": True, "items": results})

    def _submit(task_name: str, items: list[IncomingItem]) -> list[dict[str, Any]]:
        def work(session: Session) -> list[dict[str, Any]]:
            task = get_task(session, task_name)
            routed = submit(
                session,
                task,
                items,
                registry=services.registry,
                max_chars=settings.max_text_chars,
                source="api",
            )
            return [r.as_dict() for r in routed]

        return in_transaction(services.sessions, work)

    async def get_item(request: Request) -> Response:
        refused = authorized(request)
        if refused is not None:
            return refused
        try:
            found = await run_in_threadpool(
                item_status, services, request.path_params["task"], request.path_params["item"]
            )
        except HitlError as exc:
            return _error(_status_for(exc), str(exc))
        except DBAPIError as exc:
            return _database_error(exc)
        return JSONResponse({"ok": True, "item": found})

    async def healthz(_: Request) -> Response:
        parts = health() if health is not None else {}
        try:
            await run_in_threadpool(_ping)
        except Exception:  # a health check reports every failure, whatever its type
            # The driver's message names hosts and ports: it goes to the log, not to callers.
            logger.exception("health check: the database does not answer")
            return JSONResponse({"ok": False, "database": "unavailable", **parts}, status_code=503)
        return JSONResponse({"ok": True, "database": "ok", **parts})

    async def readyz(_: Request) -> Response:
        ready, parts = await run_in_threadpool(readiness) if readiness is not None else (True, {})
        try:
            await run_in_threadpool(_ping)
        except Exception:  # a readiness check reports every failure, whatever its type
            logger.warning("readiness check: the database does not answer", exc_info=True)
            return JSONResponse({"ok": False, "database": "unavailable", **parts}, status_code=503)
        return JSONResponse(
            {"ok": ready, "database": "ok", **parts}, status_code=200 if ready else 503
        )

    async def metrics(_: Request) -> Response:
        # The database gauges run queries: off the event loop.
        body = await run_in_threadpool(services.metrics.render)
        return Response(body, media_type=CONTENT_TYPE)

    def _ping() -> None:
        with services.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; it was logged")

    app = Starlette(
        routes=[
            Route("/slack/events", slack_events, methods=["POST"]),
            Route(INSTALL_PATH, oauth_install, methods=["GET"]),
            Route(REDIRECT_PATH, oauth_redirect, methods=["GET"]),
            Route("/api/tasks/{task}/items", post_items, methods=["POST"]),
            Route("/api/tasks/{task}/items/{item}", get_item, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        exception_handlers={Exception: unexpected},
    )
    # Outermost, so even the 500 of an unexpected error carries the request id.
    return RequestIdMiddleware(app)


def _database_error(exc: DBAPIError) -> JSONResponse:
    """A database failure as JSON: 503 while it is unreachable, else 409 (a lost race)."""
    if isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated:
        logger.warning("database unavailable: %s", exc.orig)
        return _error(503, "the database is unavailable; nothing was stored, try again shortly")
    logger.exception("database refused a request")
    return _error(409, "the request conflicted with a concurrent change; try again")


def item_status(services: Services, task_name: str, key: str) -> dict[str, Any]:
    """An item's route, final label, who decided it and its answer history (see README)."""
    with services.sessions.begin() as session:
        return item_details(session, get_task(session, task_name), key)
