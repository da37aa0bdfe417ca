"""The HTTP side of `hitl serve`: Slack's requests, the items API, health, readiness and metrics."""

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qs

import anyio
import anyio.to_thread
from slack_bolt import App, BoltRequest
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from slack_bolt.request.internals import parse_body
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from starlette.applications import Starlette
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


T = TypeVar("T")
# Threads per kind of request. Each kind has its own budget, so that one cannot starve another:
# a burst of clicks, each holding a thread until its listener acks, leaves the items API and
# the probes theirs (they shared 40 before, and a load balancer's health checks timed out).
THREADS = {"slack": 64, "api": 32, "probe": 8}


class ThreadBudgets:
    """Runs blocking calls in threads, within the budget of their kind (`THREADS`)."""

    def __init__(self) -> None:
        # Per event loop: a limiter belongs to the loop that made it (tests start several).
        self._limiters: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, anyio.CapacityLimiter]
        ] = weakref.WeakKeyDictionary()

    async def run(self, kind: str, call: Callable[..., T], *args: Any) -> T:
        """`call(*args)` in a worker thread once one of `kind`'s is free."""
        limiters = self._limiters.setdefault(asyncio.get_running_loop(), {})
        limiter = limiters.get(kind)
        if limiter is None:
            limiter = limiters[kind] = anyio.CapacityLimiter(THREADS[kind])
        return await anyio.to_thread.run_sync(functools.partial(call, *args), limiter=limiter)


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


def read_slack_body(
    raw: bytes, content_type: str | None
) -> tuple[dict[str, Any], None] | tuple[None, str]:
    """A signed Slack body as Bolt will parse it (payload, None), or (None, what is wrong)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "body is not valid UTF-8"
    try:
        # Bolt's parser already decodes a form's `payload` field.
        parsed = parse_body(text, content_type)
        if isinstance(parsed, dict) and "payload" in parsed:
            parsed = json.loads(parsed["payload"])
    except (ValueError, RecursionError, TypeError):
        return None, "body is not a Slack payload"
    # Every request Slack sends names what it is: a `type` (events, interactions, url
    # verification), a `command`, or an `ssl_check`.
    if not isinstance(parsed, dict) or not any(
        k in parsed for k in ("type", "command", "ssl_check")
    ):
        return None, "body is not a Slack payload"
    return parsed, None


def is_click(payload: dict[str, Any]) -> bool:
    """Whether a Slack payload is a click on a message (`block_actions` with its actions and
    its person): the one kind of request whose answer Slack does not read."""
    if payload.get("type") != "block_actions":
        return False
    actions, user = payload.get("actions"), payload.get("user")
    return (
        isinstance(actions, list)
        and bool(actions)
        and all(isinstance(a, dict) and isinstance(a.get("action_id"), str) for a in actions)
        and isinstance(user, dict)
        and isinstance(user.get("id"), str)
    )


def dispatch_click(bolt_app: App, request: BoltRequest) -> None:
    """Hand an acknowledged click to Bolt (a click worker's boundary: log, never raise)."""
    try:
        response = bolt_app.dispatch(request)
    except Exception:
        logger.exception("Bolt could not handle a signed click")
        return
    if response.status >= 400:
        logger.warning("a signed click was not handled (Bolt answered %d)", response.status)


class ClickQueue:
    """Clicks acknowledged at once and handled by `workers` threads.

    Slack reads nothing from a click's answer but its 200, and needs it within 3 seconds. Sent
    through Bolt in the request, the answer waited for a listener thread to start and ack; under
    a burst of clicks that wait grew past a second. Here a verified, well-formed click is
    answered as soon as it is queued, and Bolt handles it right after, as it would have after
    its own ack. At most `limit` clicks wait: past that, clicks go through Bolt in the request
    again, so a flood slows its senders down instead of filling memory.
    """

    def __init__(self, workers: int = 8, limit: int = 500) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="hitl-click")
        self._lock = threading.Condition()
        self._waiting = 0
        self._limit = limit

    def take(self, handle: Callable[[], None]) -> bool:
        """Queue `handle`; False (not queued) when `limit` clicks already wait, or stopped."""
        with self._lock:
            if self._waiting >= self._limit:
                return False
            self._waiting += 1
        try:
            self._pool.submit(self._run, handle)
        except RuntimeError:  # shut down: the caller handles it in the request
            with self._lock:
                self._waiting -= 1
            return False
        return True

    def _run(self, handle: Callable[[], None]) -> None:
        try:
            handle()
        finally:
            with self._lock:
                self._waiting -= 1
                self._lock.notify_all()

    def stop(self, timeout: float) -> bool:
        """Take no more clicks and handle the queued ones, for up to `timeout` seconds; False
        if some were still waiting then."""
        self._pool.shutdown(wait=False)
        with self._lock:
            return self._lock.wait_for(lambda: self._waiting == 0, timeout)


