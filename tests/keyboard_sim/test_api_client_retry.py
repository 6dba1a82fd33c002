"""``PredictionClient.predict`` asks once more when the connection breaks, never after an HTTP error."""

from __future__ import annotations

import httpx
import pytest

from keyboard_sim.api_client import APIError, PredictionClient


def _client(replies: list[object]) -> tuple[PredictionClient, list[bytes]]:
    """A client with an open session whose transport plays ``replies`` in order (an exception is raised)."""
    bodies: list[bytes] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply  # type: ignore[return-value]

    client = PredictionClient.__new__(PredictionClient)  # no server: only the session fields predict reads
    client.http = httpx.Client(base_url="http://api", transport=httpx.MockTransport(handle))
    client.session_id, client.token = "s1", "t1"
    return client, bodies


def test_a_reply_cut_off_mid_body_is_asked_once_more() -> None:
    client, bodies = _client([httpx.RemoteProtocolError("peer closed"), httpx.Response(200, content=b"z")])
    assert client.predict(b"query").content == b"z"
    assert bodies == [b"query", b"query"]


def test_a_second_broken_connection_is_raised() -> None:
    client, bodies = _client([httpx.ReadError("reset"), httpx.RemoteProtocolError("peer closed")])
    with pytest.raises(httpx.RemoteProtocolError):
        client.predict(b"query")
    assert len(bodies) == 2


def test_an_http_error_is_not_retried() -> None:
    client, bodies = _client([httpx.Response(404, json={"detail": "unknown session"})])
    with pytest.raises(APIError, match="unknown session"):
        client.predict(b"query")
    assert len(bodies) == 1
