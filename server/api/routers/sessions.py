"""Sessions: upload public evaluation keys, an encrypted adapter, and query on ciphertexts.

Bodies are raw bytes (``application/octet-stream``) in the formats of ``ckks.session_keys``.
The server holds only the device's public evaluation keys: it can compute on the device's
ciphertexts but never read one.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel

from server.api.config import Settings
from server.api.dependencies import OCTET_STREAM, get_he, get_session, get_settings, get_store, read_octets
from server.api.he_service import HEService, InvalidPayload
from server.api.store import SessionRecord, SessionStore, StoreFull

router = APIRouter(
    prefix="/v1/sessions",
    tags=["sessions"],
    responses={
        400: {"description": "malformed bytes or ciphertext with the wrong parameters"},
        401: {"description": "missing or wrong bearer token"},
        404: {"description": "unknown session, or expired after session_idle_ttl_seconds unused"},
        413: {"description": "body over the size limit"},
        415: {"description": "body is not application/octet-stream"},
    },
)


_STALE_SESSION = {409: {"description": "session made for another model version"}}  # see _stale

_BINARY_BODY = {  # OpenAPI: these endpoints take raw bytes, not JSON
    "requestBody": {"content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}}}
}


class SessionCreated(BaseModel):
    """What a device keeps: the session id and its bearer token (shown once)."""

    session_id: str
    token: str
    model_version: str


def _stale(record: SessionRecord, he: HEService) -> None:
    if record.model_version != he.model_version:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"session was made for model {record.model_version}, the server now serves "
            f"{he.model_version}: create a new session",
        )


def _store_full(settings: Settings) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        f"the server holds its maximum of {settings.max_sessions} sessions; retry later "
        "(operators: raise HUSHTYPE_MAX_SESSIONS)",
        headers={"Retry-After": "60"},
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionCreated,
    responses={503: {"description": "the session store is full (max_sessions); see Retry-After"}},
    openapi_extra=_BINARY_BODY,
)
async def create_session(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    store: Annotated[SessionStore, Depends(get_store)],
    he: Annotated[HEService, Depends(get_he)],
) -> SessionCreated:
    """Upload the device's public evaluation keys (no secret key); get a session id + token."""
    blob = await read_octets(request, settings.max_eval_key_bytes, "evaluation keys")
    store.purge_idle(settings.session_idle_ttl_seconds)
    if store.count() >= settings.max_sessions:
        raise _store_full(settings)
    try:
        await he.check_eval_keys(blob)
    except InvalidPayload as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"evaluation keys rejected: {exc}") from exc
    try:
        session_id, token = store.create(blob, he.model_version)  # the cap is checked again, atomically
    except StoreFull:
        raise _store_full(settings) from None
    request.app.state.metrics.sessions_created.inc()
    return SessionCreated(session_id=session_id, token=token, model_version=he.model_version)


@router.put(
    "/{session_id}/personalization",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_STALE_SESSION,
    openapi_extra=_BINARY_BODY,
)
async def update_personalization(
    request: Request,
    record: Annotated[SessionRecord, Depends(get_session)],
    settings: Annotated[Settings, Depends(get_settings)],
    store: Annotated[SessionStore, Depends(get_store)],
    he: Annotated[HEService, Depends(get_he)],
) -> Response:
    """Upload the user's encrypted adapter (under the device's own key); replaces any earlier one."""
    _stale(record, he)
    blob = await read_octets(request, settings.max_personalization_bytes, "personalization")
    try:
        await he.check_personalization(record.id, blob)
    except InvalidPayload as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"personalization rejected: {exc}") from exc
    store.set_personalization(record.id, blob)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{session_id}/predict",
    response_class=Response,
    responses={
        200: {"content": {OCTET_STREAM: {}}, "description": "encrypted logits"},
        **_STALE_SESSION,
    },
    openapi_extra=_BINARY_BODY,
)
async def predict(
    request: Request,
    record: Annotated[SessionRecord, Depends(get_session)],
    settings: Annotated[Settings, Depends(get_settings)],
    store: Annotated[SessionStore, Depends(get_store)],
    he: Annotated[HEService, Depends(get_he)],
) -> Response:
    """Encrypted context features -> encrypted next-word logits (+ the user's encrypted adapter)."""
    _stale(record, he)
    blob = await read_octets(request, settings.max_query_bytes, "query")
    metrics = request.app.state.metrics
    try:
        with metrics.predict_seconds.time():
            result = await he.predict(record.id, blob)
    except InvalidPayload as exc:
        metrics.predict_rejected.inc()
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"query rejected: {exc}") from exc
    store.touch(record.id)
    metrics.predictions.inc()
    return Response(content=result, media_type=OCTET_STREAM)


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_session(
    record: Annotated[SessionRecord, Depends(get_session)],
    store: Annotated[SessionStore, Depends(get_store)],
) -> Response:
    """Forget the session: its keys and encrypted adapter are deleted."""
    store.delete(record.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
