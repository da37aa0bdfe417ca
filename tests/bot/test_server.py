"""The public HTTP surface under attack: body caps while streaming, signature before parsing,
malformed input as 400 (never 500), JSON 503s while the database is away, quiet health checks.

Every test talks to a real uvicorn server on 127.0.0.1 over http.client.
"""

import json
import select
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import SecretStr
from sqlalchemy import func
from sqlalchemy import select as sql_select

from bot import tasks as task_ops
from bot.server import MAX_SLACK_BODY_BYTES, build_http_app
from bot.services import Services, build_services
from bot.settings import Settings
from bot.storage.schema import Answer, Item
from tests.bot.conftest import TOKEN, Client, Dispatches, Reply, serving, signed_headers


def _api(client: Client, body: bytes | str, path: str = "/api/tasks/reviews/items") -> Reply:
    content = body.encode() if isinstance(body, str) else body
    return client.post(
        path,
        content=content,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )


def _items(services: Services) -> int:
    with services.sessions.begin() as session:
        return int(session.scalar(sql_select(func.count()).select_from(Item)) or 0)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ('{"items": [{"text": "\\ud800 lone"}]}', 400),
        ('{"items": [{"text": "x", "id": ' + "9" * 5000 + "}]}", 400),
        ('{"items": ' + "[" * 100_000 + "]" * 100_000 + "}", 400),
        ('{"items": [{"text": "x", "id": true}]}', 422),
        ('{"items": [{"text": "x", "id": "a\\u0000b"}]}', 400),
        ("[1, 2]", 422),
        ("\xff\xfe not utf-8", 400),
        ('{"items": "nope"}', 422),
        ('{"items": [{"id": "a"}]}', 422),
        ('{"items": [{"text": 5}]}', 422),
    ],
    ids=[
        "surrogate",
        "5000-digits",
        "deep",
        "id-true",
        "nul-id",
        "array",
        "bad-utf8",
        "shape",
        "no-text",
        "text-number",
    ],
)
def test_malformed_items_are_400_and_wrong_shapes_422_with_the_json_error_shape(
    served: tuple[Services, Client, Dispatches], body: str, status: int
) -> None:
    """Not JSON (or values the product refuses): 400; JSON of the wrong shape: 422."""
    services, client, _ = served
    raw = body.encode("latin-1") if body.startswith("\xff") else body.encode()
    response = _api(client, raw)
    assert response.status_code == status, response.text
    assert response.json()["ok"] is False and response.json()["error"]
    assert _items(services) == 0


