"""Shared dependencies: settings, the session store, the HE service, body limits, auth, admission."""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from server.api.admission import RateLimiter, app_key_matches, retry_after_header
from server.api.config import Settings
from server.api.he_service import HEService, InvalidPayload
from server.api.store import SessionRecord, SessionStore, UserRecord, hash_token

__all__ = [
    "default_settings",
    "get_settings",
    "get_store",
    "get_he",
    "get_session",
    "get_user",
    "admit_session_creation",
    "read_octets",
    "OCTET_STREAM",
]

OCTET_STREAM = "application/octet-stream"

_session_token = HTTPBearer(
    auto_error=False,
    scheme_name="sessionToken",
    description="the token POST /v1/sessions returned with the session id (shown once)",
)
_app_key = APIKeyHeader(
    name="X-App-Key",
    auto_error=False,
    scheme_name="appKey",
    description="app credential for creating sessions; required only if the server sets HUSHTYPE_APP_KEY",
)
_user_token = HTTPBearer(
    auto_error=False,
    scheme_name="userToken",
    description="the token POST /v1/users returned with the user id (shown once; kept by the user's devices)",
)
_UNAUTHORIZED = "unknown session or wrong token (expired, deleted, or never created)"
_USER_UNAUTHORIZED = "unknown user or wrong token (deleted, or never created)"


@lru_cache
def default_settings() -> Settings:
    """Settings read once from the environment / ``.env``."""
    return Settings()


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_store(request: Request) -> SessionStore:
    """The session store the app opened at startup."""
    return request.app.state.store


def get_he(request: Request) -> HEService:
    """The HE worker pool the app started."""
    return request.app.state.he


@contextmanager
def rejected_as_400(what: str) -> Iterator[None]:
    """A payload the HE service refuses (``InvalidPayload``) becomes 400 "<what> rejected: <why>"."""
    try:
        yield
    except InvalidPayload as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{what} rejected: {exc}") from exc


async def read_octets(request: Request, limit: int, what: str) -> bytes:
    """The request body as bytes: 415 unless octet-stream, 413 over ``limit``, 400 if empty."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != OCTET_STREAM:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"{what} must be sent as {OCTET_STREAM}, got {ctype or 'no content type'}",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"{what} is {int(declared)} bytes; the limit is {limit}"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE, f"{what} exceeds the limit of {limit} bytes"
            )
        chunks.append(chunk)
    if size == 0:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{what} is empty")
    return b"".join(chunks)


def _unauthorized(detail: str = _UNAUTHORIZED) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def _check_token(
    record: SessionRecord | UserRecord | None,
    record_id: str,
    credentials: HTTPAuthorizationCredentials | None,
    unknown: str,
) -> None:
    """401 unless ``record`` exists and the bearer token is its own (same time and answer either way)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing 'Authorization: Bearer <token>' header")
    expected = record.token_hash if record is not None else "0" * 64
    if not hmac.compare_digest(expected, hash_token(credentials.credentials, record_id)) or record is None:
        raise _unauthorized(unknown)


def get_user(
    store: Annotated[SessionStore, Depends(get_store)],
    user_id: Annotated[str, Path(description="the id POST /v1/users returned")],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_user_token)],
) -> UserRecord:
    """The user named in the path, if the bearer token is the user's (an unknown user answers 401 too).
    Loaded without the evaluation keys (the HE worker asks for them when it has none cached)."""
    record = store.get_user(user_id, load_eval_keys=False)
    _check_token(record, user_id, credentials, _USER_UNAUTHORIZED)
    assert record is not None
    return record


def get_session(
    store: Annotated[SessionStore, Depends(get_store)],
    settings: Annotated[Settings, Depends(get_settings)],
    session_id: Annotated[str, Path(description="the id POST /v1/sessions returned")],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_session_token)],
) -> SessionRecord:
    """The session named in the path, if the bearer token is its own.

    An unknown session and a wrong token get the same 401 (no existence leak; the unknown case still
    hashes the token so both take the same time). The store forgets a session idle for
    ``session_idle_ttl_seconds`` (then it is unknown: 401); one that expires between the store read and
    this check gets a 404 that says so, shown only to its token's holder.
    A sync dependency: FastAPI runs it in its thread pool, so the SQLite read never blocks the loop.
    """
    record = store.get(session_id, load_eval_keys=False)  # auth needs no keys: skip the MB-sized blob
    _check_token(record, session_id, credentials, _UNAUTHORIZED)
    if time.time() - record.last_used > settings.session_idle_ttl_seconds:
        store.delete(record.id)
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"session {session_id!r} expired after {settings.session_idle_ttl_seconds:g} s unused: "
            "create a new one",
        )
    return record


def admit_session_creation(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    app_key: Annotated[str | None, Depends(_app_key)],
) -> None:
    """401 without the app credential (if one is configured), 429 over the client's creation rate."""
    if not app_key_matches(settings, app_key):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "creating a session needs this app's credential in the X-App-Key header",
            headers={"WWW-Authenticate": "X-App-Key"},
        )
    limiter: RateLimiter = request.app.state.session_limiter
    client = request.client.host if request.client else "unknown"
    wait = limiter.acquire(client)
    if wait > 0:
        request.app.state.metrics.sessions_rate_limited.inc()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many sessions created from {client}: at most {settings.session_create_burst} at once and "
            f"{settings.session_create_per_minute:g} per minute; retry after {retry_after_header(wait)} s",
            headers={"Retry-After": retry_after_header(wait)},
        )
