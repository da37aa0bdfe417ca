"""Slack's Socket Mode side for the stand-in: `apps.connections.open` and a websocket server.

The protocol, as Slack documents it ("Using Socket Mode") and slack_sdk's clients speak it:

1. The app calls `apps.connections.open` with its app-level token (`xapp-…`) and gets
   `{"ok": true, "url": "wss://…/link/?ticket=…&app_id=…"}`; each ticket opens one connection.
2. It opens a websocket there; Slack sends `{"type": "hello", …}`.
3. Slack sends envelopes `{"envelope_id", "type": "slash_commands" | "interactive" |
   "events_api", "payload", "accepts_response_payload"}`; the app acknowledges each by sending
   `{"envelope_id": …}` back, with a `"payload"` when the envelope accepts one, within 3 seconds.
4. `{"type": "disconnect", "reason": "refresh_requested" | "warning" | …}` asks the app to open a
   new connection (steps 1 and 2 again); Slack closes the old one afterwards.

`SocketModeSlack` sits in front of a `SlackStandIn`: the stand-in accepts only its bot token,
while Slack answers `apps.connections.open` only for the app token. So `api_url` answers that
method itself and passes every other Web API call through to the stand-in unchanged; point the
bot's `SLACK_API_URL` at it. The websocket side uses the `websockets` package (a test extra);
URLs are `ws://127.0.0.1:PORT/link/?ticket=…`.

Like Slack, the server pings every connection. Its default interval is short on purpose:
slack_sdk's builtin client holds a lock through each blocking read (up to 3 s) and needs that
lock to close a connection, so an idle connection takes up to 3 s to close (at stop, and when a
`disconnect` replaces it); each ping ends the read.
"""

import http.client
import http.server
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from bot.demo.standin import SlackStandIn

JsonDict = dict[str, Any]

SLACK_ACK_TIMEOUT = 3.0
OPEN_METHOD = "apps.connections.open"
# Headers of the stand-in's answers that a client reads: the body type and rate-limit waits.
_RELAYED_HEADERS = ("Content-Type", "Retry-After")


@dataclass(frozen=True)
class Ack:
    """The app's acknowledgement of one envelope: its response payload and how long it took."""

    envelope_id: str
    payload: JsonDict | None
    elapsed: float


class SocketConnection:
    """One websocket connection the app opened; envelopes go out, acknowledgements come back."""

    def __init__(
        self, websocket: ServerConnection, ticket: str, changed: threading.Condition
    ) -> None:
        self.ticket = ticket
        self._websocket = websocket
        self._changed = changed
        self._sent: dict[str, float] = {}
        self._acks: dict[str, Ack] = {}
        self._unexpected: list[str] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once the websocket is closed, by either side."""
        with self._changed:
            return self._closed

    def send_envelope(
        self, kind: str, payload: JsonDict, *, accepts_response_payload: bool = False
    ) -> str:
        """Push one envelope (`slash_commands`, `interactive`, `events_api`); its envelope_id."""
        envelope_id = secrets.token_hex(16)
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        if kind == "events_api":
            envelope.update(retry_attempt=0, retry_reason="")
        with self._changed:
            self._sent[envelope_id] = time.monotonic()
        self._websocket.send(json.dumps(envelope))
        return envelope_id

    def deliver(
        self,
        kind: str,
        payload: JsonDict,
        *,
        accepts_response_payload: bool = False,
        timeout: float = SLACK_ACK_TIMEOUT,
    ) -> Ack:
        """Push an envelope and wait for its acknowledgement (TimeoutError after `timeout`)."""
        envelope_id = self.send_envelope(
            kind, payload, accepts_response_payload=accepts_response_payload
        )
        return self.wait_for_ack(envelope_id, timeout=timeout)

    def wait_for_ack(self, envelope_id: str, *, timeout: float = SLACK_ACK_TIMEOUT) -> Ack:
        """The acknowledgement of `envelope_id`; TimeoutError when none came within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while envelope_id not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    state = "the connection closed" if self._closed else f"{timeout}s passed"
                    raise TimeoutError(f"envelope {envelope_id} was not acknowledged: {state}")
                self._changed.wait(left)
            return self._acks[envelope_id]

    def request_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the app to reconnect, as Slack does before it recycles a connection."""
        message = {
            "type": "disconnect",
            "reason": reason,
            "debug_info": {"host": "standin-socket-mode"},
        }
        self._websocket.send(json.dumps(message))

    def close(self) -> None:
        """Close the connection from Slack's side (a normal close frame)."""
        self._websocket.close()

    def wait_closed(self, *, timeout: float = 5.0) -> bool:
        """Block until the connection is closed; False if it is still open after `timeout`."""
        with self._changed:
            return self._changed.wait_for(lambda: self._closed, timeout)

    def unexpected_messages(self) -> list[str]:
        """Messages from the app that acknowledged no envelope we sent (should stay empty)."""
        with self._changed:
            return list(self._unexpected)

    def _receive_until_closed(self) -> None:
        try:
            for raw in self._websocket:
                self._received(raw)
        except ConnectionClosed:
            pass  # the app dropped the socket without a close frame, as slack_sdk's client does
        finally:
            with self._changed:
                self._closed = True
                self._changed.notify_all()

    def _received(self, raw: str | bytes) -> None:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        with self._changed:
            envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
            sent = self._sent.get(envelope_id) if isinstance(envelope_id, str) else None
            if sent is None or envelope_id in self._acks:
                self._unexpected.append(text)
                return
            assert isinstance(message, dict) and isinstance(envelope_id, str)
            payload = message.get("payload")
            self._acks[envelope_id] = Ack(
                envelope_id, payload if isinstance(payload, dict) else None, time.monotonic() - sent
            )
            self._changed.notify_all()


