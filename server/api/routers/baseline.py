"""The plaintext baseline: the same released head on PLAINTEXT input, for load-test comparisons.

The body is what an encrypted query of mode "h" carries, in the clear: the device's ``h`` (the
encoder's output, H float32; any model kind); the server runs the same head (``w2``, ``b2``, ``beta``)
it runs under HE, so one run compares the encrypted and the plaintext server work for the same split.

Mounted only when ``plaintext_baseline`` is set (``HUSHTYPE_PLAINTEXT_BASELINE=1``): a client using it
hands its context to the server in the clear, which is exactly what the encrypted path exists to
avoid. ``hushtype loadtest`` turns it on so that one run measures both paths on the same server.
Errors are the API's JSON errors with a request id (``server.api.errors``), like every other route.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response, status
from starlette.concurrency import run_in_threadpool

from models.head import head_logits
from server.api.dependencies import OCTET_STREAM, read_octets
from server.api.errors import error_responses

router = APIRouter(prefix="/v1/baseline", tags=["baseline (measuring only)"], responses=error_responses(500))

_BINARY = {"type": "string", "format": "binary"}


@router.post(
    "/predict",
    response_class=Response,
    responses={
        200: {
            "content": {OCTET_STREAM: {"schema": _BINARY}},
            "description": "V float32 logits, little-endian",
        },
        **error_responses(
            400,
            413,
            415,
            e400="not H float32 values, or a non-finite one",
            e413="more than H float32 values",
        ),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the encoder's output h: H float32, little-endian, IN THE CLEAR",
            "content": {OCTET_STREAM: {"schema": _BINARY}},
        }
    },
)
async def predict_plaintext(request: Request) -> Response:
    """The device's h (H float32, little-endian, in the clear) -> V float32 logits of the head."""
    head = request.app.state.release.head
    dim = head["w2"].shape[1]
    blob = await read_octets(request, 4 * dim, "plaintext features")
    if len(blob) != 4 * dim:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"plaintext features: expected {dim} float32 ({4 * dim} bytes), got {len(blob)}",
        )
    x = np.frombuffer(blob, dtype="<f4").astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "plaintext features: non-finite values")
    logits = await run_in_threadpool(head_logits, head, x)  # numpy releases the GIL
    return Response(content=logits.astype("<f4").tobytes(), media_type=OCTET_STREAM)