def build_http_app(
    services: Services,
    *,
    bolt_app: App | None,
    on_review: Callable[[], None] | None = None,
    health: Callable[[], dict[str, Any]] | None = None,
    readiness: Callable[[], tuple[bool, dict[str, Any]]] | None = None,
    clicks: ClickQueue | None = None,
) -> ASGIApp:
    """The ASGI application; `bolt_app` is None when Slack talks to us over Socket Mode.

    `health` adds the serve process's own parts (posting, Socket Mode) to `/healthz`;
    `readiness` says whether the process's own parts (models, scheduler, posting) are ready,
    and shows them in `/readyz`. Both must answer fast and never raise. With `clicks`, clicks
    on messages are acknowledged as soon as they are verified and queued (`ClickQueue`).
    """
    settings = services.settings
    threads = ThreadBudgets()
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
        payload, problem = read_slack_body(raw, request.headers.get("content-type"))
        if payload is None:
            return _error(400, problem or "body is not a Slack payload")
        if clicks is not None and is_click(payload):
            bolt_request = to_bolt_request(request, raw)
            if clicks.take(lambda: dispatch_click(bolt_app, bolt_request)):
                return Response(status_code=200)
        # Bolt's dispatch blocks until the listener acks; keep it off the event loop.
        try:
            response = await threads.run("slack", bolt_app.dispatch, to_bolt_request(request, raw))
        except Exception:  # a signed payload Bolt cannot handle (e.g. a click with no action)
            logger.exception("Bolt could not handle a signed request")
            return _error(400, "could not process this Slack request")
        if response.status >= 500:  # a middleware failed on it (Bolt logged why): its shape
            return _error(400, "could not process this Slack request")
        return to_starlette_response(response)

    async def oauth_install(request: Request) -> Response:
        flow = bolt_app.oauth_flow if bolt_app is not None else None
        if flow is None:
            return _error(404, "not installable: set SLACK_CLIENT_ID and SLACK_CLIENT_SECRET")
        bolt_request = to_bolt_request(request, b"")
        return to_starlette_response(
            await threads.run("slack", flow.handle_installation, bolt_request)
        )

    async def oauth_redirect(request: Request) -> Response:
        flow = bolt_app.oauth_flow if bolt_app is not None else None
        if flow is None:
            return _error(404, "not installable: set SLACK_CLIENT_ID and SLACK_CLIENT_SECRET")
        # Bolt checks the state (our state store and the browser's cookie) before it trades
        # the code for a token.
        bolt_request = to_bolt_request(request, b"")
        return to_starlette_response(await threads.run("slack", flow.handle_callback, bolt_request))

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
            results = await threads.run("api", _submit, request.path_params["task"], items)
        except HitlError as exc:
            return _error(_status_for(exc), str(exc))
        except (DBAPIError, PoolTimeout) as exc:
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
            found = await threads.run(
                "api",
                item_status,
                services,
                request.path_params["task"],
                request.path_params["item"],
            )
        except HitlError as exc:
            return _error(_status_for(exc), str(exc))
        except (DBAPIError, PoolTimeout) as exc:
            return _database_error(exc)
        return JSONResponse({"ok": True, "item": found})

    async def healthz(_: Request) -> Response:
        # The posting part reads the database too: never on the event loop.
        parts = await threads.run("probe", health) if health is not None else {}
        try:
            await threads.run("probe", _ping)
        except Exception:  # a health check reports every failure, whatever its type
            # The driver's message names hosts and ports: it goes to the log, not to callers.
            logger.exception("health check: the database does not answer")
            return JSONResponse({"ok": False, "database": "unavailable", **parts}, status_code=503)
        return JSONResponse({"ok": True, "database": "ok", **parts})

    async def readyz(_: Request) -> Response:
        ready, parts = await threads.run("probe", readiness) if readiness else (True, {})
        try:
            await threads.run("probe", _ping)
        except Exception:  # a readiness check reports every failure, whatever its type
            logger.warning("readiness check: the database does not answer", exc_info=True)
            return JSONResponse({"ok": False, "database": "unavailable", **parts}, status_code=503)
        return JSONResponse(
            {"ok": ready, "database": "ok", **parts}, status_code=200 if ready else 503
        )

    async def metrics(_: Request) -> Response:
        # The database gauges run queries: off the event loop.
        body = await threads.run("probe", services.metrics.render)
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


def _database_error(exc: DBAPIError | PoolTimeout) -> JSONResponse:
    """A database failure as JSON: 503 while it is unreachable or every connection is busy,
    else 409 (a lost race)."""
    if isinstance(exc, PoolTimeout):
        logger.warning("no free database connection in time: %s", exc)
        return _error(503, "the database is busy; nothing was stored, try again shortly")
    if isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated:
        logger.warning("database unavailable: %s", exc.orig)
        return _error(503, "the database is unavailable; nothing was stored, try again shortly")
    logger.exception("database refused a request")
    return _error(409, "the request conflicted with a concurrent change; try again")


def item_status(services: Services, task_name: str, key: str) -> dict[str, Any]:
    """An item's route, final label, who decided it and its answer history (see README)."""
    with services.sessions.begin() as session:
        return item_details(session, get_task(session, task_name), key)
