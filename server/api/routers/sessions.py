"""Sessions: upload public evaluation keys, an encrypted adapter, and query on ciphertexts.

Bodies are raw bytes (``application/octet-stream``) in the formats of ``docs/wire-format.md``
(``ckks.session_keys``). The server holds only the device's public evaluation keys: it can compute on
the device's ciphertexts but never read one. Store calls run in threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from server.api.admission import make_room
from server.api.config import Settings
from server.api.dependencies import (
    OCTET_STREAM,
    admit_session_creation,
    get_he,
    get_session,
    get_settings,
    get_store,
    read_octets,
    rejected_as_400,
)
from server.api.errors import error_responses
from server.api.he_service import HEService, InvalidPayload
from server.api.store import SessionRecord, SessionStore, StoreFull, UserRecord

router = APIRouter(prefix="/v1/sessions", tags=["sessions"], responses=error_responses(500))

STORE_FULL_RETRY_AFTER = 60  # seconds; sessions become evictable as they go idle


def binary_body(limit_setting: str, description: str) -> dict:
    """OpenAPI ``requestBody`` for raw bytes; ``x-hushtype-limit`` names the Settings field whose value
    ``server.api.openapi`` writes in as ``maxLength``."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
            "x-hushtype-limit": limit_setting,
        }
    }


class SessionCreated(BaseModel):
    """What a device keeps: the session id and its bearer token (shown once)."""

    session_id: str = Field(description="use in the /v1/sessions/{session_id}/... paths")
    token: str = Field(description="send as 'Authorization: Bearer <token>'; the server stores only a hash")
    model_version: str = Field(description="the model version the session was made for")


def stale(record: SessionRecord | UserRecord, he: HEService, what: str = "session") -> None:
    """409 if the session (or user) was made for another model version than the one served."""
    if record.model_version != he.model_version:
        fix = "create a new session" if what == "session" else "delete the user and create it again"
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"{what} was made for model {record.model_version}, the server now serves "
            f"{he.model_version}: {fix}",
        )


def _keys_loader(store: SessionStore, session_id: str):
    async def load() -> bytes | None:
        record = await asyncio.to_thread(store.get, session_id)
        return record.eval_keys if record is not None else None

    return load


def _user_keys_loader(store: SessionStore, user_id: str):
    async def load() -> bytes | None:
        user = await asyncio.to_thread(store.get_user, user_id)
        return user.eval_keys if user is not None else None

    return load


async def _prediction_inputs(record: SessionRecord, store: SessionStore):
    """(worker cache key, encrypted adapter, eval-key loader) of a session: a bound session uses its
    user's keys and adapter (one cache entry per user), an anonymous one its own."""
    if record.user_id is None:
        return record.id, record.personalization, _keys_loader(store, record.id)
    user = await asyncio.to_thread(store.get_user, record.user_id, load_eval_keys=False)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"the session's user {record.user_id!r} was deleted")
    return f"user:{user.id}", user.adapter, _user_keys_loader(store, user.id)


def _store_full(settings: Settings) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        f"the server holds its maximum of {settings.max_sessions} sessions, all in use; retry later "
        "(operators: raise HUSHTYPE_MAX_SESSIONS)",
        headers={"Retry-After": str(STORE_FULL_RETRY_AFTER)},
    )


async def create_within_cap(
    store: SessionStore, settings: Settings, blob: bytes, model_version: str, user_id: str | None = None
) -> tuple[str, str]:
    """``store.create``, which checks the cap again atomically: another request or replica may have taken
    the room ``make_room`` made. Then the policy runs once more before the 503."""
    for attempt in range(2):
        try:
            return await asyncio.to_thread(store.create, blob, model_version, user_id)
        except StoreFull:
            if attempt or not await asyncio.to_thread(make_room, store, settings):
                raise _store_full(settings) from None
    raise AssertionError("unreachable")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionCreated,
    responses=error_responses(400, 401, 413, 415, 429, 503),
    dependencies=[Depends(admit_session_creation)],
    openapi_extra=binary_body(
        "max_eval_key_bytes", "the device's public evaluation keys (HTEK container, docs/wire-format.md)"
    ),
)
async def create_session(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    store: Annotated[SessionStore, Depends(get_store)],
    he: Annotated[HEService, Depends(get_he)],
) -> SessionCreated:
    """Upload the device's public evaluation keys (no secret key); get a session id + token."""
    blob = await read_octets(request, settings.max_eval_key_bytes, "evaluation keys")
    if not await asyncio.to_thread(make_room, store, settings):
        raise _store_full(settings)
    with rejected_as_400("evaluation keys"):
        await he.check_eval_keys(blob)
    session_id, token = await create_within_cap(store, settings, blob, he.model_version)
    request.app.state.metrics.sessions_created.inc()
    return SessionCreated(session_id=session_id, token=token, model_version=he.model_version)


@router.put(
    "/{session_id}/personalization",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(400, 401, 404, 409, 413, 415, 503),
    openapi_extra=binary_body(
        "max_personalization_bytes", "the encrypted vocabulary bias (HTCT, kind 2, docs/wire-format.md)"
    ),
)
async def update_personalization(
    request: Request,
    record: Annotated[SessionRecord, Depends(get_session)],
    settings: Annotated[Settings, Depends(get_settings)],
    store: Annotated[SessionStore, Depends(get_store)],
    he: Annotated[HEService, Depends(get_he)],
) -> Response:
    """Upload the user's encrypted adapter (under the device's own key); replaces any earlier one.
    A session bound to a user uses the user's adapter: 409 (send increments to the user instead)."""
    stale(record, he)
    if record.user_id is not None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"this session uses its user's adapter: POST increments to /v1/users/{record.user_id}/increments",
        )
    blob = await read_octets(request, settings.max_personalization_bytes, "personalization")
    with rejected_as_400("personalization"):
        await he.check_personalization(record.id, blob, _keys_loader(store, record.id))
    await asyncio.to_thread(store.set_personalization, record.id, blob)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{session_id}/predict",
    response_class=Response,
    responses={
        200: {
            "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
            "description": "encrypted logits (HTCT, kind 3, docs/wire-format.md)",
        },
        **error_responses(400, 401, 404, 409, 413, 415, 503),
    },
    openapi_extra=binary_body("max_query_bytes", "the encrypted context (HTCT, kind 1, docs/wire-format.md)"),
)
async def predict(
    request: Request,
    record: Annotated[SessionRecord, Depends(get_session)],
    settings: Annotated[Settings, Depends(get_settings)],
    store: Annotated[SessionStore, Depends(get_store)],
    he: Annotated[HEService, Depends(get_he)],
) -> Response:
    """Encrypted context features -> encrypted next-word logits (+ the user's encrypted adapter)."""
    stale(record, he)
    blob = await read_octets(request, settings.max_query_bytes, "query")
    metrics = request.app.state.metrics
    cache_key, adapter, load_keys = await _prediction_inputs(record, store)
    try:
        with metrics.predict_seconds.time():
            result = await he.predict(cache_key, blob, adapter, load_keys)
    except InvalidPayload as exc:
        metrics.predict_rejected.inc()
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"query rejected: {exc}") from exc
    await asyncio.to_thread(store.touch, record.id)
    metrics.predictions.inc()
    return Response(content=result, media_type=OCTET_STREAM)


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(401, 404))
async def delete_session(
    record: Annotated[SessionRecord, Depends(get_session)],
    store: Annotated[SessionStore, Depends(get_store)],
) -> Response:
    """Forget the session: its keys and encrypted adapter are deleted."""
    await asyncio.to_thread(store.delete, record.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
