"""Liveness, readiness and Prometheus metrics.

``/healthz`` (liveness) answers 200 while the server and its worker supervisor run, with the pool's
real state in ``status``: ``ok`` (every HE worker up), ``degraded`` (some being replaced), ``down``
(none up). ``/readyz`` (readiness) is 200 only while at least one HE worker can take a request.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from server.api.errors import WORKER_RETRY_AFTER, error_responses, request_id

router = APIRouter(tags=["health"])


class WorkerHealth(BaseModel):
    """The HE worker pool as the supervisor sees it."""

    workers: int = Field(description="configured worker processes")
    alive: int = Field(description="workers up and able to take a request")
    restarts: int = Field(description="workers replaced since start (died or missed the deadline)")
    pids: list[int] = Field(description="process ids of the live workers")


class Health(BaseModel):
    """Liveness/readiness answer."""

    status: Literal["ok", "degraded", "down"]
    model_version: str
    sessions: int = Field(description="sessions in the store")
    he_workers: WorkerHealth


async def _health(request: Request) -> Health:
    he = request.app.state.he
    workers = WorkerHealth(**he.health())
    state = "ok" if workers.alive == workers.workers else "degraded" if workers.alive else "down"
    sessions = await asyncio.to_thread(request.app.state.store.count)
    return Health(status=state, model_version=he.model_version, sessions=sessions, he_workers=workers)


@router.get("/healthz", response_model=Health, responses=error_responses(500))
async def read_health(request: Request) -> Health:
    """Liveness: the server answers; ``status`` tells whether its HE workers are all up."""
    return await _health(request)


@router.get("/readyz", response_model=Health, responses=error_responses(500, 503))
async def read_readiness(request: Request) -> Response:
    """Readiness: 200 while at least one HE worker is up, else 503 (the body says why)."""
    health = await _health(request)
    if health.status == "down":
        body = {"detail": "no HE worker is up (being replaced)", "request_id": request_id(request)}
        return JSONResponse(
            body, status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": str(WORKER_RETRY_AFTER)}
        )
    return JSONResponse(health.model_dump())


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def read_metrics(request: Request) -> Response:
    """Prometheus text exposition of this app's counters and histograms."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
