"""The served model: its card and the public artifacts a device needs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from server.api.dependencies import OCTET_STREAM, get_he
from server.api.he_service import HEService

router = APIRouter(prefix="/v1/model", tags=["model"])


@router.get("")
async def read_model(request: Request, he: Annotated[HEService, Depends(get_he)]) -> dict:
    """Model card (version, training, privacy figures), HE parameters, vocabulary, artifact links."""
    release = request.app.state.release
    return {
        "version": release.version,
        "card": release.card,
        "he": he.public_parameters(),
        "vocabulary": release.vocab.words,
        "artifacts": {"weights": "/v1/model/weights"},
    }


@router.get("/weights", response_class=FileResponse, responses={200: {"content": {OCTET_STREAM: {}}}})
async def read_weights(request: Request) -> FileResponse:
    """The released weights (safetensors): public, DP-trained; devices need the embedding table."""
    path = Path(request.app.state.settings.release_dir) / "weights.safetensors"
    return FileResponse(path, media_type=OCTET_STREAM, filename="weights.safetensors")
