"""Users: a key shared by a user's devices, the user's encrypted adapter, sessions bound to the user.

A user's devices share one CKKS secret (``ckks.user_keys.UserKey``); the server gets only its public
evaluation keys (``POST /v1/users``, once) and holds, encrypted under that key:

- the adapter **statistics** ``S`` (HTCT kind 4): each device adds its **increment** (the statistics of
  its own new text, encrypted) with ``POST .../increments``; the server adds it homomorphically to ``S``
  and bumps ``revision``. Concurrent increments are a compare-and-set loop on ``revision``: none is lost.
- the **adapter** ``u = f(S)`` (HTCT kind 2) the server adds to the encrypted logits of every session
  bound to the user. ``f`` is nonlinear (``keyboard_sim.personalize``), so a device holding the key
  derives it: ``GET .../statistics`` (ciphertext + revision), decrypt, compute, encrypt,
  ``PUT .../adapter`` with ``If-Match: <revision>``; a stale revision gets 412 and the device repeats.

A new device (or a thin client) imports the user key, opens ``POST .../sessions`` and is personalized
at once, without the history. ``DELETE`` forgets the user, its state and its sessions.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from server.api.config import Settings
from server.api.dependencies import (
    OCTET_STREAM,
    admit_session_creation,
    get_he,
    get_settings,
    get_store,
    get_user,
    read_octets,
    rejected_as_400,
)
from server.api.errors import error_responses
from server.api.he_service import HEService
from server.api.routers.sessions import SessionCreated, binary_body, create_within_cap, stale
from server.api.store import SessionStore, UserRecord

router = APIRouter(prefix="/v1/users", tags=["users"], responses=error_responses(500))

MAX_INCREMENT_ATTEMPTS = 20  # compare-and-set retries when other devices add increments at once
REVISION_HEADER = "X-Revision"
_REVISION = re.compile(r'^"?([0-9]{1,18})"?$')  # ASCII digits only, within SQLite's integer range


class UserCreated(BaseModel):
    """What the user's devices keep: the user id and its bearer token (shown once)."""

    user_id: str = Field(description="use in the /v1/users/{user_id}/... paths")
    token: str = Field(description="send as 'Authorization: Bearer <token>'; the server stores only a hash")
    model_version: str = Field(description="the model version the user's adapter is for")
    key_id: str = Field(description="hex fingerprint of the user key; every ciphertext must carry it")


class IncrementAdded(BaseModel):
    """The statistics revision after the increment (derive the adapter from at least this one)."""

    revision: int = Field(description="number of increments added to the user's statistics so far")


def _binary_response(description: str) -> dict:
    return {
        200: {
            "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
            "description": description,
            "headers": {
                REVISION_HEADER: {"description": "the statistics revision", "schema": {"type": "integer"}}
            },
        }
    }


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserCreated,
    responses=error_responses(400, 401, 413, 415, 429),
    dependencies=[Depends(admit_session_creation)],
    openapi_extra=binary_body(
        "max_eval_key_bytes", "the user key's public evaluation keys (HTEK container, docs/wire-format.md)"
    ),
)
async def create_user(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    store: Annotated[SessionStore, Depends(get_store)],
    he: Annotated[HEService, Depends(get_he)],
) -> UserCreated:
    """Register a user key by its public evaluation keys (never the secret); get a user id + token."""
    blob = await read_octets(request, settings.max_eval_key_bytes, "evaluation keys")
    with rejected_as_400("evaluation keys"):
        key_id = await he.check_eval_keys(blob)
    user_id, token = await asyncio.to_thread(store.create_user, blob, key_id, he.model_version)
    return UserCreated(user_id=user_id, token=token, model_version=he.model_version, key_id=key_id.hex())


@router.post(
    "/{user_id}/sessions",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionCreated,
    responses=error_responses(401, 409, 503),
)
async def create_user_session(
    user: Annotated[UserRecord, Depends(get_user)],
    settings: Annotated[Settings, Depends(get_settings)],
    store: Annotated[SessionStore, Depends(get_store)],
    he: Annotated[HEService, Depends(get_he)],
) -> SessionCreated:
    """A session for one of the user's devices: it uses the user's evaluation keys (nothing to upload)
    and its predictions include the user's encrypted adapter."""
    stale(user, he, "user")
    session_id, token = await create_within_cap(store, settings, b"", he.model_version, user.id)
    return SessionCreated(session_id=session_id, token=token, model_version=he.model_version)


