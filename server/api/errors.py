"""Every error is JSON: ``{"detail": ..., "request_id": ...}``, 500 included, and its log line has the id.

``RequestIdMiddleware`` gives each request an id (the client's ``X-Request-ID`` if it is short and
plain, else a fresh one), echoes it in the ``X-Request-ID`` response header and puts it in every error
body, so a client's report can be matched to the server's log line.
"""

from __future__ import annotations

import logging
import re
import uuid

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.he_service import PoolBusy, WorkerLost

__all__ = [
    "ErrorBody",
    "RequestIdMiddleware",
    "install_error_handlers",
    "error_responses",
    "request_id",
    "WORKER_RETRY_AFTER",
]

log = logging.getLogger("hushtype.api")

REQUEST_ID_HEADER = "X-Request-ID"
WORKER_RETRY_AFTER = 2  # seconds: a lost worker is back in ~1-2 s
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx answer."""

    detail: str = Field(description="what went wrong, and what to do about it")
    request_id: str = Field(description="the request's id, also in the X-Request-ID header and the log")


_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
}
_DESCRIPTIONS = {
    400: "malformed bytes, or a ciphertext/key with the wrong parameters, scale, level or key id "
    "(a ciphertext made under another user's or session's key)",
    401: "missing or wrong credential (an unknown session and a wrong token answer alike)",
    404: "session expired after session_idle_ttl_seconds unused as it was used (shown only to its "
    "token's holder; once the store has dropped it: 401)",
    409: "session (or user) made for another model version, or an operation its kind does not allow",
    412: "a precondition failed: the revision in If-Match is no longer current",
    413: "body over the size limit",
    415: "body is not application/octet-stream",
    422: "request not valid for this operation",
    428: "this operation needs an If-Match header",
    429: "too many sessions created from this client address: see Retry-After",
    500: "internal error; the request id is in the server log",
    503: "no HE worker available right now, or the session store is full: see Retry-After",
}


def error_responses(*codes: int, **descriptions: str) -> dict:
    """OpenAPI ``responses`` for error codes, each with the ``ErrorBody`` schema (and Retry-After on 429/503).

    ``descriptions`` override the default text per code, given as ``e400="..."``.
    """
    out = {}
    for code in codes:
        entry = {"model": ErrorBody, "description": descriptions.get(f"e{code}", _DESCRIPTIONS[code])}
        if code in (429, 503):
            entry["headers"] = _RETRY_AFTER
        out[code] = entry
    return out


def request_id(request: Request) -> str:
    """The id ``RequestIdMiddleware`` gave this request."""
    return request.scope.get("state", {}).get("request_id", "-")


class RequestIdMiddleware:
    """Pure ASGI middleware: assign the request id and add it to the response headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        rid = given if _CLIENT_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", rid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


def _json_error(request: Request, code: int, detail: str, headers: dict | None = None) -> JSONResponse:
    rid = request_id(request)
    return JSONResponse(
        {"detail": detail, "request_id": rid},
        status_code=code,
        headers={**(headers or {}), REQUEST_ID_HEADER: rid},
    )


def _allowed_methods(request: Request) -> str:
    """The methods the OpenAPI document lists for this path (Starlette's 405 names only the first route's)."""
    path = request.url.path
    for template, operations in request.app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\{[^/}]+\}", "[^/]+", template), path):
            return ", ".join(sorted(method.upper() for method in operations))
    return ""


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code >= 500:
        log.warning("request %s: %d %s", request_id(request), exc.status_code, exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = allowed
    return _json_error(request, exc.status_code, str(exc.detail), headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()]
    return _json_error(request, status.HTTP_422_UNPROCESSABLE_CONTENT, "; ".join(parts) or "invalid request")


async def _worker_lost(request: Request, exc: WorkerLost) -> JSONResponse:
    request.app.state.metrics.worker_lost.inc()
    log.warning("request %s: 503 %s", request_id(request), exc)
    headers = {"Retry-After": str(WORKER_RETRY_AFTER)}
    return _json_error(request, status.HTTP_503_SERVICE_UNAVAILABLE, f"{exc}: retry", headers)


async def _pool_busy(request: Request, exc: PoolBusy) -> JSONResponse:
    log.warning("request %s: 503 %s", request_id(request), exc)
    headers = {"Retry-After": str(WORKER_RETRY_AFTER)}
    return _json_error(request, status.HTTP_503_SERVICE_UNAVAILABLE, f"server busy ({exc}): retry", headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("request %s: 500 %s %s", request_id(request), request.method, request.url.path, exc_info=exc)
    return _json_error(
        request,
        status.HTTP_500_INTERNAL_SERVER_ERROR,
        f"internal error (request id {request_id(request)}); the server log has the details",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers and the request-id middleware on ``app``."""
    app.add_middleware(RequestIdMiddleware)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(WorkerLost, _worker_lost)
    app.add_exception_handler(PoolBusy, _pool_busy)
    app.add_exception_handler(Exception, _internal_error)
