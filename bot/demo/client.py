"""HTTP requests over the standard library, for the simulated Slack and the demo's item feed.

`hitl demo` must run on the base install, so nothing here needs an HTTP library. `http.client`
rather than `urllib.request`: every request goes straight to the URL (never through a proxy
from the environment), and an error status is an answer to read, not an exception.
"""

import http.client
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HttpAnswer:
    """A status, the body and the headers (names in lower case) of one response."""

    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8", errors="replace")


class HttpStatusError(Exception):
    """A JSON call answered with a status other than 2xx."""


def post(url: str, body: bytes, headers: Mapping[str, str], *, timeout: float) -> HttpAnswer:
    """POST `body` to `url` on a connection of its own.

    Raises `TimeoutError` when no answer comes in `timeout` seconds (per connect or read), and
    another `OSError` or `http.client.HTTPException` when the server cannot be reached.
    """
    parts = urllib.parse.urlsplit(url)
    connection_type = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_type(parts.netloc, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        connection.request("POST", path, body=body, headers=dict(headers))
        response = connection.getresponse()
        content = response.read()
        names = {name.lower(): value for name, value in response.getheaders()}
        return HttpAnswer(response.status, content, names)
    finally:
        connection.close()


def post_json(url: str, payload: Any, *, token: str | None = None, timeout: float = 30.0) -> Any:
    """POST `payload` as JSON and return the parsed answer; HttpStatusError unless 2xx."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    answer = post(url, json.dumps(payload).encode(), headers, timeout=timeout)
    if not answer.ok:
        raise HttpStatusError(f"POST {url} answered {answer.status}: {answer.text[:300]}")
    return json.loads(answer.body)