class _Front(http.server.ThreadingHTTPServer):
    """The Web API address the bot is given: apps.connections.open here, the rest relayed."""

    request_queue_size = 128  # as the stand-in's: a burst of calls must not wait for SYN retries

    def __init__(self, slack: "SocketModeSlack") -> None:
        self.slack = slack
        super().__init__(("127.0.0.1", 0), _FrontHandler)


class _FrontHandler(http.server.BaseHTTPRequestHandler):
    server_version = "SlackStandInSocketMode/1"

    def do_POST(self) -> None:
        """A Web API call: answer apps.connections.open, relay anything else."""
        self._answer()

    def do_GET(self) -> None:
        """The same, with the parameters in the query string."""
        self._answer()

    def _answer(self) -> None:
        server = self.server
        assert isinstance(server, _Front)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if urllib.parse.urlsplit(self.path).path == f"/api/{OPEN_METHOD}":
            status, headers, answer = server.slack._open(self.headers.get("Authorization", ""))
        else:
            try:
                status, headers, answer = server.slack._relay(self.command, self.path, self, body)
            except OSError:
                # The stand-in is down (set_down): the bot must see a dropped connection too.
                self.close_connection = True
                return
        try:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting; nothing left to tell it

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet, like the stand-in."""


class SocketModeSlack:
    """Socket Mode in front of a `SlackStandIn`: hand the bot `api_url` and `app_token`."""

    def __init__(
        self,
        standin: SlackStandIn,
        *,
        app_token: str = "xapp-1-standin",
        ping_interval: float = 0.05,
    ) -> None:
        self.standin = standin
        self.app_token = app_token
        self.ping_interval = ping_interval
        self._changed = threading.Condition()
        self._tickets: set[str] = set()
        self._opened = 0
        self._refusal: str | None = None
        self._connections: list[SocketConnection] = []
        self._front: _Front | None = None
        self._websockets: Server | None = None
        self._threads: list[threading.Thread] = []

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> "SocketModeSlack":
        """Listen on two free ports of 127.0.0.1 (HTTP and websocket), served by daemon threads."""
        self._websockets = serve(
            self._serve_connection,
            "127.0.0.1",
            0,
            process_request=self._check_ticket,
            server_header=None,
            ping_interval=self.ping_interval,
        )
        self._front = _Front(self)
        for name, target in (
            ("socket-mode-ws", self._websockets.serve_forever),
            ("socket-mode-api", self._front.serve_forever),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Close every connection (code 1001, going away) and both listening sockets."""
        if self._websockets is not None:
            self._websockets.shutdown()  # also waits for the connection handlers to finish
        if self._front is not None:
            self._front.shutdown()
            self._front.server_close()
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()

    def __enter__(self) -> "SocketModeSlack":
        """Start, for `with SocketModeSlack(slack) as socket_mode:`."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop at the end of the `with` block."""
        self.stop()

    @property
    def api_url(self) -> str:
        """The Web API root to give the bot as `SLACK_API_URL`."""
        if self._front is None:
            raise RuntimeError("start the Socket Mode stand-in first")
        return f"http://127.0.0.1:{self._front.server_address[1]}/api/"

    # --- inspection and faults --------------------------------------------------------------

    @property
    def connections_opened(self) -> int:
        """How many times `apps.connections.open` handed out a URL."""
        with self._changed:
            return self._opened

    def connections(self) -> list[SocketConnection]:
        """Every websocket connection the app opened, oldest first."""
        with self._changed:
            return list(self._connections)

    def wait_for_connection(self, number: int = 1, *, timeout: float = 5.0) -> SocketConnection:
        """The `number`-th connection (1 is the first), once it has been sent `hello`."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._connections) >= number, timeout):
                have = len(self._connections)
                raise TimeoutError(f"{have} connections after {timeout}s, waited for {number}")
            return self._connections[number - 1]

    def refuse_connections(self, error: str | None) -> None:
        """Answer `apps.connections.open` with `{"ok": false, "error": error}`; None stops it."""
        with self._changed:
            self._refusal = error

    # --- HTTP -------------------------------------------------------------------------------

    def _open(self, authorization: str) -> tuple[int, list[tuple[str, str]], bytes]:
        scheme, _, token = authorization.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        with self._changed:
            if not token:
                answer: JsonDict = {"ok": False, "error": "not_authed"}
            elif token.startswith("xoxb-") or token.startswith("xoxp-"):
                answer = {"ok": False, "error": "not_allowed_token_type"}
            elif token != self.app_token:
                answer = {"ok": False, "error": "invalid_auth"}
            elif self._refusal is not None:
                answer = {"ok": False, "error": self._refusal}
            else:
                assert self._websockets is not None
                ticket = secrets.token_hex(16)
                self._tickets.add(ticket)
                self._opened += 1
                port = self._websockets.socket.getsockname()[1]
                query = urllib.parse.urlencode({"ticket": ticket, "app_id": self.standin.app_id})
                answer = {"ok": True, "url": f"ws://127.0.0.1:{port}/link/?{query}"}
        headers = [("Content-Type", "application/json; charset=utf-8")]
        return 200, headers, json.dumps(answer).encode()

    def _relay(
        self, method: str, path: str, request: http.server.BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        sent = {
            name: value
            for name in ("Content-Type", "Authorization")
            if (value := request.headers.get(name)) is not None
        }
        upstream = http.client.HTTPConnection("127.0.0.1", self.standin.port, timeout=60)
        try:
            upstream.request(method, path, body=body or None, headers=sent)
            response = upstream.getresponse()
            answer = response.read()
            headers = [
                (name, value)
                for name in _RELAYED_HEADERS
                if (value := response.getheader(name)) is not None
            ]
            return response.status, headers, answer
        finally:
            upstream.close()

    # --- websockets -------------------------------------------------------------------------

    def _check_ticket(self, websocket: ServerConnection, request: Request) -> Response | None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
        ticket = (query.get("ticket") or [""])[0]
        with self._changed:
            if ticket not in self._tickets:
                return websocket.respond(HTTPStatus.UNAUTHORIZED, "unknown or used ticket\n")
            self._tickets.discard(ticket)  # one connection per ticket, as Slack's
        return None

    def _serve_connection(self, websocket: ServerConnection) -> None:
        assert websocket.request is not None
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(websocket.request.path).query)
        connection = SocketConnection(websocket, query["ticket"][0], self._changed)
        hello = {
            "type": "hello",
            "num_connections": 1,
            "debug_info": {
                "host": "standin-socket-mode",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": self.standin.app_id},
        }
        try:
            websocket.send(json.dumps(hello))
        except ConnectionClosed:
            return
        with self._changed:
            self._connections.append(connection)
            self._changed.notify_all()
        connection._receive_until_closed()