@router.post(
    "/{user_id}/increments",
    response_model=IncrementAdded,
    responses=error_responses(400, 401, 409, 413, 415, 503),
    openapi_extra=binary_body(
        "max_personalization_bytes",
        "one device's encrypted adapter statistics (HTCT kind 4, docs/wire-format.md), under the user key",
    ),
)
async def add_increment(
    request: Request,
    user: Annotated[UserRecord, Depends(get_user)],
    settings: Annotated[Settings, Depends(get_settings)],
    store: Annotated[SessionStore, Depends(get_store)],
    he: Annotated[HEService, Depends(get_he)],
) -> IncrementAdded:
    """Add a device's encrypted increment to the user's statistics, homomorphically (compare-and-set on
    the revision: concurrent increments are all kept)."""
    stale(user, he, "user")
    blob = await read_octets(request, settings.max_personalization_bytes, "increment")
    current = user
    for _ in range(MAX_INCREMENT_ATTEMPTS):
        with rejected_as_400("increment"):
            total = await he.add_statistics(current.statistics, blob, user.key_id)
        if await asyncio.to_thread(store.replace_statistics, user.id, total, current.revision):
            return IncrementAdded(revision=current.revision + 1)
        current = await asyncio.to_thread(store.get_user, user.id, load_eval_keys=False)
        if current is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"user {user.id!r} was deleted meanwhile")
    raise HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        f"the user's statistics changed {MAX_INCREMENT_ATTEMPTS} times while adding this increment: retry",
        headers={"Retry-After": "1"},
    )


@router.get(
    "/{user_id}/statistics",
    response_class=Response,
    responses={**_binary_response("the encrypted statistics (HTCT kind 4)"), **error_responses(401, 404)},
)
async def read_statistics(user: Annotated[UserRecord, Depends(get_user)]) -> Response:
    """The user's encrypted statistics and their revision (for a device to derive the adapter)."""
    if user.statistics is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no increments yet: POST one to .../increments")
    return Response(user.statistics, media_type=OCTET_STREAM, headers={REVISION_HEADER: str(user.revision)})


@router.get(
    "/{user_id}/adapter",
    response_class=Response,
    responses={
        **_binary_response("the encrypted adapter (HTCT kind 2); X-Revision: the statistics it came from"),
        **error_responses(401, 404),
    },
)
async def read_adapter(user: Annotated[UserRecord, Depends(get_user)]) -> Response:
    """The user's encrypted adapter, as the server adds it to the logits."""
    if user.adapter is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no adapter yet: PUT one to .../adapter")
    return Response(
        user.adapter, media_type=OCTET_STREAM, headers={REVISION_HEADER: str(user.adapter_revision)}
    )


@router.put(
    "/{user_id}/adapter",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(
        400, 401, 409, 412, 413, 415, 428, e412="the statistics moved on: GET them again and re-derive"
    ),
    openapi_extra=binary_body(
        "max_personalization_bytes",
        "the adapter derived from the statistics (HTCT kind 2, docs/wire-format.md)",
    ),
)
async def update_adapter(
    request: Request,
    user: Annotated[UserRecord, Depends(get_user)],
    settings: Annotated[Settings, Depends(get_settings)],
    store: Annotated[SessionStore, Depends(get_store)],
    he: Annotated[HEService, Depends(get_he)],
    if_match: Annotated[
        str | None, Header(description="the statistics revision the adapter was derived from")
    ] = None,
) -> Response:
    """Store the adapter a device derived from the statistics of revision ``If-Match``, if still current."""
    stale(user, he, "user")
    match = _REVISION.match(if_match or "")
    if match is None:
        raise HTTPException(
            status.HTTP_428_PRECONDITION_REQUIRED,
            "send 'If-Match: <revision>', the X-Revision of the statistics the adapter was derived from",
        )
    revision = int(match.group(1))
    blob = await read_octets(request, settings.max_personalization_bytes, "adapter")
    with rejected_as_400("adapter"):
        await he.check_adapter(blob, user.key_id)
    if not await asyncio.to_thread(store.set_adapter, user.id, blob, revision):
        raise HTTPException(
            status.HTTP_412_PRECONDITION_FAILED,
            f"the statistics are no longer at revision {revision} (another device added an increment): "
            "GET .../statistics again and re-derive the adapter",
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(401))
async def delete_user(
    user: Annotated[UserRecord, Depends(get_user)],
    store: Annotated[SessionStore, Depends(get_store)],
) -> Response:
    """Forget the user: evaluation keys, statistics, adapter and every session bound to it."""
    await asyncio.to_thread(store.delete_user, user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