@pytest.mark.parametrize("key", ["%23" + "9" * 30, "%23" + str(2**31), "nul%00id", "%ED%A0%80"])
def test_unknown_or_impossible_item_ids_are_404(
    served: tuple[Services, Client, Dispatches], key: str
) -> None:
    _, client, _ = served
    response = client.get(
        f"/api/tasks/reviews/items/{key}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 404 and response.json()["ok"] is False


def test_a_task_name_with_a_nul_is_404(served: tuple[Services, Client, Dispatches]) -> None:
    _, client, _ = served
    response = _api(client, '{"items": [{"text": "x"}]}', path="/api/tasks/a%00b/items")
    assert response.status_code == 404 and response.json()["ok"] is False


@pytest.mark.parametrize(
    "body",
    [b"payload=%7B", b"payload=" + quote("[1,2]").encode(), b"\xff\xfe", b'{"type": [1'],
    ids=["truncated", "array", "bad-utf8", "json-as-form"],
)
def test_malformed_slack_bodies_are_400_when_signed_and_401_when_not(
    served: tuple[Services, Client, Dispatches], body: bytes
) -> None:
    _, client, dispatches = served
    assert (
        client.post("/slack/events", content=body, headers=signed_headers(body)).status_code == 400
    )
    unsigned = {"Content-Type": "application/x-www-form-urlencoded"}
    assert client.post("/slack/events", content=body, headers=unsigned).status_code == 401
    assert dispatches.count == 0


def test_a_non_numeric_timestamp_is_401(served: tuple[Services, Client, Dispatches]) -> None:
    _, client, dispatches = served
    body = b"payload=%7B%7D"
    headers = signed_headers(body, timestamp="soon")
    assert client.post("/slack/events", content=body, headers=headers).status_code == 401
    assert dispatches.count == 0


def test_the_signature_is_checked_before_bolt_sees_the_body(
    served: tuple[Services, Client, Dispatches],
) -> None:
    services, client, dispatches = served
    payload = {"type": "url_verification", "challenge": "abc123", "token": "x"}
    body = json.dumps(payload).encode()
    forged = {**signed_headers(body), "X-Slack-Signature": "v0=" + "0" * 64}
    assert client.post("/slack/events", content=body, headers=forged).status_code == 401
    assert dispatches.count == 0
    answer = client.post("/slack/events", content=body, headers=signed_headers(body))
    assert (answer.status_code, answer.json()) == (200, {"challenge": "abc123"})
    assert dispatches.count == 1
    with services.sessions.begin() as session:
        assert session.scalar(sql_select(func.count()).select_from(Answer)) == 0


def test_health_check_hides_the_drivers_message() -> None:
    settings = Settings(
        _env_file=None,
        database_url="postgresql+psycopg://nobody@127.0.0.1:9/secret_db_name",
        api_token=TOKEN,
    )
    services = build_services(settings, migrate=False)
    with serving(build_http_app(services, bolt_app=None)) as port:
        client = Client(port)
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {"ok": False, "database": "unavailable"}
        assert "127.0.0.1" not in response.text and "secret_db_name" not in response.text
        api = _api(client, '{"items": [{"text": "x"}]}')
        assert api.status_code == 503 and api.json()["ok"] is False
        assert "database is unavailable" in api.json()["error"]
    services.engine.dispose()


@pytest.fixture
def live_server(served: tuple[Services, Client, Dispatches]) -> tuple[int, Dispatches]:
    _, client, dispatches = served
    return client.port, dispatches


def _stream_until_answered(port: int, path: str, *, chunked: bool, total: int) -> tuple[int, int]:
    """Send up to `total` bytes of body; returns (HTTP status, bytes sent before the answer)."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    connection.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n".encode()
    )
    piece = b"a" * 65536
    sent = 0
    try:
        while sent < total:
            readable, _, _ = select.select([connection], [], [], 0)
            if readable:
                break
            data = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
            connection.sendall(data)
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = connection.recv(4096)
    connection.close()
    return int(answer.split(b" ", 2)[1]), sent


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_an_unsigned_300_mb_body_is_cut_off_at_the_cap(
    live_server: tuple[int, Dispatches], chunked: bool
) -> None:
    port, dispatches = live_server
    status, sent = _stream_until_answered(
        port, "/slack/events", chunked=chunked, total=300 * 1024 * 1024
    )
    assert status == 413
    # The server stopped reading at 1 MB; what else went out sat in socket buffers.
    assert sent < 64 * MAX_SLACK_BODY_BYTES
    assert dispatches.count == 0


def test_the_items_api_cuts_off_a_chunked_body_at_its_cap(
    live_server: tuple[int, Dispatches],
) -> None:
    port, _ = live_server
    status, sent = _stream_until_answered(
        port, "/api/tasks/reviews/items", chunked=True, total=300 * 1024 * 1024
    )
    assert status == 413 and sent < 100 * 1024 * 1024


def test_a_signed_click_bolt_cannot_handle_is_400(
    served: tuple[Services, Client, Dispatches],
) -> None:
    _, client, _ = served
    payload = {"type": "block_actions", "user": {"id": "U1"}, "actions": []}
    body = ("payload=" + quote(json.dumps(payload))).encode()
    response = client.post("/slack/events", content=body, headers=signed_headers(body))
    assert response.status_code in (200, 400) and response.status_code != 500


def _concurrent_posts(port: int, bodies: list[bytes]) -> list[Reply]:
    barrier = threading.Barrier(len(bodies))

    def post(body: bytes) -> Reply:
        barrier.wait(10)
        return _api(Client(port), body)

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(post, bodies))


def _served_on(services: Services) -> Any:
    settings = services.settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    shared = Services(
        settings=settings,
        engine=services.engine,
        sessions=services.sessions,
        registry=services.registry,
    )
    with shared.sessions.begin() as session:
        task_ops.create_task(session, "reviews", ["positive", "negative"], threshold=0.8)
    return serving(build_http_app(shared, bolt_app=None))


def test_concurrent_retries_of_one_submit_all_get_the_stored_result(services: Services) -> None:
    """20 clients retry the same id and text at once: one item, 20 answers naming it."""
    body = json.dumps({"items": [{"id": "t-1", "text": "the same text"}]}).encode()
    with _served_on(services) as port:
        replies = _concurrent_posts(port, [body] * 20)
    assert [r.status_code for r in replies] == [200] * 20
    results = [r.json()["items"][0] for r in replies]
    assert len({r["item_id"] for r in results}) == 1
    assert sorted(r["duplicate"] for r in results) == [False] + [True] * 19
    assert _items(services) == 1


def test_concurrent_conflicting_texts_get_409_never_500(services: Services) -> None:
    bodies = [
        json.dumps({"items": [{"id": "t-1", "text": f"text number {i}"}]}).encode()
        for i in range(40)
    ]
    with _served_on(services) as port:
        replies = _concurrent_posts(port, bodies)
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] + [409] * 39, [r.text for r in replies if r.status_code >= 500][:3]
    assert _items(services) == 1


def test_ssl_check_is_answered_without_reaching_bolt(
    served: tuple[Services, Client, Dispatches],
) -> None:
    _, client, dispatches = served
    body = b"token=legacy&ssl_check=1"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    reply = client.post("/slack/events", content=body, headers=form)
    assert (reply.status_code, reply.text) == (200, "")
    assert dispatches.count == 0
    # Anything more than the probe still needs a signature.
    more = b"ssl_check=1&command=%2Fhitl&text=retrain"
    assert client.post("/slack/events", content=more, headers=form).status_code == 401


def test_url_verification_echoes_the_challenge_only_when_signed(
    served: tuple[Services, Client, Dispatches],
) -> None:
    _, client, _ = served
    body = json.dumps({"type": "url_verification", "challenge": "c-42", "token": "t"}).encode()
    headers = {**signed_headers(body), "Content-Type": "application/json"}
    reply = client.post("/slack/events", content=body, headers=headers)
    assert (reply.status_code, reply.json()) == (200, {"challenge": "c-42"})
    unsigned = {"Content-Type": "application/json"}
    assert client.post("/slack/events", content=body, headers=unsigned).status_code == 401
