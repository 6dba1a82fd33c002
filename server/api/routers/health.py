"""Liveness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def read_health(request: Request) -> dict:
    """Up, which model version, how many sessions."""
    return {
        "status": "ok",
        "model_version": request.app.state.he.model_version,
        "sessions": request.app.state.store.count(),
    }


@router.get("/metrics", response_class=Response)
async def read_metrics(request: Request) -> Response:
    """Prometheus text exposition of this app's counters and histograms."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
