"""The HTTP side of `hitl serve`: Slack's requests, the items API and a health check."""

import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.errors import BadInputError, ConflictError, HitlError, NotFoundError
from bot.ingest import IncomingItem
from bot.queries import item_details
from bot.routing import submit
from bot.services import Services
from bot.tasks import get_task

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_ITEMS_PER_REQUEST = 10_000


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=status)


def _status_for(exc: HitlError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    return 400


def parse_items_body(raw: bytes) -> list[IncomingItem]:
    """`{"items": [{"id": "...", "text": "..."}]}` into items, or a BadInputError."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise BadInputError('body must be an object with a list "items"')
    entries = body["items"]
    if len(entries) > MAX_ITEMS_PER_REQUEST:
        raise BadInputError(f"at most {MAX_ITEMS_PER_REQUEST} items per request")
    items: list[IncomingItem] = []
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
            raise BadInputError(f'item {index}: needs a string "text"')
        external_id = entry.get("id")
        if external_id is not None and not isinstance(external_id, str | int):
            raise BadInputError(f'item {index}: "id" must be a string')
        items.append(
            IncomingItem(
                text=entry["text"], external_id=None if external_id is None else str(external_id)
            )
        )
    return items


def build_http_app(
    services: Services,
    *,
    bolt_app: App | None,
    on_review: Callable[[], None] | None = None,
) -> Starlette:
    """The ASGI application; `bolt_app` is None when Slack talks to us over Socket Mode."""
    settings = services.settings

    def authorized(request: Request) -> Response | None:
        token = settings.api_token.get_secret_value() if settings.api_token else ""
        if not token:
            return _error(503, "the items API is disabled; set HITL_API_TOKEN to enable it")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return _error(401, "missing or wrong bearer token")
        return None

    async def slack_events(request: Request) -> Response:
        if bolt_app is None:
            return _error(404, "Socket Mode is on; Slack does not send requests here")
        body = await request.body()
        # Bolt's dispatch blocks until the listener acks; keep it off the event loop.
        response = await run_in_threadpool(bolt_app.dispatch, to_bolt_request(request, body))
        return to_starlette_response(response)

    async def post_items(request: Request) -> Response:
        refused = authorized(request)
        if refused is not None:
            return refused
        length = int(request.headers.get("content-length") or 0)
        if length > MAX_BODY_BYTES:
            return _error(
                413, f"body over {MAX_BODY_BYTES // (1024 * 1024)} MB; send smaller batches"
            )
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return _error(
                413, f"body over {MAX_BODY_BYTES // (1024 * 1024)} MB; send smaller batches"
            )
        try:
            items = parse_items_body(raw)
            results = await run_in_threadpool(_submit, request.path_params["task"], items)
        except HitlError as exc:
            return _error(_status_for(exc), str(exc))
        if on_review is not None and any(r["route"] == "review" for r in results):
            on_review()
        return JSONResponse({"ok": True, "items": results})

    def _submit(task_name: str, items: list[IncomingItem]) -> list[dict[str, Any]]:
        with services.sessions.begin() as session:
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
        return JSONResponse({"ok": True, "item": found})

    async def healthz(_: Request) -> Response:
        try:
            await run_in_threadpool(_ping)
        except Exception as exc:  # a health check reports every failure, whatever its type
            return JSONResponse({"ok": False, "database": str(exc)[:200]}, status_code=503)
        return JSONResponse({"ok": True, "database": "ok"})

    def _ping() -> None:
        with services.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    return Starlette(
        routes=[
            Route("/slack/events", slack_events, methods=["POST"]),
            Route("/api/tasks/{task}/items", post_items, methods=["POST"]),
            Route("/api/tasks/{task}/items/{item}", get_item, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def item_status(services: Services, task_name: str, key: str) -> dict[str, Any]:
    """An item's route, final label, who decided it and its answer history (see README)."""
    with services.sessions.begin() as session:
        return item_details(session, get_task(session, task_name), key)
