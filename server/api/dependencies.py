"""Shared dependencies: settings, the session store, the HE service, body limits, session auth."""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Request, status

from server.api.config import Settings
from server.api.he_service import HEService
from server.api.store import SessionRecord, SessionStore

__all__ = [
    "default_settings",
    "get_settings",
    "get_store",
    "get_he",
    "get_session",
    "read_octets",
    "OCTET_STREAM",
]

OCTET_STREAM = "application/octet-stream"


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


def get_session(
    store: Annotated[SessionStore, Depends(get_store)],
    settings: Annotated[Settings, Depends(get_settings)],
    session_id: Annotated[str, Path(description="the id POST /v1/sessions returned")],
    authorization: Annotated[str | None, Header()] = None,
) -> SessionRecord:
    """The session named in the path, if the bearer token is its own: 401 / 404 otherwise."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing 'Authorization: Bearer <token>' header",
            headers={"WWW-Authenticate": "Bearer"},
        )
    record = store.get(session_id, load_eval_keys=False)  # auth needs no keys: skip the MB-sized blob
    if record is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"unknown session {session_id!r} (expired or deleted?)"
        )
    if not record.token_matches(authorization[7:].strip()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "token does not belong to this session",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if time.time() - record.last_used > settings.session_idle_ttl_seconds:
        store.delete(record.id)
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"session {session_id!r} expired after {settings.session_idle_ttl_seconds:g} s unused: "
            "create a new one",
        )
    return record
