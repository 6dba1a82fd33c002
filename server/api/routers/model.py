"""The served model: its card, privacy figures, HE parameters and the public artifacts a device needs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from safetensors.numpy import save as save_safetensors

from models.release import ENCODER_FILE
from server.api.dependencies import OCTET_STREAM, get_he
from server.api.errors import error_responses
from server.api.he_service import HEService

router = APIRouter(prefix="/v1/model", tags=["model"], responses=error_responses(500))


class HEParamsInfo(BaseModel):
    """The CKKS parameter set (``ckks.params.HEParams``); its 8-byte id is in every blob's header."""

    name: str
    poly_modulus_degree: int = Field(description="ring dimension N; a ciphertext has N/2 complex slots")
    coeff_bit_sizes: list[int] = Field(description="prime bit sizes: data primes, then the special prime")
    scale_bits: int = Field(description="log2 of the query scale")


class HEInfo(BaseModel):
    """What a device needs to build keys and queries (docs/wire-format.md)."""

    mode: Literal["x", "h"] = Field(description="x: encrypted embeddings; h: encrypted W1 x + b1")
    params: HEParamsInfo
    rotation_steps: list[int] = Field(description="Galois keys to generate (0 = complex conjugation)")
    rotation_level: int = Field(description="data primes the tail context drops (Galois keys, logits, bias)")
    output_scale: float = Field(description="scale of the logits; encrypt the personal bias at this scale")
    statistics_scale: float = Field(
        description="scale of a user's adapter statistics (increments), at the logits' level"
    )
    vocab_size: int
    hidden: int
    input_dim: int
    security_bits: int


class PrivacyInfo(BaseModel):
    """The release's user-level DP guarantee, from its model card."""

    user_level_dp: bool = Field(description="true iff the card has a finite user-level epsilon and delta")
    user_epsilon: float | None
    user_delta: float | None
    trained: str = Field(description="how the release was trained (the card's 'trained')")
    non_private_allowed: bool = Field(description="the operator allowed serving a release without DP")


class Artifacts(BaseModel):
    """Links to the public files of the release (never the head: the server runs it under HE)."""

    encoder: str = Field(description="safetensors file with the device-side encoder (what computes h)")


class ModelInfo(BaseModel):
    """The model card and everything public a device needs."""

    version: str = Field(description="content hash of the weights; sessions are bound to it")
    card: dict[str, Any] = Field(description="the release's model card as written by training")
    privacy: PrivacyInfo
    he: HEInfo
    vocabulary: list[str]
    artifacts: Artifacts


@router.get("", response_model=ModelInfo)
async def read_model(request: Request, he: Annotated[HEService, Depends(get_he)]) -> ModelInfo:
    """Model card (version, training, privacy figures), HE parameters, vocabulary, artifact links."""
    release = request.app.state.release
    return ModelInfo(
        version=release.version,
        card=release.card,
        privacy=request.app.state.privacy,
        he=he.public_parameters(),
        vocabulary=release.vocab.words,
        artifacts=Artifacts(encoder="/v1/model/weights"),
    )


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
