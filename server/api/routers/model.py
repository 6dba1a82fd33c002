"""The served model: its card and the public artifacts a device needs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response
from safetensors.numpy import save as save_safetensors

from models.release import ENCODER_FILE
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
        "artifacts": {"encoder": "/v1/model/weights"},
    }


@router.get("/weights", response_class=FileResponse, responses={200: {"content": {OCTET_STREAM: {}}}})
async def read_weights(request: Request) -> Response:
    """The released **encoder** (safetensors): public, DP-trained, what a device runs to compute h.

    Never the head (w2, b2, beta): the server runs it under HE, a thin client does not hold it.
    """
    path = Path(request.app.state.settings.release_dir) / ENCODER_FILE
    if path.is_file():
        return FileResponse(path, media_type=OCTET_STREAM, filename=ENCODER_FILE)
    # a release written before the encoder/head split: serve its encoder arrays only
    blob = save_safetensors(request.app.state.release.encoder)
    return Response(
        blob, media_type=OCTET_STREAM, headers={"Content-Disposition": f"attachment; filename={ENCODER_FILE}"}
    )
